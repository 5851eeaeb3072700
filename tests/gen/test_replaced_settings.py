"""A pool that holds only its manifest takes a re-run's settings (gen.generate), saying which
(one line, old -> new): a run of the earlier settings that is still going then writes nothing
into it. Two ways such a writer meets the replacement: generating its first chunk in the same
process's engine call (the interleaving made exact), and an array task of the earlier submission
that starts afterwards. While another run may still write (a task of an earlier job array queued
or running, a local task's process or a SLURM job, or a real `megadocs gen` process without
--executor, stopped before its first flush), the re-run is refused instead: it would spend its
compute and then be refused; one of the same settings is not. Transformers engine (cheap to load
in-process); the rows' ``seed`` tells the two runs apart."""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from gen.generate import GenerateOptions, GeneratePool, generate_pool, submit_shards
from megadocs import executors, job_arrays
from megadocs.errors import UserError, WorkFailed
from megadocs.pools import rows_path
from megadocs.run_record import SUBMISSIONS, live_runs
from megadocs.shards import JOBS, LOCK, ShardTask
from tests.gen.conftest import lock_waiters, read_rows, wait_for, write_docs

OPTIONS = {"max_new_tokens": 8, "chunk_docs": 1, "progress": False}
FIRST, SECOND = 1, 2  # the two runs' seeds: the setting that differs
REPLACED = r"manifest.json: seed: replaced since this gen-rephrase run started"
SAID = "manifest.json: replaced the settings of an earlier gen-rephrase run: seed: 1 -> 2"
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 300  # a generous bound on a loaded 2-core machine; the waits end on their condition


def _only_second_run(pool: Path, docs: int) -> None:
    rows = read_rows(pool)
    assert {row["seed"] for row in rows} == {SECOND} and len(rows) == docs
    assert read_manifest_seed(pool) == SECOND


def read_manifest_seed(pool: Path) -> int:
    import json

    return json.loads((pool / "manifest.json").read_text())["seed"]


def test_a_run_replaced_during_its_first_chunk_flushes_nothing(tiny_generator, docs4, engine, tmp_path, monkeypatch):
    """Run 1 is in its first engine call when run 2 (another seed) takes over the pool and
    finishes it; run 1's flush is refused in one line and run 2's pool stays whole."""
    out = tmp_path / "pool"
    real_generate, calls = engine.generate, []

    def second_run_takes_over(requests, sampling, progress=None):
        calls.append(len(requests))
        if len(calls) == 1:  # run 1's first chunk: run 2 starts and finishes meanwhile
            generate_pool("rephrase", docs4, tiny_generator, 1, out, engine=engine, seed=SECOND, **OPTIONS)
        return real_generate(requests, sampling, progress)

    monkeypatch.setattr(engine, "generate", second_run_takes_over)
    with pytest.raises(UserError, match=REPLACED):
        generate_pool("rephrase", docs4, tiny_generator, 1, out, engine=engine, seed=FIRST, **OPTIONS)
    _only_second_run(out, docs=4)


def test_an_array_task_of_replaced_settings_does_not_prepare_again(tiny_generator, docs4, engine, tmp_path):
    """Submission 1 prepared the pool and pickled its task (as submitit does); submission 2,
    with another seed, replaced the manifest before any row was written. Task 1 then starts: it
    refuses instead of preparing again (which would put its settings back under run 2's tasks)."""
    out = tmp_path / "pool"

    def submitted(seed: int) -> ShardTask:
        step = GeneratePool(GenerateOptions(kind="rephrase", docs=str(docs4), generator=str(tiny_generator), g=1,
                                            out=str(out), engine="transformers", seed=seed, **OPTIONS), engine)
        step.prepared = step.prepare()
        return pickle.loads(pickle.dumps(ShardTask(step, 0)))  # without the engine: a task loads its own

    first = submitted(FIRST)
    second = submitted(SECOND)
    with pytest.raises(UserError, match=REPLACED):
        first()
    assert not rows_path(out, 0, 1).exists()
    second.step.engine = engine  # (saves loading the model again in this process)
    second()
    _only_second_run(out, docs=4)


def _state(pid: int) -> str:
    """A process's state letter from /proc (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _recorded_pids(pool: Path) -> list[int]:
    """The processes the pool's record of runs holds (megadocs.run_record.ProcessRun entries)."""
    import json

    record = pool / JOBS / SUBMISSIONS
    entries = json.loads(record.read_text())["submissions"] if record.is_file() else []
    return [entry["pid"] for entry in entries if entry["kind"] == "process"]


def test_a_rerun_is_refused_while_a_process_of_other_settings_runs_and_not_with_the_same(tiny_generator, engine,
                                                                                        tmp_path):
    """Real processes: `megadocs gen rephrase` (run 1, no --executor) has written the manifest and
    holds its first chunk, waiting for the pool's lock to flush it, and is stopped there (SIGSTOP,
    as a terminal's Ctrl-Z). A re-run with another seed is refused in one line naming the folder,
    the process and `kill -INT PID`, changing nothing; a run with the same settings is not (it
    finishes the pool, as two runs of one command did before the record). `kill -INT PID` then
    ends run 1 (exit 130), which takes itself off the record. Ordered by the lock, not by timing:
    the test holds it from before run 1 starts and lets only its manifest through."""
    docs = write_docs(tmp_path / "docs.jsonl", n_docs=4)
    out = tmp_path / "pool"
    out.mkdir()
    command = [sys.executable, "-m", "megadocs.cli", "gen", "rephrase", "--docs", str(docs), "--generator",
               str(tiny_generator), "--g", "1", "--out", str(out), "--engine", "transformers", "--chunk-docs", "4",
               "--max-new-tokens", "8", "--seed", str(FIRST), "--no-progress"]
    lock_path = out / LOCK
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        try:
            ended = lambda: process.poll() is not None  # noqa: E731
            wait_for(lambda: process.pid in lock_waiters(lock_path) or ended(), WAIT_S, "run 1 to write its manifest")
            fcntl.flock(lock, fcntl.LOCK_UN)
            wait_for(lambda: process.pid in _recorded_pids(out) or ended(), WAIT_S, "run 1 to record itself")
            fcntl.flock(lock, fcntl.LOCK_EX)
            wait_for(lambda: process.pid in lock_waiters(lock_path) or ended(), WAIT_S,
                     "run 1 to flush its first chunk")
            assert not ended() and rows_path(out, 0, 1).stat().st_size == 0
            os.killpg(process.pid, signal.SIGSTOP)
            # stopped before the lock is let go: a waiter woken by the release could otherwise take
            # it first and then stop holding it
            wait_for(lambda: _state(process.pid) == "T", WAIT_S, "run 1 to stop")
            fcntl.flock(lock, fcntl.LOCK_UN)
            with pytest.raises(UserError) as refused:
                generate_pool("rephrase", docs, tiny_generator, 1, out, engine=engine, seed=SECOND, **OPTIONS)
            line = str(refused.value)
            assert line == (f"{out}: an earlier gen-rephrase run with other settings is still going (process "
                            f"{process.pid}): wait for it to end, or stop it (kill -INT {process.pid}), then re-run "
                            "(nothing was changed)")
            assert read_manifest_seed(out) == FIRST and rows_path(out, 0, 1).stat().st_size == 0  # nothing changed
            assert _recorded_pids(out) == [process.pid]
            generate_pool("rephrase", docs, tiny_generator, 1, out, engine=engine, seed=FIRST, **OPTIONS)
            subprocess.run(["kill", "-INT", str(process.pid)], check=True)
            os.killpg(process.pid, signal.SIGCONT)
            stdout, stderr = process.communicate(timeout=WAIT_S)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode == 130 and stdout == "" and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: ")
    assert _recorded_pids(out) == [] and not live_runs(out / JOBS)  # Ctrl-C took it off the record
    rows = read_rows(out)
    assert {row["seed"] for row in rows} == {FIRST} and len(rows) == 4 and read_manifest_seed(out) == FIRST


def _submitted_ids(pool: Path) -> list[str]:
    """The array tasks the pool's record holds (none before the first array is recorded)."""
    import json

    record = pool / JOBS / SUBMISSIONS
    entries = json.loads(record.read_text())["submissions"] if record.is_file() else []
    return [job_id for entry in entries for job_id in entry.get("job_ids", [])]


class _Submission(threading.Thread):
    """The first run's job array, submitted (and waited for, as the CLI does) in a thread."""

    def __init__(self, options: GenerateOptions, executor: str, profile: str | None = None) -> None:
        super().__init__(daemon=True)
        self.options, self.executor, self.profile, self.failed = options, executor, profile, None

    def run(self) -> None:
        try:
            submit_shards(self.options, self.executor, self.profile)
        except WorkFailed as exc:  # its task cancelled or killed
            self.failed = exc


def _refused_then_replaced(pool: Path, docs: Path, generator: Path, engine, cancel: str, capfd,
                           after_cancel=lambda: None) -> None:
    """The re-run (seed 2) is refused naming the folder, the live task and ``cancel``, changing
    nothing; once the task is cancelled (``cancel`` run here) it replaces the settings and says so."""
    with pytest.raises(UserError) as refused:
        generate_pool("rephrase", docs, generator, 1, pool, engine=engine, seed=SECOND, **OPTIONS)
    line = str(refused.value)
    assert line.startswith(f"{pool}: an earlier gen-rephrase run with other settings is still going") and "\n" not in line
    assert f"task(s) {', '.join(_submitted_ids(pool))}" in line and f"({cancel})" in line, line
    assert read_manifest_seed(pool) == FIRST and not read_rows(pool)  # nothing changed
    subprocess.run(cancel.split(), check=True)
    after_cancel()
    wait_for(lambda: not live_runs(pool / JOBS), WAIT_S, "the first submission's task to end")
    capfd.readouterr()
    generate_pool("rephrase", docs, generator, 1, pool, engine=engine, seed=SECOND, **OPTIONS)
    said = [line for line in capfd.readouterr().err.splitlines() if "replaced the settings" in line]
    assert said == [f"{pool / 'manifest.json'}: replaced the settings of an earlier gen-rephrase run: seed: 1 -> 2"]
    _only_second_run(pool, docs=4)


def test_a_rerun_is_refused_while_a_local_task_of_the_earlier_submission_runs(tiny_generator, docs4, engine,
                                                                              tmp_path, capfd, monkeypatch):
    """The first submission's local task is stopped (SIGSTOP) as soon as it is submitted, before
    it loaded the generator: alive, nothing flushed. `kill -INT PID` ends it (once continued)."""
    monkeypatch.setattr(executors, "LOST_GRACE_S", 0.0)
    pool = tmp_path / "pool"
    options = GenerateOptions(kind="rephrase", docs=str(docs4), generator=str(tiny_generator), g=1, out=str(pool),
                              engine="transformers", seed=FIRST, **OPTIONS)
    first = _Submission(options, "local")
    first.start()
    try:
        wait_for(lambda: _submitted_ids(pool), WAIT_S, "the first submission's array")
        (pid,) = map(int, _submitted_ids(pool))
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: _state(pid) == "T", WAIT_S, "its task to stop")
        _refused_then_replaced(pool, docs4, tiny_generator, engine, f"kill -INT {pid}", capfd,
                               after_cancel=lambda: os.kill(pid, signal.SIGCONT))
    finally:
        for job_id in _submitted_ids(pool)[:1]:
            subprocess.run(["kill", "-KILL", job_id], capture_output=True)
        first.join(WAIT_S)
    assert isinstance(first.failed, WorkFailed)


@pytest.mark.slurm
def test_a_rerun_is_refused_while_a_slurm_job_of_the_earlier_submission_is_queued(tiny_generator, docs4, engine,
                                                                                  tmp_path, capfd, monkeypatch):
    """The real local cluster: the first submission's job waits in the queue (``--begin`` an hour
    on: it never starts here); `scancel JOBID` ends it."""
    monkeypatch.setattr(executors, "LOST_GRACE_S", 0.0)
    monkeypatch.setitem(job_arrays.ARRAY_POLL_S, "slurm", 0.5)
    monkeypatch.setattr(executors, "QUEUE_CHECK_S", 0.0)
    later = _later_profile(tmp_path)
    pool = tmp_path / "pool"
    options = GenerateOptions(kind="rephrase", docs=str(docs4), generator=str(tiny_generator), g=1, out=str(pool),
                              engine="transformers", seed=FIRST, **OPTIONS)
    first = _Submission(options, "slurm", str(later))
    first.start()
    try:
        wait_for(lambda: _submitted_ids(pool), WAIT_S, "the first submission's array")
        (job_id,) = _submitted_ids(pool)
        _refused_then_replaced(pool, docs4, tiny_generator, engine, f"scancel {job_id.split('_')[0]}", capfd)
    finally:
        subprocess.run(["scancel", *_submitted_ids(pool)[:1]], capture_output=True)
        first.join(WAIT_S)
    assert isinstance(first.failed, WorkFailed)


SUBMITTER = """
import os, signal, sys
from megadocs import job_arrays
real_make_executor = job_arrays.make_executor
def held(*args, **kwargs):  # the test's hold (not a stand-in): manifest written, array not submitted yet
    os.kill(os.getpid(), signal.SIGSTOP)
    return real_make_executor(*args, **kwargs)
job_arrays.make_executor = held
from megadocs.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _later_profile(tmp_path: Path) -> Path:
    """The local cluster's profile with ``--begin`` an hour on: a job that waits in the queue."""
    profile = yaml.safe_load((ROOT / "slurm" / "profiles" / "local.yaml").read_text())
    profile["additional_parameters"] = {"begin": "now+3600"}
    (tmp_path / "later.yaml").write_text(yaml.safe_dump(profile))
    return tmp_path / "later.yaml"


@pytest.mark.slurm
def test_a_rerun_is_refused_while_a_submitter_is_between_its_manifest_and_its_array(tiny_generator, docs4, engine,
                                                                                    tmp_path):
    """A real `megadocs gen rephrase --executor slurm` stops itself (SIGSTOP) after writing the
    manifest, before it submits its array: the re-run with another seed is refused naming the
    submitter. Continued, it submits, and its array's entry replaces its own in one edit; its
    Ctrl-C then cancels the queued task (exit 130)."""
    out = tmp_path / "pool"
    command = [sys.executable, "-c", SUBMITTER, "gen", "rephrase", "--docs", str(docs4), "--generator",
               str(tiny_generator), "--g", "1", "--out", str(out), "--engine", "transformers", "--max-new-tokens",
               "8", "--seed", str(FIRST), "--no-progress", "--num-shards", "1", "--executor", "slurm", "--profile",
               str(_later_profile(tmp_path))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
        wait_for(lambda: process.poll() is not None or _state(process.pid) == "T", WAIT_S, "the submitter's hold")
        assert process.poll() is None and _recorded_pids(out) == [process.pid]
        with pytest.raises(UserError) as refused:
            generate_pool("rephrase", docs4, tiny_generator, 1, out, engine=engine, seed=SECOND, **OPTIONS)
        assert str(refused.value) == (
            f"{out}: an earlier gen-rephrase run with other settings is still going (process {process.pid}): wait "
            f"for it to end, or stop it (kill -INT {process.pid}), then re-run (nothing was changed)")
        os.kill(process.pid, signal.SIGCONT)
        wait_for(lambda: process.poll() is not None or _submitted_ids(out), WAIT_S, "the array's entry")
        assert _recorded_pids(out) == [] and len(_submitted_ids(out)) == 1  # handed over, in one edit
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        subprocess.run(["scancel", *_submitted_ids(out)], capture_output=True)
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: cancelled 1 slurm task(s)"), stderr[-2000:]
    assert read_manifest_seed(out) == FIRST and not read_rows(out)
