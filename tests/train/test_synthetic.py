"""Synthetic documents: EOS-stitched segments, the per-tokenizer cache, and its errors."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import train.synthetic as synthetic_module
from megadocs.errors import UserError
from megadocs.formats import assembled_dir
from train.store import TokenStore
from train.synthetic import load_synthetic


def write_assembled(pool, algorithm: str, g: int, documents: list[dict]):
    """Write what `megadocs gen assemble` writes (docs/architecture.md), as gen will."""
    directory = assembled_dir(pool, algorithm, g)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
    (directory / "manifest.json").write_text(json.dumps({"algorithm": algorithm, "g": g,
                                                         "documents": len(documents)}))
    return directory


def megadocs_from_store(store: TokenStore, g: int = 2) -> list[dict]:
    """Stitched-style documents: g made-up 'rephrases' then the real document last."""
    documents = []
    for doc in store.split("train").documents():
        rephrases = [f"Rephrase {k} of {doc.doc_id}: {doc.text[k * 50:(k + 1) * 50]}" for k in range(g)]
        documents.append({"doc_id": f"{doc.doc_id}/stitched", "source_doc_id": doc.doc_id,
                          "segments": rephrases + [doc.text]})
    return documents


def encode(store: TokenStore, text: str) -> list[int]:
    return store.tokenizer().encode(text, add_special_tokens=False)


def test_segments_are_tokenized_and_joined_with_eos(tiny_store, tmp_path):
    store = TokenStore.open(tiny_store)
    documents = [
        {"doc_id": "a", "source_doc_id": "x", "segments": ["first part", "second part"]},
        {"doc_id": "b", "source_doc_id": "y", "segments": ["only one"]},
        {"doc_id": "c", "source_doc_id": "z", "segments": ["", "  "]},  # nothing left: skipped
        {"doc_id": "d", "source_doc_id": "w", "segments": ["before", "", "after"]},
    ]
    write_assembled(tmp_path, "stitched", 2, documents)
    loaded = load_synthetic(tmp_path, "stitched", 2, store)
    eos = store.eos_id
    expected = [
        encode(store, "first part") + [eos] + encode(store, "second part"),
        encode(store, "only one"),
        encode(store, "before") + [eos] + encode(store, "after"),
    ]
    assert loaded.num_documents == 3 and loaded.skipped_empty == 1
    for i, tokens in enumerate(expected):
        assert loaded.tokens[loaded.offsets[i]:loaded.offsets[i + 1]].tolist() == tokens
    assert loaded.tokens.dtype == np.uint32


def test_cache_is_reused_and_rebuilt_when_the_documents_change(tiny_store, tmp_path, monkeypatch):
    store = TokenStore.open(tiny_store)
    directory = write_assembled(tmp_path, "simple", 4, megadocs_from_store(store)[:10])
    first = load_synthetic(tmp_path, "simple", 4, store)
    stem = f"tokens-{store.tokenizer_hash}"
    assert {p.name for p in directory.iterdir()} == {
        "documents.jsonl", "manifest.json", f"{stem}.tokens", f"{stem}.offsets.npy", f"{stem}.json",
        f"{stem}.sources.json", f"{stem}.lock"}
    assert first.source_ids() == [doc.doc_id for doc in store.split("train").documents()][:10]

    def must_not_rebuild(*args, **kwargs):
        raise AssertionError("cache rebuilt although documents.jsonl did not change")

    with monkeypatch.context() as patch:
        patch.setattr(synthetic_module, "_build_cache", must_not_rebuild)
        again = load_synthetic(tmp_path, "simple", 4, store)
    assert np.array_equal(first.tokens, again.tokens)

    write_assembled(tmp_path, "simple", 4, megadocs_from_store(store)[:3])
    assert load_synthetic(tmp_path, "simple", 4, store).num_documents == 3


def test_concurrent_builds_tokenize_once_and_agree(tiny_store, tmp_path, monkeypatch):
    store = TokenStore.open(tiny_store)
    directory = write_assembled(tmp_path, "latent", 2, megadocs_from_store(store)[:40])
    results, errors, builds = [], [], []
    real_build = synthetic_module._build_cache

    def counted_build(*args, **kwargs):
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(synthetic_module, "_build_cache", counted_build)

    def build():
        try:
            results.append(load_synthetic(tmp_path, "latent", 2, store))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(builds) == 1  # the others waited on the lock and reused the cache
    assert all(np.array_equal(r.tokens, results[0].tokens) for r in results)
    assert not [p.name for p in directory.iterdir() if ".tmp" in p.name]
    assert results[0].num_documents == 40


def test_missing_assembled_documents_name_the_config_field_and_command(tiny_store, tmp_path):
    store = TokenStore.open(tiny_store)
    with pytest.raises(UserError, match=r"^data\.synthetic: .*megadocs gen assemble --pool .* "
                                        r"--algorithm stitched --g 8"):
        load_synthetic(tmp_path / "pool", "stitched", 8, store)


def test_malformed_documents_name_file_and_line(tiny_store, tmp_path):
    store = TokenStore.open(tiny_store)
    write_assembled(tmp_path, "stitched", 2, [{"doc_id": "a", "segments": ["ok"]},
                                              {"doc_id": "b", "segments": "not a list"}])
    with pytest.raises(UserError, match=r"documents\.jsonl:2: expected 'segments'"):
        load_synthetic(tmp_path, "stitched", 2, store)


def test_cache_build_shows_progress_out_of_the_manifest_count(tiny_store, tmp_path, monkeypatch, capsys):
    """The bar counts encoded documents against `gen assemble`'s count (batches of _ENCODE_BATCH)."""
    monkeypatch.setattr(synthetic_module, "_ENCODE_BATCH", 2)
    store = TokenStore.open(tiny_store)
    documents = megadocs_from_store(store)
    write_assembled(tmp_path, "stitched", 2, documents)
    load_synthetic(tmp_path, "stitched", 2, store)
    err = capsys.readouterr().err
    n = len(documents)
    assert n > 2 and f" 0/{n} " in err and f" {n}/{n} " in err  # a total from the start
