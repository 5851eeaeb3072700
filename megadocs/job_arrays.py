"""A step's shard tasks as one job array (``--executor local|slurm`` of ``gen`` and
``tokenize-pool``): submit through :mod:`megadocs.executors`, record the array in the folder's
record of runs (:mod:`megadocs.run_record`), wait for every task while saying their ends in a few
lines (:class:`ArrayProgress`), and on Ctrl-C leave local tasks to stop themselves and cancel SLURM's.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from megadocs.errors import DiskFull, UserError, WorkFailed
from megadocs.executors import (
    ARRAY_KINDS,
    DEFAULT_TIMEOUT_MIN,
    ArrayKind,
    Executor,
    ExecutorConfig,
    JobState,
    NoFreeGpu,
    Poll,
    SlurmExecutor,
    load_profile,
    make_executor,
)
from megadocs.run_record import ArraySubmission, ArrayTask, RecordedProcess, recorded_process

__all__ = ["check_array_executor", "run_job_array", "ArrayProgress", "ARRAY_POLL_S", "ARRAY_PROGRESS_S",
           "ARRAY_PROGRESS_STEPS"]

ARRAY_POLL_S: dict[ArrayKind, float] = {"local": 1.0, "slurm": 10.0}
"""Seconds between polls of a job array's tasks (:func:`run_job_array`)."""
ARRAY_PROGRESS_S = 60.0
"""At most one line per this many seconds for a job array's successes (:class:`ArrayProgress`)."""
ARRAY_PROGRESS_STEPS = 10
"""...and one each time another tenth of the array has ended, whichever comes first."""


def check_array_executor(kind: str, profile: str | None) -> None:
    """Refuse a job-array executor choice before anything is written (one UserError line): an
    unknown kind, SLURM without a profile or with one that does not load, or a profile of several
    tasks per job. A shard task is one process (one engine, the one writer of its shard's files):
    SLURM runs a job's task on each of its ``nodes x tasks_per_node`` processes, so a data-parallel
    training profile would run every shard that many times at once."""
    if kind not in ARRAY_KINDS:
        raise UserError(f"--executor: expected {' or '.join(ARRAY_KINDS)}, got {kind!r}")
    if kind == "slurm" and not profile:
        raise UserError("--profile: required with --executor slurm (e.g. slurm/profiles/local.yaml)")
    if kind == "slurm":
        loaded = load_profile(profile)
        if loaded.tasks > 1:
            raise UserError(f"--profile {profile}: a shard task is one process; this profile runs {loaded.tasks} "
                            f"per job (tasks_per_node {loaded.tasks_per_node} x nodes {loaded.nodes}); use a "
                            "profile with tasks_per_node: 1 and nodes: 1 (the array runs the shards in parallel; a "
                            "gen shard's engine uses one GPU, gpus_per_node: 1, a tokenize-pool shard none)")


def run_job_array(tasks: Sequence[Callable[[], Any]], labels: Sequence[str], *, kind: ArrayKind,
                  profile: str | None, folder: Path, timeout_min: float = DEFAULT_TIMEOUT_MIN,
                  name: str = "megadocs", lost_reason: Callable[[Any], Exception | None] | None = None,
                  submitter: RecordedProcess | None = None, gpu_tasks: bool = False) -> list[Any]:
    """Submit ``tasks`` as one job array (``local`` or ``slurm``), wait for all, return their values.

    For the steps that run on a pool's shards (generation, the tokenize step): each task is
    idempotent and resumable on its own, so re-running after a failure redoes only what is missing.

    ``gpu_tasks``: each task uses a GPU (gen's engine). A local array on a machine with GPUs
    (:func:`megadocs.executors.local_gpus`) then runs one task per GPU, each on its own
    (:meth:`megadocs.executors.Executor.slots`), starting the next as one ends, and says so in one
    line; otherwise (SLURM: a task's GPU is its profile's; no GPUs; tasks without) all at once.

    Ctrl-C: local tasks get it too and stop themselves (those not started yet are not started);
    SLURM tasks still queued or running are cancelled (one ``scancel``), so that the re-run, which
    resumes every shard from what is on disk, never has two jobs writing the same shard.

    A task that returns a :class:`megadocs.errors.DiskFull` (its full disk, in one line) failed.
    ``lost_reason(task)``, for a task that ended without a result, may name why: a ``DiskFull``
    counts as the task's full disk (``megadocs.shards.ShardTask.lost_to_full_disk``).

    The array is recorded in ``folder``'s record of runs (:mod:`megadocs.run_record`), so that a
    re-run with other settings refuses while its tasks run: its entry replaces ``submitter``, this
    process's entry (from the manifest's check until now), in one edit, once its last task is
    submitted (the tasks started before are recorded beside it as they start); without one, this
    process is recorded just before it submits. A local array's heartbeat is refreshed by its
    running tasks (:class:`megadocs.run_record.ArrayTask`), so that it counts as going elsewhere
    also once this process is killed outright (its tasks run on; those not started yet are not).

    Raises:
        UserError: a bad executor/profile.
        WorkFailed: tasks that failed, were cancelled or killed (named by ``labels``, with logs).
        DiskFull: every task that failed met a full disk (the first one's line).
        KeyboardInterrupt: Ctrl-C, saying which SLURM tasks it cancelled.
    """
    check_array_executor(kind, profile)
    if not tasks:
        return []
    config = ExecutorConfig(kind=kind, profile=profile, max_parallel=max(1, len(tasks)), timeout_min=timeout_min)
    jobs = make_executor(config, folder, name, ctrl_c_to_jobs=True, gpu_jobs=gpu_tasks)  # tasks stop themselves on Ctrl-C
    with contextlib.ExitStack() as recording:
        if submitter is None:
            submitter = recording.enter_context(recorded_process(folder))
        waves = _Waves(jobs, [ArrayTask(task, folder) for task in tasks] if kind == "local" else list(tasks),
                       submitter, folder)
        waves.submit_more()
        return _wait(jobs, waves, labels, list(tasks), lost_reason)


class _Waves:
    """The submission of a job array's tasks, at most :meth:`Executor.slots` running at once (one
    per GPU for a local array of GPU tasks on a machine with GPUs; else all at once), each
    submission recorded in ``folder``'s record of runs (:func:`run_job_array`)."""

    def __init__(self, jobs: Executor, tasks: list[Callable[[], Any]], submitter: RecordedProcess,
                 folder: Path) -> None:
        self.jobs, self.tasks, self.submitter, self.folder = jobs, tasks, submitter, folder
        self.at_once = jobs.slots(len(tasks))
        self.ids: list[str] = []  # of the tasks submitted, in order
        self.running: dict[str, None] = {}  # the ids running, in the order submitted (as the Ctrl-C line names them)
        if self.at_once < len(tasks):
            print(f"{len(tasks)} shard task(s) on {jobs.describe_gpus()}: {self.at_once} at a time, each on its own "
                  "GPU, the next as one ends", file=sys.stderr, flush=True)

    def submit_more(self) -> None:
        """Submit the next tasks while fewer than ``at_once`` run (a GPU still held by a task that
        is ending: at the next poll)."""
        while len(self.running) < self.at_once and len(self.ids) < len(self.tasks):
            start = len(self.ids)
            wanted = self.tasks[start:start + self.at_once - len(self.running)]
            try:
                ids = self.jobs.submit(wanted)
            except NoFreeGpu:
                return
            self.ids += ids
            self.running.update(dict.fromkeys(ids))
            try:  # from here a Ctrl-C cancels what was submitted (_wait)
                array = ArraySubmission.submitted(self.jobs.kind, ids)
                if len(self.ids) < len(self.tasks):
                    self.submitter.add(array)
                else:
                    self.submitter.hand_over(array)
                if start == 0:
                    more = f"; the other {len(self.tasks) - len(ids)} as GPUs free" if len(ids) < len(self.tasks) else ""
                    print(f"submitted {len(ids)} shard task(s) to {self.jobs.kind}: {', '.join(ids)} (logs: "
                          f"{self.folder}){more}", file=sys.stderr)
            except KeyboardInterrupt:
                _cancel(self.jobs, list(self.running))
                raise

    def ended(self, job_id: str) -> None:
        self.running.pop(job_id, None)


def _wait(jobs: Executor, waves: _Waves, labels: Sequence[str], tasks: Sequence[Callable[[], Any]],
          lost_reason: Callable[[Any], Exception | None] | None) -> list[Any]:
    """:func:`run_job_array`'s wait for its tasks, submitting the rest as earlier ones end
    (:class:`_Waves`) and saying their ends (:class:`ArrayProgress`)."""
    progress = ArrayProgress(len(tasks))
    values: dict[str, Any] = {}
    failures, full = [], []  # full: the DiskFull values tasks returned (megadocs.shards.ShardTask)
    try:
        while waves.running or len(waves.ids) < len(tasks):
            time.sleep(ARRAY_POLL_S[jobs.kind])
            for index, job_id in enumerate(waves.ids):
                if job_id not in waves.running:
                    continue
                poll = jobs.poll(job_id)
                if poll.state == JobState.RUNNING:
                    continue
                waves.ended(job_id)
                label = labels[index]
                if poll.state == JobState.LOST and lost_reason is not None:
                    reason = lost_reason(tasks[index])
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
            waves.submit_more()
    except KeyboardInterrupt:
        _cancel(jobs, list(waves.running))
        raise
    if failures and len(full) == len(failures):  # a full disk, as in-process: its one line, exit 4
        raise full[0]
    if failures:
        raise WorkFailed(f"{len(failures)} task(s) failed; re-run to resume them: " + "; ".join(failures))
    return [values[job_id] for job_id in waves.ids]


def _cancel(jobs: Executor, pending: list[str]) -> None:
    """On Ctrl-C: local tasks had it too (they stop themselves); SLURM's still queued or running are
    cancelled, and the interrupt says so."""
    if jobs.stops_on_interrupt or not pending:
        return
    assert isinstance(jobs, SlurmExecutor), jobs  # the one executor whose jobs outlive the submitter
    jobs.cancel([(job_id, None) for job_id in pending])
    raise KeyboardInterrupt(f"cancelled {len(pending)} {jobs.kind} task(s) ({', '.join(pending)}); finished "
                            "shards are kept: re-run the same command to resume") from None


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
