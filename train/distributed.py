"""Data parallelism for one run: which rows of a global batch a process trains, and the few
collective operations the loop needs.

The global batch and the streams do not depend on the number of processes: every rank builds the
same global batch for a step (a pure function of the step, `train.data`) and takes its contiguous
slice of rows. Gradients are averaged over ranks (DDP, or FSDP's reduce-scatter for sharded
models: `train.sharding`), so a step on N ranks computes the same update as on one (up to float
reduction order), and a run's identity and curve do not depend on N. Checkpoints hold no per-rank
state (FSDP gathers the full state to rank 0), so a run resumes on any number of processes.

Launch: `torchrun --nproc-per-node=N -m megadocs train CONFIG` (reads RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or SLURM with one task per GPU (SLURM_PROCID,
SLURM_NTASKS, SLURM_LOCALID; submitit sets the rendezvous). NCCL on CUDA, gloo on CPU; a second
gloo group carries the control flags (stop requests) so they never force a GPU sync.

The rendezvous carries each rank's device setup (`init_distributed`): a rank whose device cannot
be set up stops every rank at once with its line, and a rank that never joins stops the others
after `RENDEZVOUS_TIMEOUT_S` (torch's default: 30 minutes, 10 with NCCL).

Every rank opens the run's data itself, at the same paths: right after the rendezvous the ranks
agree on the identity of what they opened (`DistributedContext.agree_on_identity`), so a node that
sees other data there (a stale NFS view, a store replaced while the job started, a node-local
path) stops every rank with one line instead of training on other data or hanging in a collective;
so does a rank whose file system failed it (an OSError: a WorkFailed on every rank, to retry; any
other exception but a UserError, a bug, is a `RankError` on every rank, a traceback as in one
process). They
agree then on what each sees in RUN (`DistributedContext.agree_on_run_folder`: a rank whose file
system fails it there stops every rank alike).
Those lines are `megadocs.errors.EveryRankError`s: raised by every rank alike, which a sweep job
records as an invalid run; a UserError one rank meets past them ends that rank with the error
(`search.objective.RunTask`), so that the launcher ends the others (below).

A rank that fails later (building the model, an out-of-memory step) leaves the others waiting in
their next collective: gloo notices the dead peer at once ("Connection closed by peer", measured on
CPU), NCCL not before its timeout (a reading: 10 minutes by default). The launcher ends them:
torchrun's agent SIGTERMs the others at once and SIGKILLs them after 30 s, naming the failed rank
as the root cause (measured); a SLURM job of several tasks runs srun with ``--kill-on-bad-exit=1``
(`megadocs.executors`), which does the same after SLURM's KillWait.

Example:
    >>> DistributedContext(rank=1, world_size=4).rows(64)
    slice(16, 32, None)
    >>> DistributedContext(rank=1, world_size=2).rows(29)
    slice(14, 29, None)
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from megadocs.errors import DiskFull, EveryRankError, UserError, WorkFailed, disk_full_message
from megadocs.procs import world_from_env  # re-exported: torch-free, so sweep jobs need not import torch
from train.device import resolve_device

__all__ = ["DistributedContext", "RankError", "StepShare", "SINGLE", "RENDEZVOUS_TIMEOUT_S", "world_from_env", "cuda_device_index",
           "init_distributed"]


@dataclass(frozen=True)
class StepShare:
    """This rank's part of one step's global batch (`DistributedContext.step_share`)."""

    rows: slice
    """Its rows of the global batch (``slice(0, 1)``, a placeholder, when it has none)."""
    row_weight: float
    """The weight of each row's mean loss: ``world_size / global rows``, 0 for the placeholder."""
    micro_batches: int
    """How many micro-batches it runs: the same on every rank."""


class RankError(Exception):
    """An exception a rank of a data-parallel run met that is neither a refusal (a UserError) nor a
    fault of its node or file system (`_is_fault`): a bug (a TypeError, a KeyError), which a re-run
    meets again. Every rank raises it with the same line, naming that rank and the exception's type
    and message (on that rank, its exception is the cause, whose traceback the console shows), and
    it ends each as the exception ends a one-process run: a traceback and exit 1 (`megadocs train`),
    a failed job (a sweep); not a `WorkFailed`, whose line says a re-run is the fix."""


def _is_fault(exc: BaseException) -> bool:
    """Whether `exc`, which kept a rank from its step, is a fault of its node or its file system,
    which a re-run may not meet (every rank then raises a WorkFailed, to retry): an OSError (an NFS
    ``ESTALE``/``EIO``, a full disk), a WorkFailed the code raised for one (an unreadable checkpoint:
    `train.checkpoint.read_checkpoint`; a W&B server out of reach: `train.tracking`), a full disk
    under a library's own exception (`megadocs.errors.disk_full_message`), or a torch.distributed
    store or connection that failed (a DistError, as `_join` counts one).

    >>> _is_fault(OSError(116, "Stale file handle")), _is_fault(TypeError("bad operand")), _is_fault(UserError("x"))
    (True, False, False)
    """
    import torch.distributed as dist

    if isinstance(exc, UserError):
        return False
    return isinstance(exc, (OSError, WorkFailed, DiskFull, dist.DistError)) or disk_full_message(exc) is not None


@dataclass(frozen=True)
class _Opened:
    """What one rank opened, as `DistributedContext.agree_on_identity` gathers it (and what it found
    as it set up its device, `_join`, or read RUN, `DistributedContext.agree_on_run_folder`)."""

    host: str
    identity: str | None
    """The run identity of the data it opened (what it sees in RUN; None: it could not open it)."""
    error: str | None
    """The line of the error that kept it from opening the data (None: it opened it): a UserError's
    message, a full disk's line (`disk_full`), any other exception's type and message (``OSError:
    [Errno 116] Stale file handle``)."""
    fault: bool = False
    """Whether that error was a fault of the node or its file system (`_is_fault`: an NFS
    ``ESTALE``/``EIO``), which a re-run may not meet: raised as a WorkFailed."""
    refused: bool = False
    """Whether that error was a UserError (bad input, the same on a re-run): raised as an
    EveryRankError. An error neither refused nor a fault (a bug) is raised as a `RankError`."""
    disk_full: bool = False
    """Whether that error was a full file system (a fault): its `error` is then the line a full disk
    reads in one process (`megadocs.errors.disk_full_message`), raised as a DiskFull."""

    @classmethod
    def of(cls, opened: str | Exception | None) -> _Opened:
        """This rank's record of `opened`: an identity (None: nothing to name), or the exception
        that kept it from opening."""
        failed = isinstance(opened, Exception)
        refused = isinstance(opened, UserError)
        # as `megadocs.cli.main` reads one process's: a WorkFailed's own line before a full disk's
        full = disk_full_message(opened) if failed and not isinstance(opened, (UserError, WorkFailed)) else None
        error = (str(opened) if refused else full or f"{type(opened).__name__}: {opened}") if failed else None
        return cls(host=socket.gethostname(), identity=None if failed else opened, error=error,
                   fault=failed and _is_fault(opened), refused=refused, disk_full=full is not None)  # fmt: skip


def _raise_first_error(every: list[_Opened], what: str, mine: object) -> None:
    """Raise on every rank the same line for the ranks' records `every` (each rank's, in rank order)
    where one holds an error: the first rank's that met a fault (the others' errors may be its
    consequences), else the first's, ``rank 1 (host) of this run {what}: ...``, as a WorkFailed
    (a fault), an EveryRankError (a refusal) or a `RankError` (any other exception: a bug); a full
    disk as a DiskFull, the line it reads in one process (``no space left on device writing ...``,
    which names the file; the CLI prints it as one process's); nothing when none holds one.
    `mine`: this rank's own exception (the cause of a WorkFailed, DiskFull or RankError it raised
    itself), or anything else."""
    failed = [rank for rank, record in enumerate(every) if record.error is not None]
    if not failed:
        return
    faults = [rank for rank in failed if every[rank].fault]
    named = (faults or failed)[0]
    others = [rank for rank in failed if rank != named]
    also = f" (and {len(others)} other rank(s): {_ranks(others)})" if others else ""
    line = f"rank {named} ({every[named].host}) of this run {what}{also}: {every[named].error}"
    cause = mine if isinstance(mine, Exception) else None
    if faults and every[named].disk_full:
        raise DiskFull(every[named].error) from cause
    if faults:
        raise WorkFailed(line) from cause
    if every[named].refused:
        raise EveryRankError(line)
    raise RankError(line) from cause


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank, world size, and the groups for collectives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    control: Any = field(default=None, repr=False, compare=False)
    """A gloo process group for host-side flags (None: the default group, or a single process)."""

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory (log, checkpoints, metrics, model)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rows(self, batch_size: int) -> slice:
        """This rank's contiguous rows of a global batch of ``batch_size`` sequences: equal shares
        when it divides evenly, else the first ``batch_size % world_size`` ranks take one more (the
        short last batch of an epoch; a rank may get none when the batch is shorter than the world)."""
        return slice(batch_size * self.rank // self.world_size, batch_size * (self.rank + 1) // self.world_size)

    def step_share(self, batch_size: int, micro_batch_size: int) -> StepShare:
        """This rank's part of a step of ``batch_size`` global rows, in micro-batches of at most
        ``micro_batch_size``, with the same number of micro-batches on every rank.

        Every rank runs as many micro-batches as the largest share needs (``ceil(batch_size /
        world_size)`` rows): under FSDP each forward and backward is collective (all-gathers,
        reduce-scatters), so a rank that ran one more than the others would wait forever. A rank
        short of micro-batches runs placeholders of weight 0 (`train.step.train_step`), as does a
        rank with no rows (the batch is shorter than the world: one placeholder row). Cost: at most
        one micro-batch of one row per rank on such a step (the last, short step of a run; or every
        step when ``batch_size`` is not a multiple of the world and ``micro_batch_size`` divides the
        smaller share).

        Example:
            >>> first, second = (DistributedContext(rank=r, world_size=2).step_share(15, 7) for r in (0, 1))
            >>> first.rows, second.rows, first.micro_batches, second.micro_batches  # 7 rows: 1 + a placeholder
            (slice(0, 7, None), slice(7, 15, None), 2, 2)
            >>> DistributedContext(rank=0, world_size=4).step_share(3, 1)  # no rows: a placeholder row
            StepShare(rows=slice(0, 1, None), row_weight=0.0, micro_batches=1)
        """
        rows = self.rows(batch_size)
        row_weight = self.world_size / batch_size  # DDP/FSDP average over ranks: the global batch's mean
        if rows.stop == rows.start:
            rows, row_weight = slice(0, 1), 0.0
        largest = -(-batch_size // self.world_size)
        return StepShare(rows=rows, row_weight=row_weight, micro_batches=-(-largest // micro_batch_size))

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a stop request seen by one rank stops all at
        the same step boundary)."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control)
        return bool(value.item())

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place over ranks; returns ``tensor``."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of a per-rank scalar over ranks (for logging)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        return float(self.sum_(tensor).item()) / self.world_size

    def sum_floats(self, values: list[float]) -> list[float]:
        """Host-side float64 sums over ranks (evaluation totals), over the control group."""
        if not self.distributed:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.control)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self.control)

    def agree_on_identity(self, opened: str | Exception) -> str:
        """The run identity of the data every rank opened, checked to be one identity: each rank's
        `opened` (the identity of its stores as it opened them, or the exception that kept it from
        opening them) and host name are gathered over the control group (one small all-gather).

        Every rank calls this once, right after the rendezvous and before RUN is read or written:
        a rank that saw other data at the same paths, or none, then stops every rank with the same
        line, where it would otherwise train on other data, return another run's metrics, or leave
        the others waiting in the rendezvous or a collective. One process: no collective; `opened`
        is returned (or raised) as is.

        Example:
            >>> SINGLE.agree_on_identity("3f2a9c1d0b7e4a65")
            '3f2a9c1d0b7e4a65'

        Raises:
            EveryRankError: (a UserError) on every rank, the same line: the first rank that could
                not open the data (its rank, host and error), or which ranks and hosts opened which
                identities.
            WorkFailed: on every rank, the same line, when a rank met a fault of its node or file
                system (`_is_fault`: an OSError of a flaky file system): the first such rank, its host
                and the exception's type and message. Not a UserError, so that a sweep retries the job
                (on a rank that could not open its data, its own exception is the cause). A full disk
                is a DiskFull instead, its one-process line (`_raise_first_error`).
            RankError: on every rank, the same line, when no rank met a fault and the first rank
                that could not open the data met another exception than a UserError (a bug: a
                TypeError): its rank, host and the exception's type and message; it ends every rank
                as it ends one process (a traceback; on that rank, it is the cause).
        """
        if not self.distributed:
            if isinstance(opened, Exception):
                raise opened
            return opened
        import torch.distributed as dist

        mine = _Opened.of(opened)
        every: list[Any] = [None] * self.world_size
        dist.all_gather_object(every, mine, group=self.control)  # host objects: never a GPU sync
        _raise_first_error(every, "could not open its data", opened)
        views: dict[str, list[int]] = {}
        for rank, rank_opened in enumerate(every):
            views.setdefault(rank_opened.identity, []).append(rank)
        if len(views) > 1:
            hosts = {identity: ", ".join(sorted({every[rank].host for rank in ranks})) for identity, ranks in views.items()}
            seen = "; ".join(f"{identity[:8]} on {_ranks(ranks)} ({hosts[identity]})" for identity, ranks in views.items())
            raise EveryRankError(f"the ranks of this run opened different data: {seen}: data.store, the synthetic pool, "
                                 "the eval.extra stores and eval.benchmark_data must hold the same data on every node "
                                 "(check for a stale NFS view, a store replaced while the job started, or a node-local "
                                 "path); nothing was trained")
        return next(iter(views))

    def agree_on_run_folder(self, out: Path, seen: str | Exception) -> None:
        """Check that every rank sees RUN (`out`) alike: each rank's host, `out` as it resolves there
        and what it `seen` there (``finished``, ``not finished, checkpoint at step 120 (save
        3f2a9c1d0b7e4a65)``: the checkpoint's step and the random id its save gave it, so that two
        saves at one step differ and a copy does not, `train.checkpoint.SavedCheckpoint`; ``not
        finished, no checkpoint``, or the exception it met reading RUN: `train.loop.run`) are
        gathered over the control group (one small all-gather), before any rank acts on it. A
        UserError (its refusal: RUN holds another run) is compared as its line; any other exception
        (an OSError of its file system, a bug) stops every rank, as `agree_on_identity` does. A
        relative or node-local RUN otherwise let a rank that found a finished run return its metrics while
        another trained alone (and failed in its next collective), one rank refuse alone, rank 0
        resume from its checkpoint while another started at step 0 (each reads the checkpoint), or
        ranks resume from different checkpoints saved at the same step (ids compared; a checkpoint
        saved before save ids, by its step alone); and
        a rank whose file system failed it stopped alone, leaving the others in this all-gather.
        One process: nothing to check (the caller raises what it met).

        Raises:
            EveryRankError: on every rank, the same line naming rank 0 and the first rank that sees
                RUN otherwise, their hosts, the folders they see and what they see there.
            WorkFailed: on every rank, the same line, when a rank met a fault of its node or file
                system reading RUN (`_is_fault`): the first such rank, its host and the exception's
                type and message (on that rank, its exception is the cause).
            RankError: the same, when the first rank that met an exception other than a UserError
                met no fault (a bug).
        """
        if not self.distributed:
            return
        import torch.distributed as dist

        mine = (_Opened.of(str(seen) if isinstance(seen, UserError) else seen), str(Path(out).resolve()))
        every: list[Any] = [None] * self.world_size
        dist.all_gather_object(every, mine, group=self.control)
        _raise_first_error([record for record, _ in every], "could not read RUN", seen)
        other = next((rank for rank, (record, _) in enumerate(every) if record.identity != every[0][0].identity), None)
        if other is None:
            return
        views = ", ".join(f"rank {rank} ({record.host}) sees {folder} ({record.identity})"
                          for rank, (record, folder) in ((0, every[0]), (other, every[other])))
        raise EveryRankError(f"the ranks of this run see different RUN folders: {views}: RUN must be one folder that "
                             "every node sees alike (a shared file system, an absolute --out); nothing was trained")

    @contextlib.contextmanager
    def share_main_refusal(self, what: str) -> Iterator[None]:
        """An exception rank 0 raises in the block, raised on every rank: for a step that rank 0 alone
        takes or checks (RUN's folder, which only it creates and writes; its trackers, which only it
        opens), which rank 0 `what` when it fails (``could not prepare RUN``). Every rank runs the
        block; then rank 0's record of what it met (`_Opened`; None: nothing) is broadcast (one small
        object over the control group), so that no rank is left waiting in its next collective for a
        rank 0 that stopped. Another rank's own exception in the block is raised on that rank alone,
        once rank 0 met nothing (its launcher ends the others). One process: the block's errors as
        they are.

        Raises:
            EveryRankError: on every rank, rank 0's line, when it refused (a UserError; several processes).
            WorkFailed: on every rank, the same line, when rank 0 met a fault of its node or file system
                (`_is_fault`: an OSError, EIO): ``rank 0 (host) of this run {what}: `` its type and
                message (on rank 0, its exception is the cause), as `agree_on_identity` says a fault.
            DiskFull: on every rank, when that fault was a full disk: the line a full disk reads in
                one process (`megadocs.errors.disk_full_message`: the file, and to re-run).
            RankError: on every rank, that line, when rank 0 met any other exception (a bug: a
                TypeError), which ends every rank as it ends one process: a traceback (on rank 0,
                of its exception, the cause), not a WorkFailed's line that a re-run is the fix.
        """
        if not self.distributed:
            yield
            return
        met: Exception | None = None
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - rank 0's is raised on every rank below
            met = exc
        main: _Opened | None = self.broadcast_object(_Opened.of(met) if self.is_main and met is not None else None)
        if main is not None:
            if main.refused:
                raise EveryRankError(main.error) from met  # its refusal's own line
            _raise_first_error([main], what, met)  # rank 0's fault or bug, named as the first rank
        if met is not None:
            raise met

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (small picklable objects: never data from disk)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0, group=self.control)
        return holder[0]


SINGLE = DistributedContext()


def _ranks(ranks: list[int]) -> str:
    """``rank 3`` or ``ranks 0-2, 5`` (ascending `ranks`, runs of consecutive ones as ranges).

    >>> _ranks([3]), _ranks([0, 1, 2, 5, 7, 8])
    ('rank 3', 'ranks 0-2, 5, 7-8')
    """
    spans: list[list[int]] = []
    for rank in ranks:
        if spans and rank == spans[-1][1] + 1:
            spans[-1][1] = rank
        else:
            spans.append([rank, rank])
    text = ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in spans)
    return f"rank {text}" if len(ranks) == 1 else f"ranks {text}"


def cuda_device_index(local_rank: int, device_count: int) -> int:
    """The CUDA device of the process with `local_rank` among the `device_count` it sees.

    With every GPU of the node visible (torchrun, or SLURM binding all GPUs to each task) it is
    the local rank; with one GPU per task (``--gpus-per-task=1``, ``--gpu-bind=single:1``: SLURM
    sets CUDA_VISIBLE_DEVICES per task) the task sees only its own, device 0, whatever its rank.

    >>> cuda_device_index(3, 8), cuda_device_index(3, 1)
    (3, 0)

    Raises:
        UserError: several devices visible but fewer than the local ranks (an ambiguous binding).
    """
    if device_count < 1:
        raise UserError("distributed run on CUDA: this process sees no CUDA device (check CUDA_VISIBLE_DEVICES "
                        "and the job's GPU request)")
    if device_count == 1:
        return 0
    if local_rank >= device_count:
        raise UserError(f"distributed run on CUDA: local rank {local_rank} but this process sees only "
                        f"{device_count} devices (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                        "bind one GPU per task or make all of the node's GPUs visible to every task")
    return local_rank


RENDEZVOUS_TIMEOUT_S = 300.0
"""How long the ranks of a run wait for one another to join its process group (torch's default:
30 minutes, 10 with NCCL). Every rank that starts joins, also one whose device could not be set up
(its error is every rank's line at once: :func:`init_distributed`), so this bounds only the wait
for a rank that never arrives (it died before, or its node never started it) or that dies while it
waits for the others (the line then names it: :func:`_late_ranks`); the ranks of one job start
together, their imports and opening the stores before it take seconds to a minute. A launcher that
ends a job when one of its processes dies ends the wait sooner: torchrun at once, srun with
``--kill-on-bad-exit=1`` (as `megadocs.executors` runs it) within a second (measured on the local
cluster: a task killed by SIGKILL); srun without it (SLURM's default, ``KillOnBadExit=0``) leaves
the others running, and then this bounds their wait. Past the rendezvous, the store and the
collectives keep the timeout torch gives the backend (:func:`_collective_timeout`)."""

_JOINED = "megadocs/joined"
"""The rendezvous store's keys by which each rank says it joined, with its device setup's error."""


def init_distributed(device: str | torch.device) -> DistributedContext:
    """Join the run's process group when several processes run it (NCCL on CUDA, gloo on CPU);
    a single process gets :data:`SINGLE` and no process group. `device`: the run's device setting
    (`train.device.resolve_device`), resolved only when several processes run.

    A rank whose device cannot be set up (`device: cuda` where it sees none, an ambiguous GPU
    binding) still joins the rendezvous and says so there: every rank then stops at once with the
    same line naming it (:func:`_join`), where the others had waited for it until the launcher
    ended them. A rank that never joins stops the others after :data:`RENDEZVOUS_TIMEOUT_S`.

    Raises:
        UserError: no rendezvous to join, or MASTER_PORT is not a port (this rank alone: the others
            cannot be told).
        EveryRankError: on every rank, a rank's device refused (the first such rank, its host, its line).
        WorkFailed: on every rank, a rank's device setup met a fault (`_is_fault`); or, on the ranks
            that waited, a rank did not join within :data:`RENDEZVOUS_TIMEOUT_S`.
        RankError: on every rank, a rank's device setup failed otherwise (torch's RuntimeError).
    """
    rank, world_size, local_rank = world_from_env()
    if world_size == 1:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_initialized():
        if "MASTER_PORT" in os.environ or "MASTER_ADDR" in os.environ:  # else submitit sets both
            _check_master_port(os.environ.get("MASTER_PORT"))
        if "MASTER_ADDR" not in os.environ:  # SLURM without torchrun: submitit knows the rendezvous
            try:
                import submitit

                submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            except (ImportError, RuntimeError) as exc:
                raise UserError(f"distributed run: no MASTER_ADDR/MASTER_PORT and no SLURM job to derive "
                                f"them from ({exc}); launch with torchrun or srun") from None
        try:  # this rank's own: told to every rank at the rendezvous, where they would wait for it
            device_type = resolve_device(device).type
            if device_type == "cuda":
                torch.cuda.set_device(cuda_device_index(local_rank, torch.cuda.device_count()))
            setup: Exception | None = None
        except Exception as exc:  # noqa: BLE001 - raised on every rank by _join
            device_type, setup = "cpu", exc
        backend = "nccl" if device_type == "cuda" else "gloo"
        store = _join(rank, world_size, setup, backend)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, store=store)
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, control=control)


def _check_master_port(value: str | None) -> None:
    """Check MASTER_PORT (its `value`; None: not set): the TCP port of the run's rendezvous, which
    torchrun sets to its agent's store's port, and submitit (srun) to one of 20000-60000 when unset.

    Torchrun, srun and submitit give every rank of a job the same environment, so a bad value is
    every rank's and each refuses it at once. Only a launcher that gives the ranks different values
    (a broken one, or environments written by hand per rank) has one rank refuse alone: it cannot
    tell the others, which have no rendezvous in common with it, so they wait out
    :data:`RENDEZVOUS_TIMEOUT_S` (unless the launcher ends the job when a process exits non-zero:
    torchrun, srun ``--kill-on-bad-exit=1``). Not worth a channel of its own.

    Raises:
        UserError: it is not an integer from 1 to 65535 (0 had rank 0 serve on a port the others
            cannot know, and every rank wait out the rendezvous), or not set.
    """
    try:
        port = int(value or "")
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        shown = "is not set" if value is None else f"is {value!r}"
        raise UserError(f"distributed run: MASTER_PORT {shown}: expected the TCP port of the run's rendezvous, an "
                        "integer from 1 to 65535 (torchrun sets it; under srun, submitit does when it is unset)")


def _collective_timeout(backend: str) -> timedelta:
    """The timeout torch gives a process group of `backend` when none is given, for its store and
    its collectives: NCCL's own default (10 minutes) where this torch has NCCL, else 30 minutes.
    torch's `init_process_group` picks it by this function (`distributed_c10d._get_default_timeout`)."""
    from torch.distributed.distributed_c10d import Backend, _get_default_timeout

    return _get_default_timeout(Backend(backend))


def _late_ranks(store: Any, keys: list[str], read: list[str]) -> str:
    """Why this rank's rendezvous timed out, in words, from what the rendezvous `store` holds (None:
    this rank never reached it): the ranks that never said they joined (their `keys`), else those
    that joined but never said they `read` the others' device setup (`read`: a rank that joined
    waits there only for the others to join, so it died in between). When it cannot tell (no
    store, or its server is gone), that not every rank joined."""
    import torch.distributed as dist

    at = f"its rendezvous at {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    within = f"within {RENDEZVOUS_TIMEOUT_S:.0f} s"
    world = f"of this run's {len(keys)}"
    never: list[int] = []
    unread: list[int] = []
    if store is not None:
        try:
            never = [rank for rank, key in enumerate(keys) if not store.check([key])]
            unread = [] if never else [rank for rank, key in enumerate(read) if not store.check([key])]
        except dist.DistError:  # its server is gone (rank 0 stopped)
            pass
    if never:
        return f"{_ranks(never)} {world} never joined {at} {within} (died before, or never started: see the logs)"
    if unread:
        return (f"{_ranks(unread)} {world} joined {at} but did not read the others' device setup {within} "
                "(died since, probably: see the logs)")
    return f"not every rank {world} joined {at} {within} (one died or never started: see the others' logs)"


def _read_all(store: Any, keys: list[str]) -> list[bytes]:
    """The values of `keys` in the rendezvous `store`, in one request where this torch's store has
    ``multi_get`` (a TCPStore does: one round trip to the store's server), else one request a key.
    Every rank reads every rank's key: one request each is N at the server for N ranks, where a
    request a key was N² (262,144 at 512 ranks)."""
    multi_get = getattr(store, "multi_get", None)
    return list(multi_get(keys)) if multi_get is not None else [store.get(key) for key in keys]


def _join(rank: int, world_size: int, setup: Exception | None, backend: str) -> Any:
    """The run's rendezvous (torch's ``env://``: MASTER_ADDR/MASTER_PORT, rank 0's store or
    torchrun's agent's) within :data:`RENDEZVOUS_TIMEOUT_S`: this rank says it joined, with its
    device setup's error (`setup`, None: none), waits until every rank has and reads what they said
    (one request: :func:`_read_all`); rank 0, whose
    process serves the store unless torchrun's agent does, also until every rank has read what the
    others said (leaving before, it took the store away from a rank still reading, which then met
    "Connection closed" and stopped with another line than the others). Returns the store for a
    process group of `backend`, its timeout then the one torch gives that backend
    (:func:`_collective_timeout`), as when torch's own rendezvous made the store.

    Raises:
        EveryRankError, WorkFailed, RankError: a rank's setup error, the same line on every rank
            (`_raise_first_error`).
        WorkFailed: not every rank joined in time (:func:`_late_ranks`: the ranks that never joined,
            where this rank reached the store; on rank 0, the ranks that joined but never read the
            others' setup: they died in between).
    """
    import dataclasses
    import json

    import torch.distributed as dist

    timeout = timedelta(seconds=RENDEZVOUS_TIMEOUT_S)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun's store outlives a restart
    keys = [f"{_JOINED}/{attempt}/{other}" for other in range(world_size)]
    read = [f"{key}/read" for key in keys]
    store = None
    try:
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=timeout))
        store.set(keys[rank], json.dumps(dataclasses.asdict(_Opened.of(setup))))
        store.wait(keys, timeout)
        every = [_Opened(**json.loads(value)) for value in _read_all(store, keys)]
        store.set(read[rank], "")
        if rank == 0:
            store.wait(read, timeout)
    except dist.DistError as exc:  # timed out: a rank never joined or never read, or rank 0 never served the store
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WorkFailed(f"rank {rank} ({socket.gethostname()}): {_late_ranks(store, keys, read)}: {reason}") from exc
    _raise_first_error(every, "could not set up its device", setup)
    store.set_timeout(_collective_timeout(backend))
    return store
