"""`megadocs train CONFIG.yaml [--out RUN] [--set key.path=value ...]`, `megadocs train --template`,
and `megadocs train ensemble ...` (dispatched to `train.ensemble`).

`ensemble` is a word in the place of CONFIG.yaml rather than an argparse sub-command, so that a
config path stays the plain positional; the words after it are parsed by the ensemble's own
parser (built from `train.ensemble.add_arguments`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from megadocs.errors import UserError
from megadocs.formats import RunDir

__all__ = ["register", "apply_overrides", "load_run_config", "DEFAULT_RUNS_DIR", "EXIT_PREEMPTED"]

DEFAULT_RUNS_DIR = Path("runs/train")
EXIT_PREEMPTED = 3
ENSEMBLE = "ensemble"
BENCHMARKS = "benchmarks"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", action="store_true", help="print a commented config and exit")
    parser.add_argument("--out", metavar="RUN", help="run directory (default: runs/train/<identity>)")
    parser.add_argument(
        "--reidentify", metavar="RUN",
        help="re-record RUN's identity from its config.yaml and today's data (for runs made before "
        "identities covered the data; only when its store and pool are unchanged)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (steps, tokens, FLOPs, memory, GPU-hours) and exit without training")
    parser.add_argument("--json", action="store_true", help="with --dry-run: the plan as one JSON object")
    parser.add_argument("--mfu", type=float, default=None,
                        help="with --dry-run: assumed model FLOPs utilisation (default 0.4, see train/plan.py)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="with --dry-run: device dense bf16 peak TFLOP/s (default 989, H100 SXM)")
    parser.add_argument("--memory-gib", type=float, default=None,
                        help="with --dry-run: device memory for micro_batch_size auto (default 80)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
        help="override a config field, e.g. --set optim.lr=0.001 (value parsed as YAML); repeatable",
    )  # fmt: skip


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model (or score an ensemble: `megadocs train ensemble --help`)",
        description="Train one model from a RunConfig YAML (see `megadocs train --template`). "
        "Exit status 3 means preempted: re-run the same command to resume.",
    )
    parser.add_argument("config", nargs="?", metavar="CONFIG.yaml", help="run config, or the word `ensemble`")
    _add_run_options(parser)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(func=_main, _train_parser=parser)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``key.path=value`` pairs (values parsed as YAML) in a nested config mapping."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set: expected KEY.PATH=VALUE, got {item!r}")
        parts = key.strip().split(".")
        target = data
        for part in parts[:-1]:
            child = target.get(part)
            if child is None:
                child = target[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: {part!r} is {child!r}, not a mapping of fields")
            target = child
        try:
            target[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"--set {key}: value {raw!r} is not valid YAML") from None
    return data


def load_run_config(path: str | Path, overrides: list[str] | None = None):
    """The validated RunConfig of a YAML file with `--set` overrides applied."""
    from megadocs.config import load_yaml, parse_config
    from train.config import RunConfig

    data = load_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return parse_config(apply_overrides(data, overrides or []), RunConfig, source=str(path))


def _ensemble(words: list[str]) -> int:
    try:
        from train import ensemble
    except ModuleNotFoundError as exc:
        if exc.name == "train.ensemble":
            raise UserError("megadocs train ensemble: train/ensemble.py is not installed in this checkout") from None
        raise
    parser = argparse.ArgumentParser(
        prog="megadocs train ensemble", description="Validation loss of logit-averaged ensembles, K = 1..N."
    )
    ensemble.add_arguments(parser)
    return ensemble.main(parser.parse_args(words))


def _benchmarks(words: list[str]) -> int:
    from train import downstream

    parser = argparse.ArgumentParser(
        prog="megadocs train benchmarks",
        description="Zero-shot PIQA/SciQ/ARC-Easy accuracy (lm-eval) of a model or a logit-averaged ensemble.",
    )
    downstream.add_arguments(parser)
    return downstream.main(parser.parse_args(words))


def _dry_run(config, args: argparse.Namespace) -> int:
    import json

    from train import plan

    result = plan.run_plan(
        config,
        mfu=plan.DEFAULT_MFU if args.mfu is None else args.mfu,
        peak_tflops=plan.H100_BF16_PEAK_TFLOPS if args.peak_tflops is None else args.peak_tflops,
        device_memory_gib=plan.DEFAULT_DEVICE_MEMORY_GIB if args.memory_gib is None else args.memory_gib,
    )
    sys.stdout.write(json.dumps(result, indent=1, allow_nan=False) + "\n" if args.json else plan.format_run_plan(result))
    return 0


def _reidentify(run_dir: Path) -> int:
    """Adopt a run made before identities covered the data: the user vouches its data is unchanged."""
    from train.loop import write_run_identity

    run = RunDir(run_dir)
    if not run.config.is_file():
        raise UserError(f"--reidentify: {run_dir}: no {RunDir.CONFIG} (expected a run directory)")
    config = load_run_config(run.config)
    old = run.config_hash.read_text().strip() if run.config_hash.is_file() else None
    identity = config.identity()
    write_run_identity(config, run_dir, identity)
    metrics = run.read_metrics()
    if metrics is not None:  # rewritten as standard JSON (an old file's NaN/Infinity become null)
        metrics.config_hash = identity
        metrics.save(run.metrics)
    print(f"{run_dir}: identity {old} -> {identity}")
    return 0


def _main(args: argparse.Namespace) -> int:
    if args.config == ENSEMBLE:
        return _ensemble(args.rest)
    if args.config == BENCHMARKS:
        return _benchmarks(args.rest)
    if args.rest:  # options written after CONFIG.yaml land in `rest`; parse them as run options
        late = argparse.ArgumentParser(prog="megadocs train CONFIG.yaml")
        _add_run_options(late)
        extra = late.parse_args(args.rest)
        args.out = extra.out or args.out
        args.overrides = args.overrides + extra.overrides
        args.template = args.template or extra.template
        for flag in ("dry_run", "json"):
            setattr(args, flag, getattr(args, flag) or getattr(extra, flag))
        for option in ("mfu", "peak_tflops", "memory_gib"):
            if getattr(extra, option) is not None:
                setattr(args, option, getattr(extra, option))
        args.reidentify = extra.reidentify or args.reidentify
    if args.reidentify:
        return _reidentify(Path(args.reidentify))
    if args.template:
        from train.config import template

        sys.stdout.write(template())
        return 0
    if not args.config:
        args._train_parser.print_usage(sys.stderr)
        print("error: CONFIG.yaml is required (or --template for a starting point)", file=sys.stderr)
        return 2

    config = load_run_config(args.config, args.overrides)
    if args.dry_run:
        return _dry_run(config, args)
    from train.loop import Preempted, run

    identity = config.identity()
    out = Path(args.out) if args.out else DEFAULT_RUNS_DIR / identity
    print(f"run {identity} -> {out}", file=sys.stderr)
    try:
        metrics = run(config, out)
    except Preempted as exc:
        print(f"preempted at step {exc.step}; checkpoint saved; re-run the same command to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    val = ", ".join(f"{name} {'-' if loss is None else f'{loss:.4f}'}" for name, loss in metrics.val_losses.items())
    print(f"{metrics.status}: {metrics.steps} steps, val loss {val} ({RunDir(out).metrics})")
    return 0
