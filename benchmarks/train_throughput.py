"""Training throughput of `train.loop.run` against a bare PyTorch loop, measured in the same run.

The bare loop is the least a training step can do: the same model (same preset and seed), the
same batch shape and the same AdamW + clip, on pre-made tensors, with no data reading, logging,
schedule, signal handling or checkpointing. The figure is the ratio of the two tokens/s
(target >= 0.95): what the loop's bookkeeping costs. Both sides exclude their first
`train.loop.LOG_EVERY` steps (allocator and autograd warm-up; torch.compile on CUDA), and each is
measured twice, alternating, keeping the better run, because other work on a shared machine
disturbs single measurements. `cpu_time_ratio` compares process CPU time instead of wall time:
on a machine shared with other jobs it shows the loop's own overhead where wall time cannot.

It also measures the chunked head + cross-entropy (`train.loss`) against the full one (logits
materialised) on CPU: forward + backward time and peak resident memory, each in a fresh
process, at two sizes (``loss_sizes``).

On CUDA (``--cuda-suite``, never run in this repository: no GPU here) it reports, for the 150m and
300m presets at context 4096 with document masking off and ``document``: tokens/s, MFU and peak
memory of (a) the loop's own `train_step` (each decoder layer and the loss chunk compiled, bf16
autocast, fused AdamW, chunked or Liger loss, packed-position masking), (b) a bare PyTorch loop (the same model compiled, the
full-logits loss, fused AdamW; masking by a dense mask) and (c) Hugging Face's `Trainer` on the
same model (bf16, torch_compile, adamw_torch_fused, gradient accumulation to the same batch).
``MFU = flops_per_token * tokens/s / peak`` with ``flops_per_token = 6N + 12 L d C`` and N
including the head (`train.plan.model_cost`), against the dense bf16 peak (``--peak-tflops``,
default the H100 SXM's 989).

Scaling (``--scaling 1,2``): the same run data parallel on 1, 2, ... processes (`torchrun
--nproc-per-node=N -m megadocs train`; gloo with one torch thread per process on CPU, NCCL with one
GPU per process on CUDA), steady-state tokens/s of the global batch from rank 0's log, against N x
the single-process figure (``efficiency`` = tokens/s of N / (N x tokens/s of 1); the issue's target
is >= 0.9 at 8 GPUs for the 300m preset at context 4096, unmeasured here). ``--parallelism fsdp``
measures the sharded path (`train.sharding`; default ``auto``: DDP below 1B parameters).

Usage: ``python benchmarks/train_throughput.py [--store DIR] [--preset tiny-1m] [--context 256]
[--cuda-suite] [--scaling 1,2]``. The last stdout line is a JSON summary for `benchmarks/run_all.py`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import torch

from megadocs.config import parse_config
from megadocs.formats import RunDir
from train.config import RunConfig
from train.device import resolve_device
from train.evaluate import autocast_for, model_logits, token_losses
from train.loop import LOG_EVERY, run
from train.loss import MicroBatchLoss, linear_cross_entropy_sum, next_token_loss, resolve_loss_implementation
from train.model import build_model
from train.plan import model_cost
from train.step import param_groups, train_step

H100_BF16_PEAK_TFLOPS = 989.0
TARGET_RATIO = 0.95


def loop_tokens_per_s(config: RunConfig, out: Path) -> tuple[float, float, int]:
    """Steady-state (wall, CPU-time) tokens/s of `run` from its log, after the first log line."""
    metrics = run(config, out)
    wall_rate, cpu_rate = logged_tokens_per_s(out)
    return wall_rate, cpu_rate, metrics.steps


def logged_tokens_per_s(out: Path) -> tuple[float, float]:
    """Steady-state (wall, CPU-time of rank 0) tokens/s from RUN's log, after its first line."""
    lines = [json.loads(line) for line in RunDir(out).log.read_text().splitlines()]
    first, last = lines[0], lines[-1]
    tokens = last["tokens_seen"] - first["tokens_seen"]
    # tokens_per_s in the log is cumulative: elapsed = tokens_seen / tokens_per_s
    wall = last["tokens_seen"] / last["tokens_per_s"] - first["tokens_seen"] / first["tokens_per_s"]
    return tokens / wall, tokens / (last["cpu_s"] - first["cpu_s"])


def scaling(args, device: torch.device) -> dict:
    """Tokens/s of one run on each of `args.scaling` process counts, against N x one process's."""
    counts = [int(n) for n in args.scaling.split(",")]
    if counts[0] != 1:
        raise SystemExit("--scaling: the first process count must be 1 (the reference)")
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if device.type == "cpu" else dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or _default_store(Path(tmp))
        config_path = Path(tmp) / "run.yaml"
        config_path.write_text(json.dumps({
            "data": {"store": str(store), "real_epochs": args.epochs, "context": args.context},
            "model": {"preset": args.preset},
            "optim": {"batch_size": args.batch, "micro_batch_size": args.micro_batch or args.batch},
            "eval": {"val_windows": 1}, "checkpoint_every": 10**9, "device": device.type,
            "parallelism": args.parallelism,
        }))  # fmt: skip
        rates = {}
        for count in counts:
            out = Path(tmp) / f"run-{count}"
            print(f"scaling: {count} process(es) ...", file=sys.stderr, flush=True)
            launcher = [torchrun, f"--nproc-per-node={count}", "-m", "megadocs"] if count > 1 else [
                sys.executable, "-m", "megadocs"]
            subprocess.run([*launcher, "train", str(config_path), "--out", str(out)], env=env, check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            rates[count] = logged_tokens_per_s(out)[0]
    return {"scaling": [
        {"processes": n, "tokens_per_s": rate, "linear_tokens_per_s": n * rates[1], "efficiency": rate / (n * rates[1])}
        for n, rate in rates.items()
    ], "scaling_setup": {"preset": args.preset, "context": args.context, "batch": args.batch,
                         "micro_batch": args.micro_batch or args.batch, "device": device.type,
                         "parallelism": args.parallelism}}  # fmt: skip


def _default_store(tmp: Path) -> Path:
    from train.store import prepare

    store = tmp / "store"
    prepare("stdlib", store, vocab_size=512, val_docs=8, max_docs=88, seed=0)
    return store


def bare_tokens_per_s(config: RunConfig, vocab_size: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(wall, CPU-time) tokens/s of the same model, batch, loss and optimizer in a plain PyTorch loop."""
    optim, context = config.optim, config.data.context
    model = build_model(config.model.preset, vocab_size=vocab_size, context=context, seed=0, device=device)
    optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay, optim.weight_decay_on), lr=optim.lr,
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
                loss = next_token_loss(forward, micro, implementation="chunked")
            (loss * (micro.shape[0] / ids.shape[0])).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    tokens = (steps - LOG_EVERY) * optim.batch_size * context
    return tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu_started)


LOSS_CHUNK = 512  # rows per chunk in the comparison (training uses train.loss.DEFAULT_CHUNK_TOKENS)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


class _PeakResident:
    """Samples this process's resident memory every millisecond (torch ops release the GIL), so
    the peak of one operation is measured even when importing torch peaked higher before it."""

    def __enter__(self):
        self.before = self.peak = _resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _resident_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _resident_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.before


def _loss_child(tokens: int, hidden: int, vocab: int, implementation: str, queue) -> None:
    """In a fresh process: seconds and peak resident-memory growth (bytes) of one forward + backward."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, hidden, generator=generator, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=generator, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,), generator=generator)
    linear_cross_entropy_sum(h[:8], w, targets[:8], implementation=implementation).backward()  # warm-up
    h.grad = w.grad = None
    with _PeakResident() as memory:
        started = time.perf_counter()
        linear_cross_entropy_sum(h, w, targets, implementation=implementation, chunk_tokens=LOSS_CHUNK).backward()
        seconds = time.perf_counter() - started
    queue.put((seconds, memory.growth))


def loss_comparison(sizes: list[tuple[int, int, int]]) -> list[dict]:
    """Chunked vs full head + cross-entropy on CPU: time and peak memory, each in its own process."""
    context = multiprocessing.get_context("spawn")
    rows = []
    for tokens, hidden, vocab in sizes:
        row = {"tokens": tokens, "hidden": hidden, "vocab": vocab, "logits_bytes": tokens * vocab * 4}
        for implementation in ("full", "chunked"):
            queue = context.Queue()
            child = context.Process(target=_loss_child, args=(tokens, hidden, vocab, implementation, queue))
            child.start()
            seconds, peak = queue.get()
            child.join()
            row[f"{implementation}_s"], row[f"{implementation}_peak_bytes"] = seconds, peak
        row["time_ratio"] = row["chunked_s"] / row["full_s"]
        row["memory_ratio"] = row["chunked_peak_bytes"] / row["full_peak_bytes"]
        rows.append(row)
    return rows


# --- CUDA suite (written for H100/H200; never run in this repository) --------------------------

CUDA_VOCAB = 128_256


def _cuda_measure(step, tokens_per_step: int, steps: int) -> tuple[float, int]:
    """(tokens/s, peak bytes) of `step()` after LOG_EVERY warm-up steps (compile, allocator)."""
    for _ in range(LOG_EVERY):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * tokens_per_step / (time.perf_counter() - started), torch.cuda.max_memory_allocated()


def _cuda_batches(batch: int, context: int, masked: bool):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, CUDA_VOCAB, (batch, context), generator=generator)
    documents = (torch.rand(batch, context, generator=generator) < 1 / 512).long().cumsum(dim=1)
    if not masked:
        documents.zero_()
    return ids.cuda(), documents.cuda()


def cuda_loop(preset: str, context: int, batch: int, micro: int, masked: bool, steps: int) -> tuple[float, int]:
    """The loop's own step: what `train.loop` builds on CUDA."""
    from train.attention import masked_attention_backend, set_attention
    from train.compile import compile_layers, decoder_layers
    from train.config import DocumentMask

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    model = build_model(preset, vocab_size=CUDA_VOCAB, context=context, seed=0, eos_id=0, device=device)
    if masked:
        set_attention(model, masked_attention_backend(device))
    compile_layers(decoder_layers(model))  # what train.loop does on CUDA
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95), fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    ids, documents = _cuda_batches(batch, context, masked)
    mode = DocumentMask.DOCUMENT if masked else DocumentMask.OFF
    implementation = resolve_loss_implementation("auto", device, compiled=True)
    loss_module = MicroBatchLoss(model, implementation=implementation, document_mask=mode, eos_id=0)

    def step():
        train_step(loss_module, optimizer, scheduler, ids, documents, micro_batch_size=micro, grad_clip=1.0)

    return _cuda_measure(step, batch * context, steps)


def cuda_bare(preset: str, context: int, batch: int, micro: int, masked: bool, steps: int) -> tuple[float, int]:
    """A bare loop as a user would write it: whole-model compile, full logits, a dense mask when masked."""
    device = torch.device("cuda")
    model = build_model(preset, vocab_size=CUDA_VOCAB, context=context, seed=0, eos_id=0, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    forward = torch.compile(model)
    ids, documents = _cuda_batches(batch, context, masked)

    def step():
        for start in range(0, batch, micro):
            micro_ids, micro_docs = ids[start : start + micro], documents[start : start + micro]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model_logits(forward, micro_ids, micro_docs, document_mask="document" if masked else "off")
            (token_losses(logits, micro_ids).mean() * (micro / batch)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _cuda_measure(step, batch * context, steps)


def cuda_hf_trainer(preset: str, context: int, batch: int, micro: int, steps: int) -> tuple[float, int]:
    """Hugging Face's Trainer on the same model (no document masking: it has no such option)."""
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    class RandomWindows(Dataset):
        def __len__(self):
            return (steps + LOG_EVERY) * batch

        def __getitem__(self, index):
            ids = torch.randint(1, CUDA_VOCAB, (context,), generator=torch.Generator().manual_seed(index))
            return {"input_ids": ids, "labels": ids}

    model = build_model(preset, vocab_size=CUDA_VOCAB, context=context, seed=0, eos_id=0, device="cuda")
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out, per_device_train_batch_size=micro, gradient_accumulation_steps=batch // micro,
            max_steps=steps + LOG_EVERY, learning_rate=1e-3, weight_decay=0.1, adam_beta2=0.95,
            max_grad_norm=1.0, bf16=True, torch_compile=True, optim="adamw_torch_fused", tf32=True,
            logging_steps=10**9, save_strategy="no", report_to=[], dataloader_num_workers=2,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=RandomWindows())
        torch.cuda.reset_peak_memory_stats()
        result = trainer.train()
    # Trainer's own figure includes the warm-up steps: a conservative baseline for it.
    return result.metrics["train_samples_per_second"] * context, torch.cuda.max_memory_allocated()


def cuda_suite(args) -> dict:
    rows = []
    for preset in ("150m", "300m"):
        cost = model_cost(preset, vocab_size=CUDA_VOCAB, context=args.cuda_context)
        for masked in (False, True):
            row = {"preset": preset, "context": args.cuda_context, "batch": args.cuda_batch,
                   "micro_batch": args.cuda_micro_batch, "document_mask": masked}
            shape = (preset, args.cuda_context, args.cuda_batch, args.cuda_micro_batch)
            runs = {"loop": partial(cuda_loop, *shape, masked, args.cuda_steps),
                    "bare": partial(cuda_bare, *shape, masked, args.cuda_steps)}
            if not masked:  # the Trainer has no document masking
                runs["hf_trainer"] = partial(cuda_hf_trainer, *shape, args.cuda_steps)
            for name, measure in runs.items():
                try:
                    tokens_per_s, peak = measure()
                except torch.OutOfMemoryError:
                    row[f"{name}_oom"] = True
                    continue
                finally:
                    torch.cuda.empty_cache()
                row[f"{name}_tokens_per_s"] = tokens_per_s
                row[f"{name}_mfu"] = cost.flops_per_token * tokens_per_s / (args.peak_tflops * 1e12)
                row[f"{name}_peak_gib"] = peak / 2**30
            rows.append(row)
    return {"cuda_device": torch.cuda.get_device_name(0), "peak_tflops": args.peak_tflops, "cuda": rows}


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
    parser.add_argument("--skip-loop", action="store_true", help="only the loss comparison (and the CUDA suite)")
    parser.add_argument("--cuda-suite", action="store_true", help="on CUDA: 150m/300m at --cuda-context vs bare "
                        "loop and HF Trainer (see the module docstring)")
    parser.add_argument("--cuda-context", type=int, default=4096)
    parser.add_argument("--cuda-batch", type=int, default=64)
    parser.add_argument("--cuda-micro-batch", type=int, default=16)
    parser.add_argument("--cuda-steps", type=int, default=20)
    parser.add_argument("--scaling", default=None, metavar="1,2,...",
                        help="data-parallel scaling: tokens/s on these process counts (the first must be 1)")
    parser.add_argument("--micro-batch", type=int, default=None, help="with --scaling: micro-batch (default --batch)")
    parser.add_argument("--parallelism", choices=("auto", "ddp", "fsdp"), default="auto",
                        help="with --scaling: the runs' parallelism (train.sharding)")
    parser.add_argument("--loss-sizes", default="2048x128x16384,4096x128x16384",
                        help="TOKENSxHIDDENxVOCAB,... for the chunked vs full loss comparison ('' = skip)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    summary = {"name": "train_throughput", "device": device.type}
    if args.scaling:
        summary.update(scaling(args, device))
    if not args.skip_loop:
        summary.update(loop_against_bare(args, device))
    if args.loss_sizes:
        sizes = [tuple(int(x) for x in size.split("x")) for size in args.loss_sizes.split(",")]
        summary["loss_chunked_vs_full"] = loss_comparison(sizes)
    if device.type == "cuda" and args.cuda_suite:
        summary.update(cuda_suite(args))
    print(json.dumps(summary))
    return 0


def loop_against_bare(args, device: torch.device) -> dict:
    """Tokens/s of `train.loop.run` and of the bare loop, best of `args.attempts` alternating pairs."""
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or _default_store(Path(tmp))
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
    return {
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


if __name__ == "__main__":
    sys.exit(main())
