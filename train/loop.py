"""One training run: `run(config, out)` trains, evaluates and writes the run directory.

`run` reads as the run does: open the stores (the run's identity is of what they read), join the
other ranks and agree on that identity (`train.distributed`), open the data, prepare the run
directory, build, fit, evaluate, finish. Its pieces each live in one place:

- RUN's lifecycle (`train.run_dir`): config.yaml, config_hash, identity.json, provenance.json,
  checkpoint/, log.jsonl (training curve, with periodic validation losses: `train.curves`),
  tensorboard/ (and wandb/ when configured: `train.tracking`), model/ (with a model card
  README.md: `train.model_card`), metrics.json (a `RunMetrics`, written last; its presence means
  "done", and `run` then returns it untouched, after checking that RUN's recorded identity is
  this config's on this data and this training revision). Layout: `megadocs.formats.RunDir`.
- How the run spreads over processes (`train.parallel`): one process, DDP or FSDP2, chosen once.
- One optimizer update (`train.step`): AdamW with decoupled weight decay, global grad-norm
  clip, linear warmup then cosine decay to 0, gradient accumulation from `micro_batch_size` up to
  `batch_size` (``auto``: `train.plan`).
- `Trainer`: build (model, optimizer, schedule, resumed from the checkpoint), fit (the step loop,
  in labelled phases), evaluate (the saved model, the held-out sets, benchmarks).

On CUDA: bf16 autocast with fp32 master weights and TF32, fused AdamW, torch.compile of each
decoder layer and of the loss chunk when `compile: auto` (`train.compile`); the head and the
cross-entropy run chunked (`train.loss`), attention is FlexAttention (`attention: auto`), and
document masking goes through packed position ids, not a dense mask (`train.attention`). Deterministic kernels unless
`deterministic: false` (`train.device`). On CPU: fp32.

Resumption: every `checkpoint_every` steps, and when SIGTERM/SIGUSR2/SIGINT arrives, the full
state is saved atomically (`train.checkpoint`; copied to host memory at the step boundary and
written by a background thread, so training does not wait for the disk). The signal handler only
sets a flag (`train.preemption`); the step in flight finishes, the checkpoint is written and
waited for, a previously installed Python handler (submitit's requeue) is called, and `Preempted`
is raised (the CLI exits with status 75, `Exit.PREEMPTED`, or 130 for SIGINT/Ctrl-C; a second
Ctrl-C interrupts at once and loses only the steps since the last checkpoint on disk). Running
again resumes; data order is a pure function of the step (`train.data`), so the resumed run's metrics are
bit-identical to an uninterrupted one on the same machine (measured on CPU, and with
`deterministic: true` on an H200 and an H100: benchmarks/RESULTS.md "gpu_check"; `train.device`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed

from megadocs.errors import UserError, on_every_rank
from megadocs.formats import (
    IID,
    IID_SETS,
    BenchmarkScore,
    RunMetrics,
    RunStatus,
    WindowCounts,
    dumps_json,
    finite_or_none,
)
from train.attention import attention_backend, set_attention
from train.checkpoint import (
    CheckpointWriter,
    SavedCheckpoint,
    read_checkpoint,
    restore_progress,
    saved_checkpoint,
)
from train.compile import compile_wanted
from train.config import AUTO, RunConfig
from train.curves import PeriodicValidation
from train.data import RunData, RunStores, ValidationSet
from train.device import resolve_device, set_determinism
from train.distributed import DistributedContext, init_distributed
from train.evaluate import autocast_for, evaluate_model
from train.loss import MicroBatchLoss, next_token_loss, resolve_loss_implementation
from train.parallel import Parallelism
from train.plan import auto_micro_batch
from train.preemption import Preempted, PreemptionSignals
from train.prefetch import BatchPrefetcher
from train.run_dir import RunLifecycle
from train.step import lr_factor, param_groups, train_step, warmup_steps_for

__all__ = ["LOG_EVERY", "Preempted", "Trainer", "run"]

LOG_EVERY = 10  # steps between log lines and divergence checks (each is a device sync)


def run(config: RunConfig, out: str | Path, stores: RunStores | None = None, *,
        expected_identity: str | None = None) -> RunMetrics:  # fmt: skip
    """Train, evaluate and write RUN (see the module docstring); returns the metrics.

    `stores`: `config`'s stores as the caller opened them to name RUN by their identity (the
    CLI's default runs/train/<identity>); None: opened here. `expected_identity`: the identity
    RUN was named by before these were opened (a sweep's controller; the same on every rank):
    other data found at the paths since fails the run in one line, with nothing trained.

    Run by several processes (torchrun, or SLURM tasks: `train.distributed`), it trains data
    parallel: every rank opens its stores, joins the others, and they agree on the identity of
    what they opened before RUN is read or written (a rank that opened other data, or none,
    stops every rank with one line: `DistributedContext.agree_on_identity`). Every rank returns
    the same losses and counts; rank 0 alone writes RUN, and its metrics alone hold
    `eval.benchmarks` (it scores them on the saved model) and are the run's.

    Raises:
        Preempted: SIGTERM/SIGUSR2/SIGINT arrived; a checkpoint was saved.
        UserError: bad paths, a store/config mismatch, RUN holding another config, data of
            another identity than `expected_identity`, ranks that opened different data, or a
            synthetic pool replaced at its path while the run opened it: with several processes,
            an `EveryRankError` (`megadocs.errors`), the same line on every rank; so are rank 0's
            refusals of the RUN folder it alone creates (a file there) and of its W&B settings,
            which only it opens (`share_main_refusal`). One raised later (a node's fault) is a
            plain UserError, possibly of that rank alone.
        WorkFailed: several processes, one of which could not open its data or read RUN for another
            reason (an OSError of its file system), or rank 0 could not prepare RUN or open its
            trackers for one: the same line on every rank, a failure to retry (`megadocs train`:
            that line, exit 4).
        RankError: several processes, one of which met another exception there (a bug: a
            TypeError; `train.distributed`): the same line on every rank, ending each as the
            exception ends one process (a traceback).
    """
    out = Path(out)
    # the stores first, each opened once: the identity is of what they read. A rank that cannot
    # open them (bad input, or a file system's fault: an NFS ESTALE/EIO) raises below, with the
    # others, once every rank has joined (none is left waiting)
    try:
        stores = RunStores.open(config) if stores is None else stores
        opened: str | Exception = stores.identity(config)
    except Exception as exc:  # noqa: BLE001 - raised on every rank by the agreement below
        opened = exc
    attempt_start = time.perf_counter()
    dist = init_distributed(config.device)  # several processes: the rendezvous (one: nothing to join)
    try:
        # up to the run directory, a UserError is every rank's alike (EveryRankError): the agreements,
        # and checks of what they agreed on and of RUN, which every rank reads (then rank 0's of the RUN
        # folder it creates, shared). Past it, one may be one rank's alone (a node's fault): a sweep job
        # then ends that rank with an error
        with on_every_rank():
            identity = dist.agree_on_identity(opened)  # the same data on every rank, or every rank raises
            if expected_identity is not None and identity != expected_identity:
                raise UserError(
                    f"{out}: the sweep named this run {expected_identity}, but its config on the data as the job "
                    f"opened it is {identity}: data.store, the pool, an eval.extra store or eval.benchmark_data was "
                    "replaced at its path since (or the training code changed): put the earlier data (or code) back, or "
                    "keep the new, and the sweep's next certify names its runs by what is there (the runs of the "
                    "earlier data or code are then superseded, not mixed in); nothing was trained"
                )
            finished, saved = _finished_on_every_rank(dist, out, identity, config)  # what RUN holds, agreed
            if finished is not None:
                return finished
            try:  # data first, so a bad setting fails before anything is written (on every rank: agreed)
                data = RunData.open(config, stores)
                opened = data.identity(config)
            except Exception as exc:  # noqa: BLE001 - raised on every rank by the agreement below
                opened = exc
            if dist.agree_on_identity(opened) != identity:  # the pool as its tokens were opened is not the one hashed above
                raise UserError(f"data.synthetic.pool: {config.data.synthetic.pool} changed while the run opened it "
                                f"(replaced at its path); run again")
        device = resolve_device(config.device)
        run_dir = RunLifecycle(out, identity, writes=dist.is_main)
        with dist.share_main_refusal("could not prepare RUN"):  # rank 0 alone creates RUN: its refusal (a
            # file there) or fault (a full disk, EIO) stops every rank
            run_dir.prepare(config, device, data)
        # leaving the block waits for the checkpoint being written and closes the trackers (also
        # on an exception)
        with Trainer(config, data, run_dir, device, dist, attempt_start=attempt_start, saved=saved) as trainer:
            del saved  # the trainer's build reads the checkpoint from it, then lets it go
            trainer.build()
            status = trainer.fit()
            metrics = trainer.evaluate(status)
        run_dir.finish(metrics)  # metrics.json last; then the checkpoint is no longer needed
        return metrics
    finally:
        if dist.distributed:
            torch.distributed.destroy_process_group()


def _finished_on_every_rank(dist: DistributedContext, out: Path, identity: str,
                            config: RunConfig) -> tuple[RunMetrics | None, SavedCheckpoint | None]:  # fmt: skip
    """RUN's metrics when its run finished (None: not), and its checkpoint as this rank read it for
    the agreement (None: none, or one process: not read here), as every rank sees RUN alike: what each
    rank finds there (finished; not finished, with its checkpoint's step and save id, or none; its
    refusal or fault) is agreed before any rank acts on it (`DistributedContext.agree_on_run_folder`),
    so a node-local RUN, one whose checkpoint only rank 0 holds, node-local RUNs holding checkpoints
    of different saves at the same step, or a rank whose file system fails it stops every rank with
    one line. The step and save id are read from the checkpoint's index and pickled structure alone,
    never its tensors (`saved_checkpoint`), and only with several processes; the trainer resumes
    from what was read then (`Trainer`'s `saved`), the file parsed once.

    Raises:
        UserError: RUN holds another run (every rank's: `EveryRankError`), or ranks see it otherwise.
        WorkFailed: a rank's file system failed it reading RUN (the same line on every rank).
        RankError: a rank met another exception reading RUN (a bug; the same line on every rank).
    """
    resumes: SavedCheckpoint | None = None
    try:
        finished: RunMetrics | Exception | None = RunLifecycle.finished(out, identity, config)
        resumes = saved_checkpoint(out) if finished is None and dist.distributed else None
    except Exception as exc:  # noqa: BLE001 - RUN holds another run, an unreadable checkpoint, or its file
        finished = exc  # system failed this rank (an NFS ESTALE): raised on every rank by the agreement below
    seen = (finished if isinstance(finished, Exception) else "finished" if finished is not None
            else f"not finished, {resumes}" if resumes is not None
            else "not finished, no checkpoint")  # fmt: skip
    dist.agree_on_run_folder(out, seen)
    if isinstance(finished, Exception):
        raise finished
    return finished, resumes


class Trainer:
    """One attempt at a run: `build`, then `fit`, then `evaluate`, inside ``with Trainer(...)``.

    Entering installs the preemption signal handlers (`train.preemption`) and the background
    checkpoint writer; leaving closes the trackers, waits for the checkpoint being written and
    restores the handlers, also on an exception. `build` sets the rest of the state: `parallel`
    (the `train.parallel.Parallelism`), `model` and `params` (its parameter count), `optimizer`,
    `scheduler`, `step` and `counters` as a checkpoint left them, `config` with the micro-batch
    resolved, `curve` (`train.curves.PeriodicValidation`) and `tracker`. `saved`: RUN's checkpoint
    as the ranks' agreement read it (`train.checkpoint.saved_checkpoint`), which `build` resumes
    from without parsing the file again (None: `build` reads it).
    """

    def __init__(self, config: RunConfig, data: RunData, run_dir: RunLifecycle, device: torch.device,
                 dist: DistributedContext, *, attempt_start: float, saved: SavedCheckpoint | None = None) -> None:  # fmt: skip
        self.config = config
        self.data = data
        self.run_dir = run_dir
        self.device = device
        self.dist = dist
        self.attempt_start = attempt_start
        self._saved = saved  # RUN's checkpoint as read for the ranks' agreement (None: read by build)
        self.total_steps = data.streams.total_steps
        self.step = 0
        self.counters: dict[str, Any] = {"tokens_seen": 0, "train_time_s": 0.0, "wall_time_s": 0.0}
        self._exits = contextlib.ExitStack()

    def __enter__(self) -> Trainer:
        self.signals = self._exits.enter_context(PreemptionSignals())
        self.writer = self._exits.enter_context(CheckpointWriter(self.run_dir.path))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._exits.close()

    # --- build ---------------------------------------------------------------------------------

    def build(self) -> None:
        """Model, AdamW and schedule, restored from RUN/checkpoint when there is one, laid out over
        the ranks by the parallelism strategy; then the micro-batch (``auto``), the periodic
        validation sets and the trackers."""
        self.model, checkpoint = self._build_model()
        self._build_optimizer(checkpoint)
        del checkpoint  # the host copy of the saved state is not needed past here
        self._prepare_steps()

    def _build_model(self) -> tuple[torch.nn.Module, dict[str, Any] | None]:
        """The model with RUN/checkpoint's weights (sets `params`, `parallel`, `compiled` and
        `loss_implementation`), laid out over the ranks; returns it and the checkpoint read (None:
        a fresh run), whose optimizer state and progress `_build_optimizer` restores."""
        from train.model import build_model

        config, device, store = self.config, self.device, self.data.store
        set_determinism(device, strict=config.deterministic)
        torch.manual_seed(config.seed)
        model = build_model(config.model.preset, vocab_size=store.vocab_size, context=config.data.context,
                            seed=config.seed, eos_id=store.eos_id, device=device)  # fmt: skip
        self.params = sum(p.numel() for p in model.parameters())  # sharding keeps the count (DTensors: global shapes)
        self.parallel = Parallelism.choose(config.parallelism, dist=self.dist, device=device,
                                           parameters=self.params)  # fmt: skip
        checkpoint = read_checkpoint(self.run_dir.path, identity=self.run_dir.identity, saved=self._saved)
        self._saved = None  # its state is `checkpoint` now, let go with it
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])  # before sharding: every rank holds the full model here
        set_attention(model, attention_backend(config.attention, device, config.data.document_mask,
                                               deterministic=config.deterministic))  # fmt: skip
        self.compiled = compiled = compile_wanted(config.compile, device)
        self.loss_implementation = resolve_loss_implementation(config.loss, device, compiled=compiled)
        loss = MicroBatchLoss(model, document_mask=config.data.document_mask, eos_id=store.eos_id,
                              implementation=self.loss_implementation)  # fmt: skip
        # before the optimizer: sharding replaces the parameters, the optimizer holds the shards
        self.parallel.parallelize(model, loss, device=device, compiled=compiled)
        return model, checkpoint

    def _build_optimizer(self, checkpoint: dict[str, Any] | None) -> None:
        """`optimizer` (AdamW) and `scheduler` (warmup, cosine) of `model`, with `checkpoint`'s
        state, and `step` and `counters` as it left them."""
        model, optim, device = self.model, self.config.optim, self.device
        optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay, optim.weight_decay_on), lr=optim.lr,
                                      betas=(optim.beta1, optim.beta2), fused=device.type == "cuda")  # fmt: skip
        warmup_steps = warmup_steps_for(self.total_steps, optim.warmup_fraction)
        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total_steps=self.total_steps, warmup_steps=warmup_steps)
        )
        if checkpoint is not None:
            self.parallel.load_optimizer_state(model, optimizer, checkpoint["optimizer"])
            resumed = restore_progress(checkpoint, scheduler=self.scheduler)
            self.step, self.counters = resumed["step"], resumed["counters"]

    def _prepare_steps(self) -> None:
        """What the steps and evaluations need: the micro-batch (`config` with ``auto`` resolved),
        the log cut back to `step`, the periodic validation (`curve`) and the trackers (`tracker`)."""
        self.config = self._resolve_micro_batch()
        self.run_dir.truncate_log(self.step)
        self.curve = PeriodicValidation.build(self.config, self.data.store, self.data.extra,
                                              total_steps=self.total_steps, device=self.device,
                                              align=LOG_EVERY)  # fmt: skip
        with self.dist.share_main_refusal("could not open its trackers"):  # rank 0 alone opens them: a W&B
            # setting it refuses stops every rank
            self.tracker = self.run_dir.open_tracker(self.config, start_step=self.step)
        self._exits.callback(self.tracker.close)  # flushes the curves also when preempted

    def _resolve_micro_batch(self) -> RunConfig:
        """`optim.micro_batch_size: auto` -> a number (`train.plan.auto_micro_batch`); execution only,
        so the run's identity and saved config keep ``auto``. With the state sharded the memory
        model alone decides: a probe is collective there, and an out-of-memory on one rank would
        leave the others waiting in an all-gather."""
        config = self.config
        if config.optim.micro_batch_size != AUTO:
            return config
        model, device, context, eos_id = self.model, self.device, config.data.context, self.data.store.eos_id
        vocab_size, sharded = self.data.store.vocab_size, self.parallel.shards_state
        shards = self.parallel.state_shards(self.dist.world_size)

        def probe(micro: int) -> None:  # CUDA only: one forward and backward of `micro` sequences (compiles them)
            ids = torch.randint(0, vocab_size, (micro, context), device=device)
            with autocast_for(device):
                loss = next_token_loss(model, ids, torch.zeros_like(ids), document_mask=config.data.document_mask,
                                       eos_id=eos_id, implementation=self.loss_implementation)  # fmt: skip
            loss.backward()

        micro = auto_micro_batch(model, preset_name=config.model.preset, vocab_size=vocab_size, context=context,
                                 batch_size=config.optim.batch_size, device=device,
                                 step_probe=None if sharded else probe,
                                 shards=shards, compiled=self.compiled)  # fmt: skip
        micro = self.dist.broadcast_object(micro)  # rank 0's: FSDP's collectives need the same count on every rank
        print(f"optim.micro_batch_size: auto -> {micro}", file=sys.stderr)
        return config.model_copy(update={"optim": config.optim.model_copy(update={"micro_batch_size": micro})})

    # --- fit -----------------------------------------------------------------------------------

    def fit(self) -> RunStatus:
        """The step loop from `step` to the last; COMPLETED, or DIVERGED at the first non-finite loss."""
        from tqdm import tqdm

        config, optim, counters, dist = self.config, self.config.optim, self.counters, self.dist
        total_steps = self.total_steps
        self.model.train()
        progress = tqdm(total=total_steps, initial=self.step, desc="train", unit="step", file=sys.stderr,
                        dynamic_ncols=True, mininterval=1.0)  # fmt: skip
        clock = _TrainClock(counters, self.device)  # train_time_s counts steps and data, not checkpoint writes

        # batches are built on a background thread, `depth` steps ahead; the data of a step is still a
        # pure function of the step, so resuming needs no replay
        prefetcher = BatchPrefetcher(self.data.streams.batch, range(self.step, total_steps),
                                     pin_memory=self.device.type == "cuda")  # fmt: skip
        with progress, self.run_dir.open_log() as log, prefetcher:
            while self.step < total_steps:
                # --- data: built ahead by the prefetcher; pinned on CUDA, so the copy is async ---
                # every rank builds the same global batch (a function of the step) and takes its rows
                batch = prefetcher.get(self.step)
                global_tokens = batch["input_ids"].numel()
                # every rank runs as many micro-batches (FSDP's forwards and backwards are collective)
                share = self.parallel.step_share(batch["input_ids"].shape[0], optim.micro_batch_size)
                input_ids = batch["input_ids"][share.rows].to(self.device, non_blocking=True)  # [B / ranks, C]
                document_ids = batch["document_ids"][share.rows].to(self.device, non_blocking=True)  # [B / ranks, C]

                # --- forward/backward over micro-batches, clip, update -----------------------------
                loss, grad_norm = train_step(
                    self.parallel.loss_module, self.optimizer, self.scheduler, input_ids, document_ids,
                    micro_batch_size=optim.micro_batch_size, grad_clip=optim.grad_clip,
                    row_weight=share.row_weight, micro_batches=share.micro_batches,
                )  # fmt: skip
                self.step += 1
                step = self.step
                counters["tokens_seen"] += global_tokens  # all ranks' tokens

                # --- log, periodic validation and divergence check (a device sync point) ---------
                evaluate_now = self.curve.due(step)  # the same on every rank: the loss mean is collective
                if step % LOG_EVERY == 0 or step == total_steps or evaluate_now:
                    loss_value = self._log_step(loss, grad_norm, evaluate_now=evaluate_now, clock=clock, log=log,
                                                progress=progress)  # fmt: skip
                    if not math.isfinite(loss_value):
                        progress.write(f"loss {loss_value} at step {step}: diverged, stopping", file=sys.stderr)
                        return RunStatus.DIVERGED
                elif step < LOG_EVERY:  # the first steps show their loss too (a sync, but only a few)
                    progress.set_postfix(loss=f"{loss.item():.4f}")
                progress.update(1)

                # --- checkpoint: periodic, at the end, and on preemption -------------------------
                # a signal seen by any rank stops every rank here (one small gloo all-reduce a step)
                stop = self.signals.agree(dist)
                if step % config.checkpoint_every == 0 or step == total_steps or stop:
                    clock.count()
                    log.flush()
                    self._save()  # a copy to host memory; the disk write overlaps the next steps
                    clock.restart()
                    if stop:
                        self._stop()  # every rank agreed above, at this step: no second all-reduce
        return RunStatus.COMPLETED

    def _log_step(self, loss: torch.Tensor, grad_norm: torch.Tensor, *, evaluate_now: bool, clock: _TrainClock,
                  log: Any, progress: Any) -> float:  # fmt: skip
        """One line of RUN/log.jsonl for the step just taken (loss, grad norm, LR, throughput, and
        the periodic validation losses when `evaluate_now` and the loss is finite), also sent to
        the trackers and the progress bar. Returns the global batch's loss, the same on every rank
        (a collective mean; not finite: the run diverged, and the line says so)."""
        step, counters = self.step, self.counters
        loss_value = self.dist.mean(loss.item(), self.device)  # the global batch's loss, same on every rank
        clock.count()
        line = {
            "step": step,
            "loss": loss_value,
            "grad_norm": grad_norm.item(),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_seen": counters["tokens_seen"],
            "tokens_per_s": counters["tokens_seen"] / max(counters["train_time_s"], 1e-9),
            "cpu_s": time.process_time(),  # this process's CPU seconds: wall >> cpu = contention
        }
        # not counted in train_time_s; `curve_ranks` evaluate it (rank 0 while the others wait in
        # the next step's gradient all-reduce, or under FSDP every rank its share)
        ranks = self.parallel.curve_ranks
        if evaluate_now and ranks is not None and math.isfinite(loss_value):
            line["val_losses"], line["eval_s"] = self.curve.evaluate(self.model, dist=ranks,
                                                                     fsdp_root=self.parallel.eval_root)  # fmt: skip
            counters["eval_time_s"] = counters.get("eval_time_s", 0.0) + line["eval_s"]
            clock.restart()
        if not math.isfinite(loss_value):
            line["diverged"] = True  # loss (and grad_norm) become null: standard JSON
        log.write(dumps_json(finite_or_none(line), indent=None) + "\n")
        log.flush()
        self.tracker.log_train(step, line)
        if "val_losses" in line:
            self.tracker.log_validation(step, line["val_losses"])
        progress.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{line['tokens_per_s']:.0f}")
        return loss_value

    def _save(self) -> None:
        """Snapshot the state to host memory now; the writer thread puts it on disk. Rank 0 alone
        writes (no per-rank state: the checkpoint resumes on any number of processes); a sharded
        state is first gathered to rank 0, every rank taking part."""
        full_states = self.parallel.full_state(self.model, self.optimizer)  # collective when sharded
        if not self.run_dir.writes:
            return
        elapsed = time.perf_counter() - self.attempt_start
        counters = {**self.counters, "wall_time_s": self.counters["wall_time_s"] + elapsed}
        self.writer.save(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, step=self.step,
                         counters=counters, identity=self.run_dir.identity, full_states=full_states)  # fmt: skip

    def _stop_if_requested(self, *, collective: bool = True) -> None:
        """The run's preemption check, called where the last checkpoint holds everything done
        so far: when a signal arrived, `_stop`.

        `collective`: every rank calls this at the same point, so a signal seen by any rank stops
        them all (`PreemptionSignals.agree`) and no rank exits before rank 0's checkpoint is on
        disk. False where rank 0 runs alone (the benchmarks: the others may have finished).
        """
        stop = self.signals.agree(self.dist) if collective else self.signals.requested is not None
        if stop:
            self._stop(collective=collective)

    def _stop(self, *, collective: bool = True) -> None:
        """Stop on the signal every rank agreed on (`collective`; rank 0 alone's otherwise), where
        the last checkpoint holds everything done so far: wait until it is on disk, hand the
        signal on and raise `Preempted`."""
        self.writer.wait()
        if collective:
            self.dist.barrier()  # rank 0's checkpoint is on disk before any rank exits
        self.signals.raise_if_requested(self.step, self.run_dir.path)

    # --- evaluate ------------------------------------------------------------------------------

    def evaluate(self, status: RunStatus) -> RunMetrics:
        """After `fit`: the model saved to RUN/model, every held-out set scored, the benchmarks
        (rank 0, on the saved model) and the model card; returns the run's metrics. The final
        checkpoint is saved, so a signal here stops without losing it. A diverged run reports
        null losses and saves no model."""
        config = self.config
        if status is RunStatus.COMPLETED:
            weights = self.parallel.full_model_state(self.model)  # collective when sharded: gathered to rank 0
            self.run_dir.save_model(self.model, self.data.store, state_dict=weights)
            del weights
            val_losses, val_windows = self._evaluate_sets()
        else:  # diverged: no losses to report (null in metrics.json)
            val_losses = {name: None for name in (*IID_SETS, *config.eval.extra)}
            val_windows = {}
        self.tracker.log_validation(self.step, val_losses)
        metrics = self._metrics(status, val_losses, val_windows)
        if status is RunStatus.COMPLETED and config.eval.benchmarks and self.run_dir.writes:
            from train.downstream import evaluate_benchmarks

            metrics.benchmarks = BenchmarkScore.table(evaluate_benchmarks(
                model_dirs=[self.run_dir.paths.model],
                tasks=list(config.eval.benchmarks),
                data_dir=self.data.benchmark_data,  # the files as the run read them when it started (its identity's)
                limit=config.eval.benchmark_limit,
                device=self.device.type,
                batch_size=config.optim.micro_batch_size,
            ))
            self._stop_if_requested(collective=False)  # rank 0 alone here: no barrier
        if status is RunStatus.COMPLETED:
            self.run_dir.write_model_card(config, metrics)
        self.tracker.close(metrics.to_json())
        return metrics

    def _evaluate_sets(self) -> tuple[dict[str, float | None], dict[str, int]]:
        """iid (with short/long halves) and every eval.extra set, on fixed real-text windows; data
        parallel, each rank evaluates its share of the windows and the sums are reduced.

        Returns the losses and the number of windows each set scored (fewer than
        ``eval.val_windows`` when a split holds fewer; ValidationSet.build warns then).
        """
        config = self.config
        settings = dict(batch_size=config.optim.micro_batch_size, device=self.device,
                        document_mask=config.data.document_mask, eos_id=self.data.store.eos_id, dist=self.dist,
                        fsdp_root=self.parallel.eval_root)  # fmt: skip
        validation = ValidationSet.build(self.data.store, split="val", context=config.data.context,
                                         max_windows=config.eval.val_windows)  # fmt: skip
        losses = evaluate_model(self.model, validation, name=IID, **settings)
        windows = {IID: validation.num_windows}
        self._stop_if_requested()
        for name, extra in config.eval.extra.items():
            extra_set = ValidationSet.build(
                self.data.extra[name], split=extra.split, context=config.data.context,
                max_windows=config.eval.val_windows, field=f"eval.extra.{name} (eval.val_windows)",
            )
            losses.update(evaluate_model(self.model, extra_set, name=name, halves=False, **settings))
            windows[name] = extra_set.num_windows
            self._stop_if_requested()
        return losses, windows

    def _metrics(self, status: RunStatus, val_losses: dict[str, float | None],
                 val_windows: dict[str, int]) -> RunMetrics:  # fmt: skip
        """The run's `RunMetrics`, its wall time counting this attempt up to now."""
        counters, mixture = self.counters, self.data.streams.mixture
        real_seen, synthetic_seen = mixture.windows_before(self.step)
        return RunMetrics(
            status=status,
            val_loss=val_losses[IID],
            val_losses=val_losses,
            val_windows=val_windows,
            val_windows_requested=self.config.eval.val_windows,
            steps=self.step,
            windows=WindowCounts(real_per_epoch=mixture.real_windows, real_seen=real_seen,
                                 synthetic_seen=synthetic_seen),
            mixing_fraction_realised=synthetic_seen / max(1, real_seen + synthetic_seen),
            tokens_seen=counters["tokens_seen"],
            wall_time_s=counters["wall_time_s"] + time.perf_counter() - self.attempt_start,
            tokens_per_s=counters["tokens_seen"] / counters["train_time_s"] if counters["train_time_s"] else 0.0,
            config_hash=self.run_dir.identity,
            params=self.params,
        )


class _TrainClock:
    """Adds to ``counters["train_time_s"]`` the time of steps and data only: `restart` after what
    is not counted (checkpoint snapshots, periodic evaluations)."""

    def __init__(self, counters: dict[str, Any], device: torch.device) -> None:
        self.counters = counters
        self.device = device
        self.since = time.perf_counter()

    def count(self) -> None:
        """Add the time since the last count or restart (on CUDA after a sync: the steps are done)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.counters["train_time_s"] += now - self.since
        self.since = now

    def restart(self) -> None:
        self.since = time.perf_counter()
