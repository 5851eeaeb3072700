"""The tokenize step: one tokenized pool serves every algorithm and G' <= G, with documents
identical to tokenizing ``gen assemble``'s text segment by segment, and training only memory-maps
(no tokenizer, no tokenizing in the training process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gen.diversity import write_pool_diversity
from megadocs.errors import UserError
from megadocs.formats import ALGORITHMS, POOL_KIND, PoolKind
from megadocs.pools import served_gs
from tests.commands import command_parser
from tests.pools import tokenize_assembled, write_sample_pool
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
                    num_shards: int = NUM_SHARDS, tokenize: str | Path | bool = True) -> Path:
    """A complete rephrase pool, its generations of varied length, a few empty or whitespace-only."""
    return write_any_pool(out, source, "rephrase", g, lambda k, doc_id, text, i: {"text": _generation(text, k, i)},
                          num_shards=num_shards, documents=documents, tokenize=tokenize)


def write_thoughts_pool(out: Path, source: str | Path, documents: list[tuple[str, str]], *, g: int = POOL_G,
                        num_shards: int = NUM_SHARDS, tokenize: str | Path | bool = True) -> Path:
    """A complete thoughts pool (what `gen thoughts` writes): thought i of a document at character
    (i+1)*len/(G+1), some thoughts empty (not inserted by assembly)."""

    def thought(k: int, doc_id: str, text: str, i: int) -> dict:
        body = "" if (k + i) % 7 == 0 else f"thinking {i} about {text[5 * i:5 * i + 20 + k % 13]}"
        return {"split_index": i, "split_token": 0, "split_char": (i + 1) * len(text) // (g + 1), "text": body}

    return write_any_pool(out, source, "thoughts", g, thought, num_shards=num_shards, documents=documents,
                          tokenize=tokenize)


@pytest.fixture
def store(tiny_store) -> TokenStore:
    return TokenStore.open(tiny_store)


def _store_documents(store: TokenStore) -> list[tuple[str, str]]:
    return [(doc.doc_id, doc.text) for doc in store.split("train").documents()]


@pytest.fixture
def store_pool(tmp_path, tiny_store, store) -> Path:
    """A pool generated from the store itself, not tokenized yet."""
    return write_rephrases(tmp_path / "pool", tiny_store, _store_documents(store), tokenize=False)


@pytest.fixture(scope="module")
def pools_by_kind(tiny_store, tmp_path_factory) -> dict[PoolKind, Path]:
    """A tokenized pool of every kind: rephrases and thoughts from the store, samples."""
    root = tmp_path_factory.mktemp("pools")
    documents = _store_documents(TokenStore.open(tiny_store))
    return {PoolKind.REPHRASE: write_rephrases(root / "rephrase", tiny_store, documents),
            PoolKind.THOUGHTS: write_thoughts_pool(root / "thoughts", tiny_store, documents),
            PoolKind.SAMPLE: write_sample_pool(root / "sample", 23, tokenize=tiny_store, num_shards=NUM_SHARDS)}


def _assert_same_documents(indexed, reference, label) -> None:
    assert indexed.num_documents == reference.num_documents, label
    assert np.array_equal(indexed.lengths, reference.lengths), label
    for d in range(reference.num_documents):
        expected = reference.tokens[reference.offsets[d]:reference.offsets[d + 1]]
        assert np.array_equal(indexed.document(d), expected), (*label, d)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_index_assembly_equals_text_assembly_document_by_document(algorithm, pools_by_kind, store):
    """For every algorithm (self-distill included) and every G' its pool serves: the documents
    training reads are ``gen assemble``'s text tokenized segment by segment, EOS between segments,
    token for token (latent documents included: their text is tokenized whole)."""
    kind = POOL_KIND[algorithm]
    pool = pools_by_kind[kind]
    for g in served_gs(kind, 1 if kind is PoolKind.SAMPLE else POOL_G):
        reference = tokenize_assembled(pool, algorithm, g, store)
        _assert_same_documents(synthetic_documents(pool, algorithm, g, store), reference, (algorithm, g))
    if kind is PoolKind.THOUGHTS:
        manifest = open_pool_tokens(pool, store).manifest
        assert manifest.rendered == {"latent": [1, POOL_G]}  # (G'+1) | (G+1): G' in {1, 3}
        assert not manifest.generations and manifest.real is None  # latent reads its rendered text only


def test_a_pool_from_a_file_tokenizes_its_real_documents_itself(tmp_path, store):
    """Source not a token store: the tokenize step writes the real documents too (``.real``)."""
    source = tmp_path / "docs.jsonl"
    documents = _store_documents(store)[:37]
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    pool = write_rephrases(tmp_path / "pool", source, documents, tokenize=store.path)
    assert open_pool_tokens(pool, store).manifest.real == {"shards": "real"}
    for algorithm in ("simple", "stitched"):
        _assert_same_documents(synthetic_documents(pool, algorithm, 2, store),
                               tokenize_assembled(pool, algorithm, 2, store), (algorithm, 2))


def test_a_pool_whose_store_moved_is_tokenized_and_assembled_with_corpus(tmp_path, tiny_store, store, capsys):
    """A real move: the token store a pool was generated from is moved (`mv`) after generation.
    `data tokenize-pool` and `gen assemble` both take --corpus NEW_PATH, checked by content first
    (another store is refused in one line, nothing written); the tokens then read the real
    documents from the store where it lies now, and training reads them from there."""
    import shutil

    from gen.assemble import assemble, assembled_documents
    from megadocs.cli import main

    original = tmp_path / "data"
    shutil.copytree(tiny_store, original)
    pool = write_rephrases(tmp_path / "pool", original, _store_documents(store), tokenize=False)
    moved = Path(shutil.move(original, tmp_path / "elsewhere" / "data"))
    other = tmp_path / "other"  # the same tokenizer and documents but one, so another source hash
    shutil.copytree(tiny_store, other)
    docs_file = next(other.glob("train*.docs.jsonl"))
    docs_file.write_text("".join(docs_file.read_text().splitlines(keepends=True)[1:]))

    command = ["data", "tokenize-pool", "--pool", str(pool), "--store", str(moved), "--no-progress"]
    assert main([*command, "--corpus", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--corpus: {other} holds other documents than the pool's source {original}" in err and "\n" not in err
    assert not (pool / "tokens").exists() or not any((pool / "tokens").rglob("shard-*"))
    with pytest.raises(UserError, match=r"^docs: .* holds other documents than the pool's source"):  # its argument
        assemble(pool, "stitched", 2, docs=other)
    assemble_parser = command_parser("gen", "assemble")  # the same source option, as typed (--docs too)
    [spellings] = [action.option_strings for action in assemble_parser._actions if action.dest == "docs"]
    for spelling in spellings:
        assert main(["gen", "assemble", "--pool", str(pool), "--algorithm", "stitched", "--g", "2",
                     spelling, str(other)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {spelling}: {other} holds other documents than the pool's source {original}")
        assert err.count("\n") == 1

    assert main([*command, "--corpus", str(moved)]) == 0
    tokens = open_pool_tokens(pool, TokenStore.open(moved))
    assert tokens.manifest.real["store"] == str(moved) and tokens.manifest.source_store["path"] == str(moved)
    manifest = assemble(pool, "stitched", 2, docs=moved)
    assert manifest["source"] == str(moved) and assembled_documents(pool, "stitched", 2).is_file()
    training = TokenStore.open(moved)  # the assembled text, tokenized, is what training reads
    _assert_same_documents(synthetic_documents(pool, "stitched", 2, training),
                           tokenize_assembled(pool, "stitched", 2, training), ("stitched", 2))


def test_a_pool_whose_source_moved_names_the_manifest_field_and_works_once_it_is_set(tmp_path, store, capsys):
    """The source path is provenance, not identity (checked by content hash): a moved corpus is
    one line naming the manifest's 'source', and pointing it at the new path is enough."""
    from gen.assemble import assemble
    from megadocs.cli import main

    source = tmp_path / "docs.jsonl"
    documents = _store_documents(store)[:5]
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    pool = write_rephrases(tmp_path / "pool", source, documents, tokenize=False)
    moved = source.rename(tmp_path / "moved.jsonl")
    assert main(["data", "tokenize-pool", "--pool", str(pool), "--store", str(store.path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"its source {source} (manifest.json 'source') is not found" in err and "\n" not in err
    with pytest.raises(UserError, match="manifest.json 'source'"):
        assemble(pool, "stitched", 2)
    manifest = json.loads((pool / "manifest.json").read_text())
    (pool / "manifest.json").write_text(json.dumps({**manifest, "source": str(moved)}))
    assert main(["data", "tokenize-pool", "--pool", str(pool), "--store", str(store.path), "--no-progress"]) == 0
    _assert_same_documents(synthetic_documents(pool, "stitched", 2, store),
                           tokenize_assembled(pool, "stitched", 2, store), ("stitched", 2))


def test_a_thoughts_pool_trains_with_no_tokenizer_in_the_training_process(micro_store, tmp_path, monkeypatch):
    """A whole latent training run (streams, training, validation, the saved model) with every way
    of loading a tokenizer made to fail: the training process only memory-maps."""
    import tokenizers
    import torch
    import transformers

    from train.config import RunConfig
    from train.loop import run

    store = TokenStore.open(micro_store)
    pool = write_thoughts_pool(tmp_path / "thoughts", micro_store, _store_documents(store))  # tokenized here

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the training process loaded a tokenizer")

    for owner, name in ((tokenizers.Tokenizer, "from_file"), (tokenizers.Tokenizer, "from_str"),
                        (transformers.PreTrainedTokenizerBase, "from_pretrained"), (TokenStore, "tokenizer")):
        monkeypatch.setattr(owner, name, no_tokenizer)
    config = RunConfig.model_validate({
        "data": {"store": str(store.path), "context": 64, "mixing_fraction": 0.5, "real_epochs": 1,
                 "synthetic": {"pool": str(pool), "algorithm": "latent", "g": POOL_G}},
        "model": {"preset": "tiny-1m"}, "optim": {"batch_size": 32, "micro_batch_size": 32},
        "eval": {"val_windows": 8, "every": 0}, "device": "cpu", "checkpoint_every": 1000,
        "tracking": {"tensorboard": False}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = run(config, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert metrics.windows.synthetic_seen > 0 and metrics.val_loss is not None
    assert (tmp_path / "run" / "model" / "tokenizer.json").is_file()  # copied from the store, not loaded


def test_training_refuses_an_untokenized_pool_with_the_command(store_pool, store):
    """A training job never tokenizes: without the step it is refused in one line naming it."""
    synthetic = {"pool": store_pool, "algorithm": "stitched", "g": 2}
    with pytest.raises(UserError, match=r"^data\.synthetic\.pool: .* is not tokenized for .*; run `megadocs data "
                                        r"tokenize-pool --pool .* --store .*` \(a CPU step\) before training$"):
        TrainingStreams.build(store.path, synthetic=synthetic, context=64, mixing_fraction=0.5, batch_size=8)
    assert not tokens_dir(store_pool, store.tokenizer_hash).exists()


def test_tokenize_step_resumes_per_shard_and_refuses_what_does_not_fit(store_pool, store):
    tokenize_pool(store_pool, store.path, shard=1, progress=False)
    out = tokens_dir(store_pool, store.tokenizer_hash)
    with pytest.raises(UserError, match=r"tokenizing is not finished \(1 of 2 shards\)"):
        open_pool_tokens(store_pool, store)  # shard 0 missing: not used yet
    done_before = (out / f"shard-00001-of-{NUM_SHARDS:05d}.done").read_text()
    manifest = tokenize_pool(store_pool, store.path, progress=False)
    assert manifest["complete"] and manifest["statistics"]["shards_done"] == NUM_SHARDS
    assert (out / f"shard-00001-of-{NUM_SHARDS:05d}.done").read_text() == done_before  # not redone
    with pytest.raises(UserError, match=r"data.synthetic.g: the pool holds 3 generations"):
        synthetic_documents(store_pool, "stitched", POOL_G + 1, store)
    with pytest.raises(UserError, match=r"data.synthetic.algorithm: latent needs a thoughts pool"):
        synthetic_documents(store_pool, "latent", 1, store)

    # statistics added to the pool manifest later keep the tokens; regenerated generations do not
    pool_manifest = json.loads((store_pool / "manifest.json").read_text())
    write_pool_diversity(store_pool, max_docs=5)  # `megadocs gen diversity` adds its figures
    assert open_pool_tokens(store_pool, store).num_documents == len(_store_documents(store))
    (store_pool / "manifest.json").write_text(json.dumps({**pool_manifest, "seed": 7}))
    with pytest.raises(UserError, match="tokenized from an earlier state of the pool"):
        open_pool_tokens(store_pool, store)
    tokenize_pool(store_pool, store.path, progress=False)  # re-tokenizes the regenerated pool
    assert open_pool_tokens(store_pool, store).manifest.pool_identity["seed"] == 7


def test_tokens_of_an_earlier_format_are_refused_then_rebuilt(store_pool, store):
    """Tokenized pools written before (format /1: latent in pieces, no document ids) are not read."""
    tokenize_pool(store_pool, store.path, progress=False)
    path = tokens_dir(store_pool, store.tokenizer_hash) / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": "megadocs.pool-tokens/1"}))
    with pytest.raises(UserError, match=r"format: written by `megadocs.pool-tokens/1`.*; run .*tokenize-pool.* again$"):
        open_pool_tokens(store_pool, store)
    assert tokenize_pool(store_pool, store.path, progress=False)["format"] == "megadocs.pool-tokens/2"
    assert open_pool_tokens(store_pool, store).num_documents > 0


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


@pytest.mark.parametrize("profile", [{"tasks_per_node": 8}, None])
def test_cli_refuses_a_slurm_profile_before_writing_or_submitting(profile, store_pool, store, tmp_path, capsys,
                                                                   monkeypatch):
    """A missing profile, or a data-parallel one (each shard would be tokenized once per task at
    once, by writers of the same files), is refused before the tokens folder is made."""
    import yaml

    from megadocs import job_arrays
    from megadocs.cli import main

    path = tmp_path / "profile.yaml"
    if profile is not None:
        path.write_text(yaml.safe_dump({"partition": "debug", "mem_gb": 1, "time_min": 5, **profile}))
    monkeypatch.setattr(job_arrays, "make_executor", lambda *args, **kwargs: pytest.fail("submitted"))
    assert main(["data", "tokenize-pool", "--pool", str(store_pool), "--store", str(store.path),
                 "--executor", "slurm", "--profile", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(path) in err and "\n" not in err
    assert not tokens_dir(store_pool, store.tokenizer_hash).exists()


def test_a_tokenized_pool_from_validation_documents_is_refused(tmp_path, store):
    """The contamination guard reads the tokenized pool's document ids: a source that holds a
    validation document of the store is refused, and so is one from elsewhere."""
    val_doc = next(store.split("val").documents())
    documents = _store_documents(store)[:5] + [(val_doc.doc_id, val_doc.text)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    pool = write_rephrases(tmp_path / "pool", source, documents, tokenize=store.path)
    with pytest.raises(UserError, match=rf"^data\.synthetic: .*: 1 of its 6 source documents are in the val split "
                                        rf".*\('{val_doc.doc_id}'\); regenerate"):
        TrainingStreams.build(store.path, synthetic={"pool": pool, "algorithm": "stitched", "g": 2},
                              context=64, mixing_fraction=0.5, real_epochs=1, batch_size=8, seed=1)
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text(json.dumps({"id": "elsewhere", "text": "not from the store"}) + "\n")
    pool = write_rephrases(tmp_path / "pool-elsewhere", elsewhere, [("elsewhere", "not from the store")],
                           num_shards=1, tokenize=store.path)
    with pytest.raises(UserError, match=r"1 of its 1 source documents are not documents of .*\('elsewhere'\)"):
        require_pool_sources(open_pool_tokens(pool, store), store)


def test_array_writer_publishes_both_files_on_close_and_nothing_on_abort(tmp_path, store):
    """Written through megadocs.formats.atomic_file: no partial file is ever visible."""
    from train.pool_tokens import _ArrayWriter

    encoder = store.tokenizer().backend_tokenizer
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


def test_a_missing_pool_names_the_config_field(store, tmp_path):
    with pytest.raises(UserError, match=r"^data\.synthetic\.pool: .*missing: no manifest\.json"):
        synthetic_documents(tmp_path / "missing", "stitched", 1, store)


def test_a_malformed_row_names_file_and_line(store_pool, store):
    rows = store_pool / f"shard-00001-of-{NUM_SHARDS:05d}.jsonl"
    lines = rows.read_text().splitlines()
    lines[3] = json.dumps({"doc_id": "x", "gen_index": "0", "text": "t"})
    rows.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"shard-00001-of-{NUM_SHARDS:05d}\.jsonl:4: not a pool row \(expected a row"):
        tokenize_pool(store_pool, store.path, progress=False)
    with pytest.raises(UserError, match="tokenizing is not finished"):
        open_pool_tokens(store_pool, store)  # nothing half-built is used


def test_cli_tokenizes_several_pools_in_one_command(store_pool, tmp_path, tiny_store, store, capsys):
    from megadocs.cli import main

    thoughts = write_thoughts_pool(tmp_path / "thoughts", tiny_store, _store_documents(store), tokenize=False)
    assert main(["data", "tokenize-pool", "--pool", str(store_pool), str(thoughts), "--store", str(store.path),
                 "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["pool"] for line in lines] == [str(store_pool), str(thoughts)]
    assert all(line["complete"] and line["tokens"] + line["rendered_tokens"] > 0 for line in lines)
    assert open_pool_tokens(thoughts, store).rendered.keys() == {("latent", 1), ("latent", POOL_G)}


def test_windows_of_an_indexed_stream_equal_the_reference_stream(pools_by_kind, store):
    """The streams built from both (concat-and-chunk, seeded order) hold the same windows."""
    pool = pools_by_kind[PoolKind.REPHRASE]
    reference = TokenStream.build(tokenize_assembled(pool, "stitched", 2, store), eos_id=store.eos_id,
                                  context=64, seed=3, stream=SYNTHETIC)
    indexed = TokenStream.build(synthetic_documents(pool, "stitched", 2, store), eos_id=store.eos_id,
                                context=64, seed=3, stream=SYNTHETIC)
    every = np.arange(reference.num_windows)
    for got, expected in zip(indexed.windows(every), reference.windows(every)):
        assert np.array_equal(got, expected)


def test_a_shard_that_fails_near_its_end_raises_instead_of_hanging():
    """The reader thread of the tokenize step (`_read_ahead`) must stop when the encoding side
    fails. It used to block forever putting its end marker into a full queue, so an error in the
    last batches of a shard (a full disk, a SIGTERM turned into an exception) hung the task
    instead of reporting it."""
    import threading
    import time

    from train.pool_tokens import _read_ahead

    outcome: list[str] = []

    def consume() -> None:
        try:
            for item in _read_ahead(iter([1, 2, 3]), depth=2):
                time.sleep(0.5)  # the reader fills the queue ([2, 3]) and reaches its end marker
                raise OSError(f"disk full after item {item}")
        except OSError as exc:
            outcome.append(str(exc))

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    consumer.join(timeout=120)  # a bound on a hang (for ever), not a speed
    assert not consumer.is_alive(), "the reader thread blocked the failing consumer"
    assert outcome == ["disk full after item 1"]
