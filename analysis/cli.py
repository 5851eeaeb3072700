"""``megadocs analysis export|efficiency|fit|report``: thin entry points into analysis/.

Heavy libraries (pandas, scipy, matplotlib, optuna) are imported inside the handlers so that
``megadocs --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path

from megadocs.cli import Destination, examples, flags_named
from megadocs.errors import FieldError, UserError
from megadocs.exits import Exit
from megadocs.formats import atomic_file


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analysis", help="ledger -> tables, scaling-law fits, data efficiency, figures, report",
        description="Analyse a sweep's ledger: tables, power-law fits, data efficiency, the paper's figures.",
        **examples("megadocs analysis report search/examples/analytic.yaml --out runs/report",
                   "megadocs analysis export search/examples/analytic.yaml --out runs/runs.csv"),
    )
    commands = parser.add_subparsers(dest="analysis_command", metavar="{export,efficiency,fit,report}")

    export = commands.add_parser(
        "export", help="write the ledger as a table (one row per run)",
        description="Write a sweep's ledger as a CSV or parquet table: one row per run (point, fixed "
        "method/G, status, losses on every validation set, job, provenance) or one per certification.",
        **examples("megadocs analysis export search/examples/analytic.yaml --out runs/runs.csv",
                   "megadocs analysis export SWEEP.yaml --out certs.parquet --table certifications"),
    )
    export.add_argument("sweep", metavar="SWEEP.yaml")
    export.add_argument("--out", required=True, action=Destination, folder=False, metavar="FILE.{csv,parquet}")
    export.add_argument(
        "--table", choices=("runs", "certifications"), default="runs",
        help="runs: one row per run (default); certifications: one row per certification",
    )
    export.set_defaults(func=_export)

    eff = commands.add_parser(
        "efficiency", help="data efficiency of a loss against a baseline loss under a real-data law",
        description="Effective-data ratio ((L0 - E) / (L - E))^(1/alpha) of the reference law "
        "L(D) = E + A D^(-alpha). Default law: analysis/reference_law.yaml (alpha 0.235, E 1.92).",
        **examples("megadocs analysis efficiency --loss 3.41 --baseline-loss 3.52",
                   "megadocs analysis efficiency --loss 3.41 --baseline-loss 3.52 --alpha 0.3 --asymptote 1.8"),
    )
    eff.add_argument("--loss", type=float, required=True, help="the method's loss L")
    eff.add_argument("--baseline-loss", type=float, required=True, help="the real-only baseline's loss L0")
    eff.add_argument("--alpha", type=float, default=None, help="data exponent of the reference law")
    eff.add_argument("--asymptote", type=float, default=None, help="irreducible loss E of the reference law")
    _add_law_arguments(eff)
    _add_noise_sigma(eff, "a loss outside the law's evidence (a given law's loss_range, the --fit-baseline runs' "
                     "losses) by less than seed noise can tell is read at its edge (analysis.efficiency.range_margin); "
                     "without it the range is closed")
    eff.add_argument("--json", action="store_true",
                     help="print one JSON object: ratio, low, high, basis, determined, note, illustrative, "
                     "margin and the law (a fitted law as `fit --json` gives it)")
    eff.set_defaults(func=_efficiency, _parser=eff)

    fit = commands.add_parser(
        "fit", help="fit L(x) = E + A x^(-alpha) to a table or to a sweep's certified losses",
        description="Fit L(x) = E + A x^(-alpha) per group, with bootstrap intervals and warnings about "
        "what the points cannot determine. INPUT is a table (CSV/JSON/parquet) or a sweep YAML "
        "(then: certified losses, default --x g --group method).",
        **examples("megadocs analysis fit SWEEP.yaml   # L(G) per method: certified losses at 3+ values of G",
                   "megadocs analysis fit losses.csv --x tokens --y loss --group method --huber 0.001"),
    )
    fit.add_argument("input", metavar="INPUT")
    fit.add_argument("--x", default=None, help="column of sizes (default: g for a sweep)")
    fit.add_argument("--y", default="loss", help="column of losses (default: loss)")
    fit.add_argument("--group", default=None, help="fit one law per value of this column (default: method for a sweep)")
    # the fit's options are dest'ed by analysis.scaling.fit_power_law's keywords: its errors name the flags
    fit.add_argument("--huber", dest="huber_delta", type=float, default=None, metavar="DELTA",
                     help="Huber loss on log residuals with this threshold (default: least squares)")
    fit.add_argument("--alpha", dest="fix_alpha", type=float, default=None, metavar="ALPHA", help="hold alpha fixed")
    fit.add_argument("--asymptote", dest="fix_E", type=float, default=None, metavar="ASYMPTOTE", help="hold E fixed")
    _add_noise_sigma(fit, "the bootstrap draws losses with it (parametric), which gives intervals even where "
                     "the points leave no residual")
    fit.add_argument("--bootstrap", dest="n_boot", type=int, default=None, metavar="BOOTSTRAP",
                     help="bootstrap refits (0: no interval; default: analysis.scaling.N_BOOT, the report's count)")
    fit.add_argument("--json", action="store_true",
                     help="print a JSON list, one object per group (analysis.fits.FitRecord): group, x, error "
                     "(null when fitted), n_points, loss, level, params (each: estimate, low, high, fixed, "
                     "determined), rmse_log, notes; a group that could not be fitted has its error and nulls, and failed: "
                     "true where it makes the command exit 1 (all but a curve of a method's other setting with too few G)")
    fit.set_defaults(func=_fit, _parser=fit)

    report = commands.add_parser(
        "report", help="write DIR/report.md with tables and every figure the ledger supports",
        description="Write DIR/report.md: certification tables, loss vs G per algorithm with the real-only "
        "line, fits of L(G), data efficiency, certified hyperparameters and search paths, as the ledger allows.",
        **examples("megadocs analysis report search/examples/analytic.yaml --out runs/report",
                   "megadocs analysis report SWEEP.yaml --out runs/report --ensembles auto"),
    )
    report.add_argument("sweep", metavar="SWEEP.yaml")
    report.add_argument("--out", required=True, action=Destination, folder=True, metavar="DIR")
    report.add_argument(
        "--ensembles", nargs="+", default=None, metavar="[ALGORITHM=]FILE",
        help="ensemble losses: `megadocs train ensemble --json` reports or tables with algorithm, k, loss "
        "(ALGORITHM=FILE labels a file's rows: ALGORITHM is the part before the first =, a plain name without /, "
        "so runs/lr=0.01/ens.json is a FILE alone); "
        "`auto`: score the sweep's ensemble studies now (trained members)",
    )
    _add_law_arguments(report)
    _add_noise_sigma(report, "used instead of the sweep's measured noise wherever the report judges against seed "
                     "noise (Findings, rises with G, a given law's loss_range, as `efficiency`) and in the "
                     "bootstrap of its L(G) fits (as `fit`)")
    report.set_defaults(func=_report, _parser=report)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def numeric_column(table, column: str, source: str):
    """A table column as floats; UserError naming the file, column and first value that is no number
    (a header repeated mid-file, a unit suffix), instead of a ValueError traceback from the fit."""
    import pandas as pd

    values = pd.to_numeric(table[column], errors="coerce")
    bad = table[column][values.isna() & table[column].notna()]
    if len(bad):
        raise UserError(f"{source}: column {column!r} must hold numbers, got {bad.iloc[0]!r} "
                        f"(row {bad.index[0] + 1}; {len(bad)} such value(s))")
    return values.to_numpy(dtype=float)


def _export(args) -> int:
    from analysis.frame import RECORD_COLUMNS
    from analysis.ledger import load_tables
    from search.sweep import load_sweep

    out = Path(args.out)
    if out.suffix not in (".csv", ".parquet"):
        raise UserError(f"--out: {out} must end in .csv or .parquet")
    tables = load_tables(load_sweep(args.sweep))
    frame = tables.runs if args.table == "runs" else tables.certifications
    frame = frame.drop(columns=[c for c in RECORD_COLUMNS if c in frame])  # records: their display form is there
    if len(tables.runs) == 0:
        print(f"warning: the ledger of sweep {tables.sweep_name!r} has no runs yet "
              f"(run `megadocs search certify {args.sweep}`); writing an empty table", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)  # one that cannot be made: --out's line (megadocs.cli.Destination)
    csv = out.suffix == ".csv"
    with atomic_file(out, "w" if csv else "wb") as handle:
        if csv:
            frame.to_csv(handle, index=False)
        else:
            frame.to_parquet(handle, index=False)
    print(f"wrote {len(frame)} {args.table} rows, {len(frame.columns)} columns to {out}")
    return 0


def _add_law_arguments(parser) -> None:
    """The options `_law_from_args` reads: a reference-law file, or a law fitted to baseline runs."""
    parser.add_argument("--reference", default=None, metavar="LAW.yaml",
                        help="a reference-law file (alpha, E, provenance; optional name and loss_range) for data efficiency")
    parser.add_argument(
        "--fit-baseline", default=None, metavar="TABLE",
        help="fit the law to your own real-only runs: a CSV/JSON/parquet with columns D (or tokens) and loss; "
        "efficiencies get bootstrap intervals",
    )
    parser.add_argument("--bootstrap", dest="n_boot", type=int, default=None, metavar="BOOTSTRAP",
                        help="bootstrap refits of --fit-baseline (default: analysis.scaling.N_BOOT, as `fit`'s)")


def _add_noise_sigma(parser, use: str) -> None:
    """``--noise-sigma SD``, one option with one meaning wherever it is offered (``use``: what the
    command does with it); :func:`_noise_sigma` reads it. The flag is analysis.fit_checks.NOISE_SIGMA_FLAG
    (not imported here: it would load numpy)."""
    parser.add_argument("--noise-sigma", type=float, default=None, metavar="SD",
                        help="seed-to-seed std of one loss (e.g. the seed sd a sweep with `noise: {repeats: N}` "
                        f"measured): {use}")


def _noise_sigma(args) -> float | None:
    """``--noise-sigma`` where given, refused in one line unless a finite sd > 0."""
    sigma = args.noise_sigma
    if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
        raise UserError(f"--noise-sigma: need a finite seed-noise sd > 0, got {sigma}")
    return sigma


def _refuse_bootstrap_without_fit(args) -> None:
    """``--bootstrap`` of a command with `_add_law_arguments` sets the refits of ``--fit-baseline``'s
    law alone: without it, it would do nothing, so it is refused naming the option it needs."""
    if args.n_boot is not None and not args.fit_baseline:
        raise UserError("--bootstrap: only with --fit-baseline (the refits of a law fitted to your real-only runs); "
                        "a law given by --reference or --alpha/--asymptote is not refitted")


def _bootstrap(args) -> dict:
    """``n_boot`` for a fit: ``--bootstrap`` where given, else the fits' own default (one count everywhere)."""
    return {} if args.n_boot is None else {"n_boot": args.n_boot}


def _law_from_args(args):
    """The reference law an efficiency is computed with: the alpha/E pair, a file, a fit, or the default."""
    import numpy as np

    from analysis.efficiency import ReferenceLaw, load_reference_law
    from analysis.fit_checks import FIT
    from analysis.fits import describe_fit

    alpha, asymptote = getattr(args, "alpha", None), getattr(args, "asymptote", None)
    given = [name for name, value in (("--alpha", alpha), ("--asymptote", asymptote)) if value is not None]
    if len(given) == 1:
        raise UserError(f"{given[0]}: give both --alpha and --asymptote (only the pair defines the ratio)")
    if given and (args.reference or args.fit_baseline):
        raise UserError("--alpha/--asymptote: give the law once (either the pair, --reference or --fit-baseline)")
    if args.reference and args.fit_baseline:
        raise UserError("--reference: give the law once (either --reference or --fit-baseline)")
    if args.fit_baseline:
        from analysis.frame import read_table

        table = read_table(args.fit_baseline)
        size = "D" if "D" in table else "tokens"
        missing = [c for c in (size, "loss") if c not in table]
        if missing:
            raise UserError(f"{args.fit_baseline}: missing column(s) {missing} (expected D or tokens, and loss)")
        data_sizes, losses = (numeric_column(table, column, args.fit_baseline) for column in (size, "loss"))
        usable = np.isfinite(data_sizes) & np.isfinite(losses)  # the points the fit keeps (it names the others)
        sizes = np.unique(data_sizes[usable])
        if len(sizes) < 3:  # the fit's own advice (fix alpha or E) cannot be combined with --fit-baseline
            left_out = int((~usable).sum())
            raise UserError(f"--fit-baseline {args.fit_baseline}: {len(sizes)} distinct data size(s) "
                            f"{sorted(sizes.tolist())}" + (f" with a finite loss ({left_out} row(s) without one)"
                                                            if left_out else "")
                            + " cannot determine E, A and alpha; add real-only runs at 3 or more sizes, or give "
                            "the law as --alpha and --asymptote, or --reference LAW.yaml")
        with flags_named(args._parser, where=FIT):  # --bootstrap 5, not the fit's n_boot
            [law] = _fit_table(table.assign(**{size: data_sizes, "loss": losses}), x=size, y="loss", group=None,
                               **_bootstrap(args)).values()
        if isinstance(law, str):  # the reason it could not be fitted
            raise UserError(f"--fit-baseline {args.fit_baseline}: {law}")
        if not getattr(args, "json", False):  # JSON output carries the law itself
            print(describe_fit(law, "D"))
        return law
    if given:
        if not (math.isfinite(alpha) and alpha > 0 and math.isfinite(asymptote) and asymptote >= 0):
            raise UserError(f"--alpha/--asymptote: need a finite alpha > 0 and a finite asymptote E >= 0, "
                            f"got alpha={alpha}, E={asymptote}")
        return ReferenceLaw(alpha=alpha, E=asymptote, provenance="given on the command line",
                            name="the law given on the command line")
    return load_reference_law(args.reference)


def _efficiency(args) -> int:
    """Exit 0 with a ratio or a "not determined" verdict (an answer, as a fit's is); a loss at or
    below a stated asymptote is a bad input (exit 2, one line)."""
    from analysis.efficiency import NO_UPPER_BOUND, STATED_CAVEAT, Basis, ReferenceLaw, efficiency

    sigma = _noise_sigma(args)
    _refuse_bootstrap_without_fit(args)
    law = _law_from_args(args)
    with flags_named(args._parser, where="efficiency"):  # --loss: expected a finite method loss, got nan
        result = efficiency(args.loss, args.baseline_loss, law, noise_sd=sigma)
        if result.basis is Basis.BELOW_E:  # its note is of the lower loss: named by that loss's flag
            lower = "loss" if args.loss <= args.baseline_loss else "baseline_loss"
            raise FieldError(lower, f"{result.note}; no finite amount of real data reaches it (check E or the loss)",
                             where="efficiency")
    if args.json:
        from analysis.fits import fit_json
        from megadocs.formats import dumps_json

        law_json = law.model_dump() if isinstance(law, ReferenceLaw) else fit_json(law)
        print(dumps_json({**result.to_json(), "law": law_json}))
        return 0
    whose = f"{result.basis.value}; " if result.basis.determined else ""  # on the number's line: how it was read
    if isinstance(law, ReferenceLaw):  # ... and whose law
        whose += f"{STATED_CAVEAT}; "
        law_text = f"{law.name}, alpha={result.alpha:.4g}, E={result.E:.4g}"
    else:
        law_text = "the fitted law above"
    print(f"data efficiency: {result.format()}  ({whose}loss {args.loss} vs baseline {args.baseline_loss}; {law_text})")
    if result.note:
        print(f"  {result.note}")
    if result.basis.determined and args.fit_baseline and result.interval is None and NO_UPPER_BOUND not in result.note:
        print("no interval for the efficiency: the fitted law has no usable bootstrap draws (see its notes above)")
    if result.effective_tokens is not None:
        print(f"effective data: {result.effective_tokens:,.0f} ({result.effective_basis})")  # caveat: above
    return 0


def _fit_table(frame, *, x: str, y: str, group: str | None, **options) -> dict:
    """One law per group of a table (a single group "all" without ``group``) through
    ``analysis.fits.fit_groups``: ``fit TABLE`` and ``--fit-baseline TABLE`` fit alike, bootstrap
    seeds and left-out non-finite losses included, so the same points get the same interval and the
    same determined verdict from both. An option no fit takes (`--huber -1`) is bad input, not "not
    fitted": a FitOptionError of :data:`~analysis.fit_checks.FIT`, which the caller's flags name."""
    from analysis.fits import fit_groups

    if group is None:
        frame, group = frame.assign(_all="all"), "_all"
    return fit_groups(frame, x=x, y=y, group=group, **options)


def _fit(args) -> int:
    from analysis.fit_checks import FIT
    from analysis.fits import describe_fit

    options = dict(
        loss="huber" if args.huber_delta is not None else "linear",
        huber_delta=args.huber_delta if args.huber_delta is not None else 0.01,
        fix_alpha=args.fix_alpha,
        fix_E=args.fix_E,
        noise_sigma=_noise_sigma(args),
        **_bootstrap(args),
    )
    sweep = args.input.endswith((".yaml", ".yml"))
    if sweep:
        from analysis.experiments import curve_notes, generation_points
        from analysis.generation import empty_table
        from analysis.ledger import load_tables
        from search.sweep import load_sweep

        tables = load_tables(load_sweep(args.input))  # a missing or unreachable ledger is said here
        try:  # the report's points: main model, no synthetic-only ablation, the set the curves are read on
            _main, frame = generation_points(tables.certifications)
        except UserError:  # no finite loss yet: said below
            frame = empty_table()
        options["notes"] = curve_notes(tables.certifications)  # and its notes: how each curve got its points
        if len(frame) == 0 and args.x is None:
            raise UserError(f"{args.input}: no synthetic-data certification has a loss yet; L(G) is fitted per "
                            "algorithm over G (the real-only baseline is no point of it)")
        x, group = args.x or "g", args.group or "method"
    else:
        from analysis.frame import read_table

        frame = read_table(args.input)
        if args.x is None:
            raise UserError("--x: name the column of sizes (e.g. D, g, k)")
        x, group = args.x, args.group
    for dest, column in (("x", x), ("y", args.y), ("group", group)):
        if column is not None and column not in frame:
            with flags_named(args._parser):  # the option that names it: --group, not --x/--y/--group
                raise FieldError(dest, f"column {column!r} not in {args.input} (columns: {list(frame.columns)})")
    if len(frame) == 0:
        raise UserError(f"{args.input}: no rows to fit")
    frame = frame.assign(**{column: numeric_column(frame, column, args.input) for column in (x, args.y)})
    with flags_named(args._parser, where=FIT):  # --huber: ..., not the fit's huber_delta
        fits = _fit_table(frame, x=x, y=args.y, group=group, **options)
    if sweep:  # a curve of another setting with too few G is no failed fit, however the points are grouped
        from analysis.experiments import failed_curves

        failed = failed_curves(fits, frame, group)
    else:
        failed = [name for name, fit in fits.items() if isinstance(fit, str)]
    if args.json:
        from analysis.fits import fit_record
        from megadocs.formats import dumps_json

        rows = [fit_record(None if group is None else name, x, fit, failed=name in failed).model_dump(mode="json")
                for name, fit in fits.items()]
        print(dumps_json(rows))
        return Exit.NEGATIVE if failed else Exit.OK
    for name, fit in fits.items():
        print(f"[{name}]" if group is not None else "", file=sys.stdout)
        if isinstance(fit, str):
            print(f"  not fitted: {fit}")
            if name not in failed:
                print("  (a curve of another setting than the method's, with too few G: no failed fit)" if group == "method"
                      else "  (points of curves of another setting than their method's only, with too few G: no failed fit)")
        else:
            print(describe_fit(fit, x))
    return Exit.NEGATIVE if failed else Exit.OK


def _report(args) -> int:
    from analysis.report import build_report
    from search.sweep import load_sweep

    sigma = _noise_sigma(args)
    _refuse_bootstrap_without_fit(args)
    sweep = load_sweep(args.sweep)
    created = not Path(args.out).exists()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    try:
        path = build_report(sweep, args.out, ensembles=args.ensembles, reference_law=_law_from_args(args),
                            noise_sd=sigma)
    except BaseException:
        if created:  # a ledger that cannot be read leaves no empty --out behind (rmdir: only if empty)
            with contextlib.suppress(OSError):
                Path(args.out).rmdir()
        raise
    print(f"wrote {path}")
    return 0
