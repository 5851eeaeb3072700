"""The synthetic data path at the paper's size: the tokenize step against the bare batch encoder,
the memory peak of each stage, and the CPU-hours and disk extrapolated to 164k documents, G = 32.

At two or three pool sizes (real stdlib text cut into DCLM-like documents, generations of about
700 tokens like the paper's rephrases, thoughts of about 420 like its latent thoughts, written in
the pool's on-disk format) it measures, each stage in a fresh process so its peak RSS is its own:

- ``throughput``: ``train.pool_tokens.tokenize_pool`` (stream rows, encode, write) in tokens/s per
  core, against the ``tokenizers`` batch encoder alone on the same texts already in memory, same
  cores, same batch size, alternately, best of ``REPEATS`` each (target ratio >= 0.8);
  ``tokenize``: the step once more, for its memory peak;
- ``latent``: the tokenize step on a thoughts pool of G = ``THOUGHTS_G`` (every latent document,
  real text with its thoughts inserted, tokenized whole for each G' the pool serves): tokens per
  CPU-second and bytes on disk per token, which the paper's latent pools are extrapolated from;
- ``load_shard``: reading a finished shard at the end of generation (``megadocs.pools.load_shard``,
  streaming) against the previous whole-file reader (kept here as the baseline);
- ``index``: the training job's stream setup from the tokenized pools (stitched and simple at the
  pool's G and at G/2, latent at G) and its first batch: memory maps only; ``todays``: the path
  before the tokenize step for one (stitched, G): ``gen assemble`` then tokenizing the assembled
  text in the training process (kept here as the baseline, :func:`_tokenize_assembled`);
- ``fingerprint`` (once, not per size): sha256 of a ``FINGERPRINT_MB`` file through
  ``megadocs.fingerprint`` (a generator's content fingerprint), MB per CPU-second, extrapolated to
  a Llama 3.1 8B directory (16 GB of safetensors).

Run: ``python benchmarks/data_scale.py`` (the last stdout line is the JSON summary).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = tuple(int(n) for n in os.environ.get("DATA_SCALE_SIZES", "300,900,1800").split(","))
"""Real documents per pool (env DATA_SCALE_SIZES overrides, e.g. for a quick check)."""
G = 8
GEN_CHARS = 2600  # ~700 tokens of a 32k-vocabulary BPE on English text
THOUGHTS_G = 7  # serves G' in {1, 3, 7}
THOUGHT_CHARS = 1600  # ~420 tokens
VOCAB = 8192
BATCH_ROWS = 1024
REPEATS = 2
FINGERPRINT_MB = 512
GENERATOR_GB = 16.06  # Llama 3.1 8B Instruct: 4 safetensors files, 8.03e9 bf16 parameters
PAPER = {"documents": 164_000, "g_values": [1, 2, 4, 8, 16, 32], "pool_g": 32,
         "synthetic_tokens_g32": 3.7e9, "real_tokens": 0.2e9, "thought_tokens": 424}
THINK_TAG_TOKENS = 4  # <think> and </think> (a Llama 3 tokenizer splits each into 2-3 tokens)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _corpus_text() -> str:
    from megadocs.corpus import iter_documents

    return "\n\n".join(doc.text for doc in iter_documents("stdlib"))


def build(root: Path, documents: int) -> dict:
    """A token store of ``documents`` real documents and a complete G-rephrase pool from it."""
    from train.store import prepare

    text = _corpus_text()
    corpus = root / "corpus.jsonl"
    with open(corpus, "w") as handle:
        for k in range(documents + 50):
            start = (k * 7919) % (len(text) - 6000)
            handle.write(json.dumps({"id": f"doc-{k:07d}", "text": text[start:start + 1500 + (k * 131) % 4000]}) + "\n")
    store = prepare(corpus, root / "store", vocab_size=VOCAB, val_docs=50, seed=0)
    pool = root / "pool"
    pool.mkdir()
    from megadocs.corpus import source_hash

    (pool / "manifest.json").write_text(json.dumps({
        "format": "megadocs.gen-pool/1", "kind": "rephrase", "g": G, "source": str(store.path),
        "source_hash": source_hash(store.path), "n_docs": None, "num_shards": 1, "complete": True}))
    stem = "shard-00000-of-00001"
    with open(pool / f"{stem}.jsonl", "w") as handle:
        for k, doc in enumerate(store.split("train").documents()):
            for i in range(G):
                start = (k * 104_729 + i * 15_485) % (len(text) - GEN_CHARS)
                row = {"doc_id": doc.doc_id, "gen_index": i, "text": text[start:start + GEN_CHARS],
                       "finish_reason": "stop", "n_tokens": 700, "prompt_truncated": False}
                handle.write(json.dumps(row) + "\n")
    (pool / f"{stem}.done").write_text("{}")
    thoughts = root / "thoughts"
    thoughts.mkdir()
    (thoughts / "manifest.json").write_text(json.dumps({
        "format": "megadocs.gen-pool/1", "kind": "thoughts", "g": THOUGHTS_G, "source": str(store.path),
        "source_hash": source_hash(store.path), "n_docs": None, "num_shards": 1, "complete": True}))
    with open(thoughts / f"{stem}.jsonl", "w") as handle:
        for k, doc in enumerate(store.split("train").documents()):
            for i in range(THOUGHTS_G):
                start = (k * 7_919 + i * 104_729) % (len(text) - THOUGHT_CHARS)
                row = {"doc_id": doc.doc_id, "gen_index": i, "split_index": i, "split_token": 0,
                       "split_char": (i + 1) * len(doc.text) // (THOUGHTS_G + 1),
                       "text": text[start:start + THOUGHT_CHARS], "finish_reason": "stop", "n_tokens": 420}
                handle.write(json.dumps(row) + "\n")
    (thoughts / f"{stem}.done").write_text("{}")
    return {"store": str(store.path), "pool": str(pool), "thoughts": str(thoughts),
            "shard_bytes": (pool / f"{stem}.jsonl").stat().st_size}


def _old_load_shard(path: Path, g: int) -> dict:
    """The whole-file reader generation used before (baseline for the memory figure)."""
    raw = path.read_bytes()
    by_doc: dict = {}
    order = []
    for line in raw.split(b"\n"):
        if line.strip():
            row = json.loads(line)
            if row["doc_id"] not in by_doc:
                order.append(row["doc_id"])
            by_doc.setdefault(row["doc_id"], {}).setdefault(int(row["gen_index"]), row)
    complete = {doc: [rows[i] for i in range(g)] for doc, rows in by_doc.items() if set(rows) == set(range(g))}
    kept = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n"
                    for doc in order if doc in complete for row in complete[doc])
    assert len(kept) > 0
    return complete


def stage(name: str, store: str, pool: str, thoughts: str) -> dict:
    """One measurement, run in its own process (see :func:`_run_stage`)."""
    import tracemalloc

    import numpy as np

    from gen.assemble import assemble
    from megadocs.pools import load_shard
    from train.data import TrainingStreams
    from train.pool_tokens import tokenize_pool
    from train.store import TokenStore

    opened = TokenStore.open(store)
    encoder = opened.tokenizer().backend_tokenizer  # loaded before the clock in every stage
    shard = Path(pool) / "shard-00000-of-00001.jsonl"
    result: dict = {}
    base = _peak_mb()  # imports and the tokenizer: what every stage's process holds anyway
    if name == "throughput":
        # the step and the bare encoder alternately, best of REPEATS each: on a shared machine the
        # load drifts, and alternating exposes both to the same drift
        import shutil

        from train.pool_tokens import tokens_dir

        texts = [json.loads(line)["text"] for line in open(shard, "rb")]
        bare_s, step_s, bare_cpu, step_cpu = [], [], [], []
        for _ in range(REPEATS):
            started, cpu = time.perf_counter(), time.process_time()
            tokens = 0
            for i in range(0, len(texts), BATCH_ROWS):
                for encoding in encoder.encode_batch_fast(texts[i:i + BATCH_ROWS], add_special_tokens=False):
                    tokens += len(np.asarray(encoding.ids, dtype=np.uint32))
            bare_s.append(time.perf_counter() - started)
            bare_cpu.append(time.process_time() - cpu)
            shutil.rmtree(tokens_dir(pool, opened.tokenizer_hash), ignore_errors=True)
            started, cpu = time.perf_counter(), time.process_time()
            manifest = tokenize_pool(pool, store, progress=False)
            step_s.append(time.perf_counter() - started)
            step_cpu.append(time.process_time() - cpu)
            assert manifest["statistics"]["tokens"] == tokens, "the step and the bare encoder disagree"
        result = {"bare_s": min(bare_s), "step_s": min(step_s), "bare_cpu_s": min(bare_cpu),
                  "step_cpu_s": min(step_cpu), "tokens": tokens}
    elif name == "tokenize":
        import shutil

        from train.pool_tokens import tokens_dir

        shutil.rmtree(tokens_dir(pool, opened.tokenizer_hash), ignore_errors=True)
        started = time.perf_counter()
        manifest = tokenize_pool(pool, store, progress=False)
        result = {"seconds": time.perf_counter() - started, "tokens": manifest["statistics"]["tokens"]}
    elif name == "latent":
        import shutil

        from train.pool_tokens import tokens_dir

        shutil.rmtree(tokens_dir(thoughts, opened.tokenizer_hash), ignore_errors=True)
        started, cpu = time.perf_counter(), time.process_time()
        manifest = tokenize_pool(thoughts, store, progress=False)
        folder = tokens_dir(thoughts, opened.tokenizer_hash)
        result = {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
                  "tokens": manifest["statistics"]["rendered_tokens"], "served": manifest["rendered"]["latent"],
                  "disk_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file())}
    elif name in ("load_shard", "old_load_shard"):
        tracemalloc.start()
        started = time.perf_counter()
        (load_shard if name == "load_shard" else _old_load_shard)(shard, G)
        result = {"seconds": time.perf_counter() - started, "python_peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}
        tracemalloc.stop()
    elif name == "index":
        timings = {}
        tokenize_pool(thoughts, store, progress=False)  # before the clock: training only memory-maps
        for algorithm, source, g in [("stitched", pool, G), ("stitched", pool, G // 2), ("simple", pool, G),
                                     ("simple", pool, G // 2), ("latent", thoughts, THOUGHTS_G)]:
            started = time.perf_counter()
            streams = TrainingStreams.build(store, synthetic={"pool": source, "algorithm": algorithm, "g": g},
                                            context=1024, mixing_fraction=0.5, real_epochs=1, batch_size=16)
            streams.batch(0)
            timings[f"{algorithm}-g{g}"] = time.perf_counter() - started
        result = {"seconds": max(timings.values()), "per_stream_s": timings}
    elif name == "todays":
        started, cpu = time.perf_counter(), time.process_time()
        assemble(pool, "stitched", G)
        assembled = time.perf_counter()
        tokens = _tokenize_assembled(pool, "stitched", G, encoder)
        result = {"seconds": time.perf_counter() - started, "assemble_s": assembled - started,
                  "cpu_s": time.process_time() - cpu, "tokens": tokens}
    result.update(peak_mb=_peak_mb(), peak_over_start_mb=_peak_mb() - base)
    return result


def _tokenize_assembled(pool: str, algorithm: str, g: int, encoder, batch: int = 256) -> int:
    """The path before the tokenize step: every segment of ``gen assemble``'s text encoded in the
    training process, batch by batch; returns the tokens (segments EOS-joined, as training read them)."""
    from gen.assemble import assembled_documents

    tokens, segments = 0, []
    with open(assembled_documents(pool, algorithm, g), "rb") as handle:
        for line in handle:
            parts = [part for part in json.loads(line)["segments"] if part.strip()]
            tokens += len(parts) - 1 if parts else 0  # the EOS between segments
            segments += parts
            if len(segments) >= batch:
                tokens += sum(len(e.ids) for e in encoder.encode_batch(segments, add_special_tokens=False))
                segments = []
    return tokens + sum(len(e.ids) for e in encoder.encode_batch(segments, add_special_tokens=False))


def fingerprint_rate(root: Path) -> dict:
    """sha256 of a ``FINGERPRINT_MB`` file through megadocs.fingerprint (no cache): MB per CPU-second."""
    from megadocs.fingerprint import model_fingerprint

    model = root / "model"
    model.mkdir()
    with open(model / "model.safetensors", "wb") as handle:
        for _ in range(FINGERPRINT_MB):
            handle.write(os.urandom(1 << 20))
    started, cpu = time.perf_counter(), time.process_time()
    model_fingerprint(model, cache=False)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    return {"mb_per_s": FINGERPRINT_MB / seconds, "mb_per_cpu_s": FINGERPRINT_MB / cpu_s}


def _run_stage(name: str, built: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run([sys.executable, __file__, "--stage", name, built["store"], built["pool"], built["thoughts"]],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"stage {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def latent_tokens(documents: float, real_tokens: float, thought_tokens: float) -> float:
    """Tokens the tokenize step writes for the paper's latent pools: one pool per G, every latent
    document (the real text with its G' thoughts in their tags) once per G' the pool serves."""
    from megadocs.pools import served_gs

    return sum(real_tokens + documents * h * (thought_tokens + THINK_TAG_TOKENS)
               for g in PAPER["g_values"] for h in served_gs("thoughts", g))


def extrapolate(per_core_tokens_per_s: float, todays_per_core_tokens_per_s: float,
                latent_per_core_tokens_per_s: float, latent_disk_bytes_per_token: float) -> dict:
    """CPU-hours and disk for the paper's sweep (164k documents, G in 1..32, three algorithms)."""
    per_gen = PAPER["synthetic_tokens_g32"] / (PAPER["documents"] * PAPER["pool_g"])
    real = PAPER["real_tokens"]
    # one rephrase pool (G = 32) serves simple and stitched at every G; tokenized once
    step_tokens = PAPER["synthetic_tokens_g32"]
    latent = latent_tokens(PAPER["documents"], real, PAPER["thought_tokens"])
    # before: every (simple|stitched, G) assembly tokenized its whole text, real documents included
    old_tokens = sum(2 * (PAPER["documents"] * g * per_gen + real) for g in PAPER["g_values"])
    to_hours = 1 / 3600
    return {
        "tokens_per_generation": per_gen,
        "step_cpu_hours": step_tokens / per_core_tokens_per_s * to_hours,
        "step_disk_gb": (step_tokens * 4 + PAPER["documents"] * PAPER["pool_g"] * 8) / 1e9,
        "latent_tokens": latent,
        "latent_cpu_hours": latent / latent_per_core_tokens_per_s * to_hours,
        "latent_disk_gb": latent * latent_disk_bytes_per_token / 1e9,
        "before_simple_stitched_cpu_hours": old_tokens / todays_per_core_tokens_per_s * to_hours,
        "before_simple_stitched_disk_gb": old_tokens * 4 / 1e9,
        "work_saved_simple_stitched": old_tokens / step_tokens,
    }


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    rows = []
    for documents in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            built = build(Path(tmp), documents)
            measured = {name: _run_stage(name, built) for name in
                        ("throughput", "tokenize", "latent", "old_load_shard", "load_shard", "index", "todays")}
            shard_mb = built["shard_bytes"] / 2**20
            tokens = measured["throughput"]["tokens"]
            row = {
                "documents": documents, "g": G, "shard_mb": shard_mb, "tokens": tokens,
                "step_tokens_per_s_per_core": tokens / measured["throughput"]["step_s"] / cores,
                "bare_tokens_per_s_per_core": tokens / measured["throughput"]["bare_s"] / cores,
                "todays_tokens_per_s_per_core": measured["todays"]["tokens"] / measured["todays"]["seconds"] / cores,
                "todays_tokens_per_cpu_s": measured["todays"]["tokens"] / measured["todays"]["cpu_s"],
                "index_stream_setup_s": measured["index"]["seconds"],
                "peak_mb": {name: round(value["peak_over_start_mb"], 1) for name, value in measured.items()
                            if name != "throughput"},
                "load_shard_peak_over_shard": measured["load_shard"]["python_peak_mb"] / shard_mb,
                "old_load_shard_peak_over_shard": measured["old_load_shard"]["python_peak_mb"] / shard_mb,
            }
            # per CPU-second of the process (all its threads): what a core delivers when it is not
            # shared; the extrapolated CPU-hours use these
            row["step_tokens_per_cpu_s"] = tokens / measured["throughput"]["step_cpu_s"]
            row["bare_tokens_per_cpu_s"] = tokens / measured["throughput"]["bare_cpu_s"]
            row["latent_tokens_per_cpu_s"] = measured["latent"]["tokens"] / measured["latent"]["cpu_s"]
            row["latent_disk_bytes_per_token"] = measured["latent"]["disk_bytes"] / measured["latent"]["tokens"]
            row["latent_cpu_s_per_document"] = measured["latent"]["cpu_s"] / documents
            row["ratio"] = row["step_tokens_per_s_per_core"] / row["bare_tokens_per_s_per_core"]
            row["cpu_ratio"] = row["step_tokens_per_cpu_s"] / row["bare_tokens_per_cpu_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    largest = rows[-1]
    with tempfile.TemporaryDirectory() as tmp:
        hashing = fingerprint_rate(Path(tmp))
    print(json.dumps({
        "name": "data_scale",
        "ratio": largest["ratio"],
        "target": 0.8,
        "meets_target": largest["ratio"] >= 0.8,
        "cores": cores,
        "ratios_by_size": {row["documents"]: round(row["ratio"], 3) for row in rows},
        "cpu_time_ratio": largest["cpu_ratio"],
        "cpu_time_ratios_by_size": {row["documents"]: round(row["cpu_ratio"], 3) for row in rows},
        "step_tokens_per_cpu_s": largest["step_tokens_per_cpu_s"],
        "bare_tokens_per_cpu_s": largest["bare_tokens_per_cpu_s"],
        "todays_path_tokens_per_cpu_s": largest["todays_tokens_per_cpu_s"],
        "step_tokens_per_s_per_core": largest["step_tokens_per_s_per_core"],
        "bare_tokens_per_s_per_core": largest["bare_tokens_per_s_per_core"],
        "todays_path_tokens_per_s_per_core": largest["todays_tokens_per_s_per_core"],
        "index_stream_setup_s_by_size": {row["documents"]: round(row["index_stream_setup_s"], 3) for row in rows},
        "peak_mb_over_start_by_size": {row["documents"]: row["peak_mb"] for row in rows},
        "shard_mb_by_size": {row["documents"]: round(row["shard_mb"], 1) for row in rows},
        "load_shard_peak_over_shard_size": largest["load_shard_peak_over_shard"],
        "old_load_shard_peak_over_shard_size": largest["old_load_shard_peak_over_shard"],
        "latent_tokens_per_cpu_s_by_size": {row["documents"]: round(row["latent_tokens_per_cpu_s"]) for row in rows},
        "latent_cpu_s_per_document_by_size": {row["documents"]: round(row["latent_cpu_s_per_document"], 5)
                                              for row in rows},
        "latent_disk_bytes_per_token": largest["latent_disk_bytes_per_token"],
        "paper_extrapolation": {key: round(value, 2) for key, value in extrapolate(
            largest["step_tokens_per_cpu_s"], largest["todays_tokens_per_cpu_s"],
            largest["latent_tokens_per_cpu_s"], largest["latent_disk_bytes_per_token"]).items()},
        "fingerprint_mb_per_cpu_s": round(hashing["mb_per_cpu_s"]),
        "fingerprint_mb_per_s": round(hashing["mb_per_s"]),
        "fingerprint_8b_generator_cpu_s": round(GENERATOR_GB * 1000 / hashing["mb_per_cpu_s"], 1),
        "assumptions": f"paper: {PAPER}; latent pools G in {PAPER['g_values']}, each tokenized for every G' it "
                       f"serves; thoughts measured at G={THOUGHTS_G}; vocab {VOCAB} BPE; 8B generator "
                       f"{GENERATOR_GB} GB",
    }))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--stage":
        print(json.dumps(stage(*sys.argv[2:6])))
    else:
        main()
