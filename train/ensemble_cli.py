"""``megadocs train ensemble`` and ``megadocs train benchmarks``, and the Python API behind them.

``megadocs train ensemble --members RUN1 RUN2 ... [--val [NAME=]STORE ...] [--json OUT]`` prints
L(K) per validation set (`train.ensemble_eval`); `score_ensemble` is the same thing for Python
callers (analysis scores a sweep's ensemble studies with it). ``--json OUT`` holds (and, re-run,
resumes from)::

    {"members": [dir, ...], "context": C, "windows": N,
     "sets": {name: {"source": {"store": dir, "split": "val"},
                     "by_k": [{"k": 1, "members": [...], "loss": .., "loss_short": .., "loss_long": ..}, ...]}},
     "benchmarks": {"request": {"tasks": [...], "data": dir, "limit": n},
                    "scores": {task: {"acc", "acc_norm", "items"}, ..., "average": {"acc", "acc_norm"}}}}

(``loss_short``/``loss_long`` only for the ``iid`` set; ``benchmarks`` only with ``--benchmarks``;
the record: `train.ensemble_report.EnsembleReport`, which analysis reads it with.)
Members that are run directories supply the defaults (context, windows, validation stores,
document mask) through their ``RUN/config.yaml``, read as a `train.config.RunConfig`.

``megadocs train benchmarks --members DIR ... [--benchmarks piqa,sciq,arc_easy]`` prints the zero-shot
accuracy table of one model or a logit-averaged ensemble (`train.downstream`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from megadocs.cli import Count, Destination, flags_named, named_value
from megadocs.errors import FieldError, UserError
from megadocs.formats import IID, BenchmarkScore, RunDir, finite_or_none, write_json
from train.benchmarks import parse_tasks

if TYPE_CHECKING:  # `megadocs --help` builds these parsers: keep pydantic out of that path
    from train.config import RunConfig
    from train.ensemble_report import EnsembleLoss, EnsembleReport

__all__ = [
    "EnsembleRequest",
    "ValidationSpec",
    "member_run_config",
    "validation_specs",
    "score_ensemble",
    "add_ensemble_arguments",
    "ensemble_main",
    "add_benchmark_arguments",
    "benchmarks_main",
    "print_scores",
]

@dataclass(frozen=True)
class ValidationSpec:
    """One validation set to score: its name in the report and the token store split it reads."""

    name: str
    store: Path
    split: str = "val"

    @property
    def source(self) -> dict[str, str]:
        """The report's ``source`` of this set (a finished set is reused when it matches)."""
        return {"store": str(self.store), "split": self.split}


@dataclass(frozen=True)
class EnsembleRequest:
    """What to score: the members and the options of ``megadocs train ensemble``.

    Args:
        members: run directories (``RUN/model`` is used) or HF model directories, in order.
        val: ``[NAME=]STORE`` validation sets; None: the first member's ``data.store`` (``iid``)
            and ``eval.extra`` sets.
        context, windows: window length and count; None: the first member's run config.
        batch_size: windows per forward pass.
        max_resident: members held on the device at once (None: from free memory).
        device: ``auto`` | ``cpu`` | ``cuda`` (or ``cuda:N``).
        benchmarks: lm-eval tasks to score the full ensemble on (empty: none).
        benchmark_data: local benchmark files (None: the Hugging Face Hub).
        benchmark_limit: items per task (None: all).
        out: the JSON report, rewritten after every set and resumed from when re-run.
    """

    members: Sequence[str | Path]
    val: Sequence[str] | None = None
    context: int | None = None
    windows: int | None = None
    batch_size: int = 8
    max_resident: int | None = None
    device: str = "auto"
    benchmarks: Sequence[str] = field(default_factory=tuple)
    benchmark_data: str | Path | None = None
    benchmark_limit: int | None = None
    out: str | Path | None = None

    def __post_init__(self) -> None:
        if not self.members:
            raise UserError("--members: no members given (expected at least one model directory)")
        for name in ("context", "windows", "batch_size", "max_resident", "benchmark_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FieldError(name, f"expected >= 1, got {value}")  # `ensemble_main`: named by its flag


# ------------------------------------------------------------------------------ validate


def member_run_config(member: str | Path) -> RunConfig | None:
    """The validated ``RUN/config.yaml`` of a run directory; None for a bare HF model directory."""
    from megadocs.config import load_config
    from train.config import RunConfig

    path = RunDir(member).config
    return load_config(path, RunConfig) if path.is_file() else None


def check_members_agree(members: Sequence[Path]) -> None:
    """Refuse run directories trained at another ``data.context`` or ``data.document_mask`` than
    the first one's: the ensemble is scored at one context and mask (the first member's), which
    would score the others outside what they were trained on. (A member listed twice:
    `train.ensemble.resolve_members`.)

    Raises:
        UserError: naming both members and the differing field.
    """
    configs = [(member, member_run_config(member)) for member in members]
    trained = [(member, config.data) for member, config in configs if config is not None]
    for member, data in trained[1:]:
        first, reference = trained[0]
        for name in ("context", "document_mask"):
            value, expected = (getattr(getattr(d, name), "value", getattr(d, name)) for d in (data, reference))
            if value != expected:
                raise UserError(f"--members: {member} was trained with data.{name} {value}, {first} with "
                                f"{expected}; members must share data.{name}")


def validation_specs(val: Sequence[str] | None, run_config: RunConfig | None) -> list[ValidationSpec]:
    """The sets to score: ``val`` if given, else the members' iid store and eval.extra sets.

    An unnamed ``STORE`` is the ``iid`` set (which gets the short/long halves) when it is the
    members' data.store, or when the members have no run config and it comes first; otherwise it
    is named after its directory. ``NAME=STORE`` names it explicitly
    (`megadocs.cli.named_value`: a STORE may hold ``=``, as in ``runs/lr=0.01/store``).

    >>> [s.name for s in validation_specs(["data/a", "arxiv=data/b", "data/c"], None)]
    ['iid', 'arxiv', 'c']

    Raises:
        UserError: an item with nothing before or after its ``=``, two sets with one name, or no set
            given for members without a run config.
    """
    iid_store = Path(run_config.data.store) if run_config is not None else None
    if val:
        specs = []
        for position, item in enumerate(val):
            name, store = named_value(item, "--val", "NAME=STORE")
            store_path = Path(store)
            if not name:
                is_iid = store_path.resolve() == iid_store.resolve() if iid_store is not None else position == 0
                name = IID if is_iid else store_path.name
            specs.append(ValidationSpec(name, store_path))
        names = [spec.name for spec in specs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UserError(f"--val: two sets are named {repeated[0]!r}; name them with NAME=STORE")
        return specs
    if run_config is None:
        raise UserError(
            "--val: no validation store given and the first member has no RUN/config.yaml "
            "naming data.store; pass --val STORE_DIR"
        )
    specs = [ValidationSpec(IID, iid_store)]
    specs += [ValidationSpec(name, Path(extra.store), extra.split) for name, extra in run_config.eval.extra.items()]
    return specs


# ------------------------------------------------------------------------------- compute


def score_ensemble(request: EnsembleRequest, *, log=None) -> EnsembleReport:
    """L(K) of ``request.members`` on every validation set (and the benchmarks), as the report.

    With ``request.out`` the report is rewritten (atomically) after every validation set, and a
    re-run with the same members, context and windows reuses the sets (and benchmarks) already
    there. Progress and reuse notes go to ``log`` (default: stderr).

    Returns:
        The report (`train.ensemble_report.EnsembleReport`; its ``to_json()`` is the file).

    Raises:
        UserError: a member is not a model directory or is listed twice, members do not share a vocabulary, a
            validation store cannot be read, or no context/store can be found.
        FieldError: of ``benchmarks``: asked for without lm-eval installed.
    """
    from train.data import ValidationSet
    from train.ensemble import resolve_members
    from train.ensemble_eval import ensemble_losses
    from train.ensemble_report import BenchmarkRequest, EnsembleBenchmarks, EnsembleReport, EnsembleSet

    if request.benchmarks:  # before the validation sets are scored, not after
        from train.downstream import require_lm_eval

        require_lm_eval()

    members = [Path(m) for m in request.members]
    model_dirs = resolve_members(members)  # a wrong path is named as such, not as a missing --context
    run_config = member_run_config(members[0])
    context = request.context or (run_config.data.context if run_config else None)
    if context is None:
        raise UserError("--context: the first member has no RUN/config.yaml to read it from; pass --context")
    check_members_agree(members)
    windows = request.windows or (run_config.eval.val_windows if run_config else 1024)
    document_mask = run_config.data.document_mask if run_config else False

    identity = {"members": [str(m) for m in members], "context": context, "windows": windows}
    out = Path(request.out) if request.out else None
    report = _previous_report(out, identity) or EnsembleReport(**identity)
    for spec in validation_specs(request.val, run_config):
        done = report.sets.get(spec.name)
        if done and done.source == spec.source:
            print(f"{spec.name}: reusing the losses in {out}", file=log or sys.stderr)
            continue
        validation = ValidationSet.build(spec.store, split=spec.split, context=context, max_windows=windows)
        rows = ensemble_losses(
            members, validation, device=request.device, batch_size=request.batch_size,
            max_resident_members=request.max_resident, halves=spec.name == IID, document_mask=document_mask,
        )  # fmt: skip
        # standard JSON: a half with no tokens (NaN) is null, in the file and in what we return
        report.sets = {**report.sets, spec.name: EnsembleSet(source=spec.source, by_k=finite_or_none(rows))}
        _write_report(out, report.to_json())
    if request.benchmarks:
        from train.downstream import evaluate_benchmarks

        wanted = BenchmarkRequest(tasks=list(request.benchmarks), limit=request.benchmark_limit,
                                  data=str(request.benchmark_data) if request.benchmark_data else None)
        if report.benchmarks is None or report.benchmarks.request != wanted:
            scores = evaluate_benchmarks(
                model_dirs, wanted.tasks, data_dir=Path(wanted.data) if wanted.data else None,
                limit=wanted.limit, device=request.device,
            )  # fmt: skip
            report.benchmarks = EnsembleBenchmarks(request=wanted, scores=BenchmarkScore.table(finite_or_none(scores)))
            _write_report(out, report.to_json())
    return report


def _previous_report(out: Path | None, identity: dict) -> EnsembleReport | None:
    """The report in ``out`` when it is one of these members, context and windows (to resume)."""
    from train.ensemble_report import EnsembleReport

    if out is None or not out.is_file():
        return None
    try:
        report = EnsembleReport.parse(json.loads(out.read_text()), source=out)
    except (json.JSONDecodeError, UserError):
        return None  # unreadable: scored again from the start
    same = (report.members, report.context, report.windows) == tuple(identity.values())
    return report if same else None


def _write_report(out: Path | None, report: dict) -> None:
    """Atomic write (megadocs.formats), so an interrupted run leaves the previous complete report."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, finite_or_none(report))


# ------------------------------------------------------------------------------- present


def _print_losses(name: str, rows: list[EnsembleLoss]) -> None:
    halves = rows[0].has_halves
    header = f"{'K':>3}  {name + ' loss':>12}" + (f"  {'short':>8}  {'long':>8}" if halves else "")
    print(header)
    for row in rows:
        line = f"{row.k:>3}  {row.loss:>12.4f}"
        if halves:
            line += "".join(f"  {value:>8.4f}" if value is not None else f"  {'-':>8}"
                            for value in (row.loss_short, row.loss_long))
        print(line)


def print_scores(scores: Mapping[str, BenchmarkScore], tasks: Sequence[str]) -> None:
    """The accuracy table of `evaluate_benchmarks` scores (as records), one task a line and the average."""
    print(f"{'task':<10} {'acc':>7} {'acc_norm':>9} {'items':>6}")
    for task in tasks:
        row = scores[task]
        print(f"{task:<10} {row.acc:>7.4f} {row.acc_norm:>9.4f} {row.items:>6}")
    average = scores["average"]
    print(f"{'average':<10} {average.acc:>7.4f} {average.acc_norm:>9.4f}")


# ----------------------------------------------------------------------------------- CLI


def add_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``megadocs train ensemble``."""
    parser.add_argument(
        "--members", nargs="+", required=True, metavar="DIR",
        help="run directories (RUN/model is used) or HF model directories, in ensemble order",
    )
    parser.add_argument(
        "--val", nargs="+", metavar="[NAME=]STORE", default=None,
        help="token stores whose val split to score (NAME=STORE names a set: NAME is the part before the first "
        "=, a plain name without /, so runs/lr=0.01/store is a STORE alone; the set named iid also "
        "gets its short/long halves); default: the members' data.store (iid) and eval.extra sets",
    )
    parser.add_argument("--context", type=int, default=None, help="window length (default: the run's)")
    parser.add_argument("--windows", type=int, default=None, help="validation windows (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument(
        "--max-resident", type=int, default=None,
        help="members held on the device at once; more are streamed (default: from free memory)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--benchmarks", default=None, metavar="TASKS",
        help="also score the full ensemble on lm-eval tasks, e.g. piqa,sciq,arc_easy",
    )
    parser.add_argument("--benchmark-data", default=None, metavar="DIR", help="local benchmark files")
    parser.add_argument("--benchmark-limit", type=int, default=None, help="items per task (default: all)")
    parser.add_argument("--json", default=None, action=Destination, folder=False, metavar="OUT",
                        help="write the results as JSON here")


def ensemble_main(args: argparse.Namespace) -> int:
    """``megadocs train ensemble``: print (and with ``--json`` save and resume) L(K) for K = 1..N."""
    with flags_named(args._parser):  # its fields' errors (members, benchmarks, counts) name the flags typed
        request = EnsembleRequest(
            members=args.members, val=args.val, context=args.context, windows=args.windows,
            batch_size=args.batch_size, max_resident=args.max_resident, device=args.device,
            benchmarks=parse_tasks(args.benchmarks) if args.benchmarks else (),
            benchmark_data=args.benchmark_data, benchmark_limit=args.benchmark_limit, out=args.json,
        )  # fmt: skip
        report = score_ensemble(request)
    for spec in validation_specs(request.val, member_run_config(request.members[0])):
        _print_losses(spec.name, report.sets[spec.name].by_k)
    if request.benchmarks:
        print(f"benchmarks of the {len(request.members)}-member ensemble:")
        print_scores(report.benchmarks.scores, request.benchmarks)
    return 0


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``megadocs train benchmarks``."""
    # Names match `train ensemble` and the config's eval.benchmark_*; the old spellings still work.
    parser.add_argument(
        "--members", "--models", dest="models", nargs="+", required=True, metavar="DIR",
        help="one model, or several to evaluate as a logit-averaged ensemble (run or HF dirs)",
    )
    parser.add_argument("--benchmarks", "--tasks", dest="benchmarks", default="piqa,sciq,arc_easy", metavar="TASKS",
                        help="comma-separated lm-eval tasks (default: piqa,sciq,arc_easy)")
    parser.add_argument(
        "--benchmark-data", "--data-dir", dest="benchmark_data", default=None, metavar="DIR",
        help="local <task>.jsonl files (see train/downstream.py); default: the Hugging Face Hub",
    )
    # no record checks these (train ensemble's EnsembleRequest does its own): Count refuses a count < 1 in
    # the line EnsembleRequest's is (--benchmark-limit: expected >= 1, got 0)
    parser.add_argument("--benchmark-limit", "--limit", dest="limit", action=Count, default=None,
                        help="items per task (default: all)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch-size", action=Count, default=16, help="requests per forward pass")
    parser.add_argument("--json", default=None, action=Destination, folder=False, metavar="OUT",
                        help="write the scores as JSON here")


def benchmarks_main(args: argparse.Namespace) -> int:
    """``megadocs train benchmarks``: print the accuracy table (and optionally save it)."""
    from train.downstream import evaluate_benchmarks
    from train.ensemble import resolve_members

    with flags_named(args._parser):  # the fields are the options' own: --benchmarks, --members, --benchmark-data
        tasks = parse_tasks(args.benchmarks)
        model_dirs = resolve_members(args.models, field="models")
        scores = evaluate_benchmarks(
            model_dirs, tasks,
            data_dir=Path(args.benchmark_data) if args.benchmark_data else None,
            limit=args.limit, device=args.device, batch_size=args.batch_size,
        )  # fmt: skip
    print_scores(BenchmarkScore.table(scores), tasks)
    if args.json:
        _write_report(Path(args.json), scores)
    return 0
