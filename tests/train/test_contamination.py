"""The contamination guard at training time (issue 33, item 3): a pool generated from a store's
train split must be refused once the store it is trained with holds any of its source documents in
its validation split, however the store changed (more validation documents, another split seed,
another corpus), for every pool kind that has source documents."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from megadocs.errors import UserError
from megadocs.formats import PoolKind
from tests.pools import write_pool
from train.data import TrainingStreams
from train.pool_tokens import tokenize_pool
from train.store import TokenStore, prepare

KINDS_WITH_SOURCES = [kind for kind in PoolKind if kind is not PoolKind.SAMPLE]
ALGORITHM_OF = {PoolKind.REPHRASE: "stitched", PoolKind.THOUGHTS: "latent"}
CHANGES = ("more-val-docs", "another-seed", "another-corpus")


def _corpus(tiny_store: Path, path: Path, rows: slice) -> list[dict]:
    docs = [json.loads(line) for line in (tiny_store / "train.docs.jsonl").read_text().splitlines()][rows]
    docs = [{"id": doc["doc_id"], "text": doc["text"][:400]} for doc in docs]
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    return docs


def _row(kind: PoolKind):
    if kind is PoolKind.THOUGHTS:
        return lambda k, doc_id, text, i: {"split_index": i, "split_token": 0, "split_char": len(text) // 2,
                                           "text": f"why {doc_id} goes on"}
    return lambda k, doc_id, text, i: {"text": f"{doc_id} said again: {text[:80]}"}


def _re_prepare(tiny_store: Path, tmp_path: Path, store: Path, change: str) -> None:
    """Prepare ``store`` again, in place, the way ``change`` names (same tokenizer throughout)."""
    shutil.rmtree(store)
    tokenizer = tiny_store / "tokenizer"
    if change == "more-val-docs":
        prepare(tmp_path / "a.jsonl", store, tokenizer=tokenizer, val_docs=12, seed=0)
    elif change == "another-seed":
        prepare(tmp_path / "a.jsonl", store, tokenizer=tokenizer, val_docs=4, seed=1)
    else:  # another corpus that shares documents with the first one
        _corpus(tiny_store, tmp_path / "b.jsonl", slice(10, 50))
        prepare(tmp_path / "b.jsonl", store, tokenizer=tokenizer, val_docs=8, seed=0)


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("kind", KINDS_WITH_SOURCES)
def test_a_pool_whose_documents_are_now_validation_documents_is_refused_at_training(
        kind, change, tiny_store, tmp_path):
    _corpus(tiny_store, tmp_path / "a.jsonl", slice(0, 40))
    store = tmp_path / "store"
    prepare(tmp_path / "a.jsonl", store, tokenizer=tiny_store / "tokenizer", val_docs=4, seed=0)
    pool = write_pool(tmp_path / "pool", store, kind.value, 1, _row(kind), num_shards=2)
    pool_docs = [doc.doc_id for doc in TokenStore.open(store).split("train").documents()]
    tokenize_pool(pool, store, progress=False)
    synthetic = {"pool": pool, "algorithm": ALGORITHM_OF[kind], "g": 1}
    TrainingStreams.build(store, synthetic=synthetic, context=64, mixing_fraction=0.5, batch_size=8)  # accepted

    _re_prepare(tiny_store, tmp_path, store, change)
    val_now = TokenStore.open(store).split("val").doc_ids
    leaked = [doc for doc in pool_docs if doc in set(val_now)]
    assert leaked  # the change moved some of the pool's documents into validation
    with pytest.raises(UserError) as refused:
        TrainingStreams.build(store, synthetic=synthetic, context=64, mixing_fraction=0.5, batch_size=8)
    message = str(refused.value)
    assert "\n" not in message and "val split" in message
    assert f"{len(leaked)} of its {len(pool_docs)} source documents" in message
    assert repr(leaked[0]) in message  # the documents are named
    assert re.search(r"regenerate .*or re-prepare", message)  # and the fix


def test_a_store_re_prepared_without_a_leak_still_refuses_stale_real_documents(tiny_store, tmp_path):
    """Fewer validation documents leak nothing, but a rephrase pool's real documents were read from
    the store as it was: training asks for the tokenize step again, which refuses a source that
    changed since generation (regenerate, or re-prepare as before)."""
    _corpus(tiny_store, tmp_path / "a.jsonl", slice(0, 40))
    store = tmp_path / "store"
    prepare(tmp_path / "a.jsonl", store, tokenizer=tiny_store / "tokenizer", val_docs=8, seed=0)
    pool = write_pool(tmp_path / "pool", store, "rephrase", 1, _row(PoolKind.REPHRASE))  # tokenized
    shutil.rmtree(store)
    prepare(tmp_path / "a.jsonl", store, tokenizer=tiny_store / "tokenizer", val_docs=2, seed=0)
    synthetic = {"pool": pool, "algorithm": "stitched", "g": 1}
    with pytest.raises(UserError, match=r"real documents come from .* changed since the pool was tokenized; run "
                                        r"`megadocs data tokenize-pool"):
        TrainingStreams.build(store, synthetic=synthetic, context=64, mixing_fraction=0.5, batch_size=8)
    with pytest.raises(UserError, match=r"has changed since the pool was generated .*; regenerate the pool from the "
                                        r"source as it is, or re-prepare the source as it was"):
        tokenize_pool(pool, store, progress=False)
