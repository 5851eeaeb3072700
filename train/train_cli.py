"""`megadocs train CONFIG.yaml [--out RUN] [--set key.path=value ...]`, `megadocs train --template`,
and the commands `megadocs train ensemble ...` and `megadocs train benchmarks ...`.

`ensemble` and `benchmarks` are argparse sub-commands of `train` (listed by `megadocs train
--help`); any other first word is the CONFIG.yaml of a training run, so `megadocs train CONFIG.yaml`
stays the plain form (`_CommandsOrConfig` hands such a word to the hidden `run` parser).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from megadocs.cli import Destination, examples, flags_named
from megadocs.errors import UserError, WorkFailed
from megadocs.exits import Exit
from megadocs.formats import RunDir

__all__ = ["register", "apply_overrides", "load_run_config", "DEFAULT_RUNS_DIR"]

DEFAULT_RUNS_DIR = Path("runs/train")
RUN = "run"  # the hidden parser of `megadocs train CONFIG.yaml ...`


class _AnyWord(dict):
    """Accepted first words: the named commands, and any other word (a CONFIG.yaml path)."""

    def __contains__(self, word) -> bool:
        return True


class _CommandsOrConfig(argparse._SubParsersAction):
    """Sub-commands where a first word that names no command is the CONFIG.yaml of a run."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _AnyWord()  # only argparse's "invalid choice" check reads it

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values[0] not in self._name_parser_map:
            values = [RUN, *values]
        super().__call__(parser, namespace, values, option_string)


def _add_run_options(parser: argparse.ArgumentParser, *, late: bool = False) -> None:
    """The options of a run; ``late``: as written after CONFIG.yaml (``late_*``, merged in `_run`)."""
    prefix = "late_" if late else ""
    unset = {"default": argparse.SUPPRESS} if late else {}  # late: absent unless given
    parser.add_argument("--template", dest=prefix + "template", action="store_true",
                        help="print a commented config and exit", **unset)
    parser.add_argument("--out", dest=prefix + "out", action=Destination, folder=True, metavar="RUN",
                        help="run directory (default: runs/train/<identity>)", **unset)
    parser.add_argument(
        "--reidentify", dest=prefix + "reidentify", metavar="RUN",
        help="re-record RUN's identity from its config.yaml and today's data (for a run of this "
        "training revision whose recorded identity is stale; only when its store and pool are unchanged)",
        **unset,
    )  # fmt: skip
    parser.add_argument("--dry-run", dest=prefix + "dry_run", action="store_true", **unset,
                        help="print the plan (steps, tokens, FLOPs, memory, GPU-hours) and exit without training")
    parser.add_argument("--json", dest=prefix + "json", action="store_true", **unset,
                        help="with --dry-run: the plan as one JSON object")
    parser.add_argument("--mfu", dest=prefix + "mfu", type=float, **unset,
                        help="with --dry-run: assumed model FLOPs utilisation (default: measured in "
                        "benchmarks/results/gpu.json, else 0.4; see train/plan.py)")
    parser.add_argument("--peak-tflops", dest=prefix + "peak_tflops", type=float, **unset,
                        help="with --dry-run: device dense bf16 peak TFLOP/s (default: the measured GPU's, else 989, H100 SXM)")
    parser.add_argument("--gpu", dest=prefix + "gpu", metavar="TEXT", **unset,
                        help="with --dry-run: take the MFU and peak measured on the GPU whose name contains TEXT, "
                        "e.g. h100 (default: the slowest GPU measured, MFU x peak)")
    parser.add_argument("--memory-gib", dest=prefix + "memory_gib", type=float, **unset,
                        help="with --dry-run: device memory for micro_batch_size auto (default 80)")
    parser.add_argument("--processes", dest=prefix + "processes", type=int, **unset,
                        help="with --dry-run: data-parallel processes (GPUs) per run (default: WORLD_SIZE, else 1)")
    parser.add_argument("--scaling-efficiency", dest=prefix + "scaling_efficiency", type=float, **unset,
                        help="with --dry-run: assumed share of linear scaling for several processes (default 0.9)")
    parser.add_argument(
        "--set", dest=prefix + "overrides", action="append", metavar="KEY.PATH=VALUE",
        help="override a config field, e.g. --set optim.lr=0.001 (value parsed as YAML); repeatable",
        **(unset or {"default": []}),
    )  # fmt: skip


def register(subparsers) -> None:
    from train.ensemble_cli import add_benchmark_arguments, add_ensemble_arguments

    parser = subparsers.add_parser(
        "train",
        help="train one model; score ensembles (`train ensemble`) and benchmarks (`train benchmarks`)",
        usage="%(prog)s [--template] [--out RUN] [--set KEY.PATH=VALUE] [--dry-run [--json]] CONFIG.yaml\n"
        "       %(prog)s --reidentify RUN\n"
        "       %(prog)s {ensemble,benchmarks} ...",
        description="Train one model from a RunConfig YAML (see `megadocs train --template`). "
        "RUN gets config.yaml, provenance.json, log.jsonl (loss and periodic validation curve), "
        "tensorboard/, model/ (with a model card) and metrics.json. Exit status 75 means preempted (130: "
        "interrupted by Ctrl-C); the checkpoint is saved: re-run the same command to resume. Also: `megadocs train ensemble --help`, "
        "`megadocs train benchmarks --help`.",
        **examples(
            "megadocs train --template > run.yaml",
            "megadocs train run.yaml --out runs/train/first --set optim.lr=0.001 --set data.real_epochs=4",
            "megadocs train run.yaml --set 'tracking.wandb={mode: offline}'   # also log to W&B",
            "tensorboard --logdir runs/train                                   # curves of every run",
        ),
    )
    _add_run_options(parser)
    commands = parser.add_subparsers(
        dest="train_command", action=_CommandsOrConfig, prog=parser.prog,
        metavar="{ensemble,benchmarks} | CONFIG.yaml",
        title="commands (or a CONFIG.yaml to train)",
    )
    ensemble = commands.add_parser(
        "ensemble", help="validation loss L(K) of logit-averaged ensembles, K = 1..N",
        description="Validation loss of logit-averaged ensembles, K = 1..N (see train/ensemble_cli.py).",
        **examples(
            "megadocs train ensemble --members runs/train/a runs/train/b runs/train/c",
            "megadocs train ensemble --members runs/train/a runs/train/b --benchmarks piqa,sciq "
            "--benchmark-data benchmark-data --json runs/ens.json",
        ),
    )
    add_ensemble_arguments(ensemble)
    ensemble.set_defaults(func=_ensemble, _parser=ensemble)
    benchmarks = commands.add_parser(
        "benchmarks", help="zero-shot PIQA/SciQ/ARC-Easy accuracy of a model or an ensemble (lm-eval)",
        description="Zero-shot PIQA/SciQ/ARC-Easy accuracy (lm-eval) of a model or a logit-averaged ensemble.",
        **examples(
            "megadocs train benchmarks --members runs/train/a --benchmark-data benchmark-data",
            "megadocs train benchmarks --members runs/train/a runs/train/b --benchmarks piqa --benchmark-limit 200",
            "lm_eval --model hf --model_args pretrained=runs/train/a/model --tasks piqa   # lm-eval's own CLI",
            note="A run's model/ is a plain Hugging Face directory, so lm-eval's own CLI scores it too "
            "(`pip install 'megadocs[eval]'` brings lm-eval and accelerate, which its hf model needs).",
        ),
    )
    add_benchmark_arguments(benchmarks)
    benchmarks.set_defaults(func=_benchmarks, _parser=benchmarks)
    run = commands.add_parser(RUN, prog=parser.prog)  # no help=: not listed among the commands
    run.add_argument("config", metavar="CONFIG.yaml", help="run config")
    _add_run_options(run, late=True)
    parser.set_defaults(func=_run, _train_parser=parser, config=None)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``key.path=value`` pairs (values parsed as YAML) in a nested config mapping. An empty
    value (``optim.lr=``) is refused as a malformed item: YAML would read it as null, which the
    field then refused as no number; ``null`` sets none."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set: expected KEY.PATH=VALUE, got {item!r}")
        if not raw.strip():
            raise UserError(f"--set: expected KEY.PATH=VALUE, got {item!r}: no VALUE after '=' (null sets none)")
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
    """The validated RunConfig of a YAML file with `--set` overrides applied.

    A bad value is reported against where it came from: ``--set optim.lr=-1: optim.lr: ...``
    when an override set it (or the section holding it), else the file.
    """
    from pydantic import ValidationError

    from megadocs.config import format_validation_error, load_yaml
    from train.config import RunConfig

    data = load_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    overrides = overrides or []
    try:
        return RunConfig.model_validate(apply_overrides(data, overrides))
    except ValidationError as exc:
        field = ".".join(str(part) for part in exc.errors()[0]["loc"])
        culprit = next((item for item in reversed(overrides) if _touches(item.partition("=")[0].strip(), field)),
                       None)  # fmt: skip
        raise UserError(format_validation_error(exc, f"--set {culprit}" if culprit else str(path),
                                                model=RunConfig)) from None


def _touches(key: str, field: str) -> bool:
    """Does the override of `key` set `field`, a field inside it, or a field of the section it is in?"""
    return key == field or field.startswith(key + ".") or (bool(field) and key.startswith(field + "."))


def _ensemble(args: argparse.Namespace) -> int:
    from train.ensemble_cli import ensemble_main

    return ensemble_main(args)


def _benchmarks(args: argparse.Namespace) -> int:
    from train.ensemble_cli import benchmarks_main

    return benchmarks_main(args)


def _dry_run(config, args: argparse.Namespace) -> int:
    import json

    from megadocs.procs import launcher_int
    from train import plan

    processes = launcher_int("WORLD_SIZE", default=1) if args.processes is None else args.processes
    # --mfu: expected a utilisation in (0, 1], got 1.5; --processes: expected a positive number ...
    with flags_named(args._train_parser):
        utilisation = plan.default_utilisation(args.mfu, args.peak_tflops, gpu=args.gpu)
        result = plan.run_plan(
            config,
            utilisation=utilisation,
            device_memory_gib=plan.DEFAULT_DEVICE_MEMORY_GIB if args.memory_gib is None else args.memory_gib,
            processes=processes,
            scaling_efficiency=plan.DEFAULT_SCALING_EFFICIENCY if args.scaling_efficiency is None else args.scaling_efficiency,
        )
    sys.stdout.write(json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n" if args.json
                     else plan.format_run_plan(result))
    return 0


def _reidentify(run_dir: Path) -> int:
    """Adopt a run whose recorded identity is stale (made before the identity covered what it
    covers today): the user vouches its data is unchanged. A run trained by another
    `TRAINING_REVISION` is refused: this code would not have learned what it learned."""
    from train.config import TRAINING_REVISION, describe_revision
    from train.run_dir import earlier_synthetic_identity, recorded_revision, write_run_identity

    run = RunDir(run_dir)
    if not run.config.is_file():
        raise UserError(f"--reidentify: {run_dir}: no {RunDir.CONFIG} (expected a run directory)")
    revision = recorded_revision(run_dir)
    if revision != TRAINING_REVISION:
        raise UserError(f"--reidentify: {run_dir}: trained by {describe_revision(revision)}, not this code's "
                        f"{describe_revision(TRAINING_REVISION)}; train it again into another --out")
    earlier = earlier_synthetic_identity(run_dir)
    if earlier is not None and not earlier[0]:
        raise UserError(f"--reidentify: {run_dir}: {earlier[1]}")
    config = load_run_config(run.config)
    old = run.config_hash.read_text().strip() if run.config_hash.is_file() else None
    identity = config.identity()
    write_run_identity(run_dir, identity, config.data_identity())
    metrics = run.read_metrics()
    if metrics is not None:  # rewritten as standard JSON (an old file's NaN/Infinity become null)
        metrics.config_hash = identity
        metrics.save(run.metrics)
    print(f"{run_dir}: identity {old} -> {identity}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Train (or print the template or the plan); options before and after CONFIG.yaml are merged."""
    from megadocs.procs import apply_environment_defaults
    from train.device import ENVIRONMENT_DEFAULTS

    for key, value in list(vars(args).items()):  # late_* exist only when given after CONFIG.yaml
        if key.startswith("late_"):
            option = key.removeprefix("late_")
            setattr(args, option, args.overrides + value if option == "overrides" else value)
    if args.reidentify:
        return _reidentify(Path(args.reidentify))
    if args.template:
        from train.config import template

        sys.stdout.write(template())
        return 0
    if not args.config:
        args._train_parser.print_usage(sys.stderr)
        print("error: CONFIG.yaml is required (or --template for a starting point)", file=sys.stderr)
        return Exit.BAD_INPUT

    config = load_run_config(args.config, args.overrides)
    if args.dry_run:
        return _dry_run(config, args)
    apply_environment_defaults(ENVIRONMENT_DEFAULTS)  # before CUDA starts
    from megadocs.procs import world_from_env
    from train.data import RunStores
    from train.loop import Preempted, run

    try:
        stores = RunStores.open(config)  # once: RUN's name, this line and its recorded identity are of these
        identity = stores.identity(config)
    except (UserError, OSError) as exc:
        if world_from_env()[1] == 1:
            if isinstance(exc, UserError):
                raise
            # the file system's fault (an NFS server's EIO or ESTALE), not the input's: nothing was
            # written, and the same command is what to run again
            raise WorkFailed(f"could not open the run's data ({exc}); nothing was trained: re-run the same "
                             f"command once its file system answers") from exc
        # one of several processes: `run` opens them again and, once every rank has joined, stops
        # them all with this line (raising here would leave the others waiting in the rendezvous)
        stores, identity = None, None
    out = Path(args.out) if args.out else DEFAULT_RUNS_DIR / (identity or "unopened")  # unopened: never written
    if identity is not None:
        print(f"run {identity} -> {out}", file=sys.stderr)
    try:
        metrics = run(config, out, stores)
    except Preempted as exc:
        what = "interrupted" if exc.interrupted else "preempted"
        print(f"{what} at step {exc.step}; checkpoint saved; re-run the same command to resume", file=sys.stderr)
        return Exit.INTERRUPTED if exc.interrupted else Exit.PREEMPTED
    val = ", ".join(f"{name} {'-' if loss is None else f'{loss:.4f}'}" for name, loss in metrics.val_losses.items())
    print(f"{metrics.status}: {metrics.steps} steps, val loss {val} ({RunDir(out).metrics})")
    return 0
