"""What a token store or a generation pool *is*, independent of where it lies.

A run's identity must change when its data changes and stay when its data moves. These functions
read the manifests that `megadocs data prepare`, `megadocs gen` and `megadocs gen assemble` write
(docs/architecture.md) and keep the fields that define the content: hashes of the source and
tokenizer, split options, generator, prompt hash, sampling, seed, assembly choice. Paths and
timestamps are left out. Both train (run identities) and gen (a pool's compatibility check) read
the field lists from here, so there is one definition of "the same pool".

Example:
    >>> pool_identity_of({"format": "megadocs.gen-pool/1", "kind": "rephrase", "g": 2,
    ...                   "prompt_template": {"sha256": "ab", "name": "wrap"}, "created": "today"})
    {'format': 'megadocs.gen-pool/1', 'kind': 'rephrase', 'g': 2, 'prompt_template.sha256': 'ab'}
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from megadocs.errors import UserError

__all__ = [
    "POOL_IDENTITY_FIELDS",
    "STORE_VOLATILE_FIELDS",
    "pool_identity_of",
    "store_identity",
    "pool_identity",
    "assembled_identity",
    "directory_identity",
]

MANIFEST = "manifest.json"
# Fields that define a pool's generations (a run appending to a pool must agree on them too).
POOL_IDENTITY_FIELDS = ("format", "kind", "g", "source_hash", "n_docs", "generator", "generator_revision",
                        "prompt_template.sha256", "chat_template.sha256", "sampling", "seed",
                        "num_shards", "max_model_len")
# Token-store manifest fields that say where or when, not what.
STORE_VOLATILE_FIELDS = ("source", "created")
# Store options that name a path (the tokenizer's content is in `tokenizer_hash`).
_STORE_PATH_OPTIONS = ("tokenizer",)
# Assembled-manifest fields that define the synthetic documents (the pool's are added separately).
_ASSEMBLED_FIELDS = ("format", "algorithm", "g", "generation_indices", "documents", "segments",
                     "excluded_empty", "thought_tags")


def _dotted(data: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def pool_identity_of(manifest: dict) -> dict[str, Any]:
    """The identity fields of a pool manifest (absent ones left out)."""
    out = {}
    for key in POOL_IDENTITY_FIELDS:
        value = _dotted(manifest, key)
        if value is not None:
            out[key] = value
    return out


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
    manifest = _manifest(store, field, "token store")
    identity = {k: v for k, v in manifest.items() if k not in STORE_VOLATILE_FIELDS}
    options = identity.get("options")
    if isinstance(options, dict):
        identity["options"] = {k: v for k, v in options.items() if k not in _STORE_PATH_OPTIONS}
    return identity


def pool_identity(pool: str | Path, field: str = "data.synthetic.pool") -> dict[str, Any]:
    """The generation-defining fields of a pool (generator, prompt hash, sampling, seed, ...)."""
    return pool_identity_of(_manifest(pool, field, "generation pool"))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def assembled_identity(pool: str | Path, assembled: str | Path,
                       field: str = "data.synthetic") -> dict[str, Any] | None:
    """What an assembled document set holds, or None when it has not been assembled.

    Raises UserError when the assembly is older than its pool's generations (the pool was
    regenerated afterwards): training on it would mix one pool's identity with another's text.
    Statistics added to the pool manifest later (e.g. diversity) do not make it stale.
    """
    path = Path(assembled) / MANIFEST
    if not path.is_file():
        return None
    manifest = _manifest(assembled, field, "assembly")
    if "pool_identity" in manifest:  # the generations it was assembled from
        stale = manifest["pool_identity"] != pool_identity(pool, f"{field}.pool")
    else:  # assemblies written before pool identities were recorded: the whole manifest's hash
        recorded = manifest.get("pool_manifest_sha256")
        stale = recorded is not None and recorded != _sha256_file(Path(pool) / MANIFEST)
    if stale:
        raise UserError(f"{field}: {assembled} was assembled from an earlier version of {pool}; "
                        f"re-run `megadocs gen assemble --pool {pool} --algorithm "
                        f"{manifest.get('algorithm')} --g {manifest.get('g')} --overwrite`")
    return {k: manifest[k] for k in _ASSEMBLED_FIELDS if k in manifest}


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
