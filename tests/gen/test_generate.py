"""Generation with the transformers engine (same interface and rows as vLLM, cheap enough to
load in-process): resume after an interruption reproduces the uninterrupted pool exactly, the
plain-text chat fallback, refusal to mix settings into a pool, token stores (train split only),
unconditional samples, the submitit local job array, and one-line CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gen.engines import ENGINES
from gen.generate import generate_pool, sample_pool
from megadocs.errors import UserError
from megadocs.formats import PoolKind
from megadocs.pools import GenerationStatistics, read_manifest
from tests.commands import command_parser
from tests.gen.conftest import read_rows, write_docs

OPTIONS = {"max_new_tokens": 8, "chunk_docs": 1, "progress": False, "seed": 3}


@pytest.fixture(scope="module")
def full_pool(tmp_path_factory, tiny_generator, docs4, engine):
    out = tmp_path_factory.mktemp("full") / "pool"
    generate_pool("thoughts", docs4, tiny_generator, 2, out, engine=engine, **OPTIONS)
    return out


def _texts(pool):
    return sorted((r["doc_id"], r["gen_index"], r["split_char"], r["text"], r["n_tokens"]) for r in read_rows(pool))


def test_interrupted_then_resumed_pool_equals_uninterrupted(tmp_path, tiny_generator, docs4, engine, full_pool,
                                                            monkeypatch):
    out = tmp_path / "pool"
    real_generate, calls = engine.generate, []

    def dies_on_second_chunk(requests, sampling, progress=None):
        calls.append(len(requests))
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill looks like from inside: nothing after this runs
        return real_generate(requests, sampling, progress)

    monkeypatch.setattr(engine, "generate", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        generate_pool("thoughts", docs4, tiny_generator, 2, out, engine=engine, **OPTIONS)
    assert len(read_rows(out)) == 2 and not list(out.glob("*.done"))
    monkeypatch.setattr(engine, "generate", real_generate)
    manifest = generate_pool("thoughts", docs4, tiny_generator, 2, out, engine=engine, **OPTIONS)
    assert manifest["complete"] and manifest["statistics"]["documents"] == 4
    # per-prompt seeds: where the run resumed does not change a single sample
    assert _texts(out) == _texts(full_pool)


def test_a_resumed_shard_s_statistics_count_every_run_of_it(tmp_path, tiny_generator, docs4, engine, monkeypatch):
    """generation_seconds and tokens_per_s were of the last run only: a shard resumed after a kill
    reported the engine time of the chunks it generated after the restart. MOCK: gen's clock, which
    only the engine calls move (10 s each), so the totals are known without timing anything."""
    import types

    import gen.generate

    clock = [0.0]
    monkeypatch.setattr(gen.generate, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    real_generate, calls, tokens = engine.generate, [], []

    def ten_seconds_each(requests, sampling, progress=None):
        calls.append(len(requests))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed in its second chunk: nothing of it was written
        completions = real_generate(requests, sampling, progress)
        clock[0] += 10.0
        tokens.append(sum(c.n_tokens for samples in completions for c in samples))
        return completions

    monkeypatch.setattr(engine, "generate", ten_seconds_each)
    out = tmp_path / "pool"
    with pytest.raises(KeyboardInterrupt):
        generate_pool("rephrase", docs4, tiny_generator, 1, out, engine=engine, **OPTIONS)
    manifest = generate_pool("rephrase", docs4, tiny_generator, 1, out, engine=engine, **OPTIONS)
    statistics = GenerationStatistics.model_validate(manifest["statistics"])
    assert len(tokens) == 4 and statistics.generation_seconds == 40.0  # 1 chunk before the kill + 3 after
    assert statistics.output_tokens == sum(tokens) and statistics.tokens_per_s == sum(tokens) / 40.0


def test_transformers_rows_match_the_pool_format(full_pool):
    rows = read_rows(full_pool)
    assert len(rows) == 8
    for row in rows:
        assert row["engine"] == "transformers"
        assert row["finish_reason"] in ("stop", "length") and 1 <= row["n_tokens"] <= 8
        assert {"doc_id", "gen_index", "split_index", "split_char", "text", "prompt_sha256",
                "generator", "generator_revision", "sampling", "seed"} <= set(row)
    manifest = json.loads((full_pool / "manifest.json").read_text())
    assert manifest["statistics"]["truncated_prompts"] == 2  # both prompts of the 7000-char document


def test_a_pool_refuses_different_settings(tiny_generator, docs4, engine, full_pool, tmp_path):
    with pytest.raises(UserError, match=r"manifest.json: g: the pool was generated with 2, this run asks for 3"):
        generate_pool("thoughts", docs4, tiny_generator, 3, full_pool, engine=engine, **OPTIONS)
    with pytest.raises(UserError, match="sampling"):
        generate_pool("thoughts", docs4, tiny_generator, 2, full_pool, engine=engine,
                      **{**OPTIONS, "temperature": 0.5})
    edited = tmp_path / "thoughts.yaml"
    from gen.templates import PROMPTS_DIR

    edited.write_text((PROMPTS_DIR / "latent_thoughts.yaml").read_text() + "\n# edited\n")
    with pytest.raises(UserError, match="prompt_template.sha256"):
        generate_pool("thoughts", docs4, tiny_generator, 2, full_pool, engine=engine, template=str(edited), **OPTIONS)


def test_a_pool_holding_only_its_manifest_takes_corrected_settings(tiny_generator, docs4, engine, tmp_path,
                                                                  monkeypatch):
    """A run stopped before its first flush (killed, or refused by the started engine's context
    check) wrote the manifest and nothing else; a re-run with other settings (a lower
    --max-new-tokens) is not then refused for differing from it."""
    out = tmp_path / "pool"

    def killed(requests, sampling, progress=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(engine, "generate", killed)
        with pytest.raises(KeyboardInterrupt):
            generate_pool("rephrase", docs4, tiny_generator, 1, out, engine=engine, **{**OPTIONS, "max_new_tokens": 16})
    assert (out / "manifest.json").exists() and not read_rows(out)
    manifest = generate_pool("rephrase", docs4, tiny_generator, 1, out, engine=engine, **OPTIONS)
    assert manifest["complete"] and manifest["sampling"]["max_new_tokens"] == 8


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("kind", ["rephrase", "thoughts"])
def test_a_context_too_small_is_refused_before_the_engine_starts(kind, engine_name, tiny_generator, docs4, tmp_path,
                                                                monkeypatch):
    """A --max-model-len that leaves no room for the document is refused from the tokenizer and
    the config alone: the engine (vLLM: ~50 s on CPU, minutes for 8B on a GPU) never starts and
    no manifest is written. Tripwire, not a mock: starting an engine fails the test."""
    def engine_started(*args, **kwargs):
        raise AssertionError("the engine started before the context was checked")

    monkeypatch.setattr("gen.generate.open_engine", engine_started)
    out = tmp_path / "pool"
    with pytest.raises(UserError, match=r"--max-new-tokens: 8 leaves no room for the document in the "
                                        r"generator's context of 64 tokens .*raise --max-model-len"):
        generate_pool(kind, docs4, tiny_generator, 2, out, engine=engine_name, max_model_len=64,
                      **{k: v for k, v in OPTIONS.items() if k != "max_new_tokens"}, max_new_tokens=8)
    assert not (out / "manifest.json").exists()


def test_a_max_model_len_above_the_generator_s_context_is_refused_not_capped(tiny_generator, docs4, tmp_path,
                                                                           monkeypatch):
    """The transformers engine ran a --max-model-len above its config's context (2048) at 2048
    while the manifest recorded the larger one; refused now before the engine starts and no
    manifest is written (vLLM refuses such a value too: tests/gen/test_vllm.py)."""
    from gen.engines import TransformersEngine

    message = r"^--max-model-len: 4096 is above the generator's context of 2048 tokens"
    with monkeypatch.context() as patch:
        patch.setattr("gen.generate.open_engine", lambda *a, **k: pytest.fail("the engine started"))
        with pytest.raises(UserError, match=message):
            generate_pool("rephrase", docs4, tiny_generator, 1, tmp_path / "pool", engine="transformers",
                          max_model_len=4096, **OPTIONS)
    assert not (tmp_path / "pool" / "manifest.json").exists()
    with pytest.raises(UserError, match=message):
        TransformersEngine(tiny_generator, max_model_len=4096)
    assert TransformersEngine(tiny_generator, max_model_len=1024).context_length == 1024


def test_samples_longer_than_the_context_are_refused_before_the_engine_starts(tiny_generator, tmp_path, monkeypatch):
    monkeypatch.setattr("gen.generate.open_engine", lambda *a, **k: pytest.fail("the engine started"))
    with pytest.raises(UserError, match="--max-new-tokens: expected less than the generator's context of 64 tokens, got 64"):
        sample_pool(tiny_generator, 2, tmp_path / "pool", engine="transformers", max_model_len=64, max_new_tokens=64,
                    progress=False)


@pytest.mark.parametrize("ids,message", [
    (["a", "a", "b"], r"documents 0 and 1 \(0-based\) share the id 'a'"),  # documents 0 and 1: shards 0 and 1 of 2
    ([], "no documents in the train split"),
])
def test_a_source_of_duplicate_ids_or_no_documents_is_refused_before_the_engine_starts(ids, message, tiny_generator,
                                                                                     tmp_path, monkeypatch):
    """Checked when the pool is prepared, whichever shards the documents fall in: not after the
    engine started (vLLM: ~45 s on CPU, minutes for 8B on a GPU), nor once per array task (each
    failing after its engine's start, "re-run to resume them"), and no manifest is written."""
    monkeypatch.setattr("gen.generate.open_engine", lambda *a, **k: pytest.fail("the engine started"))
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": f"Document number {k} about owls."}) + "\n"
                            for k, i in enumerate(ids)))
    with pytest.raises(UserError, match=rf"^gen rephrase: docs: .*docs.jsonl: {message}"):  # the record's field
        generate_pool("rephrase", docs, tiny_generator, 1, tmp_path / "pool", engine="transformers", num_shards=2,
                      **OPTIONS)
    assert not (tmp_path / "pool" / "manifest.json").exists()


@pytest.mark.parametrize("kind", [kind.value for kind in PoolKind if kind is not PoolKind.SAMPLE])  # those with a source
def test_a_source_without_documents_is_named_by_the_flag_typed(kind, tiny_generator, tmp_path, capsys, monkeypatch):
    """`gen rephrase --corpus SRC` of a source without documents (or with an id twice) said '--docs: SRC: ...',
    a hand-written spelling: now the source's option as typed, each of its spellings."""
    from megadocs.cli import main, option_flags

    monkeypatch.setattr("gen.generate.open_engine", lambda *a, **k: pytest.fail("the engine started"))
    parser = command_parser("gen", kind)
    [spellings] = [action.option_strings for action in parser._actions if action.dest == "docs"]
    assert option_flags(parser)["docs"] in spellings and len(spellings) > 1
    for rows, problem in [([], "no documents in the train split"), (["a", "a"], "documents 0 and 1 (0-based) share")]:
        docs = tmp_path / "docs.jsonl"
        docs.write_text("".join(json.dumps({"id": i, "text": "Owls hunt at night."}) + "\n" for i in rows))
        for spelling in spellings:
            assert main(["gen", kind, spelling, str(docs), "--generator", str(tiny_generator), "--g", "1",
                         "--out", str(tmp_path / "pool"), "--engine", "transformers", "--no-progress"]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {spelling}: {docs}: {problem}") and err.count("\n") == 1, err


def test_empty_documents_of_a_raw_corpus_are_left_out_and_counted(tiny_generator, engine, tmp_path, capsys):
    """A whitespace-only document got G generations from a prompt holding nothing. It is left out,
    as `data prepare` leaves it out of a store: the pool's documents are the source's non-empty ones
    (sharded among themselves), so the pool is complete and assembles; the count is in the manifest
    and on stderr."""
    from gen.assemble import assemble

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(row) + "\n" for row in [
        {"id": "owls", "text": "Owls hunt at night."}, {"id": "blank", "text": " \n\t"}, {"id": "void", "text": ""},
        {"id": "bats", "text": "Bats hunt at night too."}, {"id": "moths", "text": "Moths fly to the light."}]))
    out = tmp_path / "pool"
    manifest = generate_pool("rephrase", docs, tiny_generator, 1, out, engine=engine, num_shards=2, **OPTIONS)
    assert "docs.jsonl: 2 empty or whitespace-only document(s) left out" in capsys.readouterr().err
    assert manifest["complete"] and manifest["empty_documents_skipped"] == 2
    assert manifest["statistics"]["documents"] == 3
    rows = read_rows(out)
    assert {(r["doc_id"], r["_shard"][:14]) for r in rows} == {  # document k of the non-empty ones: shard k % 2
        ("owls", "shard-00000-of"), ("bats", "shard-00001-of"), ("moths", "shard-00000-of")}
    assert assemble(out, "simple", 1)["real_documents"] == 3


def test_a_pool_an_earlier_gen_began_with_rows_of_an_empty_document_is_refused_not_resumed(tiny_generator, engine,
                                                                                           tmp_path, monkeypatch):
    """Before, gen generated from empty documents too: such a pool's later documents fall in other
    shards now, so resuming it would mix two shardings in one pool. Refused in one line instead.
    MOCK: the earlier gen, as the empty-document rule answering no."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(row) + "\n" for row in [
        {"id": "blank", "text": "  "}, {"id": "owls", "text": "Owls hunt at night."},
        {"id": "bats", "text": "Bats hunt at night too."}]))
    out, real_generate, calls = tmp_path / "pool", engine.generate, []

    def dies_on_second_chunk(requests, sampling, progress=None):
        calls.append(len(requests))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(requests, sampling, progress)

    with monkeypatch.context() as earlier:
        earlier.setattr("megadocs.pools.is_empty_document", lambda doc: False)
        earlier.setattr(engine, "generate", dies_on_second_chunk)
        with pytest.raises(KeyboardInterrupt):
            generate_pool("rephrase", docs, tiny_generator, 1, out, engine=engine, **OPTIONS)
    assert [row["doc_id"] for row in read_rows(out)] == ["blank"]
    with pytest.raises(UserError, match=r"shard-00000-of-00001.jsonl: holds rows of document 'blank', not one of "
                                        r"this shard's documents .* use a new --out$"):
        generate_pool("rephrase", docs, tiny_generator, 1, out, engine=engine, **OPTIONS)


def test_plain_text_fallback_when_the_tokenizer_has_no_chat_template(tiny_generator_plain, tmp_path):
    from gen.engines import TransformersEngine

    engine = TransformersEngine(tiny_generator_plain)
    assert engine.chat.kind == "plain-text-fallback"
    assert engine.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]) == "S\n\nU\n\n"
    docs = write_docs(tmp_path / "docs.jsonl", n_docs=3)
    manifest = generate_pool("rephrase", docs, tiny_generator_plain, 2, tmp_path / "pool", engine=engine,
                             **OPTIONS)
    assert manifest["chat_template"]["kind"] == "plain-text-fallback"
    assert manifest["chat_template"]["file"].endswith("gen/prompts/plain_chat.jinja")
    assert manifest["statistics"]["generations"] == 6


def test_token_store_source_uses_the_train_split_only(tiny_store, tiny_generator, engine, tmp_path):
    from megadocs.corpus import iter_documents

    train_ids = [d.doc_id for d in iter_documents(tiny_store, split="train")]
    val_ids = {d.doc_id for d in iter_documents(tiny_store, split="val")}
    manifest = generate_pool("rephrase", tiny_store, tiny_generator, 1, tmp_path / "pool", engine=engine,
                             **{**OPTIONS, "max_new_tokens": 1, "chunk_docs": 64})
    ids = [r["doc_id"] for r in read_rows(tmp_path / "pool")]
    assert sorted(ids) == sorted(train_ids) and not set(ids) & val_ids
    assert manifest["source_split"] == "train"


@pytest.mark.parametrize("kind,g,calls_expected", [("rephrase", 2, [4, 4]), ("thoughts", 1, [4])])
def test_default_chunks_fill_the_engines_calls(kind, g, calls_expected, tiny_generator, docs4, engine, tmp_path, monkeypatch):
    """Without --chunk-docs, each engine call holds the engine's sequences_per_call sequences:
    small G gets more documents per call (a fixed document count left small G's calls short)."""
    calls = []
    generate = engine.generate

    def counting(requests, sampling, progress=None):
        calls.append(sum(r.n for r in requests))
        return generate(requests, sampling, progress)

    monkeypatch.setattr(engine, "generate", counting)
    monkeypatch.setattr(engine, "sequences_per_call", 4)
    options = {key: value for key, value in OPTIONS.items() if key != "chunk_docs"}
    generate_pool(kind, docs4, tiny_generator, g, tmp_path / "pool", engine=engine, **{**options, "max_new_tokens": 1})
    assert calls == calls_expected  # 4 documents of G sequences each, 4 // G documents per call


def test_unconditional_samples_for_self_distillation(tiny_generator, engine, tmp_path):
    from gen.assemble import assemble

    manifest = sample_pool(tiny_generator, 5, tmp_path / "samples", engine=engine, num_shards=2, **OPTIONS)
    rows = read_rows(tmp_path / "samples")
    assert manifest["kind"] == "sample" and manifest["statistics"]["generations"] == 5
    assert sorted(r["doc_id"] for r in rows) == [f"sample-{k:07d}" for k in range(5)]
    assert len({r["request_seed"] for r in rows}) == 5
    result = assemble(tmp_path / "samples", "self-distill", 1)
    documents = (tmp_path / "samples" / "assembled" / "self-distill-g1" / "documents.jsonl").read_text().splitlines()
    empty = sum(not r["text"].strip() for r in rows)
    assert result["documents"] == len(documents) == 5 - empty and result["real_documents"] == 0


def test_submitit_local_job_array_runs_every_shard(tiny_generator, tmp_path):
    from gen.generate import GenerateOptions, submit_shards

    docs = write_docs(tmp_path / "docs.jsonl", n_docs=3)
    options = GenerateOptions(kind="rephrase", docs=str(docs), generator=str(tiny_generator), g=2,
                              out=str(tmp_path / "pool"), engine="transformers", num_shards=2, **OPTIONS)
    manifest = submit_shards(options, "local")
    assert manifest["complete"] and manifest["statistics"]["shards_done"] == 2
    assert manifest["statistics"]["generations"] == 6
    typed = read_manifest(tmp_path / "pool").statistics  # every figure gen writes is a typed field
    assert typed.model_fields_set == set(GenerationStatistics.model_fields) and typed.generations == 6
    again = read_manifest(tmp_path / "pool").to_json()  # read and written again: the same JSON, key order too
    assert json.dumps(again) == json.dumps(manifest)
    logs = list((tmp_path / "pool" / "submitit").glob("*_result.pkl"))
    assert len(logs) == 2  # two array tasks, one per shard


@pytest.mark.parametrize("argv,message", [
    (["--shard", "2/2"], "--shard: expected 0 <= i < n"),
    (["--shard", "x"], "--shard: expected i/n"),
    (["--g", "0"], "--g: Input should be greater than or equal to 1"),
    (["--num-shards", "0"], "--num-shards: Input should be greater than or equal to 1, got 0"),
    (["--temperature", "-1"], "temperature"),
    # greedy decoding has one sample per prompt: both engines raised (vLLM after its start)
    (["--temperature", "0"], "--temperature: 0 (greedy decoding) gives one sample per prompt; rephrase asks for G=2"),
    (["--generator", "/nonexistent"], "--generator: /nonexistent: not a directory"),
    (["--docs", "/nonexistent.jsonl"], "/nonexistent.jsonl: corpus not found"),
    # a file at --out (or above it) was FileExistsError's traceback
    (["--out", "{tmp}/file"], "--out: cannot write {tmp}/file: it is a file, not a directory"),
    (["--out", "{tmp}/file/p"], "--out: cannot write {tmp}/file/p: {tmp}/file is a file, not a directory"),
])
def test_cli_bad_input_is_one_line(argv, message, tiny_generator, docs4, tmp_path, capsys):
    from megadocs.cli import main

    (tmp_path / "file").write_text("a file\n")
    message = message.format(tmp=tmp_path)
    base = {"--docs": str(docs4), "--generator": str(tiny_generator), "--g": "2", "--out": str(tmp_path / "p")}
    for key, value in zip(argv[::2], argv[1::2]):
        base[key] = value.format(tmp=tmp_path)
    args = ["gen", "rephrase", "--engine", "transformers", "--no-progress"]
    for key, value in base.items():
        args += [key, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("manifest", [b"", b"\xff\xfe", b'{"format": "megadocs.gen-pool/1", "g": 2', b"[1]"],
                         ids=["empty", "not-utf8", "cut-short", "a-list"])
def test_a_pool_whose_manifest_is_damaged_is_refused_in_one_line_and_left_as_it_is(manifest, tiny_generator, docs4,
                                                                                   tmp_path, capsys):
    """Resuming into a pool whose manifest.json is cut short or overwritten was a JSONDecodeError or
    UnicodeDecodeError traceback; the manifest and the shards beside it stay as they were."""
    from megadocs.cli import main

    pool = tmp_path / "p"
    pool.mkdir()
    (pool / "manifest.json").write_bytes(manifest)
    (pool / "shard-00000-of-00001.jsonl").write_text("{}\n")
    argv = ["gen", "rephrase", "--engine", "transformers", "--no-progress", "--docs", str(docs4), "--generator",
            str(tiny_generator), "--g", "2", "--out", str(pool)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {pool / 'manifest.json'}: not a JSON manifest"), err
    assert (pool / "manifest.json").read_bytes() == manifest
    assert (pool / "shard-00000-of-00001.jsonl").read_text() == "{}\n"
    assert sorted(path.name for path in pool.iterdir() if not path.name.startswith(".")) == [
        "manifest.json", "shard-00000-of-00001.jsonl"]  # (.manifest.lock: the lock its reader took)


@pytest.mark.parametrize("n_docs,refused", [(3, True), (1, False)])
def test_greedy_unconditional_samples_are_refused_when_they_would_all_be_one_text(n_docs, refused, tiny_generator,
                                                                                 tmp_path, capsys):
    """`gen sample --temperature 0` decoded every sample greedily from the one empty prompt: n_docs
    copies of one text, a pool of duplicates. One sample is a text of its own."""
    from megadocs.cli import main

    code = main(["gen", "sample", "--generator", str(tiny_generator), "--n-docs", str(n_docs), "--temperature", "0",
                 "--engine", "transformers", "--no-progress", "--max-new-tokens", "4", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    if refused:
        assert code == 2 and err == ("error: --temperature: 0 (greedy decoding) gives one sample per prompt; sample asks "
                                     "for n_docs=3 of its one (empty) prompt (sample at a temperature above 0; the "
                                     "paper's is 1)")
        assert not (tmp_path / "p").exists()  # refused before anything is written
    else:
        assert code == 0, err


@pytest.mark.parametrize("profile,message", [
    ({"tasks_per_node": 8}, "a shard task is one process; this profile runs 8 per job (tasks_per_node 8 x nodes 1)"),
    ({"nodes": 2, "tasks_per_node": 4}, "runs 8 per job (tasks_per_node 4 x nodes 2)"),
    (None, "file not found"),
])
def test_cli_refuses_a_slurm_profile_before_writing_or_submitting(profile, message, tiny_generator, docs4, tmp_path,
                                                                   capsys, monkeypatch):
    """A missing profile, or a data-parallel one (each shard would run once per task), is refused
    before the pool's manifest is written and before anything is submitted."""
    import yaml

    from megadocs import job_arrays
    from megadocs.cli import main

    path = tmp_path / "profile.yaml"
    if profile is not None:
        path.write_text(yaml.safe_dump({"partition": "debug", "mem_gb": 1, "time_min": 5, **profile}))
    monkeypatch.setattr(job_arrays, "make_executor", lambda *args, **kwargs: pytest.fail("submitted"))
    assert main(["gen", "rephrase", "--docs", str(docs4), "--generator", str(tiny_generator), "--g", "2",
                 "--out", str(tmp_path / "p"), "--engine", "transformers", "--no-progress",
                 "--executor", "slurm", "--profile", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and str(path) in err and "\n" not in err
    assert not (tmp_path / "p").exists()


def test_a_local_array_runs_gen_shard_tasks_one_per_gpu_and_tokenize_tasks_all_at_once():
    """``gen --executor local`` on a machine with GPUs was refused (every shard's engine on one GPU):
    its shard tasks are GPU tasks, which a local array runs one per GPU, each on its own
    (tests/megadocs/test_job_array.py); tokenize-pool's use no GPU and all run at once."""
    from gen.generate import GeneratePool
    from train.pool_tokens import TokenizePool

    assert GeneratePool.GPU_TASKS and not TokenizePool.GPU_TASKS


@pytest.mark.slurm
def test_slurm_job_array_one_task_per_shard(tiny_generator, tmp_path):
    """The real local cluster (slurm/local-cluster.sh up): the CLI's --executor slurm path."""
    from megadocs.cli import main

    docs = write_docs(tmp_path / "docs.jsonl", n_docs=3)
    profile = str(Path(__file__).resolve().parents[2] / "slurm" / "profiles" / "local.yaml")
    assert main(["gen", "rephrase", "--docs", str(docs), "--generator", str(tiny_generator), "--g", "2",
                 "--out", str(tmp_path / "pool"), "--engine", "transformers", "--max-new-tokens", "8",
                 "--num-shards", "2", "--executor", "slurm", "--profile", profile]) == 0
    rows = read_rows(tmp_path / "pool")
    assert len(rows) == 6 and {r["_shard"] for r in rows} == {"shard-00000-of-00002.jsonl",
                                                                "shard-00001-of-00002.jsonl"}
    array_ids = {p.name.split("_")[0] for p in (tmp_path / "pool" / "submitit").glob("*_result.pkl")}
    assert len(array_ids) == 1  # both shards ran as tasks of ONE job array


def test_assembly_picks_generations_by_gen_index_not_file_position(full_pool, docs4, tmp_path):
    """A shard whose rows are not in gen_index order (a re-sorted or hand-merged shard) assembles
    the same documents: thoughts go in at their own split points."""
    import shutil

    from gen.assemble import assemble
    from megadocs import pools as pool_format

    shuffled = tmp_path / "pool"
    shutil.copytree(full_pool, shuffled)
    shutil.rmtree(shuffled / "assembled", ignore_errors=True)
    count = json.loads((shuffled / "manifest.json").read_text())["num_shards"]
    for index in range(count):
        path = pool_format.rows_path(shuffled, index, count)
        groups = list(pool_format.iter_doc_groups(shuffled, index, count, 2))
        path.write_text("".join(json.dumps(row.to_json()) + "\n" for _, rows in groups for row in reversed(rows)))
    assemble(full_pool, "latent", 2, docs=docs4, overwrite=True)
    assemble(shuffled, "latent", 2, docs=docs4)
    expected = (full_pool / "assembled" / "latent-g2" / "documents.jsonl").read_text()
    assert (shuffled / "assembled" / "latent-g2" / "documents.jsonl").read_text() == expected
    assert "<think>" in expected


def test_a_progress_line_torn_by_a_kill_is_cut_and_the_next_starts_on_its_own(tmp_path, capsys):
    from megadocs.pools import ShardProgress, read_progress

    log = tmp_path / "shard-00000-of-00001.progress"
    first = ShardProgress(run_tokens=5, run_seconds=1.5)
    log.write_bytes(first.line() + first.line()[:9])  # killed mid-append
    assert read_progress(log) == first and log.read_bytes() == first.line()
    with open(log, "ab") as handle:
        handle.write(b"{hand edited}\n" + first.line())
    assert read_progress(log) == first + first
    assert "1 line(s) not a chunk's progress" in capsys.readouterr().err
