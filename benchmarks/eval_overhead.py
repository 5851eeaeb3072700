"""Cost of the periodic validation curve (`eval.every`) against the training it watches.

One run with the default curve settings (``every: 10/run``, ``curve_windows: 128``) logs each
evaluation's seconds (`eval_s`) and the training time (tokens_seen / tokens_per_s, which
excludes evaluation) in `log.jsonl`: the figure is ``train_s / (train_s + eval_s)`` of that one
run (target >= 0.95: the curve costs at most 5 % of training). The same config with
``every: 0`` is also run and the two runs' wall times compared (`wall_ratio`), which also
counts what the in-run figure cannot (the validation windows loaded once at the start); on a
shared machine that comparison is noisier.

Usage: ``python benchmarks/eval_overhead.py [--store DIR] [--epochs 4] [--context 256]``.
The last stdout line is a JSON summary for `benchmarks/run_all.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from megadocs.config import parse_config
from train.config import RunConfig
from train.loop import run

TARGET_RATIO = 0.95


def timed_run(config: RunConfig, out: Path) -> tuple[float, list[dict], dict]:
    start = time.perf_counter()
    metrics = run(config, out).to_json()
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return time.perf_counter() - start, lines, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="token store (default: a stdlib store prepared in a temp dir)")
    parser.add_argument("--preset", default="tiny-1m")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--every", default="10/run", help="eval.every of the measured run")
    parser.add_argument("--curve-windows", type=int, default=128)
    parser.add_argument("--skip-plain", action="store_true", help="only the in-run figure (no every: 0 run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    every = int(args.every) if args.every.isdigit() else args.every

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            from train.store import prepare

            store = Path(tmp) / "store"
            prepare("stdlib", store, vocab_size=512, val_docs=16, max_docs=160, seed=0)

        def config(curve_every) -> RunConfig:
            return parse_config({
                "data": {"store": str(store), "real_epochs": args.epochs, "context": args.context},
                "model": {"preset": args.preset},
                "optim": {"batch_size": args.batch, "micro_batch_size": args.micro_batch},
                "eval": {"val_windows": 1024, "every": curve_every, "curve_windows": args.curve_windows},
                "tracking": {"tensorboard": True},
                "checkpoint_every": 10**9,
                "device": args.device,
            }, RunConfig, source="benchmark")  # fmt: skip

        print("run with the curve ...", file=sys.stderr, flush=True)
        wall_curve, lines, metrics = timed_run(config(every), Path(tmp) / "curve")
        wall_plain = math.nan
        if not args.skip_plain:
            print("run without it ...", file=sys.stderr, flush=True)
            wall_plain, _, _ = timed_run(config(0), Path(tmp) / "plain")

    evaluations = [line for line in lines if "val_losses" in line]
    eval_s = sum(line["eval_s"] for line in evaluations)
    train_s = lines[-1]["tokens_seen"] / lines[-1]["tokens_per_s"]
    summary = {
        "name": "eval_overhead",
        "steps": metrics["steps"],
        "evaluations": len(evaluations),
        "curve_windows": min(args.curve_windows, 1024),
        "batch": args.batch,
        "context": args.context,
        "threads": torch.get_num_threads(),
        "train_s": train_s,
        "eval_s": eval_s,
        "ratio": train_s / (train_s + eval_s),
        "wall_with_curve_s": wall_curve,
        **({} if args.skip_plain else {"wall_without_s": wall_plain, "wall_ratio": wall_plain / wall_curve}),
        "target": TARGET_RATIO,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
