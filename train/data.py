"""Training batches and validation windows as torch tensors, read straight from the token arrays.

Streams are never materialized: a window's tokens are gathered from the memory-mapped token
store (or the tokenized pool) through :class:`train.streams.StreamLayout`, which maps each token
position to (document, offset). A step costs O(batch * context) whatever the corpus size, and
nothing is written next to the store.

``document_ids`` give, per token, the index of its source document inside its stream (store
split order for real text and validation, the megadoc rule's order for synthetic text); the EOS that
ends a document belongs to it. Equal ids within a row mark the same document, which is what a
same-document attention mask (``data.document_mask``) needs.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from megadocs.errors import UserError
from train.benchmarks import BenchmarkData
from train.pool_tokens import synthetic_documents
from train.store import TokenStore
from train.streams import REAL, SYNTHETIC, VALIDATION, StreamLayout, StreamMixture, stream_mixture

if TYPE_CHECKING:
    from train.config import RunConfig

__all__ = ["RunData", "RunStores", "TrainingStreams", "ValidationSet", "TokenStream", "StreamDocuments", "VALIDATION_SEED",
           "longer_half"]

# Validation windows never depend on the training seed.
VALIDATION_SEED = 0


class StreamDocuments(Protocol):
    """What a stream reads: flat store/cache arrays (:class:`~train.store.TokenizedDocuments`) or
    documents assembled by index from a tokenized pool (:class:`~train.pool_tokens.PieceDocuments`)."""

    @property
    def lengths(self) -> np.ndarray: ...

    def gather(self, documents: np.ndarray, offsets: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class TokenStream:
    """Documents laid out as one EOS-joined stream of windows."""

    documents: StreamDocuments
    layout: StreamLayout
    eos_id: int

    @classmethod
    def build(cls, documents: StreamDocuments, *, eos_id: int, context: int, seed: int,
              stream: int) -> TokenStream:
        layout = StreamLayout.build(documents.lengths, context=context, seed=seed, stream=stream)
        return cls(documents, layout, eos_id)

    @property
    def num_windows(self) -> int:
        return self.layout.num_windows

    def windows(self, window_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens, document_ids)`` of the given windows, both int64 ``[len(ids), context]``."""
        documents, offsets = self.layout.locate(window_ids)
        inside = offsets < self.layout.lengths[documents]  # False: the EOS closing the document
        tokens = np.full(documents.shape, self.eos_id, dtype=np.int64)
        tokens[inside] = self.documents.gather(documents[inside], offsets[inside])
        return tokens, documents


@dataclass(frozen=True, eq=False)
class TrainingStreams:
    """The real and synthetic streams of a run and the mixture that draws each batch from them.

    Example:
        >>> streams = TrainingStreams.build("runs/demo/data", context=256, mixing_fraction=0.0,
        ...                                 real_epochs=2, batch_size=8, seed=0)  # doctest: +SKIP
        >>> streams.batch(0)["input_ids"].shape  # doctest: +SKIP
        torch.Size([8, 256])
    """

    mixture: StreamMixture
    context: int
    real: TokenStream
    synthetic: TokenStream | None
    eos_id: int
    vocab_size: int
    synthetic_pool: dict[str, Any] | None = None
    """The identity of the synthetic pool as read to open its tokens (None: no synthetic stream)."""

    @classmethod
    def build(
        cls,
        store: TokenStore | str | Path,
        *,
        synthetic: Mapping[str, Any] | Any | None = None,
        context: int,
        mixing_fraction: float = 0.0,
        real_epochs: int = 1,
        synthetic_epochs: int | None = None,
        batch_size: int,
        seed: int = 0,
    ) -> TrainingStreams:
        """Open the store (and the synthetic documents when ``mixing_fraction > 0``).

        Args:
            store: the token store, or its directory (opened here). A run passes the store it
                opened and checked (:meth:`RunData.open`), so it is opened once.
            synthetic: ``{pool, algorithm, g}`` (a mapping or an object with those attributes),
                or None for real data only. Not read when ``mixing_fraction`` is 0.

        Raises:
            UserError: naming the config field (``data.*`` or ``optim.batch_size``).
        """
        if context < 2:
            raise UserError(f"data.context: expected >= 2 tokens, got {context}")
        if not 0.0 <= mixing_fraction <= 1.0:  # checked before any synthetic file is read
            raise UserError(f"data.mixing_fraction: expected a value in [0, 1], got {mixing_fraction}")
        store = store if isinstance(store, TokenStore) else TokenStore.open(store)
        real = TokenStream.build(store.split("train"), eos_id=store.eos_id, context=context, seed=seed,
                                 stream=REAL)
        if real.num_windows < 1 and mixing_fraction < 1.0:
            raise UserError(f"data.context: the real stream ({real.layout.num_tokens:,} tokens with EOS) "
                            f"holds no full window of {context} tokens (use a shorter context)")
        synthetic_stream, synthetic_pool = None, None
        if mixing_fraction > 0:
            if synthetic is None:
                raise UserError(f"data.synthetic: mixing_fraction {mixing_fraction} needs a synthetic "
                                f"stream ({{pool, algorithm, g}}), got none")
            spec = _synthetic_spec(synthetic)
            # assembled by index from the tokenized pool (`megadocs data tokenize-pool`), after the
            # contamination guard: its source documents must be the store's train split
            documents = synthetic_documents(spec["pool"], spec["algorithm"], spec["g"], store)
            synthetic_pool = documents.pool_identity
            synthetic_stream = TokenStream.build(documents, eos_id=store.eos_id, context=context, seed=seed,
                                                 stream=SYNTHETIC)
        mixture = stream_mixture(real_windows=real.num_windows,
                                 synthetic_windows=0 if synthetic_stream is None else synthetic_stream.num_windows,
                                 batch_size=batch_size, mixing_fraction=mixing_fraction, real_epochs=real_epochs,
                                 seed=seed, synthetic_epochs=synthetic_epochs)  # fmt: skip
        return cls(mixture, context, real, synthetic_stream, store.eos_id, store.vocab_size, synthetic_pool)

    @property
    def total_steps(self) -> int:
        return self.mixture.total_steps

    @property
    def tokens_per_step(self) -> int:
        """Tokens of a full step (the last step may be shorter; see :mod:`train.streams`)."""
        return self.mixture.batch_size * self.context

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step`` (any step, no replay): real rows first, then synthetic rows.

        Returns:
            ``input_ids`` and ``document_ids``: LongTensor ``[rows, context]``;
            ``is_synthetic``: BoolTensor ``[rows]``. ``rows`` is the batch size except on a
            short last step.
        """
        real_ids, synthetic_ids = self.mixture.batch(step)
        tokens, documents = self.real.windows(real_ids)
        if synthetic_ids.size:
            synthetic_tokens, synthetic_documents = self.synthetic.windows(synthetic_ids)
            tokens = np.concatenate([tokens, synthetic_tokens])
            documents = np.concatenate([documents, synthetic_documents])
        is_synthetic = np.arange(len(tokens)) >= len(real_ids)
        return {
            "input_ids": torch.from_numpy(tokens),  # [rows, context]
            "document_ids": torch.from_numpy(documents),  # [rows, context]
            "is_synthetic": torch.from_numpy(is_synthetic),  # [rows]
        }


def longer_half(lengths: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Bool per document: among the ``present`` documents ranked by (length, index), the longer
    ``ceil(n / 2)``; documents not present are False."""
    present = np.asarray(present, dtype=np.int64)
    ranked = present[np.lexsort((present, lengths[present]))]
    is_long = np.zeros(len(lengths), dtype=bool)
    is_long[ranked[len(ranked) // 2:]] = True
    return is_long


def _synthetic_spec(synthetic: Mapping[str, Any] | Any) -> dict[str, Any]:
    if not isinstance(synthetic, Mapping):
        synthetic = {key: getattr(synthetic, key, None) for key in ("pool", "algorithm", "g")}
    missing = [key for key in ("pool", "algorithm", "g") if synthetic.get(key) in (None, "")]
    if missing:
        raise UserError(f"data.synthetic: missing {', '.join(missing)} (expected {{pool, algorithm, g}})")
    return {"pool": synthetic["pool"], "algorithm": str(synthetic["algorithm"]), "g": int(synthetic["g"])}


@dataclass(frozen=True, eq=False)
class ValidationSet:
    """Fixed held-out windows of real text, the same for every run on the same store.

    The split's documents are EOS-joined in an order fixed by :data:`VALIDATION_SEED` and the
    first ``max_windows`` windows are kept (fewer when the split holds fewer: ``requested``
    keeps what was asked, and :meth:`build` warns). ``is_long_document[d]`` is True when document
    ``d`` is in the longer half of the documents the scored windows predict (ranked by length,
    ties by index): it splits the i.i.d. loss into its short and long halves (a token belongs to
    the half of its document). Ranking, rather than comparing with the median, keeps both halves
    non-empty whenever the windows hold two documents or more (equal lengths included).
    """

    input_ids: torch.Tensor
    """LongTensor ``[N, context]``."""
    document_ids: torch.Tensor
    """LongTensor ``[N, context]``: index of each token's document in the split."""
    is_long_document: torch.Tensor
    """BoolTensor ``[documents in split]``."""
    split: str
    requested: int | None = None
    """``max_windows`` as asked (None: all of them)."""

    @classmethod
    def build(cls, store: TokenStore | str | Path, *, split: str = "val", context: int,
              max_windows: int | None = None, field: str = "eval.val_windows") -> ValidationSet:
        """The first ``max_windows`` windows of ``split`` (all of them: None).

        Args:
            store: the token store, or its directory (opened here). A run passes the store it
                opened when it started (:class:`RunData`), so every evaluation reads the
                files whose identity the run recorded, and the split's offsets are loaded once.

        Raises:
            UserError: the split holds no full window of ``context`` tokens. Warns on stderr,
                naming ``field``, when it holds fewer than ``max_windows``.
        """
        store = store if isinstance(store, TokenStore) else TokenStore.open(store)
        stream = cls.stream(store, split=split, context=context)
        documents = stream.documents
        if max_windows is not None and max_windows < 1:
            raise UserError(f"{field}: expected >= 1, got {max_windows}")
        count = stream.num_windows if max_windows is None else min(max_windows, stream.num_windows)
        if count < (max_windows or 0):
            print(f"warning: {field}: {max_windows} windows requested but split {split!r} of {store.path} "
                  f"holds only {count} windows of {context} tokens; scoring {count} (prepare the store "
                  f"with --val-tokens {max_windows * context} to hold out enough text)", file=sys.stderr)
        tokens, document_ids = stream.windows(np.arange(count))
        is_long = longer_half(documents.lengths, np.unique(document_ids[:, 1:]))
        return cls(torch.from_numpy(tokens), torch.from_numpy(document_ids), torch.from_numpy(is_long), split,
                   max_windows)

    @staticmethod
    def stream(store: TokenStore, *, split: str, context: int) -> TokenStream:
        """The held-out stream of ``split`` (its documents in the fixed validation order, EOS-joined,
        cut into windows of ``context`` tokens); `RunData.open` calls it to check a run's held-out
        sets before training.

        Raises:
            UserError: no such split, or it holds no full window of ``context`` tokens.
        """
        stream = TokenStream.build(store.split(split), eos_id=store.eos_id, context=context, seed=VALIDATION_SEED,
                                   stream=VALIDATION)
        if stream.num_windows < 1:
            raise UserError(f"{store.path}: split {split!r} ({stream.layout.num_tokens:,} tokens with EOS) "
                            f"holds no full window of {context} tokens (prepare with more --val-docs "
                            f"or use a shorter data.context)")
        return stream

    @property
    def num_windows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def is_long_token(self) -> torch.Tensor:
        """BoolTensor ``[N, context]``: the token's document is in the long half."""
        return self.is_long_document[self.document_ids]


@dataclass(frozen=True)
class RunStores:
    """A run's token stores, each opened once: data.store and the eval.extra stores by name, and
    its eval.benchmark_data as read (`train.benchmarks.BenchmarkData`, None when not set). The
    run's identity is of these as opened (`identity`), and the run reads these, so data replaced
    at its path after it was opened can neither give the run another's identity nor be read by it.

    Example:
        >>> stores = RunStores.open(config)  # doctest: +SKIP
        >>> stores.identity(config) == config.identity()  # doctest: +SKIP
        True
    """

    store: TokenStore
    extra: dict[str, TokenStore]
    benchmark_data: BenchmarkData | None

    @classmethod
    def open(cls, config: RunConfig) -> RunStores:
        """Open data.store and every eval.extra store (each must share data.store's tokenizer,
        checked now rather than after training), and read eval.benchmark_data.

        Raises:
            UserError: a store is missing or was prepared with another tokenizer, or
                eval.benchmark_data is no directory or lacks an eval.benchmarks task's file or
                fields (naming the field or the file).
        """
        store = _open_store(config.data.store, "data.store")
        extra = {name: _open_extra_store(store, name, spec.store) for name, spec in config.eval.extra.items()}
        benchmark_data = BenchmarkData.read(config.eval.benchmark_data, config.eval.benchmarks) \
            if config.eval.benchmark_data else None
        return cls(store=store, extra=extra, benchmark_data=benchmark_data)

    def identity(self, config: RunConfig) -> str:
        """`RunConfig.identity` of `config` (the config these were opened for) on these stores."""
        return config.identity(**self._opened())

    def data_identity(self, config: RunConfig) -> dict[str, Any]:
        """`RunConfig.data_identity` of `config` on these stores: what `identity` hashes of the data."""
        return config.data_identity(**self._opened())

    def _opened(self) -> dict[str, Any]:
        """The data as opened, as `RunConfig.identity` takes it (the synthetic pool: read by path)."""
        benchmark_data = None if self.benchmark_data is None else self.benchmark_data.identity
        return {"store": self.store, "extra": self.extra, "benchmark_data": benchmark_data}


@dataclass(frozen=True)
class RunData(RunStores):
    """What a run reads, each store opened once when it starts: the token store, the eval.extra
    stores by name (`RunStores`), and the training streams. Training (`train.loop`) and its plan
    (``--dry-run``, `train.plan.run_plan`) open it the same way.

    Example:
        >>> data = RunData.open(config)  # doctest: +SKIP
        >>> data.streams.total_steps, sorted(data.extra)  # doctest: +SKIP
        (1890, ['arxiv'])
    """

    streams: TrainingStreams

    def _opened(self) -> dict[str, Any]:
        """The stores as opened and the synthetic pool's identity as read to open its tokens (a
        pool replaced at its path since cannot give the run another pool's identity)."""
        return {**super()._opened(), "pool": self.streams.synthetic_pool}

    @classmethod
    def open(cls, config: RunConfig, stores: RunStores | None = None) -> RunData:
        """The training streams of `config` on `stores` (`RunStores.open(config)` when not given).

        Raises:
            UserError: a store is missing or was prepared with another tokenizer, a data
                setting the streams refuse (naming the field), a held-out set the run would end
                by scoring (the iid split, an eval.extra split) missing or without a full window,
                data.store's tokenizer (which the run ends by copying into its model) gone, or
                eval.benchmarks whose data cannot be loaded (`train.downstream.check_benchmarks`).
        """
        stores = RunStores.open(config) if stores is None else stores
        data = config.data
        streams = TrainingStreams.build(stores.store, synthetic=data.synthetic, context=data.context,
                                        mixing_fraction=data.mixing_fraction, real_epochs=data.real_epochs,
                                        synthetic_epochs=data.synthetic_epochs, batch_size=config.optim.batch_size,
                                        seed=data.seed)  # fmt: skip
        # the held-out sets the run ends by scoring: one that cannot be scored is refused now, not
        # after every step has been trained
        ValidationSet.stream(stores.store, split="val", context=data.context)
        for name, spec in config.eval.extra.items():
            ValidationSet.stream(stores.extra[name], split=spec.split, context=data.context)
        stores.store.check_tokenizer()  # what the run ends by copying into RUN/model
        if config.eval.benchmarks:  # and the benchmarks' data, loaded as the final evaluation loads it
            from train.downstream import check_benchmarks  # lm-eval: only for runs that score benchmarks

            check_benchmarks(config.eval.benchmarks, stores.benchmark_data)
        return cls(store=stores.store, extra=stores.extra, benchmark_data=stores.benchmark_data, streams=streams)


def _open_store(path: str, field: str) -> TokenStore:
    """TokenStore.open, with the config field named in its one-line error."""
    try:
        return TokenStore.open(path)
    except UserError as exc:
        raise UserError(f"{field}: {exc}") from None


def _open_extra_store(store: TokenStore, name: str, path: str) -> TokenStore:
    """An extra held-out store; it must share the training store's tokenizer (same token ids)."""
    extra_store = _open_store(path, f"eval.extra.{name}.store")
    if extra_store.tokenizer_hash != store.tokenizer_hash:
        raise UserError(
            f"eval.extra.{name}.store: {path} has tokenizer_hash {extra_store.tokenizer_hash}, but "
            f"data.store has {store.tokenizer_hash}; prepare it with --tokenizer {store.tokenizer_path}"
        )
    return extra_store
