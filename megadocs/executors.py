"""submitit behind one small interface: submit callables, poll jobs by id (also jobs an earlier
controller submitted), nothing else.

- ``local``: submitit's LocalExecutor (one process per run on this machine). The controller caps
  concurrency (on a machine with GPUs, :func:`local_gpus`, to one job per GPU: :meth:`Executor.slots`);
  each job gets cores / ``max_parallel`` threads (:func:`megadocs.procs.job_thread_environment`), a
  GPU of its own where there are GPUs (:class:`LocalExecutor`), and ignores the terminal's Ctrl-C,
  which only the controller sees: it then stops its jobs (:meth:`Executor.on_interrupt`: SIGTERM, a
  train run saves a checkpoint and exits). Jobs outlive a controller that is killed (SIGKILL,
  SIGTERM, a crash) and are re-attached by pid + submitit folder.
  The shard arrays of ``gen`` and ``tokenize-pool`` (:func:`megadocs.job_arrays.run_job_array`)
  leave Ctrl-C to their tasks, which stop themselves on it.
- ``debug``: in-process, run when first polled (tests, breakpoints); nothing survives a restart.
- ``slurm``: submitit's AutoExecutor from a profile file (docs/architecture.md "SLURM profile");
  a batch is one job array; timeouts/preemptions requeue the Checkpointable run
  (``max_requeues`` times) and the run resumes from its run directory. Jobs keep running when the
  controller stops, Ctrl-C included, and are re-attached by the next one. A job of several tasks
  (one data-parallel run) runs srun with ``--kill-on-bad-exit=1``: a rank that raises ends the job
  at once (the others get SIGTERM, then SIGKILL after SLURM's KillWait), where they would wait for
  it in their next collective (NCCL: 10 minutes, a reading; on the local cluster a rank sleeping
  for an hour ended after KillWait), and the job reads FAILED with that rank's error line
  (``rank 1 of 2: ...``, from its own result file) instead of rank 0's symptom or no result.

Trust: a job id and folder given back to ``poll``/``alive`` come from the ledger, which others may
write. A result pickle is read only from inside this executor's own folder (resolved, symlinks
followed); anything else raises :class:`megadocs.trust.UntrustedPath` before a byte is read.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field

from megadocs.config import StrictModel, load_config
from megadocs.formats import write_json
from megadocs.procs import (
    PidPlace,
    child_pids,
    child_process_settings,
    job_thread_environment,
    pid_alive,
    process_running,
    process_start,
)
from megadocs.trust import require_inside

__all__ = ["ExecutorKind", "ArrayKind", "ARRAY_KINDS", "DEFAULT_TIMEOUT_MIN", "MULTI_TASK_SRUN_ARGS", "ExecutorConfig", "JobState", "Poll", "Executor", "SlurmProfile", "LocalExecutor", "SlurmExecutor",
           "InProcessExecutor", "make_executor", "load_profile", "check_executor", "in_queue", "local_gpus", "NoFreeGpu",
           "GPU_HOLDERS"]

ExecutorKind = Literal["local", "debug", "slurm"]
"""local: processes on this machine; debug: in-process (tests, breakpoints); slurm: a cluster."""
ArrayKind = Literal["local", "slurm"]
"""The executors that run a job array's tasks in processes of their own (``--executor`` of ``gen``
and ``tokenize-pool``; :mod:`megadocs.job_arrays`)."""
ARRAY_KINDS: tuple[ArrayKind, ...] = get_args(ArrayKind)
DEFAULT_TIMEOUT_MIN = 7 * 24 * 60
"""A local job's wall-clock limit (submitit's local default of 2 minutes is too short)."""
LOST_GRACE_S = 10.0
"""A job that ended without a result file gets this long for the file to appear (slow NFS); a local
job whose result is written gets this long to exit before it stops counting as running."""
STOP_POLL_S = 0.2
"""Seconds between checks while local jobs stop (:meth:`LocalExecutor.on_interrupt`)."""
QUEUE_CHECK_S = 30.0
"""How often a job that accounting shows queued (or does not know) is looked up in SLURM's queue."""
GPU_HOLDERS = "gpus"
"""A local executor's folder of the GPUs its jobs hold: ``{job id}.json`` per job started on a GPU
(the GPU, the job process's start time), written at its submission and removed once the process is
gone, so that a controller started later (the jobs outlive the one that submitted them) gives no
busy GPU to a new job (:class:`LocalExecutor`)."""


def local_gpus(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The GPUs that local jobs may use, each as ``CUDA_VISIBLE_DEVICES`` names it: the user's
    ``CUDA_VISIBLE_DEVICES`` when set (their choice wins; read as CUDA reads it, up to the first
    empty or negative entry: ``""`` and ``-1`` are none), else this machine's, ``0`` to ``n-1``, as
    NVML counts them (:func:`_nvml_gpu_count`: no torch, no CUDA context in the controller). None
    without a GPU or an NVIDIA driver: then nothing about local jobs changes.

    >>> local_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}), local_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"})
    (('2', '3'), ('1',))
    >>> local_gpus({"CUDA_VISIBLE_DEVICES": ""}), local_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8a0f,GPU-8a0f"})
    ((), ('GPU-8a0f',))
    """
    chosen = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if chosen is None:
        return tuple(str(index) for index in range(_nvml_gpu_count()))
    gpus: list[str] = []
    for entry in (part.strip() for part in chosen.split(",")):
        if not entry or entry.startswith("-"):
            break
        if entry not in gpus:
            gpus.append(entry)
    return tuple(gpus)


def _nvml_gpu_count() -> int:
    """This machine's NVIDIA GPUs as NVML counts them, 0 where it cannot (no driver, no library).
    What ``torch.cuda.device_count()`` asks before CUDA is initialised, without torch (a local
    executor's controller imports none) and without a CUDA context (none is made in the controller,
    none held while its jobs run): a library load and two calls, no process started."""
    import ctypes

    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return 0
    except (OSError, AttributeError):
        return 0
    try:
        count = ctypes.c_uint(0)
        return count.value if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 else 0
    except AttributeError:
        return 0
    finally:
        nvml.nvmlShutdown()


class NoFreeGpu(OSError):
    """Every GPU of a local executor is held by a running job (a submission the system cannot take
    now: the controller tries again at its next poll)."""


class ExecutorConfig(StrictModel):
    """A sweep's ``executor:`` section (:func:`make_executor` builds it)."""

    kind: ExecutorKind = "local"
    """local: processes on this machine; debug: in-process (tests, breakpoints); slurm: a cluster."""
    max_parallel: int = Field(2, ge=1)
    """Most runs in flight at once (for slurm also the job array's parallelism cap)."""
    profile: str | None = None
    """slurm only: a profile YAML (slurm/profiles/NAME.yaml) with partition, GPUs, time, ..."""
    max_retries: int = Field(2, ge=0)
    """Infrastructure failures (job lost, node died, OOM, exception) retried this many times."""
    poll_s: float = Field(1.0, gt=0)
    """Seconds between job polls."""
    timeout_min: float = Field(DEFAULT_TIMEOUT_MIN, gt=0)
    """local only: wall-clock limit of one run (submitit's local default of 2 minutes is too short)."""


class JobState(str, Enum):
    """A job as :meth:`Executor.poll` sees it."""

    RUNNING = "running"  # queued or running
    DONE = "done"  # returned a value
    FAILED = "failed"  # raised (traceback in the job's stderr)
    LOST = "lost"  # ended without a result: killed, node died, OOM, cancelled


@dataclass(frozen=True)
class Poll:
    """A poll's answer: the state, the job's return value (DONE), or why it failed or was lost
    (FAILED: also what a task of several returned while the job failed, :meth:`_Submitit._failed_tasks`)."""

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

    @property
    def tasks(self) -> int:
        """Processes per job: nodes x tasks_per_node (one data-parallel run; a shard task is one)."""
        return self.nodes * self.tasks_per_node


def load_profile(path: str | os.PathLike) -> SlurmProfile:
    return load_config(path, SlurmProfile)


class Executor(ABC):
    """Runs zero-argument callables as jobs. Poll-only: never blocks on a job."""

    kind: str
    folder: Path | None
    place: PidPlace | None = None
    """Where this executor's job ids are pids (local and in-process jobs: this process's place),
    recorded with each job so that a reader elsewhere does not ask its own /proc about them
    (:meth:`megadocs.procs.PidPlace.askable`); None: asked anywhere (SLURM's queue)."""

    @abstractmethod
    def submit(self, tasks: Sequence[Callable[[], Any]]) -> list[str]:
        """Start the tasks (as one batch / job array where supported); returns their job ids.

        Raises:
            OSError: the system took none now (a full disk; :class:`NoFreeGpu`): submit them again later.
        """

    gpus: tuple[str, ...] = ()
    """The GPUs this executor gives its jobs one each (:class:`LocalExecutor`); none: it gives none
    (SLURM's jobs get theirs from their profile)."""

    def slots(self, asked: int) -> int:
        """How many of its jobs may run at once where ``asked`` were wanted (``executor.max_parallel``,
        a job array's size): the one rule for it. ``asked``, unless it gives GPUs (:attr:`gpus`):
        then at most one job per GPU."""
        return min(asked, len(self.gpus)) if self.gpus else asked

    def describe_gpus(self) -> str:
        """Its GPUs for a line: ``2 GPU(s) (0, 1; CUDA_VISIBLE_DEVICES chooses them)``."""
        return f"{len(self.gpus)} GPU(s) ({', '.join(self.gpus)}; CUDA_VISIBLE_DEVICES chooses them)"

    @abstractmethod
    def poll(self, job_id: str, folder: str | None = None) -> Poll:
        """The job's state; works for ids from an earlier process where the backend allows
        (``folder``: the submitit folder recorded with the job, default this executor's).

        Raises:
            UntrustedPath: ``folder`` (or the job's result file) lies outside this executor's folder.
        """

    @abstractmethod
    def alive(self, job_id: str, folder: str | None = None) -> bool:
        """True while the job is queued or running (local pid, SLURM state); reads no result. A
        local job is asked only where its recorded :attr:`place` is askable (its pid names
        another process, or none, anywhere else).

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

    def cancel(self, jobs: Sequence[tuple[str, str | None]]) -> None:
        """End these jobs (id, folder) now, without waiting: their results are no longer wanted.
        Default: nothing (in-process jobs end with their call)."""
        return None


class _Submitit(Executor):
    """An executor through submitit: jobs by id, this process's own or re-attached from an earlier
    one's id and folder (:meth:`_job`); a job has ended once its result file is there or its
    backend says it no longer runs. Subclasses say how a job is re-attached (:meth:`_reattach`)
    and whether it still runs (:meth:`_running`)."""

    tasks: int = 1
    """Processes per job, each writing a result file of its own (SLURM: the profile's nodes x
    tasks_per_node, one data-parallel run; local: one)."""

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
        job = self._job(job_id, folder)
        if job.paths.result_pickle.exists():
            # read the result file directly: job.result() would wait for the process to exit
            first = _read_result(job.paths.result_pickle)
            if first is None:  # still being written
                return Poll(JobState.RUNNING)
            if self._exiting(job_id, job):
                return Poll(JobState.RUNNING)
            _, outcome, value = first
            if outcome == "success":
                return Poll(JobState.DONE, value)
            own = Poll(JobState.FAILED, reason=f"{_last_error_line(str(value))} (log: {job.paths.stderr})")
            return self._failed_tasks(job, first) or own
        if self._running(job):
            return Poll(JobState.RUNNING)
        ended = self._ended_at.setdefault(job_id, time.time())
        if time.time() - ended < LOST_GRACE_S:
            return Poll(JobState.RUNNING)
        failed = self._failed_tasks(job)
        if failed is not None:  # task 0 was killed when another rank failed (srun --kill-on-bad-exit)
            return failed
        return Poll(
            JobState.LOST,
            reason=f"job {job_id} ended without a result (state {job.state}); see {job.paths.stderr}",
        )

    def _failed_tasks(self, job: Any, first: tuple[int, str, Any] | None = None) -> Poll | None:
        """Why a job of several tasks failed, once its task 0 ended without success (FAILED), or
        None for a job of one task, or when no task wrote an error or returned. ``first``: task 0's
        result as :meth:`poll` read it (:func:`_read_result`), not read again; None: read here.

        ``reason``: the error of the rank whose error file was written first, ``rank 1 of 8: <its
        error line> (log: <its stderr>)``. The first is the cause; the others' are its symptoms (a
        collective whose peer died), written later, or they were killed without a result. Where the
        file system's clock cannot order them (two errors written in the same second on a file
        system with 1-second times, such as Lustre), the line names the other rank too.
        ``value``: what the first rank that returned wrote (None: none did), such as a rank's
        refusal of the run (`search.objective.RunTask`: it returns it, then exits non-zero to end
        the others). Read only from inside this executor's folder."""
        if self.tasks == 1:
            return None
        from submitit.core.utils import JobPaths

        errors, returned = [], []
        for task in range(self.tasks):
            paths = JobPaths(job.paths.folder, job.job_id, task_id=task)
            result = require_inside(paths.result_pickle, self.folder, what=f"job {job.job_id}: result file of task {task}")
            read = first if task == 0 and first is not None else _read_result(result)
            if read is None:  # none (killed), or still being written
                continue
            written, outcome, value = read
            if outcome == "success":
                returned.append((written, task, value, paths.stderr))
            else:
                errors.append((written, task, _last_error_line(str(value)), paths.stderr))
        returned.sort(key=lambda found: found[:2])
        value = returned[0][2] if returned else None
        if not errors:
            if not returned:
                return None
            _, task, _, stderr = returned[0]
            return Poll(JobState.FAILED, value, f"rank {task} of {self.tasks} returned, the job failed (log: {stderr})")
        errors.sort()
        (written, task, line, stderr), *later = errors
        first = f"rank {task} of {self.tasks}: {line} (log: {stderr})"
        tied = [(other, other_line) for when, other, other_line, _ in later if when == written]
        if tied:
            other, other_line = tied[0]
            first = f"{first}; rank {other} wrote its error at the same time, which came first is unknown: {other_line}"
        return Poll(JobState.FAILED, value, first)


class LocalExecutor(_Submitit):
    """Processes on this machine. On a machine with GPUs (:func:`local_gpus`) each job is started
    with ``CUDA_VISIBLE_DEVICES`` naming one GPU that no other running job of this executor holds
    (its folder's :data:`GPU_HOLDERS`, also those a killed controller's jobs still hold), so at most
    one job per GPU runs (:meth:`slots`); without GPUs a job is started with
    ``CUDA_VISIBLE_DEVICES=""``, as submitit's local executor starts every job."""

    stops_on_interrupt = True

    def __init__(self, folder: Path, timeout_min: float, max_parallel: int, *, ctrl_c_to_jobs: bool = False,
                 gpu_jobs: bool = True) -> None:
        """``ctrl_c_to_jobs``: the jobs receive the terminal's Ctrl-C too (the shard arrays of
        ``gen`` and ``tokenize-pool``, whose tasks stop themselves on it); by default only the
        controller does, and it stops its jobs (:meth:`on_interrupt`). ``gpu_jobs=False``: jobs
        that use no GPU (``tokenize-pool``'s shard tasks): given none, and as many run at once on
        a machine with GPUs as on one without."""
        import submitit

        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=timeout_min)
        super().__init__(executor, "local", folder)
        self.environment = job_thread_environment(max_parallel)
        self.place = PidPlace.current()
        self.ctrl_c_to_jobs = ctrl_c_to_jobs
        self.gpu_jobs = gpu_jobs
        self._result_seen: dict[str, float] = {}

    @functools.cached_property
    def gpus(self) -> tuple[str, ...]:  # asked once, when first needed (a reader of jobs never asks)
        return local_gpus() if self.gpu_jobs else ()

    def submit(self, tasks: Sequence[Callable[[], Any]]) -> list[str]:
        """As :meth:`Executor.submit`, each job on a free GPU of its own where there are GPUs.

        Raises:
            NoFreeGpu: fewer GPUs are free than ``tasks`` (none is submitted).
        """
        # submitit's LocalExecutor starts each job with a copy of this process's environment and
        # signal dispositions, and takes no others: the thread variables and an ignored SIGINT (the
        # terminal's Ctrl-C is the controller's; it stops its jobs itself, see on_interrupt)
        with child_process_settings(self.environment, ignore_sigint=not self.ctrl_c_to_jobs):
            if not self.gpus:
                return super().submit(tasks)
            return [self._submit_on(gpu, task) for gpu, task in zip(self._free_gpus(len(tasks)), tasks)]

    def _free_gpus(self, wanted: int) -> list[str]:
        """``wanted`` GPUs that no running job of this folder holds (:data:`GPU_HOLDERS`), in order."""
        held = self._held_gpus()
        free = [gpu for gpu in self.gpus if gpu not in held]
        if len(free) < wanted:
            holders = ", ".join(f"{gpu} by job {held[gpu]}" for gpu in self.gpus if gpu in held)
            raise NoFreeGpu(f"{wanted} local job(s) but {len(free)} of {self.describe_gpus()} free: held {holders}")
        return free[:wanted]

    def _held_gpus(self) -> dict[str, str]:
        """GPU -> the id of the running job that holds it, from :data:`GPU_HOLDERS` (a job's process,
        by pid and start time: a pid reused since is not it); the files of jobs gone are removed."""
        held: dict[str, str] = {}
        for path in (self.folder / GPU_HOLDERS).glob("*.json"):
            try:
                holder = json.loads(path.read_text())
                running = process_running(int(path.stem), holder["start"])
            except (OSError, ValueError, KeyError, TypeError):  # a file being written, or not one of ours
                continue
            if running:
                held[str(holder["gpu"])] = path.stem
            else:
                path.unlink(missing_ok=True)
        return held

    def _submit_on(self, gpu: str, task: Callable[[], Any]) -> str:
        """Start ``task`` as a job that sees only ``gpu``, and record that it holds it."""
        # submitit sets each job's CUDA_VISIBLE_DEVICES itself (over this process's) from these two;
        # set here as they are read, since update_parameters takes GPU indices only and the user's
        # CUDA_VISIBLE_DEVICES may name GPUs by UUID (GPU-..., MIG-...)
        self._executor.parameters.update(gpus_per_node=1, visible_gpus=(gpu,))
        job = self._executor.submit(task)
        self._jobs[job.job_id] = job
        holders = self.folder / GPU_HOLDERS
        holders.mkdir(exist_ok=True)
        write_json(holders / f"{job.job_id}.json", {"gpu": gpu, "start": process_start(int(job.job_id))})
        return job.job_id

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

    def cancel(self, jobs: Sequence[tuple[str, str | None]]) -> None:
        """Kill them (and their runs) at once: what a run saved before stays in its folder."""
        self.on_interrupt(jobs, grace_s=0.0)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


class SlurmExecutor(_Submitit):
    def __init__(self, folder: Path, profile: SlurmProfile, max_parallel: int, name: str = "megadocs") -> None:
        import submitit

        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=profile.max_requeues)
        tasks = profile.tasks
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
            slurm_srun_args=list(MULTI_TASK_SRUN_ARGS) if tasks > 1 else [],  # one rank's error ends the run
            **{key: value for key, value in optional.items() if value is not None},
        )
        super().__init__(executor, "slurm", folder)
        self.tasks = tasks
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
            return replace(poll, reason=f"SLURM ended it ({state}); the job's last error: {poll.reason}")
        settling_since = self._settling.setdefault(job_id, time.monotonic()) if word in SLURM_SETTLING else None
        if settling_since is not None and time.monotonic() - settling_since < SETTLE_S:
            return Poll(JobState.RUNNING)
        self._settling.pop(job_id, None)
        return poll

    def cancel(self, jobs: Sequence[tuple[str, str | None]]) -> None:
        """One ``scancel`` for all of them (a pool's array has one task per shard: hundreds); a
        train run gets SLURM's SIGTERM and saves a checkpoint within KillWait."""
        import subprocess

        if jobs:
            subprocess.run(["scancel", *(job_id for job_id, _ in jobs)], capture_output=True, timeout=120, check=False)

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


MULTI_TASK_SRUN_ARGS = ("--kill-on-bad-exit=1",)
"""srun's options for a job of several tasks (one data-parallel run): when one rank exits non-zero
(it raised), srun ends the step's other tasks at once instead of waiting for them, which wait for
the dead rank in their next collective (NCCL's timeout: 10 minutes). Jobs of one task get none:
their step ends with their only task anyway."""

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
        self.place = PidPlace.current()
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


def make_executor(config: ExecutorConfig, folder: Path, name: str = "megadocs", *, create: bool = True,
                  ctrl_c_to_jobs: bool = False, gpu_jobs: bool = True) -> Executor:
    """Build the executor of a sweep's ``executor:`` section (:class:`ExecutorConfig`); readers
    (``create=False``) only look at jobs and create no folder. ``ctrl_c_to_jobs``, ``gpu_jobs``:
    see :class:`LocalExecutor`."""
    if config.kind == "debug":
        return InProcessExecutor()
    profile = check_executor(config)  # a bad profile creates no folder
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    if config.kind == "local":
        return LocalExecutor(folder, config.timeout_min, config.max_parallel, ctrl_c_to_jobs=ctrl_c_to_jobs,
                             gpu_jobs=gpu_jobs)
    return SlurmExecutor(folder, profile, config.max_parallel, name)


def check_executor(config: ExecutorConfig) -> SlurmProfile | None:
    """The SLURM profile of an ``executor:`` section (None for local/debug), loaded so that a
    missing or bad one is refused (one UserError line) before a command creates anything."""
    return load_profile(config.profile) if config.kind == "slurm" else None


def _read_result(path: Path) -> tuple[int, str, Any] | None:
    """A task's result file: when it was written (ns), submitit's outcome (``success`` or an error)
    and value; None while there is none, or it is still being written."""
    from submitit.core.utils import pickle_load

    try:
        written = path.stat().st_mtime_ns
        outcome, value = pickle_load(path)
    except (EOFError, OSError):
        return None
    return written, outcome, value


def _last_error_line(text: str) -> str:
    r"""The exception line of a job's traceback (its last non-empty line).

    >>> _last_error_line("Traceback (most recent call last):\n  x()\nValueError: bad\n\n"), _last_error_line("")
    ('ValueError: bad', '')
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
