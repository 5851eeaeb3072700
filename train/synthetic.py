"""The synthetic stream's documents: ``gen assemble`` output tokenized with a store's tokenizer.

``POOL/assembled/{algorithm}-g{g}/documents.jsonl`` holds ``{"doc_id", "source_doc_id",
"segments": [str, ...]}`` per document (docs/architecture.md). A document's segments are
tokenized separately and joined with EOS (this is what stitches a megadoc); the stream then
joins documents with EOS as for real text. Empty segments are dropped and documents left
without tokens are skipped (and counted).

Tokens are cached next to the file as ``tokens-{tokenizer_hash}.tokens`` (uint32) and
``tokens-{tokenizer_hash}.offsets.npy`` and ``tokens-{tokenizer_hash}.sources.json`` (every
line's ``source_doc_id``, for the contamination guard :func:`require_train_sources`), completed
by ``tokens-{tokenizer_hash}.json`` which records the size and mtime of the documents file it
was built from. Concurrent sweep runs
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

from megadocs.corpus import iter_documents, iter_jsonl
from megadocs.errors import UserError
from megadocs.formats import DOCUMENTS_FILE, assembled_documents, atomic_file, write_json
from train.store import TOKEN_DTYPE, TokenizedDocuments, TokenStore, encode_texts

__all__ = ["SyntheticDocuments", "load_synthetic", "require_train_sources", "require_pool_sources"]

_ENCODE_BATCH = 256


@dataclass(frozen=True, eq=False)
class SyntheticDocuments(TokenizedDocuments):
    """Tokenized synthetic documents (segments already EOS-joined), memory-mapped."""

    path: Path
    """The assembled directory."""
    skipped_empty: int
    sources_path: Path
    """JSON list of every documents.jsonl line's ``source_doc_id`` (None for model samples)."""

    def source_ids(self) -> list[str | None]:
        return json.loads(self.sources_path.read_text())


def require_train_sources(documents: SyntheticDocuments, store: TokenStore) -> None:
    """Refuse a synthetic stream built from documents outside the store's train split.

    A pool generated from the raw corpus instead of the store's train split carries every
    validation document (rephrased, or verbatim as the real copy) into training; the validation
    loss is then no longer a held-out loss. Model samples (``source_doc_id`` null) have no source.

    Raises:
        UserError: naming the first offending line and source document, and whether it is a
            validation document or unknown to the store.
    """
    train_ids = set(store.split("train").doc_ids)
    for line, source in enumerate(documents.source_ids(), start=1):
        if source is not None and source not in train_ids:
            _refuse_source(f"{documents.path / DOCUMENTS_FILE}:{line}", source, store)


def require_pool_sources(pool: str | Path, store: TokenStore) -> None:
    """The same guard for a stream assembled by index from a tokenized pool: the pool's source
    documents (its manifest's ``source``; a token store contributes its train split) must be
    documents of ``store``'s train split. Sample pools (self-distillation) have no source."""
    manifest = json.loads((Path(pool) / "manifest.json").read_text())
    if manifest.get("kind") == "sample" or not manifest.get("source"):
        return
    source = manifest["source"]
    if Path(source).resolve() == Path(store.path).resolve():
        return  # generated from this store: gen reads its train split only
    train_ids = set(store.split("train").doc_ids)
    for position, doc in enumerate(iter_documents(source)):
        if doc.doc_id not in train_ids:
            _refuse_source(f"{pool}: source {source}, document {position}", doc.doc_id, store)


def _refuse_source(where: str, source: str, store: TokenStore) -> None:
    kind = ("a document of the store's val split" if source in set(store.split("val").doc_ids)
            else "not a document of the store")
    raise UserError(f"data.synthetic: {where}: source document {source!r} is {kind}; a synthetic stream must "
                    f"be generated from the train split of {store.path} (generate with --docs {store.path}), "
                    f"or validation text leaks into training")


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
                              skipped_empty=int(meta["skipped_empty"]), sources_path=Path(f"{stem}.sources.json"))


def _cached_meta(stem: Path, source_key: dict) -> dict | None:
    """The cache's metadata when it is complete and built from the current documents file."""
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    complete = all(meta.get(key) == value for key, value in source_key.items()) and "sources" in meta
    return meta if complete else None  # caches from before the sources file are rebuilt once


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


def _segments(documents: Path, sources: list):
    """Each line's non-empty segments; appends its ``source_doc_id`` to ``sources``."""
    for line_number, record in iter_jsonl(documents):
        segments = record.get("segments")
        if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments):
            raise UserError(f"{documents}:{line_number}: expected 'segments' as a list of strings, "
                            f"got {type(segments).__name__}")
        source = record.get("source_doc_id")
        if source is not None and not isinstance(source, str):
            raise UserError(f"{documents}:{line_number}: expected 'source_doc_id' as a string or null, "
                            f"got {type(source).__name__}")
        sources.append(source)
        yield [segment for segment in segments if segment.strip()]


def _expected_documents(documents: Path) -> int | None:
    """The document count `gen assemble` recorded next to the file (None when unknown)."""
    try:
        count = json.loads((documents.parent / "manifest.json").read_text()).get("documents")
    except (OSError, ValueError, AttributeError):
        return None
    return count if isinstance(count, int) else None


def _build_cache(documents: Path, stem: Path, store: TokenStore, source_key: dict) -> dict:
    from tqdm import tqdm

    tokenizer = store.tokenizer()
    eos = np.array([store.eos_id], dtype=TOKEN_DTYPE)
    offsets = [0]
    skipped = 0
    sources: list[str | None] = []

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

    # the bar advances as batches are *encoded* (the slow part), out of the manifest's count
    progress = tqdm(total=_expected_documents(documents), desc=f"tokenizing {documents.parent.name}",
                    unit=" docs", file=sys.stderr, mininterval=1.0)
    with progress, atomic_file(f"{stem}.tokens", "wb") as handle:
        batch: list[list[str]] = []
        for segments in _segments(documents, sources):
            batch.append(segments)
            if len(batch) == _ENCODE_BATCH:
                flush(batch, handle)
                progress.update(len(batch))
                batch = []
        flush(batch, handle)
        progress.update(len(batch))
    with atomic_file(f"{stem}.offsets.npy", "wb") as handle:
        np.save(handle, np.asarray(offsets, dtype=np.int64))
    write_json(f"{stem}.sources.json", sources, indent=None)
    meta = {**source_key, "tokenizer_hash": store.tokenizer_hash, "documents": len(offsets) - 1,
            "tokens": offsets[-1], "skipped_empty": skipped, "sources": len(sources)}
    write_json(stem.with_suffix(".json"), meta)  # last: marks the cache complete
    return meta
