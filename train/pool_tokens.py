"""The tokenize step: a generation pool's rows tokenized once, on CPUs, before any training job.

``megadocs data tokenize-pool --pool POOL --store STORE`` (docs/architecture.md, "Tokenized pool")
writes, beside the pool::

    POOL/tokens/{tokenizer_hash}/manifest.json
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.tokens        flat uint32, no EOS
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.offsets.npy   int64, docs_i * G + 1
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.real.tokens   (only when the store cannot
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.real.offsets.npy   serve the real documents)
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.done          completion marker (JSON counts)

Every pool shard is tokenized on its own (a job-array task, resumable per shard: a shard with a
``.done`` marker is skipped, an unfinished one is redone), streaming its rows in batches through
the ``tokenizers`` batch encoder, which spreads a batch over all the task's cores. Generation
``gen_index`` of the shard's ``j``-th document is ``tokens[off[j*G + gen_index]:off[j*G + gen_index + 1]]``;
an empty generation (whitespace only, which assembly leaves out) holds no tokens. Document ``k`` of
the pool's source is the shard ``k % n``'s document ``k // n`` (the pool's sharding rule).

The real documents are not tokenized again when the pool's source is a token store with this
tokenizer (the usual case: ``gen rephrase --docs STORE``): its train split already holds them, in
source order. Otherwise each shard task tokenizes its real documents into ``.real.*``.

Training then assembles every algorithm and every G' <= G from these arrays by index
(:func:`synthetic_documents`), memory-mapping only: no tokenizer is loaded.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import submitit

from megadocs.corpus import is_token_store, iter_documents, source_hash
from megadocs.data_identity import pool_identity_of
from megadocs.errors import UserError
from megadocs.formats import ALGORITHMS, POOL_KIND, PoolKind, write_json
from train.store import TOKEN_DTYPE, TokenStore

__all__ = ["TOKENS_FORMAT", "TOKENS_DIR", "tokens_dir", "tokenize_shard", "tokenize_pool", "submit_tokenize",
           "PooledTokens", "PieceDocuments", "open_pool_tokens", "synthetic_documents", "INDEXED_ALGORITHMS"]

TOKENS_FORMAT = "megadocs.pool-tokens/1"
TOKENS_DIR = "tokens"
MANIFEST = "manifest.json"
POOL_FORMAT = "megadocs.gen-pool/1"  # the documented pool format this module reads
BATCH_ROWS = 1024
"""Generations per encoder call: enough to keep every core busy, small enough to stream."""
# algorithm -> pool kind; assembled by index (latent keeps the assembled-text path: its thoughts
# are inserted inside the real text, where tokens merge across the insertion points).
INDEXED_ALGORITHMS = {a: POOL_KIND[a].value for a in ALGORITHMS if POOL_KIND[a] is not PoolKind.THOUGHTS}


def tokens_dir(pool: str | Path, tokenizer_hash: str) -> Path:
    """``POOL/tokens/{tokenizer_hash}``: one tokenized copy per tokenizer."""
    return Path(pool) / TOKENS_DIR / tokenizer_hash


def _stem(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


def _pool_manifest(pool: Path) -> dict:
    path = pool / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--pool: {pool}: no manifest.json (expected a directory written by "
                        f"`megadocs gen rephrase|thoughts|sample`)") from None
    if manifest.get("format") != POOL_FORMAT:
        raise UserError(f"{path}: format: expected {POOL_FORMAT!r}, got {manifest.get('format')!r}")
    return manifest


def _pool_identity(pool: Path) -> dict:
    """The fields that define the pool's generations (statistics added later, e.g. by
    `gen diversity`, do not make its tokens stale; a regenerated pool does)."""
    return pool_identity_of(_pool_manifest(pool))


def _require_complete(pool: Path, manifest: dict) -> None:
    count = manifest["num_shards"]
    missing = [i for i in range(count) if not (pool / f"{_stem(i, count)}.done").is_file()]
    if missing:
        raise UserError(f"--pool: {pool}: generation is not finished, shards {missing[:8]} of {count} "
                        f"have no .done marker (re-run the generation command first)")


def _real_from_store(manifest: dict, store: TokenStore) -> Path | None:
    """The pool's source store when it holds the real documents with this tokenizer, else None."""
    source = manifest.get("source")
    if not source or not is_token_store(source):
        return None
    source_store = TokenStore.open(source)
    if source_store.tokenizer_hash != store.tokenizer_hash:
        return None
    if source_hash(source) != manifest["source_hash"]:
        raise UserError(f"--pool: its source {source} changed since generation (hash "
                        f"{source_hash(source)} != {manifest['source_hash']})")
    return Path(source).resolve()


# ----------------------------------------------------------------------------------------------
# Writing (the tokenize step)


def _iter_rows(path: Path) -> Iterator[dict]:
    """The rows of a pool shard, one at a time (a shard is never held in memory)."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


class _ArrayWriter:
    """Appends encoded texts to ``{stem}.tokens`` and records offsets; renamed into place on close."""

    def __init__(self, out: Path, stem: str):
        self.tokens_path, self.offsets_path = out / f"{stem}.tokens", out / f"{stem}.offsets.npy"
        self._tmp = out / f".{stem}.tokens.tmp{os.getpid()}"
        self._handle = open(self._tmp, "wb")
        self.offsets = [0]

    def write(self, encoder, texts: list[str]) -> int:
        """Encode ``texts`` (whitespace-only ones hold no tokens) and append them; returns tokens."""
        kept = [i for i, text in enumerate(texts) if text.strip()]
        encoded = encoder.encode_batch_fast([texts[i] for i in kept], add_special_tokens=False) if kept else []
        lengths = np.zeros(len(texts), dtype=np.int64)
        pieces = []
        for i, encoding in zip(kept, encoded):
            ids = np.asarray(encoding.ids, dtype=TOKEN_DTYPE)
            lengths[i] = ids.size
            pieces.append(ids)
        if pieces:
            np.concatenate(pieces).tofile(self._handle)
        ends = self.offsets[-1] + np.cumsum(lengths)
        self.offsets.extend(ends.tolist())
        return int(lengths.sum())

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        np.save(self.offsets_path, np.asarray(self.offsets, dtype=np.int64))
        os.replace(self._tmp, self.tokens_path)

    def abort(self) -> None:
        self._handle.close()
        self._tmp.unlink(missing_ok=True)


def _encoder(store: TokenStore):
    """The Rust tokenizer behind the store's HF tokenizer (the one today's path encodes with)."""
    return store.tokenizer().backend_tokenizer


def _row_batches(rows_file: Path, g: int, source_docs, batch_rows: int, source: str | None):
    """(generation texts, real texts of the documents starting in the batch), checking that the
    shard holds G rows per document in order, for the source's documents of this shard."""
    texts: list[str] = []
    real_texts: list[str] = []
    expected = (None, g)  # (doc_id, next gen_index)
    for row in _iter_rows(rows_file):
        doc_id, gen_index = row["doc_id"], int(row["gen_index"])
        if expected[1] == g:  # a new document starts
            if gen_index != 0:
                raise UserError(f"{rows_file}: document {doc_id!r} starts at gen_index {gen_index}, "
                                f"expected 0 (is the pool complete?)")
            if source_docs is not None:
                doc = next(source_docs, None)
                if doc is None or doc.doc_id != doc_id:
                    raise UserError(f"{rows_file}: document {doc_id!r} is not the source's next document "
                                    f"of this shard ({doc and doc.doc_id!r}); the pool does not match {source}")
                real_texts.append(doc.text)
            expected = (doc_id, 0)
        if (doc_id, gen_index) != expected:
            raise UserError(f"{rows_file}: expected generation {expected[1]} of {expected[0]!r}, "
                            f"found {gen_index} of {doc_id!r} (G={g}; is the pool complete?)")
        expected = (doc_id, gen_index + 1)
        texts.append(row["text"])
        if len(texts) >= batch_rows:
            yield texts, real_texts
            texts, real_texts = [], []
    if expected[1] != g:
        raise UserError(f"{rows_file}: document {expected[0]!r} has {expected[1]} of {g} generations")
    if texts:
        yield texts, real_texts


def _read_ahead(items, depth: int = 2):
    """Iterate ``items`` on a background thread, ``depth`` ahead: JSON parsing overlaps the
    encoder, which releases the GIL while it spreads a batch over the cores."""
    import queue
    import threading

    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(end)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            buffer.put(exc)

    thread = threading.Thread(target=work, name="pool-reader", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def tokenize_shard(pool: str | Path, store: str | Path | TokenStore, index: int, *, progress: bool = True,
                   batch_rows: int = BATCH_ROWS) -> dict:
    """Tokenize pool shard ``index`` (skipped when its ``.done`` marker exists); returns its counts.

    Raises:
        UserError: an unfinished pool, a shard whose rows do not match the pool's G or source.
    """
    from tqdm import tqdm

    pool = Path(pool)
    store = store if isinstance(store, TokenStore) else TokenStore.open(store)
    manifest = _pool_manifest(pool)
    count, g = manifest["num_shards"], manifest["g"]
    out = tokens_dir(pool, store.tokenizer_hash)
    stem = _stem(index, count)
    done = out / f"{stem}.done"
    if done.is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    tokenize_real = manifest["kind"] != PoolKind.SAMPLE and _real_from_store(manifest, store) is None
    source_docs = (doc for k, doc in enumerate(iter_documents(manifest["source"]))
                   if k % count == index) if manifest["kind"] != PoolKind.SAMPLE else None
    encoder = _encoder(store)
    started = time.perf_counter()
    generations = _ArrayWriter(out, stem)
    real = _ArrayWriter(out, f"{stem}.real") if tokenize_real else None
    counts = {"documents": 0, "generations": 0, "tokens": 0, "real_tokens": 0, "empty": 0}
    batches = _row_batches(pool / f"{stem}.jsonl", g, source_docs, batch_rows, manifest.get("source"))
    try:
        with tqdm(desc=f"tokenizing {stem}", unit=" rows", file=sys.stderr, disable=not progress) as bar:
            for texts, real_texts in _read_ahead(batches):
                counts["tokens"] += generations.write(encoder, texts)
                counts["empty"] += sum(not text.strip() for text in texts)
                counts["generations"] += len(texts)
                if real is not None:
                    counts["real_tokens"] += real.write(encoder, real_texts)
                bar.update(len(texts))
        counts["documents"] = counts["generations"] // g
        generations.close()
        if real is not None:
            real.close()
    except BaseException:
        generations.abort()
        if real is not None:
            real.abort()
        raise
    counts["seconds"] = time.perf_counter() - started
    write_json(done, counts)  # last: "done" means every array above is durable
    return counts


def _planned_manifest(pool: Path, store: TokenStore) -> dict:
    manifest = _pool_manifest(pool)
    if manifest["kind"] not in INDEXED_ALGORITHMS.values():
        raise UserError(f"--pool: {pool} holds {manifest['kind']} generations; latent documents insert "
                        f"thoughts inside the real text, so training tokenizes their assembled text "
                        f"(`megadocs gen assemble`), there is nothing to tokenize ahead")
    _require_complete(pool, manifest)
    real_store = None if manifest["kind"] == PoolKind.SAMPLE else _real_from_store(manifest, store)
    return {
        "format": TOKENS_FORMAT,
        "tokenizer_hash": store.tokenizer_hash,
        "eos_id": store.eos_id,
        "pool_identity": _pool_identity(pool),
        "pool_kind": manifest["kind"],
        "pool_g": manifest["g"],
        "num_shards": manifest["num_shards"],
        "real": None if manifest["kind"] == PoolKind.SAMPLE else
        ({"store": str(real_store), "split": "train"} if real_store else {"shards": "real"}),
    }


def _init(pool: Path, store: TokenStore) -> dict:
    """Write (or check) the tokens manifest before any shard task starts."""
    planned = _planned_manifest(pool, store)
    out = tokens_dir(pool, store.tokenizer_hash)
    path = out / MANIFEST
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing.get("pool_identity") == planned["pool_identity"]:
            return existing
        # the pool changed since (re-generated or extended): its old tokens are stale
        for stale in out.glob("shard-*"):
            stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    planned.update(complete=False, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(path, planned)
    return planned


def _finish(pool: Path, store: TokenStore) -> dict:
    """Sum the shards' counts into the manifest; ``complete`` once every shard is done."""
    out = tokens_dir(pool, store.tokenizer_hash)
    with open(out / ".manifest.lock", "a") as lock:  # tasks run with --shard may finish together
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _sum_shards(out)


def _sum_shards(out: Path) -> dict:
    manifest = json.loads((out / MANIFEST).read_text())
    count = manifest["num_shards"]
    markers = [out / f"{_stem(i, count)}.done" for i in range(count)]
    stats = [json.loads(marker.read_text()) for marker in markers if marker.is_file()]
    keys = ("documents", "generations", "tokens", "real_tokens", "empty", "seconds")
    manifest["statistics"] = {key: sum(s[key] for s in stats) for key in keys}
    manifest["statistics"]["shards_done"] = len(stats)
    manifest["complete"] = len(stats) == count
    write_json(out / MANIFEST, manifest)
    return manifest


def tokenize_pool(pool: str | Path, store: str | Path, *, shard: int | None = None, progress: bool = True) -> dict:
    """Tokenize every not-done shard (or only ``shard``) in this process; returns the manifest.

    Example:
        >>> tokenize_pool("runs/pools/rephrase", "runs/data")  # doctest: +SKIP
        {'format': 'megadocs.pool-tokens/1', ..., 'complete': True}
    """
    pool, store = Path(pool), TokenStore.open(store)
    manifest = _init(pool, store)
    count = manifest["num_shards"]
    if shard is not None and not 0 <= shard < count:
        raise UserError(f"--shard: expected 0 <= i < {count} (the pool's shards), got {shard}")
    for index in [shard] if shard is not None else range(count):
        tokenize_shard(pool, store, index, progress=progress)
    return _finish(pool, store)


class TokenizeShardTask(submitit.helpers.Checkpointable):
    """One job-array task: :func:`tokenize_shard`. Checkpointable: a timed-out or preempted task is
    requeued and redoes its shard (the unit of resumption)."""

    def __init__(self, pool: str, store: str, index: int):
        self.pool, self.store, self.index = pool, store, index

    def __call__(self) -> dict:
        return tokenize_shard(self.pool, self.store, self.index, progress=False)


def submit_tokenize(pool: str | Path, store: str | Path, executor: str, profile: str | None = None,
                    timeout_min: float = 7 * 24 * 60) -> dict:
    """Every not-done shard as one submitit job array (``local`` or ``slurm``); waits, returns the manifest.

    Raises:
        UserError: a bad executor/profile, or tasks that failed (their logs are named).
    """
    from megadocs.executors import check_array_executor, run_job_array

    check_array_executor(executor, profile)
    pool, opened = Path(pool), TokenStore.open(store)
    manifest = _init(pool, opened)
    count = manifest["num_shards"]
    out = tokens_dir(pool, opened.tokenizer_hash)
    todo = [i for i in range(count) if not (out / f"{_stem(i, count)}.done").is_file()]
    tasks = [TokenizeShardTask(str(pool.resolve()), str(Path(store).resolve()), i) for i in todo]
    run_job_array(tasks, [f"shard {i}" for i in todo], kind=executor, profile=profile,
                  folder=out / "submitit", timeout_min=timeout_min, name="tokenize-pool")
    return _finish(pool, opened)


# ----------------------------------------------------------------------------------------------
# Reading (the training job: memory maps and index arithmetic only)


def _memmap(path: Path, size: int) -> np.ndarray:
    if size == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r")
    if len(tokens) != size:
        raise UserError(f"{path}: holds {len(tokens)} tokens, its offsets say {size} (damaged; delete "
                        f"the shard's files and re-run `megadocs data tokenize-pool`)")
    return tokens


@dataclass(frozen=True, eq=False)
class PooledTokens:
    """A complete tokenized pool, in source order: ``gen_*[k, i]`` is generation ``i`` of document ``k``.

    Token ranges point into ``arrays`` (memmaps): ``array[k]`` for generations and ``real_array[k]``
    for the real document (a store split or a shard's ``.real.tokens``).
    """

    manifest: dict
    arrays: list[np.ndarray]
    gen_array: np.ndarray  # int64 [K]
    gen_start: np.ndarray  # int64 [K, G]
    gen_length: np.ndarray  # int64 [K, G]
    real_array: np.ndarray | None  # int64 [K]
    real_start: np.ndarray | None  # int64 [K]
    real_length: np.ndarray | None  # int64 [K]

    @property
    def num_documents(self) -> int:
        return self.gen_start.shape[0]


def open_pool_tokens(pool: str | Path, store: TokenStore) -> PooledTokens | None:
    """The pool's tokens for ``store``'s tokenizer, or None when the tokenize step has not run (to
    completion) for the pool as it is now."""
    pool = Path(pool)
    out = tokens_dir(pool, store.tokenizer_hash)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not manifest.get("complete") or manifest.get("format") != TOKENS_FORMAT:
        return None
    if manifest.get("pool_identity") != _pool_identity(pool):
        print(f"{out}: built from an earlier state of the pool; not used (re-run `megadocs data "
              f"tokenize-pool --pool {pool}`)", file=sys.stderr)
        return None
    if manifest["tokenizer_hash"] != store.tokenizer_hash or manifest["eos_id"] != store.eos_id:
        raise UserError(f"{out / MANIFEST}: tokenizer {manifest['tokenizer_hash']} / eos {manifest['eos_id']} "
                        f"differ from data.store's {store.tokenizer_hash} / {store.eos_id}")
    count, g = manifest["num_shards"], manifest["pool_g"]
    arrays, per_shard = [], []
    for index in range(count):
        stem = out / _stem(index, count)
        offsets = np.load(f"{stem}.offsets.npy")
        arrays.append(_memmap(Path(f"{stem}.tokens"), int(offsets[-1])))
        per_shard.append(offsets)
    total = sum((len(offsets) - 1) // g for offsets in per_shard)
    gen_array = np.arange(total, dtype=np.int64) % count
    gen_start = np.zeros((total, g), dtype=np.int64)
    gen_length = np.zeros((total, g), dtype=np.int64)
    for index, offsets in enumerate(per_shard):
        gen_start[index::count] = offsets[:-1].reshape(-1, g)
        gen_length[index::count] = np.diff(offsets).reshape(-1, g)
    real_array = real_start = real_length = None
    real = manifest["real"]
    if real is not None and "store" in real:
        split = TokenStore.open(real["store"]).split(real["split"])
        if split.num_documents != total:
            raise UserError(f"{out / MANIFEST}: the pool has {total} documents, its source store "
                            f"{real['store']} has {split.num_documents}")
        real_array = np.full(total, len(arrays), dtype=np.int64)
        real_start, real_length = split.offsets[:-1].astype(np.int64), split.lengths
        arrays.append(split.tokens)
    elif real is not None:
        real_array = np.zeros(total, dtype=np.int64)
        real_start = np.zeros(total, dtype=np.int64)
        real_length = np.zeros(total, dtype=np.int64)
        for index in range(count):
            stem = out / f"{_stem(index, count)}.real"
            offsets = np.load(f"{stem}.offsets.npy")
            real_array[index::count] = len(arrays)
            real_start[index::count], real_length[index::count] = offsets[:-1], np.diff(offsets)
            arrays.append(_memmap(Path(f"{stem}.tokens"), int(offsets[-1])))
    return PooledTokens(manifest, arrays, gen_array, gen_start, gen_length, real_array, real_start, real_length)


@dataclass(frozen=True, eq=False)
class PieceDocuments:
    """Documents made of pieces (token ranges of memory-mapped arrays) joined with EOS.

    The same interface as :class:`train.store.TokenizedDocuments` for a stream (``lengths``,
    ``gather``), without ever copying tokens: a window's tokens are gathered from the arrays.
    """

    arrays: list[np.ndarray]
    piece_array: np.ndarray  # int64 [P]
    piece_start: np.ndarray  # int64 [P]: first token in its array
    piece_length: np.ndarray  # int64 [P], all > 0
    doc_pieces: np.ndarray  # int64 [D + 1]: document d = pieces doc_pieces[d]:doc_pieces[d+1]
    eos_id: int
    skipped_empty: int

    @property
    def num_documents(self) -> int:
        return len(self.doc_pieces) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document, counting the EOS between its pieces (int64)."""
        return self._layout[2]

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def _layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(document start, piece start) in the EOS-joined concatenation of all documents, and lengths."""
        cached = self.__dict__.get("_cached_layout")
        if cached is None:
            piece_virtual = np.zeros(len(self.piece_length) + 1, dtype=np.int64)
            np.cumsum(self.piece_length + 1, out=piece_virtual[1:])  # every piece followed by one EOS
            doc_virtual = piece_virtual[self.doc_pieces]
            lengths = np.diff(doc_virtual) - 1  # no EOS after a document's last piece
            cached = (doc_virtual, piece_virtual, lengths)
            object.__setattr__(self, "_cached_layout", cached)
        return cached

    def gather(self, documents: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Tokens at ``offsets`` (< the document's length) of ``documents`` (same shapes, uint32)."""
        doc_virtual, piece_virtual, _ = self._layout
        virtual = doc_virtual[documents] + offsets
        piece = np.searchsorted(piece_virtual, virtual, side="right") - 1
        position = virtual - piece_virtual[piece]
        tokens = np.full(virtual.size, self.eos_id, dtype=TOKEN_DTYPE)
        inside = np.flatnonzero(position.ravel() < self.piece_length[piece].ravel())  # else the EOS after it
        array = self.piece_array[piece.ravel()[inside]]
        index = self.piece_start[piece.ravel()[inside]] + position.ravel()[inside]
        # one fancy-indexing read per array touched (sorted by array: cost independent of the shard count)
        order = np.argsort(array, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(array[order])) + 1):
            if group.size:
                tokens[inside[group]] = self.arrays[array[group[0]]][index[group]]
        return tokens.reshape(virtual.shape)

    def document(self, index: int) -> np.ndarray:
        """The tokens of one document (a copy; for tests and inspection)."""
        length = int(self.lengths[index])
        return self.gather(np.full(length, index, dtype=np.int64), np.arange(length, dtype=np.int64))


def _select(kind: str, pool_g: int, g: int) -> list[int]:
    """gen_index values making up G=``g`` (the rule of `gen assemble`, docs/architecture.md)."""
    if g < 1 or g > pool_g:
        raise UserError(f"data.synthetic.g: the pool holds {pool_g} generations per document, got {g} "
                        f"(expected 1..{pool_g})")
    return list(range(g))


def synthetic_documents(pool: str | Path, algorithm: str, g: int, store: TokenStore) -> PieceDocuments | None:
    """The synthetic stream's documents of (algorithm, g) assembled by index from the tokenized pool,
    or None when the pool has not been tokenized for this store (or the algorithm is not indexed).

    Same documents, in the same order, as ``gen assemble`` + tokenizing the assembled text
    (docs/architecture.md "Assembled synthetic documents"): empty generations are left out, a
    megadoc's pieces are EOS-joined with the real document last (``stitched``), first
    (``stitched-first``) or absent (``stitched-none``); ``simple`` is each generation alone, then the
    real document; ``self-distill`` each sample alone.

    Raises:
        UserError: a pool of the wrong kind for the algorithm, or a G it cannot serve.
    """
    if algorithm not in INDEXED_ALGORITHMS:
        return None
    tokens = open_pool_tokens(pool, store)
    if tokens is None:
        return None
    kind = tokens.manifest["pool_kind"]
    if kind != INDEXED_ALGORITHMS[algorithm]:
        raise UserError(f"data.synthetic.algorithm: {algorithm} needs a {INDEXED_ALGORITHMS[algorithm]} pool, "
                        f"but {pool} holds {kind} generations")
    chosen = _select(kind, tokens.manifest["pool_g"], g)
    K = tokens.num_documents
    gen_cols = (np.broadcast_to(tokens.gen_array[:, None], (K, len(chosen))), tokens.gen_start[:, chosen],
                tokens.gen_length[:, chosen])
    if algorithm == "self-distill":
        columns = [gen_cols]
    else:
        real_cols = (tokens.real_array[:, None], tokens.real_start[:, None], tokens.real_length[:, None])
        columns = {"simple": [gen_cols, real_cols], "stitched": [gen_cols, real_cols],
                   "stitched-first": [real_cols, gen_cols], "stitched-none": [gen_cols]}[algorithm]
    # candidate pieces [K, C] in document-major order; empty ones are left out
    array, start, length = (np.concatenate([np.asarray(part[i]) for part in columns], axis=1).ravel()
                            for i in range(3))
    kept = length > 0
    if algorithm in ("simple", "self-distill"):  # every piece is a document of its own
        doc_pieces = np.arange(int(kept.sum()) + 1, dtype=np.int64)
        skipped = 0
    else:  # one megadoc per real document
        per_doc = kept.reshape(K, -1).sum(axis=1)
        skipped = int((per_doc == 0).sum())
        doc_pieces = np.concatenate([[0], np.cumsum(per_doc[per_doc > 0])]).astype(np.int64)
    return PieceDocuments(tokens.arrays, array[kept], start[kept], length[kept], doc_pieces,
                          eos_id=store.eos_id, skipped_empty=skipped)
