"""The real vLLM engine (CPU build) end to end: generation, SIGKILL + resume, Ctrl-C + resume,
sharding, provenance, split points, exact assembly for every algorithm, gen's engine settings.

Three vLLM start-ups in total (they dominate the runtime on 2 cores), shared by every test here:
1. the CLI `megadocs gen thoughts` in its own process group, SIGKILLed (the whole group, as a
   scheduler would) right after its first flushed chunk; a torn half line is then appended, as a
   kill in the middle of a write leaves;
2. the CLI `megadocs gen rephrase` with gen's default engine settings, sent SIGINT (the whole
   group, as a terminal's Ctrl-C is) once its first shard is done and the second has flushed a chunk;
   both signals land in that state by construction, not by timing (:func:`_signal_when`);
3. one script that loads the engine as the CLI does, resumes the killed pool, generates a rephrase
   pool one document per call, and resumes the interrupted pool with the default chunks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from megadocs.pools import pool_identity_of
from megadocs.procs import child_pids
from megadocs.shards import LOCK
from tests.gen.conftest import lock_waiters, read_rows, wait_for

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

G = 3
SHARDS = 2
RUN = {"num_shards": SHARDS, "chunk_docs": 1, "max_new_tokens": 24, "seed": 7, "progress": False,
       "enforce_eager": True}
ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 600


def _env() -> dict:
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT)}


def _descendants(pid: int) -> list[int]:
    found, todo = [], child_pids(pid)
    while todo:
        found.append(todo.pop())
        todo += child_pids(found[-1])
    return found


def _signal_each(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _flushed(rows: Path) -> bool:
    return rows.is_file() and rows.stat().st_size > 0


def _signal_when(process: subprocess.Popen, out: Path, signum: int, ready: Callable[[], bool]) -> None:
    """Send ``signum`` to the process's whole group (as a scheduler's kill or a terminal's Ctrl-C
    reaches it) as soon as ``ready()`` holds between two of the generator's writes, in a state
    made certain rather than raced; returns once the process has exited.

    The generator writes only under the pool's lock (:meth:`megadocs.shards.ShardedStep.writing`)
    and generates only while its engine processes run. The test holds the lock; each time the
    generator waits for it (a chunk in hand, its engine idle), the engine processes are stopped
    (SIGSTOP) and that one write is let through, so the generator moves one flush (or marker) per
    step, however loaded the machine. Once ``ready()``, the signal is sent with the lock held
    until the process has exited: it cannot write anything more."""
    lock_path, ended = out / LOCK, lambda: process.poll() is not None
    wait_for(lambda: lock_path.is_file() or ended(), STARTUP_TIMEOUT_S, "the pool's lock file")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        while True:
            wait_for(lambda: process.pid in lock_waiters(lock_path) or ended(), STARTUP_TIMEOUT_S,
                     "the generator's next write")
            if ended():
                return  # exited on its own: the test's assertions say how
            engine = _descendants(process.pid)
            _signal_each(engine, signal.SIGSTOP)
            fcntl.flock(lock, fcntl.LOCK_UN)
            wait_for(lambda: process.pid not in lock_waiters(lock_path) or ended(), STARTUP_TIMEOUT_S,
                     "the generator to take the lock")
            fcntl.flock(lock, fcntl.LOCK_EX)  # after its write (or before it: then the next step lets it through)
            signalled = ready()
            if signalled:
                os.killpg(process.pid, signum)
            _signal_each(engine, signal.SIGCONT)
            if signalled:
                process.wait(timeout=STARTUP_TIMEOUT_S)
                return


def _interrupt_after_first_shard(generator, docs, out: Path, log_path: Path) -> dict:
    """`megadocs gen rephrase` (gen's defaults, no engine flags) sent SIGINT, as Ctrl-C sends it to
    the terminal's whole foreground group, once shard 0 is done and shard 1 has flushed a chunk."""
    command = [sys.executable, "-m", "megadocs.cli", "gen", "rephrase", "--docs", str(docs), "--generator",
               str(generator), "--g", str(G), "--out", str(out), "--num-shards", str(SHARDS), "--chunk-docs", "1",
               "--max-new-tokens", "24", "--seed", "7", "--no-progress"]
    with open(log_path, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=_env(), text=True,
                                   start_new_session=True)
        second = out / f"shard-00001-of-{SHARDS:05d}"
        try:
            _signal_when(process, out, signal.SIGINT,
                         lambda: _flushed(Path(f"{second}.jsonl")) and not Path(f"{second}.done").exists())
            stdout, _ = process.communicate(timeout=STARTUP_TIMEOUT_S)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return {"returncode": process.returncode, "stdout": stdout, "stderr": log_path.read_text(),
            "done": sorted(p.name for p in out.glob("*.done")), "rows": read_rows(out)}


@pytest.fixture(scope="module")
def pools(tmp_path_factory, tiny_generator, small_docs):
    base = tmp_path_factory.mktemp("vllm")
    thoughts, rephrase, interrupted = base / "thoughts", base / "rephrase", base / "interrupted"
    log = open(base / "killed.log", "w")
    command = [sys.executable, "-m", "megadocs.cli", "gen", "thoughts", "--docs", str(small_docs),
               "--generator", str(tiny_generator), "--g", str(G), "--out", str(thoughts),
               "--engine", "vllm", "--num-shards", str(SHARDS), "--chunk-docs", "1",
               "--max-new-tokens", "24", "--seed", "7", "--enforce-eager", "--no-progress"]
    process = subprocess.Popen(command, stdout=log, stderr=log, env=_env(), start_new_session=True)
    first = thoughts / "shard-00000-of-00002.jsonl"
    try:
        _signal_when(process, thoughts, signal.SIGKILL, lambda: _flushed(first))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    killed = {
        "rows": len(read_rows(thoughts)),
        "done": sorted(p.name for p in thoughts.glob("*.done")),
        "returncode": process.returncode,
    }
    with open(first, "a") as handle:
        handle.write('{"doc_id": "torn", "gen_index": 0, "te')  # a write cut by the kill

    ctrl_c = _interrupt_after_first_shard(tiny_generator, small_docs, interrupted, base / "interrupted.log")

    options = json.dumps({"g": G, "run": RUN})
    settings = base / "settings.json"
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("vllm_pools.py")), str(tiny_generator),
                             str(small_docs), str(thoughts), str(rephrase), options, str(interrupted),
                             str(settings)],
                            env=_env(), capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"thoughts": thoughts, "rephrase": rephrase, "interrupted": interrupted, "killed": killed,
            "ctrl_c": ctrl_c, "settings": json.loads(settings.read_text()), "docs": small_docs,
            "generator": tiny_generator}


def _source(docs_path):
    from megadocs.corpus import iter_documents

    return list(iter_documents(docs_path))


def test_kill_left_a_partial_pool(pools):
    killed = pools["killed"]
    assert killed["returncode"] == -signal.SIGKILL
    assert killed["rows"] >= 1, "the kill came before anything was flushed"
    assert len(killed["done"]) < SHARDS, "the kill came after the pool was complete"


def test_ctrl_c_is_one_line_exit_130_and_keeps_what_was_done(pools):
    ctrl_c = pools["ctrl_c"]
    assert ctrl_c["returncode"] == 130, ctrl_c["stderr"][-3000:]
    assert "interrupted: re-run the same command to resume" in ctrl_c["stderr"]
    assert "Traceback" not in ctrl_c["stderr"] and "ERROR" not in ctrl_c["stderr"], ctrl_c["stderr"][-3000:]
    assert ctrl_c["stdout"] == ""  # vLLM logs to stderr, and there is no result to print
    assert ctrl_c["done"] == [f"shard-00000-of-{SHARDS:05d}.done"], "interrupted too early or too late"
    first, second = ([r for r in ctrl_c["rows"] if r["_shard"].startswith(f"shard-{i:05d}")] for i in range(SHARDS))
    assert len(second) >= G and len(second) % G == 0  # flushed chunks, whole documents
    # nothing done before the interrupt was lost or redone: the resumed pool starts with those rows
    resumed = read_rows(pools["interrupted"])
    assert resumed[:len(first)] == first
    assert [r for r in resumed if r["_shard"] == second[0]["_shard"]][:len(second)] == second


def test_engine_settings_and_chunks_do_not_change_the_pool(pools):
    """gen's default engine (prefix caching on for every kind, eager on CPU) as the CLI loads it;
    a pool generated one document per call equals one interrupted and resumed in default chunks."""
    assert pools["settings"]["prefix_caching"] is True
    assert pools["settings"]["enforce_eager"] is True  # vLLM on CPU
    assert pools["settings"]["chunked_prefill"] is False  # vLLM-CPU cannot resume seeded requests after one

    def content(pool):
        return sorted((r["doc_id"], r["gen_index"], r["text"], r["n_tokens"], r["request_seed"]) for r in read_rows(pool))

    assert content(pools["interrupted"]) == content(pools["rephrase"])
    # engine settings and chunks are not part of a pool's identity: the CLI's pool is the script's
    interrupted, rephrase = (json.loads((pools[k] / "manifest.json").read_text()) for k in ("interrupted", "rephrase"))
    assert pool_identity_of(interrupted) == pool_identity_of(rephrase)


@pytest.mark.parametrize("kind", ["thoughts", "rephrase"])
def test_exactly_g_generations_per_document_no_duplicates(pools, kind):
    rows = read_rows(pools[kind])
    source = _source(pools["docs"])
    by_doc = {}
    for row in rows:
        by_doc.setdefault(row["doc_id"], []).append(row["gen_index"])
    assert set(by_doc) == {doc.doc_id for doc in source}
    assert all(sorted(indices) == list(range(G)) for indices in by_doc.values()), by_doc
    assert len(rows) == G * len(source)
    manifest = json.loads((pools[kind] / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["statistics"]["documents"] == len(source)
    assert manifest["statistics"]["generations"] == G * len(source)
    assert sorted(p.name for p in pools[kind].glob("*.done")) == [
        f"shard-{i:05d}-of-{SHARDS:05d}.done" for i in range(SHARDS)]


@pytest.mark.parametrize("kind", ["thoughts", "rephrase"])
def test_shard_assignment_is_source_position_mod_n(pools, kind):
    rows = read_rows(pools[kind])
    position = {doc.doc_id: k for k, doc in enumerate(_source(pools["docs"]))}
    for row in rows:
        assert row["_shard"] == f"shard-{position[row['doc_id']] % SHARDS:05d}-of-{SHARDS:05d}.jsonl"
    # and within a shard, documents appear in source order (assembly streams on this)
    for shard in range(SHARDS):
        order = [position[r["doc_id"]] for r in rows if r["_shard"].startswith(f"shard-{shard:05d}")]
        assert order == sorted(order)


@pytest.mark.parametrize("kind", ["thoughts", "rephrase"])
def test_provenance_and_statistics(pools, kind):
    import hashlib

    from gen.templates import DEFAULT_TEMPLATES, PROMPTS_DIR

    template_sha = hashlib.sha256((PROMPTS_DIR / DEFAULT_TEMPLATES[kind]).read_bytes()).hexdigest()
    manifest = json.loads((pools[kind] / "manifest.json").read_text())
    rows = read_rows(pools[kind])
    assert manifest["kind"] == kind and manifest["g"] == G and manifest["seed"] == 7
    assert manifest["prompt_template"]["sha256"] == template_sha
    assert "arXiv" in manifest["prompt_template"]["source"]
    assert manifest["chat_template"]["kind"] == "tokenizer"
    assert manifest["generator"] == str(Path(pools["generator"]).resolve())
    assert manifest["sampling"] == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 24}
    for row in rows:
        assert row["prompt_sha256"] == template_sha
        assert row["generator"] == manifest["generator"]
        assert row["generator_revision"] == manifest["generator_revision"]
        assert row["sampling"] == manifest["sampling"] and row["seed"] == 7
        assert row["engine"] == "vllm"
        assert row["finish_reason"] in ("stop", "length")
        assert 1 <= row["n_tokens"] <= 24
        assert row["finish_reason"] == "stop" or row["n_tokens"] == 24
    stats = manifest["statistics"]
    assert stats["empty_outputs"] == sum(not r["text"].strip() for r in rows)
    assert stats["length_truncated"] == sum(r["finish_reason"] == "length" for r in rows)
    assert stats["mean_tokens"] == pytest.approx(sum(r["n_tokens"] for r in rows) / len(rows))
    assert stats["tokens_per_s"] > 0
    # the 7000-character document does not fit the 2048-token context with its prompt
    truncated = {r["doc_id"] for r in rows if r["prompt_truncated"]}
    assert truncated == {"long-doc"}
    expected = 1 if kind == "rephrase" else sum(r["prompt_truncated"] for r in rows)
    assert stats["truncated_prompts"] == expected


def test_rephrase_samples_of_one_prompt_differ(pools):
    rows = read_rows(pools["rephrase"])
    texts = {}
    for row in rows:
        texts.setdefault(row["doc_id"], set()).add(row["text"])
    assert sum(len(t) == G for t in texts.values()) >= len(texts) - 1  # n=G distinct samples


def test_thought_split_points_cut_g_plus_1_equal_token_pieces(pools):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pools["generator"])
    source = {doc.doc_id: doc.text for doc in _source(pools["docs"])}
    for row in read_rows(pools["thoughts"]):
        text = source[row["doc_id"]]
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        n = len(encoding["input_ids"])
        k = row["split_index"] + 1
        assert row["split_index"] == row["gen_index"]
        assert row["split_token"] == k * n // (G + 1)
        expected_char = encoding["offset_mapping"][row["split_token"]][0] if row["split_token"] < n else len(text)
        assert row["split_char"] == expected_char


def _assembled(pool, algorithm, g):
    from gen.assemble import assemble

    manifest = assemble(pool, algorithm, g)
    path = Path(pool) / "assembled" / f"{algorithm}-g{g}" / "documents.jsonl"
    return manifest, [json.loads(line) for line in path.read_text().splitlines()]


def _rows_by_doc(pool):
    by_doc = {}
    for row in read_rows(pool):
        by_doc.setdefault(row["doc_id"], {})[row["gen_index"]] = row
    return by_doc


@pytest.mark.parametrize("algorithm", ["simple", "stitched", "stitched-first", "stitched-none"])
@pytest.mark.parametrize("g", [G, 2])
def test_rephrase_assembly_is_exact(pools, algorithm, g):
    manifest, documents = _assembled(pools["rephrase"], algorithm, g)
    by_doc = _rows_by_doc(pools["rephrase"])
    expected, excluded = [], 0
    for doc in _source(pools["docs"]):
        rephrases = [by_doc[doc.doc_id][j]["text"] for j in range(g)]
        kept = [t for t in rephrases if t.strip()]
        excluded += len(rephrases) - len(kept)
        if algorithm == "simple":
            expected += [[t] for t in kept] + [[doc.text]]
        else:
            expected.append({"stitched": kept + [doc.text], "stitched-first": [doc.text] + kept,
                             "stitched-none": kept}[algorithm])
    expected = [segments for segments in expected if segments]
    assert [d["segments"] for d in documents] == expected
    assert manifest["excluded_empty"] == excluded
    assert manifest["documents"] == len(documents)
    assert manifest["generation_indices"] == list(range(g))
    if algorithm == "simple":  # G*D rephrases + D real documents (minus empties)
        n_docs = len(_source(pools["docs"]))
        assert len(documents) == g * n_docs + n_docs - excluded
        assert sum(d["doc_id"] == d["source_doc_id"] for d in documents) == n_docs


@pytest.mark.parametrize("g,splits", [(G, [0, 1, 2]), (1, [1])])
def test_latent_assembly_inserts_thoughts_at_split_points(pools, g, splits):
    manifest, documents = _assembled(pools["thoughts"], "latent", g)
    by_doc = _rows_by_doc(pools["thoughts"])
    assert manifest["generation_indices"] == splits
    for doc, assembled in zip(_source(pools["docs"]), documents, strict=True):
        assert assembled["source_doc_id"] == doc.doc_id and len(assembled["segments"]) == 1
        expected, last = "", 0
        for index in splits:
            row = by_doc[doc.doc_id][index]
            expected += doc.text[last:row["split_char"]]
            if row["text"].strip():
                expected += "<think>" + row["text"] + "</think>"
            last = row["split_char"]
        assert assembled["segments"][0] == expected + doc.text[last:]


def test_thoughts_pool_refuses_g_with_other_split_points(pools):
    from gen.assemble import assemble
    from megadocs.errors import UserError

    with pytest.raises(UserError, match=r"split points only for G in \[1, 3\]"):
        assemble(pools["thoughts"], "latent", 2)
    with pytest.raises(UserError, match="needs a rephrase pool"):
        assemble(pools["thoughts"], "stitched", 1)
    with pytest.raises(UserError, match="at most 3"):
        assemble(pools["rephrase"], "simple", 4)


def test_rerun_of_a_complete_pool_is_a_no_op(pools):
    before = {p.name: p.read_bytes() for p in pools["rephrase"].glob("shard-*")}
    result = subprocess.run([sys.executable, "-m", "megadocs.cli", "gen", "rephrase", "--docs", str(pools["docs"]),
                             "--generator", str(pools["generator"]), "--g", str(G), "--out",
                             str(pools["rephrase"]), "--num-shards", str(SHARDS), "--max-new-tokens", "24",
                             "--seed", "7", "--chunk-docs", "1", "--no-progress"],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vllm" not in result.stderr.lower()  # the engine was never loaded
    assert json.loads(result.stdout.splitlines()[-1])["generations"] == G * len(_source(pools["docs"]))
    assert {p.name: p.read_bytes() for p in pools["rephrase"].glob("shard-*")} == before


KILLED_OWNER = """
import json, os, signal, sys
import psutil
from gen.engines import VllmEngine

if __name__ == "__main__":
    engine = VllmEngine(sys.argv[1], max_model_len=256, enforce_eager=True)
    print("PIDS", json.dumps([child.pid for child in psutil.Process().children()]), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer or `kill -9 PID` does: no cleanup runs
"""


def test_engine_processes_do_not_outlive_a_sigkilled_owner(tiny_generator, tmp_path):
    """vLLM's engine core does not watch its parent: without gen's reaper it lives on after a
    SIGKILL of the process alone (not its group), holding its share of GPU memory, and a re-run
    on that GPU cannot start."""
    import psutil

    script = tmp_path / "owner.py"
    script.write_text(KILLED_OWNER)
    out = tmp_path / "owner.out"  # a file, not a pipe: an orphan would hold a pipe open
    with open(out, "w") as stdout:
        done = subprocess.run([sys.executable, str(script), str(tiny_generator)], env=_env(), stdout=stdout,
                              stderr=subprocess.STDOUT, timeout=STARTUP_TIMEOUT_S)
    assert done.returncode == -signal.SIGKILL, out.read_text()[-2000:]
    pids = json.loads(next(line[5:] for line in out.read_text().splitlines() if line.startswith("PIDS ")))
    # the reaper may be ending them right now: one gone between two looks is no error (psutil's
    # Process also tells a reused pid from the process it named)
    children = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            children.append(psutil.Process(pid))
    try:
        _, alive = psutil.wait_procs(children, timeout=120)
        assert not alive, [p.pid for p in alive]
    finally:
        for child in children:  # the old behaviour's orphans: not left behind by the test
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def test_a_max_model_len_vllm_refuses_is_one_line(tiny_generator, docs4, tmp_path):
    """vLLM refuses a --max-model-len above the context it derives from the config (2048 here) at
    its start, as a pydantic traceback (exit 1); gen says it in one line (exit 2). The pool holds
    only its manifest, which a corrected re-run replaces."""
    done = subprocess.run([sys.executable, "-m", "megadocs", "gen", "rephrase", "--corpus", str(docs4), "--generator",
                           str(tiny_generator), "--g", "1", "--out", str(tmp_path / "pool"), "--engine", "vllm",
                           "--max-model-len", "4096", "--no-progress"], env=_env(), capture_output=True, text=True,
                          timeout=STARTUP_TIMEOUT_S, cwd=ROOT)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --max-model-len: 4096: vLLM refused it: ") and "4096" in last, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
