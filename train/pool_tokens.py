"""The tokenize step: a generation pool tokenized once, on CPUs, before any training job; a
training job then assembles its synthetic stream from these arrays by index, memory-mapping only
(no tokenizer is loaded).

``megadocs data tokenize-pool --pool POOL --store STORE`` (docs/architecture.md, "Tokenized pool")
writes, beside the pool (``{stem}`` = ``shard-{i:05d}-of-{n:05d}``)::

    POOL/tokens/{tokenizer_hash}/manifest.json                 TokensManifest
    POOL/tokens/{tokenizer_hash}/{stem}.doc_ids.json           the shard's source documents, in order
    POOL/tokens/{tokenizer_hash}/{stem}.tokens|.offsets.npy    generations, docs_i * G ranges (rephrase, sample)
    POOL/tokens/{tokenizer_hash}/{stem}.real.tokens|...        real documents (when the store cannot serve them)
    POOL/tokens/{tokenizer_hash}/{stem}.{algorithm}-g{h}.tokens|...   segments of several parts (a latent
                                                                document), rendered and tokenized whole
    POOL/tokens/{tokenizer_hash}/{stem}.done                   the shard's counts, written last

Every array holds tokens without EOS, ``offsets`` int64 (ranges + 1 entries); document ``k`` of the
pool's source is document ``k // n`` of shard ``k % n`` (:mod:`megadocs.pools`).

What is tokenized is the megadoc rule (:mod:`megadocs.megadoc`) applied to units: a segment that is
one generation or the real document is tokenized alone (the same tokens in every algorithm that
uses it), a segment of several parts (latent: the real text with its thoughts inserted) is rendered
by the rule and tokenized whole, once per G' the pool serves. So every synthetic document holds
exactly the tokens of tokenizing ``gen assemble``'s text segment by segment, EOS between segments,
for every algorithm (tests/train/test_pool_tokens.py checks it document by document).

The real documents are not tokenized again when the pool's source is a token store with this
tokenizer (the usual case: ``gen rephrase --corpus STORE``): its train split holds them, in order.

Shards are tokenized by the sharded-step runner (:class:`megadocs.shards.ShardedStep`): in this
process, or one job-array task per shard (``--executor local|slurm``), resumable per shard,
streaming rows in batches through the ``tokenizers`` batch encoder.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from megadocs import compat, megadoc, pools
from megadocs.corpus import is_token_store
from megadocs.data_identity import store_identity_hash
from megadocs.errors import UserError, names_file
from megadocs.formats import ALGORITHMS, MANIFEST, POOL_KIND, PoolKind, atomic_file, write_json
from megadocs.shards import DEFAULT_TIMEOUT_MIN, ShardedStep
from train.prefetch import put_unless_stopped
from train.store import TOKEN_DTYPE, TokenStore, write_array

__all__ = ["TOKENS_FORMAT", "TOKENS_DIR", "tokens_dir", "TokensManifest", "TokenizePool", "tokenize_pool",
           "submit_tokenize", "PooledTokens", "PieceDocuments", "open_pool_tokens", "require_pool_tokens",
           "require_pool_sources", "synthetic_documents"]

TOKENS_FORMAT = "megadocs.pool-tokens/2"
"""/1 (before): latent documents tokenized in pieces, no document ids; read as "not tokenized"."""
TOKENS_DIR = "tokens"
BATCH_ROWS = 1024
"""Generations per encoder call: enough to keep every core busy, small enough to stream."""
GUARD_NAMES = 5
"""How many offending documents a refusal names."""


def tokens_dir(pool: str | Path, tokenizer_hash: str) -> Path:
    """``POOL/tokens/{tokenizer_hash}``: one tokenized copy per tokenizer."""
    return Path(pool) / TOKENS_DIR / tokenizer_hash


def _command(pool: str | Path, store: str | Path) -> str:
    return f"`megadocs data tokenize-pool --pool {pool} --store {store}`"


class TokensManifest(BaseModel):
    """``POOL/tokens/{h}/manifest.json``: what was tokenized, from what, and whether it is done."""

    model_config = ConfigDict(extra="allow")

    format: str
    tokenizer_hash: str
    eos_id: int
    pool_identity: dict[str, Any]
    pool_kind: PoolKind
    pool_g: int
    num_shards: int
    rule: str
    """The megadoc rule's version the rendered segments follow."""
    generations: bool
    """``{stem}.tokens``: every generation alone (empty ones hold no tokens)."""
    real: dict[str, Any] | None
    """``{"store": DIR, "split": "train", "store_identity": h}`` (the store serves the real
    documents), ``{"shards": "real"}`` (``{stem}.real.*``) or None (not needed)."""
    rendered: dict[str, list[int]]
    """Algorithm -> the G' whose multi-part segments are rendered (``{stem}.{algorithm}-g{G'}.*``)."""
    source_store: dict[str, str] | None = None
    """The pool's source when it is a token store: ``{"path", "identity"}`` as it was tokenized
    (and as it was when the pool was generated: checked by its source hash)."""
    complete: bool = False
    statistics: dict[str, Any] | None = None
    created: str | None = None


def _rendered_width(algorithm: str, g: int) -> int:
    """Multi-part segments per real document in ``algorithm`` at G'=``g`` (latent: 1)."""
    return sum(not _simple(segment) for document in megadoc.layout(algorithm, g) for segment in document)


def _simple(segment: megadoc.Segment) -> bool:
    """A segment that is one generation or the real document (tokenized on its own)."""
    return len(segment) == 1 and isinstance(segment[0], (megadoc.Generation, megadoc.Real))


def _units(kind: PoolKind, pool_g: int) -> tuple[bool, bool, dict[str, list[int]]]:
    """(generations?, real?, rendered) the algorithms served by a pool of ``kind`` read, at every G'."""
    generations = real = False
    rendered: dict[str, list[int]] = {}
    for algorithm in (a for a in ALGORITHMS if POOL_KIND[a] == kind):
        for g in pools.served_gs(kind, pool_g):
            for segment in (s for document in megadoc.layout(algorithm, g) for s in document):
                if not _simple(segment):
                    gs = rendered.setdefault(algorithm, [])
                    if g not in gs:
                        gs.append(g)
                elif isinstance(segment[0], megadoc.Generation):
                    generations = True
                else:
                    real = True
    return generations, real, rendered


# ----------------------------------------------------------------------------------------------
# Writing (the tokenize step)


class _ArrayWriter:
    """Appends encoded texts to ``{stem}.tokens`` and records offsets; both files are written
    through ``megadocs.formats.atomic_file`` and appear (offsets first) only on :meth:`close`."""

    def __init__(self, out: Path, stem: str):
        self.tokens_path, self.offsets_path = out / f"{stem}.tokens", out / f"{stem}.offsets.npy"
        self._files = contextlib.ExitStack()
        self._handle = self._files.enter_context(atomic_file(self.tokens_path, "wb"))
        self.offsets = [0]

    def write(self, encoder, texts: list[str]) -> int:
        """Encode ``texts`` and append them; returns tokens. A whitespace-only text holds no tokens
        (the empty rule; such a segment is left out of its document)."""
        kept = [i for i, text in enumerate(texts) if not pools.is_empty(text)]
        encoded = encoder.encode_batch_fast([texts[i] for i in kept], add_special_tokens=False) if kept else []
        lengths = np.zeros(len(texts), dtype=np.int64)
        pieces = []
        for i, encoding in zip(kept, encoded):
            ids = np.asarray(encoding.ids, dtype=TOKEN_DTYPE)
            lengths[i] = ids.size
            pieces.append(ids)
        if pieces:
            with names_file(self.tokens_path):  # the handle outlives atomic_file's own naming
                write_array(self._handle, np.concatenate(pieces))
        ends = self.offsets[-1] + np.cumsum(lengths)
        self.offsets.extend(ends.tolist())
        return int(lengths.sum())

    def close(self) -> None:
        with atomic_file(self.offsets_path, "wb") as handle:
            write_array(handle, np.asarray(self.offsets, dtype=np.int64), npy=True)
        self._files.close()  # fsync and rename the tokens into place

    def abort(self) -> None:
        """Drop the unfinished tokens file (a no-op after :meth:`close`)."""
        self._files.__exit__(_Aborted, _Aborted("tokenizing stopped"), None)


class _Aborted(Exception):
    """Passed to the open tokens file so that it is removed instead of renamed into place."""


def _batches(documents: Iterator[tuple[Any, list[pools.PoolRow]]], rows_per_batch: int):
    """Lists of whole documents of about ``rows_per_batch`` rows each."""
    batch, size = [], 0
    for doc, rows in documents:
        batch.append((doc, rows))
        size += len(rows)
        if size >= rows_per_batch:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _read_ahead(items, depth: int = 2):
    """Iterate ``items`` on a background thread, ``depth`` ahead: JSON parsing overlaps the
    encoder, which releases the GIL while it spreads a batch over the cores."""
    import queue
    import threading

    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:  # every put gives up once the consumer stopped, or `join` below could wait forever
        try:
            for item in items:
                if not put_unless_stopped(buffer, item, stop):
                    return
            put_unless_stopped(buffer, end, stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            put_unless_stopped(buffer, exc, stop)

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


def _rendered_texts(algorithm: str, g: int, kind: PoolKind, pool_g: int, doc, rows: list[pools.PoolRow]) -> list[str]:
    """The multi-part segments of one real document at G'=``g``, rendered by the rule (an empty
    generation left out of its segment)."""
    selected = [rows[i] for i in pools.pool_generations(kind, pool_g, g)]
    empty = {slot for slot, row in enumerate(selected) if row.empty}
    texts = []
    for segment in (s for document in megadoc.layout(algorithm, g) for s in document if not _simple(s)):
        kept = megadoc.kept_parts(segment, empty)
        texts.append(megadoc.render_segment(kept, doc.text, lambda s: selected[s].text,
                                            lambda s: selected[s].split_char) if kept else "")
    return texts


class TokenizePool(ShardedStep):
    """The tokenize step of one pool for one store's tokenizer, shard by shard (module docstring)."""

    STAT_KEYS = ("documents", "generations", "tokens", "real_tokens", "rendered_tokens", "empty", "seconds")

    def __init__(self, pool: str | Path, store: str | Path, *, corpus: str | Path | None = None,
                 progress: bool = True, batch_rows: int = BATCH_ROWS) -> None:
        self.pool, self.store_path = Path(pool).resolve(), Path(store).resolve()
        self.corpus, self.progress, self.batch_rows = corpus, progress, batch_rows
        self.store = TokenStore.open(self.store_path)
        self.pool_manifest = pools.read_manifest(self.pool)
        super().__init__(tokens_dir(self.pool, self.store.tokenizer_hash), self.pool_manifest.num_shards,
                         name="tokenize-pool")

    @cached_property
    def store(self) -> TokenStore:
        """The store, opened in `__init__`; an array task, unpickled without it, opens it here."""
        return TokenStore.open(self.store_path)

    def __getstate__(self) -> dict:
        """Pickled into array tasks without the opened store (each task opens its own)."""
        return {key: value for key, value in self.__dict__.items() if key != "store"}

    # -- the manifest ----------------------------------------------------------------------

    @cached_property
    def source(self) -> str | None:
        """Where the pool's source documents are read from (the recorded source, or ``corpus``
        holding the same documents: :func:`megadocs.pools.pool_source`); checked once, in the
        process that prepares, and pickled into array tasks."""
        return pools.pool_source(self.pool, self.pool_manifest, self.corpus)

    def _source_store(self) -> dict[str, str] | None:
        """The pool's source as a token store (as it is now, wherever it lies), else None."""
        if self.source is None or not is_token_store(self.source):
            return None
        return {"path": str(Path(self.source).resolve()), "identity": store_identity_hash(self.source)}

    def intended_manifest(self) -> dict[str, Any]:
        """The tokens manifest this pool and store call for (what `prepare` writes, or compares
        with the one on disk); refuses an incomplete pool."""
        manifest = self.pool_manifest
        pools.require_complete(self.pool, manifest)
        generations, needs_real, rendered = _units(manifest.kind, manifest.g)
        source_store = self._source_store()
        real = None
        if needs_real:
            same_tokenizer = source_store is not None and \
                TokenStore.open(source_store["path"]).tokenizer_hash == self.store.tokenizer_hash
            real = {"store": source_store["path"], "split": "train", "store_identity": source_store["identity"]} \
                if same_tokenizer else {"shards": "real"}
        return TokensManifest(
            format=TOKENS_FORMAT, tokenizer_hash=self.store.tokenizer_hash, eos_id=self.store.eos_id,
            pool_identity=manifest.identity(), pool_kind=manifest.kind, pool_g=manifest.g,
            num_shards=manifest.num_shards, rule=megadoc.RULE_VERSION, generations=generations, real=real,
            rendered=rendered, source_store=source_store,
        ).model_dump(mode="json", exclude={"complete", "statistics", "created"})

    def prepare(self) -> dict[str, Any]:
        """Write the tokens manifest, or keep an existing one of the same pool, rule and source;
        tokens of an earlier state of the pool (or an earlier format) are removed."""
        intended = self.intended_manifest()
        keys = ("format", "pool_identity", "rule", "real", "source_store")

        def clear(_existing: dict) -> None:
            for stale in self.folder.glob("shard-*"):
                stale.unlink()

        return self.init_manifest(intended, same=lambda old: all(old.get(k) == intended[k] for k in keys),
                                  on_stale=clear)

    # -- one shard -------------------------------------------------------------------------

    def _run_shard(self, index: int) -> dict[str, Any]:
        from tqdm import tqdm

        manifest = TokensManifest.model_validate(json.loads(self.manifest_path.read_text()))
        pool_manifest, stem = self.pool_manifest, pools.shard_stem(index, self.num_shards)
        self.folder.mkdir(parents=True, exist_ok=True)
        encoder = self.store.tokenizer().backend_tokenizer  # the Rust tokenizer behind the HF one
        writers: dict[str, _ArrayWriter] = {}
        if manifest.generations:
            writers["generations"] = _ArrayWriter(self.folder, stem)
        if manifest.real == {"shards": "real"}:
            writers["real"] = _ArrayWriter(self.folder, f"{stem}.real")
        for algorithm, gs in manifest.rendered.items():
            for g in gs:
                writers[f"{algorithm}-g{g}"] = _ArrayWriter(self.folder, f"{stem}.{algorithm}-g{g}")
        counts = dict.fromkeys(self.STAT_KEYS, 0)
        doc_ids: list[str] = []
        started = time.perf_counter()
        documents = pools.iter_pool_documents(self.pool, pool_manifest, index, source=self.source)
        try:
            with tqdm(desc=f"tokenizing {stem}", unit=" rows", file=sys.stderr, disable=not self.progress) as bar:
                for batch in _read_ahead(_batches(documents, self.batch_rows)):
                    rows = [row for _, doc_rows in batch for row in doc_rows]
                    doc_ids += [doc.doc_id for doc, _ in batch]
                    counts["documents"] += len(batch)
                    counts["generations"] += len(rows)
                    counts["empty"] += sum(row.empty for row in rows)
                    if "generations" in writers:
                        counts["tokens"] += writers["generations"].write(encoder, [row.text for row in rows])
                    if "real" in writers:
                        counts["real_tokens"] += writers["real"].write(encoder, [doc.text for doc, _ in batch])
                    for algorithm, gs in manifest.rendered.items():
                        for g in gs:
                            texts = [text for doc, doc_rows in batch for text in
                                     _rendered_texts(algorithm, g, pool_manifest.kind, pool_manifest.g, doc, doc_rows)]
                            counts["rendered_tokens"] += writers[f"{algorithm}-g{g}"].write(encoder, texts)
                    bar.update(len(rows))
            with self.writing():  # the shard's files appear only while the manifest is still this run's
                for writer in writers.values():
                    writer.close()
                write_json(self.folder / f"{stem}.doc_ids.json", doc_ids, indent=None)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        counts["seconds"] = time.perf_counter() - started
        return counts


def tokenize_pool(pool: str | Path, store: str | Path | TokenStore, *, shard: int | None = None,
                  corpus: str | Path | None = None, progress: bool = True) -> dict:
    """Tokenize every not-done shard (or only ``shard``) in this process; returns the manifest.
    ``corpus``: the pool's source moved elsewhere (checked to hold the same documents).

    Example:
        >>> tokenize_pool("runs/pools/rephrase", "runs/data")  # doctest: +SKIP
        {'format': 'megadocs.pool-tokens/2', ..., 'complete': True}

    Raises:
        UserError: an unfinished pool, a source changed since generation (or a ``corpus`` holding
            other documents), a bad ``shard``.
    """
    step = TokenizePool(pool, store.path if isinstance(store, TokenStore) else store, corpus=corpus,
                        progress=progress)
    if shard is not None and not 0 <= shard < step.num_shards:
        raise UserError(f"--shard: expected 0 <= i < {step.num_shards} (the pool's shards), got {shard}")
    return step.run(None if shard is None else [shard])


def submit_tokenize(pool: str | Path, store: str | Path, executor: str, profile: str | None = None,
                    timeout_min: float = DEFAULT_TIMEOUT_MIN, corpus: str | Path | None = None) -> dict:
    """Every not-done shard as one job array (``local`` or ``slurm``); waits, returns the manifest.

    Raises:
        UserError: a bad executor/profile, or tasks that failed (their logs are named).
    """
    return TokenizePool(pool, store, corpus=corpus, progress=False).submit(executor, profile, timeout_min=timeout_min)


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
    """A complete tokenized pool, in source order: column ``i`` of ``generations`` row ``k`` is
    generation ``i`` of document ``k``; ``real`` (one column) the real document; ``rendered[(a,
    h)]`` the multi-part segments of algorithm ``a`` at G'=``h``. Ranges point into ``arrays``
    (memmaps of the shards' files, or a store split)."""

    pool: Path
    manifest: TokensManifest
    arrays: list[np.ndarray]
    doc_ids: list[str]
    generations: Columns | None
    real: Columns | None
    rendered: dict[tuple[str, int], Columns]

    @property
    def num_documents(self) -> int:
        return len(self.doc_ids)


def _columns(out: Path, suffix: str, count: int, width: int, arrays: list[np.ndarray]) -> Columns:
    """Every shard's ``{stem}{suffix}`` ranges, ``width`` per document, in source order
    (:func:`megadocs.pools.shard_positions`); appends the shards' memmaps to ``arrays``."""
    per_shard = [np.load(out / f"{pools.shard_stem(i, count)}{suffix}.offsets.npy") for i in range(count)]
    total = sum((len(offsets) - 1) // width for offsets in per_shard)
    array, start, length = (np.zeros((total, width), dtype=np.int64) for _ in range(3))
    for index, offsets in enumerate(per_shard):
        if (len(offsets) - 1) % width:
            raise UserError(f"{out / pools.shard_stem(index, count)}{suffix}.offsets.npy: {len(offsets) - 1} ranges, "
                            f"not a multiple of {width} (damaged; delete the shard's files and re-run "
                            f"`megadocs data tokenize-pool`)")
        rows = pools.shard_positions(index, count)
        array[rows] = len(arrays)
        start[rows] = offsets[:-1].reshape(-1, width)
        length[rows] = np.diff(offsets).reshape(-1, width)
        arrays.append(_memmap(out / f"{pools.shard_stem(index, count)}{suffix}.tokens", int(offsets[-1])))
    return array, start, length


def _ready_manifest(pool: Path, store: TokenStore, field: str,
                    pool_identity: dict[str, Any] | None = None) -> TokensManifest:  # fmt: skip
    """The tokens manifest of ``pool`` for ``store``'s tokenizer when complete and current:
    tokenized from ``pool_identity`` (the pool's manifest as the caller read it; None: read now).

    Raises:
        UserError: naming ``field`` and the command that tokenizes the pool.
    """
    pool_identity = pools.pool_identity(pool, field) if pool_identity is None else pool_identity
    out = tokens_dir(pool, store.tokenizer_hash)
    run = _command(pool, store.path)
    try:
        data = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise UserError(f"{field}: {pool} is not tokenized for {store.path}'s tokenizer; run {run} (a CPU step) "
                        f"before training") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{out / MANIFEST}: unreadable ({exc}); run {run} again") from None
    compat.upgrade(compat.POOL_TOKENS, data, source=f"{field}: {pool}", action=f"run {run} again")
    manifest = TokensManifest.model_validate(data)
    if manifest.pool_identity != pool_identity or manifest.rule != megadoc.RULE_VERSION:
        raise UserError(f"{field}: {out} was tokenized from an earlier state of the pool (or rule); run {run} again")
    if not manifest.complete:
        done = (manifest.statistics or {}).get("shards_done", 0)
        raise UserError(f"{field}: {pool}: tokenizing is not finished ({done} of {manifest.num_shards} shards); "
                        f"run {run} to finish it")
    if manifest.eos_id != store.eos_id:
        raise UserError(f"{out / MANIFEST}: eos {manifest.eos_id} differs from {store.path}'s {store.eos_id}")
    return manifest


def require_pool_tokens(pool: str | Path, store: TokenStore, field: str = "data.synthetic.pool") -> None:
    """Refuse (one line, naming the command) a pool that training could not read: not tokenized
    for ``store``'s tokenizer, not finished, or tokenized from an earlier state of the pool.
    Reads only manifests (what ``search`` checks before it dispatches a run)."""
    _ready_manifest(Path(pool), store, field)


def open_pool_tokens(pool: str | Path, store: TokenStore, field: str = "data.synthetic.pool",
                     pool_identity: dict[str, Any] | None = None) -> PooledTokens:  # fmt: skip
    """The pool's tokens for ``store``'s tokenizer, memory-mapped, tokenized from ``pool_identity``
    (the identity of the pool's manifest as the caller read it; None: read now).

    Raises:
        UserError: see :func:`require_pool_tokens`.
    """
    pool = Path(pool)
    manifest = _ready_manifest(pool, store, field, pool_identity)
    out, count = tokens_dir(pool, store.tokenizer_hash), manifest.num_shards
    per_shard = [json.loads((out / f"{pools.shard_stem(i, count)}.doc_ids.json").read_text()) for i in range(count)]
    doc_ids = [""] * sum(len(ids) for ids in per_shard)
    for index, ids in enumerate(per_shard):
        doc_ids[pools.shard_positions(index, count)] = ids
    arrays: list[np.ndarray] = []
    generations = _columns(out, "", count, manifest.pool_g, arrays) if manifest.generations else None
    real = None
    if manifest.real is not None and "store" in manifest.real:
        # unchanged since: require_pool_sources checks. Usually the store being trained (`gen --corpus
        # STORE`): its opened split is reused, not read again.
        same = Path(manifest.real["store"]).resolve() == store.path.resolve()
        source = store if same else TokenStore.open(manifest.real["store"])
        split = source.split(manifest.real["split"])
        real = (np.full((len(doc_ids), 1), len(arrays), dtype=np.int64),
                split.offsets[:-1].astype(np.int64)[:, None], split.lengths.astype(np.int64)[:, None])
        arrays.append(split.tokens)
    elif manifest.real is not None:
        real = _columns(out, ".real", count, 1, arrays)
    rendered = {(algorithm, g): _columns(out, f".{algorithm}-g{g}", count, _rendered_width(algorithm, g), arrays)
                for algorithm, gs in manifest.rendered.items() for g in gs}
    return PooledTokens(pool, manifest, arrays, doc_ids, generations, real, rendered)


def require_pool_sources(tokens: PooledTokens, store: TokenStore) -> None:
    """The contamination guard, at training time, against the store being trained with: refuse a
    pool whose source documents are not all documents of ``store``'s train split (and one whose
    real documents are read from a store that changed since it was tokenized). A source
    document in the store's validation split would put its rephrases or thoughts (and the text
    itself, for megadocs) into training, so the validation loss would no longer be held out.

    It holds whatever happened to the store since the pool was generated (re-prepared with more
    or fewer validation documents, another split seed, another corpus). Cost: the store's
    validation ids always (a few thousand); its train ids only when the pool's source is not this
    store unchanged since tokenizing (a pool generated from this store's train split holds only
    train documents).

    Raises:
        UserError: one line naming the offending documents and the fix.
    """
    manifest = tokens.manifest
    if manifest.pool_kind is PoolKind.SAMPLE:
        return  # unconditional samples have no source documents
    fix = (f"regenerate the pool from {store.path} as it is (`megadocs gen ... --corpus {store.path}`), or "
           f"re-prepare the store as it was when the pool was generated (same corpus, --val-docs/--val-tokens "
           f"and --seed)")

    def refuse(found: list[str], what: str) -> None:
        named = ", ".join(repr(doc) for doc in found[:GUARD_NAMES]) + (", ..." if len(found) > GUARD_NAMES else "")
        raise UserError(f"data.synthetic: {tokens.pool}: {len(found)} of its {tokens.num_documents} source "
                        f"documents {what} ({named}); {fix}")

    val = set(store.split("val").doc_ids)
    leaked = [doc for doc in tokens.doc_ids if doc in val]
    if leaked:
        refuse(leaked, f"are in the val split of {store.path}: their text would leak into training")
    source = manifest.source_store
    unchanged = source is not None and Path(source["path"]) == store.path.resolve() \
        and source["identity"] == store_identity_hash(store.path)
    if not unchanged:
        train = set(store.split("train").doc_ids)
        unknown = [doc for doc in tokens.doc_ids if doc not in train]
        if unknown:
            refuse(unknown, f"are not documents of {store.path} (another corpus?)")
    real = manifest.real or {}
    if "store" in real and store_identity_hash(real["store"]) != real["store_identity"]:
        raise UserError(f"data.synthetic: {tokens.pool}: its real documents come from {real['store']}, which has "
                        f"changed since the pool was tokenized; run {_command(tokens.pool, store.path)} again")


@dataclass(frozen=True, eq=False)
class PieceDocuments:
    """Documents made of pieces (token ranges of memory-mapped arrays), a document's pieces joined
    with EOS (its segments).

    The same interface as :class:`train.store.TokenizedDocuments` for a stream (``lengths``,
    ``gather``), without ever copying tokens: a window's tokens are gathered from the arrays.
    """

    arrays: list[np.ndarray]
    piece_array: np.ndarray  # int64 [P]
    piece_start: np.ndarray  # int64 [P]: first token in its array
    piece_length: np.ndarray  # int64 [P], all > 0
    doc_pieces: np.ndarray  # int64 [D + 1]: document d = pieces doc_pieces[d]:doc_pieces[d+1]
    eos_id: int
    pool_identity: dict[str, Any] | None = None
    """The identity of the pool these were read from (:func:`synthetic_documents`: its manifest as
    read once, which its tokens were checked to be made from): what a run's identity hashes."""

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

    @cached_property
    def _layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(document start, piece start) in the concatenation of all documents (every piece
        followed by one EOS), and lengths."""
        piece_virtual = np.zeros(len(self.piece_length) + 1, dtype=np.int64)
        np.cumsum(self.piece_length + 1, out=piece_virtual[1:])
        doc_virtual = piece_virtual[self.doc_pieces]
        lengths = np.diff(doc_virtual) - 1  # no EOS after a document's last piece
        return doc_virtual, piece_virtual, lengths

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


def _segment_columns(tokens: PooledTokens, algorithm: str, g: int, chosen: list[int]) -> tuple[list[Columns], list[int]]:
    """The token column of every segment of the rule's layout at G'=``g`` (document-major) and the
    document (of one real document's) each belongs to."""
    columns, owners, rendered = [], [], 0
    for d, document in enumerate(megadoc.layout(algorithm, g)):
        for segment in document:
            part = segment[0]
            if _simple(segment) and isinstance(part, megadoc.Real):
                column = tokens.real
            elif _simple(segment):
                column = tuple(c[:, chosen[part.slot]:chosen[part.slot] + 1] for c in tokens.generations)
            else:
                column = tuple(c[:, rendered:rendered + 1] for c in tokens.rendered[(algorithm, g)])
                rendered += 1
            columns.append(column)
            owners.append(d)
    return columns, owners


def synthetic_documents(pool: str | Path, algorithm: str, g: int, store: TokenStore) -> PieceDocuments:
    """The synthetic stream's documents of (algorithm, g) in order: the megadoc rule mapped over
    the tokenized pool's ranges (an empty segment left out, then a document without segments),
    after the contamination guard (:func:`require_pool_sources`). Memory maps only.

    Raises:
        UserError: a pool of the wrong kind for the algorithm, or a G it cannot serve (both
            before the tokens are opened); a pool not tokenized for ``store``; the guard's refusal.
    """
    manifest = pools.read_manifest(pool, "data.synthetic.pool")  # read once: its identity is the run's
    identity = manifest.identity()
    kind, expected = manifest.kind, POOL_KIND[algorithm]
    if kind != expected:
        raise UserError(f"data.synthetic.algorithm: {algorithm} needs a {expected} pool, "
                        f"but {pool} holds {kind} generations")
    chosen = pools.select_generations(kind, manifest.g, g, field="data.synthetic.g")
    tokens = open_pool_tokens(pool, store, pool_identity=identity)  # its tokens were made from it
    require_pool_sources(tokens, store)
    columns, owners = _segment_columns(tokens, algorithm, g, chosen)
    array, start, length = (np.concatenate(parts, axis=1).ravel() for parts in zip(*columns))  # [K * S]
    per_document = len(megadoc.layout(algorithm, g))
    owner = (np.arange(tokens.num_documents)[:, None] * per_document + np.asarray(owners)[None, :]).ravel()
    kept = length > 0  # the empty rule: an empty segment holds no tokens
    owner = owner[kept]
    starts = np.flatnonzero(np.diff(owner, prepend=-1))  # first piece of each document left
    doc_pieces = np.append(starts, owner.size).astype(np.int64)
    return PieceDocuments(tokens.arrays, array[kept], start[kept], length[kept], doc_pieces, eos_id=store.eos_id,
                          pool_identity=identity)
