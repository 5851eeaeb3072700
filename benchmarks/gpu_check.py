"""The device check: what `train/` does on one GPU, in parts chosen by `--part` and `--sections` (measured: one call of 251 s on an H100, two calls of about 11 minutes in all on an H200; benchmarks/RESULTS.md "gpu_check").

``--part perf``: the device's ceilings (one large bf16 matmul, a device copy); the paper's shape
(300m preset, context 4096, vocabulary 128,256, batch 64) as `megadocs train` runs it now
(regional compile, `loss: auto`, `attention: auto`, strict determinism), and with each other
attention setting (``--train-attention``) and loss (``--train-losses``), over a micro-batch sweep
(16, 32, 8, 64) against `train.plan`'s memory estimate, with the top kernels of one step (which attention kernel
ran) and the compile counters (graphs, graph breaks); the same sweep with `deterministic: false`
(``train_fast``: what a run gains without bitwise resumption); the loss alone (chunked eager, chunked
compiled, Liger, full: time, memory, agreement); and the backbone compiled whole with the eager
loss, as shipped before issue 26.

``--part correct``: document-masked training (FlexAttention, or flash-attn when installed) and its
forward against the dense reference; bitwise determinism of 3 steps run twice, strict and as
before issue 26 (warn_only), with the time ratio; the real ``python -m megadocs train`` at the
preset interrupted by SIGTERM and resumed, compared bit for bit with an uninterrupted run; a
one-process DDP and FSDP2 smoke (NCCL) with a checkpoint round trip.

Each section runs in its own process (spawned on CUDA; forked on CPU, where the parent's imports
of torch and transformers are shared) with its own timeout under a global deadline (``--deadline-s``); what it
measures is appended to ``OUT/gpu_check.jsonl`` line by line as it comes, so a hang or a crash
loses nothing already measured. At the end ``OUT/gpu.json`` holds ``device``, ``torch``,
``cuda``, ``date``, ``train`` (rows of `train.gpu_results.TrainRow`), ``checks`` (name, passed,
detail; ``skipped`` where the device cannot run one) and the other sections' rows. Copied to
``benchmarks/results/gpu.json`` it gives ``megadocs search plan`` and ``megadocs train
--dry-run`` their default MFU (`train.gpu_results`).

The CPU rehearsal (``--device cpu --preset tiny-1m --context 256``) runs every section at toy size
with ``torch.compile``'s ``eager`` backend (dynamo captures every region as on the GPU; no kernels
are generated), so only CUDA-specific failures (Inductor's Triton kernels, NCCL, the CUDA
attention kernels, Liger) are left for the GPU; `tests/benchmarks/test_gpu_check.py` runs it.
Command lines for the GPU: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402  (after the repository is on the path)

from megadocs.exits import Exit  # noqa: E402
from megadocs.formats import finite_or_none  # noqa: E402
from megadocs.procs import apply_environment_defaults  # noqa: E402
from train.attention import FLEX, attention_backend, set_attention  # noqa: E402
from train.compile import BACKEND_ENV, compile_backend, compile_layers, decoder_layers  # noqa: E402
from train.config import ATTENTION_SETTINGS, DocumentMask  # noqa: E402
from train.device import ENVIRONMENT_DEFAULTS, set_determinism  # noqa: E402
from train.evaluate import autocast_for  # noqa: E402
from train.gpu_results import GpuResults  # noqa: E402
from train.loss import (  # noqa: E402
    LOSS_KERNELS,
    MicroBatchLoss,
    hidden_states,
    liger_available,
    linear_cross_entropy_sum,
    resolve_loss_implementation,
)
from train.model import build_model  # noqa: E402
from train.plan import MEMORY_HEADROOM, is_out_of_memory, memory_estimate, model_cost  # noqa: E402
from train.presets import PRESETS  # noqa: E402
from train.step import param_groups, train_step  # noqa: E402

LOG = "gpu_check.jsonl"
RESULT = "gpu.json"
RESERVE_S = 8.0  # kept from the deadline to write gpu.json and the summary
DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
"""Dense bf16 peaks (NVIDIA datasheets, without sparsity) by device-name fragment: MFU is against
these (comparable with published figures); an unknown GPU, or the CPU, uses the measured matmul."""


# --- sections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    run: Callable[[Context], None]
    timeout_s: float
    """Its own limit on CUDA (the global deadline may cut it shorter)."""
    minimum_s: float
    """Below this much time left it is skipped, not started."""


@dataclass
class Context:
    """What a section knows: the arguments, the device and where its rows go."""

    args: argparse.Namespace
    section: str
    log: Path
    run_id: str

    @property
    def device(self) -> torch.device:
        return torch.device(self.args.device)

    @property
    def cuda(self) -> bool:
        return self.args.device == "cuda"

    def emit(self, kind: str, **fields: Any) -> None:
        """Append one row to the log now (a later hang loses nothing written)."""
        row = {"run": self.run_id, "section": self.section, "kind": kind, **fields}  # NaN/inf -> null: standard JSON
        line = json.dumps(finite_or_none(row), default=str, allow_nan=False)
        with open(self.log, "a") as handle:
            handle.write(line + "\n")
        print(f"[{self.section}] {kind}: {line[:300]}", flush=True)

    def check(self, name: str, passed: bool, detail: str, *, skipped: bool = False) -> None:
        self.emit("check", name=name, passed=bool(passed), detail=detail, skipped=skipped)

    def attempt(self, name: str, measure: Callable[[], None]) -> None:
        """Run one measurement; an exception becomes a failed check row and the section goes on."""
        try:
            measure()
        except Exception as exc:  # noqa: BLE001 - every failure is a result here
            if self.cuda:
                torch.cuda.empty_cache()
            what = "out of memory" if is_out_of_memory(exc) else f"{type(exc).__name__}: {_last_line(exc)}"
            traceback.print_exc()
            self.check(name, False, what)


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else repr(exc))[:400]


def _synchronize(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


def _peak_gb(ctx: Context) -> float:
    if ctx.cuda:
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # this process's peak RSS


def _reset_peak(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_tflops(device_name: str, measured: float) -> float:
    """The datasheet dense bf16 peak of a known GPU, else the measured matmul ceiling.

    >>> peak_tflops("NVIDIA H200", 790.0), peak_tflops("cpu", 1.5)
    (989.0, 1.5)
    """
    for fragment, peak in DATASHEET_BF16_TFLOPS.items():
        if fragment in device_name:
            return peak
    return measured


def _model(ctx: Context, *, seed: int = 0, preset: str | None = None, vocab: int | None = None,
           context: int | None = None) -> torch.nn.Module:  # fmt: skip
    return build_model(preset or ctx.args.preset, vocab_size=vocab or ctx.args.vocab, context=context or ctx.args.context,
                       seed=seed, eos_id=0, device=ctx.device)  # fmt: skip


def _batch(ctx: Context, rows: int, *, seed: int = 0, document_every: int | None = None, vocab: int | None = None,
           context: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Random token ids [rows, C] (never zeros: EOS is 0) and document ids (one document per row,
    or a new one about every `document_every` tokens)."""
    generator = torch.Generator().manual_seed(seed)
    length = context or ctx.args.context
    ids = torch.randint(1, vocab or ctx.args.vocab, (rows, length), generator=generator)
    documents = torch.zeros(rows, length, dtype=torch.long)
    if document_every:
        documents = (torch.rand(rows, length, generator=generator) < 1 / document_every).long().cumsum(dim=1)
    return ids.to(ctx.device), documents.to(ctx.device)


def _optimizer(model: torch.nn.Module, ctx: Context):
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95), fused=ctx.cuda)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _steps(ctx: Context, model, optimizer, scheduler, ids, documents, *, micro: int, steps: int, implementation: str,
           document_mask=DocumentMask.OFF, loss_module=None) -> list[float]:  # fmt: skip
    """`train.step.train_step` `steps` times on one batch; the losses (one sync per step).
    `loss_module`: a `Parallelism.loss_module` (DDP, FSDP); default: `model`'s own loss."""
    if loss_module is None:
        loss_module = MicroBatchLoss(model, implementation=implementation, document_mask=document_mask, eos_id=0)
    losses = []
    for _ in range(steps):
        loss, _norm = train_step(loss_module, optimizer, scheduler, ids, documents, micro_batch_size=micro,
                                 grad_clip=1.0)  # fmt: skip
        losses.append(float(loss))
    return losses


def _time_steps(ctx: Context, step: Callable[[], Any], *, warmup: int, timed: int) -> tuple[float, float]:
    """(first step's seconds, including compilation; steady seconds per step over `timed` steps)."""
    started = time.perf_counter()
    step()
    _synchronize(ctx)
    first = time.perf_counter() - started
    for _ in range(warmup - 1):
        step()
    _synchronize(ctx)
    _reset_peak(ctx)
    started = time.perf_counter()
    for _ in range(timed):
        step()
    _synchronize(ctx)
    return first, (time.perf_counter() - started) / timed


def _train_row(ctx: Context, *, micro: int, compile_mode: str, loss: str, seconds_per_step: float, first_s: float,
               determinism: str, attention: str = "sdpa") -> dict:  # fmt: skip
    args = ctx.args
    tokens_per_s = args.batch * args.context / seconds_per_step
    flops = model_cost(args.preset, vocab_size=args.vocab, context=args.context).flops_per_token
    peak = args.peak_tflops
    estimate = memory_estimate(args.preset, vocab_size=args.vocab, context=args.context, micro_batch_size=micro,
                               mixed_precision=ctx.cuda, compiled=ctx.cuda).total / 1e9  # fmt: skip
    row = dict(preset=args.preset, context=args.context, vocab=args.vocab, batch=args.batch, micro_batch=micro,
               compile=compile_mode, loss=loss, tokens_per_s=tokens_per_s, flops_per_token=flops, peak_tflops=peak,
               mfu=tokens_per_s * flops / (peak * 1e12), peak_mem_gb=_peak_gb(ctx), plan_estimate_gb=estimate,
               first_step_s=first_s, determinism=determinism, attention=attention,
               device=torch.cuda.get_device_name(0) if ctx.cuda else "cpu")  # fmt: skip
    return {**row, "shipped": shipped_now(row)}


def _kernels(ctx: Context, step: Callable[[], Any], label: str) -> None:
    """The top kernels (device time) of one step, and which of them are attention kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if ctx.cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        step()
        _synchronize(ctx)
    rows = []
    for event in prof.key_averages():
        total = getattr(event, "device_time_total", None) if ctx.cuda else getattr(event, "self_cpu_time_total", None)
        if total is None and ctx.cuda:
            total = getattr(event, "cuda_time_total", 0.0)
        rows.append((float(total or 0.0) / 1e3, event.key))
    rows.sort(reverse=True)
    attention = sorted({name for _, name in rows if any(word in name.lower() for word in
                                                         ("flash", "fmha", "attention", "sdpa", "flex"))})  # fmt: skip
    ctx.emit("kernels", label=label, top=[{"name": name[:160], "ms": round(ms, 3)} for ms, name in rows[:15]],
             attention=[name[:160] for name in attention[:10]])  # fmt: skip


def _compile_counters(ctx: Context, label: str) -> None:
    from torch._dynamo.utils import counters

    breaks = counters.get("graph_break", {})
    ctx.emit("compile", label=label, unique_graphs=int(counters.get("stats", {}).get("unique_graphs", 0)),
             frames=dict(counters.get("frames", {})), graph_breaks=int(sum(breaks.values())),
             graph_break_reasons=[reason[:200] for reason in list(breaks)[:5]])  # fmt: skip


def section_ceilings(ctx: Context) -> None:
    import transformers

    name = torch.cuda.get_device_name(0) if ctx.cuda else "cpu"
    ctx.emit("meta", device=name, torch=torch.__version__, cuda=torch.version.cuda, transformers=transformers.__version__,
             liger=liger_available(), python=platform.python_version(), compile_backend=compile_backend())  # fmt: skip
    size, dtype = (8192, torch.bfloat16) if ctx.cuda else (1024, torch.float32)
    a, b = (torch.randn(size, size, device=ctx.device, dtype=dtype) for _ in range(2))  # random data: never zeros
    seconds = _best_of(ctx, lambda: a @ b, repeats=10)
    matmul = 2 * size**3 / seconds / 1e12
    count = (2**30 if ctx.cuda else 2**25) // 4
    source = torch.rand(count, device=ctx.device)
    target = torch.empty_like(source)
    copy = 2 * source.numel() * 4 / _best_of(ctx, lambda: target.copy_(source), repeats=10) / 1e9  # read + write
    ctx.emit("ceilings", device=name, matmul_tflops=matmul, matmul_shape=f"{size}^3 {dtype}", copy_gbs=copy,
             peak_tflops=peak_tflops(name, matmul))  # fmt: skip
    ctx.check("ceilings", True, f"{name}: matmul {matmul:.4g} TFLOP/s ({size}^3 {dtype}), copy {copy:.4g} GB/s")


def _best_of(ctx: Context, operation: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `operation` after warm-up (CUDA events on the GPU)."""
    for _ in range(3):
        operation()
    _synchronize(ctx)
    times = []
    for _ in range(repeats):
        if ctx.cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            operation()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            started = time.perf_counter()
            operation()
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def section_train(ctx: Context) -> None:
    """The shipped configuration over the micro-batch sweep (strict determinism, as `megadocs train`),
    and each other loss of ``--train-losses`` (``auto`` is what a run resolves it to: ``shipped``)."""
    _train_sweep(ctx, strict=True)


def section_train_fast(ctx: Context) -> None:
    """The same sweep with ``deterministic: false`` (a process of its own: Inductor compiles under
    the determinism setting in force). Strict determinism's deterministic flash-attention backward
    was the largest kernel of the shipped step (235 ms of about 1.05 s); these rows say what a run
    gains without it, and lose bitwise resumption. Never ``shipped``: runs default to strict."""
    _train_sweep(ctx, strict=False)


def _train_sweep(ctx: Context, *, strict: bool) -> None:
    """Each ``--train-attention`` setting (a model of its own, compiled under it) over each loss of
    ``--train-losses`` and each micro-batch; a row says whether it is what a run does by default."""
    set_determinism(ctx.device, strict=strict)
    for attention in ctx.args.train_attention if strict else ctx.args.fast_attention:
        _train_attention(ctx, attention, strict=strict)
        if ctx.cuda:
            torch.cuda.empty_cache()


def _train_attention(ctx: Context, attention: str, *, strict: bool) -> None:
    args = ctx.args
    shipped_loss = resolve_loss_implementation("auto", ctx.device, compiled=True)
    losses = list(dict.fromkeys(shipped_loss if name == "auto" else name for name in args.train_losses))
    setting = "strict" if strict else "off"  # `deterministic: true` / `false`
    backend = attention_backend(attention, ctx.device, DocumentMask.OFF)
    named = setting_of(backend)
    model = _model(ctx)
    set_attention(model, backend)
    compile_layers(decoder_layers(model))
    optimizer, scheduler = _optimizer(model, ctx)
    ids, documents = _batch(ctx, args.batch)
    for index, (implementation, micro) in enumerate((loss, micro) for loss in losses for micro in args.micro):
        def step(micro=micro, implementation=implementation):
            return _steps(ctx, model, optimizer, scheduler, ids, documents, micro=micro, steps=1,
                          implementation=implementation)  # fmt: skip

        def measure(micro=micro, step=step, implementation=implementation, first=index == 0):
            _reset_peak(ctx)
            try:
                first_s, per_step = _time_steps(ctx, step, warmup=args.warmup, timed=args.timed)
            except Exception as exc:  # noqa: BLE001 - an OOM the memory model predicted is a result
                if not is_out_of_memory(exc):
                    raise
                _oom_against_plan(ctx, micro)
                return
            ctx.emit("train", **_train_row(ctx, micro=micro, compile_mode="regional", loss=implementation,
                                           seconds_per_step=per_step, first_s=first_s, determinism=setting,
                                           attention=named))  # fmt: skip
            if first:
                label = f"regional compile, determinism {setting}, attention {named}, {implementation}, micro-batch {micro}"
                _compile_counters(ctx, label)
                _kernels(ctx, step, label)

        ctx.attempt(f"train regional, determinism {setting}, attention {named}, {implementation} micro-batch {micro}",
                    measure)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
    _compile_counters(ctx, f"regional, determinism {setting}, attention {named}, after the sweep")


def setting_of(backend: str) -> str:
    """The ``attention:`` setting a resolved backend is (``flex`` for `FLEX`): what rows record."""
    return "flex" if backend == FLEX else backend


def shipped_now(row: dict) -> bool:
    """Whether a train row measured what ``megadocs train`` runs by default now on the row's device
    (regional compile, ``loss: auto``, ``attention: auto``, ``deterministic: true``). `assemble`
    judges every row again, merged ones too, so a file stays right when the defaults change.

    >>> shipped_now({"device": "cpu", "compile": "regional", "loss": "chunked_compiled", "determinism": "strict"})
    True
    """
    device = torch.device("cpu" if row.get("device") == "cpu" else "cuda")
    attention = attention_backend("auto", device, DocumentMask.OFF, deterministic=True)
    return (row["compile"] == "regional" and row.get("determinism") == "strict"
            and row["loss"] == resolve_loss_implementation("auto", device, compiled=True)
            and row.get("attention", "sdpa") == setting_of(attention))  # fmt: skip


def _oom_against_plan(ctx: Context, micro: int) -> None:
    """An out-of-memory step: passed when `train.plan`'s estimate said it would not fit either."""
    device_bytes = torch.cuda.get_device_properties(0).total_memory if ctx.cuda else float("inf")
    estimate = memory_estimate(ctx.args.preset, vocab_size=ctx.args.vocab, context=ctx.args.context,
                               micro_batch_size=micro, mixed_precision=ctx.cuda, compiled=ctx.cuda).total  # fmt: skip
    predicted = estimate > MEMORY_HEADROOM * device_bytes
    if ctx.cuda:
        torch.cuda.empty_cache()
    ctx.check(f"train regional micro-batch {micro}: out of memory", predicted,
              f"the plan estimates {estimate / 1e9:.1f} GB of {device_bytes / 1e9:.1f} GB "
              f"({'predicted' if predicted else 'not predicted'})")


def section_train_before(ctx: Context) -> None:
    """As shipped before issue 26: the backbone compiled whole, the loss eager, warn_only determinism.
    (The eager chunked loss now reads the logits' gradient in bf16 once, where it read it in fp32
    twice: a small part of the difference.)"""
    args = ctx.args
    if ctx.cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = _model(ctx)
    model.model.compile(backend=compile_backend())
    optimizer, scheduler = _optimizer(model, ctx)
    ids, documents = _batch(ctx, args.batch)
    micro = args.micro[0]

    def step():
        return _steps(ctx, model, optimizer, scheduler, ids, documents, micro=micro, steps=1, implementation="chunked")

    def measure():
        first_s, per_step = _time_steps(ctx, step, warmup=args.warmup, timed=args.timed)
        ctx.emit("train", **_train_row(ctx, micro=micro, compile_mode="whole", loss="chunked", seconds_per_step=per_step,
                                       first_s=first_s, determinism="warn_only"))  # fmt: skip
        _compile_counters(ctx, f"whole backbone, micro-batch {micro}")
        _kernels(ctx, step, f"whole-backbone compile, eager chunked loss, micro-batch {micro}")

    ctx.attempt(f"train as before issue 26, micro-batch {micro}", measure)


def section_loss(ctx: Context) -> None:
    """Head + cross-entropy alone on `loss_rows` hidden states: time, memory and agreement with full."""
    args = ctx.args
    hidden_size = PRESETS[args.preset].hidden
    rows = args.loss_rows
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, hidden_size, generator=generator).to(ctx.device)
    weight = (torch.randn(args.vocab, hidden_size, generator=generator) / hidden_size**0.5).to(ctx.device)
    targets = torch.randint(0, args.vocab, (rows,), generator=generator).to(ctx.device)
    implementations = ["full", "chunked", "chunked_compiled"] + (["liger"] if ctx.cuda and liger_available() else [])
    if "liger" not in implementations:
        ctx.check("loss liger", False, "Liger-Kernel is not installed here (CUDA only)", skipped=True)
    reference: dict[str, torch.Tensor] = {}
    for implementation in implementations:
        def run_once(implementation=implementation):
            h = hidden.clone().requires_grad_()
            w = weight.clone().requires_grad_()
            with autocast_for(ctx.device):
                loss = linear_cross_entropy_sum(h, w, targets, implementation=implementation)
            loss.backward()
            return loss.detach(), h.grad, w.grad

        def measure(implementation=implementation, run_once=run_once):
            _reset_peak(ctx)
            seconds = _best_of(ctx, run_once, repeats=args.timed)
            loss, grad_hidden, grad_weight = run_once()
            if implementation == "full":
                reference.update(loss=loss, hidden=grad_hidden, weight=grad_weight)
            errors = {name: float((got - reference[name]).norm() / reference[name].norm())
                      for name, got in (("loss", loss), ("hidden", grad_hidden), ("weight", grad_weight))}  # fmt: skip
            ctx.emit("loss", implementation=implementation, rows=rows, vocab=args.vocab, hidden=hidden_size,
                     seconds=seconds, tokens_per_s=rows / seconds, peak_mem_gb=_peak_gb(ctx),
                     error_vs_full=errors)  # fmt: skip
            tolerance = 1e-2 if ctx.cuda else 1e-4  # bf16 matmuls on the GPU, fp32 on the CPU
            worst = max(errors.values())
            ctx.check(f"loss {implementation} equals full", worst <= tolerance,
                      f"largest relative error {worst:.2e} (loss, hidden and head gradients; limit {tolerance:g})")

        ctx.attempt(f"loss {implementation}", measure)


def section_masked(ctx: Context) -> None:
    """Document masking with the backend a run uses on this device (FlexAttention or flash-attn on
    CUDA, SDPA on CPU): loss and gradients against the dense-mask reference, then training steps.
    On CPU, where FlexAttention has no backward, its compiled forward is checked on its own."""
    from train.attention import attention_units, dense_unit_mask, masked_attention_backend

    args = ctx.args
    rows = 2
    ids, documents = _batch(ctx, rows, seed=1, document_every=max(16, args.context // 8))
    units = attention_units(ids, documents, DocumentMask.DOCUMENT, eos_id=0)

    def forward():
        model = _model(ctx).eval()
        with torch.no_grad(), autocast_for(ctx.device):
            dense = model.model(input_ids=ids, attention_mask=dense_unit_mask(units), use_cache=False).last_hidden_state
            set_attention(model, FLEX)
            compile_layers(decoder_layers(model))
            flex = hidden_states(model, ids, documents, document_mask=DocumentMask.DOCUMENT, eos_id=0)
        error = float((flex - dense).norm() / dense.norm())
        ctx.check("masked forward: FlexAttention vs dense mask", error < 3e-2, f"relative error {error:.2e}")

    if not ctx.cuda:  # on CUDA the training check below covers FlexAttention's forward too
        ctx.attempt("masked forward: FlexAttention vs dense mask", forward)

    def train():
        backend = masked_attention_backend(ctx.device)
        reference = _model(ctx)  # eager, dense mask through SDPA
        with autocast_for(ctx.device):
            dense_loss = _dense_masked_loss(reference, ids, units)
        dense_loss.backward()
        model = _model(ctx)
        set_attention(model, backend)
        if ctx.cuda:  # on CPU the backend is SDPA with a dense mask, uncompiled as in a CPU run
            compile_layers(decoder_layers(model))
        implementation = resolve_loss_implementation("auto", ctx.device, compiled=ctx.cuda)
        with autocast_for(ctx.device):
            from train.loss import next_token_loss

            loss = next_token_loss(model, ids, documents, document_mask=DocumentMask.DOCUMENT, eos_id=0,
                                   implementation=implementation)  # fmt: skip
        loss.backward()
        want = torch.cat([p.grad.flatten() for p in reference.model.layers.parameters()])
        got = torch.cat([p.grad.flatten() for p in model.model.layers.parameters()])
        error = float((got - want).norm() / want.norm())
        ctx.check(f"masked gradients ({backend}) vs dense mask", error < 5e-2 and abs(float(loss - dense_loss)) < 2e-2,
                  f"layer gradients relative error {error:.2e}, loss {float(loss):.4f} vs {float(dense_loss):.4f}")
        optimizer, scheduler = _optimizer(model, ctx)
        model.zero_grad(set_to_none=True)
        losses = _steps(ctx, model, optimizer, scheduler, ids, documents, micro=rows, steps=3,
                        implementation=implementation, document_mask=DocumentMask.DOCUMENT)  # fmt: skip
        ctx.check(f"masked training ({backend}): 3 steps", all(map(_finite, losses)),
                  f"losses {', '.join(f'{loss:.4f}' for loss in losses)} (one batch, repeated)")

    ctx.attempt("masked training", train)


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _dense_masked_loss(model, ids, units) -> torch.Tensor:
    from train.attention import dense_unit_mask

    hidden = model.model(input_ids=ids, attention_mask=dense_unit_mask(units), use_cache=False).last_hidden_state
    predictions = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    total = linear_cross_entropy_sum(predictions, model.lm_head.weight, ids[:, 1:].reshape(-1), implementation="full")
    return total / predictions.shape[0]


def _checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _determinism(ctx: Context, setting: str, attention: str = "auto") -> None:
    args = ctx.args
    if setting == "strict":
        set_determinism(ctx.device, strict=True)
    elif ctx.cuda:  # what set_determinism did before issue 26
        torch.use_deterministic_algorithms(True, warn_only=True)
    ids, documents = _batch(ctx, args.det_batch, seed=2)
    implementation = resolve_loss_implementation("auto", ctx.device, compiled=True)
    checksums, seconds = [], []
    backend = attention_backend(attention, ctx.device, DocumentMask.OFF)
    named = setting_of(backend)
    for _attempt in range(2):
        model = _model(ctx)
        set_attention(model, backend)
        compile_layers(decoder_layers(model))
        optimizer, scheduler = _optimizer(model, ctx)

        def step(model=model, optimizer=optimizer, scheduler=scheduler):
            return _steps(ctx, model, optimizer, scheduler, ids, documents, micro=args.det_batch, steps=1,
                          implementation=implementation)  # fmt: skip

        _first, per_step = _time_steps(ctx, step, warmup=1, timed=2)  # 3 steps
        checksums.append(_checksum(model))
        seconds.append(per_step)
    same = checksums[0] == checksums[1]
    ctx.emit("determinism", setting=setting, bitwise=same, step_s=min(seconds), checksums=checksums, attention=named)
    if setting == "strict":  # a requirement; "before" is a measurement (its row; the summary prints it)
        ctx.check(f"determinism {setting}, attention {named}: 3 steps run twice are bitwise equal", same,
                  f"parameter checksums {checksums[0]} / {checksums[1]}; {min(seconds):.3f} s per step")


def section_determinism_strict(ctx: Context) -> None:
    for attention in ctx.args.det_attention:
        ctx.attempt(f"determinism strict, attention {attention}", lambda attention=attention: _determinism(
            ctx, "strict", attention))


def section_determinism_before(ctx: Context) -> None:
    if not ctx.cuda:  # both settings set CUDA flags only: on CPU they are the same run
        ctx.check("determinism before", False, "same settings as strict on CPU", skipped=True)
        return
    _determinism(ctx, "before")


def section_resume(ctx: Context) -> None:
    """The real CLI at the preset: one run straight through, one SIGTERMed after its first log line
    (step 10) and re-run; metrics, curves and weights must be bitwise equal."""
    args = ctx.args
    with tempfile.TemporaryDirectory(prefix="gpu-check-resume-") as tmp:
        tmp = Path(tmp)
        store = _padded_store(tmp / "store", vocab=args.vocab, max_docs=args.resume_docs, val_docs=args.resume_val_docs)
        config = tmp / "run.yaml"
        batch = args.resume_batch
        config.write_text(json.dumps({
            "data": {"store": str(store), "context": args.context, "real_epochs": args.resume_epochs},
            "model": {"preset": args.preset}, "optim": {"batch_size": batch, "micro_batch_size": batch},
            "eval": {"val_windows": 2, "every": 0}, "tracking": {"tensorboard": False},
            "checkpoint_every": 10**6, "device": args.device, "attention": args.resume_attention,
        }))  # fmt: skip
        straight = _train_cli(config, tmp / "straight", cpu=not ctx.cuda)
        interrupted = _train_cli(config, tmp / "interrupted", cpu=not ctx.cuda)
        stopped_at = _sigterm_after_first_log_line(interrupted, tmp / "interrupted")
        codes = (straight.wait(), interrupted.wait())
        ctx.check(f"resume: SIGTERM saves a checkpoint and exits {Exit.PREEMPTED.value}", codes[1] == Exit.PREEMPTED,
                  f"exit codes {codes} (straight, interrupted); signalled after step {stopped_at}"
                  + _log_tail(tmp, codes, ("straight", "interrupted"), (0, Exit.PREEMPTED)))  # fmt: skip
        resumed = _train_cli(config, tmp / "interrupted", cpu=not ctx.cuda).wait()
        if resumed != 0:
            ctx.check("resume: the interrupted run finishes when re-run", False,
                      _log_tail(tmp, (resumed,), ("interrupted",), (0,)))  # fmt: skip
            return
        runs = [tmp / "straight", tmp / "interrupted"]
        metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
        curves = [[(line["step"], line["loss"]) for line in map(json.loads, (run / "log.jsonl").read_text().splitlines())]
                  for run in runs]  # fmt: skip
        weights = [_weights_digest(run / "model") for run in runs]
        same = metrics[0]["val_losses"] == metrics[1]["val_losses"] and curves[0] == curves[1] and weights[0] == weights[1]
        ctx.check("resume: interrupted + resumed run is bit-identical to an uninterrupted one",
                  resumed == 0 and codes[0] == 0 and same,
                  f"val_loss {metrics[0]['val_loss']!r} vs {metrics[1]['val_loss']!r}, {len(curves[0])} log lines "
                  f"{'equal' if curves[0] == curves[1] else 'differ'}, weights {weights[0]} / {weights[1]}, "
                  f"{metrics[0]['steps']} steps")  # fmt: skip


def _log_tail(tmp: Path, codes, names, expected) -> str:
    """The last line of each CLI run's output whose exit status was not the expected one."""
    tails = []
    for code, name, want in zip(codes, names, expected, strict=True):
        if code != want:
            text = (tmp / f"{name}.log").read_text(errors="replace").replace("\r", "\n").strip().splitlines()
            tails.append(f"{name}: {text[-1][:300] if text else '(no output)'}")
    return ("; " + "; ".join(tails)) if tails else ""


def _train_cli(config: Path, out: Path, *, cpu: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if cpu:
        env["OMP_NUM_THREADS"] = "1"  # two runs side by side on a small machine
    log = open(out.with_suffix(".log"), "ab")  # noqa: SIM115 - the child writes it until it exits
    return subprocess.Popen([sys.executable, "-m", "megadocs", "train", str(config), "--out", str(out)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def _sigterm_after_first_log_line(process: subprocess.Popen, run: Path) -> int:
    log = run / "log.jsonl"
    while process.poll() is None:
        if log.is_file() and log.read_text().strip():
            step = json.loads(log.read_text().splitlines()[0])["step"]
            process.send_signal(signal.SIGTERM)
            return step
        time.sleep(0.1)
    return -1


def _weights_digest(model_dir: Path) -> str:
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in sorted(load_file(path).items()):
            digest.update(name.encode())
            digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]


def _padded_store(out: Path, *, vocab: int, max_docs: int | None, val_docs: int) -> Path:
    """A token store of the standard library's docstrings (a small BPE), its vocabulary declared as
    `vocab` so the model has the paper's embedding and head (ids above the BPE's are never used)."""
    from train.store import prepare

    prepare("stdlib", out, vocab_size=1024, val_docs=val_docs, max_docs=max_docs, seed=0)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["vocab_size"] = max(vocab, manifest["vocab_size"])
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def section_parallel(ctx: Context) -> None:
    """One-process DDP and FSDP2 (NCCL on CUDA, gloo on CPU), laid out as a run lays them out
    (`train.parallel`): 2 steps, a full-state round trip into a fresh model and optimizer, then one
    more step on both; the parameters must agree bitwise."""
    import torch.distributed as dist

    from train.distributed import DistributedContext
    from train.parallel import Replicated, Sharded

    set_determinism(ctx.device, strict=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("nccl" if ctx.cuda else "gloo", rank=0, world_size=1)
    shape = dict(preset=ctx.args.parallel_preset, vocab=ctx.args.parallel_vocab, context=min(ctx.args.context, 512))
    ids, documents = _batch(ctx, 4, seed=3, vocab=shape["vocab"], context=shape["context"])
    implementation = resolve_loss_implementation("auto", ctx.device, compiled=True)
    try:
        for strategy in (Replicated, Sharded):
            def wrapped(state=None, strategy=strategy):
                model = _model(ctx, **shape)
                set_attention(model, attention_backend("auto", ctx.device, DocumentMask.OFF))  # as a run does
                if state is not None:
                    model.load_state_dict(state["model"])
                loss_module = MicroBatchLoss(model, implementation=implementation, document_mask=DocumentMask.OFF,
                                             eos_id=0)  # fmt: skip
                parallel = strategy(DistributedContext())  # the one process of the group
                # on CPU FSDP's compiled layers rehearse the compile path; DDP saves the time
                parallel.parallelize(model, loss_module, device=ctx.device, compiled=ctx.cuda or strategy.shards_state)
                optimizer, scheduler = _optimizer(model, ctx)
                if state is not None:
                    parallel.load_optimizer_state(model, optimizer, state["optimizer"])
                return model, parallel, optimizer, scheduler

            def step(model, parallel, optimizer, scheduler, steps: int) -> None:
                _steps(ctx, model, optimizer, scheduler, ids, documents, micro=2, steps=steps,
                       implementation=implementation, loss_module=parallel.loss_module)  # fmt: skip

            def full_state(model, parallel, optimizer) -> tuple[dict, dict]:
                gathered = parallel.full_state(model, optimizer)
                if gathered is not None:
                    return gathered
                return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, _to_cpu(optimizer.state_dict())

            def round_trip(wrapped=wrapped, step=step, name=strategy.name):
                original = wrapped()
                step(*original, steps=2)
                model_state, optimizer_state = full_state(*original[:3])
                restored = wrapped({"model": model_state, "optimizer": optimizer_state})
                after = []
                for run in (original, restored):
                    step(*run, steps=1)
                    full = full_state(*run[:3])[0]
                    after.append(hashlib.sha256(b"".join(t.detach().float().cpu().numpy().tobytes()
                                                         for _, t in sorted(full.items()))).hexdigest()[:16])  # fmt: skip
                ctx.check(f"parallel {name}: checkpoint round trip, then one step, bitwise", after[0] == after[1],
                          f"parameter checksums {after[0]} / {after[1]} ({shape['preset']}, one process)")

            ctx.attempt(f"parallel {strategy.name}", round_trip)
    finally:
        dist.destroy_process_group()


JOB_VIEW = "import json, os, torch; print(json.dumps([os.environ.get('CUDA_VISIBLE_DEVICES'), torch.cuda.device_count()]))"
"""What a local job sees, printed by a process it starts (it inherits the job's environment): a
callable of the standard library is pickled by reference, where a function of this script (run as
__main__, or __mp_main__ in a spawned section) may not be importable in the job."""


def section_local_jobs(ctx: Context) -> None:
    """Jobs of the local executor that a sweep or gen runs on one machine (`megadocs.executors.LocalExecutor`),
    as many as it runs at once here (at most one per GPU, `Executor.slots`), each asked what it sees:
    on a GPU machine each must see one GPU, not another job's (submitit had started every local job
    with CUDA_VISIBLE_DEVICES=""). On CPU the GPU list is a MOCK ("0,1"), so that the path runs: the
    jobs then see those names and no device."""
    from megadocs.executors import JobState, LocalExecutor

    if not ctx.cuda:
        os.environ["CUDA_VISIBLE_DEVICES"] = "0,1"  # MOCK: this section's own process (forked)
    with tempfile.TemporaryDirectory() as folder:
        jobs = LocalExecutor(Path(folder), timeout_min=5, max_parallel=2)
        view = functools.partial(subprocess.check_output, [sys.executable, "-c", JOB_VIEW], text=True)
        ids = jobs.submit([view] * jobs.slots(2))
        polls: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while len(polls) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.5)
            polls.update({job: poll for job in ids if job not in polls
                          for poll in [jobs.poll(job)] if poll.state != JobState.RUNNING})  # fmt: skip
    seen = [json.loads(polls[job].value) if job in polls and polls[job].state == JobState.DONE else None for job in ids]
    ctx.emit("local_jobs", gpus=list(jobs.gpus), seen=seen)
    names = [job_view[0] for job_view in seen if job_view is not None]
    own = len(names) == len(ids) and len(set(names)) == len(names) and all(name and "," not in name for name in names)
    devices = all(job_view[1] == 1 for job_view in seen if job_view is not None) if ctx.cuda else True
    ctx.check("local jobs: one GPU each", own and devices,
              f"{len(ids)} job(s) at once on GPUs {', '.join(jobs.gpus) or 'none'}: saw {seen}")


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_cpu(item) for item in value]
    return value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SECTIONS: dict[str, Section] = {
    "ceilings": Section(section_ceilings, timeout_s=60, minimum_s=10),
    "train": Section(section_train, timeout_s=300, minimum_s=60),
    "train_fast": Section(section_train_fast, timeout_s=200, minimum_s=60),
    "loss": Section(section_loss, timeout_s=60, minimum_s=20),
    "train_before": Section(section_train_before, timeout_s=150, minimum_s=60),
    "masked": Section(section_masked, timeout_s=100, minimum_s=40),
    # resume: 89 s on an H200 with Inductor's cache warm; 120 s was too short with it cold
    "resume": Section(section_resume, timeout_s=200, minimum_s=50),
    "determinism_strict": Section(section_determinism_strict, timeout_s=110, minimum_s=30),
    "parallel": Section(section_parallel, timeout_s=80, minimum_s=30),
    "determinism_before": Section(section_determinism_before, timeout_s=60, minimum_s=30),
    "local_jobs": Section(section_local_jobs, timeout_s=150, minimum_s=20),
}
# In order of importance: a deadline skips the last ones first. The resume runs share the compiled
# graphs of the determinism section (same shapes), so whichever runs second compiles from cache.
PARTS = {
    "perf": ("ceilings", "train", "train_fast", "loss", "train_before"),
    "correct": ("masked", "resume", "determinism_strict", "parallel", "determinism_before", "local_jobs"),
}
PARTS["all"] = PARTS["perf"] + PARTS["correct"]


# --- the parent: sections in forked processes, then gpu.json ------------------------------------


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_section(ctx: Context, limit_s: float) -> tuple[str, float]:
    """Run the section in a child process of its own process group, wait at most `limit_s`;
    (status, seconds). Spawned on CUDA (a forked child cannot rely on a CUDA driver its parent may
    have touched), forked on CPU (the parent's imports are shared: 10+ s saved on 2 cores)."""
    started = time.monotonic()
    method = "spawn" if ctx.cuda else "fork"
    process = multiprocessing.get_context(method).Process(target=_child, args=(ctx,), name=ctx.section)
    process.start()
    process.join(limit_s)
    if process.is_alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # the section and whatever it started
        process.kill()  # also when it had not yet made its process group
        process.join(5)
        ctx.check(f"section {ctx.section}", False, f"timed out after {limit_s:.0f} s; rows above were kept")
        return "timeout", time.monotonic() - started
    status = "ok" if process.exitcode == 0 else f"exit {process.exitcode}"
    return status, time.monotonic() - started


def _child(ctx: Context) -> None:
    os.setpgid(0, 0)
    code = 0
    try:
        SECTIONS[ctx.section].run(ctx)
    except BaseException as exc:  # noqa: BLE001 - reported as a failed check, then the process ends
        traceback.print_exc()
        ctx.check(f"section {ctx.section}", False, f"{type(exc).__name__}: {_last_line(exc)}")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not the parent's exit handlers


def assemble(lines: list[dict], *, part: str, sections: list[dict], merge: dict | None) -> dict:
    """gpu.json from this run's log rows (and an earlier part's gpu.json to merge)."""
    meta = next((line for line in lines if line["kind"] == "meta"), {})
    rows = {kind: [{k: v for k, v in line.items() if k not in ("run", "kind")} for line in lines if line["kind"] == kind]
            for kind in ("train", "check", "loss", "kernels", "compile", "determinism", "ceilings")}  # fmt: skip
    checks = [{"name": row["name"], "passed": row["passed"], "detail": row["detail"], "skipped": row["skipped"]}
              for row in rows["check"]]  # fmt: skip
    timing = {row["setting"]: row["step_s"] for row in rows["determinism"]}
    if {"strict", "before"} <= set(timing):
        ratio = timing["strict"] / timing["before"]
        checks.append({"name": "determinism cost: strict / before step time", "passed": True,
                       "detail": f"{ratio:.3f} ({timing['strict']:.3f} s vs {timing['before']:.3f} s per step)",
                       "skipped": False})  # fmt: skip
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for row in rows["train"] + rows["determinism"]:  # a merged file can hold rows of several GPUs and dates
        row.setdefault("device", meta.get("device"))
        row.setdefault("date", date)
    results = {
        "device": meta.get("device", "unknown"), "torch": meta.get("torch", torch.__version__),
        "cuda": meta.get("cuda"), "date": date,
        "parts": [part], "meta": meta, "ceilings": rows["ceilings"], "train": rows["train"], "checks": checks,
        "loss": rows["loss"], "kernels": rows["kernels"], "compile": rows["compile"],
        "determinism": rows["determinism"], "sections": sections,
    }  # fmt: skip
    if merge:
        for row in merge.get("train", []) + merge.get("determinism", []):
            row.setdefault("device", merge.get("device"))
            row.setdefault("date", merge.get("date"))  # rows measured before the check recorded it: its part's
            row.setdefault("attention", "sdpa")  # rows measured before the check recorded it
        for key in ("train", "checks", "loss", "kernels", "compile", "determinism", "sections", "ceilings"):
            results[key] = merge.get(key, []) + results[key]
        results["parts"] = merge.get("parts", []) + results["parts"]
        if results["device"] == "unknown":
            results.update({key: merge[key] for key in ("device", "torch", "cuda", "meta") if key in merge})
    for row in results["train"]:
        row["shipped"] = shipped_now(row)
    GpuResults.model_validate(results)  # the schema plans read (train.gpu_results)
    return results


def summary(results: dict) -> str:
    lines = [f"device {results['device']}, torch {results['torch']}, CUDA {results['cuda']}, {results['date']}"]
    for row in results["train"]:
        lines.append(f"  train {(row.get('device') or results['device'])[:12]:<12} {row['preset']} ctx {row['context']} "
                     f"micro {row['micro_batch']:>3} "
                     f"{row['compile']:<8} {row.get('attention', 'sdpa'):<5} {row.get('determinism') or '-':<9} "
                     f"{row['loss']:<16} {row['tokens_per_s']:>10.0f} tok/s  MFU {row['mfu']:.3f}  "
                     f"peak {row['peak_mem_gb']:.1f} GB (plan {row.get('plan_estimate_gb', 0):.1f})")  # fmt: skip
    for row in results["loss"]:
        lines.append(f"  loss {row['implementation']:<16} {row['tokens_per_s']:>10.0f} tok/s  "
                     f"peak {row['peak_mem_gb']:.1f} GB  error {max(row['error_vs_full'].values()):.1e}")
    for row in results["kernels"]:
        lines.append(f"  kernels ({row['label']}): attention {row['attention'][:3]}")
    for row in results["determinism"]:
        lines.append(f"  determinism {row['setting']:<7} {row.get('attention', 'sdpa'):<5} bitwise {row['bitwise']!s:<5} {row['step_s']:.3f} s per step")
    for check in results["checks"]:
        mark = "skip" if check.get("skipped") else ("ok  " if check["passed"] else "FAIL")
        lines.append(f"  [{mark}] {check['name']}: {check['detail']}")
    for section in results["sections"]:
        lines.append(f"  section {section['name']}: {section['status']} in {section['seconds']:.0f} s "
                     f"({section.get('cpu_s', 0):.0f} CPU-s)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), default="perf")
    parser.add_argument("--out", required=True, help="directory for gpu_check.jsonl and gpu.json")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--preset", default="300m")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=None, help="default 128256 on CUDA, 2048 on CPU")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default 64 on CUDA, 4 on CPU)")
    parser.add_argument("--micro", default=None, help="micro-batch sweep, comma-separated (default 16,32,8,64; CPU 2,4)")
    parser.add_argument("--train-losses", default="auto",
                        help="loss implementations the train section runs, comma-separated (default auto: the shipped one)")
    parser.add_argument("--train-attention", default="auto",
                        help="attention settings the train section runs, comma-separated (auto, sdpa, flex)")
    parser.add_argument("--fast-attention", default="auto", help="the same for train_fast")
    parser.add_argument("--det-attention", default="auto", help="the same for determinism_strict")
    parser.add_argument("--resume-attention", default="auto", help="the resume runs' `attention:` setting")
    parser.add_argument("--deadline-s", type=float, default=None, help="global limit (default 285 on CUDA, 600 on CPU)")
    parser.add_argument("--sections", default=None, help="comma-separated subset of the part's sections")
    parser.add_argument("--merge", default=None, help="an earlier part's gpu.json to include")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.vocab = args.vocab or (128_256 if cuda else 2048)
    args.batch = args.batch or (64 if cuda else 4)
    args.train_losses = args.train_losses.split(",")
    if unknown := sorted(set(args.train_losses) - {"auto", *LOSS_KERNELS}):
        parser.error(f"--train-losses: unknown {', '.join(unknown)}; expected auto or {', '.join(LOSS_KERNELS)}")
    for name in ("train_attention", "fast_attention", "det_attention"):
        setattr(args, name, getattr(args, name).split(","))
        if unknown := sorted(set(getattr(args, name)) - set(ATTENTION_SETTINGS)):
            parser.error(f"--{name.replace('_', '-')}: unknown {', '.join(unknown)}; expected {', '.join(ATTENTION_SETTINGS)}")
    args.micro = [int(m) for m in (args.micro or ("16,32,8,64" if cuda else "2,4")).split(",")]
    args.deadline_s = args.deadline_s or (285.0 if cuda else 600.0)
    args.warmup, args.timed = (2, 3) if cuda else (1, 1)
    args.loss_rows = 4 * (args.context - 1) if cuda else 2 * (args.context - 1)
    args.det_batch = 8 if cuda else 4  # also the resume runs' batch: their compiled graphs are shared
    # CUDA: the determinism section's batch (the runs reuse its compiled graphs), ~26 steps; CPU: ~18 steps
    args.resume_docs, args.resume_val_docs, args.resume_epochs, args.resume_batch = (
        (None, 16, 2, args.det_batch) if cuda else (16, 4, 1, 8))
    args.parallel_preset, args.parallel_vocab = ("tiny-8m", 32_000) if cuda else ("tiny-1m", args.vocab)
    args.peak_tflops = None  # from the ceilings section (or the datasheet)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_environment_defaults(ENVIRONMENT_DEFAULTS)  # CUBLAS_WORKSPACE_CONFIG before any child starts CUDA
    if args.device == "cpu":
        os.environ.setdefault(BACKEND_ENV, "eager")  # capture every region as on the GPU, no kernels generated
    if args.device == "cpu":
        from transformers import LlamaForCausalLM  # noqa: F401 - imported once, before the sections fork
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / LOG
    run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{os.getpid()}"
    names = PARTS[args.part] if args.sections is None else tuple(args.sections.split(","))
    if "ceilings" not in names:  # MFU needs the device's peak
        names = ("ceilings", *names)
    deadline = time.monotonic() + args.deadline_s
    sections = []
    for name in names:
        ctx = Context(args=args, section=name, log=log, run_id=run_id)
        left = deadline - time.monotonic() - RESERVE_S
        limit = min(SECTIONS[name].timeout_s * (1 if args.device == "cuda" else 2), left)
        if limit < SECTIONS[name].minimum_s * (1 if args.device == "cuda" else 0.2):
            ctx.check(f"section {name}", False, f"skipped: {max(left, 0):.0f} s left of the global deadline", skipped=True)
            sections.append({"name": name, "status": "skipped", "seconds": 0.0, "cpu_s": 0.0})
            continue
        print(f"--- {name} (at most {limit:.0f} s)", flush=True)
        cpu_before = _children_cpu_s()
        status, seconds = _run_section(ctx, limit)
        sections.append({"name": name, "status": status, "seconds": seconds, "cpu_s": _children_cpu_s() - cpu_before})
        if name == "ceilings":
            args.peak_tflops = _logged_peak(log, run_id)
    lines = [row for row in map(json.loads, log.read_text().splitlines()) if row["run"] == run_id]
    merge = json.loads(Path(args.merge).read_text()) if args.merge else None
    results = assemble(lines, part=args.part, sections=sections, merge=merge)
    (out / RESULT).write_text(json.dumps(finite_or_none(results), indent=1, allow_nan=False) + "\n")
    print(summary(results), flush=True)
    failed = [check for check in results["checks"] if not check["passed"] and not check.get("skipped")]
    return 1 if failed else 0


def _logged_peak(log: Path, run_id: str) -> float:
    """The peak TFLOP/s the ceilings section logged (1.0 when it failed: MFU is then only relative)."""
    for row in map(json.loads, log.read_text().splitlines()):
        if row["run"] == run_id and row["kind"] == "ceilings":
            return row["peak_tflops"]
    return 1.0


if __name__ == "__main__":
    sys.exit(main())
