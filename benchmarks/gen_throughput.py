"""Generation throughput: `megadocs gen rephrase` against vLLM with its own defaults, same prompts.

The two sides get the same chat requests (the WRAP rephrase prompts gen builds for the documents,
``n = G``, same temperature/top-p/max tokens) on the same model:

- **gen**: ``generate_pool`` end to end into a fresh pool directory, with the engine gen loads
  (``gen.generate.engine_for``: prefix caching on, chunked prefill off on CPU, per-prompt seeds)
  and its default chunks (``gen.generate.chunk_docs_for``); it includes tokenising and planning the
  documents, writing and fsyncing the rows, the manifest and the shard markers.
- **vllm defaults**: one ``LLM.chat`` call on ``vllm.LLM(generator)`` with vLLM's own defaults and
  unseeded ``SamplingParams(n=G)``, what a user of vLLM alone would run. On CPU it gets only what
  vLLM-CPU needs to run here: ``gpu_memory_utilization`` 0.3 (the share of host memory) and
  ``enforce_eager`` (compiling costs 40-100 s of start-up on 2 cores and does not change the
  generation speed measured here).

So the ratio shows everything gen's choices cost or save against vLLM: engine settings, seeds,
chunking, the pipeline (an earlier version gave both sides gen's engine settings, and so could not
see that gen ran rephrase without prefix caching, prefilling every prompt G times). Each side runs on its own engine, one after the other
(two engines do not fit one GPU at vLLM's default memory share): a warm-up call at full size, then
``--repeats`` timed runs, each after ``reset_prefix_cache()`` so that no run reuses an earlier
run's prompt KV; the best run of each side is reported (the machine may be shared). Outputs
differ (the seeds do), so each side's tokens are counted; with the tiny random model nearly every
sample runs to ``--max-new-tokens``.

Defaults fit < 3 minutes on 2 CPU cores with the tiny test generator (gen.tiny). On a GPU pass
``--generator`` (e.g. Llama 3.1 8B Instruct), ``--max-new-tokens 1024`` and enough documents to
fill several engine calls (``--n-docs 20000 --g 1`` shows whether small G keeps the engine full).
The last stdout line is the JSON summary read by benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_RATIO = 0.95


def _device() -> str:
    import torch

    from megadocs.provenance import cpu_name

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU {os.cpu_count()} x {cpu_name()}"


def _write_docs(path: Path, n_docs: int, chars: int) -> Path:
    from megadocs.corpus import iter_documents

    with open(path, "w") as handle:
        for doc in itertools.islice((d for d in iter_documents("stdlib") if len(d.text) >= chars), n_docs):
            handle.write(json.dumps({"id": doc.doc_id, "text": doc.text[:chars]}) + "\n")
    return path


def _best(runs: list[tuple[int, float]]) -> float:
    return max(tokens / seconds for tokens, seconds in runs)


def _vllm_defaults(generator: str, requests: list, sampling, chat_template: str | None,
                   repeats: int) -> tuple[dict, list[tuple[int, float]], float]:
    """vLLM alone: its defaults (plus what vLLM-CPU needs), one ``LLM.chat`` per run."""
    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    from gen.engines import CPU_GPU_MEMORY_UTILIZATION, resolved_settings

    cpu_needs = ({"gpu_memory_utilization": CPU_GPU_MEMORY_UTILIZATION, "enforce_eager": True}
                 if current_platform.is_cpu() else {})
    started = time.perf_counter()
    llm = LLM(generator, **cpu_needs)
    startup = time.perf_counter() - started
    params = SamplingParams(n=requests[0].n, temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_new_tokens)
    messages = [request.messages for request in requests]

    def run() -> tuple[int, float]:
        llm.reset_prefix_cache()
        t0 = time.perf_counter()
        outputs = llm.chat(messages, params, use_tqdm=False, chat_template=chat_template)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs), time.perf_counter() - t0

    run()  # warm-up at full size (the first big call runs slower)
    runs = [run() for _ in range(repeats)]
    settings = {**resolved_settings(llm), "startup_s": round(startup, 1)}
    llm.llm_engine.engine_core.shutdown()
    return settings, runs, startup


def _gen(options, engine, repeats: int, tmp: Path) -> tuple[list[tuple[int, float]], list[float]]:
    """gen's pipeline: ``generate_pool`` into a fresh pool per run; returns the runs and the
    seconds each spent outside the engine calls (planning, writing, manifests)."""
    from gen.generate import generate_pool

    runs, overheads = [], []
    for run in range(repeats + 1):  # run 0 is the warm-up
        engine.llm.reset_prefix_cache()
        t0 = time.perf_counter()
        manifest = generate_pool("rephrase", options.docs, options.generator, options.g, tmp / f"pool{run}",
                                 engine=engine, max_new_tokens=options.max_new_tokens, progress=False)
        elapsed = time.perf_counter() - t0
        if run:
            runs.append((manifest["statistics"]["output_tokens"], elapsed))
            overheads.append(round(elapsed - manifest["statistics"]["generation_seconds"], 3))
    return runs, overheads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=None, help="HF model dir (default: a tiny random Llama)")
    parser.add_argument("--docs", default=None, help="document source (default: stdlib docstrings)")
    parser.add_argument("--n-docs", type=int, default=48)
    parser.add_argument("--doc-chars", type=int, default=1200)
    parser.add_argument("--g", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    from gen.engines import Sampling
    from gen.generate import GenerateOptions, _Prompter, engine_for
    from gen.templates import load_template
    from gen.tiny import make_tiny_generator
    from megadocs.corpus import iter_documents

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generator = args.generator or str(make_tiny_generator(tmp / "tiny"))
        docs = args.docs or str(_write_docs(tmp / "docs.jsonl", args.n_docs, args.doc_chars))
        options = GenerateOptions(kind="rephrase", docs=docs, generator=generator, g=args.g, out=str(tmp / "x"),
                                  engine="vllm", max_new_tokens=args.max_new_tokens, progress=False)
        started = time.perf_counter()
        engine = engine_for(options)
        gen_startup = time.perf_counter() - started
        documents = list(iter_documents(docs))
        prompter = _Prompter(options, load_template("rephrase"), engine)
        requests = [request for doc in documents for request, _ in prompter.requests(doc)]
        gen_settings = {**engine.settings(), "startup_s": round(gen_startup, 1)}
        gen_runs, overheads = _gen(options, engine, args.repeats, tmp)
        chat_template = engine.chat.template
        engine.close()
        bare_settings, bare_runs, _ = _vllm_defaults(generator, requests, Sampling(max_new_tokens=args.max_new_tokens),
                                                     chat_template, args.repeats)

    gen_tps, bare_tps = _best(gen_runs), _best(bare_runs)
    summary = {
        "name": "gen_throughput",
        "ratio": gen_tps / bare_tps,
        "target": TARGET_RATIO,
        "meets_target": gen_tps / bare_tps >= TARGET_RATIO,
        "gen_tokens_per_s": gen_tps,
        "vllm_defaults_tokens_per_s": bare_tps,
        "gen_output_tokens": gen_runs[0][0],
        "vllm_defaults_output_tokens": bare_runs[0][0],
        "documents": len(documents),
        "g": args.g,
        "max_new_tokens": args.max_new_tokens,
        "model": "gen.tiny random Llama (hidden 128, 2 layers)" if args.generator is None else generator,
        "device": _device(),
        "gen_engine": gen_settings,
        "vllm_defaults_engine": bare_settings,
        "repeats": args.repeats,
        "gen_runs_s": [round(seconds, 3) for _, seconds in gen_runs],
        "vllm_defaults_runs_s": [round(seconds, 3) for _, seconds in bare_runs],
        # time gen spends outside the engine calls (planning, writing, manifests)
        "gen_overhead_s": overheads,
    }
    print(f"gen {gen_tps:.0f} tok/s vs vLLM defaults {bare_tps:.0f} tok/s: ratio {summary['ratio']:.3f} "
          f"(target >= {TARGET_RATIO}) on {summary['device']}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
