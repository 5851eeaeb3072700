"""submitit behind one small interface: submit callables, poll jobs by id (also jobs an earlier
controller submitted), nothing else.

- ``local``: submitit's LocalExecutor (one process per run on this machine). The controller caps
  concurrency; each job gets cores / ``max_parallel`` threads (:func:`megadocs.procs.job_thread_environment`)
  and ignores the terminal's Ctrl-C, which only the controller sees: it then stops its jobs
  (:meth:`Executor.on_interrupt`: SIGTERM, a train run saves a checkpoint and exits). Jobs outlive
  a controller that is killed (SIGKILL, SIGTERM, a crash) and are re-attached by pid + submitit folder.
  The shard arrays of ``gen`` and ``tokenize-pool`` (:func:`run_job_array`) leave Ctrl-C to their
  tasks, which stop themselves on it.
- ``debug``: in-process, run when first polled (tests, breakpoints); nothing survives a restart.
- ``slurm``: submitit's AutoExecutor from a profile file (docs/architecture.md "SLURM profile");
  a batch is one job array; timeouts/preemptions requeue the Checkpointable run
  (``max_requeues`` times) and the run resumes from its run directory. Jobs keep running when the
  controller stops, Ctrl-C included, and are re-attached by the next one.

Trust: a job id and folder given back to ``poll``/``alive`` come from the ledger, which others may
write. A result pickle is read only from inside this executor's own folder (resolved, symlinks
followed); anything else raises :class:`megadocs.trust.UntrustedPath` before a byte is read.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from megadocs import compat
from megadocs.config import StrictModel, load_config, parse_config
from megadocs.errors import UserError
from megadocs.procs import (
    PidPlace,
    child_pids,
    child_process_settings,
    exclusive_lock,
    job_thread_environment,
    pid_alive,
    process_running,
    process_start,
)
from megadocs.trust import require_inside

__all__ = ["JobState", "Poll", "Executor", "SlurmProfile", "make_executor", "load_profile", "check_executor",
           "check_array_executor", "run_job_array", "ArrayProgress", "in_queue", "SUBMISSIONS", "ArraySubmission",
           "ProcessRun", "Liveness", "RecordedProcess", "recorded_process", "live_runs", "unchecked_note", "HEARTBEAT_S",
           "STALE_S"]

LOST_GRACE_S = 10.0
"""A job that ended without a result file gets this long for the file to appear (slow NFS); a local
job whose result is written gets this long to exit before it stops counting as running."""
STOP_POLL_S = 0.2
"""Seconds between checks while local jobs stop (:meth:`LocalExecutor.on_interrupt`)."""
ARRAY_POLL_S = {"local": 1.0, "slurm": 10.0}
"""Seconds between polls of a job array's tasks (:func:`run_job_array`)."""
ARRAY_PROGRESS_S = 60.0
"""At most one line per this many seconds for a job array's successes (:class:`ArrayProgress`)."""
ARRAY_PROGRESS_STEPS = 10
"""...and one each time another tenth of the array has ended, whichever comes first."""
SUBMISSIONS = "submissions.json"
"""A job array folder's record of the arrays submitted into it (:class:`ArraySubmission`) and of
the processes running the step in-process (:class:`ProcessRun`), so that a later command can ask
whether they still run (:func:`live_runs`)."""
HEARTBEAT_S = 60.0
"""How often a process in a folder's record of runs says it still runs (:class:`RecordedProcess`)."""
STALE_S = 600.0
"""A process recorded elsewhere (another host, kernel boot or pid namespace: not asked from here)
whose heartbeat is older than this is presumed ended, and said so (:class:`Liveness`): ten missed
heartbeats, so that a slow shared file system or clocks some minutes apart do not end a live one."""
QUEUE_CHECK_S = 30.0
"""How often a job that accounting shows queued (or does not know) is looked up in SLURM's queue."""


class ExecutorConfig(StrictModel):
    kind: Literal["local", "debug", "slurm"] = "local"
    """local: processes on this machine; debug: in-process (tests, breakpoints); slurm: a cluster."""
    max_parallel: int = Field(2, ge=1)
    """Most runs in flight at once (for slurm also the job array's parallelism cap)."""
    profile: str | None = None
    """slurm only: a profile YAML (slurm/profiles/NAME.yaml) with partition, GPUs, time, ..."""
    max_retries: int = Field(2, ge=0)
    """Infrastructure failures (job lost, node died, OOM, exception) retried this many times."""
    poll_s: float = Field(1.0, gt=0)
    """Seconds between job polls."""
    timeout_min: float = Field(7 * 24 * 60, gt=0)
    """local only: wall-clock limit of one run (submitit's local default of 2 minutes is too short)."""


class JobState(str, Enum):
    RUNNING = "running"  # queued or running
    DONE = "done"  # returned a value
    FAILED = "failed"  # raised (traceback in the job's stderr)
    LOST = "lost"  # ended without a result: killed, node died, OOM, cancelled


@dataclass(frozen=True)
class Poll:
    state: JobState
    value: Any = None
    reason: str | None = None


class SlurmProfile(StrictModel):
    """slurm/profiles/NAME.yaml (docs/architecture.md)."""

    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int = Field(1, ge=1)
    """Processes per node: one per GPU for data-parallel runs (each task trains its rows of every batch)."""
    nodes: int = Field(1, ge=1)
    """Nodes per run (the run's processes = nodes x tasks_per_node)."""
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float = Field(2, gt=0)
    time_min: int = Field(60, ge=1)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    additional_parameters: dict[str, Any] = {}
    setup: list[str] = []
    max_requeues: int = Field(3, ge=0)
    array_parallelism: int = Field(16, ge=1)


def load_profile(path: str | os.PathLike) -> SlurmProfile:
    return load_config(path, SlurmProfile)


class Executor(ABC):
    """Runs zero-argument callables as jobs. Poll-only: never blocks on a job."""

    kind: str
    folder: Path | None

    @abstractmethod
    def submit(self, tasks: Sequence[Callable[[], Any]]) -> list[str]:
        """Start the tasks (as one batch / job array where supported); returns their job ids."""

    @abstractmethod
    def poll(self, job_id: str, folder: str | None = None) -> Poll:
        """The job's state; works for ids from an earlier process where the backend allows
        (``folder``: the submitit folder recorded with the job, default this executor's).

        Raises:
            UntrustedPath: ``folder`` (or the job's result file) lies outside this executor's folder.
        """

    @abstractmethod
    def alive(self, job_id: str, folder: str | None = None) -> bool:
        """True while the job is queued or running (local pid, SLURM state); reads no result.

        Raises:
            UntrustedPath: as :meth:`poll`.
        """

    def has_result(self, job_id: str, folder: str | None = None) -> bool:
        """True once the job has written its result (the file is not read: only a controller loads
        it), so that a reader can tell a job that ended with a result nobody recorded yet (its
        controller was killed) from one that is gone. Default: never (no result files).

        Raises:
            UntrustedPath: as :meth:`poll`.
        """
        return False

    stops_on_interrupt: bool = False
    """Whether :meth:`on_interrupt` stops jobs (local processes) or leaves them running (SLURM)."""

    def on_interrupt(self, jobs: Sequence[tuple[str, str | None]], *, grace_s: float) -> list[str]:
        """The controller was interrupted (Ctrl-C) with these jobs (id, folder) in flight: stop
        them, or leave them to be re-attached. Called once, from the controller's main thread;
        may block up to about ``grace_s`` (what a job gets to save a checkpoint).

        Returns:
            The ids of the jobs it stopped (the next controller submits them again); the others
            keep running, or have ended, and the next controller re-attaches to or polls them.
            Default: none stopped.
        """
        return []


class _Submitit(Executor):
    def __init__(self, executor: Any, kind: str, folder: Path) -> None:
        self._executor = executor
        self.kind = kind
        self.folder = folder
        self._jobs: dict[str, Any] = {}
        self._ended_at: dict[str, float] = {}

    def submit(self, tasks: Sequence[Callable[[], Any]]) -> list[str]:
        with self._executor.batch():
            jobs = [self._executor.submit(task) for task in tasks]
        for job in jobs:
            self._jobs[job.job_id] = job
        return [job.job_id for job in jobs]

    @abstractmethod
    def _reattach(self, job_id: str, folder: Path) -> Any: ...

    @abstractmethod
    def _running(self, job: Any) -> bool: ...

    def _exiting(self, job_id: str, job: Any) -> bool:
        """True while a job that has written its result still holds its resources (default: never)."""
        return False

    def _job(self, job_id: str, folder: str | None) -> Any:
        """This process's job, or one re-attached from the ledger's id and folder once both are
        checked to stay inside this executor's folder (the result pickle is code when loaded)."""
        job = self._jobs.get(job_id)
        if job is None:
            where = f"job {job_id}: folder recorded in the ledger"
            job_folder = require_inside(Path(folder) if folder else self.folder, self.folder, what=where)
            job = self._reattach(job_id, job_folder)
            require_inside(job.paths.result_pickle, self.folder, what=f"job {job_id}: result file")
            self._jobs[job_id] = job
        return job

    def alive(self, job_id: str, folder: str | None = None) -> bool:
        return not self.has_result(job_id, folder) and self._running(self._job(job_id, folder))

    def has_result(self, job_id: str, folder: str | None = None) -> bool:
        return self._job(job_id, folder).paths.result_pickle.exists()

    def poll(self, job_id: str, folder: str | None = None) -> Poll:
        from submitit.core.utils import pickle_load

        job = self._job(job_id, folder)
        if job.paths.result_pickle.exists():
            # read the result file directly: job.result() would wait for the process to exit
            try:
                outcome, value = pickle_load(job.paths.result_pickle)
            except (EOFError, OSError):  # still being written
                return Poll(JobState.RUNNING)
            if self._exiting(job_id, job):
                return Poll(JobState.RUNNING)
            if outcome == "success":
                return Poll(JobState.DONE, value)
            return Poll(JobState.FAILED, reason=f"{_last_error_line(str(value))} (log: {job.paths.stderr})")
        if self._running(job):
            return Poll(JobState.RUNNING)
        ended = self._ended_at.setdefault(job_id, time.time())
        if time.time() - ended < LOST_GRACE_S:
            return Poll(JobState.RUNNING)
        return Poll(
            JobState.LOST,
            reason=f"job {job_id} ended without a result (state {job.state}); see {job.paths.stderr}",
        )


class LocalExecutor(_Submitit):
    stops_on_interrupt = True

    def __init__(self, folder: Path, timeout_min: float, max_parallel: int, *, ctrl_c_to_jobs: bool = False) -> None:
        """``ctrl_c_to_jobs``: the jobs receive the terminal's Ctrl-C too (the shard arrays of
        ``gen`` and ``tokenize-pool``, whose tasks stop themselves on it); by default only the
        controller does, and it stops its jobs (:meth:`on_interrupt`)."""
        import submitit

        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=timeout_min)
        super().__init__(executor, "local", folder)
        self.environment = job_thread_environment(max_parallel)
        self.ctrl_c_to_jobs = ctrl_c_to_jobs
        self._result_seen: dict[str, float] = {}

    def submit(self, tasks: Sequence[Callable[[], Any]]) -> list[str]:
        # submitit's LocalExecutor starts each job with a copy of this process's environment and
        # signal dispositions, and takes no others: the thread variables and an ignored SIGINT (the
        # terminal's Ctrl-C is the controller's; it stops its jobs itself, see on_interrupt)
        with child_process_settings(self.environment, ignore_sigint=not self.ctrl_c_to_jobs):
            return super().submit(tasks)

    def _reattach(self, job_id: str, folder: Path) -> Any:
        from submitit.local.local import LocalJob

        return LocalJob(folder, job_id)

    def _running(self, job: Any) -> bool:
        if job._process is not None:
            return job._process.poll() is None
        # a job from an earlier controller: its pid is the submitit local controller process
        if not pid_alive(int(job.job_id)):
            return False
        try:
            return b"submitit" in Path(f"/proc/{job.job_id}/cmdline").read_bytes()
        except OSError:
            return True

    def _exiting(self, job_id: str, job: Any) -> bool:
        """A job whose result is written still runs until its process exits (a second or two of
        interpreter teardown): it keeps its slot meanwhile, so that no more than ``max_parallel``
        processes ever share the cores. One that hangs longer than LOST_GRACE_S stops counting."""
        seen = self._result_seen.setdefault(job_id, time.time())
        return self._running(job) and time.time() - seen < LOST_GRACE_S

    def on_interrupt(self, jobs: Sequence[tuple[str, str | None]], *, grace_s: float) -> list[str]:
        """Stop the jobs: SIGTERM to each job's submitit process, which hands it to the run (train
        saves a checkpoint at the next step boundary and exits; the signal is repeated until it
        does, since a job still importing has not installed its handler yet); whatever still runs
        after ``grace_s`` is killed (a callable objective has nothing to save: grace 0)."""
        stopping = [(job_id, int(job_id)) for job_id, folder in jobs if self.alive(job_id, folder)]
        pids = [pid for _, pid in stopping]
        deadline = time.time() + grace_s
        while True:
            running = [pid for pid in pids if pid_alive(pid)]
            if not running or time.time() >= deadline:
                break
            for pid in running:
                _signal(pid, signal.SIGTERM)
            time.sleep(STOP_POLL_S)
        for pid in running:  # past the grace: the run and its submitit process
            for child in child_pids(pid):
                _signal(child, signal.SIGKILL)
            _signal(pid, signal.SIGKILL)
        return [job_id for job_id, _ in stopping]  # the others had ended: the next controller polls them


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


class SlurmExecutor(_Submitit):
    def __init__(self, folder: Path, profile: SlurmProfile, max_parallel: int, name: str = "megadocs") -> None:
        import submitit

        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=profile.max_requeues)
        optional = {
            "slurm_partition": profile.partition,
            "slurm_account": profile.account,
            "slurm_qos": profile.qos,
            "slurm_constraint": profile.constraint,
        }
        executor.update_parameters(
            name=name,
            gpus_per_node=profile.gpus_per_node,
            tasks_per_node=profile.tasks_per_node,
            nodes=profile.nodes,
            cpus_per_task=profile.cpus_per_task,
            mem_gb=profile.mem_gb,
            timeout_min=profile.time_min,
            slurm_additional_parameters=dict(profile.additional_parameters),
            slurm_setup=list(profile.setup),
            slurm_array_parallelism=min(profile.array_parallelism, max_parallel),
            **{key: value for key, value in optional.items() if value is not None},
        )
        super().__init__(executor, "slurm", folder)
        self._queue_seen: dict[str, tuple[float, bool]] = {}  # job id -> (when, in the queue then)
        self._settling: dict[str, float] = {}  # failed job id -> when accounting first still called it running

    def _reattach(self, job_id: str, folder: Path) -> Any:
        import submitit

        return submitit.SlurmJob(folder, job_id)

    def poll(self, job_id: str, folder: str | None = None) -> Poll:
        """As :meth:`_Submitit.poll`; a job SLURM ended (``scancel``, out of memory, a node lost)
        that still wrote an exception names SLURM's state first: the exception is a symptom (a
        ``scancel`` SIGTERMs every process of the job, so vLLM's engine died and the shard raised
        ``EngineDeadError``, which was all the line said).

        Accounting is asked afresh for a failed job (submitit's cached state may predate the
        ``scancel``). The job's exception is written while SLURM still tears the job down, so a job
        accounting still calls RUNNING/COMPLETING is reported running until it says how the job
        ended, for at most SETTLE_S."""
        poll = super().poll(job_id, folder)
        if poll.state is not JobState.FAILED:
            return poll
        state = self._job(job_id, folder).get_info(mode="force").get("State") or "UNKNOWN"  # e.g. "CANCELLED by 0"
        word = state.split()[0]
        if word in SLURM_ENDED - {"COMPLETED", "FAILED"}:
            self._settling.pop(job_id, None)
            return Poll(JobState.FAILED, reason=f"SLURM ended it ({state}); the job's last error: {poll.reason}")
        settling_since = self._settling.setdefault(job_id, time.monotonic()) if word in SLURM_SETTLING else None
        if settling_since is not None and time.monotonic() - settling_since < SETTLE_S:
            return Poll(JobState.RUNNING)
        self._settling.pop(job_id, None)
        return poll

    def cancel(self, job_ids: Sequence[str]) -> None:
        """One ``scancel`` for all of them (a pool's array has one task per shard: hundreds)."""
        import subprocess

        if job_ids:
            subprocess.run(["scancel", *job_ids], capture_output=True, timeout=120, check=False)

    def _running(self, job: Any) -> bool:
        if job.done():
            return False
        if job.state == "RUNNING":
            return True
        # submitit reads accounting (sacct), whose view of a queued job can go stale: a queued
        # array task cancelled before it ran never gets a record of its own, so submitit keeps
        # its last state (PENDING) or none (UNKNOWN) for ever. The queue itself decides, asked
        # at most every QUEUE_CHECK_S per job.
        checked_at, queued = self._queue_seen.get(job.job_id, (-math.inf, True))
        if time.time() - checked_at >= QUEUE_CHECK_S:
            queued = in_queue(job.job_id)
            self._queue_seen[job.job_id] = (time.time(), queued)
        return queued


SLURM_ENDED = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                         "BOOT_FAIL", "DEADLINE"})
"""squeue states of a job that will not run again (it may linger in the queue for MinJobAge)."""

SLURM_SETTLING = frozenset({"RUNNING", "COMPLETING"})
"""Accounting states of a job whose processes SLURM is still ending (a ``scancel``'s SIGTERM has
landed, the job wrote its exception, the state is not final yet)."""

SETTLE_S = 60.0
"""How long a failed job's accounting may still say RUNNING/COMPLETING before its failure is
reported as the job's own (accounting that is down must not hold a failure back for ever)."""


def in_queue(job_id: str) -> bool:
    """True while SLURM's queue holds ``job_id`` (an array task ``A_i`` or a job) to run, or while
    the queue cannot be asked (slurmctld unreachable: a job is not lost because we cannot see it)."""
    import subprocess

    try:
        done = subprocess.run(["squeue", "-h", "-r", "-j", job_id.split("_")[0], "-o", "%i %T"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if done.returncode != 0:  # an id the queue no longer knows is gone; any other error: cannot tell
        return "Invalid job id" not in done.stderr
    states = dict(line.split(maxsplit=1) for line in done.stdout.splitlines() if " " in line)
    return job_id in states and states[job_id].split()[0] not in SLURM_ENDED


class InProcessExecutor(Executor):
    """``debug``: each task runs in this process when first polled (breakpoints work)."""

    def __init__(self) -> None:
        self.kind = "debug"
        self.folder = None
        self._tasks: dict[str, Callable[[], Any]] = {}
        self._results: dict[str, Poll] = {}
        self._counter = 0

    def submit(self, tasks: Sequence[Callable[[], Any]]) -> list[str]:
        ids = []
        for task in tasks:
            self._counter += 1
            job_id = f"debug-{os.getpid()}-{self._counter}"
            self._tasks[job_id] = task
            ids.append(job_id)
        return ids

    def alive(self, job_id: str, folder: str | None = None) -> bool:
        """In-process jobs live as long as the controller that ran them (``debug-{pid}-{n}``)."""
        if job_id in self._tasks:
            return True
        pid = job_id.split("-")[1] if job_id.count("-") == 2 else ""
        return job_id not in self._results and pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))

    def poll(self, job_id: str, folder: str | None = None) -> Poll:
        if job_id in self._results:
            return self._results[job_id]
        task = self._tasks.pop(job_id, None)
        if task is None:
            return Poll(JobState.LOST, reason=f"in-process job {job_id} belonged to an earlier controller")
        try:
            result = Poll(JobState.DONE, task())
        except Exception as exc:  # noqa: BLE001 - any exception is this run's failure
            result = Poll(JobState.FAILED, reason=f"{type(exc).__name__}: {exc}")
        self._results[job_id] = result
        return result

    def on_interrupt(self, jobs: Sequence[tuple[str, str | None]], *, grace_s: float) -> list[str]:
        """In-process jobs stopped with the controller (the interrupt hit the running one)."""
        return [job_id for job_id, _ in jobs]


def make_executor(config: Any, folder: Path, name: str = "megadocs", *, create: bool = True,
                  ctrl_c_to_jobs: bool = False) -> Executor:
    """Build the executor of a sweep's ``executor:`` section (:class:`ExecutorConfig`); readers
    (``create=False``) only look at jobs and create no folder. ``ctrl_c_to_jobs``: see
    :class:`LocalExecutor`."""
    if config.kind == "debug":
        return InProcessExecutor()
    profile = check_executor(config)  # a bad profile creates no folder
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    if config.kind == "local":
        return LocalExecutor(folder, config.timeout_min, config.max_parallel, ctrl_c_to_jobs=ctrl_c_to_jobs)
    return SlurmExecutor(folder, profile, config.max_parallel, name)


def check_executor(config: Any) -> SlurmProfile | None:
    """The SLURM profile of an ``executor:`` section (None for local/debug), loaded so that a
    missing or bad one is refused (one UserError line) before a command creates anything."""
    return load_profile(config.profile) if config.kind == "slurm" else None


def _last_error_line(text: str) -> str:
    """The exception line of a job's traceback (its last non-empty line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text.splitlines()[0]


def check_array_executor(kind: str, profile: str | None) -> None:
    """Refuse a job-array executor choice before anything is written (one UserError line)."""
    from megadocs.errors import UserError

    if kind not in ("local", "slurm"):
        raise UserError(f"--executor: expected local or slurm, got {kind!r}")
    if kind == "slurm" and not profile:
        raise UserError("--profile: required with --executor slurm (e.g. slurm/profiles/local.yaml)")


class ArrayProgress:
    """Which task ends of a job array the submitter says (one line each, on stderr).

    A pool's array at the paper's size has hundreds of shard tasks ending over hours; a line per
    task buries the one that matters. So: every failure at once (the user may act on it while the
    rest run); a success only when ``every_s`` seconds passed since the last line or another
    ``1/steps`` of the array ended since (at most ``steps`` + one per ``every_s`` lines for
    successes); the last task's end always, with the count. Pure: ``clock`` is injectable.

    >>> progress = ArrayProgress(256, clock=lambda: 0.0)  # the clock stands still: no time-based lines
    >>> lines = [line for i in range(256) if (line := progress.ended(f"shard {i}", str(i), ok=i != 3))]
    >>> len(lines), lines[0], lines[-1]
    (11, 'shard 3 (job 3) FAILED (named at the end); 4 of 256 task(s) ended', 'shard 255 (job 255) done; 256 of 256 task(s) ended')
    """

    def __init__(self, total: int, *, every_s: float = ARRAY_PROGRESS_S, steps: int = ARRAY_PROGRESS_STEPS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.every_s, self.clock = total, every_s, clock
        self.step = max(1, math.ceil(total / steps))  # tasks per line-worthy tenth
        self.count = 0
        self.said_count, self.said_at = 0, clock()

    def ended(self, label: str, job_id: str, *, ok: bool, cause: str | None = None) -> str | None:
        """The line for this task's end, or None when it is a success not worth a line yet. A
        failure's ``cause`` is said in its line (a full disk, which the final line says without
        naming tasks); without one, the failure is named at the end (with the others)."""
        self.count += 1
        now = self.clock()
        due = (not ok or self.count == self.total or self.count - self.said_count >= self.step
               or now - self.said_at >= self.every_s)
        if not due:
            return None
        self.said_count, self.said_at = self.count, now
        outcome = "done" if ok else f"FAILED ({cause or 'named at the end'})"
        return f"{label} (job {job_id}) {outcome}; {self.count} of {self.total} task(s) ended"


class ArraySubmission(StrictModel):
    """One job array submitted into a folder (an entry of :data:`SUBMISSIONS`)."""

    kind: Literal["local", "slurm"]
    job_ids: list[str]
    """submitit's ids: a local task's is its process id, a SLURM array task's ``ARRAY_INDEX``."""

    def describe(self) -> str:
        return f"{self.kind} task(s) {_first(self.job_ids)}"

    def cancel_command(self) -> str:
        """The command that cancels these tasks: SLURM's ``scancel`` (each array once); a local
        task's Ctrl-C (SIGINT: a shard task stops itself on it, and submitit's task process ignores
        SIGTERM).

        >>> ArraySubmission(kind="slurm", job_ids=["41_0", "41_1", "42"]).cancel_command()
        'scancel 41 42'
        """
        if self.kind == "slurm":
            return "scancel " + " ".join(dict.fromkeys(job_id.split("_")[0] for job_id in self.job_ids))
        return "kill -INT " + " ".join(self.job_ids)


class Liveness(str, Enum):
    """What a folder's record can tell of a recorded process (:meth:`ProcessRun.liveness`)."""

    ALIVE = "alive"
    """Asked here (this host, kernel boot and pid namespace): it runs."""
    ENDED = "ended"
    """Asked here: it is gone, or its pid now names another process."""
    UNCHECKED = "unchecked"
    """Elsewhere (another host, boot or pid namespace: its pid names nothing here) with a heartbeat
    younger than :data:`STALE_S`, or recorded before heartbeats: counted as going."""
    PRESUMED_ENDED = "presumed ended"
    """Elsewhere, its last heartbeat older than :data:`STALE_S`: not counted, and said so. (One that
    only hung that long and then writes is still refused at its first write if its settings were
    replaced meanwhile: ``megadocs.shards.ShardedStep.check_settings``.)"""


class ProcessRun(StrictModel):
    """A run working in the folder in its own process (``megadocs gen ...`` without ``--executor``,
    ``data tokenize-pool``, a submitter until its job array is recorded), recorded while it runs
    (:func:`recorded_process`). Its pid and start time name one process
    (:func:`megadocs.procs.process_start`: a pid reused since is another process) within one host,
    kernel boot and pid namespace; a process anywhere else cannot be asked from here, so it says
    it runs with a heartbeat instead (:meth:`liveness`)."""

    kind: Literal["process"] = "process"
    host: str
    pid: int
    started: int | None
    """Clock ticks since its host's boot; None where /proc did not say."""
    boot: str | None = None
    """Its kernel's boot id (:func:`megadocs.procs.boot_id`): another machine of the same hostname,
    or this one before a reboot. None where unknown or recorded before (megadocs.compat "run-record")."""
    pidns: int | None = None
    """Its pid namespace (:func:`megadocs.procs.pid_namespace`): another container of this
    hostname. None as ``boot``."""
    heartbeat: float | None = None
    """When it last said it runs (Unix time, its host's clock), refreshed every :data:`HEARTBEAT_S`
    while it does. None as ``boot``."""

    @classmethod
    def this(cls) -> ProcessRun:
        pid, place = os.getpid(), PidPlace.current()
        return cls(host=place.host, pid=pid, started=process_start(pid), boot=place.boot, pidns=place.pidns,
                   heartbeat=time.time())

    @property
    def place(self) -> PidPlace:
        """Where its pid names it."""
        return PidPlace(self.host, self.boot, self.pidns)

    def same_process(self, other: ProcessRun) -> bool:
        """Whether both name one process (its heartbeats aside)."""
        return self.model_dump(exclude={"heartbeat"}) == other.model_dump(exclude={"heartbeat"})

    def here(self) -> bool:
        """Whether its pid can be asked here (:meth:`megadocs.procs.PidPlace.askable`)."""
        return self.place.askable()

    def silent_s(self, now: float) -> float | None:
        """Seconds since its last heartbeat (0 for one ahead of this host's clock); None without one."""
        return None if self.heartbeat is None else max(0.0, now - self.heartbeat)

    def liveness(self, now: float) -> Liveness:
        """Asked through /proc here; elsewhere, read off its heartbeat's age (``now``: Unix time).

        >>> entry = ProcessRun(host="node7.example", pid=41, started=9, heartbeat=1000.0)
        >>> entry.liveness(now=1000.0 + 60), entry.liveness(now=1000.0 + STALE_S + 1)
        (<Liveness.UNCHECKED: 'unchecked'>, <Liveness.PRESUMED_ENDED: 'presumed ended'>)
        """
        if self.here():
            return Liveness.ALIVE if process_running(self.pid, self.started) else Liveness.ENDED
        silent = self.silent_s(now)
        return Liveness.PRESUMED_ENDED if silent is not None and silent > STALE_S else Liveness.UNCHECKED

    def where(self) -> str:
        """Where it runs, seen from here (for a line)."""
        return self.place.where()

    def describe(self, now: float | None = None) -> str:
        """
        >>> ProcessRun(host="node7.example", pid=41, started=9, heartbeat=1000.0).describe(now=1042.0)
        'process 41 on host node7.example (its last heartbeat 42 s ago; not checked from here)'
        """
        if self.here():
            return f"process {self.pid}"
        silent = self.silent_s(time.time() if now is None else now)
        heard = "recorded without a heartbeat" if silent is None else f"its last heartbeat {_duration(silent)} ago"
        return f"process {self.pid} {self.where()} ({heard}; not checked from here)"

    def cancel_command(self) -> str:
        return f"kill -INT {self.pid}" if self.here() else f"{self.where()}: kill -INT {self.pid}"


Entry = ArraySubmission | ProcessRun
"""An entry of a folder's record of runs (:data:`SUBMISSIONS`)."""


class _Submissions(StrictModel):
    submissions: list[Entry] = []  # told apart by ``kind``


def _duration(seconds: float) -> str:
    """A duration for a line.

    >>> _duration(42.4), _duration(840), _duration(3 * 3600 + 360)
    ('42 s', '14 min', '3.1 h')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _array_executor(kind: str, folder: Path) -> _Submitit:
    """An executor that only looks at the jobs in ``folder`` (no profile: nothing is submitted)."""
    if kind == "local":
        return LocalExecutor(folder, timeout_min=1, max_parallel=1)  # (the limit of jobs it never submits)
    return SlurmExecutor(folder, SlurmProfile(), 1)


def _read_submissions(folder: Path) -> list[Entry]:
    """``folder``'s record (empty where there is none yet); one written before heartbeats reads
    with ``boot``, ``pidns`` and ``heartbeat`` unknown (megadocs.compat "run-record").

    Raises:
        UserError: the record is not JSON or not a record of runs (a hand edit gone wrong),
            naming the file and what is wrong.
    """
    path = folder / SUBMISSIONS
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not JSON ({exc.msg}, line {exc.lineno}): fix it, or remove it once no run of "
                        "this folder is going") from None
    return parse_config(compat.upgrade(compat.RUN_RECORD, data), _Submissions, source=str(path)).submissions


def _without(record: list[Entry], process: ProcessRun) -> list[Entry]:
    return [entry for entry in record if not (isinstance(entry, ProcessRun) and entry.same_process(process))]


@contextlib.contextmanager
def _editing_record(folder: Path, *, prune: bool = True) -> Iterator[list[Entry]]:
    """``folder``'s record to change in place, under its lock (processes and submitters of one
    folder edit it at once), written back after. ``prune``: entries that ended are dropped first:
    array tasks that wrote their result (a file check each, no question to SLURM), processes of
    this host that are gone (killed without cleaning up after themselves), and, saying so on
    stderr, processes elsewhere whose heartbeat is older than :data:`STALE_S` (presumed ended)."""
    from megadocs.formats import write_json

    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / (SUBMISSIONS + ".lock")):
        kept = _read_submissions(folder)
        if prune:
            kept = _pruned(folder, kept)
        yield kept
        write_json(folder / SUBMISSIONS, _Submissions(submissions=kept).model_dump())


def _pruned(folder: Path, record: list[Entry]) -> list[Entry]:
    """``record`` without what has ended (:func:`_editing_record`)."""
    now, kept = time.time(), []
    for earlier in record:
        if isinstance(earlier, ProcessRun):
            state = earlier.liveness(now)
            if state is Liveness.PRESUMED_ENDED:
                print(f"{folder / SUBMISSIONS}: {earlier.describe(now)}: presumed ended, its heartbeat being over "
                      f"{_duration(STALE_S)} old; its entry is dropped", file=sys.stderr, flush=True)
            if state in (Liveness.ALIVE, Liveness.UNCHECKED):
                kept.append(earlier)
            continue
        looker = _array_executor(earlier.kind, folder)
        ids_left = [job_id for job_id in earlier.job_ids if not looker.has_result(job_id)]
        if ids_left:
            kept.append(ArraySubmission(kind=earlier.kind, job_ids=ids_left))
    return kept


def _record_submission(folder: Path, array: ArraySubmission) -> None:
    """Add this array to ``folder``'s record."""
    with _editing_record(folder) as record:
        record.append(array)


class RecordedProcess:
    """This process's entry in a folder's record while :func:`recorded_process` holds it.

    A daemon thread refreshes its heartbeat every :data:`HEARTBEAT_S`: once a minute, not per row;
    a file lock and a rewrite of the record, whose other entries it leaves as they are (under 1 KB
    per process, about 14 bytes per recorded array task: 1.4 ms with a 1,000-task array recorded,
    docs/architecture.md). A heartbeat that cannot be written (a full disk, a record broken by
    hand) is skipped: the run's own writes say the error, and the entry ages until a check
    elsewhere presumes it ended."""

    def __init__(self, folder: Path, entry: ProcessRun) -> None:
        self.folder, self.entry = folder, entry
        self.handed_over = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="megadocs-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError, UserError), _editing_record(self.folder, prune=False) as record:
                # (put back if a check elsewhere dropped it as presumed ended: this process runs)
                record[:] = [*_without(record, self.entry), self.entry.model_copy(update={"heartbeat": time.time()})]

    def start_beating(self) -> None:
        self._thread.start()

    def stop_beating(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def hand_over(self, array: ArraySubmission) -> None:
        """The job array this process submitted takes its entry's place, in one edit: a re-run
        with other settings sees the one or the other, never neither."""
        self.stop_beating()
        with _editing_record(self.folder) as record:
            record[:] = [*_without(record, self.entry), array]
        self.handed_over = True


@contextlib.contextmanager
def recorded_process(folder: str | Path) -> Iterator[RecordedProcess]:
    """This process recorded in ``folder``'s record while the block runs, its heartbeat refreshed
    (:class:`RecordedProcess`), removed when the block ends (returns, raises, Ctrl-C) unless it
    was handed over to a job array (:meth:`RecordedProcess.hand_over`). A process killed outright
    is dropped by the next edit of the record (on this host: its pid is gone; elsewhere: its
    heartbeat stopped :data:`STALE_S` ago) and not counted as live meanwhile (on this host).
    A file lock and a small JSON rewrite each way, and one a minute while it runs.

    Raises:
        OSError: the record could not be written at the start (a full disk: nothing ran yet). At
            the end it is not raised: the block's own error (often the same full disk) is the one
            to say, and the entry left names a process about to end, which no check counts as
            live once it has (on this host) or once its heartbeat is old (elsewhere).
    """
    folder = Path(folder)
    recorded = RecordedProcess(folder, ProcessRun.this())
    with _editing_record(folder) as record:
        record.append(recorded.entry)
    recorded.start_beating()
    try:
        yield recorded
    finally:
        recorded.stop_beating()
        if not recorded.handed_over:
            with contextlib.suppress(OSError), _editing_record(folder) as record:
                record[:] = _without(record, recorded.entry)


def live_runs(folder: str | Path) -> list[Entry]:
    """What ``folder``'s record holds that may still write into the step's folder, other than this
    process: array tasks still queued or running (asked through the executors' own
    :meth:`Executor.alive`: a local task's process, a SLURM job's state), one entry per kind, and
    other processes (:class:`ProcessRun`: alive on this host; elsewhere, with a heartbeat younger
    than :data:`STALE_S`). Empty when none is. Drops what has ended from the record on the way,
    saying on stderr which entries it presumed ended (:func:`_editing_record`). Costs a file check
    per recorded task and, for SLURM tasks without a result, one accounting query (and a queue
    look-up per queued task); a /proc read per process.

    Raises:
        UntrustedPath: the record names a job whose files lie outside ``folder``.
    """
    folder, me = Path(folder), ProcessRun.this()
    if not (folder / SUBMISSIONS).is_file():
        return []
    live: dict[str, list[str]] = {}
    processes: list[ProcessRun] = []
    with _editing_record(folder) as record:
        for entry in record:
            if isinstance(entry, ProcessRun):
                if not entry.same_process(me):
                    processes.append(entry)
                continue
            looker = _array_executor(entry.kind, folder)
            live.setdefault(entry.kind, []).extend(job_id for job_id in entry.job_ids if looker.alive(job_id))
    return [*(ArraySubmission(kind=kind, job_ids=ids) for kind, ids in live.items() if ids), *processes]


def unchecked_note(runs: Sequence[Entry], folder: str | Path) -> str:
    """The end of a refusal that names processes not checked from here: when one counts as ended."""
    elsewhere = [run for run in runs if isinstance(run, ProcessRun) and not run.here()]
    if any(run.heartbeat is None for run in elsewhere):
        return f"; a run recorded without a heartbeat that has ended: remove its entry from {Path(folder) / SUBMISSIONS}"
    if elsewhere:
        return f"; one not checked from here counts as ended once its heartbeat is {_duration(STALE_S)} old"
    return ""


def _first(ids: list[str], shown: int = 8) -> str:
    """Ids for one line: a pool's array has hundreds of tasks.

    >>> _first([str(i) for i in range(10)], shown=3)
    '0, 1, 2 and 7 more'
    """
    return ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def run_job_array(tasks: Sequence[Callable[[], Any]], labels: Sequence[str], *, kind: str,
                  profile: str | None, folder: Path, timeout_min: float = 7 * 24 * 60,
                  name: str = "megadocs", lost_reason: Callable[[Any], Exception | None] | None = None,
                  submitter: RecordedProcess | None = None) -> list[Any]:
    """Submit ``tasks`` as one job array (``local`` or ``slurm``), wait for all, return their values.

    For the steps that run on a pool's shards (generation, the tokenize step): each task is
    idempotent and resumable on its own, so re-running after a failure redoes only what is missing.

    Ctrl-C: local tasks get it too and stop themselves; SLURM tasks still queued or running are
    cancelled (one ``scancel``), so that the re-run, which resumes every shard from what is on disk,
    never has two jobs writing the same shard.

    A task that returns a :class:`megadocs.errors.DiskFull` (its full disk, in one line) failed.
    ``lost_reason(task)``, for a task that ended without a result, may name why: a ``DiskFull``
    counts as the task's full disk (``megadocs.shards.ShardTask.lost_to_full_disk``).

    ``submitter``: this process's entry in ``folder``'s record (from the manifest's check until
    now), which the array's entry replaces in one edit once it is submitted.

    Raises:
        UserError: a bad executor/profile.
        WorkFailed: tasks that failed, were cancelled or killed (named by ``labels``, with logs).
        DiskFull: every task that failed met a full disk (the first one's line).
        KeyboardInterrupt: Ctrl-C, saying which SLURM tasks it cancelled.
    """
    import sys

    from megadocs.errors import DiskFull, WorkFailed

    check_array_executor(kind, profile)
    if not tasks:
        return []
    config = ExecutorConfig(kind=kind, profile=profile, max_parallel=max(1, len(tasks)), timeout_min=timeout_min)
    jobs = make_executor(config, folder, name, ctrl_c_to_jobs=True)  # each shard task stops itself on Ctrl-C
    ids = jobs.submit(tasks)
    pending = dict(zip(ids, labels))
    task_of = dict(zip(ids, tasks))
    progress = ArrayProgress(len(ids))
    values: dict[str, Any] = {}
    failures, full = [], []  # full: the DiskFull values tasks returned (megadocs.shards.ShardTask)
    try:  # from here a Ctrl-C cancels what was submitted (below)
        array = ArraySubmission(kind=kind, job_ids=list(ids))  # a re-run with other settings refuses while they run
        if submitter is not None:
            submitter.hand_over(array)
        else:
            _record_submission(folder, array)
        print(f"submitted {len(ids)} shard task(s) to {kind}: {', '.join(ids)} (logs: {folder})", file=sys.stderr)
        while pending:
            time.sleep(ARRAY_POLL_S[kind])
            for job_id, label in list(pending.items()):
                poll = jobs.poll(job_id)
                if poll.state == JobState.RUNNING:
                    continue
                del pending[job_id]
                if poll.state == JobState.LOST and lost_reason is not None:
                    reason = lost_reason(task_of[job_id])
                    if isinstance(reason, DiskFull):  # no room for its result: its value, as if returned
                        poll = Poll(JobState.DONE, reason)
                cause = None
                if poll.state == JobState.DONE and isinstance(poll.value, DiskFull):
                    full.append(poll.value)
                    failures.append(f"{label} (job {job_id}): {poll.value}")
                    cause = poll.value.cause  # the end's line is the full disk's, naming no task
                elif poll.state == JobState.DONE:
                    values[job_id] = poll.value
                else:
                    failures.append(f"{label} (job {job_id}): {poll.reason}")
                # the tasks' own progress is in their logs, and a pool's array runs for hours
                # with nothing else on the submitter's terminal: failures at once, successes throttled
                line = progress.ended(label, job_id, ok=job_id in values, cause=cause)
                if line:
                    print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        if jobs.stops_on_interrupt or not pending:  # local tasks had the Ctrl-C too
            raise
        assert isinstance(jobs, SlurmExecutor), jobs  # the one executor whose jobs outlive the submitter
        jobs.cancel(list(pending))
        raise KeyboardInterrupt(f"cancelled {len(pending)} {kind} task(s) ({', '.join(pending)}); finished "
                                "shards are kept: re-run the same command to resume") from None
    if failures and len(full) == len(failures):  # a full disk, as in-process: its one line, exit 4
        raise full[0]
    if failures:
        raise WorkFailed(f"{len(failures)} task(s) failed; re-run to resume them: " + "; ".join(failures))
    return [values[job_id] for job_id in ids]
