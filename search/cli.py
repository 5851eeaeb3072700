"""``megadocs search certify|status SWEEP.yaml``: thin entry points into search/."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from megadocs.cli import examples, flags_named
from megadocs.exits import Exit
from search.certificate import CertifyExit  # light (stdlib + search.grid): the exit codes for --help

if TYPE_CHECKING:  # a type only: the handlers import search.sweep when they run, keeping --help fast
    from search.ledger import LedgerSnapshot
    from search.plan import LedgerProgress
    from search.status import CertificationSummary, JobWatch
    from search.sweep import Sweep

RETRY_HINT = ("{n} failed point(s) block their certificates; a re-run does not run them again (a deterministic "
              "failure, loss -inf or a job that failed every retry, would only fail again): fix the cause, then "
              "`{command} --retry-failed`")
"""What ``certify`` and ``status`` say under failed points (failures are kept, not retried, until asked)."""
RERUN_HINT = ("{n} point(s) stopped the sweep on an error outside the run (a user error, or an objective that "
              "returned no loss; nothing was trained): fix the cause, then `{command}` runs them again")
"""What ``status`` says under the points to re-run (:attr:`search.ledger.RunRecord.to_rerun`)."""


def certify_command(args: argparse.Namespace) -> str:
    """The ``certify`` command that goes on with ``args``' sweep and strategy (a baseline's names it).

    >>> certify_command(argparse.Namespace(sweep="s.yaml", strategy="grid"))
    'megadocs search certify s.yaml --strategy grid'
    """
    strategy = "" if args.strategy == "certify" else f" --strategy {args.strategy}"
    return f"megadocs search certify {args.sweep}{strategy}"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "search", help="local-optimality certification sweeps",
        description="Certify that a grid point is a local optimum (every one-step neighbour evaluated and "
        "no better) for each certification of a sweep, recording every run in an Optuna ledger.",
        **examples("megadocs search certify search/examples/analytic.yaml",
                   "megadocs search status search/examples/analytic.yaml",
                   "megadocs search dashboard search/examples/analytic.yaml --port 8080"),
    )
    commands = parser.add_subparsers(dest="search_command", metavar="{certify,status,plan,dashboard}")

    certify = commands.add_parser(
        "certify",
        help="run (or resume) every certification of a sweep",
        description="Certify every certification of SWEEP.yaml. Safe to stop and re-run: it re-attaches to "
        "running jobs, adopts finished ones and never runs a point twice. Ctrl-C stops the local runs in "
        "flight (a train run saves a checkpoint first) and exits with status 130; the next certify resumes "
        "them. SLURM jobs keep running and are re-attached. Failed points are kept until --retry-failed; a point "
        "whose job stopped the sweep on a user error runs again once its cause is fixed. "
        "Curves: `tensorboard --logdir OUT/tensorboard` (OUT: the sweep's out directory) names each run "
        "by its certification and point. Each certificate says what it rests on: interior on every searched "
        "axis, leaning on search bound(s), axes not searched (one value), the runs per point; a sweep's "
        "extend: lists values the search may append beyond a bound.",
        **examples("megadocs search certify search/examples/analytic.yaml",
                   "megadocs search certify search/examples/extend.yaml   # moves the epochs bound",
                   "megadocs search certify SWEEP.yaml --strategy tpe --max-runs 30",
                   "megadocs search certify SWEEP.yaml --retry-failed",
                   note=CertifyExit.help() + " A baseline (--strategy grid|tpe) exits 0, 4 when a run failed, or 1 "
                   "when no run of a certification has a finite loss."),
    )
    certify.add_argument("sweep", help="sweep file (see search/examples/)")
    certify.add_argument("--strategy", choices=("certify", "grid", "tpe"), default="certify",
                         help="certify (default), or a baseline: exhaustive grid / Optuna TPE")
    certify.add_argument("--max-runs", type=int, default=None, metavar="N",
                         help="at most N runs per certification (default: until certified; tpe: min(grid, 50))")
    certify.add_argument("--retry-failed", action="store_true",
                         help="run points again that failed in an earlier controller (a re-run keeps "
                         "failures, since a deterministic one would only fail again; a point that stopped the sweep "
                         "on a user error runs again without it)")
    certify.add_argument("--jobs-ended-on", action="append", default=[], metavar="HOST",
                         help="HOST is down and the sweep's local jobs there ended with it: submit their runs again "
                         "here (without it, local jobs in flight on another host are refused: a local job is asked "
                         "only on its host)")
    certify.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    certify.set_defaults(func=_certify)

    status = commands.add_parser(
        "status", help="where each certification stands",
        description="Each certification's state (certified, searching, failed, stopped by its run budget), what its certificate rests on "
        "(interior, search bound(s), axes not searched, runs per point), the extensions its search made, best "
        "point and loss, runs in flight or failed with their job ids, and the controller holding the sweep.",
        **examples("megadocs search status search/examples/analytic.yaml",
                   "megadocs search status SWEEP.yaml --json | jq '.certifications[].certificate.basis'",
                   note="exit status: 0 whenever the ledger was read (whatever the certificates rest on: see "
                        "certificate.basis.support in --json, or `megadocs search certify`'s exit status); "
                        "2 bad input."),
    )
    status.add_argument("sweep", help="sweep file")
    status.add_argument("--json", action="store_true",
                        help="print one JSON object: certifications, ensembles, transfers, jobs, controller, "
                             "undescribed trials, warnings (docs/architecture.md)")
    status.add_argument("--strategy", choices=("certify", "grid", "tpe"), default="certify")
    status.set_defaults(func=_status)

    plan = commands.add_parser(
        "plan", help="runs and GPU-hours per certification, before launching",
        description="Expected (simulated certifier on smooth landscapes) and worst-case run counts per "
        "certification, and their GPU-hours at an assumed MFU (see search/plan.py). Runs nothing.",
        **examples("megadocs search plan search/examples/paper-300m.yaml",
                   "megadocs search plan SWEEP.yaml --assume-real-tokens 200M "
                   "--assume-synthetic-tokens-per-generation 708",
                   "megadocs search plan SWEEP.yaml --mfu 0.3 --peak-tflops 312 --json   # A100"),
    )
    plan.add_argument("sweep", help="sweep file")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.add_argument("--mfu", type=float, default=None, help="assumed model FLOPs utilisation "
                      "(default: measured in benchmarks/results/gpu.json, else 0.4)")
    plan.add_argument("--peak-tflops", type=float, default=None,
                      help="device dense bf16 peak TFLOP/s (default: the measured GPU's, else 989, H100 SXM)")
    plan.add_argument("--gpu", metavar="TEXT", default=None,
                      help="take the MFU and peak measured on the GPU whose name contains TEXT, e.g. h100 "
                      "(default: the slowest GPU measured, MFU x peak)")
    assume = plan.add_argument_group(
        "data sizes", "Measured from the store and pools where they exist, else the paper's figures; a value given "
        "here replaces the measured one. The plan lists every assumed figure.")
    # dest'ed by search.plan.Assumptions' fields: its errors name the flags (flags_named)
    assume.add_argument("--assume-real-tokens", dest="real_tokens", metavar="N",
                        help="real tokens, e.g. 200M (default: the store's)")
    assume.add_argument("--assume-real-documents", dest="real_documents", metavar="N", help="real documents, e.g. 164k")
    assume.add_argument("--assume-synthetic-tokens-per-generation", dest="tokens_per_generation", metavar="N",
                        help="mean tokens of a rephrase or sample, e.g. 708 (default: the pool's)")
    assume.add_argument("--assume-tokens-per-thought", dest="tokens_per_thought", metavar="N",
                        help="mean tokens of a latent thought, e.g. 424")
    assume.add_argument("--assume-vocab-size", dest="vocab_size", metavar="N",
                        help="vocabulary, e.g. 128256 (default: the store's)")
    plan.set_defaults(func=_plan, _parser=plan)

    dashboard = commands.add_parser(
        "dashboard", help="open the sweep's ledger in optuna-dashboard",
        description="Serve optuna-dashboard on the sweep's ledger (the `dashboard` extra): one study per "
        "certification; lr and wd are numeric params on a log scale, method and g are params too. "
        "Read-only; safe next to a running controller.",
        **examples("megadocs search dashboard search/examples/analytic.yaml",
                   "megadocs search dashboard SWEEP.yaml --host 0.0.0.0 --port 8081   # reachable from other hosts"),
    )
    dashboard.add_argument("sweep", help="sweep file")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    dashboard.set_defaults(func=_dashboard, _parser=dashboard)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _configure_process(*, runs_jobs: bool) -> None:
    """Process-wide settings of the search commands (library code never sets them). Only a
    command that starts jobs applies train's environment defaults (importing train.device costs
    the torch import, seconds of a ``status`` that needs none of it)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the ledger is the record, not optuna's log
    if runs_jobs:
        from megadocs.procs import apply_environment_defaults
        from train.device import ENVIRONMENT_DEFAULTS

        apply_environment_defaults(ENVIRONMENT_DEFAULTS)  # train jobs (in-process or submitted) inherit it


def _certify(args: argparse.Namespace) -> int:
    from megadocs.errors import UserError
    from search.certificate import CertState
    from search.controller import JobsElsewhere, SweepInterrupted, SweepStopped, run_sweep
    from search.ledger import read_snapshot
    from search.status import (
        certify_exit,
        format_bases,
        format_stops,
        format_table,
        g_trend_warnings,
        summarize,
    )
    from search.sweep import load_sweep

    if args.max_runs is not None and args.max_runs < 1:
        raise UserError(f"--max-runs: expected a positive number of runs, got {args.max_runs}")
    _configure_process(runs_jobs=True)
    sweep = load_sweep(args.sweep)
    try:
        run_sweep(sweep, strategy=args.strategy, max_runs=args.max_runs, retry_failed=args.retry_failed,
                  progress=not args.no_progress, jobs_ended_on=args.jobs_ended_on)
    except SweepInterrupted as exc:  # Ctrl-C: one line, the status `megadocs train` exits with
        print(exc.message(certify_command(args)), file=sys.stderr)
        return Exit.INTERRUPTED
    except (SweepStopped, JobsElsewhere) as exc:  # its line names the command to re-run
        raise UserError(exc.message(certify_command(args))) from None
    snapshot = read_snapshot(sweep)  # each study read once by everything below
    summaries = summarize(sweep, args.strategy, max_runs=args.max_runs, snapshot=snapshot,
                          warn_off_grid=False)  # the controller's restore said it
    print(format_table(summaries), end="")
    for line in (*format_bases(summaries), *format_stops(summaries)):
        print(line)
    certifier = args.strategy == "certify"
    if certifier:  # only the certifier runs them
        _print_ensembles_and_transfers(sweep, summaries, snapshot)
    for warning in g_trend_warnings(summaries, sweep.base_model):
        print(f"warning: {warning}", file=sys.stderr)
    for line in _not_certified_lines(summaries, certifier=certifier):
        print(line, file=sys.stderr)
    failed = sum(len(s.blocked_by) for s in summaries)
    if failed:
        print(RETRY_HINT.format(n=failed, command=certify_command(args)), file=sys.stderr)
    if not certifier:  # a baseline's best point need not be certifiable: only failures count
        if failed:
            return CertifyExit.WORK_FAILED.value
        return int(any(s.state is CertState.FAILED for s in summaries)) * CertifyExit.NOT_CERTIFIED.value
    status = certify_exit(summaries)
    for line in _weak_certificate_lines(summaries, status):
        print(line, file=sys.stderr)
    return status.value


def _not_certified_lines(summaries: list[CertificationSummary], *, certifier: bool) -> list[str]:
    """``certify``'s stderr lines for what it left uncertified: each failed point blocking a
    certificate, and each certification without one with its reason (for a baseline, whose best
    point need not be certifiable, only a failed one). The certifier stops short of a
    certificate only when a run budget is spent: the line says how to go on, and the reason,
    where there is one, where it stands (``waiting for a (stopped: run budget spent)``)."""
    from search.certificate import CertState
    from search.strategies import StrategyState

    lines = []
    for s in summaries:
        lines += [f"{s.name}: blocked by {params}: {reason}" for params, reason in s.blocked_by]
        if s.state is CertState.FAILED:
            if s.reason:
                lines.append(f"{s.name}: not certified: {s.reason}")
        elif s.state is StrategyState.STOPPED and certifier:  # its reason (the stop's) says how to go on
            lines.append(f"{s.name}: not certified: {s.reason}")
        elif s.state is not CertState.CERTIFIED and certifier:
            lines.append(f"{s.name}: not certified: {s.reason or f'stopped ({s.state.value})'}; re-run with a "
                         "larger --max-runs (or without it) to continue")
    return lines


def _weak_certificate_lines(summaries: list[CertificationSummary], status: CertifyExit) -> list[str]:
    """What each weak certificate rests on (a search bound, or no search), for stderr; each names
    the exit ``status`` only where the weak certificates gave it (``CERTIFIED_ON_BOUND``: a failed
    run or an uncertified certification outranks them, and its own lines say so)."""
    from search.certificate import Support

    exit_ = f" (exit {status.value})" if status is CertifyExit.CERTIFIED_ON_BOUND else ""
    lines = []
    for s in summaries:
        if s.support is Support.BOUND:
            bounds = ", ".join(f"{b.axis} {b.side.value} {b.value:g}" for b in s.certificate.bounds_hit)
            lines.append(f"{s.name}: certified on a search bound ({bounds}): a compute limit, not evidence; widen "
                         f"the grid or list values under extend:{exit_}")
        elif s.support is Support.NOT_SEARCHED:
            lines.append(f"{s.name}: certified without a search: every axis has one value{exit_}")
    return lines


def _dashboard(args: argparse.Namespace) -> int:
    from search.dashboard import serve

    with flags_named(args._parser):  # --host: cannot listen on ...
        serve(args.sweep, host=args.host, port=args.port)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from megadocs.formats import dumps_json
    from search.plan import Assumptions, format_sweep_plan, sweep_plan
    from search.sweep import load_sweep
    from train.plan import default_utilisation

    with flags_named(args._parser):  # --assume-vocab-size: expected a whole number of tokens, got '0.5'
        assume = Assumptions.parse({figure.name: getattr(args, figure.name) for figure in fields(Assumptions)})
        utilisation = default_utilisation(args.mfu, args.peak_tflops, gpu=args.gpu)  # --mfu: expected ...
    sweep = load_sweep(args.sweep)
    result = sweep_plan(sweep, utilisation, assume=assume, progress=_progress(sweep))
    print(dumps_json(result.to_dict(), indent=1) if args.json else format_sweep_plan(result),
          end="\n" if args.json else "")
    return 0


def _progress(sweep: Sweep) -> LedgerProgress | None:
    """What the sweep's ledger says is done, for ``plan``; None when the sweep has no ledger
    (nothing ran: the plan is the whole search). Reads the ledger, imports no torch."""
    from megadocs.formats import RunStatus
    from search.certificate import CertState
    from search.ledger import StudyKind, read_snapshot, study_name
    from search.plan import CertificationProgress, ExtraProgress, LedgerProgress
    from search.status import TransferState, start_edits, summarize, summarize_ensembles, summarize_transfers
    from search.storage import LedgerMissing

    try:
        snapshot = read_snapshot(sweep)
    except LedgerMissing:
        return None
    summaries = summarize(sweep, snapshot=snapshot, warn_off_grid=False)
    ensemble_summaries = summarize_ensembles(sweep, summaries, snapshot=snapshot)
    transfer_summaries = summarize_transfers(sweep, summaries, snapshot=snapshot)
    ensembles = {e.name: ExtraProgress(sum(m.status.finished for m in e.members), e.count(RunStatus.RUNNING),
                                       e.count(RunStatus.FAILED), e.source_state is CertState.FAILED)
                 for e in ensemble_summaries}
    transfers = {t.name: ExtraProgress(int(t.state is TransferState.FINISHED), int(t.state is TransferState.RUNNING),
                                       int(t.state is TransferState.FAILED), t.state is TransferState.BLOCKED)
                 for t in transfer_summaries}
    # one run identity per entry that counts it finished: a run two entries share is one run in the total
    finished = [{r.run_id for r in snapshot.runs(study_name(sweep.name, s.name)) if r.status.finished and r.run_id}
                for s in summaries]
    finished += [{m.run_id for m in e.members if m.status.finished and m.run_id} for e in ensemble_summaries]
    finished += [{t.run_id} for t in transfer_summaries if t.state is TransferState.FINISHED and t.run_id]
    shared = sum(map(len, finished)) - len(set().union(*finished))
    return LedgerProgress({s.name: CertificationProgress(s.state, s.runs.finished, s.runs.running, s.runs.failed,
                                                         s.to_ask or 0, s.start)
                           for s in summaries}, ensembles, transfers, shared,
                          tuple(start_edits(sweep, StudyKind.CERTIFY, snapshot)))


def _status(args: argparse.Namespace) -> int:
    from search.ledger import read_snapshot
    from search.status import JobWatch
    from search.sweep import load_sweep

    _configure_process(runs_jobs=False)
    sweep = load_sweep(args.sweep)
    snapshot = read_snapshot(sweep)  # each study read once: at thousands of runs the reads are most of the time
    watch = JobWatch(sweep, controller_live=snapshot.holder is not None)  # each job asked once, by both readers
    try:
        return _print_status(args, sweep, snapshot, watch)
    finally:
        watch.close()


def _print_status(args: argparse.Namespace, sweep: Sweep, snapshot: LedgerSnapshot, watch: JobWatch) -> int:
    """The human view of the :class:`search.status.StatusReport`, or its JSON (``--json``)."""
    from search.certificate import CertState
    from search.status import format_bases, format_reruns, format_stops, format_table, status_report

    report = status_report(sweep, args.strategy, watch=watch, snapshot=snapshot)
    if args.json:
        print(report.to_json())
        return 0
    summaries = report.certifications
    print(format_table(summaries), end="")
    for line in (*format_bases(summaries), *format_stops(summaries)):
        print(line)
    for s in summaries:  # beyond its failed points (listed below): no finite loss, or its source failed
        if s.state is CertState.FAILED and s.reason:
            print(f"{s.name}: not certified: {s.reason}")
    for item in (*report.ensembles, *report.transfers, *report.jobs):
        print(item.describe())
    if report.controller is not None:
        print(report.controller.describe())
    if (undescribed := report.undescribed_line()) is not None:
        print(undescribed)
    for warning in report.warnings:
        print(f"warning: {warning}")
    failed = sum(len(s.blocked_by) for s in summaries)
    if failed:
        print(RETRY_HINT.format(n=failed, command=certify_command(args)))
    for line in format_reruns(summaries):
        print(line)
    if rerun := sum(len(s.to_rerun) for s in summaries):
        print(RERUN_HINT.format(n=rerun, command=certify_command(args)))
    return 0


def _print_ensembles_and_transfers(sweep: Sweep, summaries: list[CertificationSummary], snapshot: LedgerSnapshot) -> None:
    """The ensembles' and transfers' lines (the certifier's runs at its certified points)."""
    from search.status import summarize_ensembles, summarize_transfers

    for item in (*summarize_ensembles(sweep, summaries, snapshot=snapshot),
                 *summarize_transfers(sweep, summaries, snapshot=snapshot)):
        print(item.describe())
