"""A full file system is one line from every command (`megadocs.cli.main`), and the same command
re-run once there is space finishes the work from what was kept.

Each case runs a command through the console script's entry point with its output on a REAL full
file system: a 4 MiB tmpfs (`small_filesystem`) filled to ``headroom`` bytes, so the command's
own writes fail with ENOSPC from the kernel (or SQLite's "database or disk is full"). Training's
case is tests/train/test_cli.py (a checkpoint that does not fit).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from megadocs.cli import main
from megadocs.errors import DISK_FULL_ERRNOS, DiskFull, UserError, WorkFailed, disk_full_message, names_file
from megadocs.exits import Exit
from megadocs.pools import load_shard, rows_path
from megadocs.shards import ShardedStep
from tests.pools import write_rephrase_pool

RETRY = "; re-run the same command once there is space"


@dataclass(frozen=True)
class Case:
    """A command writing into ``fs``; ``setup(fs, tmp, fixture)`` writes its inputs, returns its argv."""

    setup: Callable[[Path, Path, Callable[[str], object]], list[str]]
    headroom: int  # bytes left free: less than the command writes, more than it needs to get going
    names: str  # what the error line names (a path under fs, or SQLite's database)


def _prepare(fs, tmp, fixture):
    return ["data", "prepare", "--corpus", "stdlib", "--out", str(fs / "store"), "--vocab-size", "300",
            "--max-docs", "40"]


def _rephrase(fs, tmp, fixture):
    docs = tmp / "docs.jsonl"
    from megadocs.corpus import iter_documents

    with open(docs, "w") as handle:  # 8 short real documents, one engine call and flush each
        for number, doc in zip(range(8), iter_documents("stdlib")):
            handle.write(json.dumps({"id": f"d{number}", "text": doc.text[:300]}) + "\n")
    return ["gen", "rephrase", "--corpus", str(docs), "--generator", str(fixture("tiny_generator")), "--g", "2",
            "--out", str(fs / "pool"), "--engine", "transformers", "--max-new-tokens", "24", "--chunk-docs", "1",
            "--no-progress"]


def _assemble(fs, tmp, fixture):
    write_rephrase_pool(fs / "pool", fixture("tiny_store"), tokenize=False)
    return ["gen", "assemble", "--pool", str(fs / "pool"), "--algorithm", "stitched", "--g", "2"]


def _tokenize_pool(fs, tmp, fixture):
    store = fixture("tiny_store")
    write_rephrase_pool(fs / "pool", store, tokenize=False)
    return ["data", "tokenize-pool", "--pool", str(fs / "pool"), "--store", str(store), "--no-progress"]


SWEEP = """\
name: full
executor: {{kind: debug, max_parallel: 2, poll_s: 0.01}}
out: {out}
objective: search.landscapes:bowl
grid: {{lr: [0.001, 0.003, 0.01], wd: [0.1, 0.4, 0.8, 1.6], epochs: [1, 2, 4, 8, 16, 32]}}
start: {{lr: 0.003, wd: 0.8, epochs: 8}}
certifications: [{{name: real, fixed: {{method: real}}}}]
"""


def _certify(fs, tmp, fixture):
    (tmp / "sweep.yaml").write_text(textwrap.dedent(SWEEP).format(out=fs / "out"))  # its ledger and run dirs
    return ["search", "certify", str(tmp / "sweep.yaml"), "--no-progress"]


def _report(fs, tmp, fixture):
    (tmp / "sweep.yaml").write_text(textwrap.dedent(SWEEP).format(out=tmp / "out"))
    assert main(["search", "certify", str(tmp / "sweep.yaml"), "--no-progress"]) == 0
    return ["analysis", "report", str(tmp / "sweep.yaml"), "--out", str(fs / "report")]


CASES = {
    "data prepare": Case(_prepare, 20_000, "store"),
    "gen rephrase": Case(_rephrase, 16_384, "pool/shard-00000-of-00001.jsonl"),
    "gen assemble": Case(_assemble, 4_096, "pool/assembled/stitched-g2/documents.jsonl"),
    "data tokenize-pool": Case(_tokenize_pool, 12_288, "pool/tokens/"),
    "search certify": Case(_certify, 150_000, "out/ledger.db"),  # a committed row; the ledger names its file
    "search certify, a new ledger": Case(_certify, 4_096, "out/ledger.db"),  # no room to create its tables
    "analysis report": Case(_report, 30_000, "report/figures/"),
}


def _fill(fs: Path, headroom: int) -> Path:
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as handle:
        stats = os.statvfs(fs)
        os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize - headroom)
    return filler


@pytest.mark.parametrize("command", list(CASES))
def test_a_full_disk_is_one_line_and_the_same_command_finishes_once_there_is_space(
        command, small_filesystem, tmp_path, capsys, request):
    case = CASES[command]
    argv = case.setup(small_filesystem, tmp_path, request.getfixturevalue)
    filler = _fill(small_filesystem, case.headroom)
    capsys.readouterr()

    assert main(argv) == Exit.WORK_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: no space left on device writing ") and line.endswith(RETRY), line
    assert case.names in line, line
    assert not [path for path in small_filesystem.rglob("*") if ".tmp" in path.name]  # its space is given back

    filler.unlink()
    assert main(argv) == 0, capsys.readouterr().err[-3000:]


def test_generation_keeps_the_documents_it_flushed_before_the_disk_filled(small_filesystem, tmp_path, request):
    """``gen rephrase`` flushes every chunk (here one document) durably: a full disk loses only the
    chunk in flight, and the re-run generates the rest without touching what was kept."""
    argv = _rephrase(small_filesystem, tmp_path, request.getfixturevalue)
    filler = _fill(small_filesystem, CASES["gen rephrase"].headroom)
    assert main(argv) == Exit.WORK_FAILED

    rows = rows_path(small_filesystem / "pool", 0, 1)
    torn = rows.stat().st_size
    kept = load_shard(rows, 2)  # cuts off the chunk the full disk cut short, in place: on the still-full disk
    assert 0 < len(kept) < 8 and rows.stat().st_size < torn
    before = rows.read_bytes()
    filler.unlink()
    assert main(argv) == 0
    assert len(load_shard(rows, 2)) == 8
    assert rows.read_bytes().startswith(before)


def test_a_ledger_on_a_full_disk_is_read(small_filesystem, tmp_path, capsys):
    """Reading needs no space: ``status`` and ``analysis report`` read a SQLite ledger on a full
    disk. Opened as usual, SQLite would first size the ledger's 32 KiB wal-index (``-shm``) and
    fail ("disk I/O error"); the ledger here is closed (no ``-shm``), as after a finished run."""
    import sqlite3

    (tmp_path / "sweep.yaml").write_text(textwrap.dedent(SWEEP).format(out=tmp_path / "out"))
    assert main(["search", "certify", str(tmp_path / "sweep.yaml"), "--no-progress"]) == 0
    ledger = small_filesystem / "ledger.db"
    with sqlite3.connect(tmp_path / "out" / "ledger.db") as source, sqlite3.connect(ledger) as copy:
        source.backup(copy)  # a closed copy of the ledger (WAL mode, every commit in the file)
    (tmp_path / "full.yaml").write_text((tmp_path / "sweep.yaml").read_text() + f"ledger: sqlite:///{ledger}\n")
    capsys.readouterr()
    _fill(small_filesystem, 0)

    assert main(["search", "status", str(tmp_path / "full.yaml"), "--json"]) == 0, capsys.readouterr().err
    status = json.loads(capsys.readouterr().out)
    assert [c["state"] for c in status["certifications"]] == ["certified"], status["certifications"]
    assert main(["analysis", "report", str(tmp_path / "full.yaml"), "--out", str(tmp_path / "report")]) == 0
    assert "real" in (tmp_path / "report" / "report.md").read_text()


class Fill(ShardedStep):
    """A step whose shard writes 1 MiB: more than the full file system has, less than it has once
    emptied (module level: the array task unpickles it in its own process)."""

    def prepare(self):
        return self.init_manifest({"format": "fill/1"}, same=lambda old: True)

    def _run_shard(self, index):
        path = self.folder / f"shard-{index}.bin"
        with names_file(path), open(path, "wb") as handle:
            handle.write(b"x" * 2**20)
            os.fsync(handle.fileno())
        return {}


@pytest.mark.parametrize("executor", ["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def test_a_full_disk_in_a_job_array_task_is_the_line_and_status_of_one_in_process(small_filesystem, executor):
    """A task's full disk comes back as the task's own line (naming its file), raised as a full
    disk (its own line), not as "task(s) failed" (a WorkFailed listing it): the task holds a
    little disk back and gives it up for its result, which a full disk would not have room for."""
    step = Fill(small_filesystem / "out", 1, name="fill")
    profile = "slurm/profiles/local.yaml" if executor == "slurm" else None
    filler = _fill(small_filesystem, 512 * 1024)
    with pytest.raises(DiskFull) as caught:
        step.submit(executor, profile)
    assert not isinstance(caught.value, (UserError, WorkFailed))
    line = disk_full_message(caught.value)
    assert line == f"no space left on device writing {small_filesystem / 'out' / 'shard-0.bin'}{RETRY}", line
    assert not list(small_filesystem.rglob("*.reserve"))

    filler.unlink()
    assert step.submit(executor, profile)["complete"]


@pytest.mark.parametrize("code", DISK_FULL_ERRNOS)
def test_a_used_up_quota_and_a_wrapped_error_read_as_a_full_disk(code):
    """Stand-in exceptions (no disk quota can be set here): EDQUOT reads like ENOSPC, also under
    the error a library raised from it (torch's zip writer, PIL) or while handling it."""
    try:
        try:
            with names_file("runs/a/state.pt"):  # a write to an open handle: no file name of its own
                raise OSError(code, os.strerror(code))
        except OSError:
            raise RuntimeError("unexpected pos 123")  # noqa: B904 - raised while handling it, as libraries do
    except RuntimeError as wrapped:
        line = disk_full_message(wrapped)
    assert line == f"{os.strerror(code).lower()} writing runs/a/state.pt{RETRY}"
    assert disk_full_message(RuntimeError("unexpected pos 123")) is None


class FillsOnStart(Fill):
    """:class:`Fill` whose array task fills its file system as it starts (when it is unpickled in
    the task's process, before :class:`megadocs.shards.ShardTask` takes its reserve): a disk that
    filled between the submission and the task's start, with no room left for anything.

    ``code``: the error the task's reserve meets. ENOSPC is the real full disk's. EDQUOT is
    ``fake_quota`` (no disk quota can be set here: this kernel's tmpfs has no quota option, and
    root passes quotas): the reserve's ``posix_fallocate`` raises it, as a file system whose quota
    is used up does; every write after it meets the real full disk."""

    code = errno.ENOSPC

    def __setstate__(self, state):
        self.__dict__.update(state)
        _fill(self.folder.parent, 0)
        if self.code != errno.ENOSPC:
            def fake_quota(fd, offset, length, code=self.code):
                raise OSError(code, os.strerror(code))

            os.posix_fallocate = fake_quota  # (in the task's own process only)


@pytest.fixture
def few_files_filesystem(tmp_path):
    """A 4 MiB tmpfs of 64 files (inodes): room left for bytes, none for files once they are used
    up (skipped where mounting is not permitted)."""
    from tests.filesystems import tmpfs

    with tmpfs(tmp_path / "fs", 4, files=64) as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs is not permitted here (needs root)")
        yield tmp_path / "fs"


def _use_up_files(fs: Path) -> Path:
    """Create empty files in ``fs`` until it has no file left (ENOSPC); returns their folder."""
    folder = fs / "files"
    folder.mkdir()
    for number in range(10**6):
        try:
            (folder / str(number)).touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            return folder
    raise AssertionError(f"{fs}: no limit on its files")


class RunsOutOfFilesOnStart(Fill):
    """:class:`Fill` whose array task uses up its file system's files (inodes) as it starts (when
    it is unpickled in the task's process, before :class:`megadocs.shards.ShardTask` takes its
    reserve): a quota of files used up between the submission and the task's start, bytes left.

    ``code``: the error a file's creation meets. ENOSPC is the real kernel's (the tmpfs has no
    inode left). EDQUOT is ``fake_file_quota``: each creation the kernel refuses for want of an
    inode raises EDQUOT instead, as a used-up quota of files does (no quota can be set here)."""

    code = errno.ENOSPC

    def __setstate__(self, state):
        self.__dict__.update(state)
        _use_up_files(self.folder.parent)
        if self.code != errno.ENOSPC:
            import builtins

            real_open = builtins.open

            def fake_file_quota(file, *args, code=self.code, **kwargs):
                try:
                    return real_open(file, *args, **kwargs)
                except OSError as exc:  # (opening an existing file takes no inode: a creation's)
                    if exc.errno != errno.ENOSPC:
                        raise
                    raise OSError(code, os.strerror(code), exc.filename) from None

            builtins.open = fake_file_quota  # (in the task's own process only)


@dataclass(frozen=True)
class Start:
    """A job-array task's start with no room: its step (in ``fs``, the fixture), what its line
    names (of the step) and how room is made again."""

    step: type[Fill]
    fs: str
    names: Callable[[Fill], Path]
    make_room: Callable[[Path], object]


STARTS = {
    # no room for the reserve's bytes, so none for its result either: the line names the folder
    "no room": Start(FillsOnStart, "small_filesystem", lambda step: step.folder,
                     lambda fs: (fs / "filler").unlink()),
    # no file left (inodes): the reserve, made by its submitter, needs none, and gives its file
    # back for the task's result: the line names the file the task could not create
    "no file left": Start(RunsOutOfFilesOnStart, "few_files_filesystem", lambda step: step.folder / "shard-0.bin",
                          lambda fs: shutil.rmtree(fs / "files")),
}


@pytest.mark.parametrize("start", list(STARTS))
@pytest.mark.parametrize(("executor", "code"), [
    *(pytest.param("local", code, id=f"local-{errno.errorcode[code]}") for code in DISK_FULL_ERRNOS),
    pytest.param("slurm", errno.ENOSPC, marks=pytest.mark.slurm, id="slurm-ENOSPC")])
def test_a_job_array_task_that_starts_on_a_full_disk_reads_as_a_full_disk(start, executor, code, request, capfd,
                                                                            monkeypatch):
    """The submitter says the full disk (or the used-up quota) in one line (exit 4, a full
    disk's), not "ended without a result", and the task's progress line names it too; once there
    is room, the same submission finishes and leaves no reserve."""
    from megadocs import executors, job_arrays

    monkeypatch.setattr(executors, "LOST_GRACE_S", 0.0)  # (where no result file will come: the test's time)
    monkeypatch.setitem(job_arrays.ARRAY_POLL_S, "slurm", 1.0)
    case = STARTS[start]
    fs = request.getfixturevalue(case.fs)
    step = case.step(fs / "out", 1, name="fill")
    step.code = code
    profile = "slurm/profiles/local.yaml" if executor == "slurm" else None
    with pytest.raises(DiskFull) as caught:
        step.submit(executor, profile)
    assert not isinstance(caught.value, (UserError, WorkFailed))
    line = disk_full_message(caught.value)
    cause = f"{os.strerror(code).lower()} writing {case.names(step)}"
    assert line == f"{cause}{RETRY}", line
    err = capfd.readouterr().err
    assert "without a result" not in err, err
    (progress,) = [said for said in err.splitlines() if said.startswith("shard 0 (job ")]
    assert progress.endswith(f") FAILED ({cause}); 1 of 1 task(s) ended"), progress

    case.make_room(fs)
    assert Fill(step.folder, 1, name="fill").submit(executor, profile)["complete"]
    assert not list(fs.rglob("*.reserve*"))


class RequeuedOnce(Fill):
    """:class:`Fill` whose first attempt ends as submitit ends a task it requeued (a timeout, a
    preemption): SystemExit."""

    requeues = 1

    def _run_shard(self, index):
        if self.requeues:
            self.requeues -= 1
            raise SystemExit(-1)
        return super()._run_shard(index)


def test_a_requeued_task_keeps_its_reserves_file_for_its_next_attempt(tmp_path):
    """Its bytes are given back while it waits in the queue; its file is kept, so that its next
    attempt needs no new file (a quota of files used up meanwhile still lets it say so)."""
    from megadocs.shards import ShardTask

    step = RequeuedOnce(tmp_path / "out", 1, name="fill")
    step.prepared = step.prepare()  # (as its submission did)
    task = ShardTask(step, 0)
    task.set_aside()
    with pytest.raises(SystemExit):
        task()
    assert task.reserve_path.is_file() and task.reserve_path.stat().st_size == 0
    assert task() == {} and not list(tmp_path.rglob("*.reserve*"))
