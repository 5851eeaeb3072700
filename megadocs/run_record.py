"""A sharded step's record of the runs that may write into its folder (``FOLDER/submitit/``
:data:`SUBMISSIONS`), so that a later run with other settings can ask whether one still goes
(``megadocs.shards.ShardedStep`` refuses to replace the settings meanwhile).

Two kinds of entry: an :class:`ArraySubmission` per job array submitted into the folder (its
tasks asked through the executors' own :meth:`megadocs.executors.Executor.alive`), and a
:class:`ProcessRun` per process running the step in-process, or submitting an array until the
array's entry replaces its own. A process is asked through /proc where its pid can be
(:class:`megadocs.procs.PidPlace`: this host, kernel boot and pid namespace); anywhere else it says
it runs with a heartbeat every :data:`HEARTBEAT_S`, and counts while that is younger than
:data:`STALE_S` (:class:`Liveness`).

Every edit is a read-modify-write of one JSON file under a file lock (:func:`_editing_record`),
dropping what has ended on the way. Entry points: :func:`recorded_process` (hold this process's
entry while a block runs, then hand it over to the array it submitted), :class:`ArrayTask` (a
local array's task, beating for its array), :func:`live_runs` (what may still write),
:func:`unchecked_note` (the end of a refusal's line). Older records are read through
:mod:`megadocs.compat` ("run-record").
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from megadocs import compat
from megadocs.config import StrictModel, parse_config
from megadocs.errors import UserError
from megadocs.executors import ArrayKind, LocalExecutor, SlurmExecutor, SlurmProfile
from megadocs.formats import write_json
from megadocs.procs import PidPlace, exclusive_lock, process_running, process_start

__all__ = ["SUBMISSIONS", "HEARTBEAT_S", "STALE_S", "ArraySubmission", "ProcessRun", "Liveness", "Entry",
           "RecordedProcess", "recorded_process", "ArrayTask", "live_runs", "unchecked_note"]

SUBMISSIONS = "submissions.json"
"""A job array folder's record of the arrays submitted into it (:class:`ArraySubmission`) and of
the processes running the step in-process (:class:`ProcessRun`), so that a later command can ask
whether they still run (:func:`live_runs`)."""
HEARTBEAT_S = 60.0
"""How often a process in a folder's record of runs says it still runs (:class:`RecordedProcess`),
and each running task of a local array that its array does (:class:`ArrayTask`).
Slower than the search controller's lock (10 s, stale after 2 min: ``search.ledger``), whose
waiting contender should take a dead controller's sweep over soon: here a beat rewrites a file
that may sit on a shared file system under a lock, and only a replacement of the settings ever
waits on it."""
STALE_S = 600.0
"""A process recorded elsewhere (another host, kernel boot or pid namespace: not asked from here)
whose heartbeat is older than this is presumed ended, and said so (:class:`Liveness`): ten missed
heartbeats, so that a slow shared file system or clocks some minutes apart do not end a live one."""


class ArraySubmission(StrictModel):
    """One job array submitted into a folder (an entry of :data:`SUBMISSIONS`).

    A SLURM array's ids name its tasks on every host. A local array's are pids: they name its
    tasks only where its submitter ran (``host``, ``boot``, ``pidns``, as a :class:`ProcessRun`'s),
    so anywhere else it counts by the heartbeat its running tasks refresh (:class:`ArrayTask`:
    also after its submitter was killed outright). Those four are null for SLURM, and for a local
    array recorded before they were (megadocs.compat "run-record" 2: asked here, as when written)."""

    kind: ArrayKind
    job_ids: list[str]
    """submitit's ids: a local task's is its process id, a SLURM array task's ``ARRAY_INDEX``."""
    host: str | None = None
    boot: str | None = None
    pidns: int | None = None
    heartbeat: float | None = None

    @classmethod
    def submitted(cls, kind: ArrayKind, job_ids: Sequence[str]) -> ArraySubmission:
        """The entry of an array this process just submitted (a local one: where, and now)."""
        if kind == "slurm":
            return cls(kind=kind, job_ids=list(job_ids))
        return cls(kind=kind, job_ids=list(job_ids), **PidPlace.current().to_json(), heartbeat=time.time())

    @property
    def place(self) -> PidPlace | None:
        """Where its job ids name its tasks; None: anywhere (SLURM), or not recorded (asked here)."""
        return None if self.host is None else _place(self)

    def here(self) -> bool:
        """Whether its tasks can be asked here (SLURM: always; local: where its pids name them)."""
        return PidPlace.asked_here(self.place)

    def describe(self, now: float | None = None) -> str:
        """
        >>> ArraySubmission(kind="local", job_ids=["7"], host="node7.example", heartbeat=1000.0).describe(now=1042.0)
        'local task(s) 7 on host node7.example (its last heartbeat 42 s ago; not checked from here)'
        """
        tasks = f"{self.kind} task(s) {_first(self.job_ids)}"
        if self.here():
            return tasks
        return f"{tasks} {_unchecked(self.place, self.heartbeat, now)}"

    def cancel_command(self) -> str:
        """The command that cancels these tasks: SLURM's ``scancel`` (each array once); a local
        task's Ctrl-C (SIGINT: a shard task stops itself on it, and submitit's task process ignores
        SIGTERM).

        >>> ArraySubmission(kind="slurm", job_ids=["41_0", "41_1", "42"]).cancel_command()
        'scancel 41 42'
        """
        if self.kind == "slurm":
            return "scancel " + " ".join(dict.fromkeys(job_id.split("_")[0] for job_id in self.job_ids))
        kill = "kill -INT " + " ".join(self.job_ids)
        return kill if self.here() else f"{self.place.where()}: {kill}"


class Liveness(str, Enum):
    """What a folder's record can tell of a recorded process (:meth:`ProcessRun.liveness`) or, for
    ``UNCHECKED`` and ``PRESUMED_ENDED``, a local array elsewhere (:func:`_heard`)."""

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
        pid = os.getpid()
        return cls(**PidPlace.current().to_json(), pid=pid, started=process_start(pid), heartbeat=time.time())

    @property
    def place(self) -> PidPlace:
        """Where its pid names it."""
        return _place(self)

    def same_process(self, other: ProcessRun) -> bool:
        """Whether both name one process (its heartbeats aside)."""
        return self.model_dump(exclude={"heartbeat"}) == other.model_dump(exclude={"heartbeat"})

    def here(self) -> bool:
        """Whether its pid can be asked here (:meth:`megadocs.procs.PidPlace.askable`)."""
        return self.place.askable()

    def liveness(self, now: float) -> Liveness:
        """Asked through /proc here; elsewhere, read off its heartbeat's age (``now``: Unix time).

        >>> entry = ProcessRun(host="node7.example", pid=41, started=9, heartbeat=1000.0)
        >>> entry.liveness(now=1000.0 + 60), entry.liveness(now=1000.0 + STALE_S + 1)
        (<Liveness.UNCHECKED: 'unchecked'>, <Liveness.PRESUMED_ENDED: 'presumed ended'>)
        """
        if self.here():
            return Liveness.ALIVE if process_running(self.pid, self.started) else Liveness.ENDED
        return _heard(self.heartbeat, now)

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
        return f"process {self.pid} {_unchecked(self.place, self.heartbeat, now)}"

    def cancel_command(self) -> str:
        return f"kill -INT {self.pid}" if self.here() else f"{self.where()}: kill -INT {self.pid}"


Entry = ArraySubmission | ProcessRun
"""An entry of a folder's record of runs (:data:`SUBMISSIONS`)."""


class _Submissions(StrictModel):
    submissions: list[Entry] = []  # told apart by ``kind``


def _place(entry: Entry) -> PidPlace:
    """The place an entry stores beside its other fields (``host``, ``boot``, ``pidns``)."""
    return PidPlace.from_json(entry.model_dump(include=set(PidPlace.FIELDS)))


def _heard(heartbeat: float | None, now: float) -> Liveness:
    """An entry not asked from here, read off its heartbeat's age (``now``: Unix time; none:
    recorded before heartbeats, counted as going)."""
    silent = None if heartbeat is None else now - heartbeat
    return Liveness.PRESUMED_ENDED if silent is not None and silent > STALE_S else Liveness.UNCHECKED


def _unchecked(place: PidPlace, heartbeat: float | None, now: float | None) -> str:
    """Where an entry not asked from here runs and when it last beat, for a line."""
    if heartbeat is None:
        return f"{place.where()} (recorded without a heartbeat; not checked from here)"
    silent = max(0.0, (time.time() if now is None else now) - heartbeat)  # (0: a clock ahead of this one)
    return f"{place.where()} (its last heartbeat {_duration(silent)} ago; not checked from here)"


def _duration(seconds: float) -> str:
    """A duration for a line.

    >>> _duration(42.4), _duration(840), _duration(3 * 3600 + 360)
    ('42 s', '14 min', '3.1 h')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _array_executor(kind: ArrayKind, folder: Path) -> LocalExecutor | SlurmExecutor:
    """An executor that only looks at the jobs in ``folder`` (no profile: nothing is submitted)."""
    if kind == "local":
        return LocalExecutor(folder, timeout_min=1, max_parallel=1)  # (the limit of jobs it never submits)
    return SlurmExecutor(folder, SlurmProfile(), 1)


def _read_submissions(folder: Path) -> list[Entry]:
    """``folder``'s record (empty where there is none yet); an older one is read through
    megadocs.compat "run-record" (what it did not record reads as unknown: null).

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
    stderr, processes and local arrays elsewhere whose heartbeat is older than :data:`STALE_S`
    (presumed ended)."""
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
        elif not earlier.here():
            state = _heard(earlier.heartbeat, now)
        else:
            state = None  # an array's tasks: by their result files, below
        if state is Liveness.PRESUMED_ENDED:
            print(f"{folder / SUBMISSIONS}: {earlier.describe(now)}: presumed ended, its heartbeat being over "
                  f"{_duration(STALE_S)} old; its entry is dropped", file=sys.stderr, flush=True)
        if state in (Liveness.ENDED, Liveness.PRESUMED_ENDED):
            continue
        if isinstance(earlier, ArraySubmission):  # a result file is seen from any host that shares the folder
            looker = _array_executor(earlier.kind, folder)
            ids_left = [job_id for job_id in earlier.job_ids if not looker.has_result(job_id)]
            if ids_left:
                kept.append(earlier.model_copy(update={"job_ids": ids_left}))
        else:
            kept.append(earlier)
    return kept


class _Heartbeat:
    """A daemon thread that refreshes heartbeats in ``folder``'s record every ``period`` seconds
    (``refresh(record, now)`` edits it in place, under its lock): once a minute, not per row; a
    file lock and a rewrite of the record, whose other entries it leaves as they are (under 1 KB
    per process, about 14 bytes per recorded array task: 1.4 ms with a 1,000-task array recorded,
    docs/architecture.md). A heartbeat that cannot be written (a full disk, a record broken by
    hand) is skipped: the run's own writes say the error, and the entry ages until a check
    elsewhere presumes it ended."""

    def __init__(self, folder: Path, refresh: Callable[[list[Entry], float], None], period: float) -> None:
        self.folder, self.refresh, self.period = folder, refresh, period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            with contextlib.suppress(OSError, UserError), _editing_record(self.folder, prune=False) as record:
                self.refresh(record, time.time())

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="megadocs-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()


class RecordedProcess:
    """This process's entry in a folder's record while :func:`recorded_process` holds it, its
    heartbeat refreshed every :data:`HEARTBEAT_S` (:class:`_Heartbeat`), until it ends or hands
    its entry over to the job array it submitted (:meth:`hand_over`)."""

    def __init__(self, folder: Path, entry: ProcessRun) -> None:
        self.folder, self.entry = folder, entry
        self.handed_over = False
        self._heartbeat = _Heartbeat(folder, self._refresh, HEARTBEAT_S)

    def _refresh(self, record: list[Entry], now: float) -> None:
        # (put back if a check elsewhere dropped it as presumed ended: this process runs)
        record[:] = [*_without(record, self.entry), self.entry.model_copy(update={"heartbeat": now})]

    def start_beating(self) -> None:
        self._heartbeat.start()

    def stop_beating(self) -> None:
        self._heartbeat.stop()

    def add(self, array: ArraySubmission) -> None:
        """A job array this process submitted while it goes on to submit more (a local array on a
        machine with GPUs starts a task as a GPU frees, :func:`megadocs.job_arrays.run_job_array`):
        recorded beside this process's entry, which stays until :meth:`hand_over` of the last."""
        with _editing_record(self.folder) as record:
            record.append(array)

    def hand_over(self, array: ArraySubmission) -> None:
        """The job array this process submitted takes its entry's place, in one edit: a re-run
        with other settings sees the one or the other, never neither. This process beats no
        more: a local array's running tasks beat for it (:class:`ArrayTask`), a SLURM array
        needs no heartbeat."""
        self.stop_beating()
        with _editing_record(self.folder) as record:
            record[:] = [*_without(record, self.entry), array]
        self.handed_over = True


class ArrayTask:
    """A local job array's task that, in its own process, refreshes its array's heartbeat every
    :data:`HEARTBEAT_S` while it runs (:class:`_Heartbeat`): the array counts as going elsewhere
    as long as one of its tasks runs, whether its submitter still waits or was killed outright
    (a local task outlives its submitter). It beats each local array entry of ``folder``'s
    record that holds its job id and names this place (its tasks run where it was submitted);
    before its submitter records the array, there is none (the entry is recorded with a fresh
    heartbeat). A task with ``checkpoint`` (submitit requeues it on a timeout) is requeued as an
    ``ArrayTask`` too."""

    def __init__(self, task: Callable[..., Any], folder: str | Path) -> None:
        self.task, self.folder = task, Path(folder)
        self.period = HEARTBEAT_S  # (as the submitter has it)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        heartbeat = _Heartbeat(self.folder, functools.partial(_beat_for_array, submitit.JobEnvironment().job_id),
                               self.period)
        heartbeat.start()
        try:
            return self.task(*args, **kwargs)
        finally:
            heartbeat.stop()

    def __getattr__(self, name: str) -> Any:
        # only ``checkpoint``, and only where the task has one (submitit's test of a Checkpointable)
        if name == "checkpoint" and hasattr(self.__dict__.get("task"), "checkpoint"):
            return self._checkpoint
        raise AttributeError(name)

    def _checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        delayed = self.task.checkpoint(*args, **kwargs)
        if delayed is None:
            return None
        again = ArrayTask(delayed.function, self.folder)
        again.period = self.period
        return DelayedSubmission(again, *delayed.args, **delayed.kwargs)


def _beat_for_array(job_id: str, record: list[Entry], now: float) -> None:
    """Refresh the heartbeat of the local arrays in ``record`` that hold ``job_id`` and whose pids
    name processes here (:class:`ArrayTask`)."""
    record[:] = [entry.model_copy(update={"heartbeat": now})
                 if isinstance(entry, ArraySubmission) and entry.kind == "local" and job_id in entry.job_ids
                 and entry.here() else entry
                 for entry in record]


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
    :meth:`Executor.alive`: a local task's process, a SLURM job's state), one entry per kind; a
    local array submitted elsewhere, by its heartbeat (as it was recorded, its tasks without a
    result); and other processes (:class:`ProcessRun`: alive on this host; elsewhere, with a
    heartbeat younger than :data:`STALE_S`). Empty when none is. Drops what has ended from the record on the way,
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
    unchecked: list[Entry] = []  # elsewhere, or a process here (asked when the record was pruned)
    with _editing_record(folder) as record:
        for entry in record:
            if isinstance(entry, ProcessRun):
                if not entry.same_process(me):
                    unchecked.append(entry)
            elif not entry.here():
                unchecked.append(entry)
            else:
                looker = _array_executor(entry.kind, folder)
                live.setdefault(entry.kind, []).extend(job_id for job_id in entry.job_ids if looker.alive(job_id))
    return [*(ArraySubmission(kind=kind, job_ids=ids) for kind, ids in live.items() if ids), *unchecked]


def unchecked_note(runs: Sequence[Entry], folder: str | Path) -> str:
    """The end of a refusal that names runs not checked from here: when one counts as ended."""
    elsewhere = [run for run in runs if not run.here()]
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
