"""``megadocs search certify|status SWEEP.yaml``: thin entry points into search/."""

from __future__ import annotations

import argparse
import sys

from megadocs.cli import examples

RETRY_HINT = ("{n} failed point(s) block their certificates; a re-run does not run them again (a deterministic "
              "failure would only fail again): fix the cause, then `megadocs search certify {sweep} --retry-failed`")
"""What ``certify`` and ``status`` say under failed points (failures are kept, not retried, until asked)."""


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
        "them. SLURM jobs keep running and are re-attached. Failed points are kept until --retry-failed. "
        "Curves: `tensorboard --logdir OUT/tensorboard` (OUT: the sweep's out directory) names each run "
        "by its certification and point.",
        **examples("megadocs search certify search/examples/analytic.yaml",
                   "megadocs search certify SWEEP.yaml --strategy tpe --max-runs 30",
                   "megadocs search certify SWEEP.yaml --retry-failed"),
    )
    certify.add_argument("sweep", help="sweep file (see search/examples/)")
    certify.add_argument("--strategy", choices=("certify", "grid", "tpe"), default="certify",
                         help="certify (default), or a baseline: exhaustive grid / Optuna TPE")
    certify.add_argument("--max-runs", type=int, default=None, metavar="N",
                         help="at most N runs per certification (default: until certified; tpe: min(grid, 50))")
    certify.add_argument("--retry-failed", action="store_true",
                         help="run points again that failed in an earlier controller (a re-run keeps "
                         "failures, since a deterministic one would only fail again)")
    certify.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    certify.set_defaults(func=_certify)

    status = commands.add_parser(
        "status", help="where each certification stands",
        description="Each certification's state (certified, running, failed, bound hit), best point and "
        "loss, runs in flight or failed with their job ids, and the controller holding the sweep.",
        **examples("megadocs search status search/examples/analytic.yaml",
                   "megadocs search status SWEEP.yaml --json | jq '.[].certificate'"),
    )
    status.add_argument("sweep", help="sweep file")
    status.add_argument("--json", action="store_true", help="print a JSON list (the analysis contract)")
    status.add_argument("--strategy", choices=("certify", "grid", "tpe"), default="certify")
    status.set_defaults(func=_status)

    plan = commands.add_parser(
        "plan", help="runs and GPU-hours per certification, before launching",
        description="Expected (simulated certifier on smooth landscapes) and worst-case run counts per "
        "certification, and their GPU-hours at an assumed MFU (see search/plan.py). Runs nothing.",
        **examples("megadocs search plan search/examples/paper-300m.yaml",
                   "megadocs search plan SWEEP.yaml --mfu 0.3 --peak-tflops 312 --json   # A100"),
    )
    plan.add_argument("sweep", help="sweep file")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.add_argument("--mfu", type=float, default=None, help="assumed model FLOPs utilisation (default 0.4)")
    plan.add_argument("--peak-tflops", type=float, default=None,
                      help="device dense bf16 peak TFLOP/s (default 989, H100 SXM)")
    plan.set_defaults(func=_plan)

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
    dashboard.set_defaults(func=_dashboard)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _configure_process() -> None:
    """Process-wide settings of the search commands (library code never sets them)."""
    import optuna

    from megadocs.procs import apply_environment_defaults
    from train.device import ENVIRONMENT_DEFAULTS

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the ledger is the record, not optuna's log
    apply_environment_defaults(ENVIRONMENT_DEFAULTS)  # train jobs (in-process or submitted) inherit it


def _certify(args: argparse.Namespace) -> int:
    from megadocs.errors import UserError
    from search.certify import CertState
    from search.controller import SweepInterrupted, run_sweep
    from search.status import format_table, g_trend_warnings, summarize
    from search.sweep import load_sweep

    if args.max_runs is not None and args.max_runs < 1:
        raise UserError(f"--max-runs: expected a positive number of runs, got {args.max_runs}")
    _configure_process()
    sweep = load_sweep(args.sweep)
    try:
        run_sweep(sweep, strategy=args.strategy, max_runs=args.max_runs, retry_failed=args.retry_failed,
                  progress=not args.no_progress)
    except SweepInterrupted as exc:  # Ctrl-C: one line, the status `megadocs train` exits with
        print(exc.message(args.sweep), file=sys.stderr)
        return 130
    summaries = summarize(sweep, args.strategy, max_runs=args.max_runs)
    print(format_table(summaries), end="")
    _print_ensembles(sweep, summaries)
    for warning in g_trend_warnings(summaries):
        print(f"warning: {warning}", file=sys.stderr)
    status = 0
    failed = 0
    for s in summaries:
        for params, reason in s.blocked_by:
            failed += 1
            print(f"{s.name}: blocked by {params}: {reason}", file=sys.stderr)
        if s.state is CertState.FAILED:
            status = 1
            if s.reason:
                print(f"{s.name}: not certified: {s.reason}", file=sys.stderr)
        elif s.state is not CertState.CERTIFIED and args.strategy == "certify":
            # the controller only stops early when the run budget is spent
            status = 1
            print(f"{s.name}: not certified: {s.reason or 'stopped'} ({s.state.value}); re-run with a larger "
                  f"--max-runs (or without it) to continue", file=sys.stderr)
    if failed:
        print(RETRY_HINT.format(n=failed, sweep=args.sweep), file=sys.stderr)
    return status


def _dashboard(args: argparse.Namespace) -> int:
    from search.dashboard import serve

    serve(args.sweep, host=args.host, port=args.port)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from megadocs.formats import dumps_json
    from search.plan import format_sweep_plan, sweep_plan
    from search.sweep import load_sweep
    from train.plan import DEFAULT_MFU, H100_BF16_PEAK_TFLOPS

    sweep = load_sweep(args.sweep)
    result = sweep_plan(sweep, mfu=DEFAULT_MFU if args.mfu is None else args.mfu,
                        peak_tflops=H100_BF16_PEAK_TFLOPS if args.peak_tflops is None else args.peak_tflops)
    print(dumps_json(result, indent=1) if args.json else format_sweep_plan(result), end="\n" if args.json else "")
    return 0


def _status(args: argparse.Namespace) -> int:
    from search.ledger import Ledger
    from search.status import format_table, g_trend_warnings, summarize, to_json
    from search.sweep import load_sweep

    _configure_process()
    sweep = load_sweep(args.sweep)
    summaries = summarize(sweep, args.strategy, reconcile=True)  # dead jobs are not "running"
    if args.json:
        print(to_json(summaries))
        return 0
    print(format_table(summaries), end="")
    _print_ensembles(sweep, summaries)
    _print_transfers(sweep)
    _print_jobs(sweep)
    holder = Ledger(sweep.ledger_url, sweep.name, create=False).holder()
    if holder:
        print(f"controller: running on host {holder['host']}, pid {holder['pid']}, since {holder['since']}")
    for warning in g_trend_warnings(summaries):
        print(f"warning: {warning}")
    failed = sum(len(s.blocked_by) for s in summaries)
    if failed:
        print(RETRY_HINT.format(n=failed, sweep=args.sweep))
    return 0


def _print_jobs(sweep) -> None:
    """Runs in flight or failed, by job id: what to follow with squeue/sacct or cancel with scancel.
    A run the ledger calls running whose job is gone (a killed controller) shows as stopped."""
    from megadocs.formats import RunStatus
    from search.ledger import read_runs
    from search.status import JobWatch

    watch = JobWatch(sweep)
    for run in read_runs(sweep):
        running = run["status"] == RunStatus.RUNNING
        if not (running or (run["status"] == RunStatus.FAILED and run["job_id"])):
            continue
        point = " ".join(f"{k}={v}" for k, v in run["point"].items())
        if running and not run["job_id"]:  # stopped on purpose (Ctrl-C), or killed before submitting
            print(f"{run['certification']} {point}: stopped, no job ({run['reason'] or 'not submitted yet'}); "
                  "`megadocs search certify` runs it again")
            continue
        reason = f": {run['reason']}" if run["status"] == RunStatus.FAILED and run["reason"] else ""
        status = run["status"]
        if running and not watch.alive(run["job_id"], run["job_folder"]):
            status = "stopped (its job is gone; `megadocs search certify` resumes it)"
        print(f"{run['certification']} {point}: {status}, job {run['job_id']} "
              f"(attempt {run['attempts']}){reason}")


def _print_ensembles(sweep, summaries) -> None:
    from search.status import summarize_ensembles

    for ens in summarize_ensembles(sweep, summaries):
        print(ens.describe())


def _print_transfers(sweep) -> None:
    from search.status import summarize_transfers

    for transfer in summarize_transfers(sweep):
        target = " ".join(f"{k}={v}" for k, v in transfer["fixed"].items())
        loss = f": loss {transfer['loss']:.4f}" if transfer["loss"] is not None else ""
        print(f"transfer {transfer['name']} ({target} at {transfer['source']}'s optimum): {transfer['state']}{loss}")
