"""The tokenize step as one job array on the real cluster (a CPU profile), then read by index."""

from __future__ import annotations

import json

import pytest

from tests.slurm.conftest import LOCAL_PROFILE
from tests.train.test_pool_tokens import NUM_SHARDS, write_rephrases
from train.pool_tokens import synthetic_documents, tokens_dir
from train.store import TokenStore

pytestmark = pytest.mark.slurm


def test_tokenize_pool_runs_one_array_task_per_shard(slurm_cluster, small_store, tmp_path, capsys):
    from megadocs.cli import main

    store = TokenStore.open(small_store)
    documents = [(doc.doc_id, doc.text) for doc in store.split("train").documents()]
    pool = write_rephrases(tmp_path / "pool", small_store, documents, tokenize=False)
    assert main(["data", "tokenize-pool", "--pool", str(pool), "--store", str(small_store),
                 "--executor", "slurm", "--profile", str(LOCAL_PROFILE)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["complete"] and summary["shards_done"] == NUM_SHARDS
    folder = tokens_dir(pool, store.tokenizer_hash) / "submitit"
    assert len(list(folder.glob("*_result.pkl"))) == NUM_SHARDS
    assert synthetic_documents(pool, "stitched", 2, store).num_documents == len(documents)
