"""What a model directory *is*: a content fingerprint of its files, hashed once and cached.

A generation pool names its generator by content (:func:`model_fingerprint`), so byte-identical
generators at two paths give the same pool identity (and so the same run identities), and new
weights written over old ones at the same path give a new one, whatever their sizes.

Cost: every file at the top level of the directory is read once through sha256 (1.4 GB per
CPU-second, 0.57 GB/s wall with the reads, on this machine: ``benchmarks/data_scale.py``,
``fingerprint``): a Llama 3.1 8B Instruct directory holds 16 GB of safetensors, about 11 s of CPU
when its disk keeps up, minutes on a slow network disk. Each file's digest is then cached under :func:`cache_path`
(``$MEGADOCS_CACHE_DIR``, else ``$XDG_CACHE_HOME/megadocs``, else ``~/.cache/megadocs``:
``file-sha256.json``, a few hundred bytes per file), keyed by the file's resolved path, size and
modification time, so later commands on unchanged files read nothing. Subdirectories (e.g. Meta's
``original/`` checkpoint beside the Hugging Face files) are not what transformers or vLLM load and
are left out, and so are the files that only describe the model (:func:`describes_only`: the model
card ``README.md`` and other Markdown, licences, notices): `megadocs train` writes a model card
naming its output path and command, so one generator trained twice into two folders has identical
weights, config and tokenizer but two cards (seen on two demo runs, 2026-12-04).

Example:
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
    ...     for d in (a, b):
    ...         _ = (pathlib.Path(d) / "model.safetensors").write_bytes(b"weights")
    ...     model_fingerprint(a, cache=False) == model_fingerprint(b, cache=False)
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from megadocs.errors import UserError
from megadocs.formats import write_json
from megadocs.procs import exclusive_lock

__all__ = ["FINGERPRINT_PREFIX", "LEGACY_PREFIX", "describes_only", "model_fingerprint", "legacy_fingerprint", "cache_path",
           "file_sha256"]

FINGERPRINT_PREFIX = "sha256:"
"""Prefix of a content fingerprint (:func:`model_fingerprint`)."""
LEGACY_PREFIX = "dir-sha256:"
"""Prefix of the fingerprint pools recorded before: small files' bytes, weight files' sizes only."""
CACHE_FILE = "file-sha256.json"
_CHUNK = 1 << 24


def cache_path() -> Path:
    """Where file digests are cached (see the module docstring)."""
    root = os.environ.get("MEGADOCS_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "megadocs"
    return Path(root) / CACHE_FILE


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _cache(enabled: bool):
    """The digest cache as a dict (saved on exit when it changed); an unwritable cache directory
    only costs the hashing again next time."""
    path = cache_path()
    entries: dict[str, str] = {}
    if enabled:
        with contextlib.suppress(OSError, ValueError):
            entries = json.loads(path.read_text())
    before = dict(entries)
    yield entries
    if not enabled or entries == before:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(path.with_suffix(".lock")):  # concurrent shard tasks merge, not overwrite
            with contextlib.suppress(OSError, ValueError):
                entries = {**json.loads(path.read_text()), **entries}
            write_json(path, entries, indent=None, sort_keys=True)


def file_sha256(path: Path, cache: dict[str, str] | None = None) -> str:
    """sha256 hex of one file, from ``cache`` when its path, size and mtime are unchanged."""
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    if cache is not None and key in cache:
        return cache[key]
    digest = _digest(path)
    if cache is not None:
        cache[key] = digest
    return digest


DESCRIPTIVE_NAMES = ("LICENSE", "LICENCE", "NOTICE", "USE_POLICY")


def describes_only(path: Path) -> bool:
    """Whether a model directory's file only describes the model (left out of its fingerprint).

    >>> [describes_only(Path(n)) for n in ("README.md", "LICENSE", "USE_POLICY.md", "config.json", "tokenizer.model")]
    [True, True, True, False, False]
    """
    return path.suffix.lower() == ".md" or path.name.upper().startswith(DESCRIPTIVE_NAMES)


def _files(directory: str | Path, field: str) -> list[Path]:
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{field}: {directory}: not a model directory")
    return sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))


def model_fingerprint(directory: str | Path, *, field: str = "--generator", cache: bool = True,
                      every_file: bool = False) -> str:  # fmt: skip
    """``sha256:<16 hex>`` over the names and contents of the directory's top-level files, those
    that only describe the model left out (`every_file`: kept, as pools recorded it until 2026-12-04;
    `megadocs.pools.check_extends` still accepts that form).

    Raises:
        UserError: ``directory`` is not a directory (naming ``field``).
    """
    digest = hashlib.sha256()
    with _cache(cache) as entries:
        for file in _files(directory, field):
            if every_file or not describes_only(file):
                digest.update(file.name.encode() + b"\0" + file_sha256(file, entries).encode() + b"\0")
    return FINGERPRINT_PREFIX + digest.hexdigest()[:16]


def legacy_fingerprint(directory: str | Path, *, field: str = "--generator") -> str:
    """The fingerprint pools recorded before content hashing (``dir-sha256:``): config and tokenizer
    files' bytes, other files' sizes only. Kept to recognise those pools' generators (a pool made
    before is extended only with the generator it recorded)."""
    _files(directory, field)  # the same refusal for a missing directory
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(directory).resolve().iterdir() if p.is_file()):  # hidden files too, as then
        digest.update(file.name.encode() + b"\0")
        if file.suffix in (".json", ".jinja", ".model", ".txt") and file.stat().st_size < 50_000_000:
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
    return LEGACY_PREFIX + digest.hexdigest()[:16]
