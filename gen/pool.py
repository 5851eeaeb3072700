"""The on-disk generation pool (docs/architecture.md, "Generation pool").

```
POOL/manifest.json                    provenance (identity fields) + statistics
POOL/shard-{i:05d}-of-{n:05d}.jsonl   one row per generation, appended in flushed chunks
POOL/shard-{i:05d}-of-{n:05d}.done    completion marker: the shard's statistics (JSON)
```

Rows of one document are written together and documents are appended in order, so a killed run
leaves at most one document half-written (and possibly a torn last line). :func:`load_shard`
keeps only documents with all their generations (streaming the file twice, never holding it),
rewrites the file atomically when it dropped anything, and returns the done documents; generation then resumes with the remaining documents. The
``.done`` marker is written only after the rows are fsynced, so "done" always means durable.

Document ``k`` of the source (0-based, in :func:`megadocs.corpus.iter_documents` order) belongs to
shard ``k % n``.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from megadocs.data_identity import POOL_IDENTITY_FIELDS, pool_identity_of
from megadocs.errors import UserError
from megadocs.formats import atomic_file, write_json

__all__ = [
    "POOL_FORMAT", "MANIFEST", "IDENTITY_FIELDS", "pool_identity_of", "locked", "shard_stem", "rows_path", "done_path",
    "shard_of", "read_manifest", "check_identity", "load_shard", "iter_shard_rows",
    "require_complete", "iter_doc_groups", "refresh_statistics", "STAT_COUNTS", "is_empty", "sample_doc_id",
]

POOL_FORMAT = "megadocs.gen-pool/1"
MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
# Fields that must agree between a pool's manifest and a run that appends to it (the same fields
# make a pool's part of a training run's identity).
IDENTITY_FIELDS = POOL_IDENTITY_FIELDS
# Per-shard counters summed into the manifest's statistics.
STAT_COUNTS = ("documents", "generations", "output_tokens", "truncated_prompts", "length_truncated",
               "empty_outputs", "run_tokens", "run_seconds")


def is_empty(row: dict) -> bool:
    """An empty generation (only whitespace): recorded in the pool, excluded from assembly."""
    return not row["text"].strip()


def sample_doc_id(k: int) -> str:
    """The document id of unconditional sample ``k`` in a ``sample`` pool."""
    return f"sample-{k:07d}"


def shard_stem(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


def rows_path(pool: Path, index: int, count: int) -> Path:
    return Path(pool) / f"{shard_stem(index, count)}.jsonl"


def done_path(pool: Path, index: int, count: int) -> Path:
    return Path(pool) / f"{shard_stem(index, count)}.done"


def shard_of(doc_index: int, count: int) -> int:
    """The shard that owns the ``doc_index``-th document of the source."""
    return doc_index % count


def read_manifest(pool: str | Path) -> dict:
    path = Path(pool) / MANIFEST
    if not path.is_file():
        raise UserError(f"--pool: {pool}: no {MANIFEST} (expected a directory written by "
                        f"`megadocs gen rephrase|thoughts`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg})") from None
    if manifest.get("format") != POOL_FORMAT:
        raise UserError(f"{path}: format: expected {POOL_FORMAT!r}, got {manifest.get('format')!r}")
    return manifest


def check_identity(existing: dict, planned: dict, pool: Path) -> None:
    """Refuse to extend a pool generated with different settings (names the first field)."""
    old_identity, new_identity = pool_identity_of(existing), pool_identity_of(planned)
    for field in IDENTITY_FIELDS:
        old, new = old_identity.get(field), new_identity.get(field)
        if old != new:
            raise UserError(f"{Path(pool) / MANIFEST}: {field}: the pool was generated with {old!r}, "
                            f"this run asks for {new!r} (use a new --out, or the pool's settings)")


def iter_shard_rows(path: Path) -> Iterator[dict]:
    """The rows of a shard file one at a time, skipping torn lines (a shard is never held in memory)."""
    for _line, row in _iter_lines(path):
        if row is not None:
            yield row


def _iter_lines(path: Path) -> Iterator[tuple[bytes, dict | None]]:
    """(line, row) per line; row None for a blank or torn line (from a killed writer)."""
    with open(path, "rb") as handle:
        for line in handle:
            row = None
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    pass
            yield line, row


def load_shard(path: Path, g: int) -> list[str]:
    """The doc_ids of the complete documents in a shard file, in file order.

    A document is complete when it has exactly the gen_index values 0..g-1; duplicates keep the
    first row. Anything else (a torn line, a half-written document) is dropped and the file is
    rewritten atomically without it. Two streaming passes: memory is one bit mask per document,
    whatever the shard's size.
    """
    if not path.is_file():
        return []
    seen: dict[str, int] = {}  # doc_id -> bit mask of the gen_index values read
    clean = True
    for _line, row in _iter_lines(path):
        if row is None:
            clean = False
            continue
        bit = 1 << int(row["gen_index"])
        mask = seen.get(row["doc_id"], 0)
        clean &= not mask & bit
        seen[row["doc_id"]] = mask | bit
    full = (1 << g) - 1
    complete = [doc for doc, mask in seen.items() if mask == full]
    if clean and len(complete) == len(seen):
        return complete
    keep, written = set(complete), set()
    with atomic_file(path, "wb") as out:
        for line, row in _iter_lines(path):
            key = None if row is None else (row["doc_id"], int(row["gen_index"]))
            if key is None or key[0] not in keep or key in written:
                continue
            written.add(key)
            out.write(line if line.endswith(b"\n") else line + b"\n")
    return complete


def require_complete(pool: Path, manifest: dict) -> None:
    """Raises UserError when a shard has no completion marker (still being generated)."""
    count = manifest["num_shards"]
    missing = [i for i in range(count) if not done_path(pool, i, count).is_file()]
    if missing:
        raise UserError(f"--pool: {pool}: incomplete, shards {missing[:8]} of {count} are not done "
                        f"(re-run the generation command to finish them)")


def iter_doc_groups(pool: Path, index: int, count: int) -> Iterator[tuple[str, list[dict]]]:
    """(doc_id, rows) of one shard in file order (= source order within the shard)."""
    with open(rows_path(pool, index, count), "rb") as handle:
        rows = (json.loads(line) for line in handle if line.strip())
        for doc_id, group in itertools.groupby(rows, key=lambda row: row["doc_id"]):
            yield doc_id, list(group)


@contextlib.contextmanager
def locked(pool: Path):
    with open(Path(pool) / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refresh_statistics(pool: Path) -> dict:
    """Recompute the manifest's statistics from the shards' done markers (under a file lock, so
    concurrent array tasks cannot overwrite each other's totals). Returns the new manifest."""
    pool = Path(pool)
    with locked(pool):
        manifest = read_manifest(pool)
        count = manifest["num_shards"]
        totals = dict.fromkeys(STAT_COUNTS, 0)
        done = []
        for index in range(count):
            marker = done_path(pool, index, count)
            if marker.is_file():
                stats = json.loads(marker.read_text())
                done.append(index)
                for key in STAT_COUNTS:
                    totals[key] += stats.get(key, 0)
        generations = totals["generations"]
        manifest["statistics"] = {
            **{k: totals[k] for k in STAT_COUNTS if k not in ("run_tokens", "run_seconds")},
            "mean_tokens": totals["output_tokens"] / generations if generations else 0.0,
            "tokens_per_s": totals["run_tokens"] / totals["run_seconds"] if totals["run_seconds"] else None,
            "generation_seconds": totals["run_seconds"],
            "shards_done": len(done),
        }
        manifest["complete"] = len(done) == count
        write_json(pool / MANIFEST, manifest)
        return manifest
