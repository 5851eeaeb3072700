"""Generation shards as one job array on the real cluster; killed mid-way, re-run, resumed.

`megadocs gen rephrase ... --executor slurm --profile slurm/profiles/local.yaml` with the tiny
local generator (gen/tiny.py). The engine is transformers: the vLLM engine is covered by
tests/gen; here the subject is the cluster path (arrays, cancellation, resume).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm.conftest import LOCAL_PROFILE, final_history, wait_for

pytestmark = pytest.mark.slurm

SHARDS, G = 3, 2


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory) -> Path:
    from gen.tiny import make_tiny_generator

    return make_tiny_generator(tmp_path_factory.mktemp("generator") / "tiny")


def _command(store: Path, generator: Path, pool: Path) -> list[str]:
    return [sys.executable, "-m", "megadocs.cli", "gen", "rephrase", "--docs", str(store), "--generator",
            str(generator), "--g", str(G), "--out", str(pool), "--num-shards", str(SHARDS), "--chunk-docs", "1",
            "--max-new-tokens", "48", "--engine", "transformers", "--no-progress",
            "--executor", "slurm", "--profile", str(LOCAL_PROFILE)]


def _submitted(stderr: str) -> list[str]:
    match = re.search(r"submitted \d+ shard task\(s\) to slurm: ([0-9_, ]+)", stderr)
    assert match, stderr[-3000:]
    return [job_id.strip() for job_id in match.group(1).split(",")]


def _rows(pool: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(pool.glob("shard-*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


def test_generation_shards_run_as_an_array_and_resume_after_kill(slurm_cluster, small_store, tiny_generator,
                                                                 tmp_path):
    pool = tmp_path / "pool"
    first = subprocess.Popen(_command(small_store, tiny_generator, pool), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # mid-way: some shard has flushed rows, and some shard is not done
        wait_for(lambda: _rows(pool) if pool.is_dir() else None, 180, "the first flushed generations")
    finally:
        first.send_signal(signal.SIGKILL)  # the submitter dies ...
        _, first_err = first.communicate()
    first_ids = _submitted(first_err)
    array = first_ids[0].split("_")[0]
    assert first_ids == [f"{array}_{i}" for i in range(SHARDS)]  # one array, a task per shard
    # ... and so do its jobs, abruptly (a node crash): SIGKILL to each task's processes
    subprocess.run(["scancel", "--signal=KILL", *[f"{job_id}.0" for job_id in first_ids]], check=True)
    histories = [final_history(job_id) for job_id in first_ids]
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip(),
             60, f"array {array} to leave the queue")
    done_before = sorted(p.name for p in pool.glob("*.done"))
    held = {path.stem for path in pool.glob("shard-*.jsonl") if path.read_text().strip()}  # rows before the kill
    assert ["FAILED"] in histories, histories  # at least one shard was killed mid-way
    assert len(done_before) < SHARDS, "every shard finished before the kill; nothing to resume"

    second = subprocess.run(_command(small_store, tiny_generator, pool), capture_output=True, text=True, timeout=300)

    assert second.returncode == 0, second.stderr[-3000:]
    second_ids = _submitted(second.stderr)
    assert len(second_ids) == SHARDS - len(done_before)  # finished shards are not submitted again
    assert second_ids[0].split("_")[0] != array
    assert all(final_history(job_id) == ["COMPLETED"] for job_id in second_ids)
    rows = _rows(pool)
    keys = [(row["doc_id"], row["gen_index"]) for row in rows]
    assert len(keys) == len(set(keys)), "a generation was written twice"
    docs = {row["doc_id"] for row in rows}
    assert sorted(keys) == sorted((doc, i) for doc in docs for i in range(G))
    manifest = json.loads((pool / "manifest.json").read_text())
    assert manifest["statistics"]["documents"] == len(docs) == json.loads(
        (small_store / "manifest.json").read_text())["splits"]["train"]["documents"]
    # a resumed shard's statistics count every run of it (its .progress log): the tokens of the rows the
    # killed run left, and those of the rest, never more than the shard holds (a kill between a chunk's
    # rows and its progress line loses that chunk's figures, never counts them twice)
    markers = {path.stem: json.loads(path.read_text()) for path in sorted(pool.glob("*.done"))
               if path.name not in done_before}
    assert markers and all(0 < m["run_tokens"] <= m["output_tokens"] for m in markers.values()), markers
    resumed = [m for stem, m in markers.items() if stem in held]
    assert any(m["run_tokens"] == m["output_tokens"] for m in resumed), (held, markers)
