"""A pool that holds only its manifest takes a re-run's settings (gen.generate): a run of the
earlier settings that is still going then writes nothing into it. The three ways such a writer
meets the replacement: generating its first chunk in the same process's engine call (the
interleaving made exact), an array task of the earlier submission that starts afterwards, and a
real `megadocs gen` process stopped before its first flush while the other run takes over.
Transformers engine (cheap to load in-process); the rows' ``seed`` tells the two runs apart."""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gen.generate import GenerateOptions, GeneratePool, generate_pool
from megadocs.errors import UserError
from megadocs.pools import rows_path
from megadocs.shards import LOCK, ShardTask
from tests.gen.conftest import lock_waiters, read_rows, wait_for, write_docs

OPTIONS = {"max_new_tokens": 8, "chunk_docs": 1, "progress": False}
FIRST, SECOND = 1, 2  # the two runs' seeds: the setting that differs
REPLACED = r"manifest.json: seed: replaced since this gen-rephrase run started"
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


@pytest.mark.slow
def test_a_process_stopped_before_its_first_flush_writes_nothing_after_a_takeover(tiny_generator, engine, tmp_path):
    """Real processes: `megadocs gen rephrase` (run 1) has written the manifest and holds its first
    chunk, waiting for the pool's lock to flush it; it is stopped (SIGSTOP, as a node stalls) while
    run 2 (another seed) takes the pool over and finishes it, then continued. Run 1 is refused in
    one line and the pool holds run 2's rows only. Ordered by the lock, not by timing: the test
    holds it from before run 1 starts and lets only its manifest through."""
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
            wait_for(lambda: (out / "manifest.json").is_file() or ended(), WAIT_S, "run 1's manifest")
            fcntl.flock(lock, fcntl.LOCK_EX)
            wait_for(lambda: process.pid in lock_waiters(lock_path) or ended(), WAIT_S,
                     "run 1 to flush its first chunk")
            assert not ended() and rows_path(out, 0, 1).stat().st_size == 0
            os.killpg(process.pid, signal.SIGSTOP)
            # stopped before the lock is let go: a waiter woken by the release could otherwise take
            # it first and then stop holding it
            wait_for(lambda: _state(process.pid) == "T", WAIT_S, "run 1 to stop")
            fcntl.flock(lock, fcntl.LOCK_UN)
            generate_pool("rephrase", docs, tiny_generator, 1, out, engine=engine, seed=SECOND, **OPTIONS)
            os.killpg(process.pid, signal.SIGCONT)
            stdout, stderr = process.communicate(timeout=WAIT_S)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode == 2 and stdout == "" and "Traceback" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]  # (transformers' weight-loading bar comes before it)
    assert last.startswith("error: ") and "manifest.json: seed: replaced since this gen-rephrase run started" in last
    _only_second_run(out, docs=4)
