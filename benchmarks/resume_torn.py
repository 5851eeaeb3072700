"""Resuming a generation shard after a cut-off write: what dropping the torn tail costs.

A shard of ``SHARD_MB`` (rows of about 2,600 characters, G = 8, like the paper's rephrases) ends
in a torn chunk: two complete documents, one half-written and a torn last line. Resuming first
drops that tail (``megadocs.pools.load_shard``). Measured, each on a tmpfs of its own (the shard in
memory, so the time is the code's, not a disk's), best of ``REPEATS``:

- ``truncate``: ``load_shard`` as it is, which cuts the tail off in place (truncate + fsync);
- ``rewrite``: the previous way (kept here as the baseline, :func:`_rewrite`): a copy of the file
  without the tail written through ``megadocs.formats.atomic_file`` and renamed over it.

For each: seconds, and the peak extra disk (the file system's used bytes sampled every
millisecond, minus those before). Then each once more on a FULL file system (a tmpfs just large
enough for the shard, no byte left): whether resuming can drop the tail at all.

Run: ``python benchmarks/resume_torn.py`` (needs root, to mount the tmpfs; the last stdout line is
the JSON summary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

SHARD_MB = int(os.environ.get("RESUME_TORN_MB", "200"))
G = 8
GEN_CHARS = 2600
REPEATS = 3


def _write_shard(path: Path, megabytes: int) -> int:
    """Complete documents up to ``megabytes``, then the torn chunk; returns the size in bytes."""
    text = ("The quick brown fox jumps over the lazy dog. " * 60)[:GEN_CHARS]
    with open(path, "w") as handle:
        doc = 0
        while handle.tell() < megabytes * 2**20:
            for i in range(G):
                handle.write(json.dumps({"doc_id": f"d{doc}", "gen_index": i, "text": text}) + "\n")
            doc += 1
        for i in range(G // 2):  # the chunk in flight: half a document, then a torn line
            handle.write(json.dumps({"doc_id": f"d{doc}", "gen_index": i, "text": text}) + "\n")
        handle.write(json.dumps({"doc_id": f"d{doc}", "gen_index": G // 2, "text": text})[:100])
    return path.stat().st_size


def _rewrite(path: Path, g: int) -> list[str]:
    """The previous ``load_shard``: scan, then rewrite the file atomically without the tail."""
    from megadocs.formats import atomic_file
    from megadocs.pools import _iter_lines

    seen: dict[str, int] = {}
    for _number, _line, row, _why, _end in _iter_lines(path):
        if row is not None:
            seen[row.doc_id] = seen.get(row.doc_id, 0) | 1 << row.gen_index
    keep = {doc for doc, mask in seen.items() if mask == (1 << g) - 1}
    with atomic_file(path, "wb") as out:
        for _number, line, row, _why, _end in _iter_lines(path):
            if row is not None and row.doc_id in keep and line.endswith(b"\n"):
                out.write(line)
    return sorted(keep)


def _drop_tail(how: str) -> Callable[[Path, int], list[str]]:
    """The way ``how`` drops a shard's torn tail: ``load_shard`` as it is, or the previous rewrite."""
    from megadocs.pools import load_shard

    return load_shard if how == "truncate" else _rewrite


def _used(folder: Path) -> int:
    stats = os.statvfs(folder)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def _measure(how: str, folder: Path, megabytes: int) -> dict:
    shard = folder / "shard-00000-of-00001.jsonl"
    size = _write_shard(shard, megabytes)
    base, peak, done = _used(folder), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _used(folder) - base)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    kept = _drop_tail(how)(shard, G)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    shard.unlink()
    return {"seconds": seconds, "peak_extra_mb": peak[0] / 2**20, "shard_mb": size / 2**20, "kept_docs": len(kept)}


def _tmpfs(megabytes: int) -> tuple[Path, Callable[[], object]]:
    folder = Path(tempfile.mkdtemp(prefix="resume-torn-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)], check=True)
    return folder, lambda: (subprocess.run(["umount", "-l", str(folder)]), folder.rmdir())


def _on_a_full_disk(how: str) -> str:
    """Drop the tail on a tmpfs with no byte left beside the shard: 'ok' or the error."""
    folder, unmount = _tmpfs(SHARD_MB + 8)
    try:
        shard = folder / "shard-00000-of-00001.jsonl"
        _write_shard(shard, SHARD_MB)
        with open(folder / "filler", "wb", buffering=0) as handle:
            stats = os.statvfs(folder)
            os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize)
        try:
            _drop_tail(how)(shard, G)
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror}"
        return "ok"
    finally:
        unmount()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    results: dict = {"name": "resume_torn"}
    folder, unmount = _tmpfs(3 * SHARD_MB + 64)  # room for the shard and a whole copy
    try:
        for how in ("truncate", "rewrite"):
            runs = [_measure(how, folder, SHARD_MB) for _ in range(REPEATS)]
            best = min(runs, key=lambda run: run["seconds"])
            results[how] = {**best, "peak_extra_mb": max(run["peak_extra_mb"] for run in runs)}
            print(how, results[how], file=sys.stderr)
    finally:
        unmount()
    for how in ("truncate", "rewrite"):
        results[how]["on_a_full_disk"] = _on_a_full_disk(how)
    results["speedup"] = results["rewrite"]["seconds"] / results["truncate"]["seconds"]
    from megadocs.formats import dumps_json

    print(dumps_json(results, indent=None))  # standard JSON: refuses a NaN/Infinity rather than print it


if __name__ == "__main__":
    main()
