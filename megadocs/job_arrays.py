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

    The array is recorded in ``folder``'s record of runs (:mod:`megadocs.run_record`), so that a
    re-run with other settings refuses while its tasks run: its entry replaces ``submitter``, this
    process's entry (from the manifest's check until now), in one edit; without one, this
    process is recorded just before it submits. A local array's heartbeat is refreshed by its
    running tasks (:class:`megadocs.run_record.ArrayTask`), so that it counts as going elsewhere
    also once this process is killed outright (its tasks run on).

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
    jobs = make_executor(config, folder, name, ctrl_c_to_jobs=True)  # each shard task stops itself on Ctrl-C
    with contextlib.ExitStack() as recording:
        if submitter is None:
            submitter = recording.enter_context(recorded_process(folder))
        ids = jobs.submit([ArrayTask(task, folder) for task in tasks] if kind == "local" else tasks)
        try:  # from here a Ctrl-C cancels what was submitted (_wait)
            submitter.hand_over(ArraySubmission.submitted(kind, ids))
            print(f"submitted {len(ids)} shard task(s) to {kind}: {', '.join(ids)} (logs: {folder})", file=sys.stderr)
        except KeyboardInterrupt:
            _cancel(jobs, ids)
            raise
        return _wait(jobs, ids, labels, dict(zip(ids, tasks)), lost_reason)


def _wait(jobs: Executor, ids: list[str], labels: Sequence[str], task_of: dict[str, Callable[[], Any]],
          lost_reason: Callable[[Any], Exception | None] | None) -> list[Any]:
    """:func:`run_job_array`'s wait for its submitted tasks, saying their ends (:class:`ArrayProgress`)."""
    pending = dict(zip(ids, labels))
    progress = ArrayProgress(len(ids))
    values: dict[str, Any] = {}
    failures, full = [], []  # full: the DiskFull values tasks returned (megadocs.shards.ShardTask)
    try:
        while pending:
            time.sleep(ARRAY_POLL_S[jobs.kind])
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
        _cancel(jobs, list(pending))
        raise
    if failures and len(full) == len(failures):  # a full disk, as in-process: its one line, exit 4
        raise full[0]
    if failures:
        raise WorkFailed(f"{len(failures)} task(s) failed; re-run to resume them: " + "; ".join(failures))
    return [values[job_id] for job_id in ids]


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
