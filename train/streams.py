"""The stream and mixing arithmetic of paper.md "Data streams and mixing", as pure numpy.

A *stream* is a seeded permutation of its documents, each followed by EOS, concatenated and cut
into context-length *windows* ("concat-and-chunk"). The final partial window is dropped: it
would need padding, and at most ``context - 1`` tokens of a stream are lost that way.

Training draws from two streams as a weighted mixture (weights ``1 - m`` and ``m``, as the
reference implementation does): over the first ``k`` steps the run has read
``floor(k * (1 - m) * B)`` real windows and ``ceil(k * m * B)`` synthetic ones, so each step takes
``floor(m * B)`` or ``ceil(m * B)`` synthetic windows and the synthetic share of the run is ``m``
up to one window, even when ``m * B`` is not whole (m = 0.9, B = 64: 57 or 58, not always 58).
``m`` is taken as the decimal it was written as (``Fraction(repr(m))``), so 0.9 * 64 is 57.6
exactly. Each stream visits its windows in one fixed, seeded window permutation that is reused
every epoch. ``real_epochs`` counts passes over the real stream, so the run has
``ceil(real_epochs * real_windows / ((1 - m) * B))`` steps (= real steps per epoch * epochs /
(1 - m) when everything divides). The synthetic stream cycles through its own permutation as
often as that takes.

Policy for the remainder: the last step may be short. It takes only the real windows that are
left, so that every real window is seen *exactly* ``real_epochs`` times, and synthetic windows up
to ``ceil(real_total * m / (1 - m))`` for the whole run; every other step is full.

Synthetic only (``m = 1``, the paper's Figure 13 ablation): no real window is read, so real epochs
cannot set the length of the run; ``synthetic_epochs`` (passes over the synthetic stream) does
instead. The run has ``ceil(synthetic_windows * synthetic_epochs / B)`` steps, the last one short,
and every synthetic window is read exactly ``synthetic_epochs`` times. ``real_epochs`` is ignored
there; ``synthetic_epochs`` is refused with ``m < 1`` (the real stream sets the length then).

Nothing here touches tokens: :class:`StreamLayout` maps window positions to (document,
offset) pairs and :class:`StreamMixture` maps a step to window ids, each in O(batch) for any step,
so a resumed run starts at step ``k`` without replaying the first ``k`` steps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from megadocs.errors import UserError

__all__ = [
    "REAL",
    "SYNTHETIC",
    "VALIDATION",
    "stream_rng",
    "document_order",
    "window_order",
    "chunk_boundaries",
    "StreamLayout",
    "MixtureError",
    "StreamMixture",
    "stream_mixture",
]

# Stream identities and purposes: they key the random generators, so the real stream's document
# order never depends on whether a synthetic stream exists.
REAL = 0
SYNTHETIC = 1
VALIDATION = 2
_DOCUMENTS = 0
_WINDOWS = 1


def stream_rng(seed: int, stream: int, purpose: int) -> np.random.Generator:
    """An independent generator per (seed, stream, purpose)."""
    return np.random.default_rng([int(seed), int(stream), int(purpose)])


def document_order(num_docs: int, seed: int, stream: int = REAL) -> np.ndarray:
    """The seeded order in which a stream concatenates its documents (a permutation, int64)."""
    if num_docs < 0:
        raise ValueError(f"num_docs: expected >= 0, got {num_docs}")
    return stream_rng(seed, stream, _DOCUMENTS).permutation(num_docs).astype(np.int64)


def window_order(num_windows: int, seed: int, stream: int = REAL) -> np.ndarray:
    """The fixed seeded order in which a stream visits its windows, reused every epoch."""
    if num_windows < 0:
        raise ValueError(f"num_windows: expected >= 0, got {num_windows}")
    return stream_rng(seed, stream, _WINDOWS).permutation(num_windows).astype(np.int64)


def chunk_boundaries(lengths_in_order: np.ndarray, context: int) -> tuple[np.ndarray, int]:
    """Where each document starts in the EOS-joined stream, and how many full windows it holds.

    Args:
        lengths_in_order: token count of each document (without EOS), in stream order.
        context: window length in tokens.

    Returns:
        ``(starts, num_windows)``: ``starts`` has one entry per document plus the stream length
        (each document occupies ``starts[i] .. starts[i+1] - 1``, its EOS last);
        ``num_windows = stream_length // context`` (the partial tail is dropped).
    """
    if context < 1:
        raise ValueError(f"context: expected >= 1, got {context}")
    lengths = np.asarray(lengths_in_order, dtype=np.int64)
    if lengths.size and lengths.min() < 0:
        raise ValueError("lengths_in_order: document lengths must be >= 0")
    starts = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=starts[1:])  # +1: the EOS after every document
    return starts, int(starts[-1] // context)


@dataclass(frozen=True, eq=False)
class StreamLayout:
    """One stream's documents in their seeded order, EOS-joined and cut into windows.

    ``lengths`` are the source documents' token counts (without EOS) in source order;
    ``order[p]`` is the source document at stream position ``p``.
    """

    lengths: np.ndarray
    order: np.ndarray
    context: int

    @classmethod
    def build(cls, lengths: np.ndarray, *, context: int, seed: int, stream: int) -> StreamLayout:
        lengths = np.asarray(lengths, dtype=np.int64)
        return cls(lengths, document_order(lengths.size, seed, stream), context)

    @functools.cached_property
    def _boundaries(self) -> tuple[np.ndarray, int]:
        return chunk_boundaries(self.lengths[self.order], self.context)

    @property
    def starts(self) -> np.ndarray:
        return self._boundaries[0]

    @property
    def num_windows(self) -> int:
        return self._boundaries[1]

    @property
    def num_tokens(self) -> int:
        """Stream length including one EOS per document."""
        return int(self.starts[-1])

    def locate(self, window_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map every token of the given windows to its source document and offset in it.

        Returns:
            ``(documents, offsets)``, both ``[len(window_ids), context]`` int64. ``documents``
            holds source document indices; ``offsets == lengths[documents]`` marks the EOS that
            ends that document (the EOS belongs to the document it closes).
        """
        window_ids = np.asarray(window_ids, dtype=np.int64)
        if window_ids.size and (window_ids.min() < 0 or window_ids.max() >= self.num_windows):
            raise IndexError(f"window id out of range [0, {self.num_windows})")
        positions = window_ids[:, None] * self.context + np.arange(self.context, dtype=np.int64)
        stream_pos = np.searchsorted(self.starts, positions, side="right") - 1
        return self.order[stream_pos], positions - self.starts[stream_pos]


class MixtureError(ValueError):
    """A `StreamMixture` argument that cannot work: ``parameter`` names it, ``reason`` says why.

    Callers map ``parameter`` to their own setting (train: ``batch_size`` is ``optim.batch_size``)
    instead of parsing the message.
    """

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


@dataclass(frozen=True)
class StreamMixture:
    """Which windows of the real and synthetic streams each training step reads.

    Example:
        >>> mixture = StreamMixture(real_windows=100, synthetic_windows=700, batch_size=64,
        ...                         mixing_fraction=0.9, real_epochs=2, seed=0)
        >>> mixture.total_steps, [mixture.batch_counts(step)[1] for step in range(5)]
        (32, [58, 58, 57, 58, 57])
        >>> mixture.synthetic_windows_total, round(mixture.realised_mixing_fraction, 4)
        (1800, 0.9)
    """

    real_windows: int
    """Windows in the real stream (one epoch)."""
    synthetic_windows: int
    """Windows in the synthetic stream (0 when there is none)."""
    batch_size: int
    """Windows per step."""
    mixing_fraction: float
    """Share of all training windows drawn from the synthetic stream, in [0, 1]."""
    real_epochs: int
    """Passes over the real stream (ignored at ``mixing_fraction`` 1)."""
    seed: int
    """Seeds both window permutations."""
    synthetic_epochs: int | None = None
    """Passes over the synthetic stream: required at ``mixing_fraction`` 1, refused below it."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise MixtureError("batch_size", f"expected >= 1, got {self.batch_size}")
        if not 0.0 <= self.mixing_fraction <= 1.0:
            raise MixtureError("mixing_fraction", f"expected a value in [0, 1], got {self.mixing_fraction}")
        if self.synthetic_only:
            if self.synthetic_epochs is None:
                raise MixtureError("synthetic_epochs", "mixing_fraction 1 reads no real window, so the number of "
                                "passes over the synthetic stream sets the run's length; expected a whole number >= 1")
            if int(self.synthetic_epochs) != self.synthetic_epochs or self.synthetic_epochs < 1:
                raise MixtureError("synthetic_epochs", f"expected a whole number >= 1, got {self.synthetic_epochs}")
        elif self.synthetic_epochs is not None:
            raise MixtureError("synthetic_epochs", f"only for mixing_fraction 1 (synthetic only); with "
                            f"mixing_fraction {self.mixing_fraction} real_epochs sets the run's length")
        if int(self.real_epochs) != self.real_epochs or self.real_epochs < 1:
            raise MixtureError("real_epochs", f"expected a whole number >= 1, got {self.real_epochs}")
        if self.real_windows < 1 and not self.synthetic_only:
            raise MixtureError("real_windows", f"the real stream holds no full window, got {self.real_windows} "
                            f"(use a shorter context or more documents)")
        if self.synthetic_windows < 0:
            raise MixtureError("synthetic_windows", f"expected >= 0, got {self.synthetic_windows}")
        if self.mixing_fraction > 0 and self.synthetic_windows < 1:
            raise MixtureError("synthetic_windows", f"mixing_fraction {self.mixing_fraction} needs a synthetic "
                            f"stream with at least one window, got {self.synthetic_windows}")

    @property
    def synthetic_only(self) -> bool:
        """``mixing_fraction`` 1: every window is synthetic; ``synthetic_epochs`` sets the length."""
        return self.mixing_fraction == 1.0

    @functools.cached_property
    def _share(self) -> Fraction:
        """m as the exact decimal it was written as (0.9 -> 9/10, not 0.9000000000000000222)."""
        return Fraction(repr(float(self.mixing_fraction)))

    @functools.cached_property
    def _real_per_step(self) -> Fraction:
        """(1 - m) * B, exactly."""
        return (1 - self._share) * self.batch_size

    @property
    def real_windows_total(self) -> int:
        """Real windows read over the whole run: each real window ``real_epochs`` times (none
        when synthetic only)."""
        if self.synthetic_only:
            return 0
        return int(self.real_epochs) * self.real_windows

    @functools.cached_property
    def synthetic_windows_total(self) -> int:
        """Synthetic windows read over the whole run: ``ceil(real_total * m / (1 - m))``, or
        ``synthetic_windows * synthetic_epochs`` when synthetic only."""
        if self.synthetic_only:
            return self.synthetic_windows * int(self.synthetic_epochs)
        return math.ceil(self.real_windows_total * self._share / (1 - self._share))

    @functools.cached_property
    def total_steps(self) -> int:
        """``ceil(real_windows * real_epochs / ((1 - m) * B))``, in exact arithmetic, or
        ``ceil(synthetic_windows * synthetic_epochs / B)`` when synthetic only."""
        if self.synthetic_only:
            return math.ceil(self.synthetic_windows_total / self.batch_size)
        return math.ceil(self.real_windows_total / self._real_per_step)

    @property
    def steps_per_real_epoch(self) -> float | None:
        """None when synthetic only (no real window is read)."""
        if self.synthetic_only:
            return None
        return float(self.real_windows / self._real_per_step)

    @property
    def realised_mixing_fraction(self) -> float:
        """Synthetic share of all windows of the run (within 1/(windows of the run) of m)."""
        synthetic = self.synthetic_windows_total
        return synthetic / max(1, synthetic + self.real_windows_total)

    def windows_before(self, step: int) -> tuple[int, int]:
        """``(real, synthetic)`` windows read by steps ``0 .. step - 1`` (``0 <= step <= total_steps``)."""
        if not 0 <= step <= self.total_steps:
            raise IndexError(f"step {step} outside the run's [0, {self.total_steps}]")
        real = math.floor(step * self._real_per_step)
        synthetic = step * self.batch_size - real  # = ceil(step * m * B)
        return min(real, self.real_windows_total), min(synthetic, self.synthetic_windows_total)

    @functools.cached_property
    def real_order(self) -> np.ndarray:
        return window_order(self.real_windows, self.seed, REAL)

    @functools.cached_property
    def synthetic_order(self) -> np.ndarray:
        return window_order(self.synthetic_windows, self.seed, SYNTHETIC)

    def batch_counts(self, step: int) -> tuple[int, int]:
        """``(real, synthetic)`` window counts of ``step``; only the last step can be short."""
        self._check_step(step)
        (real_start, synthetic_start), (real_stop, synthetic_stop) = (
            self.windows_before(step), self.windows_before(step + 1))
        return real_stop - real_start, synthetic_stop - synthetic_start

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The real and synthetic window ids of ``step`` (int64 arrays), in O(batch)."""
        self._check_step(step)
        (real_start, synthetic_start), (real_stop, synthetic_stop) = (
            self.windows_before(step), self.windows_before(step + 1))
        real = (self.real_order[np.arange(real_start, real_stop, dtype=np.int64) % self.real_windows]
                if real_stop > real_start else np.zeros(0, dtype=np.int64))
        if synthetic_stop == synthetic_start:
            return real, np.zeros(0, dtype=np.int64)
        synthetic_index = np.arange(synthetic_start, synthetic_stop, dtype=np.int64)
        return real, self.synthetic_order[synthetic_index % self.synthetic_windows]

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} outside the run's [0, {self.total_steps})")


# StreamMixture parameter -> the RunConfig field a user changes (the others are data.<parameter>)
_MIXTURE_FIELDS = {"batch_size": "optim.batch_size", "real_windows": "data.context",
                "synthetic_windows": "data.synthetic"}


def stream_mixture(*, real_windows: int, synthetic_windows: int, batch_size: int, mixing_fraction: float,
                   real_epochs: int, seed: int, synthetic_epochs: int | None) -> StreamMixture:
    """The run's :class:`StreamMixture` over streams of these sizes: what training reads
    (`train.data.TrainingStreams.build`) and what a cost estimate counts before the streams exist
    (`train.plan.run_cost`, ``search plan`` and ``train --dry-run``), built by one function.

    Raises:
        UserError: a setting that cannot work, naming its RunConfig field (``optim.batch_size``,
            ``data.synthetic_epochs``, ...).
    """
    try:
        return StreamMixture(real_windows=real_windows, synthetic_windows=synthetic_windows, batch_size=batch_size,
                             mixing_fraction=mixing_fraction, real_epochs=real_epochs, seed=seed,
                             synthetic_epochs=synthetic_epochs)  # fmt: skip
    except MixtureError as exc:
        field = _MIXTURE_FIELDS.get(exc.parameter, f"data.{exc.parameter}")
        raise UserError(f"{field}: {exc.reason}") from None
