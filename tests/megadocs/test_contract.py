"""The gen -> train contract, end to end on files: a small hand-written pool in the documented
layout (:mod:`megadocs.pools`), ``gen.assemble`` on it, and train's synthetic documents assembled
by index from the same pool once tokenized (no generator model, no mocks): the same documents, in
the same order, each checked against hand-written expectations."""

from __future__ import annotations

import json

from gen.assemble import assemble, assembled_documents
from megadocs import pools as pool_format
from megadocs.corpus import source_hash
from train.pool_tokens import synthetic_documents, tokenize_pool
from train.store import TokenStore

DOCS = {"a": "Alpha text about owls.", "b": "Beta text on rivers.", "c": "Gamma text of stars."}
# doc -> its G=2 rephrases (gen_index 0, 1); b's second rephrase is empty (left out by assembly)
REPHRASES = {"a": ["Owls, said again.", "Owls once more."], "b": ["Rivers, restated.", "   "],
             "c": ["Stars, retold.", "Stars told anew."]}


def training_store(tmp_path, tiny_store) -> TokenStore:
    """A store whose train split holds DOCS and whose val split holds one other document (the
    contamination guard lets a pool of DOCS train on it)."""
    from train.store import prepare

    corpus = tmp_path / "corpus.jsonl"
    held_out = {"z": "Zeta text, held out for validation."}
    corpus.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in {**DOCS, **held_out}.items()))
    for seed in range(50):  # the seed whose held-out choice is z
        store = prepare(corpus, tmp_path / f"store-{seed}", tokenizer=tiny_store / "tokenizer", val_docs=1, seed=seed)
        if store.split("val").doc_ids == ["z"]:
            return store
    raise AssertionError("no seed holds out z")


def write_pool(directory):
    """A complete two-shard rephrase pool in the documented layout (docs/architecture.md)."""
    directory.mkdir()
    docs = directory / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    count = 2
    for shard in range(count):
        rows = [{"doc_id": doc_id, "gen_index": j, "text": text}
                for k, doc_id in enumerate(DOCS) if pool_format.shard_of(k, count) == shard
                for j, text in enumerate(REPHRASES[doc_id])]
        pool_format.rows_path(directory, shard, count).write_text("".join(json.dumps(r) + "\n" for r in rows))
        pool_format.done_path(directory, shard, count).write_text("{}\n")
    manifest = {"format": pool_format.POOL_FORMAT, "kind": "rephrase", "g": 2, "num_shards": count,
                "source": str(docs), "source_hash": source_hash(docs), "n_docs": len(DOCS)}
    (directory / pool_format.MANIFEST).write_text(json.dumps(manifest))
    return directory


def test_assembled_stitched_documents_load_as_eos_joined_segments(tiny_store, tmp_path):
    pool = write_pool(tmp_path / "pool")
    manifest = assemble(pool, "stitched", 2)
    assert manifest["documents"] == 3 and manifest["excluded_empty"] == 1
    assert assembled_documents(pool, "stitched", 2).is_file()  # the readable text

    store = training_store(tmp_path, tiny_store)
    tokenize_pool(pool, store, progress=False)
    loaded = synthetic_documents(pool, "stitched", 2, store)

    tokenizer, eos = store.tokenizer(), store.eos_id

    def joined(*segments: str) -> list[int]:  # each segment tokenized alone, EOS between them
        ids: list[int] = []
        for i, segment in enumerate(segments):
            ids += ([eos] if i else []) + tokenizer.encode(segment, add_special_tokens=False)
        return ids

    expected = [  # source order; rephrases in gen_index order, the real document last
        joined("Owls, said again.", "Owls once more.", DOCS["a"]),
        joined("Rivers, restated.", DOCS["b"]),
        joined("Stars, retold.", "Stars told anew.", DOCS["c"]),
    ]
    assert loaded.num_documents == len(expected)
    got = [loaded.document(i).tolist() for i in range(loaded.num_documents)]
    assert got == expected


def test_simple_assembly_of_g1_is_one_document_per_rephrase_plus_the_real_ones(tiny_store, tmp_path):
    pool = write_pool(tmp_path / "pool")
    assemble(pool, "simple", 1)
    store = training_store(tmp_path, tiny_store)
    tokenize_pool(pool, store, progress=False)
    loaded = synthetic_documents(pool, "simple", 1, store)
    encode = store.tokenizer().encode
    texts = ["Owls, said again.", DOCS["a"], "Rivers, restated.", DOCS["b"], "Stars, retold.", DOCS["c"]]
    got = [loaded.document(i).tolist() for i in range(loaded.num_documents)]
    assert got == [encode(text, add_special_tokens=False) for text in texts]


THOUGHTS = {"a": [(6, "owls hunt at night"), (15, " ")], "b": [(4, "water flows"), (12, "to the sea")],
            "c": [(0, "first"), (20, "last")]}  # (split_char, thought); a's second is empty


def test_latent_documents_hold_the_assembled_text_tokenized_whole(tiny_store, tmp_path):
    """A thoughts pool: each thought goes in at its split character as <think>..</think>; train
    reads the assembled text of each latent document tokenized whole (no EOS inside)."""
    pool = tmp_path / "pool"
    pool.mkdir()
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    rows = [{"doc_id": doc_id, "gen_index": j, "split_index": j, "split_token": 0, "split_char": char, "text": text}
            for doc_id in DOCS for j, (char, text) in enumerate(THOUGHTS[doc_id])]
    pool_format.rows_path(pool, 0, 1).write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool_format.done_path(pool, 0, 1).write_text("{}\n")
    (pool / pool_format.MANIFEST).write_text(json.dumps({
        "format": pool_format.POOL_FORMAT, "kind": "thoughts", "g": 2, "num_shards": 1, "source": str(docs),
        "source_hash": source_hash(docs), "n_docs": len(DOCS)}))
    assemble(pool, "latent", 2)
    texts = [json.loads(line)["segments"] for line in assembled_documents(pool, "latent", 2).read_text().splitlines()]
    expected_texts = ["Alpha <think>owls hunt at night</think>text about owls.",  # the empty one left out
                      "Beta<think>water flows</think> text on<think>to the sea</think> rivers.",
                      "<think>first</think>Gamma text of stars.<think>last</think>"]
    assert texts == [[text] for text in expected_texts]

    store = training_store(tmp_path, tiny_store)
    tokenize_pool(pool, store, progress=False)
    loaded = synthetic_documents(pool, "latent", 2, store)
    encode = store.tokenizer().encode
    assert [loaded.document(i).tolist() for i in range(loaded.num_documents)] == \
        [encode(text, add_special_tokens=False) for text in expected_texts]
