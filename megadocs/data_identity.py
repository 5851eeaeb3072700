"""What a token store or a small data directory *is*, independent of where it lies.

A run's identity must change when its data changes and stay when its data moves. These functions
read the manifest that `megadocs data prepare` writes (docs/architecture.md) and keep the fields
that define the content: hashes of the source and tokenizer, split options and counts. Paths and
timestamps are left out. A generation pool's identity is :func:`megadocs.pools.pool_identity`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from megadocs.errors import UserError
from megadocs.formats import MANIFEST

__all__ = [
    "STORE_VOLATILE_FIELDS",
    "store_identity",
    "store_identity_of",
    "store_identity_hash",
    "directory_identity",
]

# Token-store manifest fields that say where or when, not what.
STORE_VOLATILE_FIELDS = ("source", "created")
# Store options that name a path (the tokenizer's content is in `tokenizer_hash`).
_STORE_PATH_OPTIONS = ("tokenizer",)


@lru_cache(maxsize=256)
def _read_json(path: str, mtime_ns: int, size: int) -> dict:
    """Cached by (path, mtime, size): a sweep asks for the same manifest for every point."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable manifest ({exc})") from None


def _manifest(directory: str | Path, field: str, what: str) -> dict:
    path = Path(directory) / MANIFEST
    try:
        stat = path.stat()
    except OSError:
        raise UserError(f"{field}: {directory}: {what} not found (no {MANIFEST})") from None
    return _read_json(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def store_identity(store: str | Path, field: str = "data.store") -> dict[str, Any]:
    """Source hash, tokenizer hash, split options and counts of a token store."""
    return store_identity_of(_manifest(store, field, "token store"))


def store_identity_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`store_identity` of a manifest already read (a store as it was opened).

    >>> store_identity_of({"format": "megadocs.token-store/1", "source": "/data/a.jsonl", "source_hash": "ab",
    ...                    "options": {"tokenizer": "/tok", "seed": 0}, "created": "today"})
    {'format': 'megadocs.token-store/1', 'source_hash': 'ab', 'options': {'seed': 0}}
    """
    identity = {k: v for k, v in manifest.items() if k not in STORE_VOLATILE_FIELDS}
    options = identity.get("options")
    if isinstance(options, dict):
        identity["options"] = {k: v for k, v in options.items() if k not in _STORE_PATH_OPTIONS}
    return identity


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def store_identity_hash(store: str | Path, field: str = "data.store") -> str:
    """:func:`store_identity` as a short hash: what a tokenized pool records of the store it read."""
    return hashlib.sha256(json.dumps(store_identity(store, field), sort_keys=True).encode()).hexdigest()[:16]


def directory_identity(directory: str | Path, field: str) -> str:
    """A content hash of a small directory's files (relative names and bytes)."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{field}: {directory}: not a directory")
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(_sha256_file(path).encode())
    return digest.hexdigest()[:16]
