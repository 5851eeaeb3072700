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
    "STORE_DUPLICATES_REMOVED",
    "store_identity",
    "store_identity_of",
    "store_identity_hash",
    "directory_identity",
    "read_directory",
    "files_identity",
]

# Token-store manifest fields that say where or when, not what.
STORE_VOLATILE_FIELDS = ("source", "created")
# Store options that name a path (the tokenizer's content is in `tokenizer_hash`).
_STORE_PATH_OPTIONS = ("tokenizer",)
STORE_DUPLICATES_REMOVED = "duplicates_removed"
"""Manifest field: texts left out as duplicates before the split (absent in stores prepared before)."""
# Manifest fields added since stores were first written, at the value every earlier store had in
# effect: left out of the identity at that value, so a store prepared again keeps its identity.
_STORE_FIELDS_SINCE = {STORE_DUPLICATES_REMOVED: 0}


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
    ...                    "options": {"tokenizer": "/tok", "seed": 0}, "created": "today", "duplicates_removed": 0})
    {'format': 'megadocs.token-store/1', 'source_hash': 'ab', 'options': {'seed': 0}}
    """
    identity = {k: v for k, v in manifest.items()
                if k not in STORE_VOLATILE_FIELDS and not (k in _STORE_FIELDS_SINCE and v == _STORE_FIELDS_SINCE[k])}
    options = identity.get("options")
    if isinstance(options, dict):
        identity["options"] = {k: v for k, v in options.items() if k not in _STORE_PATH_OPTIONS}
    return identity


def store_identity_hash(store: str | Path, field: str = "data.store") -> str:
    """:func:`store_identity` as a short hash: what a tokenized pool records of the store it read."""
    return hashlib.sha256(json.dumps(store_identity(store, field), sort_keys=True).encode()).hexdigest()[:16]


def directory_identity(directory: str | Path, field: str) -> str:
    """A content hash of a small directory's files (relative names and bytes)."""
    return files_identity(read_directory(directory, field))


def read_directory(directory: str | Path, field: str) -> dict[str, bytes]:
    """Every file of a small directory, read once: relative name (``/``-separated) -> bytes, in
    the order :func:`files_identity` hashes them (walked top-down, names sorted).

    Raises:
        UserError: naming ``field``: not a directory, or a file that cannot be read.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{field}: {directory}: not a directory")
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                files[path.relative_to(root).as_posix()] = path.read_bytes()
            except OSError as exc:
                raise UserError(f"{field}: {path}: cannot read ({exc.strerror or exc})") from None
    return files


def files_identity(files: Mapping[str, bytes]) -> str:
    """:func:`directory_identity` of files already read (:func:`read_directory`, in its order)."""
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(data).hexdigest().encode())
    return digest.hexdigest()[:16]
