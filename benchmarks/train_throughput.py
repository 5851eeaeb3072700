"""Training throughput of `train.loop.run` against a bare PyTorch loop, measured in the same run.

The bare loop is the least a training step can do: the same model (same preset and seed), the
same batch shape and the same AdamW + clip, on pre-made tensors, with no data reading, logging,
schedule, signal handling or checkpointing. The figure is the ratio of the two tokens/s
(target >= 0.95): what the loop's bookkeeping costs. Both sides exclude their first
`train.loop.LOG_EVERY` steps (allocator and autograd warm-up; torch.compile on CUDA), and each is
measured twice, alternating, keeping the better run, because other work on a shared machine
disturbs single measurements. `cpu_time_ratio` compares process CPU time instead of wall time:
on a machine shared with other jobs it shows the loop's own overhead where wall time cannot.

On CUDA it also reports the model FLOPs utilisation of the loop's step function for the 300m
preset at context 4096: ``MFU = 6 * N * tokens/s / peak``, with N the parameters outside the
input embedding (the usual 6N estimate, attention FLOPs not counted) and the peak bf16 dense
FLOP/s a flag (default: the H100 SXM's 989 TFLOP/s).

Usage: ``python benchmarks/train_throughput.py [--store DIR] [--preset tiny-1m] [--context 256]``.
The last stdout line is a JSON summary for `benchmarks/run_all.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from megadocs.config import parse_config
from train.config import RunConfig
from train.device import resolve_device
from train.evaluate import autocast_for, token_losses
from train.loop import LOG_EVERY, param_groups, run, train_step
from train.model import build_model

H100_BF16_PEAK_TFLOPS = 989.0
TARGET_RATIO = 0.95


def loop_tokens_per_s(config: RunConfig, out: Path) -> tuple[float, float, int]:
    """Steady-state (wall, CPU-time) tokens/s of `run` from its log, after the first log line."""
    metrics = run(config, out)
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    first, last = lines[0], lines[-1]
    tokens = last["tokens_seen"] - first["tokens_seen"]
    # tokens_per_s in the log is cumulative: elapsed = tokens_seen / tokens_per_s
    wall = last["tokens_seen"] / last["tokens_per_s"] - first["tokens_seen"] / first["tokens_per_s"]
    return tokens / wall, tokens / (last["cpu_s"] - first["cpu_s"]), metrics["steps"]


def bare_tokens_per_s(config: RunConfig, vocab_size: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(wall, CPU-time) tokens/s of the same model, batch and optimizer in a plain PyTorch loop."""
    optim, context = config.optim, config.data.context
    model = build_model(config.model.preset, vocab_size=vocab_size, context=context, seed=0, device=device)
    optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr,
                                  betas=(optim.beta1, optim.beta2), fused=device.type == "cuda")
    forward = torch.compile(model) if device.type == "cuda" else model
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab_size, (optim.batch_size, context), generator=generator).to(device)
               for _ in range(8)]
    for step in range(steps):
        if step == LOG_EVERY:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, cpu_started = time.perf_counter(), time.process_time()
        ids = batches[step % len(batches)]
        for start in range(0, ids.shape[0], optim.micro_batch_size):
            micro = ids[start : start + optim.micro_batch_size]
            with autocast_for(device):
                logits = forward(input_ids=micro, use_cache=False).logits
            (token_losses(logits, micro).mean() * (micro.shape[0] / ids.shape[0])).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    tokens = (steps - LOG_EVERY) * optim.batch_size * context
    return tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu_started)


def mfu(preset: str, context: int, batch: int, micro: int, steps: int, peak_tflops: float) -> dict:
    """MFU of the loop's own step function (compiled, bf16 autocast, fused AdamW) on CUDA."""
    device = torch.device("cuda")
    vocab = 128_256
    model = build_model(preset, vocab_size=vocab, context=context, seed=0, device=device)
    n = sum(p.numel() for p in model.parameters()) - model.model.embed_tokens.weight.numel()
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95), fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    forward = torch.compile(model)
    ids = torch.randint(0, vocab, (batch, context), device=device)
    docs = torch.zeros_like(ids)
    parameters = list(model.parameters())
    for step in range(steps):
        if step == LOG_EVERY:
            torch.cuda.synchronize()
            started = time.perf_counter()
        train_step(forward, optimizer, scheduler, ids, docs, micro_batch_size=micro, grad_clip=1.0,
                   document_mask=False, parameters=parameters)
    torch.cuda.synchronize()
    tokens_per_s = (steps - LOG_EVERY) * batch * context / (time.perf_counter() - started)
    return {"mfu_preset": preset, "mfu_context": context, "mfu_tokens_per_s": tokens_per_s,
            "mfu": 6 * n * tokens_per_s / (peak_tflops * 1e12), "peak_tflops": peak_tflops}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="token store (default: a stdlib store prepared in a temp dir)")
    parser.add_argument("--preset", default="tiny-1m")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the store per measured run")
    parser.add_argument("--attempts", type=int, default=2, help="alternating (loop, bare) pairs; best kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_PEAK_TFLOPS,
                        help="peak dense bf16 TFLOP/s of the GPU, for MFU (default: H100 SXM)")
    parser.add_argument("--mfu-preset", default="300m")
    parser.add_argument("--mfu-context", type=int, default=4096)
    parser.add_argument("--mfu-batch", type=int, default=16)
    parser.add_argument("--mfu-micro-batch", type=int, default=4)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            from train.store import prepare

            store = Path(tmp) / "store"
            prepare("stdlib", store, vocab_size=512, val_docs=8, max_docs=88, seed=0)
        from train.store import TokenStore

        vocab_size = TokenStore.open(store).vocab_size
        config = parse_config({
            "data": {"store": str(store), "real_epochs": args.epochs, "context": args.context},
            "model": {"preset": args.preset},
            "optim": {"batch_size": args.batch, "micro_batch_size": args.batch},
            "eval": {"val_windows": 1},
            "checkpoint_every": 10**9,
            "device": device.type,
        }, RunConfig, source="benchmark")
        loop_rates, bare_rates = [], []  # (wall, cpu) tokens/s per attempt
        for attempt in range(args.attempts):
            print(f"attempt {attempt + 1}: train.loop.run ...", file=sys.stderr, flush=True)
            *rates, steps = loop_tokens_per_s(config, Path(tmp) / f"run-{attempt}")
            loop_rates.append(rates)
            print(f"attempt {attempt + 1}: bare loop, {steps} steps ...", file=sys.stderr, flush=True)
            bare_rates.append(bare_tokens_per_s(config, vocab_size, steps, device))

    best_loop, best_bare = max(r[0] for r in loop_rates), max(r[0] for r in bare_rates)
    best_loop_cpu, best_bare_cpu = max(r[1] for r in loop_rates), max(r[1] for r in bare_rates)
    summary = {
        "name": "train_throughput",
        "device": device.type,
        "preset": args.preset,
        "context": args.context,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "loop_tokens_per_s": best_loop,
        "bare_tokens_per_s": best_bare,
        "ratio": best_loop / best_bare,
        "cpu_time_ratio": best_loop_cpu / best_bare_cpu,
        "target": TARGET_RATIO,
    }
    if device.type == "cuda":
        summary.update(mfu(args.mfu_preset, args.mfu_context, args.mfu_batch, args.mfu_micro_batch,
                           steps=LOG_EVERY + 20, peak_tflops=args.peak_tflops))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
