"""Fixtures of the train/ tests.

`small_store` is a real stdlib token store small enough that a full training run (one epoch at
context 64) takes seconds on 2 contended CPU cores; `tiny_store` (tests/conftest.py) is for
tests that only read data.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    """8 train documents (~45k tokens), 4 val documents of very different lengths."""
    from train.store import prepare

    out = tmp_path_factory.mktemp("small-store") / "stdlib"
    prepare("stdlib", out, vocab_size=384, val_docs=4, max_docs=12, seed=0)
    return out


@pytest.fixture(scope="session")
def micro_store(tmp_path_factory) -> Path:
    """3 train documents (~5k tokens), 1 val document: for runs that must read the corpus many
    times over (m = 0.9 reads ten windows per real one)."""
    from train.store import prepare

    out = tmp_path_factory.mktemp("micro-store") / "stdlib"
    prepare("stdlib", out, vocab_size=384, val_docs=1, max_docs=4, seed=0)
    return out


@pytest.fixture
def one_thread():
    """One torch thread: on 2 cores shared with other work, two threads run several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
