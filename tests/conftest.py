"""Fixtures shared by every package's tests.

`tiny_store` is a real token store prepared from the built-in offline `stdlib` corpus with a
small byte-level BPE vocabulary: the same code path users run on DCLM, at a size that trains in
seconds on 2 CPU cores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests start many small torch processes at once (local executor, subprocess runs, vLLM); with
# one intra-op thread each they share the cores instead of thrashing them. Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Generator fingerprints are cached per user (megadocs.fingerprint): tests keep theirs to themselves.
os.environ.setdefault("MEGADOCS_CACHE_DIR", tempfile.mkdtemp(prefix="megadocs-test-cache-"))

TINY_VOCAB = 512
TINY_VAL_DOCS = 24
TINY_MAX_DOCS = 160


@pytest.fixture
def small_filesystem(tmp_path):
    """A 4 MiB tmpfs: a file system that really fills up (skipped where mounting is not permitted)."""
    from tests.filesystems import tmpfs

    with tmpfs(tmp_path / "fs", 4) as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs is not permitted here (needs root)")
        yield tmp_path / "fs"


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    from train.store import prepare

    out = tmp_path_factory.mktemp("store") / "stdlib"
    prepare(
        "stdlib",
        out,
        vocab_size=TINY_VOCAB,
        val_docs=TINY_VAL_DOCS,
        max_docs=TINY_MAX_DOCS,
        seed=0,
    )
    return out


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory) -> Path:
    """A tiny local Llama generator with a chat template (gen.tiny), as vLLM and transformers load it."""
    from gen.tiny import make_tiny_generator

    return make_tiny_generator(tmp_path_factory.mktemp("generator") / "tiny")


def _required(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    """Cluster and database tests skip where their service is absent, except in CI (required)."""
    have_slurm = shutil.which("sinfo") is not None and os.system("sinfo >/dev/null 2>&1") == 0
    for item in items:
        if "slurm" in item.keywords and not have_slurm and not _required("MEGADOCS_REQUIRE_SLURM"):
            item.add_marker(pytest.mark.skip(reason="no SLURM cluster: run slurm/local-cluster.sh up"))
