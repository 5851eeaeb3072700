"""The tokenize step: one tokenized pool serves every algorithm and G' <= G, with streams identical
to today's path (``gen assemble`` text tokenized by the training job), and no tokenizer in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import train.synthetic as synthetic_module
from gen.assemble import assemble
from megadocs.corpus import source_hash
from megadocs.errors import UserError
from train.data import TokenStream, TrainingStreams
from train.pool_tokens import open_pool_tokens, synthetic_documents, tokenize_pool, tokens_dir
from train.store import TokenStore
from train.streams import SYNTHETIC
from train.synthetic import load_synthetic

POOL_G = 3
NUM_SHARDS = 2


def _generation(doc_text: str, doc_index: int, gen_index: int) -> str:
    """Made-up 'rephrases' of varied length; a few empty or whitespace-only (left out by assembly)."""
    if (doc_index + gen_index) % 11 == 0:
        return ""
    if (doc_index + gen_index) % 13 == 0:
        return "  \n "
    start = 40 * gen_index
    return f"Version {gen_index}: " + doc_text[start:start + 60 + 37 * ((doc_index * 7 + gen_index) % 9)]


def write_pool(out: Path, source: str | Path, documents: list[tuple[str, str]], *, g: int = POOL_G,
               num_shards: int = NUM_SHARDS) -> Path:
    """A complete rephrase pool in the documented on-disk format (what `gen rephrase` writes)."""
    out.mkdir(parents=True)
    manifest = {"format": "megadocs.gen-pool/1", "kind": "rephrase", "g": g, "source": str(source),
                "source_hash": source_hash(source), "n_docs": None, "num_shards": num_shards, "complete": True}
    (out / "manifest.json").write_text(json.dumps(manifest))
    for shard in range(num_shards):
        stem = f"shard-{shard:05d}-of-{num_shards:05d}"
        with open(out / f"{stem}.jsonl", "w") as handle:
            for k in range(shard, len(documents), num_shards):
                doc_id, text = documents[k]
                for i in range(g):
                    row = {"doc_id": doc_id, "gen_index": i, "text": _generation(text, k, i)}
                    handle.write(json.dumps(row) + "\n")
        (out / f"{stem}.done").write_text("{}")
    return out


@pytest.fixture
def store(tiny_store) -> TokenStore:
    return TokenStore.open(tiny_store)


def _store_documents(store: TokenStore) -> list[tuple[str, str]]:
    return [(doc.doc_id, doc.text) for doc in store.split("train").documents()]


@pytest.fixture
def store_pool(tmp_path, tiny_store, store) -> Path:
    """A pool generated from the store itself: the real documents come from the store's tokens."""
    return write_pool(tmp_path / "pool", tiny_store, _store_documents(store))


@pytest.fixture
def file_pool(tmp_path, store) -> Path:
    """A pool generated from a JSONL file: the tokenize step tokenizes the real documents too."""
    source = tmp_path / "docs.jsonl"
    documents = _store_documents(store)[:37]
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    return write_pool(tmp_path / "pool", source, documents)


def _todays_documents(pool: Path, algorithm: str, g: int, store: TokenStore):
    assemble(pool, algorithm, g)
    return load_synthetic(pool, algorithm, g, store)


def _all_windows(documents, store: TokenStore, context: int = 64) -> tuple[np.ndarray, np.ndarray]:
    stream = TokenStream.build(documents, eos_id=store.eos_id, context=context, seed=3, stream=SYNTHETIC)
    return stream.windows(np.arange(stream.num_windows))


@pytest.mark.parametrize("pool_fixture", ["store_pool", "file_pool"])
def test_one_tokenized_pool_gives_todays_streams_for_every_algorithm_and_g(pool_fixture, store, request):
    pool = request.getfixturevalue(pool_fixture)
    manifest = tokenize_pool(pool, store.path, progress=False)
    assert manifest["complete"] and manifest["statistics"]["shards_done"] == NUM_SHARDS
    assert ("store" in manifest["real"]) == (pool_fixture == "store_pool")
    for algorithm in ("simple", "stitched", "stitched-first", "stitched-none"):
        for g in (1, POOL_G):
            today = _todays_documents(pool, algorithm, g, store)
            indexed = synthetic_documents(pool, algorithm, g, store)
            assert indexed is not None, (algorithm, g)
            assert indexed.num_documents == today.num_documents, (algorithm, g)
            assert np.array_equal(indexed.lengths, today.lengths), (algorithm, g)
            for d in range(today.num_documents):
                expected = today.tokens[today.offsets[d]:today.offsets[d + 1]]
                assert np.array_equal(indexed.document(d), expected), (algorithm, g, d)
            for got, expected in zip(_all_windows(indexed, store), _all_windows(today, store)):
                assert np.array_equal(got, expected), (algorithm, g)


def test_training_streams_read_the_tokenized_pool_without_a_tokenizer(store_pool, store, monkeypatch):
    def build() -> TrainingStreams:
        return TrainingStreams.build(store.path, synthetic={"pool": store_pool, "algorithm": "stitched", "g": 2},
                                     context=64, mixing_fraction=0.5, real_epochs=1, batch_size=8, seed=1)

    assemble(store_pool, "stitched", 2)
    todays = build()  # no tokenize step yet: the training job tokenizes the assembled text
    expected = [todays.batch(step) for step in range(todays.total_steps)]
    tokenize_pool(store_pool, store.path, progress=False)

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the training process loaded a tokenizer")

    monkeypatch.setattr(TokenStore, "tokenizer", no_tokenizer)
    monkeypatch.setattr(synthetic_module, "_build_cache", no_tokenizer)
    monkeypatch.setattr(synthetic_module, "load_synthetic", no_tokenizer)
    streams = build()
    assert streams.total_steps == todays.total_steps
    for step, batch in enumerate(expected):
        got = streams.batch(step)
        for key, value in batch.items():
            assert got[key].equal(value), (step, key)


def test_tokenize_step_resumes_per_shard_and_refuses_what_does_not_fit(store_pool, store, tmp_path, monkeypatch):
    tokenize_pool(store_pool, store.path, shard=1, progress=False)
    out = tokens_dir(store_pool, store.tokenizer_hash)
    assert open_pool_tokens(store_pool, store) is None  # shard 0 missing: not used yet
    done_before = (out / f"shard-00001-of-{NUM_SHARDS:05d}.done").read_text()
    manifest = tokenize_pool(store_pool, store.path, progress=False)
    assert manifest["complete"]
    assert (out / f"shard-00001-of-{NUM_SHARDS:05d}.done").read_text() == done_before  # not redone
    with pytest.raises(UserError, match=r"data.synthetic.g: the pool holds 3 generations"):
        synthetic_documents(store_pool, "stitched", POOL_G + 1, store)
    assert synthetic_documents(store_pool, "latent", 1, store) is None  # assembled-text path

    # statistics added to the pool manifest later keep the tokens; regenerated generations do not
    pool_manifest = json.loads((store_pool / "manifest.json").read_text())
    (store_pool / "manifest.json").write_text(json.dumps({**pool_manifest, "diversity": {"g1": 0.5}}))
    assert open_pool_tokens(store_pool, store) is not None
    (store_pool / "manifest.json").write_text(json.dumps({**pool_manifest, "seed": 7}))
    assert open_pool_tokens(store_pool, store) is None


def test_tokenize_step_refuses_an_unfinished_pool(store_pool, store):
    (store_pool / f"shard-00000-of-{NUM_SHARDS:05d}.done").unlink()
    with pytest.raises(UserError, match=r"generation is not finished, shards \[0\]"):
        tokenize_pool(store_pool, store.path, progress=False)


@pytest.mark.slow
def test_cli_runs_the_step_as_a_local_job_array(store_pool, store, capsys):
    from megadocs.cli import main

    args = ["data", "tokenize-pool", "--pool", str(store_pool), "--store", str(store.path)]
    assert main([*args, "--executor", "local"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["complete"] and summary["shards_done"] == NUM_SHARDS
    assert len(list((tokens_dir(store_pool, store.tokenizer_hash) / "submitit").glob("*_result.pkl"))) == NUM_SHARDS
    assert synthetic_documents(store_pool, "simple", 2, store) is not None


@pytest.mark.parametrize("extra,message", [
    (["--profile", "p.yaml"], "--profile: only used with --executor slurm"),
    (["--executor", "slurm"], "--profile: required with --executor slurm"),
    (["--shard", "5"], "--shard: expected 0 <= i < 2"),
])
def test_cli_bad_input_is_one_line(extra, message, store_pool, store, capsys):
    from megadocs.cli import main

    assert main(["data", "tokenize-pool", "--pool", str(store_pool), "--store", str(store.path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_thoughts_pool_is_refused(store_pool, store):
    manifest = json.loads((store_pool / "manifest.json").read_text())
    (store_pool / "manifest.json").write_text(json.dumps({**manifest, "kind": "thoughts"}))
    with pytest.raises(UserError, match="thoughts generations; latent documents insert thoughts"):
        tokenize_pool(store_pool, store.path, progress=False)


def test_a_tokenized_pool_from_validation_documents_is_refused(tmp_path, store):
    """The contamination guard covers the indexed path too: the pool's source documents must be
    the store's train split (here a raw file that also holds a validation document)."""
    val_doc = next(store.split("val").documents())
    documents = _store_documents(store)[:5] + [(val_doc.doc_id, val_doc.text)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    pool = write_pool(tmp_path / "pool", source, documents)
    tokenize_pool(pool, store.path, progress=False)
    assert synthetic_documents(pool, "stitched", 2, store) is not None
    with pytest.raises(UserError, match=rf"^data\.synthetic: .*document 5: source document '{val_doc.doc_id}' "
                                        r"is a document of the store's val split"):
        TrainingStreams.build(store.path, synthetic={"pool": pool, "algorithm": "stitched", "g": 2},
                              context=64, mixing_fraction=0.5, real_epochs=1, batch_size=8, seed=1)
