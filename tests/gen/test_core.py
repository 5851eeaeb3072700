"""Pure parts of gen: split points, pool reuse, the truncation policy, assembly of one document,
shard-file repair after a torn write, prompt templates. No model is loaded here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen.assemble import assemble_document
from gen.generate import chunk_docs_for
from gen.splits import (
    allocate_budget,
    rephrase_window,
    reusable_splits,
    split_tokens,
    thought_window,
    token_starts,
)
from gen.templates import load_template
from megadocs import megadoc
from megadocs import pools as pool_format
from megadocs.errors import UserError
from megadocs.formats import PoolKind
from megadocs.pools import PoolRow, select_generations
from tests.commands import command_parser


@given(st.integers(0, 5000), st.integers(1, 64))
def test_split_points_cut_equal_pieces(n_tokens, g):
    points = [0] + split_tokens(n_tokens, g) + [n_tokens]
    sizes = [b - a for a, b in zip(points, points[1:])]
    assert len(sizes) == g + 1 and sum(sizes) == n_tokens
    assert max(sizes) - min(sizes) <= 1


@given(st.integers(1, 64), st.integers(1, 64), st.integers(0, 3000))
def test_reused_split_points_equal_fresh_ones(pool_g, g, n_tokens):
    chosen = reusable_splits(pool_g, g)
    if (pool_g + 1) % (g + 1) or g > pool_g:
        assert chosen is None
    else:
        pool_points = split_tokens(n_tokens, pool_g)
        assert [pool_points[i] for i in chosen] == split_tokens(n_tokens, g)


@given(st.integers(0, 500), st.integers(0, 500), st.integers(2, 400))
def test_budget_keeps_as_much_as_fits(prefix, suffix, budget):
    keep_prefix, keep_suffix = allocate_budget(prefix, suffix, budget)
    assert 0 <= keep_prefix <= prefix and 0 <= keep_suffix <= suffix
    assert keep_prefix + keep_suffix == min(prefix + suffix, budget)
    if prefix + suffix > budget:  # neither side is starved while the other has spare room
        assert keep_prefix == prefix or keep_prefix >= budget // 2 or keep_suffix == suffix


def test_truncation_keeps_the_text_nearest_the_split_point():
    text = "".join(f"{i:02d}" for i in range(50))  # 50 two-character "tokens"
    starts = token_starts([(2 * i, 2 * i + 2) for i in range(50)], len(text))
    begin, end, truncated = thought_window(starts, split_token=30, budget=10)
    assert truncated and text[begin:starts[30]] == "2526272829" and text[starts[30]:end] == "3031323334"
    begin, end, truncated = thought_window(starts, split_token=2, budget=10)  # short prefix: suffix gets the rest
    assert text[begin:starts[2]] == "0001" and text[starts[2]:end] == "0203040506070809"
    assert thought_window(starts, 25, 100) == (0, len(text), False)
    assert rephrase_window(starts, 5) == (10, True) and rephrase_window(starts, 50) == (100, False)


def test_token_starts_are_monotone_even_for_multibyte_characters():
    assert token_starts([(0, 1), (1, 2), (1, 2), (0, 3), (3, 4)], 4) == [0, 1, 1, 1, 3, 4]


def test_select_generations():
    assert select_generations("rephrase", 32, 4) == [0, 1, 2, 3]
    assert select_generations("thoughts", 7, 3) == [1, 3, 5]
    with pytest.raises(UserError, match="at most 4"):
        select_generations("rephrase", 4, 8)
    with pytest.raises(UserError, match=r"G in \[1, 3, 7\]"):
        select_generations("thoughts", 7, 2)


def _row(index, text, char=None):
    return PoolRow("d", index, text, split_char=char)


def test_assemble_document_for_every_algorithm():
    rows = [_row(0, "R0"), _row(1, "  \n"), _row(2, "R2")]
    assert assemble_document("simple", "d", "REAL", rows) == ([
        {"doc_id": "d#rephrase-0", "source_doc_id": "d", "segments": ["R0"]},
        {"doc_id": "d#rephrase-2", "source_doc_id": "d", "segments": ["R2"]},
        {"doc_id": "d", "source_doc_id": "d", "segments": ["REAL"]}], 1)
    assert assemble_document("stitched", "d", "REAL", rows)[0][0]["segments"] == ["R0", "R2", "REAL"]
    assert assemble_document("stitched-first", "d", "REAL", rows)[0][0]["segments"] == ["REAL", "R0", "R2"]
    assert assemble_document("stitched-none", "d", "REAL", rows)[0][0]["segments"] == ["R0", "R2"]
    assert assemble_document("stitched-none", "d", "REAL", [_row(0, "")]) == ([], 1)
    thoughts = [_row(0, "a", 1), _row(1, "", 2), _row(2, "c", 2)]
    docs, excluded = assemble_document("latent", "d", "XYZW", thoughts)
    assert docs == [{"doc_id": "d#latent", "source_doc_id": "d",
                     "segments": ["X<think>a</think>Y<think>c</think>ZW"]}] and excluded == 1
    [[segment]] = megadoc.megadocs("latent", 3)
    texts, cuts = ["t", "u", "v"], [0, 0, 2]
    assert megadoc.render_segment(segment, "ab", texts.__getitem__, cuts.__getitem__) == \
        "<think>t</think><think>u</think>ab<think>v</think>"


def test_load_shard_drops_torn_lines_and_half_written_documents(tmp_path):
    path = tmp_path / "shard-00000-of-00001.jsonl"
    rows = [{"doc_id": d, "gen_index": i, "text": f"{d}{i}"} for d in ("a", "b") for i in range(2)]
    lines = [json.dumps(r) for r in rows] + [json.dumps({"doc_id": "c", "gen_index": 0, "text": "c0"})]
    path.write_text("\n".join(lines) + '\n{"doc_id": "c", "gen_in')
    inode = path.stat().st_ino
    complete = pool_format.load_shard(path, g=2)
    assert complete == ["a", "b"]
    assert path.read_text().splitlines() == [json.dumps(r, ensure_ascii=False) for r in rows]
    assert path.stat().st_ino == inode  # the torn tail was cut off in place: no copy, no free space needed
    assert pool_format.load_shard(path, g=2) == complete  # idempotent, nothing more to drop


def test_load_shard_rewrites_a_shard_damaged_before_its_end(tmp_path):
    """What a cut-off write never leaves (a bad line, a duplicate row, an incomplete document
    before complete ones) is dropped by a rewrite; the complete documents after it are kept."""
    path = tmp_path / "shard-00000-of-00001.jsonl"
    row = {d: [json.dumps({"doc_id": d, "gen_index": i, "text": f"{d}{i}"}) for i in range(2)] for d in "abcd"}
    path.write_text("\n".join([*row["a"], "not json", row["b"][0], *row["c"], row["c"][1], *row["d"]]) + "\n")
    assert pool_format.load_shard(path, g=2) == ["a", "c", "d"]
    assert path.read_text().splitlines() == [*row["a"], *row["c"], *row["d"]]


def test_shards_are_read_as_streams_not_held_in_memory(tmp_path):
    import inspect
    import tracemalloc

    path = tmp_path / "shard-00000-of-00001.jsonl"
    text = "x" * 10_000  # long rows: the peak must not grow with them
    with open(path, "w") as handle:
        for d in range(400):
            for i in range(4):
                handle.write(json.dumps({"doc_id": f"d{d}", "gen_index": i, "text": text}) + "\n")
        handle.write(json.dumps({"doc_id": "torn", "gen_index": 0, "text": text}) + "\n")  # incomplete
    size = path.stat().st_size
    rows = pool_format.iter_rows(path)
    assert inspect.isgenerator(rows) and next(rows).doc_id == "d0"
    rows.close()
    tracemalloc.start()
    complete = pool_format.load_shard(path, g=4)  # both passes: scan, then rewrite without "torn"
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(complete) == 400 and "torn" not in path.read_text()
    assert peak < size / 20, f"load_shard peaked at {peak:,} bytes for a {size:,}-byte shard"


def test_templates_name_their_source_and_hash_their_bytes(tmp_path):
    rephrase, thoughts = load_template("rephrase"), load_template("thoughts")
    assert "Wikipedia" in rephrase.user and "WRAP" in rephrase.source
    assert "BoLT" in thoughts.source
    messages = thoughts.messages(prefix="P {x}", suffix="S")
    assert messages[0]["role"] == "system" and "### Prefix:\nP {x}\n\n### Suffix:\nS\n\n" in messages[1]["content"]
    # one pass: a prefix quoting "{suffix}" keeps it literally (sequential replacement pasted S in)
    quoting = thoughts.messages(prefix="the template says {suffix} here", suffix="S")[1]["content"]
    assert "the template says {suffix} here" in quoting and quoting.count("S\n\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: 'no placeholder'\n")
    with pytest.raises(UserError, match=r"\{prefix\} exactly once"):
        load_template("thoughts", bad)


def test_missing_generator_is_reported_before_heavy_imports(tmp_path):
    """A wrong --generator path fails in one line without importing transformers/vLLM/torch."""
    import subprocess
    import sys

    code = (
        "import sys; from megadocs.cli import main; "
        f"status = main(['gen', 'rephrase', '--docs', 'stdlib', '--generator', {str(tmp_path / 'nope')!r}, "
        f"'--g', '1', '--out', {str(tmp_path / 'pool')!r}]); "
        "print(status, sorted(m for m in ('transformers', 'vllm', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split("\n")[0] == "2 []", result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0 and "--generator:" in result.stderr
    assert not (tmp_path / "pool").exists()


@given(st.sampled_from(list(PoolKind)), st.integers(1, 64), st.integers(1, 1 << 15))
def test_a_chunk_holds_one_engine_call_of_sequences_for_every_g(kind, g, sequences_per_call):
    per_doc = 1 if kind == PoolKind.SAMPLE else g  # rephrase: n=G samples; thoughts: G prompts
    docs = chunk_docs_for(kind, g, sequences_per_call)
    assert docs >= 1
    assert docs * per_doc <= sequences_per_call or docs == 1  # within the call
    assert (docs + 1) * per_doc > sequences_per_call  # and as full as whole documents make it


def test_small_g_fills_the_engine_like_the_paper_s_g_32():
    h100 = 16 * 1024  # 16 x vLLM's default max_num_seqs on an H100/H200
    for g in (1, 2, 4, 8, 16, 32):
        assert chunk_docs_for(PoolKind.REPHRASE, g, h100) * g == h100
    assert chunk_docs_for(PoolKind.REPHRASE, 32, h100) == 512  # what the fixed default gave G=32


PLANNED_VS_VLLM = """
import json, sys
from gen.engines import planned_context_length
from vllm.transformers_utils.config import get_config
out = []
for model, revision in json.loads(sys.argv[1]):
    vllm = get_config(model, trust_remote_code=False, revision=revision).max_position_embeddings
    out.append([planned_context_length("vllm", model, None, revision), vllm,
                planned_context_length("transformers", model, None, revision)])
print(json.dumps(out))
"""


@pytest.mark.vllm
@pytest.mark.slow  # importing vLLM in a fresh process: ~20-50 s on 2 loaded cores
def test_the_early_context_check_reads_the_revision_vllm_reads(tmp_path):
    """A model with two revisions in the Hugging Face cache layout (refs/ naming snapshots/),
    read offline: the context planned before the engine starts is the config of the revision
    given (vLLM's own config reader, imported without starting an engine, is the reference); for
    a model directory both ignore the revision."""
    from transformers import LlamaConfig

    repo = tmp_path / "hub" / "models--local--tiny"
    shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 1}
    for ref, commit, context in (("main", "a" * 40, 2048), ("short", "b" * 40, 256)):
        LlamaConfig(max_position_embeddings=context, **shape).save_pretrained(repo / "snapshots" / commit)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    directory = repo / "snapshots" / ("a" * 40)
    asked = [["local/tiny", None], ["local/tiny", "short"], ["local/tiny", "b" * 40], [str(directory), "short"]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", PLANNED_VS_VLLM, json.dumps(asked)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = json.loads(done.stdout.strip().splitlines()[-1])
    assert planned == [[2048] * 3, [256] * 3, [256] * 3, [2048] * 3]


@pytest.mark.parametrize("gen_index", [10**12, 2, -1])
def test_load_shard_refuses_a_row_whose_gen_index_is_outside_the_pool_s_g(gen_index, tmp_path):
    """A hand-edited gen_index of 10**12 made a 10**12-bit mask (MemoryError), -1 a negative shift
    (ValueError): one line naming the file, line and document instead, the shard left as it was."""
    path = tmp_path / "shard-00000-of-00001.jsonl"
    rows = [{"doc_id": "a", "gen_index": 0, "text": "a0"}, {"doc_id": "b", "gen_index": gen_index, "text": "b?"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before = path.read_bytes()
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:2: document 'b': gen_index {gen_index} is "
                                        r"outside 0\.\.1 \(the pool's G is 2\)"):
        pool_format.load_shard(path, g=2)
    assert path.read_bytes() == before


def _below_each_bound(kind: str):
    """(flag, a value under its field's lower bound) for each option of ``gen KIND`` that fills a
    bounded GenerateOptions field (the record's own constraints, its flags as argparse spells them)."""
    from gen.generate import GenerateOptions
    from megadocs.cli import option_flags

    for dest, flag in option_flags(command_parser("gen", kind)).items():
        field = GenerateOptions.model_fields.get(dest)
        for constraint in field.metadata if field is not None else ():
            ge, gt = getattr(constraint, "ge", None), getattr(constraint, "gt", None)
            if ge is not None or gt is not None:
                below = (ge - 1 if ge is not None else gt) if field.annotation is not float else (
                    ge - 0.5 if ge is not None else gt)
                yield flag, str(below) if dest != "shard" else f"{below}/2"


@pytest.mark.parametrize(("kind", "flag", "value"), [(kind, *case) for kind in ("rephrase", "sample")
                                                     for case in _below_each_bound(kind)])
def test_a_bad_generation_option_names_the_flag_typed_and_a_config_names_its_key(kind, flag, value, tmp_path,
                                                                                    capsys):
    """`gen rephrase --g 0` said ``gen rephrase: g: ...`` (GenerateOptions' field), not the flag."""
    from gen.generate import GenerateOptions
    from megadocs.cli import main
    from megadocs.config import parse_config

    needed = ["--corpus", "docs.jsonl", "--g", "2"] if kind != "sample" else ["--n-docs", "2"]
    argv = ["gen", kind, *needed, "--generator", "gen-model", "--out", str(tmp_path / "pool"), f"{flag}={value}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: ") and err.count("\n") == 1, err
    assert not (tmp_path / "pool").exists()
    # the same record read from a file keeps the file's key
    with pytest.raises(UserError, match=r"^gen\.yaml: g: "):
        parse_config({"kind": "rephrase", "docs": "d", "generator": "m", "g": 0, "out": "o"}, GenerateOptions,
                     source="gen.yaml")


def test_a_generation_check_across_options_names_the_flag_it_refuses(tmp_path, capsys):
    from megadocs.cli import main

    assert main(["gen", "rephrase", "--corpus", "docs.jsonl", "--generator", "m", "--g", "2", "--out",
                 str(tmp_path / "pool"), "--temperature", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --temperature: 0 (greedy decoding) gives one sample")
