"""Training batches and validation windows, checked against streams built literally in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megadocs.errors import UserError
from tests.pools import tokenize_assembled, write_rephrase_pool
from train.data import VALIDATION_SEED, TrainingStreams, ValidationSet
from train.store import TokenStore
from train.streams import REAL, SYNTHETIC, VALIDATION, document_order

CONTEXT = 64


def literal_stream(tokens: np.ndarray, offsets: np.ndarray, order: np.ndarray, eos: int):
    """Join documents in ``order`` with an EOS after each; return (tokens, document ids) per token."""
    stream, owners = [], []
    for doc in order:
        piece = tokens[offsets[doc]:offsets[doc + 1]].tolist() + [eos]
        stream += piece
        owners += [int(doc)] * len(piece)
    return np.array(stream), np.array(owners)


def window(stream: np.ndarray, index: int) -> np.ndarray:
    return stream[index * CONTEXT:(index + 1) * CONTEXT]


@pytest.fixture(scope="module")
def pool(tiny_store, tmp_path_factory):
    return write_rephrase_pool(tmp_path_factory.mktemp("pool") / "pool", tiny_store)


def test_real_only_batches_are_windows_of_the_eos_joined_stream(tiny_store):
    store = TokenStore.open(tiny_store)
    train = store.split("train")
    streams = TrainingStreams.build(tiny_store, context=CONTEXT, mixing_fraction=0.0, real_epochs=2,
                                    batch_size=8, seed=5)
    stream, owners = literal_stream(train.tokens, train.offsets, document_order(train.num_documents, 5, REAL),
                                    store.eos_id)
    assert streams.mixture.real_windows == len(stream) // CONTEXT
    assert streams.tokens_per_step == 8 * CONTEXT
    for step in (0, 1, streams.total_steps // 2, streams.total_steps - 1):
        batch = streams.batch(step)
        real_ids, _ = streams.mixture.batch(step)
        assert batch["input_ids"].dtype == torch.long and batch["document_ids"].dtype == torch.long
        assert batch["input_ids"].shape == (len(real_ids), CONTEXT)
        assert not batch["is_synthetic"].any()
        for row, index in enumerate(real_ids):
            assert batch["input_ids"][row].tolist() == window(stream, index).tolist()
            assert batch["document_ids"][row].tolist() == window(owners, index).tolist()


def test_mixed_batches_take_round_m_b_synthetic_windows(tiny_store, pool):
    store = TokenStore.open(tiny_store)
    streams = TrainingStreams.build(tiny_store, synthetic={"pool": str(pool), "algorithm": "stitched", "g": 2},
                                    context=CONTEXT, mixing_fraction=0.75, real_epochs=1, batch_size=8, seed=0)
    documents = tokenize_assembled(pool, "stitched", 2, store)
    stream, owners = literal_stream(documents.tokens, documents.offsets,
                                    document_order(documents.num_documents, 0, SYNTHETIC), store.eos_id)
    assert streams.mixture.synthetic_windows == len(stream) // CONTEXT
    assert streams.mixture.batch_counts(0) == (2, 6)  # m * B = 6 is whole: every full step
    assert streams.total_steps == -(-streams.mixture.real_windows // 2)
    for step in (0, 7, streams.total_steps - 2):
        batch = streams.batch(step)
        _, synthetic_ids = streams.mixture.batch(step)
        assert batch["is_synthetic"].tolist() == [False] * 2 + [True] * 6
        rows = batch["input_ids"][2:]
        for row, index in enumerate(synthetic_ids):
            assert rows[row].tolist() == window(stream, index).tolist()
            assert batch["document_ids"][2 + row].tolist() == window(owners, index).tolist()


def test_stitched_windows_contain_eos_inside_documents(tiny_store, pool):
    """A megadoc's segments are EOS-joined, so one document id spans several EOS tokens."""
    streams = TrainingStreams.build(tiny_store, synthetic={"pool": pool, "algorithm": "stitched", "g": 2},
                                    context=CONTEXT, mixing_fraction=0.5, real_epochs=1, batch_size=4, seed=0)
    eos = TokenStore.open(tiny_store).eos_id
    found = False
    for step in range(streams.total_steps):
        batch = streams.batch(step)
        for tokens, documents in zip(batch["input_ids"][batch["is_synthetic"]],
                                     batch["document_ids"][batch["is_synthetic"]]):
            eos_positions = (tokens == eos).nonzero().flatten().tolist()
            owners = [documents[p].item() for p in eos_positions]
            if len(owners) != len(set(owners)):
                found = True
                break
        if found:
            break
    assert found


def test_batches_are_random_access_and_seeded(tiny_store):
    build = dict(context=CONTEXT, mixing_fraction=0.0, real_epochs=3, batch_size=4)
    a = TrainingStreams.build(tiny_store, seed=1, **build)
    b = TrainingStreams.build(tiny_store, seed=1, **build)
    c = TrainingStreams.build(tiny_store, seed=2, **build)
    step = a.total_steps - 3
    assert torch.equal(a.batch(step)["input_ids"], b.batch(step)["input_ids"])
    assert not torch.equal(a.batch(step)["input_ids"], c.batch(step)["input_ids"])


def test_synthetic_config_may_be_an_object(tiny_store, pool):
    class Spec:
        def __init__(self):
            self.pool, self.algorithm, self.g = pool, "stitched", 2

    streams = TrainingStreams.build(tiny_store, synthetic=Spec(), context=CONTEXT, mixing_fraction=0.5,
                                    real_epochs=1, batch_size=4, seed=0)
    assert streams.mixture.batch_counts(0)[1] == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mixing_fraction": 0.5}, r"^data\.synthetic: mixing_fraction 0\.5 needs a synthetic stream"),
        ({"mixing_fraction": 0.5, "synthetic": {"pool": "/nonexistent", "algorithm": "simple", "g": 4}},
         r"^data\.synthetic\.pool: /nonexistent: no manifest\.json"),
        ({"mixing_fraction": 0.5, "synthetic": {"pool": "/x", "algorithm": "simple"}},
         r"^data\.synthetic: missing g"),
        ({"context": 10**7}, r"^data\.context: .*holds no full window"),
        ({"context": 1}, r"^data\.context: expected >= 2"),
        ({"batch_size": 0}, r"^optim\.batch_size: expected >= 1"),
        ({"real_epochs": 0}, r"^data\.real_epochs: "),
        ({"mixing_fraction": 1.5}, r"^data\.mixing_fraction: "),
        ({"mixing_fraction": 1.0}, r"^data\.synthetic: mixing_fraction 1\.0 needs a synthetic stream"),
        ({"synthetic_epochs": 2}, r"^data\.synthetic_epochs: only for mixing_fraction 1"),
    ],
)
def test_bad_settings_name_the_config_field(tiny_store, changes, message):
    settings = dict(context=CONTEXT, mixing_fraction=0.0, real_epochs=1, batch_size=8, seed=0)
    with pytest.raises(UserError, match=message):
        TrainingStreams.build(tiny_store, **{**settings, **changes})


def test_synthetic_only_streams_take_their_length_from_synthetic_epochs(tiny_store, pool):
    synthetic = {"pool": pool, "algorithm": "stitched", "g": 2}
    settings = dict(synthetic=synthetic, context=CONTEXT, mixing_fraction=1.0, real_epochs=1, batch_size=8, seed=0)
    with pytest.raises(UserError, match=r"^data\.synthetic_epochs: mixing_fraction 1 reads no real window"):
        TrainingStreams.build(tiny_store, **settings)
    streams = TrainingStreams.build(tiny_store, **settings, synthetic_epochs=3)
    windows = streams.synthetic.num_windows
    assert streams.total_steps == -(-3 * windows // 8)
    assert streams.mixture.windows_before(streams.total_steps) == (0, 3 * windows)


def test_a_share_below_one_window_per_batch_is_mixed_in_exactly(tiny_store, pool):
    """m * B = 0.4 used to be refused ("rounds to 0"); a weighted mixture reads 2 windows in 5 steps."""
    streams = TrainingStreams.build(tiny_store, synthetic={"pool": pool, "algorithm": "stitched", "g": 2},
                                    context=CONTEXT, mixing_fraction=0.05, real_epochs=1, batch_size=8, seed=0)
    counts = [streams.mixture.batch_counts(step)[1] for step in range(5)]
    assert counts == [1, 0, 1, 0, 0]  # ceil(0.4 k) synthetic windows after k steps
    assert streams.batch(0)["is_synthetic"].tolist() == [False] * 7 + [True]


def test_validation_windows_are_fixed_real_text(tiny_store):
    store = TokenStore.open(tiny_store)
    val = store.split("val")
    first = ValidationSet.build(tiny_store, context=CONTEXT, max_windows=30)
    second = ValidationSet.build(tiny_store, context=CONTEXT, max_windows=30)
    assert torch.equal(first.input_ids, second.input_ids)
    assert first.input_ids.shape == first.document_ids.shape == (30, CONTEXT)
    stream, owners = literal_stream(val.tokens, val.offsets,
                                    document_order(val.num_documents, VALIDATION_SEED, VALIDATION), store.eos_id)
    assert first.input_ids.flatten().tolist() == stream[:30 * CONTEXT].tolist()
    assert first.document_ids.flatten().tolist() == owners[:30 * CONTEXT].tolist()
    everything = ValidationSet.build(tiny_store, context=CONTEXT, max_windows=10**6)
    assert everything.num_windows == len(stream) // CONTEXT


def test_validation_short_and_long_halves(tiny_store):
    val = TokenStore.open(tiny_store).split("val")
    valid = ValidationSet.build(tiny_store, context=CONTEXT)
    lengths = np.diff(val.offsets)
    assert len(valid.is_long_document) == val.num_documents == 24
    assert int(valid.is_long_document.sum()) == 12  # distinct lengths: exactly half above the median
    shortest, longest = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert not valid.is_long_document[shortest] and valid.is_long_document[longest]
    assert torch.equal(valid.is_long_token, valid.is_long_document[valid.document_ids])
    assert valid.is_long_token.any() and (~valid.is_long_token).any()


def test_validation_needs_one_window(tiny_store):
    with pytest.raises(UserError, match=r"split 'val' .* holds no full window"):
        ValidationSet.build(tiny_store, context=10**7)
    with pytest.raises(UserError, match="split 'test' not in the store"):
        ValidationSet.build(tiny_store, split="test", context=CONTEXT)


def test_fewer_validation_windows_than_requested_warns_naming_the_field(tiny_store, capsys):
    everything = ValidationSet.build(tiny_store, context=CONTEXT)
    assert "warning" not in capsys.readouterr().err
    fewer = ValidationSet.build(tiny_store, context=CONTEXT, max_windows=everything.num_windows + 100)
    assert fewer.num_windows == everything.num_windows and fewer.requested == everything.num_windows + 100
    err = capsys.readouterr().err
    assert f"eval.val_windows: {everything.num_windows + 100} windows requested" in err
    assert f"holds only {everything.num_windows} windows" in err and "--val-tokens" in err


def test_halves_split_the_scored_documents_by_rank_even_with_equal_lengths():
    """The median rule put every document of equal length in the short half (long half NaN), and
    documents the scored windows never reach could take a half's place."""
    from train.data import longer_half

    equal = longer_half(np.array([10, 10, 10, 10]), np.arange(4))
    assert equal.tolist() == [False, False, True, True]
    present_only = longer_half(np.array([1, 2, 3, 50, 60]), np.array([0, 1, 2]))
    assert present_only.tolist() == [False, True, True, False, False]
    assert longer_half(np.array([5]), np.array([0])).tolist() == [True]


def test_a_half_without_tokens_is_none_not_nan():
    from train.evaluate import LossTotals

    totals = LossTotals()
    totals.add(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool))
    assert totals.summary("iid") == {"iid": 1.0, "iid_short": None, "iid_long": 1.0}
