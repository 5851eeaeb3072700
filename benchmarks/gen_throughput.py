"""Generation throughput: gen's pipeline against a bare ``LLM.chat`` on the same prompts and model.

Both sides share ONE loaded ``vllm.LLM`` and the same requests: the prompts gen builds for the
documents (WRAP rephrase, n=G) and the same ``SamplingParams`` (per-prompt seeds), so both
generate identical tokens and the ratio measures only what the pipeline adds: tokenising and
planning the documents, writing and fsyncing the rows, the manifest and shard markers. The
pipeline is timed end to end (``generate_pool`` into a fresh directory). Runs alternate
bare/pipeline ``--repeats`` times (alternating which goes first) without prefix caching (so no run reuses another's prompt KV
cache); the best of each is reported (the machine is shared).

Defaults fit < 3 minutes on 2 CPU cores with the tiny test generator (gen.tiny); on a GPU pass
``--generator`` (e.g. Llama 3.1 8B Instruct) and larger ``--n-docs``/``--max-new-tokens``.
The last stdout line is the JSON summary read by benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_RATIO = 0.95


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"CPU {os.cpu_count()} x {cpu}"


def _write_docs(path: Path, n_docs: int, chars: int) -> Path:
    from megadocs.corpus import iter_documents

    with open(path, "w") as handle:
        for doc in itertools.islice((d for d in iter_documents("stdlib") if len(d.text) >= chars), n_docs):
            handle.write(json.dumps({"id": doc.doc_id, "text": doc.text[:chars]}) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=None, help="HF model dir (default: a tiny random Llama)")
    parser.add_argument("--docs", default=None, help="document source (default: stdlib docstrings)")
    parser.add_argument("--n-docs", type=int, default=48)
    parser.add_argument("--doc-chars", type=int, default=1200)
    parser.add_argument("--g", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=4, help="even: each side goes first equally often")
    parser.add_argument("--enforce-eager", action="store_true", default=None,
                        help="default: on for CPU (compiling costs more than it saves here)")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from gen.engines import Sampling, VllmEngine
    from gen.generate import GenerateOptions, _Planner, generate_pool
    from gen.templates import load_template
    from gen.tiny import make_tiny_generator
    from megadocs.corpus import iter_documents

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generator = args.generator or str(make_tiny_generator(tmp / "tiny"))
        docs = args.docs or str(_write_docs(tmp / "docs.jsonl", args.n_docs, args.doc_chars))
        import torch

        eager = args.enforce_eager if args.enforce_eager is not None else not torch.cuda.is_available()
        started = time.perf_counter()
        # no prefix caching: a repeated run must not reuse the previous run's prompt KV cache
        engine = VllmEngine(generator, enforce_eager=eager, prefix_caching=False)
        startup_s = time.perf_counter() - started

        options = GenerateOptions(kind="rephrase", docs=docs, generator=generator, g=args.g, out=str(tmp / "x"),
                                  max_new_tokens=args.max_new_tokens, progress=False)
        planner = _Planner(options, load_template("rephrase"), engine)
        documents = list(iter_documents(docs))[: args.n_docs]
        requests = [request for doc in documents for request, _ in planner.plan(doc)]
        sampling = Sampling(max_new_tokens=args.max_new_tokens)
        engine.generate(requests, sampling)  # warm-up at full size (the first big call runs slower)

        def bare() -> tuple[int, float]:
            params = engine.sampling_params(requests, sampling)
            t0 = time.perf_counter()
            outputs = engine.llm.chat([r.messages for r in requests], params, use_tqdm=False,
                                      chat_template=engine.chat.template)
            elapsed = time.perf_counter() - t0
            return sum(len(c.token_ids) for o in outputs for c in o.outputs), elapsed

        def pipeline(run: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            manifest = generate_pool("rephrase", docs, generator, args.g, tmp / f"pool{run}", engine=engine,
                                     max_new_tokens=args.max_new_tokens, progress=False)
            elapsed = time.perf_counter() - t0
            overheads.append(elapsed - manifest["statistics"]["generation_seconds"])
            return manifest["statistics"]["output_tokens"], elapsed

        bare_runs, pipe_runs, overheads = [], [], []
        for run in range(args.repeats):  # alternate which side goes first
            if run % 2:
                pipe_runs.append(pipeline(run))
                bare_runs.append(bare())
            else:
                bare_runs.append(bare())
                pipe_runs.append(pipeline(run))
        engine.close()

    bare_tps = max(tokens / seconds for tokens, seconds in bare_runs)
    pipe_tps = max(tokens / seconds for tokens, seconds in pipe_runs)
    same_tokens = len({tokens for tokens, _ in bare_runs + pipe_runs}) == 1
    summary = {
        "name": "gen_throughput",
        "ratio": pipe_tps / bare_tps,
        "target": TARGET_RATIO,
        "meets_target": pipe_tps / bare_tps >= TARGET_RATIO,
        "pipeline_tokens_per_s": pipe_tps,
        "bare_llm_chat_tokens_per_s": bare_tps,
        "identical_output_tokens": same_tokens,
        "output_tokens": pipe_runs[0][0],
        "documents": len(documents),
        "g": args.g,
        "max_new_tokens": args.max_new_tokens,
        "model": "gen.tiny random Llama (hidden 128, 2 layers)" if args.generator is None else generator,
        "device": _device(),
        "engine_startup_s": startup_s,
        "repeats": args.repeats,
        "bare_runs_s": [round(seconds, 3) for _, seconds in bare_runs],
        "pipeline_runs_s": [round(seconds, 3) for _, seconds in pipe_runs],
        # time the pipeline spends outside the engine call (planning, writing, manifests)
        "pipeline_overhead_s": [round(seconds, 3) for seconds in overheads],
    }
    print(f"pipeline {pipe_tps:.0f} tok/s vs bare LLM.chat {bare_tps:.0f} tok/s: ratio {summary['ratio']:.3f} "
          f"(target >= {TARGET_RATIO}) on {summary['device']}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
