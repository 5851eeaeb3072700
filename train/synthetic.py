"""The synthetic stream's documents: ``gen assemble`` output tokenized with a store's tokenizer.

``POOL/assembled/{algorithm}-g{g}/documents.jsonl`` holds ``{"doc_id", "source_doc_id",
"segments": [str, ...]}`` per document (docs/architecture.md). A document's segments are
tokenized separately and joined with EOS (this is what stitches a megadoc); the stream then
joins documents with EOS as for real text. Empty segments are dropped and documents left
without tokens are skipped (and counted).

Tokens are cached next to the file as ``tokens-{tokenizer_hash}.tokens`` (uint32) and
``tokens-{tokenizer_hash}.offsets.npy``, completed by ``tokens-{tokenizer_hash}.json`` which
records the size and mtime of the documents file it was built from. Concurrent sweep runs
take turns on ``tokens-{tokenizer_hash}.lock`` so one tokenizes and the others reuse its work;
each file is written under a private name and renamed into place (``megadocs.formats.atomic_file``),
so even without working locks a reader never sees a partial cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megadocs.corpus import iter_jsonl
from megadocs.errors import UserError
from megadocs.formats import assembled_documents, atomic_file, write_json
from train.store import TOKEN_DTYPE, TokenizedDocuments, TokenStore, encode_texts

__all__ = ["SyntheticDocuments", "load_synthetic"]

_ENCODE_BATCH = 256


@dataclass(frozen=True, eq=False)
class SyntheticDocuments(TokenizedDocuments):
    """Tokenized synthetic documents (segments already EOS-joined), memory-mapped."""

    path: Path
    """The assembled directory."""
    skipped_empty: int


def load_synthetic(pool: str | Path, algorithm: str, g: int, store: TokenStore) -> SyntheticDocuments:
    """Tokenized documents of ``assembled/{algorithm}-g{g}``, from the cache or built now.

    Raises:
        UserError: naming ``data.synthetic`` when the assembled documents do not exist, or
            ``file:line`` when a line is malformed.
    """
    documents = assembled_documents(pool, algorithm, g)
    directory = documents.parent
    if not documents.is_file():
        raise UserError(f"data.synthetic: {documents} not found (run `megadocs gen assemble --pool {pool} "
                        f"--algorithm {algorithm} --g {g}` first)")
    stem = directory / f"tokens-{store.tokenizer_hash}"
    source_stat = documents.stat()
    source_key = {"documents_size": source_stat.st_size, "documents_mtime_ns": source_stat.st_mtime_ns}
    meta = _cached_meta(stem, source_key)
    if meta is None:
        with _exclusive(Path(f"{stem}.lock")):
            # another run may have built it while this one waited for the lock
            meta = _cached_meta(stem, source_key) or _build_cache(documents, stem, store, source_key)
    offsets = np.load(f"{stem}.offsets.npy")
    tokens = (np.memmap(f"{stem}.tokens", dtype=TOKEN_DTYPE, mode="r") if offsets[-1] > 0
              else np.zeros(0, dtype=TOKEN_DTYPE))
    if len(tokens) != offsets[-1]:
        raise UserError(f"{stem}.tokens: damaged cache ({len(tokens)} tokens, offsets say "
                        f"{int(offsets[-1])}); delete {stem}.* and re-run")
    return SyntheticDocuments(tokens=tokens, offsets=offsets, path=directory,
                              skipped_empty=int(meta["skipped_empty"]))


def _cached_meta(stem: Path, source_key: dict) -> dict | None:
    """The cache's metadata when it is complete and built from the current documents file."""
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return meta if all(meta.get(key) == value for key, value in source_key.items()) else None


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an advisory lock so concurrent runs tokenize once; where the file system refuses
    locks, go on unlocked (the atomic renames keep the cache correct, only work is repeated)."""
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)


def _segments(documents: Path):
    for line_number, record in iter_jsonl(documents):
        segments = record.get("segments")
        if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments):
            raise UserError(f"{documents}:{line_number}: expected 'segments' as a list of strings, "
                            f"got {type(segments).__name__}")
        yield [segment for segment in segments if segment.strip()]


def _build_cache(documents: Path, stem: Path, store: TokenStore, source_key: dict) -> dict:
    from tqdm import tqdm

    tokenizer = store.tokenizer()
    eos = np.array([store.eos_id], dtype=TOKEN_DTYPE)
    offsets = [0]
    skipped = 0

    def flush(batch: list[list[str]], handle) -> None:
        nonlocal skipped
        flat = [segment for segments in batch for segment in segments]
        encoded = iter(encode_texts(tokenizer, flat) if flat else [])
        for segments in batch:
            pieces = [np.asarray(next(encoded), dtype=TOKEN_DTYPE) for _ in segments]
            pieces = [piece for piece in pieces if piece.size]
            if not pieces:
                skipped += 1
                continue
            joined = np.concatenate([part for piece in pieces for part in (piece, eos)][:-1])
            joined.tofile(handle)
            offsets.append(offsets[-1] + joined.size)

    with atomic_file(f"{stem}.tokens", "wb") as handle:
        batch: list[list[str]] = []
        for segments in tqdm(_segments(documents), desc=f"tokenizing {documents.parent.name}",
                             unit=" docs", file=sys.stderr):
            batch.append(segments)
            if len(batch) == _ENCODE_BATCH:
                flush(batch, handle)
                batch = []
        flush(batch, handle)
    with atomic_file(f"{stem}.offsets.npy", "wb") as handle:
        np.save(handle, np.asarray(offsets, dtype=np.int64))
    meta = {**source_key, "tokenizer_hash": store.tokenizer_hash, "documents": len(offsets) - 1,
            "tokens": offsets[-1], "skipped_empty": skipped}
    write_json(stem.with_suffix(".json"), meta)  # last: marks the cache complete
    return meta
