"""CPU cost of a local sweep's runs with and without the thread policy of the local executor.

Two runs of the tiny model go at once (``executor: {kind: local, max_parallel: 2}``), as in a
user's sweep on one machine. Measured twice with the same sweep:

- ``default``: every job with as many threads as the machine has cores, for PyTorch's OpenMP
  and for MKL, which is what they do when OMP_NUM_THREADS and MKL_NUM_THREADS are unset (the
  executor before issue 34; measured alike: two `megadocs train` runs at once with both unset
  cost 138 CPU-s each, with OMP_NUM_THREADS=2 alone 178, with OMP_NUM_THREADS=1 alone 12);
- ``policy``: the executor's own choice, cores / max_parallel (``megadocs.procs.threads_per_job``).

The figure is the CPU seconds a run costs (its ``cpu_s`` in log.jsonl, all threads) under the
policy over the default (target <= 0.67: at least 1.5x less CPU; issue 34 measured 21 vs 61).
Oversubscribed OpenMP threads spin at barriers, so the default costs more the busier the machine:
the load average is recorded next to the figures.

Usage: ``python benchmarks/local_threads.py [--epochs 8]``. The last stdout line is a JSON
summary for `benchmarks/run_all.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from megadocs.procs import THREAD_VARIABLES, available_cores, threads_per_job

TARGET_RATIO = 0.67
MAX_PARALLEL = 2


def _megadocs(*args: str, env: dict[str, str]) -> None:
    subprocess.run([str(Path(sys.executable).with_name("megadocs")), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def prepare_store(work: Path) -> Path:
    """The demo's smoke corpus (32 stdlib docstrings of 300-1600 characters) as a token store."""
    from megadocs.corpus import iter_documents

    rows = []
    for document in iter_documents("stdlib"):
        if 300 <= len(document.text) <= 1600:
            rows.append({"id": document.doc_id, "text": document.text})
        if len(rows) == 32:
            break
    (work / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    _megadocs("data", "prepare", "--corpus", str(work / "corpus.jsonl"), "--out", str(work / "store"),
              "--vocab-size", "512", "--val-docs", "8", env={**os.environ, "OMP_NUM_THREADS": "1"})
    return work / "store"


def measure(work: Path, store: Path, name: str, threads: int | None, epochs: int) -> dict:
    """Certify a two-point grid (both points in the first batch, in parallel); CPU-s per run."""
    sweep = {
        "name": name, "out": str(work / name),
        "executor": {"kind": "local", "max_parallel": MAX_PARALLEL, "poll_s": 0.5},
        "train": {"data": {"store": str(store), "context": 64}, "model": {"preset": "tiny-1m"},
                  "optim": {"batch_size": 8, "micro_batch_size": 8}, "eval": {"val_windows": 64},
                  "checkpoint_every": 10_000, "device": "cpu"},
        "grid": {"lr": [0.003, 0.01], "wd": [0.1], "epochs": [epochs]},
        "start": {"lr": 0.003, "wd": 0.1, "epochs": epochs},
        "certifications": [{"name": "real", "fixed": {"method": "real"}}],
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads is not None:  # a user's own setting wins over the executor's policy
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    _megadocs("search", "certify", str(path), "--no-progress", env=env)
    wall = time.perf_counter() - started
    cpu = [json.loads(log.read_text().splitlines()[-1])["cpu_s"] for log in (work / name / "runs").glob("*/log.jsonl")]
    return {"cpu_s_per_run": sum(cpu) / len(cpu), "runs": len(cpu), "wall_s": wall,
            "load_before": load, "load_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8, help="real epochs of each run (8: 138 steps)")
    args = parser.parse_args(argv)
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = prepare_store(work)
        default = measure(work, store, "default", cores, args.epochs)
        policy = measure(work, store, "policy", None, args.epochs)
    ratio = policy["cpu_s_per_run"] / default["cpu_s_per_run"]
    print(f"{MAX_PARALLEL} runs at once on {cores} cores: {default['cpu_s_per_run']:.1f} CPU-s a run with {cores} "
          f"threads each, {policy['cpu_s_per_run']:.1f} with {threads_per_job(MAX_PARALLEL)} (ratio {ratio:.3f})",
          file=sys.stderr)
    print(json.dumps({
        "name": "local_threads", "ratio": round(ratio, 4), "target": TARGET_RATIO, "meets_target": ratio <= TARGET_RATIO,
        "cores": cores, "max_parallel": MAX_PARALLEL, "threads_default": cores,
        "threads_policy": threads_per_job(MAX_PARALLEL),
        "default": {k: round(v, 2) for k, v in default.items()}, "policy": {k: round(v, 2) for k, v in policy.items()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
