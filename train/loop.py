"""One training run: `run(config, out)` trains, evaluates and writes the run directory.

Layout of RUN (`megadocs.formats.RunDir`, docs/architecture.md): config.yaml, config_hash,
identity.json, provenance.json, checkpoint/, log.jsonl (training curve, with periodic validation
losses: `train.curves`), tensorboard/ (and wandb/ when configured: `train.tracking`), model/
(with a model card README.md: `train.model_card`), metrics.json (a `RunMetrics`, written last;
its presence means "done", and `run` then returns it untouched, after checking that RUN's
recorded identity is this config's on this data).

Recipe (paper.md "Training recipe"): AdamW with decoupled weight decay on the parameter kinds of
`optim.weight_decay_on` (default: the linear projections and the head, as levanter's default mask;
input embeddings and norm scales do not decay), global grad-norm clip, linear warmup over
`warmup_fraction` of the steps then cosine decay reaching 0 at the end, gradient accumulation
from `micro_batch_size` up to `batch_size` (``auto``: `train.plan`), bf16 autocast with fp32 master
weights and TF32 on CUDA (fp32 on CPU), fused AdamW on CUDA, torch.compile of the backbone on CUDA
when `compile: auto`; the head and the cross-entropy run chunked or fused (`train.loss`), and
document masking goes through packed position ids, not a dense mask (`train.attention`).

Resumption: every `checkpoint_every` steps, and when SIGTERM/SIGUSR2/SIGINT arrives, the full
state is saved atomically (`train.checkpoint`; copied to host memory at the step boundary and
written by a background thread, so training does not wait for the disk). The signal handler only
sets a flag; the step in flight finishes, the checkpoint is written and waited for, a previously
installed Python handler (submitit's requeue) is called, and `Preempted` is raised (the CLI exits
with status 3, or 130 for SIGINT/Ctrl-C; a second Ctrl-C interrupts at once and loses only the
steps since the last checkpoint on disk). Running again resumes; data
order is a pure function of the step (`train.data`), so the resumed run's metrics are
bit-identical to an uninterrupted one on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megadocs.config import dump_yaml
from megadocs.errors import UserError
from megadocs.formats import (
    IID,
    IID_SETS,
    RunDir,
    RunMetrics,
    RunStatus,
    WindowCounts,
    dumps_json,
    finite_or_none,
    replace_dir,
    write_atomic,
    write_json,
)
from megadocs.provenance import write as write_provenance
from train.benchmarks import check_tasks
from train.checkpoint import CheckpointWriter, load_checkpoint
from train.config import AUTO, DEFAULT_DECAY_GROUPS, DocumentMask, RunConfig
from train.curves import PeriodicValidation
from train.device import resolve_device, set_determinism
from train.evaluate import autocast_for, evaluate_model
from train.loss import next_token_loss, resolve_loss_implementation
from train.model_card import write_model_card
from train.prefetch import BatchPrefetcher
from train.tracking import Tracker

__all__ = [
    "Preempted",
    "check_run_identity",
    "write_run_identity",
    "LOG_EVERY",
    "lr_factor",
    "warmup_steps_for",
    "param_groups",
    "train_step",
    "PreemptionSignals",
    "run",
]

LOG_EVERY = 10  # steps between log lines and divergence checks (each is a device sync)
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on SIGTERM/SIGUSR2/SIGINT after saving a checkpoint; re-running resumes it."""

    def __init__(self, step: int, run_dir: Path, signum: int = signal.SIGTERM):
        what = "interrupted" if signum == signal.SIGINT else "preempted"
        super().__init__(f"{what} at step {step}; checkpoint saved in {run_dir}; re-run the same command to resume")
        self.step = step
        self.run_dir = run_dir
        self.signum = signum

    @property
    def interrupted(self) -> bool:
        """True for SIGINT (Ctrl-C): the CLI exits 130 instead of 3."""
        return self.signum == signal.SIGINT


# --- pure pieces ----------------------------------------------------------------------------


def lr_factor(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak LR for optimizer update `step` (0-based).

    Linear warmup ``(step+1)/warmup_steps`` for the first `warmup_steps` updates, then a cosine
    from 1 that would reach 0 at ``step == total_steps`` (just after the last update).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_steps_for(total_steps: int, warmup_fraction: float) -> int:
    """``round(warmup_fraction * total_steps)``, but at least one step when warmup is asked for:
    with the default 1%, a run shorter than 50 steps would otherwise start at the peak LR."""
    if warmup_fraction <= 0 or total_steps < 1:
        return 0
    return min(total_steps, max(1, round(warmup_fraction * total_steps)))


def decay_group_of(module: torch.nn.Module, name: str, head: torch.nn.Module | None) -> str:
    """The weight-decay kind (train.config.DECAY_GROUPS) of parameter ``name`` owned by ``module``."""
    if module is head:
        return "head"
    if isinstance(module, torch.nn.Embedding):
        return "embeddings"
    if "norm" in type(module).__name__.lower():
        return "norms"
    if isinstance(module, torch.nn.Linear) and name == "weight":
        return "linear"
    raise UserError(f"optim.weight_decay_on: cannot tell the kind of parameter {name!r} of a "
                    f"{type(module).__name__} (expected Linear, Embedding, a norm or the head)")


def param_groups(model: torch.nn.Module, weight_decay: float,
                 decay_on: tuple[str, ...] | list[str] = DEFAULT_DECAY_GROUPS) -> list[dict[str, Any]]:
    """AdamW groups: ``weight_decay`` on the kinds in ``decay_on``, 0 on the rest.

    Each group also carries ``names`` (the parameters' qualified names), so what decays can be
    checked and logged.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decayed: dict[str, torch.nn.Parameter] = {}
    kept: dict[str, torch.nn.Parameter] = {}
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            qualified = f"{module_name}.{name}" if module_name else name
            if qualified in decayed or qualified in kept:
                continue
            target = decayed if decay_group_of(module, name, head) in decay_on else kept
            target[qualified] = parameter
    return [{"params": list(decayed.values()), "names": list(decayed), "weight_decay": weight_decay},
            {"params": list(kept.values()), "names": list(kept), "weight_decay": 0.0}]


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor,
    *,
    micro_batch_size: int,
    grad_clip: float,
    document_mask: DocumentMask | bool,
    parameters: list[torch.nn.Parameter],
    eos_id: int | None = None,
    loss_implementation: str = "chunked",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer update on a batch [B, C], accumulated over micro-batches.

    Returns the batch's mean token loss and the pre-clip gradient norm, as device tensors (no
    sync). Each micro-batch's mean loss is weighted by its share of the batch's rows, so the
    gradient is that of the whole batch's mean even when the last (short) batch splits unevenly.
    The head and the loss never hold a micro-batch's whole logits (`train.loss`).
    """
    device = input_ids.device
    rows = input_ids.shape[0]
    total_loss = torch.zeros((), device=device)
    for start in range(0, rows, micro_batch_size):
        ids = input_ids[start : start + micro_batch_size]  # [b, C]
        docs = document_ids[start : start + micro_batch_size]
        with autocast_for(device):
            loss = next_token_loss(model, ids, docs, document_mask=document_mask, eos_id=eos_id,
                                   implementation=loss_implementation) * (ids.shape[0] / rows)
        loss.backward()
        total_loss += loss.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss, grad_norm


class PreemptionSignals:
    """While active, SIGTERM/SIGUSR2/SIGINT only set `requested`; the loop acts at a step boundary.

    `stop_if_requested()` hands the signal to the handler that was installed before (e.g.
    submitit's SIGUSR2 requeue) once the checkpoint is safe, then raises `Preempted`. A first
    SIGINT restores Python's own handler, so a second Ctrl-C interrupts at once. Outside the main
    thread signals cannot be caught, so nothing is installed there.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.requested = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT, signal.default_int_handler))

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPTION_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def stop_if_requested(self, step: int, run_dir: Path) -> None:
        """After the checkpoint of `step` is saved: hand the signal on, then raise Preempted."""
        if self.requested is None:
            return
        previous = self._previous.get(self.requested)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.requested, None)
        raise Preempted(step, run_dir, self.requested)


# --- the run --------------------------------------------------------------------------------


def check_run_identity(out: Path, identity: str) -> None:
    """Refuse a RUN that holds another run: another config, or the same config on other data.

    A finished RUN is checked too: returning its metrics for another identity would report the
    old run's losses as the new one's.
    """
    run_dir = RunDir(out)
    if not run_dir.config_hash.is_file():
        if run_dir.is_done():
            raise UserError(f"{out}: holds {RunDir.METRICS} but no {RunDir.CONFIG_HASH}, so whose run it is "
                            "cannot be checked; use another --out")
        return
    recorded = run_dir.config_hash.read_text().strip()
    if recorded == identity:
        return
    if not run_dir.identity.is_file():
        raise UserError(
            f"{out}: made before run identities covered the data (recorded {recorded}, this config on "
            f"today's data is {identity}); if its config, store and pool are unchanged adopt it with "
            f"`megadocs train --reidentify {out}`, else use another --out"
        )
    raise UserError(
        f"{out}: holds a run of identity {recorded}, not {identity} (another config, or the same config "
        "on other data); use another --out (the default is runs/train/<identity>)"
    )


def write_run_identity(config: RunConfig, out: Path, identity: str) -> None:
    """Record the identity and what it covers (the data's manifest identities) in RUN."""
    run_dir = RunDir(out)
    write_json(run_dir.identity, {"identity": identity, "data": config.data_identity()}, indent=1, sort_keys=True)
    write_atomic(run_dir.config_hash, identity + "\n")


def _prepare_run_dir(config: RunConfig, run_dir: RunDir, identity: str) -> None:
    """Create RUN, refuse one that holds another run, save the resolved config and identity."""
    run_dir.path.mkdir(parents=True, exist_ok=True)
    check_run_identity(run_dir.path, identity)
    write_atomic(run_dir.config, dump_yaml(config))
    write_run_identity(config, run_dir.path, identity)


def _open_store(path: str, field: str):
    """TokenStore.open, with the config field named in its one-line error."""
    from train.store import TokenStore

    try:
        return TokenStore.open(path)
    except UserError as exc:
        raise UserError(f"{field}: {exc}") from None


def _check_extra_store(store, name: str, path: str) -> None:
    """An extra held-out store must share the training store's tokenizer (same token ids)."""
    extra_store = _open_store(path, f"eval.extra.{name}.store")
    if extra_store.tokenizer_hash != store.tokenizer_hash:
        raise UserError(
            f"eval.extra.{name}.store: {path} has tokenizer_hash {extra_store.tokenizer_hash}, but "
            f"data.store has {store.tokenizer_hash}; prepare it with --tokenizer {store.tokenizer_path}"
        )


def _check_benchmarks(config: RunConfig) -> None:
    """Unknown benchmark tasks fail before training, not after it."""
    check_tasks(config.eval.benchmarks, field="eval.benchmarks")


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (written before a hard kill)."""
    if not log_path.is_file():
        return
    kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    write_atomic(log_path, "".join(line + "\n" for line in kept))


def _load_training_streams(config: RunConfig):
    from train.data import TrainingStreams

    data = config.data
    return TrainingStreams.build(
        data.store,
        synthetic=data.synthetic,
        context=data.context,
        mixing_fraction=data.mixing_fraction,
        real_epochs=data.real_epochs,
        batch_size=config.optim.batch_size,
        seed=data.seed,
    )


def _compile_wanted(config: RunConfig, device: torch.device) -> bool:
    return config.compile == "on" or (config.compile == "auto" and device.type == "cuda")


@dataclass
class _Training:
    """Everything a step changes, with the run's fixed context; `save` checkpoints it."""

    out: Path
    identity: str
    model: torch.nn.Module
    forward: torch.nn.Module  # the model, compiled where wanted
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int
    step: int
    counters: dict[str, Any]
    attempt_start: float
    writer: CheckpointWriter

    def save(self) -> None:
        """Snapshot the state to host memory now; the writer thread puts it on disk."""
        elapsed = time.perf_counter() - self.attempt_start
        counters = {**self.counters, "wall_time_s": self.counters["wall_time_s"] + elapsed}
        self.writer.save(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                         step=self.step, counters=counters, identity=self.identity)  # fmt: skip

    def stop_if_requested(self, signals: PreemptionSignals) -> None:
        """On a pending signal: wait until the last checkpoint is on disk, then stop (Preempted)."""
        if signals.requested is not None:
            self.writer.wait()
            signals.stop_if_requested(self.step, self.out)


def _build(config: RunConfig, store, total_steps: int, device: torch.device, out: Path, identity: str,
           attempt_start: float, writer: CheckpointWriter) -> _Training:  # fmt: skip
    """Model, AdamW and schedule, restored from RUN/checkpoint when there is one."""
    from train.model import build_model

    set_determinism(device)
    torch.manual_seed(config.seed)
    model = build_model(config.model.preset, vocab_size=store.vocab_size, context=config.data.context,
                        seed=config.seed, eos_id=store.eos_id, device=device)  # fmt: skip
    optim = config.optim
    optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay, optim.weight_decay_on), lr=optim.lr,
                                  betas=(optim.beta1, optim.beta2), fused=device.type == "cuda")  # fmt: skip
    warmup_steps = warmup_steps_for(total_steps, optim.warmup_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps=total_steps, warmup_steps=warmup_steps)
    )
    resumed = load_checkpoint(out, model=model, optimizer=optimizer, scheduler=scheduler, identity=identity)
    if device.type == "cuda" and config.data.document_mask is not DocumentMask.OFF:
        from train.attention import masked_attention_backend

        model.set_attn_implementation(masked_attention_backend(device))  # packed sequences, no dense mask
    if _compile_wanted(config, device):
        model.model.compile()  # the backbone, in place: the state dict keeps its keys; the loss stays eager
    forward = model
    return _Training(
        out=out, identity=identity, model=model, forward=forward, optimizer=optimizer, scheduler=scheduler,
        total_steps=total_steps, step=resumed["step"] if resumed else 0,
        counters=resumed["counters"] if resumed else {"tokens_seen": 0, "train_time_s": 0.0, "wall_time_s": 0.0},
        attempt_start=attempt_start, writer=writer,
    )  # fmt: skip


def run(config: RunConfig, out: str | Path) -> RunMetrics:
    """Train, evaluate and write RUN (see the module docstring); returns the metrics.

    Raises:
        Preempted: SIGTERM/SIGUSR2/SIGINT arrived; a checkpoint was saved.
        UserError: bad paths, a store/config mismatch, or RUN holding another config.
    """
    out = Path(out)
    run_dir = RunDir(out)
    identity = config.identity()  # reads the data's manifests: a missing store fails here
    if run_dir.is_done():
        check_run_identity(out, identity)
        return RunMetrics.load(run_dir.metrics)
    attempt_start = time.perf_counter()
    device = resolve_device(config.device)

    # --- data first, so a bad path fails before anything is written -------------------------
    store = _open_store(config.data.store, "data.store")
    for name, extra in config.eval.extra.items():  # fail before training, not after
        _check_extra_store(store, name, extra.store)
    _check_benchmarks(config)
    streams = _load_training_streams(config)
    _prepare_run_dir(config, run_dir, identity)
    provenance = write_provenance(run_dir.path, str(device))

    # leaving the block waits for the checkpoint being written (also on an exception)
    with PreemptionSignals() as signals, CheckpointWriter(out) as writer, contextlib.ExitStack() as cleanup:
        # --- model, optimizer, schedule (resumed from the checkpoint if any) ------------------
        training = _build(config, store, streams.plan.total_steps, device, out, identity, attempt_start, writer)
        config = _resolve_micro_batch(config, training.model, store.vocab_size, device, streams.eos_id)
        params = sum(p.numel() for p in training.model.parameters())
        _truncate_log(run_dir.log, training.step)
        curve = PeriodicValidation.build(config, total_steps=training.total_steps, device=device,
                                         align=LOG_EVERY, eos_id=store.eos_id)
        tracker = Tracker.open(config, run_dir.path, identity=identity, start_step=training.step)
        cleanup.callback(tracker.close)  # flushes the curves also when preempted

        # --- train -------------------------------------------------------------------------
        status = _train(training, streams, config, device, signals, curve=curve, tracker=tracker)

        # --- evaluate (the final checkpoint is saved: a signal here stops without losing it) --
        def stop_if_requested() -> None:
            training.stop_if_requested(signals)

        if status is RunStatus.COMPLETED:
            _save_model(training.model, store, run_dir.model)
            val_losses, val_windows = _evaluate_all(training.model, config, store, device,
                                                    after_each=stop_if_requested)
        else:  # diverged: no losses to report (null in metrics.json)
            val_losses = {name: None for name in (*IID_SETS, *config.eval.extra)}
            val_windows = {}
        tracker.log_validation(training.step, val_losses)
        counters = training.counters
        real_seen, synthetic_seen = streams.plan.windows_before(training.step)
        metrics = RunMetrics(
            status=status,
            val_loss=val_losses[IID],
            val_losses=val_losses,
            val_windows=val_windows,
            val_windows_requested=config.eval.val_windows,
            steps=training.step,
            windows=WindowCounts(real_per_epoch=streams.plan.real_windows, real_seen=real_seen,
                                 synthetic_seen=synthetic_seen),
            mixing_fraction_realised=synthetic_seen / max(1, real_seen + synthetic_seen),
            tokens_seen=counters["tokens_seen"],
            wall_time_s=counters["wall_time_s"] + time.perf_counter() - attempt_start,
            tokens_per_s=counters["tokens_seen"] / counters["train_time_s"] if counters["train_time_s"] else 0.0,
            config_hash=identity,
            params=params,
        )
        if status is RunStatus.COMPLETED and config.eval.benchmarks:
            from train.downstream import evaluate_benchmarks

            data_dir = config.eval.benchmark_data
            metrics.benchmarks = evaluate_benchmarks(
                model_dirs=[run_dir.model],
                tasks=list(config.eval.benchmarks),
                data_dir=Path(data_dir) if data_dir else None,
                limit=config.eval.benchmark_limit,
                device=device.type,
                batch_size=config.optim.micro_batch_size,
            )
            stop_if_requested()
        if status is RunStatus.COMPLETED:
            write_model_card(run_dir.model, config, metrics.to_json(), provenance)
        tracker.close(metrics.to_json())

    # --- outputs: metrics.json last, atomically; then the checkpoint is no longer needed ------
    metrics.save(run_dir.metrics)
    shutil.rmtree(run_dir.checkpoint, ignore_errors=True)  # the model lives in RUN/model
    return metrics


def _resolve_micro_batch(config: RunConfig, model, vocab_size: int, device: torch.device, eos_id: int) -> RunConfig:
    """`optim.micro_batch_size: auto` -> a number (`train.plan.auto_micro_batch`); execution only,
    so the run's identity and saved config keep ``auto``."""
    if config.optim.micro_batch_size != AUTO:
        return config
    from train.plan import auto_micro_batch

    context, implementation = config.data.context, resolve_loss_implementation(config.loss, device)

    def probe(micro: int) -> None:  # CUDA only: one forward and backward of `micro` sequences
        ids = torch.randint(0, vocab_size, (micro, context), device=device)
        with autocast_for(device):
            loss = next_token_loss(model, ids, torch.zeros_like(ids), document_mask=config.data.document_mask,
                                   eos_id=eos_id, implementation=implementation)  # fmt: skip
        loss.backward()

    micro = auto_micro_batch(model, preset_name=config.model.preset, vocab_size=vocab_size, context=context,
                             batch_size=config.optim.batch_size, device=device, step_probe=probe)  # fmt: skip
    print(f"optim.micro_batch_size: auto -> {micro}", file=sys.stderr)
    return config.model_copy(update={"optim": config.optim.model_copy(update={"micro_batch_size": micro})})


def _train(training: _Training, streams, config: RunConfig, device: torch.device, signals, *,
           curve: PeriodicValidation, tracker: Tracker) -> RunStatus:  # fmt: skip
    """The step loop from `training.step` to the end; returns COMPLETED or DIVERGED."""
    from tqdm import tqdm

    optim, counters, total_steps = config.optim, training.counters, training.total_steps
    parameters = list(training.model.parameters())
    loss_implementation = resolve_loss_implementation(config.loss, device)
    training.forward.train()
    progress = tqdm(total=total_steps, initial=training.step, desc="train", unit="step", file=sys.stderr,
                    dynamic_ncols=True, mininterval=1.0)  # fmt: skip
    clock = time.perf_counter()  # train_time_s counts steps and data, not checkpoint writes

    def count_time() -> None:
        nonlocal clock
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        counters["train_time_s"] += now - clock
        clock = now

    # batches are built on a background thread, `depth` steps ahead; the data of a step is still a
    # pure function of the step, so resuming needs no replay
    prefetcher = BatchPrefetcher(streams.batch, range(training.step, total_steps), pin_memory=device.type == "cuda")
    with progress, open(RunDir(training.out).log, "a") as log, prefetcher:
        while training.step < total_steps:
            # --- data: built ahead by the prefetcher; pinned on CUDA, so the copy is async ---
            batch = prefetcher.get(training.step)
            input_ids = batch["input_ids"].to(device, non_blocking=True)  # [B, C]
            document_ids = batch["document_ids"].to(device, non_blocking=True)  # [B, C]

            # --- forward/backward over micro-batches, clip, update -----------------------------
            loss, grad_norm = train_step(
                training.forward, training.optimizer, training.scheduler, input_ids, document_ids,
                micro_batch_size=optim.micro_batch_size, grad_clip=optim.grad_clip,
                document_mask=config.data.document_mask, parameters=parameters, eos_id=streams.eos_id,
                loss_implementation=loss_implementation,
            )  # fmt: skip
            training.step += 1
            step = training.step
            counters["tokens_seen"] += input_ids.numel()

            # --- log, periodic validation and divergence check (a device sync point) ---------
            evaluate_now = curve.due(step)
            if step % LOG_EVERY == 0 or step == total_steps or evaluate_now:
                loss_value = loss.item()
                count_time()
                line = {
                    "step": step,
                    "loss": loss_value,
                    "grad_norm": grad_norm.item(),
                    "lr": training.scheduler.get_last_lr()[0],
                    "tokens_seen": counters["tokens_seen"],
                    "tokens_per_s": counters["tokens_seen"] / max(counters["train_time_s"], 1e-9),
                    "cpu_s": time.process_time(),  # this process's CPU seconds: wall >> cpu = contention
                }
                if evaluate_now and math.isfinite(loss_value):  # not counted in train_time_s
                    line["val_losses"], line["eval_s"] = curve.evaluate(training.model)
                    counters["eval_time_s"] = counters.get("eval_time_s", 0.0) + line["eval_s"]
                    clock = time.perf_counter()
                if not math.isfinite(loss_value):
                    line["diverged"] = True  # loss (and grad_norm) become null: standard JSON
                log.write(dumps_json(finite_or_none(line), indent=None) + "\n")
                log.flush()
                tracker.log_train(step, line)
                if "val_losses" in line:
                    tracker.log_validation(step, line["val_losses"])
                progress.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{line['tokens_per_s']:.0f}")
                if not math.isfinite(loss_value):
                    progress.write(f"loss {loss_value} at step {step}: diverged, stopping", file=sys.stderr)
                    return RunStatus.DIVERGED
            elif step < LOG_EVERY:  # the first steps show their loss too (a sync, but only a few)
                progress.set_postfix(loss=f"{loss.item():.4f}")
            progress.update(1)

            # --- checkpoint: periodic, at the end, and on preemption -------------------------
            if step % config.checkpoint_every == 0 or step == total_steps or signals.requested is not None:
                count_time()
                log.flush()
                training.save()  # a copy to host memory; the disk write overlaps the next steps
                clock = time.perf_counter()
                training.stop_if_requested(signals)
    return RunStatus.COMPLETED


def _save_model(model: torch.nn.Module, store, model_dir: Path) -> None:
    """save_pretrained + the store's tokenizer, replacing any partial earlier attempt."""
    tmp = model_dir.with_name(f".{model_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    store.tokenizer().save_pretrained(tmp)
    replace_dir(tmp, model_dir)


def _evaluate_all(model, config: RunConfig, store, device: torch.device, *,
                  after_each) -> tuple[dict[str, float | None], dict[str, int]]:
    """iid (with short/long halves) and every eval.extra set, on fixed real-text windows.

    Returns the losses and the number of windows each set scored (fewer than
    ``eval.val_windows`` when a split holds fewer; ValidationSet.build warns then).
    """
    from train.data import ValidationSet

    settings = dict(batch_size=config.optim.micro_batch_size, device=device, document_mask=config.data.document_mask,
                    eos_id=store.eos_id)
    validation = ValidationSet.build(
        config.data.store, split="val", context=config.data.context, max_windows=config.eval.val_windows
    )
    losses = evaluate_model(model, validation, name=IID, **settings)
    windows = {IID: validation.num_windows}
    after_each()
    for name, extra in config.eval.extra.items():
        _check_extra_store(store, name, extra.store)
        extra_set = ValidationSet.build(
            extra.store, split=extra.split, context=config.data.context, max_windows=config.eval.val_windows,
            field=f"eval.extra.{name} (eval.val_windows)",
        )
        losses.update(evaluate_model(model, extra_set, name=name, halves=False, **settings))
        windows[name] = extra_set.num_windows
        after_each()
    return losses, windows
