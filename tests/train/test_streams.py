"""Property tests of the stream and mixing arithmetic against paper.md "Data streams and mixing"."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.streams import (
    MixtureError,
    StreamLayout,
    StreamMixture,
    chunk_boundaries,
    document_order,
    window_order,
)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def mixtures(draw, *, mixing=True):
    batch_size = draw(st.integers(1, 24))
    real_windows = draw(st.integers(1, 60))
    epochs = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31))
    if mixing and draw(st.booleans()):
        # m on the paper's grid or any two-decimal share: m * B is usually not whole
        m = draw(st.sampled_from([0.5, 0.75, 0.9]) | st.integers(1, 99).map(lambda n: n / 100))
        synthetic_windows = draw(st.integers(1, 80))
    else:
        m, synthetic_windows = 0.0, draw(st.sampled_from([0, 5]))
    return StreamMixture(real_windows=real_windows, synthetic_windows=synthetic_windows,
                         batch_size=batch_size, mixing_fraction=m, real_epochs=epochs, seed=seed)


@st.composite
def synthetic_only_mixtures(draw):
    """m = 1 (Figure 13): synthetic_epochs sets the length; real_epochs is ignored."""
    return StreamMixture(real_windows=draw(st.integers(0, 60)), synthetic_windows=draw(st.integers(1, 80)),
                         batch_size=draw(st.integers(1, 24)), mixing_fraction=1.0,
                         real_epochs=draw(st.integers(1, 5)), seed=draw(st.integers(0, 2**31)),
                         synthetic_epochs=draw(st.integers(1, 5)))


def any_mixtures():
    return mixtures() | synthetic_only_mixtures()


def all_batches(mixture: StreamMixture):
    return [mixture.batch(step) for step in range(mixture.total_steps)]


@FAST
@given(mixtures())
def test_every_real_window_is_seen_exactly_epochs_times(mixture):
    seen = np.concatenate([real for real, _ in all_batches(mixture)])
    counts = np.bincount(seen, minlength=mixture.real_windows)
    assert (counts == mixture.real_epochs).all()


def exact_share(mixture: StreamMixture) -> Fraction:
    return Fraction(repr(mixture.mixing_fraction))


@FAST
@given(mixtures())
def test_each_batch_takes_floor_or_ceil_of_m_b_synthetic_windows(mixture):
    """A weighted mixture: per-step counts vary between floor and ceil of m*B; only the last is short."""
    batches = all_batches(mixture)
    share_of_batch = exact_share(mixture) * mixture.batch_size
    for real, synthetic in batches[:-1]:
        assert math.floor(share_of_batch) <= len(synthetic) <= math.ceil(share_of_batch)
        assert len(real) + len(synthetic) == mixture.batch_size
    last_real, last_synthetic = batches[-1]
    assert len(last_real) >= 1
    assert len(last_real) + len(last_synthetic) <= mixture.batch_size


@FAST
@given(mixtures())
def test_synthetic_share_tracks_m_at_every_step(mixture):
    """The cumulative synthetic count never strays a window from m * rows read so far, and the
    run's share is m to within one window of the run."""
    m = exact_share(mixture)
    synthetic_so_far = rows_so_far = 0
    for real, synthetic in all_batches(mixture)[:-1]:
        synthetic_so_far += len(synthetic)
        rows_so_far += len(real) + len(synthetic)
        assert abs(synthetic_so_far - m * rows_so_far) < 1
    total_rows = mixture.real_windows_total + mixture.synthetic_windows_total
    assert abs(mixture.realised_mixing_fraction - mixture.mixing_fraction) <= 1 / total_rows
    seen = sum(len(s) for _, s in all_batches(mixture))
    assert seen == mixture.synthetic_windows_total == math.ceil(mixture.real_windows_total * m / (1 - m))


@FAST
@given(mixtures())
def test_total_steps_match_the_formula(mixture):
    m = exact_share(mixture)
    assert mixture.total_steps == math.ceil(mixture.real_epochs * mixture.real_windows / ((1 - m) * mixture.batch_size))
    if (mixture.real_epochs * mixture.real_windows) % ((1 - m) * mixture.batch_size) == 0:
        # paper.md: real steps per epoch * epochs / (1 - m), when everything divides
        real_steps_per_epoch = mixture.real_windows / mixture.batch_size
        assert mixture.total_steps == pytest.approx(
            real_steps_per_epoch * mixture.real_epochs / (1 - mixture.mixing_fraction))


@FAST
@given(any_mixtures(), st.data())
def test_windows_before_counts_the_batches_of_earlier_steps(mixture, data):
    step = data.draw(st.integers(0, mixture.total_steps))
    counts = [mixture.batch_counts(s) for s in range(step)]
    assert mixture.windows_before(step) == (sum(r for r, _ in counts), sum(s for _, s in counts))


def test_paper_grid_point_m_09_batch_64_is_exact():
    """The audit's case: 57.6 synthetic rows per batch used to round to 58 (6.7% more steps, share 0.906)."""
    mixture = StreamMixture(real_windows=640, synthetic_windows=10**6, batch_size=64, mixing_fraction=0.9,
                            real_epochs=4, seed=0)
    assert mixture.total_steps == 400  # 640 * 4 / 6.4, not ceil(2560 / 6) = 427
    assert mixture.synthetic_windows_total == 23040
    assert mixture.realised_mixing_fraction == pytest.approx(0.9, abs=1e-12)
    assert {mixture.batch_counts(s)[1] for s in range(mixture.total_steps)} == {57, 58}


@FAST
@given(any_mixtures())
def test_synthetic_stream_cycles_through_its_fixed_order(mixture):
    synthetic = np.concatenate([s for _, s in all_batches(mixture)] + [np.zeros(0, np.int64)])
    if mixture.mixing_fraction == 0:
        assert synthetic.size == 0
        return
    order = window_order(mixture.synthetic_windows, mixture.seed, stream=1)
    expected = order[np.arange(synthetic.size) % mixture.synthetic_windows]
    assert (synthetic == expected).all()
    assert sorted(order.tolist()) == list(range(mixture.synthetic_windows))


@FAST
@given(mixtures())
def test_real_windows_follow_one_permutation_reused_every_epoch(mixture):
    real = np.concatenate([r for r, _ in all_batches(mixture)])
    epochs = real.reshape(mixture.real_epochs, mixture.real_windows)
    assert (epochs == epochs[0]).all()
    assert sorted(epochs[0].tolist()) == list(range(mixture.real_windows))


@FAST
@given(any_mixtures(), st.data())
def test_batch_is_deterministic_and_random_access(mixture, data):
    step = data.draw(st.integers(0, mixture.total_steps - 1))
    twin = StreamMixture(**{f: getattr(mixture, f) for f in mixture.__dataclass_fields__})
    for got, want in zip(twin.batch(step), mixture.batch(step)):
        assert (got == want).all()


@FAST
@given(synthetic_only_mixtures())
def test_synthetic_only_reads_every_synthetic_window_exactly_synthetic_epochs_times(mixture):
    batches = all_batches(mixture)
    assert mixture.total_steps == math.ceil(mixture.synthetic_windows * mixture.synthetic_epochs / mixture.batch_size)
    assert all(len(real) == 0 for real, _ in batches)
    assert all(len(synthetic) == mixture.batch_size for _, synthetic in batches[:-1])
    assert 1 <= len(batches[-1][1]) <= mixture.batch_size
    seen = np.concatenate([synthetic for _, synthetic in batches])
    assert (np.bincount(seen, minlength=mixture.synthetic_windows) == mixture.synthetic_epochs).all()
    assert mixture.windows_before(mixture.total_steps) == (0, mixture.synthetic_windows_total) == (0, seen.size)
    assert mixture.realised_mixing_fraction == 1.0 and mixture.steps_per_real_epoch is None


@FAST
@given(synthetic_only_mixtures(), st.integers(1, 5))
def test_synthetic_only_ignores_real_epochs_and_real_windows(mixture, real_epochs):
    twin = StreamMixture(**{**{f: getattr(mixture, f) for f in mixture.__dataclass_fields__},
                            "real_epochs": real_epochs, "real_windows": mixture.real_windows + 7})
    assert twin.total_steps == mixture.total_steps
    for step in (0, mixture.total_steps - 1):
        assert all((a == b).all() for a, b in zip(twin.batch(step), mixture.batch(step)))


def test_synthetic_only_paper_shape():
    """1000 synthetic windows, 3 epochs, batch 64: ceil(3000 / 64) = 47 steps, the last of 56."""
    mixture = StreamMixture(real_windows=640, synthetic_windows=1000, batch_size=64, mixing_fraction=1.0,
                            real_epochs=4, seed=0, synthetic_epochs=3)
    assert mixture.total_steps == 47
    assert mixture.batch_counts(46) == (0, 3000 - 46 * 64)
    assert mixture.synthetic_windows_total == 3000


def test_batch_depends_on_seed():
    a = StreamMixture(real_windows=500, synthetic_windows=500, batch_size=8, mixing_fraction=0.5,
                      real_epochs=1, seed=0)
    b = StreamMixture(real_windows=500, synthetic_windows=500, batch_size=8, mixing_fraction=0.5,
                      real_epochs=1, seed=1)
    assert not all((x == y).all() for x, y in zip(a.batch(0), b.batch(0)))


def test_paper_example_counts():
    mixture = StreamMixture(real_windows=6400, synthetic_windows=10**6, batch_size=64, mixing_fraction=0.75,
                            real_epochs=16, seed=0)
    assert {mixture.batch_counts(s) for s in range(mixture.total_steps)} == {(16, 48)}
    assert mixture.total_steps == 6400 // 64 * 16 * 4  # real steps per epoch * epochs / (1 - m)


def test_real_only_mixture_needs_no_synthetic_stream():
    mixture = StreamMixture(real_windows=10, synthetic_windows=0, batch_size=4, mixing_fraction=0.0,
                            real_epochs=3, seed=0)
    assert mixture.total_steps == 8
    assert [len(mixture.batch(s)[0]) for s in range(8)] == [4] * 7 + [2]
    assert all(len(mixture.batch(s)[1]) == 0 for s in range(8))


def test_one_window_corpus_repeats_that_window():
    mixture = StreamMixture(real_windows=1, synthetic_windows=3, batch_size=4, mixing_fraction=0.5,
                            real_epochs=3, seed=0)
    assert mixture.total_steps == 2
    assert mixture.batch(0)[0].tolist() == [0, 0]
    assert mixture.batch(1)[0].tolist() == [0]
    assert len(mixture.batch(1)[1]) == 1  # the short last step keeps the mix


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"mixing_fraction": 1.1}, "mixing_fraction"),
        ({"mixing_fraction": 1.0}, "synthetic_epochs"),
        ({"mixing_fraction": 1.0, "synthetic_epochs": 0}, "synthetic_epochs"),
        ({"mixing_fraction": 1.0, "synthetic_epochs": 1.5}, "synthetic_epochs"),
        ({"mixing_fraction": 1.0, "synthetic_epochs": 2, "synthetic_windows": 0}, "synthetic_windows"),
        ({"synthetic_epochs": 2}, "synthetic_epochs"),
        ({"mixing_fraction": -0.1}, "mixing_fraction"),
        ({"synthetic_windows": 0}, "synthetic_windows"),
        ({"real_windows": 0}, "real_windows"),
        ({"batch_size": 0}, "batch_size"),
        ({"real_epochs": 0}, "real_epochs"),
        ({"real_epochs": 1.5}, "real_epochs"),
    ],
)
def test_refuses_bad_mixtures_naming_the_field(changes, field):
    fields = dict(real_windows=10, synthetic_windows=10, batch_size=8, mixing_fraction=0.5,
                  real_epochs=1, seed=0)
    with pytest.raises(MixtureError, match=f"^{field}: ") as refused:
        StreamMixture(**{**fields, **changes})
    assert refused.value.parameter == field  # typed: callers map it without parsing the message
    assert str(refused.value) == f"{field}: {refused.value.reason}"


def test_steps_outside_the_run_are_refused():
    mixture = StreamMixture(real_windows=4, synthetic_windows=0, batch_size=2, mixing_fraction=0.0,
                            real_epochs=1, seed=0)
    with pytest.raises(IndexError):
        mixture.batch(mixture.total_steps)
    with pytest.raises(IndexError):
        mixture.batch(-1)


@FAST
@given(st.lists(st.integers(0, 40), min_size=1, max_size=30), st.integers(1, 50), st.integers(0, 99))
def test_layout_is_concat_and_chunk_with_eos(lengths, context, seed):
    """locate() agrees with literally joining the documents with EOS and cutting windows."""
    lengths = np.array(lengths)
    layout = StreamLayout.build(lengths, context=context, seed=seed, stream=0)
    stream = []  # (document, offset) per token; offset == length is the EOS
    for doc in layout.order:
        stream += [(doc, offset) for offset in range(lengths[doc] + 1)]
    assert layout.num_tokens == len(stream)
    assert layout.num_windows == len(stream) // context  # partial tail dropped
    if layout.num_windows == 0:
        return
    documents, offsets = layout.locate(np.arange(layout.num_windows))
    got = list(zip(documents.ravel().tolist(), offsets.ravel().tolist()))
    assert got == [(int(d), int(o)) for d, o in stream[: layout.num_windows * context]]


def test_document_order_is_a_seeded_permutation():
    a, b = document_order(100, seed=3), document_order(100, seed=3)
    assert (a == b).all() and sorted(a.tolist()) == list(range(100))
    assert not (a == document_order(100, seed=4)).all()
    assert not (a == document_order(100, seed=3, stream=1)).all()  # streams are independent


def test_chunk_boundaries_counts_one_eos_per_document():
    starts, windows = chunk_boundaries(np.array([3, 0, 5]), context=4)
    assert starts.tolist() == [0, 4, 5, 11]
    assert windows == 2
    with pytest.raises(ValueError, match="context"):
        chunk_boundaries(np.array([3]), context=0)
