"""The tokenize step: a generation pool's rows tokenized once, on CPUs, before any training job.

``megadocs data tokenize-pool --pool POOL --store STORE`` (docs/architecture.md, "Tokenized pool")
writes, beside the pool::

    POOL/tokens/{tokenizer_hash}/manifest.json
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.tokens        flat uint32, no EOS
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.offsets.npy   int64, docs_i * G + 1
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.real.*        (rephrase pools, only when the
                                                                          store cannot serve the real documents)
    POOL/tokens/{tokenizer_hash}/shard-{i:05d}-of-{n:05d}.real-g{h}.*   (thoughts pools: the real text cut
                                                                          at G=h's split points, h+1 pieces)
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

Latent thoughts sit inside the real text, so a thoughts pool is tokenized in pieces: each thought
as ``<think>THOUGHT</think>`` (a generation), and for every G' the pool serves, the real text cut at
G''s split points (where the thoughts go; a split whose thought is empty is not cut, as in ``gen
assemble``). A latent document is then its pieces concatenated (no EOS inside). Tokens merge across
an insertion point when the text is tokenized whole, so the stream differs from tokenizing ``gen
assemble``'s text at those boundaries only; training always uses the pieces (the tokenize step,
or the same build inside the training job), so a run's tokens never depend on which ran.

Training then assembles every algorithm and every G' <= G from these arrays by index
(:func:`synthetic_documents`), memory-mapping only: no tokenizer is loaded. Without the step, the
first training job of a pool builds the same arrays itself (:func:`ensure_pool_tokens`, one job
at a time, the others wait and reuse them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from megadocs.corpus import is_token_store, iter_documents, source_hash
from megadocs.data_identity import pool_identity_of
from megadocs.errors import UserError
from megadocs.formats import (
    POOL_KIND,
    THINK_CLOSE,
    THINK_OPEN,
    PoolKind,
    atomic_file,
    pool_generations,
    select_generations,
    write_json,
)
from train.store import TOKEN_DTYPE, TokenStore

__all__ = ["TOKENS_FORMAT", "TOKENS_DIR", "tokens_dir", "tokenize_shard", "tokenize_pool", "submit_tokenize",
           "PooledTokens", "PieceDocuments", "open_pool_tokens", "ensure_pool_tokens", "synthetic_documents",
           "require_pool_sources"]

TOKENS_FORMAT = "megadocs.pool-tokens/1"
TOKENS_DIR = "tokens"
MANIFEST = "manifest.json"
POOL_FORMAT = "megadocs.gen-pool/1"  # the documented pool format this module reads
BATCH_ROWS = 1024
"""Generations per encoder call: enough to keep every core busy, small enough to stream."""


def tokens_dir(pool: str | Path, tokenizer_hash: str) -> Path:
    """``POOL/tokens/{tokenizer_hash}``: one tokenized copy per tokenizer."""
    return Path(pool) / TOKENS_DIR / tokenizer_hash


def _stem(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


def _pool_manifest(pool: Path, field: str = "--pool") -> dict:
    path = pool / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{field}: {pool}: no manifest.json (expected a directory written by "
                        f"`megadocs gen rephrase|thoughts|sample`)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a JSON manifest ({exc})") from None
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
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UserError(f"{path}:{number}: not a JSON row ({exc})") from None
            if not (isinstance(row, dict) and isinstance(row.get("text"), str) and "doc_id" in row
                    and isinstance(row.get("gen_index"), int)):
                raise UserError(f"{path}:{number}: expected a row with 'doc_id', 'gen_index' (an integer) "
                                f"and 'text' (a string), got {line[:80]!r}")
            yield row


class _ArrayWriter:
    """Appends encoded texts to ``{stem}.tokens`` and records offsets; both files are written
    through ``megadocs.formats.atomic_file`` and appear (offsets first) only on :meth:`close`."""

    def __init__(self, out: Path, stem: str):
        self.tokens_path, self.offsets_path = out / f"{stem}.tokens", out / f"{stem}.offsets.npy"
        self._files = contextlib.ExitStack()
        self._handle = self._files.enter_context(atomic_file(self.tokens_path, "wb"))
        self.offsets = [0]

    def write(self, encoder, texts: list[str], *, drop_blank: bool = True) -> int:
        """Encode ``texts`` and append them; returns tokens. Whitespace-only texts hold no tokens
        (``drop_blank``: empty generations, left out by assembly); pieces of real text keep theirs."""
        kept = [i for i, text in enumerate(texts) if (text.strip() if drop_blank else text)]
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
        with atomic_file(self.offsets_path, "wb") as handle:
            np.save(handle, np.asarray(self.offsets, dtype=np.int64))
        self._files.close()  # fsync and rename the tokens into place

    def abort(self) -> None:
        """Drop the unfinished tokens file (a no-op after :meth:`close`)."""
        error = _Aborted("tokenizing stopped")
        self._files.__exit__(_Aborted, error, None)


class _Aborted(Exception):
    """Passed to the open tokens file so that it is removed instead of renamed into place."""


def _encoder(store: TokenStore):
    """The Rust tokenizer behind the store's HF tokenizer (the one today's path encodes with)."""
    return store.tokenizer().backend_tokenizer


def _document_batches(rows_file: Path, g: int, source_docs, batch_rows: int, source: str | None):
    """Lists of whole documents, ``(source document or None, its G rows in gen_index order)``, of
    about ``batch_rows`` rows each, checking that the shard holds G rows per document in order,
    for the source's documents of this shard."""
    batch: list[tuple[object, list[dict]]] = []
    rows: list[dict] = []
    doc = None
    size = 0
    for row in _iter_rows(rows_file):
        doc_id, gen_index = row["doc_id"], int(row["gen_index"])
        if not rows:  # a new document starts
            if gen_index != 0:
                raise UserError(f"{rows_file}: document {doc_id!r} starts at gen_index {gen_index}, "
                                f"expected 0 (is the pool complete?)")
            if source_docs is not None:
                doc = next(source_docs, None)
                if doc is None or doc.doc_id != doc_id:
                    raise UserError(f"{rows_file}: document {doc_id!r} is not the source's next document "
                                    f"of this shard ({doc and doc.doc_id!r}); the pool does not match {source}")
        elif (doc_id, gen_index) != (rows[0]["doc_id"], len(rows)):
            raise UserError(f"{rows_file}: expected generation {len(rows)} of {rows[0]['doc_id']!r}, "
                            f"found {gen_index} of {doc_id!r} (G={g}; is the pool complete?)")
        rows.append(row)
        if len(rows) == g:
            batch.append((doc, rows))
            size += g
            rows = []
            if size >= batch_rows:
                yield batch
                batch, size = [], 0
    if rows:
        raise UserError(f"{rows_file}: document {rows[0]['doc_id']!r} has {len(rows)} of {g} generations")
    if batch:
        yield batch


def _generation_text(kind: str, row: dict) -> str:
    """What a row contributes to the stream: a rephrase or sample as is, a thought in its tags;
    an empty generation (whitespace only) contributes nothing."""
    if not row["text"].strip():
        return ""
    return f"{THINK_OPEN}{row['text']}{THINK_CLOSE}" if kind == PoolKind.THOUGHTS else row["text"]


def _real_pieces(text: str, rows: list[dict], chosen: list[int]) -> list[str]:
    """The real text cut where G's thoughts go: ``len(chosen) + 1`` pieces, piece ``i`` before
    thought ``chosen[i]``. An empty thought is not inserted (``gen assemble``), so its split is not
    cut: its piece is empty and the text runs on into the next one.

    >>> rows = [{"text": "x", "split_char": 1}, {"text": " ", "split_char": 2}, {"text": "y", "split_char": 3}]
    >>> _real_pieces("abcd", rows, [0, 1, 2])
    ['a', '', 'bc', 'd']
    """
    pieces, last = [], 0
    for index in chosen:
        row = rows[index]
        if row["text"].strip():
            pieces.append(text[last:row["split_char"]])
            last = row["split_char"]
        else:
            pieces.append("")
    pieces.append(text[last:])
    return pieces


def _piece_gs(pool_g: int) -> list[int]:
    """Every G' a thoughts pool of G=``pool_g`` serves (its real text is cut for each)."""
    return [h for h in range(1, pool_g + 1) if pool_generations(PoolKind.THOUGHTS, pool_g, h) is not None]


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
    count, g, kind = manifest["num_shards"], manifest["g"], manifest["kind"]
    out = tokens_dir(pool, store.tokenizer_hash)
    stem = _stem(index, count)
    done = out / f"{stem}.done"
    if done.is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    tokenize_real = kind == PoolKind.REPHRASE and _real_from_store(manifest, store) is None
    piece_gs = _piece_gs(g) if kind == PoolKind.THOUGHTS else []
    source_docs = (doc for k, doc in enumerate(iter_documents(manifest["source"]))
                   if k % count == index) if kind != PoolKind.SAMPLE else None
    encoder = _encoder(store)
    started = time.perf_counter()
    generations = _ArrayWriter(out, stem)
    writers = [generations]
    real = _ArrayWriter(out, f"{stem}.real") if tokenize_real else None
    writers += [real] if real is not None else []
    pieces = {h: _ArrayWriter(out, f"{stem}.real-g{h}") for h in piece_gs}  # with each G's splits:
    splits = {h: pool_generations(PoolKind.THOUGHTS, g, h) for h in piece_gs}
    writers += list(pieces.values())
    counts = {"documents": 0, "generations": 0, "tokens": 0, "real_tokens": 0, "empty": 0}
    batches = _document_batches(pool / f"{stem}.jsonl", g, source_docs, batch_rows, manifest.get("source"))
    try:
        with tqdm(desc=f"tokenizing {stem}", unit=" rows", file=sys.stderr, disable=not progress) as bar:
            for batch in _read_ahead(batches):
                rows = [row for _, doc_rows in batch for row in doc_rows]
                counts["tokens"] += generations.write(encoder, [_generation_text(kind, row) for row in rows])
                counts["empty"] += sum(not row["text"].strip() for row in rows)
                counts["generations"] += len(rows)
                counts["documents"] += len(batch)
                if real is not None:
                    counts["real_tokens"] += real.write(encoder, [doc.text for doc, _ in batch])
                for h, writer in pieces.items():
                    texts = [piece for doc, doc_rows in batch for piece in _real_pieces(doc.text, doc_rows, splits[h])]
                    counts["real_tokens"] += writer.write(encoder, texts, drop_blank=False)
                bar.update(len(rows))
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    counts["seconds"] = time.perf_counter() - started
    write_json(done, counts)  # last: "done" means every array above is durable
    return counts


def _planned_manifest(pool: Path, store: TokenStore) -> dict:
    manifest = _pool_manifest(pool)
    _require_complete(pool, manifest)
    kind = manifest["kind"]
    real_store = _real_from_store(manifest, store) if kind == PoolKind.REPHRASE else None
    if kind == PoolKind.SAMPLE:
        real = None
    elif kind == PoolKind.THOUGHTS:
        real = {"pieces": _piece_gs(manifest["g"])}
    else:
        real = {"store": str(real_store), "split": "train"} if real_store else {"shards": "real"}
    return {
        "format": TOKENS_FORMAT,
        "tokenizer_hash": store.tokenizer_hash,
        "eos_id": store.eos_id,
        "pool_identity": _pool_identity(pool),
        "pool_kind": manifest["kind"],
        "pool_g": manifest["g"],
        "num_shards": manifest["num_shards"],
        "real": real,
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


def tokenize_pool(pool: str | Path, store: str | Path | TokenStore, *, shard: int | None = None,
                  progress: bool = True) -> dict:
    """Tokenize every not-done shard (or only ``shard``) in this process; returns the manifest.

    Example:
        >>> tokenize_pool("runs/pools/rephrase", "runs/data")  # doctest: +SKIP
        {'format': 'megadocs.pool-tokens/1', ..., 'complete': True}
    """
    pool, store = Path(pool), store if isinstance(store, TokenStore) else TokenStore.open(store)
    manifest = _init(pool, store)
    count = manifest["num_shards"]
    if shard is not None and not 0 <= shard < count:
        raise UserError(f"--shard: expected 0 <= i < {count} (the pool's shards), got {shard}")
    for index in [shard] if shard is not None else range(count):
        tokenize_shard(pool, store, index, progress=progress)
    return _finish(pool, store)


class TokenizeShardTask:
    """One job-array task: :func:`tokenize_shard`. Checkpointable (submitit requeues a callable that
    has a ``checkpoint`` method): a timed-out or preempted task is requeued and redoes its shard (the
    unit of resumption). submitit is imported only there, so training imports without it."""

    def __init__(self, pool: str, store: str, index: int):
        self.pool, self.store, self.index = pool, store, index

    def __call__(self) -> dict:
        return tokenize_shard(self.pool, self.store, self.index, progress=False)

    def checkpoint(self, *args, **kwargs):
        """Resubmit the same shard (what ``submitit.helpers.Checkpointable.checkpoint`` does)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


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


Columns = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(array index, first token, length), each int64 [K, C]: C token ranges per pool document."""


@dataclass(frozen=True, eq=False)
class PooledTokens:
    """A complete tokenized pool, in source order: ``generations`` column ``i`` of row ``k`` is
    generation ``i`` of document ``k``; ``real`` (one column) the real document; ``real_pieces[h]``
    (h+1 columns) a thoughts pool's real text cut at G=h's split points. Ranges point into
    ``arrays`` (memmaps of the shards' files, or a store split)."""

    manifest: dict
    arrays: list[np.ndarray]
    generations: Columns
    real: Columns | None
    real_pieces: dict[int, Columns]

    @property
    def num_documents(self) -> int:
        return self.generations[0].shape[0]


def _columns(out: Path, suffix: str, count: int, width: int, arrays: list[np.ndarray]) -> Columns:
    """Every shard's ``{stem}{suffix}`` ranges, ``width`` per document, in source order (document
    ``k`` is shard ``k % count``'s document ``k // count``); appends the shards' memmaps to ``arrays``."""
    per_shard = [np.load(out / f"{_stem(i, count)}{suffix}.offsets.npy") for i in range(count)]
    total = sum((len(offsets) - 1) // width for offsets in per_shard)
    array, start, length = (np.zeros((total, width), dtype=np.int64) for _ in range(3))
    for index, offsets in enumerate(per_shard):
        if (len(offsets) - 1) % width:
            raise UserError(f"{out / _stem(index, count)}{suffix}.offsets.npy: {len(offsets) - 1} ranges, "
                            f"not a multiple of {width} (damaged; delete the shard's files and re-run "
                            f"`megadocs data tokenize-pool`)")
        array[index::count] = len(arrays)
        start[index::count] = offsets[:-1].reshape(-1, width)
        length[index::count] = np.diff(offsets).reshape(-1, width)
        arrays.append(_memmap(out / f"{_stem(index, count)}{suffix}.tokens", int(offsets[-1])))
    return array, start, length


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
    arrays: list[np.ndarray] = []
    generations = _columns(out, "", count, g, arrays)
    total = generations[0].shape[0]
    real, real_pieces = None, {}
    spec = manifest["real"] or {}
    if "store" in spec:
        split = TokenStore.open(spec["store"]).split(spec["split"])
        if split.num_documents != total:
            raise UserError(f"{out / MANIFEST}: the pool has {total} documents, its source store "
                            f"{spec['store']} has {split.num_documents}")
        real = (np.full((total, 1), len(arrays), dtype=np.int64),
                split.offsets[:-1].astype(np.int64)[:, None], split.lengths.astype(np.int64)[:, None])
        arrays.append(split.tokens)
    elif "shards" in spec:
        real = _columns(out, ".real", count, 1, arrays)
    for h in spec.get("pieces", []):
        real_pieces[h] = _columns(out, f".real-g{h}", count, h + 1, arrays)
    return PooledTokens(manifest, arrays, generations, real, real_pieces)


def ensure_pool_tokens(pool: str | Path, store: TokenStore) -> PooledTokens:
    """The pool's tokens, built in this process when the tokenize step has not run (with a progress
    bar; one process at a time: the others wait on the lock and then reuse them)."""
    tokens = open_pool_tokens(pool, store)
    if tokens is not None:
        return tokens
    out = tokens_dir(pool, store.tokenizer_hash)
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{store.tokenizer_hash}.build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tokens = open_pool_tokens(pool, store)  # another run may have built them meanwhile
        if tokens is None:
            print(f"tokenizing {pool} in this job (run `megadocs data tokenize-pool --pool {pool} "
                  f"--store {store.path}` before certification to do it once, on CPUs)", file=sys.stderr)
            tokenize_pool(pool, store)
            tokens = open_pool_tokens(pool, store)
    if tokens is None:
        raise UserError(f"data.synthetic.pool: {pool}: tokenizing did not complete (see {out / MANIFEST})")
    return tokens


def require_pool_sources(pool: str | Path, store: TokenStore) -> None:
    """Refuse a synthetic stream whose pool was generated from documents outside the store's train
    split: validation text would leak into training and the validation loss would no longer be
    held out. The pool's source (its manifest's ``source``; a token store contributes its train
    split) must hold only documents of ``store``'s train split; sample pools have no source.

    Raises:
        UserError: naming the first offending source document and whether it is a validation
            document or unknown to the store.
    """
    manifest = _pool_manifest(Path(pool), "data.synthetic.pool")
    if manifest.get("kind") == PoolKind.SAMPLE or not manifest.get("source"):
        return
    source = manifest["source"]
    if Path(source).resolve() == Path(store.path).resolve():
        return  # generated from this store: gen reads its train split only
    train_ids = set(store.split("train").doc_ids)
    for position, doc in enumerate(iter_documents(source)):
        if doc.doc_id not in train_ids:
            kind = ("a document of the store's val split" if doc.doc_id in set(store.split("val").doc_ids)
                    else "not a document of the store")
            raise UserError(f"data.synthetic: {pool}: source {source}, document {position}: source document "
                            f"{doc.doc_id!r} is {kind}; a synthetic stream must be generated from the train "
                            f"split of {store.path} (generate with --docs {store.path}), or validation text "
                            f"leaks into training")


@dataclass(frozen=True, eq=False)
class PieceDocuments:
    """Documents made of pieces (token ranges of memory-mapped arrays), joined with EOS
    (``separator``: a megadoc's segments) or directly (a latent document's text and thoughts).

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
    separator: bool = True

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
        """(document start, piece start) in the concatenation of all documents (every piece
        followed by one EOS when ``separator``), and lengths."""
        cached = self.__dict__.get("_cached_layout")
        if cached is None:
            separator = int(self.separator)
            piece_virtual = np.zeros(len(self.piece_length) + 1, dtype=np.int64)
            np.cumsum(self.piece_length + separator, out=piece_virtual[1:])
            doc_virtual = piece_virtual[self.doc_pieces]
            lengths = np.diff(doc_virtual) - separator  # no EOS after a document's last piece
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


def _interleave(first: Columns, second: Columns) -> Columns:
    """Columns ``first[0], second[0], first[1], ...`` (``first`` has one column more)."""
    out = tuple(np.zeros((a.shape[0], a.shape[1] + b.shape[1]), dtype=np.int64) for a, b in zip(first, second))
    for target, a, b in zip(out, first, second):
        target[:, 0::2], target[:, 1::2] = a, b
    return out


def synthetic_documents(pool: str | Path, algorithm: str, g: int, store: TokenStore) -> PieceDocuments:
    """The synthetic stream's documents of (algorithm, g), assembled by index from the pool's tokens
    (built in this process first when the tokenize step has not run: :func:`ensure_pool_tokens`).

    The documents, in order, of ``gen assemble`` (docs/architecture.md "Assembled synthetic
    documents"): empty generations are left out, a megadoc's pieces are EOS-joined with the real
    document last (``stitched``), first (``stitched-first``) or absent (``stitched-none``);
    ``simple`` is each generation alone, then the real document; ``self-distill`` each sample alone;
    ``latent`` the real text's pieces with the thoughts between them, concatenated. Tokens equal
    tokenizing the assembled text, except at a latent document's insertion points (module docstring).

    Raises:
        UserError: a pool of the wrong kind for the algorithm, or a G it cannot serve (both
            before any tokenizing).
    """
    manifest = _pool_manifest(Path(pool), "data.synthetic.pool")
    kind, expected = manifest["kind"], POOL_KIND[algorithm]
    if kind != expected:
        raise UserError(f"data.synthetic.algorithm: {algorithm} needs a {expected} pool, "
                        f"but {pool} holds {kind} generations")
    chosen = select_generations(kind, manifest["g"], g, field="data.synthetic.g")
    tokens = ensure_pool_tokens(pool, store)  # built from this manifest's pool (its identity is checked)
    generations = tuple(column[:, chosen] for column in tokens.generations)
    if algorithm == "latent":
        pieces = _interleave(tokens.real_pieces[g], generations)
    elif algorithm in ("self-distill", "stitched-none"):
        pieces = generations
    elif algorithm == "stitched-first":
        pieces = tuple(np.concatenate(parts, axis=1) for parts in zip(tokens.real, generations))
    else:  # simple, stitched: the generations, then the real document
        pieces = tuple(np.concatenate(parts, axis=1) for parts in zip(generations, tokens.real))
    K = tokens.num_documents
    array, start, length = (column.ravel() for column in pieces)  # document-major; empty ones left out
    kept = length > 0
    if algorithm in ("simple", "self-distill"):  # every piece is a document of its own
        doc_pieces = np.arange(int(kept.sum()) + 1, dtype=np.int64)
        skipped = 0
    else:  # one document per real document
        per_doc = kept.reshape(K, -1).sum(axis=1)
        skipped = int((per_doc == 0).sum())
        doc_pieces = np.concatenate([[0], np.cumsum(per_doc[per_doc > 0])]).astype(np.int64)
    return PieceDocuments(tokens.arrays, array[kept], start[kept], length[kept], doc_pieces,
                          eos_id=store.eos_id, skipped_empty=skipped, separator=algorithm != "latent")
