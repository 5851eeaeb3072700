"""The tokenize step: one tokenized pool serves every algorithm and G' <= G, with streams identical
to tokenizing ``gen assemble``'s text (the path before the step), and no tokenizer in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import train.pool_tokens as pool_tokens_module
from gen.assemble import assemble
from megadocs.errors import UserError
from tests.pools import tokenize_assembled
from tests.pools import write_pool as write_any_pool
from train.data import TokenStream, TrainingStreams
from train.pool_tokens import (
    open_pool_tokens,
    require_pool_sources,
    synthetic_documents,
    tokenize_pool,
    tokens_dir,
)
from train.store import TokenStore
from train.streams import SYNTHETIC

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


def write_rephrases(out: Path, source: str | Path, documents: list[tuple[str, str]], *, g: int = POOL_G,
               num_shards: int = NUM_SHARDS) -> Path:
    """A complete rephrase pool, its generations of varied length, a few empty or whitespace-only."""
    return write_any_pool(out, source, "rephrase", g, lambda k, doc_id, text, i: {"text": _generation(text, k, i)},
                      num_shards=num_shards, documents=documents)


@pytest.fixture
def store(tiny_store) -> TokenStore:
    return TokenStore.open(tiny_store)


def _store_documents(store: TokenStore) -> list[tuple[str, str]]:
    return [(doc.doc_id, doc.text) for doc in store.split("train").documents()]


@pytest.fixture
def store_pool(tmp_path, tiny_store, store) -> Path:
    """A pool generated from the store itself: the real documents come from the store's tokens."""
    return write_rephrases(tmp_path / "pool", tiny_store, _store_documents(store))


@pytest.fixture
def file_pool(tmp_path, store) -> Path:
    """A pool generated from a JSONL file: the tokenize step tokenizes the real documents too."""
    source = tmp_path / "docs.jsonl"
    documents = _store_documents(store)[:37]
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    return write_rephrases(tmp_path / "pool", source, documents)


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
            today = tokenize_assembled(pool, algorithm, g, store)
            indexed = synthetic_documents(pool, algorithm, g, store)
            assert indexed.num_documents == today.num_documents, (algorithm, g)
            assert np.array_equal(indexed.lengths, today.lengths), (algorithm, g)
            for d in range(today.num_documents):
                expected = today.tokens[today.offsets[d]:today.offsets[d + 1]]
                assert np.array_equal(indexed.document(d), expected), (algorithm, g, d)
            for got, expected in zip(_all_windows(indexed, store), _all_windows(today, store)):
                assert np.array_equal(got, expected), (algorithm, g)


def test_training_streams_read_the_tokenized_pool_without_a_tokenizer(store_pool, store, monkeypatch):
    reference = TokenStream.build(tokenize_assembled(store_pool, "stitched", 2, store), eos_id=store.eos_id,
                                  context=64, seed=1, stream=SYNTHETIC)
    tokenize_pool(store_pool, store.path, progress=False)

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the training process tokenized")

    monkeypatch.setattr(TokenStore, "tokenizer", no_tokenizer)
    monkeypatch.setattr(pool_tokens_module, "tokenize_pool", no_tokenizer)
    streams = TrainingStreams.build(store.path, synthetic={"pool": store_pool, "algorithm": "stitched", "g": 2},
                                    context=64, mixing_fraction=0.5, real_epochs=1, batch_size=8, seed=1)
    assert streams.synthetic.num_windows == reference.num_windows
    every = np.arange(reference.num_windows)
    for got, expected in zip(streams.synthetic.windows(every), reference.windows(every)):
        assert np.array_equal(got, expected)
    assert streams.batch(streams.total_steps - 1)["input_ids"].shape[0] > 0


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
    with pytest.raises(UserError, match=r"data.synthetic.algorithm: latent needs a thoughts pool"):
        synthetic_documents(store_pool, "latent", 1, store)

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
    assert synthetic_documents(store_pool, "simple", 2, store).num_documents > 0


@pytest.mark.parametrize("extra,message", [
    (["--profile", "p.yaml"], "--profile: only used with --executor slurm"),
    (["--executor", "slurm"], "--profile: required with --executor slurm"),
    (["--shard", "5"], "--shard: expected 0 <= i < 2"),
    (["--shard", "0", "--executor", "local"], "--shard: only for one pool tokenized in this process"),
])
def test_cli_bad_input_is_one_line(extra, message, store_pool, store, capsys):
    from megadocs.cli import main

    assert main(["data", "tokenize-pool", "--pool", str(store_pool), "--store", str(store.path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_tokenized_pool_from_validation_documents_is_refused(tmp_path, store):
    """The contamination guard covers the indexed path too: the pool's source documents must be
    the store's train split (here a raw file that also holds a validation document)."""
    val_doc = next(store.split("val").documents())
    documents = _store_documents(store)[:5] + [(val_doc.doc_id, val_doc.text)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    pool = write_rephrases(tmp_path / "pool", source, documents)
    with pytest.raises(UserError, match=rf"^data\.synthetic: .*document 5: source document '{val_doc.doc_id}' "
                                        r"is a document of the store's val split"):
        TrainingStreams.build(store.path, synthetic={"pool": pool, "algorithm": "stitched", "g": 2},
                              context=64, mixing_fraction=0.5, real_epochs=1, batch_size=8, seed=1)
    assert not tokens_dir(pool, store.tokenizer_hash).exists()  # refused before any tokenizing
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text(json.dumps({"id": "elsewhere", "text": "not from the store"}) + "\n")
    pool = write_rephrases(tmp_path / "pool-elsewhere", elsewhere, [("elsewhere", "not from the store")], num_shards=1)
    with pytest.raises(UserError, match="'elsewhere' is not a document of the store"):
        require_pool_sources(pool, store)


def test_array_writer_publishes_both_files_on_close_and_nothing_on_abort(tmp_path, store):
    """Written through megadocs.formats.atomic_file: no partial file is ever visible."""
    import numpy as np

    from train.pool_tokens import _ArrayWriter, _encoder

    encoder = _encoder(store)
    done = _ArrayWriter(tmp_path, "shard")
    tokens = done.write(encoder, ["hello world", "   ", "more text here"])
    assert not (tmp_path / "shard.tokens").exists()  # nothing visible before close
    done.close()
    offsets = np.load(tmp_path / "shard.offsets.npy")
    assert offsets[0] == 0 and offsets[-1] == tokens > 0 and offsets[2] == offsets[1]  # the blank text
    assert (tmp_path / "shard.tokens").stat().st_size == tokens * np.dtype(np.uint32).itemsize
    done.abort()  # after close: a no-op
    assert (tmp_path / "shard.tokens").exists()

    stopped = _ArrayWriter(tmp_path, "other")
    stopped.write(encoder, ["some text"])
    stopped.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.offsets.npy", "shard.tokens"]


def write_thoughts_pool(out: Path, source: str | Path, documents: list[tuple[str, str]], *, g: int = POOL_G,
                        num_shards: int = NUM_SHARDS) -> Path:
    """A complete thoughts pool (what `gen thoughts` writes): thought i of a document at character
    (i+1)*len/(G+1), some thoughts empty (not inserted by assembly)."""

    def thought(k: int, doc_id: str, text: str, i: int) -> dict:
        body = "" if (k + i) % 7 == 0 else f"thinking {i} about {text[5 * i:5 * i + 20 + k % 13]}"
        return {"split_index": i, "split_token": 0, "split_char": (i + 1) * len(text) // (g + 1), "text": body}

    return write_any_pool(out, source, "thoughts", g, thought, num_shards=num_shards, documents=documents)


@pytest.fixture
def thoughts_pool(tmp_path, tiny_store, store) -> Path:
    return write_thoughts_pool(tmp_path / "thoughts", tiny_store, _store_documents(store))


def test_latent_documents_are_the_assembled_text_tokenized_in_pieces(thoughts_pool, store):
    """Every latent document of every G' the pool serves holds the assembled text (decodes to it),
    tokenized as its real-text pieces and its <think> thoughts apart, concatenated without EOS."""
    import re

    from megadocs.formats import assembled_documents

    tokenizer = store.tokenizer()
    manifest = tokenize_pool(thoughts_pool, store.path, progress=False)
    assert manifest["real"] == {"pieces": [1, POOL_G]}  # (G'+1) | (G+1): G' in {1, 3}
    for g in (1, POOL_G):
        documents = synthetic_documents(thoughts_pool, "latent", g, store)
        assemble(thoughts_pool, "latent", g)
        texts = [json.loads(line)["segments"][0] for line in open(assembled_documents(thoughts_pool, "latent", g))]
        assert documents.num_documents == len(texts)
        inserted = 0
        for d, text in enumerate(texts):
            pieces = [p for p in re.split(r"(<think>.*?</think>)", text, flags=re.S) if p]
            inserted += sum(p.startswith("<think>") for p in pieces)
            expected = [t for p in pieces for t in tokenizer.encode(p, add_special_tokens=False)]
            got = documents.document(d)
            assert got.tolist() == expected, (g, d)
            assert store.eos_id not in got.tolist()
            assert tokenizer.decode(got.tolist()) == tokenizer.decode(tokenizer.encode(text, add_special_tokens=False))
        assert 0 < inserted < g * len(texts)  # some thoughts empty: those splits were not cut
    with pytest.raises(UserError, match=r"data.synthetic.g: a thoughts pool generated with G=3 has split "
                                        r"points only for G in \[1, 3\] .*, got 2"):
        synthetic_documents(thoughts_pool, "latent", 2, store)


def test_a_training_job_without_the_step_builds_the_tokens_once_for_all(thoughts_pool, store, monkeypatch, capsys):
    """No tokenize step: the first job builds the pool's tokens (progress on stderr); concurrent
    jobs wait on its lock and reuse them; later jobs of any G' only memory-map."""
    import threading

    calls = []
    real_tokenize = pool_tokens_module.tokenize_pool

    def counting(*args, **kwargs):
        calls.append(args)
        return real_tokenize(*args, **kwargs)

    monkeypatch.setattr(pool_tokens_module, "tokenize_pool", counting)
    results, errors = [], []

    def job(g: int) -> None:
        try:
            results.append((g, synthetic_documents(thoughts_pool, "latent", g, store)))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(g,)) for g in (1, POOL_G, POOL_G)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 3
    assert len(calls) == 1  # one build; the others waited and reused it
    assert "tokenizing" in capsys.readouterr().err
    assert open_pool_tokens(thoughts_pool, store) is not None
    by_g = {g: docs for g, docs in results}
    assert by_g[POOL_G].num_tokens > by_g[1].num_tokens  # more thoughts inserted at G=3


def test_latent_run_identity_names_its_tokenization(thoughts_pool, store, tmp_path):
    from megadocs.formats import LATENT_TOKENIZATION
    from train.config import RunConfig

    config = RunConfig.model_validate({"data": {"store": str(store.path), "mixing_fraction": 0.5,
                                                "synthetic": {"pool": str(thoughts_pool), "algorithm": "latent",
                                                              "g": 1}}})
    assert config.data_identity()["synthetic"]["tokenization"] == LATENT_TOKENIZATION


def test_a_missing_pool_names_the_config_field(store, tmp_path):
    with pytest.raises(UserError, match=r"^data\.synthetic\.pool: .*missing: no manifest\.json"):
        synthetic_documents(tmp_path / "missing", "stitched", 1, store)


def test_a_malformed_row_names_file_and_line(store_pool, store):
    rows = store_pool / f"shard-00001-of-{NUM_SHARDS:05d}.jsonl"
    lines = rows.read_text().splitlines()
    lines[3] = json.dumps({"doc_id": "x", "gen_index": "0", "text": "t"})
    rows.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"shard-00001-of-{NUM_SHARDS:05d}\.jsonl:4: expected a row with"):
        synthetic_documents(store_pool, "stitched", 1, store)
    assert open_pool_tokens(store_pool, store) is None  # nothing half-built is used


def test_cli_tokenizes_several_pools_in_one_command(store_pool, thoughts_pool, store, capsys):
    from megadocs.cli import main

    assert main(["data", "tokenize-pool", "--pool", str(store_pool), str(thoughts_pool), "--store", str(store.path),
                 "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["pool"] for line in lines] == [str(store_pool), str(thoughts_pool)]
    assert all(line["complete"] and line["tokens"] > 0 for line in lines)
    assert open_pool_tokens(thoughts_pool, store).real_pieces.keys() == {1, POOL_G}
