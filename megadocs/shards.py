"""One runner for the steps that work a pool shard by shard (generation, the tokenize step), in
the manner of datatrove's executors: resumability lives here, not in the step.

A :class:`ShardedStep` writes into one folder::

    FOLDER/manifest.json              the step's manifest: written (or checked) before any shard
                                      runs; ``statistics`` and ``complete`` summed from the markers
    FOLDER/shard-{i:05d}-of-{n:05d}.done   a shard's counts, written only after its outputs are durable
    FOLDER/.manifest.lock             serialises the read-modify-write of the manifest

The runner asks "done?" before a shard runs and writes the marker after the step returned its
counts, so a step's ``_run_shard`` only produces durable outputs and counts; a shard without a
marker is simply run again (the step may resume inside it).

One set of settings per folder: a step may replace a manifest whose outputs hold nothing yet
(:meth:`ShardedStep.init_manifest`, under the lock), while a process of the earlier settings may
still be running (a job-array task before its first flush, a second terminal). So every write of
outputs happens under the lock after checking that the manifest still has the settings this
process prepared (:meth:`ShardedStep.writing`), and an array task never prepares again: it checks
the manifest its submission prepared (:meth:`ShardedStep.run`). A late writer of replaced settings
stops in one line and writes nothing; a replacement can only see outputs already flushed. So that
such a writer rarely spends compute first, the replacement is refused while one may still run: the
folder's record of runs (``FOLDER/submitit/submissions.json``, :mod:`megadocs.run_record`) holds
each job array submitted into it, each process running the step in-process (while it runs) and
each submitter (until its array's entry replaces its own), and
:func:`megadocs.run_record.live_runs` says which still live (one elsewhere: by its heartbeat). The
same settings are never refused.

:meth:`ShardedStep.run` runs shards in this process; :meth:`ShardedStep.submit` freezes the to-do
list and submits one job-array task per shard (:mod:`megadocs.job_arrays`: submitit's local
executor or SLURM), each task requeued after a timeout or preemption and resuming its shard.
submitit is imported only by ``submit``.

Example:
    >>> class Count(ShardedStep):
    ...     STAT_KEYS = ("items",)
    ...     def prepare(self):
    ...         return self.init_manifest({"format": "demo/1"}, same=lambda old: True)
    ...     def _run_shard(self, index):
    ...         return {"items": index + 1}
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     manifest = Count(folder, 3, name="count").run()
    >>> manifest["complete"], manifest["statistics"]
    (True, {'items': 6, 'shards_done': 3})
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from megadocs.errors import DISK_FULL_ERRNOS, DiskFull, UserError, disk_full_message
from megadocs.executors import DEFAULT_TIMEOUT_MIN
from megadocs.formats import MANIFEST, read_json_object, write_json
from megadocs.job_arrays import check_array_executor, run_job_array
from megadocs.pools import done_path, shard_stem
from megadocs.procs import exclusive_lock
from megadocs.run_record import RecordedProcess, live_runs, recorded_process, unchecked_note

__all__ = ["ShardedStep", "ShardTask", "manifest_lock", "LOCK", "DEFAULT_TIMEOUT_MIN"]

LOCK = ".manifest.lock"
JOBS = "submitit"
"""The job array's folder inside the step's: submitit's logs and results, the tasks' reserves, and
the record of the runs in the folder (``megadocs.run_record.SUBMISSIONS``: arrays and processes)."""
RESERVE_BYTES = 64 * 1024
"""Disk an array task holds back while it runs and gives back when its disk fills, so that its
one-line error still reaches the submitter: submitit's result file and the task's log need room
too (a page each on a tmpfs), and a full disk would leave none."""
NO_ROOM = {errno.ENOSPC: ".no-room", errno.EDQUOT: ".no-quota"}
"""Suffix of the empty file a task leaves in place of its reserve when its disk was full at its
start, by the error the reserve met (:data:`megadocs.errors.DISK_FULL_ERRNOS`): a full file system,
or a used-up quota."""
assert set(NO_ROOM) == set(DISK_FULL_ERRNOS), NO_ROOM


def manifest_lock(folder: str | Path) -> contextlib.AbstractContextManager[None]:
    """Exclusive lock on ``folder``'s manifest (array tasks finish concurrently)."""
    return exclusive_lock(Path(folder) / LOCK)


class ShardedStep(ABC):
    """A step over ``num_shards`` shards writing into ``folder`` (module docstring).

    Subclasses fill :meth:`prepare` (called once before any shard, by the process that runs or
    submits them: write or check the manifest, usually through :meth:`init_manifest`),
    :meth:`_run_shard` (make one shard's outputs durable, each write inside :meth:`writing`, and
    return its counts; called only for a shard without a marker), and optionally :meth:`settings`,
    :attr:`STAT_KEYS` (counts summed into ``statistics``), :meth:`_derived` (statistics computed
    from the sums) and :meth:`_session` (a context around the shards run in one process, e.g. a
    loaded model). A step is pickled into array tasks: keep its state small and plain.
    """

    STAT_KEYS: tuple[str, ...] = ()
    GPU_TASKS = False
    """Whether a shard task uses a GPU (gen's engine): a local job array on a machine with GPUs then
    runs one task per GPU, each on its own (:func:`megadocs.job_arrays.run_job_array`)."""
    VOLATILE_FIELDS = ("complete", "statistics", "created")
    """Manifest fields that describe progress, not the settings (see :meth:`settings`)."""

    def __init__(self, folder: str | Path, num_shards: int, *, name: str) -> None:
        self.folder = Path(folder)
        self.num_shards = num_shards
        self.name = name
        self.prepared: dict[str, Any] | None = None
        """The manifest this process (or the submission of this array task) prepared; None before."""
        self._recording: contextlib.ExitStack | None = None
        """While :meth:`run` or :meth:`submit` prepares: where its record entry is held."""
        self._recorded: RecordedProcess | None = None
        """...and that entry, once :meth:`init_manifest` made it."""

    # -- what a step fills in --------------------------------------------------------------

    @abstractmethod
    def prepare(self) -> dict[str, Any]:
        """Write the manifest, or check that an existing one is this step's; returns it.

        Raises:
            UserError: the inputs are unusable or the folder holds another step's outputs.
        """

    @abstractmethod
    def _run_shard(self, index: int) -> dict[str, Any]:
        """Produce shard ``index``'s outputs durably and return its counts (a JSON object)."""

    def _derived(self, totals: dict[str, Any]) -> dict[str, Any]:
        """Statistics computed from the summed counts (default: the sums)."""
        return totals

    def _session(self) -> contextlib.AbstractContextManager:
        """A context held while this process runs its shards (default: nothing)."""
        return contextlib.nullcontext()

    def settings(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """What in a manifest defines the outputs: a process writes only while the manifest on
        disk has the settings it prepared (default: every field but :attr:`VOLATILE_FIELDS`)."""
        return {key: value for key, value in manifest.items() if key not in self.VOLATILE_FIELDS}

    # -- the runner ------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def done_path(self, index: int) -> Path:
        return done_path(self.folder, index, self.num_shards)

    def is_done(self, index: int) -> bool:
        return self.done_path(index).is_file()

    def todo(self, shards: Iterable[int] | None = None) -> list[int]:
        """The shards (all, or ``shards``) without a completion marker."""
        return [i for i in (range(self.num_shards) if shards is None else shards) if not self.is_done(i)]

    def _existing_manifest(self) -> dict[str, Any] | None:
        """The folder's manifest as written, None when there is none; a damaged one (not UTF-8, not
        a JSON object: cut short, overwritten) is refused in one line and left as it is, with the
        shards it describes: nothing here can tell which settings they were made with."""
        if not self.manifest_path.is_file():
            return None
        return read_json_object(self.manifest_path, "a JSON manifest",
                                "restore it, or use another --out (nothing was changed)")

    def init_manifest(self, intended: dict[str, Any], same: Callable[[dict[str, Any]], bool],
                      on_stale: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The existing manifest when ``same(existing)``; else ``on_stale(existing)`` (raise, or
        clear the old outputs: their markers are removed here) and ``intended`` is written with
        ``complete: false`` and ``created``, saying on stderr which settings it replaced. Under
        the manifest lock, where a run in this process (:meth:`run`) or a submitter
        (:meth:`submit`) is also recorded in the folder's record of runs
        (:func:`megadocs.run_record.recorded_process`) until it ends or its array is recorded.

        Raises:
            UserError: the folder is a file, its manifest is damaged (`_existing_manifest`), or
                other settings while another run in this folder may still write into it
                (tasks of an earlier job array queued or running, another process running the
                step; named, with how to stop them); nothing is changed.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # it, or a folder above it, is a file
            raise UserError(f"{self.folder}: not a directory (it or a folder above it is a file), so it cannot "
                            f"hold the {self.name} output; use another --out") from None
        replaced: dict[str, Any] | None = None  # the earlier settings, when other than these
        with manifest_lock(self.folder):
            existing = self._existing_manifest()
            if existing is not None and same(existing):
                manifest = existing
            else:
                if existing is not None:
                    if self.settings(existing) != self.settings(intended):  # the same: nothing to refuse
                        replaced = existing
                        self._refuse_while_others_run()
                    if on_stale is not None:
                        on_stale(existing)
                    for marker in self.folder.glob("shard-*.done"):
                        marker.unlink()
                manifest = {**intended, "complete": False,
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                write_json(self.manifest_path, manifest)
            if self._recording is not None:  # with the manifest: a later run sees both or neither
                self._recorded = self._recording.enter_context(recorded_process(self.folder / JOBS))
        if replaced is not None:
            old, new = self.settings(replaced), self.settings(manifest)
            changes = "; ".join(f"{key}: {_shown(old.get(key))} -> {_shown(new.get(key))}" for key in _changed(old, new))
            print(f"{self.manifest_path}: replaced the settings of an earlier {self.name} run: {changes}",
                  file=sys.stderr, flush=True)
        return manifest

    def _refuse_while_others_run(self) -> None:
        """Refuse to replace the settings while another run may still write into this folder:
        tasks of an earlier job array that queue or run, another process running the step in
        this folder (``megadocs gen`` without ``--executor`` in another terminal). Each would be
        refused at its first write (:meth:`check_settings`) after spending its compute, e.g.
        loading a generator and generating a chunk."""
        live = live_runs(self.folder / JOBS)
        if live:
            runs = "; ".join(run.describe() for run in live)
            stop = "; ".join(run.cancel_command() for run in live)
            raise UserError(f"{self.folder}: an earlier {self.name} run with other settings is still going ({runs}): "
                            f"wait for it to end, or stop it ({stop}), then re-run (nothing was changed)"
                            f"{unchecked_note(live, self.folder / JOBS)}")

    def check_settings(self) -> None:
        """Refuse when the manifest on disk no longer has the settings this process prepared (a
        later run with other settings replaced it before anything was written). Callers that go
        on to write hold the manifest lock (:meth:`writing`).

        Raises:
            UserError: naming the manifest and the first field that differs.
        """
        try:
            current = self.settings(json.loads(self.manifest_path.read_text()))
        except FileNotFoundError:
            current = {}
        prepared = self.settings(self.prepared or {})
        if current != prepared:
            field = _changed(prepared, current)[0]
            raise UserError(f"{self.manifest_path}: {field}: replaced since this {self.name} run started (a later "
                            f"run with other settings took over the folder, which held no output yet; this run "
                            f"wrote nothing): let that run finish, or use another output directory")

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the manifest lock around a write of outputs, after :meth:`check_settings`: a
        replacement (also under the lock) then either comes first and this write is refused, or
        comes after and sees the outputs (and the step refuses to replace them)."""
        with manifest_lock(self.folder):
            self.check_settings()
            yield

    def run_shard(self, index: int) -> dict[str, Any]:
        """Shard ``index``'s counts: its marker's when done, else run it and write the marker last."""
        if self.is_done(index):
            return json.loads(self.done_path(index).read_text())
        counts = self._run_shard(index)
        with self.writing():
            write_json(self.done_path(index), counts)  # last: "done" means every output is durable
        return counts

    def run(self, shards: Iterable[int] | None = None) -> dict[str, Any]:
        """Run the not-done shards (all, or ``shards``) in this process; returns the manifest.

        A step prepared before (an array task: its submission prepared it) does not prepare
        again, which could replace a manifest a later run wrote: it checks it instead. Otherwise
        this process is in the folder's record of runs from its manifest's check
        (:meth:`init_manifest`) until it returns or raises, Ctrl-C included, so that a run with
        other settings is refused meanwhile."""
        if self.prepared is not None:
            self.check_settings()
            return self._run_shards(shards)
        with self._prepared_and_recorded():
            return self._run_shards(shards)

    @contextlib.contextmanager
    def _prepared_and_recorded(self) -> Iterator[RecordedProcess | None]:
        """:meth:`prepare`, with this process in the folder's record of runs from its manifest's
        check (:meth:`init_manifest`) until the block ends; yields its entry (None where
        ``prepare`` made none). The step keeps
        no reference to it: an array task pickles the step."""
        with contextlib.ExitStack() as self._recording:
            try:
                self.prepared = self.prepare()
                recorded = self._recorded
            finally:
                self._recording = self._recorded = None
            yield recorded

    def _run_shards(self, shards: Iterable[int] | None) -> dict[str, Any]:
        todo = self.todo(shards)
        if todo:
            with self._session():
                for index in todo:
                    self.run_shard(index)
        return self.finish()

    def submit(self, executor: str, profile: str | None = None, *,
               timeout_min: float = DEFAULT_TIMEOUT_MIN) -> dict[str, Any]:
        """Every not-done shard as one job array (``local`` or ``slurm``); waits, returns the manifest.

        Raises:
            UserError: a bad executor or profile (before anything is written), or other settings
                while another run may still write into the folder (:meth:`init_manifest`).
            WorkFailed: tasks that failed, were cancelled or killed (named, with their logs;
                re-running resumes them).
            DiskFull: every task that failed met a full disk (one line).
        """
        check_array_executor(executor, profile)
        # prepared before any task starts (tasks never race to create the manifest); this process
        # is recorded from its manifest's check until its array's entry replaces it, so that a run
        # of other settings is refused in between too
        with self._prepared_and_recorded() as submitter:
            todo = self.todo()  # frozen before dispatch
            tasks = [ShardTask(self, index) for index in todo]
            for task in tasks:
                task.set_aside()
            run_job_array(tasks, [f"shard {i}" for i in todo], kind=executor,
                          profile=profile, folder=self.folder / JOBS, timeout_min=timeout_min, name=self.name,
                          lost_reason=ShardTask.lost_to_full_disk, submitter=submitter, gpu_tasks=self.GPU_TASKS)
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Sum the markers' counts into the manifest's ``statistics``; ``complete`` once every shard
        is done. Returns the manifest."""
        with manifest_lock(self.folder):
            manifest = json.loads(self.manifest_path.read_text())
            markers = [self.done_path(i) for i in range(self.num_shards)]
            counts = [json.loads(marker.read_text()) for marker in markers if marker.is_file()]
            totals = {key: sum(c.get(key, 0) for c in counts) for key in self.STAT_KEYS}
            manifest["statistics"] = {**self._derived(totals), "shards_done": len(counts)}
            manifest["complete"] = len(counts) == self.num_shards
            write_json(self.manifest_path, manifest)
            return manifest


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings that differ between two of a step's :meth:`ShardedStep.settings`, in order.

    >>> _changed({"seed": 1, "g": 2}, {"seed": 2, "g": 2, "kind": "thoughts"})
    ['seed', 'kind']
    """
    return [key for key in dict.fromkeys((*old, *new)) if old.get(key) != new.get(key)]


def _shown(value: Any) -> str:
    """A setting's value as the replacement line shows it (JSON; absent: ``none``)."""
    return "none" if value is None else json.dumps(value, sort_keys=True)


def _reserve(path: Path) -> bool:
    """Hold :data:`RESERVE_BYTES` of disk in ``path`` (its submitter made the file:
    :meth:`ShardTask.set_aside`): True, or False where the file system refuses (the task runs
    without, as a task always could). Where there is no room, an empty file named ``path`` +
    :data:`NO_ROOM` of the error (no space, or no quota) is the task's word to its submitter
    (:meth:`ShardTask.lost_to_full_disk`): a rename, which needs no space nor a new file. (A
    reserve that is not there, e.g. removed by hand, is created here: where no file can be
    created any more, no word then.)"""
    try:
        with open(path, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, RESERVE_BYTES)
    except OSError as exc:
        with contextlib.suppress(OSError):
            if exc.errno in DISK_FULL_ERRNOS:
                os.replace(path, _no_room(path)[exc.errno])
            else:
                path.unlink()
        return False
    return True


def _no_room(reserve: Path) -> dict[int, Path]:
    """The words a task may leave in place of ``reserve``, by error number."""
    return {code: reserve.with_name(reserve.name + suffix) for code, suffix in NO_ROOM.items()}


def _unsay_no_room(reserve: Path) -> None:
    for word in _no_room(reserve).values():
        word.unlink(missing_ok=True)


class ShardTask:
    """One job-array task: run one shard of a step in its own process, then update the manifest.
    Checkpointable in submitit's sense (it has ``checkpoint``): a timed-out or preempted task is
    requeued as is and resumes its shard.

    A full disk is returned, not raised: a :class:`megadocs.errors.DiskFull` with the task's own
    line (naming its file), which ``run_job_array`` turns into the one line and exit status of a
    full disk in-process; a raised error would come back as traceback text only. The traceback
    goes to the task's log. The task keeps :data:`RESERVE_BYTES` back while it runs so that its
    result can be written on the disk that filled: its bytes, and a file (an inode) against a
    quota of files used up, since its submitter made the reserve's file (:meth:`set_aside`). A
    task that starts on a full disk has no room for its reserve, result or log: it says so in an
    empty file (its reserve renamed), and its submitter, seeing it end without a result, reads that
    as the full disk (:meth:`lost_to_full_disk`)."""

    def __init__(self, step: ShardedStep, index: int) -> None:
        self.step, self.index = step, index

    @property
    def reserve_path(self) -> Path:
        return self.step.folder / JOBS / f"{shard_stem(self.index, self.step.num_shards)}.reserve"

    def set_aside(self) -> None:
        """Create the task's reserve file, empty, before it is submitted (by its submitter): a
        quota of files (inodes) used up before the task starts then refuses it no file it needs
        to say a full disk. It fills the reserve (no new file), and gives it up, a file and its
        bytes, for its result; where even its bytes do not fit, its word is the reserve renamed.
        A task requeued (a timeout, a preemption) keeps the file for its next attempt.

        Raises:
            OSError: no room for the file now (a full disk or quota: the submitter's own line).
        """
        self.reserve_path.parent.mkdir(parents=True, exist_ok=True)
        self.reserve_path.touch()

    def __call__(self) -> dict[str, Any] | DiskFull:
        reserve = self.reserve_path
        held = _reserve(reserve)
        if held:  # an earlier attempt's word (a requeued task) no longer holds
            _unsay_no_room(reserve)
        requeued = False
        try:
            self.step.run([self.index])
        except SystemExit:  # submitit's exit once it requeued the task (a timeout, a preemption)
            requeued = True
            raise
        except Exception as exc:  # noqa: BLE001 - only a full disk is kept; anything else is raised
            line = disk_full_message(exc)
            if line is None:
                raise
            if held:  # given back first: room for the traceback in the log, and for the result
                reserve.unlink()
            traceback.print_exc()
            return DiskFull(line)
        finally:
            if held and requeued:  # its bytes given back, its file kept for the next attempt (set_aside)
                os.truncate(reserve, 0)
            elif held:
                reserve.unlink(missing_ok=True)
        _unsay_no_room(reserve)  # done: its result needs no word of a full disk
        return json.loads(self.step.done_path(self.index).read_text())

    def lost_to_full_disk(self) -> DiskFull | None:
        """For the submitter, once this task ended without a result: a full disk or a used-up
        quota (one line naming the step's folder) when the task started with no room for its
        reserve, and so none for its result or log either (its :data:`NO_ROOM` file says which;
        removed here); else None."""
        said = [code for code, word in _no_room(self.reserve_path).items() if word.is_file()]
        _unsay_no_room(self.reserve_path)
        if not said:
            return None
        return DiskFull(disk_full_message(OSError(said[0], os.strerror(said[0]), str(self.step.folder))))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)
