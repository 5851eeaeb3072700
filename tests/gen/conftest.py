"""Fixtures for gen's tests: a tiny local Llama generator without a chat template (the one with
one, `tiny_generator`, is in tests/conftest.py: the disk-full test uses it too) and
a handful of real documents (stdlib docstrings) of varied length: one too long for the
generator's context (exercises truncation) and one shorter than G+1 tokens (empty pieces)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from tests import waiting

N_DOCS = 7
LONG_CHARS = 7000  # > the tiny generator's 2048-token context with its ~2.5 chars/token


@pytest.fixture(scope="session")
def tiny_generator_plain(tmp_path_factory) -> Path:
    """A generator whose tokenizer has no chat template (like one trained by train/)."""
    from gen.tiny import make_tiny_generator

    return make_tiny_generator(tmp_path_factory.mktemp("generator") / "plain", chat_template=False)


def write_docs(path: Path, n_docs: int = N_DOCS) -> Path:
    from megadocs.corpus import iter_documents

    docs = list(itertools.islice(iter_documents("stdlib"), 40))
    long_text = "\n\n".join(d.text for d in docs)[:LONG_CHARS]
    rows = [{"id": "long-doc", "text": long_text}, {"id": "tiny-doc", "text": "Hi."}]
    for doc in docs:
        if len(rows) >= n_docs:
            break
        if 200 < len(doc.text):
            rows.append({"id": doc.doc_id, "text": doc.text[:300 + 150 * len(rows)]})
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="session")
def small_docs(tmp_path_factory) -> Path:
    return write_docs(tmp_path_factory.mktemp("docs") / "docs.jsonl")


def read_rows(pool: Path) -> list[dict]:
    rows = []
    for path in sorted(pool.glob("shard-*.jsonl")):
        rows += [json.loads(line) | {"_shard": path.name} for line in path.read_text().splitlines() if line]
    return rows


@pytest.fixture(scope="module")
def engine(tiny_generator):
    """The transformers engine on the tiny generator, loaded once per module (cheap in-process)."""
    from gen.engines import TransformersEngine

    return TransformersEngine(tiny_generator)


@pytest.fixture(scope="module")
def docs4(tmp_path_factory):
    return write_docs(tmp_path_factory.mktemp("docs4") / "docs.jsonl", n_docs=4)


def wait_for(condition, timeout_s: float, what: str) -> None:
    """`tests.waiting.wait_for` every 10 ms: the conditions here are reads of /proc and of files,
    and a generator's window between two locks is short."""
    waiting.wait_for(condition, timeout_s, what, interval_s=0.01)


def lock_waiters(lock: Path) -> set[int]:
    """The pids blocked waiting for the flock on ``lock`` (the '->' lines of /proc/locks): how a
    test sees a generator waiting for the pool's lock with a chunk in hand, so that it can order
    its own steps against the generator's writes without timing them."""
    inode = str(os.stat(lock).st_ino)
    fields = (line.split() for line in Path("/proc/locks").read_text().splitlines())
    return {int(f[5]) for f in fields if len(f) > 6 and f[1] == "->" and f[6].rsplit(":", 1)[-1] == inode}
