"""The background batch loader: same batches in the same order, bounded, errors surface."""

from __future__ import annotations

import time

import pytest
import torch

from tests.waiting import wait_for
from train.data import TrainingStreams
from train.prefetch import BatchPrefetcher


def test_prefetched_batches_equal_the_streams_batches(tiny_store):
    streams = TrainingStreams.build(tiny_store, context=64, real_epochs=1, batch_size=4, seed=2)
    start = 3  # a resumed run starts mid-way
    with BatchPrefetcher(streams.batch, range(start, streams.total_steps)) as batches:
        for step in range(start, streams.total_steps):
            got, expected = batches.get(step), streams.batch(step)
            assert all(got[key].equal(expected[key]) for key in expected), step
    with BatchPrefetcher(streams.batch, range(0, 5)) as batches, pytest.raises(RuntimeError, match="step 1"):
        batches.get(1)  # out of order: refused


def test_prefetcher_stays_a_bounded_number_of_steps_ahead():
    built = []

    def make_batch(step: int) -> dict[str, torch.Tensor]:
        built.append(step)
        return {"input_ids": torch.full((2, 2), step)}

    with BatchPrefetcher(make_batch, range(100), depth=2) as batches:
        wait_for(lambda: len(built) >= 3, 60, "the prefetcher to fill its queue", interval_s=0.01)
        time.sleep(0.3)  # time to run further ahead, were it unbounded
        assert len(built) == 3  # two queued, one waiting to be queued
        assert batches.get(0)["input_ids"][0, 0] == 0
    assert len(built) <= 4  # closing stopped the thread


def test_prefetcher_reraises_the_builders_error_at_its_step():
    def make_batch(step: int) -> dict[str, torch.Tensor]:
        if step == 2:
            raise ValueError("bad window")
        return {"input_ids": torch.zeros(1)}

    with BatchPrefetcher(make_batch, range(5)) as batches:
        batches.get(0)
        batches.get(1)
        with pytest.raises(ValueError, match="bad window"):
            batches.get(2)
