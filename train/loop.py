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
weights and TF32 on CUDA (fp32 on CPU), fused AdamW on CUDA, torch.compile of each decoder layer
and of the loss chunk on CUDA when `compile: auto` (`train.compile`); the head and the
cross-entropy run chunked or fused (`train.loss`), and document masking goes through packed
position ids, not a dense mask (`train.attention`). Deterministic kernels on CUDA unless
`deterministic: false` (`train.device`).

Resumption: every `checkpoint_every` steps, and when SIGTERM/SIGUSR2/SIGINT arrives, the full
state is saved atomically (`train.checkpoint`; copied to host memory at the step boundary and
written by a background thread, so training does not wait for the disk). The signal handler only
sets a flag; the step in flight finishes, the checkpoint is written and waited for, a previously
installed Python handler (submitit's requeue) is called, and `Preempted` is raised (the CLI exits
with status 3, or 130 for SIGINT/Ctrl-C; a second Ctrl-C interrupts at once and loses only the
steps since the last checkpoint on disk). Running again resumes; data
order is a pure function of the step (`train.data`), so the resumed run's metrics are
bit-identical to an uninterrupted one on the same machine (measured on CPU; on CUDA intended with
`deterministic: true`, unmeasured: `train.device`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
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
from train.checkpoint import CheckpointWriter, read_checkpoint, restore_progress
from train.compile import compile_layers, compile_wanted, decoder_layers
from train.config import (
    AUTO,
    DEFAULT_DECAY_GROUPS,
    TRAINING_REVISION,
    DocumentMask,
    RunConfig,
    describe_revision,
)
from train.curves import PeriodicValidation
from train.device import resolve_device, set_determinism
from train.distributed import SINGLE, DistributedContext, init_distributed
from train.evaluate import autocast_for, evaluate_model
from train.loss import next_token_loss, next_token_losses, resolve_loss_implementation
from train.model_card import write_model_card
from train.prefetch import BatchPrefetcher
from train.tracking import Tracker

__all__ = [
    "Preempted",
    "check_run_identity",
    "earlier_synthetic_identity",
    "recorded_revision",
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
REVISION_KEY = "training_revision"  # in RUN/identity.json (absent: revision 1)


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
    replicas: torch.nn.Module | None = None,
    row_weight: float | None = None,
    micro_batches: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer update on a batch [B, C], accumulated over micro-batches.

    Data parallel (`replicas`: DDP, or the FSDP root, over a `MicroBatchLoss` of `model`): [B, C]
    is this rank's rows of the global batch, and `row_weight` and `micro_batches` come from
    `DistributedContext.step_share`. DDP averages gradients over ranks once, on the last
    micro-batch (`no_sync` before it); FSDP reduce-scatters after every micro-batch into the
    sharded gradients (`train.sharding`). `row_weight` (default ``1 / B``) weighs each row's mean
    loss: ``ranks / global rows`` makes the average over ranks the global batch's mean even when
    ranks hold unequal rows (0 for a rank that holds a placeholder row because the batch is
    shorter than the world). `micro_batches` (default: as many as B needs) is the count every rank
    runs, so that FSDP's collectives match: the micro-batches past B are placeholders, this rank's
    first row again with weight 0, whose gradient is exactly zero.

    Returns the batch's mean token loss and the pre-clip gradient norm, as device tensors (no
    sync). Each micro-batch's mean loss is weighted by its share of the batch's rows, so the
    gradient is that of the whole batch's mean even when the last (short) batch splits unevenly.
    The head and the loss never hold a micro-batch's whole logits (`train.loss`).
    """
    device = input_ids.device
    rows = input_ids.shape[0]
    row_weight = 1.0 / rows if row_weight is None else row_weight
    needed = -(-rows // micro_batch_size)
    micro_batches = needed if micro_batches is None else micro_batches
    if micro_batches < needed:
        raise ValueError(f"micro_batches={micro_batches}: {rows} rows at micro_batch_size={micro_batch_size} "
                         f"need {needed}")  # fmt: skip
    total_loss = torch.zeros((), device=device)
    for index in range(micro_batches):
        start = index * micro_batch_size
        placeholder = start >= rows  # lockstep with a rank that has more micro-batches: no weight
        window = slice(0, 1) if placeholder else slice(start, start + micro_batch_size)
        ids, docs = input_ids[window], document_ids[window]  # [b, C]
        weight = 0.0 if placeholder else ids.shape[0] * row_weight
        last = index == micro_batches - 1
        accumulate_locally = isinstance(replicas, torch.nn.parallel.DistributedDataParallel) and not last
        sync = replicas.no_sync() if accumulate_locally else contextlib.nullcontext()
        with sync:
            with autocast_for(device):
                if replicas is None:
                    micro_loss = next_token_loss(model, ids, docs, document_mask=document_mask, eos_id=eos_id,
                                                 implementation=loss_implementation)  # fmt: skip
                else:
                    micro_loss = replicas(ids, docs)
                loss = micro_loss * weight
            loss.backward()
        total_loss += loss.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)  # the global norm, also over shards
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a Replicate DTensor, the same value on every rank
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss, grad_norm


class MicroBatchLoss(torch.nn.Module):
    """A micro-batch's mean token loss as a module, for DDP and FSDP: the chunked head reads the
    head weight directly (`train.loss`), not through ``model.forward``, so the wrapper (and, for
    FSDP, the root unit that gathers the embedding, final norm and head) covers the whole loss.
    ``per_token=True`` gives evaluation's per-token losses [b, C-1] through the same root."""

    def __init__(self, model: torch.nn.Module, *, implementation: str, **loss_settings: Any) -> None:
        super().__init__()
        self.model = model
        self.implementation = implementation
        self.loss_settings = loss_settings

    def forward(self, input_ids: torch.Tensor, document_ids: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        if per_token:
            return next_token_losses(self.model, input_ids, document_ids, **self.loss_settings)
        return next_token_loss(self.model, input_ids, document_ids, implementation=self.implementation,
                               **self.loss_settings)  # fmt: skip


PEER_STOP = 0  # `PreemptionSignals.requested` when another rank saw the signal


class PreemptionSignals:
    """While active, SIGTERM/SIGUSR2/SIGINT only set `requested`; the loop acts at a step boundary.

    `stop_if_requested()` hands the signal to the handler that was installed before (e.g.
    submitit's SIGUSR2 requeue) once the checkpoint is safe, then raises `Preempted`. A first
    SIGINT restores Python's own handler, so a second Ctrl-C interrupts at once. A process started
    with SIGINT ignored (a shell's background job, a sweep's local job: the terminal's Ctrl-C is
    the controller's to handle, which then stops its jobs with SIGTERM) keeps ignoring it. Outside
    the main thread signals cannot be caught, so nothing is installed there.
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
                if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def agree(self, dist: DistributedContext) -> bool:
        """Whether any rank saw a signal; then every rank stops at this step boundary."""
        stop = dist.any(self.requested is not None)
        if stop and self.requested is None:
            self.requested = PEER_STOP
        return stop

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
    """Refuse a RUN that holds another run: another config, the same config on other data, or
    one trained by another `TRAINING_REVISION` of this code.

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
    revision = recorded_revision(out)
    if revision != TRAINING_REVISION:
        raise UserError(
            f"{out}: holds a run of identity {recorded} trained by {describe_revision(revision)}; this code "
            f"trains {describe_revision(TRAINING_REVISION)}, identity {identity}; its results are not this "
            "code's: use another --out (the default is runs/train/<identity>)"
        )
    earlier = earlier_synthetic_identity(out)
    if earlier is not None:
        raise UserError(f"{out}: holds a run of identity {recorded}, recorded before a synthetic run's identity "
                        f"hashed its pool and the megadoc rule (today: {identity}); {earlier[1]}")
    raise UserError(
        f"{out}: holds a run of identity {recorded}, not {identity} (another config, or the same config "
        "on other data); use another --out (the default is runs/train/<identity>)"
    )


def earlier_synthetic_identity(out: Path) -> tuple[bool, str] | None:
    """(adoptable, what to do) for a RUN whose identity.json covers its synthetic stream the earlier
    way (the assembled file's manifest, the generator's path), or None when it does not. A latent
    run read its documents tokenized in pieces, other tokens than today's: not adoptable, it is
    trained again. Any other read today's tokens: adoptable when its pool is unchanged."""
    run_dir = RunDir(out)
    if not run_dir.identity.is_file():
        return None
    synthetic = json.loads(run_dir.identity.read_text()).get("data", {}).get("synthetic") or {}
    if "assembled" not in synthetic:
        return None
    if synthetic.get("tokenization") == "pieces/1":
        return False, "its latent documents were tokenized in pieces, not whole as today: train it again (another --out)"
    return True, f"if its pool is unchanged, adopt it with `megadocs train --reidentify {out}`, else use another --out"


def recorded_revision(out: Path) -> int:
    """The `TRAINING_REVISION` that trained RUN, as its identity.json records it; 1 for a RUN made
    before revisions were recorded (with or without identity.json)."""
    run_dir = RunDir(out)
    if not run_dir.identity.is_file():
        return 1
    return int(json.loads(run_dir.identity.read_text()).get(REVISION_KEY, 1))


def write_run_identity(config: RunConfig, out: Path, identity: str) -> None:
    """Record the identity and what it covers (the data's manifest identities, the training
    revision) in RUN."""
    run_dir = RunDir(out)
    write_json(run_dir.identity, {"identity": identity, "data": config.data_identity(),
                                  REVISION_KEY: TRAINING_REVISION}, indent=1, sort_keys=True)  # fmt: skip
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
        synthetic_epochs=data.synthetic_epochs,
        batch_size=config.optim.batch_size,
        seed=data.seed,
    )


@dataclass
class _Training:
    """Everything a step changes, with the run's fixed context; `save` checkpoints it."""

    out: Path
    identity: str
    model: torch.nn.Module
    forward: torch.nn.Module  # the model (its layers compiled in place where wanted)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int
    step: int
    counters: dict[str, Any]
    attempt_start: float
    dist: DistributedContext = SINGLE
    replicas: torch.nn.Module | None = None  # data parallel: DDP over the loss, or the FSDP root
    writer: CheckpointWriter | None = None
    parallelism: str = "single"  # train.sharding.choose_parallelism
    loss_implementation: str = "chunked"  # train.loss.LOSS_KERNELS

    @property
    def fsdp_root(self) -> torch.nn.Module | None:
        """The FSDP root (a sharded `MicroBatchLoss`): forwards are collective, every rank runs them."""
        return self.replicas if self.parallelism == "fsdp" else None

    def save(self) -> None:
        """Snapshot the state to host memory now; the writer thread puts it on disk. Rank 0 alone
        writes (no per-rank state: the checkpoint resumes on any number of processes); under FSDP
        every rank first takes part in gathering the full state to rank 0."""
        full_states = None
        if self.parallelism == "fsdp":
            from train.sharding import full_state_dicts

            full_states = full_state_dicts(self.model, self.optimizer)  # collective
        if not self.dist.is_main:
            return
        elapsed = time.perf_counter() - self.attempt_start
        counters = {**self.counters, "wall_time_s": self.counters["wall_time_s"] + elapsed}
        self.writer.save(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                         step=self.step, counters=counters, identity=self.identity,
                         full_states=full_states)  # fmt: skip

    def stop_if_requested(self, signals: PreemptionSignals) -> None:
        """On a pending signal: wait until the last checkpoint is on disk, then stop (Preempted).
        Data parallel, call it only where every rank agreed to stop (`PreemptionSignals.agree`):
        the ranks wait for rank 0's checkpoint together."""
        if signals.requested is not None:
            self.writer.wait()
            self.dist.barrier()  # rank 0's checkpoint is on disk before any rank exits
            signals.stop_if_requested(self.step, self.out)


def _build(config: RunConfig, store, total_steps: int, device: torch.device, out: Path, identity: str,
           attempt_start: float, writer: CheckpointWriter, dist: DistributedContext = SINGLE) -> _Training:  # fmt: skip
    """Model, AdamW and schedule, restored from RUN/checkpoint when there is one; wrapped for
    data parallelism (DDP, or FSDP: `train.sharding`) when several processes run."""
    from train.model import build_model
    from train.sharding import choose_parallelism

    set_determinism(device, strict=config.deterministic)
    torch.manual_seed(config.seed)
    model = build_model(config.model.preset, vocab_size=store.vocab_size, context=config.data.context,
                        seed=config.seed, eos_id=store.eos_id, device=device)  # fmt: skip
    # the device's total memory (not its free memory, which varies by rank); rank 0's choice holds
    total_memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    parallelism = dist.broadcast_object(choose_parallelism(
        config.parallelism, world_size=dist.world_size, parameters=sum(p.numel() for p in model.parameters()),
        device_memory_bytes=total_memory))  # fmt: skip
    checkpoint = read_checkpoint(out, identity=identity)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])  # before sharding: every rank holds the full model here
    if device.type == "cuda" and config.data.document_mask is not DocumentMask.OFF:
        from train.attention import masked_attention_backend, set_attention

        set_attention(model, masked_attention_backend(device))  # packed sequences, no dense mask
    compiled = compile_wanted(config.compile, device)
    loss_implementation = resolve_loss_implementation(config.loss, device, compiled=compiled)
    replicas = None
    if parallelism != "single":
        replicas = MicroBatchLoss(model, document_mask=config.data.document_mask, eos_id=store.eos_id,
                                  implementation=loss_implementation)  # fmt: skip
    if parallelism == "fsdp":  # shard first: the optimizer holds the sharded parameters
        from train.sharding import shard_model

        shard_model(replicas, decoder_layers(model), device=device, mixed_precision=device.type == "cuda",
                    compile_layers=compiled)  # fmt: skip
    optim = config.optim
    optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay, optim.weight_decay_on), lr=optim.lr,
                                  betas=(optim.beta1, optim.beta2), fused=device.type == "cuda")  # fmt: skip
    warmup_steps = warmup_steps_for(total_steps, optim.warmup_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps=total_steps, warmup_steps=warmup_steps)
    )
    resumed = None
    if checkpoint is not None:
        if parallelism == "fsdp":
            from train.sharding import load_full_optimizer_state

            load_full_optimizer_state(model, optimizer, checkpoint["optimizer"])  # each rank keeps its shard
        else:
            optimizer.load_state_dict(checkpoint["optimizer"])
        resumed = restore_progress(checkpoint, scheduler=scheduler)
        del checkpoint
    if parallelism != "fsdp" and compiled:
        compile_layers(decoder_layers(model))  # in place: the state dict keeps its keys (train.compile)
    if parallelism == "ddp":
        replicas = torch.nn.parallel.DistributedDataParallel(
            replicas, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )  # fmt: skip
    if dist.is_main and parallelism != "single":
        print(f"parallelism: {config.parallelism} -> {parallelism} on {dist.world_size} processes", file=sys.stderr)
    return _Training(
        out=out, identity=identity, model=model, forward=model, optimizer=optimizer, scheduler=scheduler,
        total_steps=total_steps, step=resumed["step"] if resumed else 0,
        counters=resumed["counters"] if resumed else {"tokens_seen": 0, "train_time_s": 0.0, "wall_time_s": 0.0},
        attempt_start=attempt_start, writer=writer, dist=dist, replicas=replicas, parallelism=parallelism,
        loss_implementation=loss_implementation,
    )  # fmt: skip


def run(config: RunConfig, out: str | Path) -> RunMetrics:
    """Train, evaluate and write RUN (see the module docstring); returns the metrics.

    Run by several processes (torchrun, or SLURM tasks: `train.distributed`), it trains data
    parallel: every rank returns the same metrics, rank 0 alone writes RUN.

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
    dist = init_distributed(device.type)
    try:
        return _run(config, out, identity, device, dist, attempt_start)
    finally:
        if dist.distributed:
            import torch.distributed

            torch.distributed.destroy_process_group()


def _run(config: RunConfig, out: Path, identity: str, device: torch.device, dist: DistributedContext,
         attempt_start: float) -> RunMetrics:  # fmt: skip
    run_dir = RunDir(out)

    # --- data first, so a bad path fails before anything is written -------------------------
    store = _open_store(config.data.store, "data.store")
    for name, extra in config.eval.extra.items():  # fail before training, not after
        _check_extra_store(store, name, extra.store)
    _check_benchmarks(config)
    streams = _load_training_streams(config)
    if dist.is_main:
        _prepare_run_dir(config, run_dir, identity)
    else:
        check_run_identity(out, identity)
    provenance = write_provenance(run_dir.path, str(device)) if dist.is_main else None

    # leaving the block waits for the checkpoint being written (also on an exception)
    with PreemptionSignals() as signals, CheckpointWriter(out) as writer, contextlib.ExitStack() as cleanup:
        # --- model, optimizer, schedule (resumed from the checkpoint if any) ------------------
        training = _build(config, store, streams.plan.total_steps, device, out, identity, attempt_start, writer,
                          dist)  # fmt: skip
        config = _resolve_micro_batch(config, training, store.vocab_size, device, streams.eos_id)
        params = sum(p.numel() for p in training.model.parameters())
        if dist.is_main:
            _truncate_log(run_dir.log, training.step)
        curve = PeriodicValidation.build(config, total_steps=training.total_steps, device=device,
                                         align=LOG_EVERY, eos_id=store.eos_id)
        # rank 0 alone writes RUN: the other ranks track nothing (a Tracker of no trackers)
        tracker = (Tracker.open(config, run_dir.path, identity=identity, start_step=training.step)
                   if dist.is_main else Tracker())  # fmt: skip
        cleanup.callback(tracker.close)  # flushes the curves also when preempted

        # --- train -------------------------------------------------------------------------
        status = _train(training, streams, config, device, signals, curve=curve, tracker=tracker)

        # --- evaluate (the final checkpoint is saved: a signal here stops without losing it) --
        def stop_if_requested() -> None:
            if signals.agree(dist):
                training.stop_if_requested(signals)

        if status is RunStatus.COMPLETED:
            weights = None
            if training.fsdp_root is not None:  # gathered to rank 0 by every rank
                from train.sharding import full_model_state

                weights = full_model_state(training.model)
            if dist.is_main:
                _save_model(training.model, store, run_dir.model, state_dict=weights)
            del weights
            val_losses, val_windows = _evaluate_all(training.model, config, store, device,
                                                    after_each=stop_if_requested, dist=dist,
                                                    fsdp_root=training.fsdp_root)  # fmt: skip
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
        if status is RunStatus.COMPLETED and config.eval.benchmarks and dist.is_main:
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
            training.writer.wait()  # rank 0 alone here (the others may have finished): no barrier
            signals.stop_if_requested(training.step, out)
        if status is RunStatus.COMPLETED and dist.is_main:
            write_model_card(run_dir.model, config, metrics.to_json(), provenance)
        tracker.close(metrics.to_json())

    # --- outputs: metrics.json last, atomically; then the checkpoint is no longer needed ------
    if dist.is_main:
        metrics.save(run_dir.metrics)
        shutil.rmtree(run_dir.checkpoint, ignore_errors=True)  # the model lives in RUN/model
    return metrics


def _resolve_micro_batch(config: RunConfig, training: _Training, vocab_size: int, device: torch.device,
                         eos_id: int) -> RunConfig:  # fmt: skip
    """`optim.micro_batch_size: auto` -> a number (`train.plan.auto_micro_batch`); execution only,
    so the run's identity and saved config keep ``auto``. Under FSDP the memory model alone
    decides, with the state sharded over the ranks: a probe is collective there, and an
    out-of-memory on one rank would leave the others waiting in an all-gather."""
    if config.optim.micro_batch_size != AUTO:
        return config
    from train.plan import auto_micro_batch

    model, sharded = training.model, training.parallelism == "fsdp"

    context, implementation = config.data.context, training.loss_implementation

    def probe(micro: int) -> None:  # CUDA only: one forward and backward of `micro` sequences (compiles them)
        ids = torch.randint(0, vocab_size, (micro, context), device=device)
        with autocast_for(device):
            loss = next_token_loss(model, ids, torch.zeros_like(ids), document_mask=config.data.document_mask,
                                   eos_id=eos_id, implementation=implementation)  # fmt: skip
        loss.backward()

    micro = auto_micro_batch(model, preset_name=config.model.preset, vocab_size=vocab_size, context=context,
                             batch_size=config.optim.batch_size, device=device, step_probe=None if sharded else probe,
                             shards=training.dist.world_size if sharded else 1)  # fmt: skip
    micro = training.dist.broadcast_object(micro)  # rank 0's: FSDP's collectives need the same count on every rank
    print(f"optim.micro_batch_size: auto -> {micro}", file=sys.stderr)
    return config.model_copy(update={"optim": config.optim.model_copy(update={"micro_batch_size": micro})})


def _train(training: _Training, streams, config: RunConfig, device: torch.device, signals, *,
           curve: PeriodicValidation, tracker: Tracker) -> RunStatus:  # fmt: skip
    """The step loop from `training.step` to the end; returns COMPLETED or DIVERGED."""
    from tqdm import tqdm

    optim, counters, total_steps = config.optim, training.counters, training.total_steps
    parameters = list(training.model.parameters())
    loss_implementation = training.loss_implementation
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
    dist = training.dist
    log_path = RunDir(training.out).log if dist.is_main else Path(os.devnull)  # rank 0 alone writes RUN
    with progress, open(log_path, "a") as log, prefetcher:
        while training.step < total_steps:
            # --- data: built ahead by the prefetcher; pinned on CUDA, so the copy is async ---
            # every rank builds the same global batch (a function of the step) and takes its rows
            batch = prefetcher.get(training.step)
            global_tokens = batch["input_ids"].numel()
            # every rank runs as many micro-batches (FSDP's forwards and backwards are collective)
            share = dist.step_share(batch["input_ids"].shape[0], optim.micro_batch_size)
            input_ids = batch["input_ids"][share.rows].to(device, non_blocking=True)  # [B / ranks, C]
            document_ids = batch["document_ids"][share.rows].to(device, non_blocking=True)  # [B / ranks, C]

            # --- forward/backward over micro-batches, clip, update -----------------------------
            loss, grad_norm = train_step(
                training.forward, training.optimizer, training.scheduler, input_ids, document_ids,
                micro_batch_size=optim.micro_batch_size, grad_clip=optim.grad_clip,
                document_mask=config.data.document_mask, parameters=parameters, eos_id=streams.eos_id,
                loss_implementation=loss_implementation, replicas=training.replicas, row_weight=share.row_weight,
                micro_batches=share.micro_batches,
            )  # fmt: skip
            training.step += 1
            step = training.step
            counters["tokens_seen"] += global_tokens  # all ranks' tokens

            # --- log, periodic validation and divergence check (a device sync point) ---------
            evaluate_now = curve.due(step)  # the same on every rank: the loss mean below is collective
            if step % LOG_EVERY == 0 or step == total_steps or evaluate_now:
                loss_value = dist.mean(loss.item(), device)  # the global batch's loss, same on every rank
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
                # not counted in train_time_s; rank 0 evaluates the curve while the others wait for it
                # in the next step's gradient all-reduce (a small set: no collectives inside)
                # (FSDP: every rank evaluates its share, the forwards gather parameters collectively)
                sharded_curve = training.fsdp_root is not None
                if evaluate_now and (dist.is_main or sharded_curve) and math.isfinite(loss_value):
                    line["val_losses"], line["eval_s"] = curve.evaluate(
                        training.model, dist=dist if sharded_curve else SINGLE, fsdp_root=training.fsdp_root)
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
            # a signal seen by any rank stops every rank here (one small gloo all-reduce a step)
            stop = signals.agree(dist)
            if step % config.checkpoint_every == 0 or step == total_steps or stop:
                count_time()
                log.flush()
                training.save()  # a copy to host memory; the disk write overlaps the next steps
                clock = time.perf_counter()
                if stop:
                    training.stop_if_requested(signals)
    return RunStatus.COMPLETED


def _save_model(model: torch.nn.Module, store, model_dir: Path, state_dict: dict | None = None) -> None:
    """save_pretrained (of `state_dict` when given: a sharded model's gathered weights) + the
    store's tokenizer files (copied: the training process never loads a tokenizer), replacing any
    partial earlier attempt."""
    tmp = model_dir.with_name(f".{model_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state_dict)
    shutil.copytree(store.tokenizer_path, tmp, dirs_exist_ok=True)
    replace_dir(tmp, model_dir)


def _evaluate_all(model, config: RunConfig, store, device: torch.device, *, after_each,
                  dist: DistributedContext = SINGLE,
                  fsdp_root: torch.nn.Module | None = None) -> tuple[dict[str, float | None], dict[str, int]]:  # fmt: skip
    """iid (with short/long halves) and every eval.extra set, on fixed real-text windows; data
    parallel, each rank evaluates its share of the windows and the sums are reduced.

    Returns the losses and the number of windows each set scored (fewer than
    ``eval.val_windows`` when a split holds fewer; ValidationSet.build warns then).
    """
    from train.data import ValidationSet

    settings = dict(batch_size=config.optim.micro_batch_size, device=device, document_mask=config.data.document_mask,
                    eos_id=store.eos_id, dist=dist, fsdp_root=fsdp_root)
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
