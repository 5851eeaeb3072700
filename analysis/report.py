"""``report.md`` for a sweep: tables of certified points, losses, efficiencies, bounds, compute,
and every figure the ledger can support; what cannot be drawn is listed with the reason.

:func:`render_report` is the pure core over the analysis tables; :func:`build_report` reads a
sweep's ledger (through ``analysis.ledger``) and calls it. Both are usable in-process (the
demo calls ``build_report``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.efficiency import (
    FIT_ADVICE,
    NO_UPPER_BOUND,
    STATED_CAVEAT,
    Basis,
    ReferenceLaw,
    load_reference_law,
    range_margin,
)
from analysis.ensembles import (
    compare_asymptotes,
    ensemble_pairing,
    fit_ensembles,
    load_ensemble_table,
    score_ensemble_studies,
)
from analysis.experiments import (
    curve_notes,
    curve_points,
    generation_curves,
    next_generations,
    stitch_order_table,
    student_scaling_table,
    synthetic_only_mask,
    synthetic_only_table,
    transfer_table,
)
from analysis.figures import (
    map_axes,
    plot_certification_map,
    plot_certified_hparams,
    plot_diversity,
    plot_ensembles,
    plot_generation_scaling,
    plot_synthetic_only,
    plot_transfers,
    save_figure,
)
from analysis.findings import findings as findings_of
from analysis.findings import rises_with_g
from analysis.fits import describe_fit, fit_groups
from analysis.frame import POINT, compute_seconds, union_grid, val_sets
from analysis.generation import BASELINE_METHOD, baseline_notes, generation_table, with_optional_columns
from analysis.ledger import load_tables
from analysis.noise import CLEAR_SDS, seed_noise
from analysis.scaling import PowerLawFit
from megadocs.errors import UserError
from megadocs.formats import IID, IID_LONG, IID_SETS, IID_SHORT, describe_validation_set, write_atomic
from search.certificate import Support
from search.status import format_extensions

if TYPE_CHECKING:
    from search.status import CertificationSummary, EnsembleSummary, TransferSummary
    from search.sweep import Sweep

__all__ = ["render_report", "build_report", "law_paragraphs"]

FIGURE_DIR = "figures"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if math.isinf(value):
            return "inf (diverged)"
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' to_markdown needs `tabulate`, which we avoid)."""
    if frame.empty:
        return "_(none)_"
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _fit_blocks(fits: Mapping[str, PowerLawFit | str], x_name: str) -> list[str]:
    """Each group's fit as a code block under its bold name (a group that could not be fitted: why)."""
    lines = []
    for name, fit in fits.items():
        text = describe_fit(fit, x_name) if isinstance(fit, PowerLawFit) else f"not fitted: {fit}"
        lines += [f"**{name}**", "", "```", text, "```", ""]
    return lines


def _point_text(point: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in point.items())


def _hours(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.3g} s"  # 0.004 s is not "0 s"


class _Report:
    """Collects sections, figures and skip notes while the report is assembled."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.lines: list[str] = []
        self.skipped: list[str] = []
        self.figures: list[Path] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def figure(self, make, name: str, caption: str) -> None:
        """Draw with ``make()`` and embed it; a ValueError (not enough data) becomes a skip note."""
        try:
            fig = make()
        except ValueError as exc:
            self.skipped.append(f"{caption}: {exc}")
            return
        png, _pdf = save_figure(fig, self.out_dir / FIGURE_DIR, name)
        self.figures.append(png)
        self.add(f"![{caption}]({FIGURE_DIR}/{png.name})", f"*{caption}* ([PDF]({FIGURE_DIR}/{name}.pdf))", "")


def _certified_points_table(certifications: pd.DataFrame) -> pd.DataFrame:
    """``rests on``: what each certificate rests on (interior / bound / not searched); ``extended``:
    the axes whose evidence lies beyond the listed grid (a sweep's ``extend:``), with their values."""
    columns = ["certification", "method", "g", "state", "support", "loss",
               *[c for c in certifications if c.startswith(POINT)], "bounds_hit", "extended", "diverged_neighbours",
               "noise_sd", "repeats", "ties", "n_finished", "n_running", "n_failed", "wall_time_s"]
    table = certifications[[c for c in columns if c in certifications]].copy()
    if "extended" in table and not table["extended"].astype(bool).any():
        table = table.drop(columns=["extended"])  # no sweep extension reached: nothing to say
    table = table.rename(columns={"support": "rests on"})
    return table.rename(columns={c: c[len(POINT):] for c in table.columns if c.startswith(POINT)})


def _basis_notes(certifications: pd.DataFrame) -> list[str]:
    """Paragraphs under the certified table: certificates leaning on a bound, searching nothing, or
    resting on extension values."""
    notes = []
    support = (certifications["support"] if "support" in certifications
               else pd.Series(None, index=certifications.index, dtype=object))
    leaning = certifications[support == Support.BOUND.value]
    if len(leaning):
        notes.append("Certificates that lean on a search bound (a compute limit, not evidence of optimality; "
                     "widen the grid or list values under `extend:`): "
                     + "; ".join(f"{r.certification} ({r.bounds_hit})" for r in leaning.itertuples()))
    unsearched = certifications[support == Support.NOT_SEARCHED.value]
    if len(unsearched):
        notes.append("Certified without a search (every axis has one value: one point run, compared with nothing): "
                     + ", ".join(unsearched["certification"]))
    if "extended" in certifications:
        moved = certifications[certifications["extended"].astype(bool)]
        if len(moved):
            notes.append("Certificates resting on values beyond the listed grid (reached through `extend:` when the "
                         "best point sat on a bound): " + "; ".join(f"{r.certification} ({r.extended})"
                                                                     for r in moved.itertuples()))
    return notes


def _search_sections(report: _Report, runs: pd.DataFrame, summaries: Sequence[CertificationSummary], grids) -> None:
    report.add("## Certification maps (Figure 10)", "")
    by_name = {s.name: s for s in summaries}
    for name, summary in by_name.items():
        mine = runs[runs["certification"] == name]
        grid = (grids or {}).get(name)
        chosen = map_axes(mine, summary, grid)
        if chosen is None:
            report.skipped.append(f"Figure 10 for {name}: fewer than two grid axes varied in its runs")
            continue
        x_axis, y_axis = chosen
        safe = name.replace("/", "_").replace(" ", "_")
        report.figure(
            lambda mine=mine, summary=summary, x=x_axis, y=y_axis, grid=grid: plot_certification_map(
                mine, summary, x_axis=x, y_axis=y, grid=grid
            ),
            f"fig10-map-{safe}",
            f"Figure 10: certification path of {name} on the {x_axis} x {y_axis} slice",
        )


def _generation_sections(report: _Report, certifications: pd.DataFrame, table: pd.DataFrame | str, law, grids,
                         fits: tuple[str, dict[str, PowerLawFit | str]] | None, noise_sd: float | None,
                         point_notes: Mapping[str, list[str]]) -> None:
    """Figures 1/2/5 and 11 with their tables; ``table`` is the generation table of
    ``certifications`` under ``law``, or why there is none; ``noise_sd``: the given seed noise
    (None: the certifications' own, :func:`analysis.noise.seed_noise`); ``point_notes``: per curve, how
    its certifications became its points (a curve of another setting, several made one point:
    :func:`analysis.experiments.curve_notes`)."""
    report.add("## Generation scaling (Figures 1/2/5)", "")
    if point_notes:
        report.add("One setting per curve, one point per configuration and G. "
                   + " ".join(f"{method}: {note}." for method, notes in point_notes.items() for note in notes), "")
    if isinstance(table, str):
        report.skipped.append(table)  # the message names the section
        return
    if (compared := baseline_notes(table)):
        report.add("Real-only baselines of several settings: " + "; ".join(compared) + ".", "")
    sigma, source = seed_noise(certifications, noise_sd)
    report.add(*law_paragraphs(table, law, sigma, source))
    verdict, rises = rises_with_g(table, sigma)
    report.add(f"**{verdict}**" if rises else verdict, "")
    if rises:
        report.add(*[f"- {rise.message()}" for rise in rises], "")
    report.add(*_missing_efficiencies(table))
    order = {name: i for i, name in enumerate(["objective", *IID_SETS])}
    for val_set, part in sorted(table.groupby("set"), key=lambda item: (order.get(item[0], 9), item[0])):
        columns = ["method", "g", "certified", "loss", "baseline_loss", "gain", "efficiency", "efficiency_low",
                   "efficiency_high", "efficiency_basis", "bounds_hit"]  # each basis is explained once, above
        shown = part[columns].dropna(axis=1, how="all")
        meaning = [f"*{describe_validation_set(val_set)}.*", ""] if val_set != "objective" else []
        report.add(f"### {val_set}", "", *meaning, _markdown_table(shown), "")
        number = "1" if val_set in (IID, "objective") else ("5" if val_set in (IID_SHORT, IID_LONG) else "2")
        report.figure(
            lambda val_set=val_set: plot_generation_scaling(table, val_set=val_set, law=law),
            f"fig{number}-loss-vs-g-{val_set}",
            f"Figure {number}: tuned {val_set} loss vs G",
        )
    if fits is not None and fits[1]:  # L(G) per algorithm on the set the curves are read on
        main, by_method = fits
        report.add(f"### Fits of L(G) = E + A G^(-alpha) ({main})", "")
        report.add(*_fit_blocks(by_method, "G"))
    report.figure(
        lambda: plot_certified_hparams(certifications, grid=union_grid(grids)),
        "fig11-certified-hparams",
        "Figure 11: certified hyperparameters vs G",
    )


def law_paragraphs(table: pd.DataFrame, law: ReferenceLaw | PowerLawFit, noise_sd: float, source: str) -> list[str]:
    """The Markdown lines above the generation tables (:func:`analysis.generation.generation_table`) that
    say how their efficiencies were read: from which law (a stated one with
    :data:`analysis.efficiency.STATED_CAVEAT`), what each ``efficiency_basis`` they carry means, or why
    there are none (``noise_sd`` from ``source``: :func:`analysis.noise.seed_noise`). The report and the
    notebook print the same lines."""
    if table["efficiency_basis"].isna().all():
        return [_no_efficiency(table), ""]
    if isinstance(law, ReferenceLaw):
        return [_stated_law_text(law, table, noise_sd, source), ""]
    margin, sds = _margin(law, noise_sd, source)
    edge = (f"; outside it by less than {margin:.4f} nats ({sds}), which seed noise cannot tell from it, at its "
            "edge (`at the edge`: the slope the points pin there, not E)" if margin else "")
    return [
        "Data efficiency uses a real-data law fitted to the baseline runs (intervals: bootstrap over that fit); "
        "it is computed for the i.i.d. loss only. A loss within the baseline runs' range is read off the fitted "
        f"curve between its points (`interpolated`: no asymptote needed){edge}; beyond {'that' if margin else 'it'} "
        "the efficiency rests on E and alpha (`extrapolated`), and is `not determined` where the fit below does "
        "not determine them.",
        "", "```", describe_fit(law, "D"), "```", "",
    ]


def _margin(law: ReferenceLaw | PowerLawFit, noise_sd: float, source: str) -> tuple[float, str]:
    """The seed-noise margin around a law's evidence (:func:`analysis.efficiency.range_margin`) and the
    words that say where it comes from (``noise_sd`` from ``source``, a stated law's ``loss_noise``)."""
    stated = law.loss_noise if isinstance(law, ReferenceLaw) else None
    sds = [f"{sd:.4f} {what}" for sd, what in ((noise_sd, source), (stated, "stated by the law (loss_noise)"))
           if sd is not None and math.isfinite(sd) and sd > 0]
    return (range_margin(law, noise_sd),
            f"{CLEAR_SDS:g} sds of the difference of two single runs at seed-noise sd {' and '.join(sds)}")


def _missing_efficiencies(table: pd.DataFrame) -> list[str]:
    """A paragraph each for the rows whose loss is below E, those the fitted law does not determine, and
    those whose ratio has no finite upper bound (no interval)."""
    lines = []
    below = table[table["efficiency_basis"] == Basis.BELOW_E.value]
    if len(below):
        lines += [
            "No data efficiency for " + ", ".join(f"{r.certification} ({r.efficiency_note})" for r in below.itertuples())
            + ": no amount of real data reaches a loss at or below the law's asymptote under that law. The shipped "
            "law is the paper's (300M models on DCLM with the Llama 3 tokenizer); losses of another tokenizer, "
            f"vocabulary or model size need their own: {FIT_ADVICE} (or give `--reference LAW.yaml`).", ""]
    loose = table[table["efficiency_basis"] == Basis.NOT_DETERMINED.value]
    if len(loose):
        lines += [
            "Data efficiency NOT determined for " + "; ".join(f"{r.certification} ({r.efficiency_note})"
                                                             for r in loose.itertuples())
            + ". Baseline runs at data sizes large enough to reach those losses would read it off the fitted curve; "
            "or give a law whose constants you can state (`--reference LAW.yaml`).", ""]
    unbounded = table[table["efficiency_basis"].notna() & table["efficiency_note"].fillna("").str.contains(NO_UPPER_BOUND)]
    if len(unbounded):
        lines += ["No interval for the data efficiency of " + "; ".join(f"{r.certification} ({r.efficiency_note})"
                                                                      for r in unbounded.itertuples()) + ".", ""]
    return lines


def _stated_law_text(law: ReferenceLaw, table: pd.DataFrame, noise_sd: float, source: str) -> str:
    """The paragraph above the table of a law given as constants: whose law, that its efficiencies
    are illustrative, its calibration range and the seed-noise margin around it (``noise_sd``, from
    ``source``: :func:`analysis.noise.seed_noise`), and the meaning of each ``efficiency_basis``
    value its rows carry (analysis.efficiency.efficiency_basis)."""
    text = (f"Data efficiency uses {law.name}, alpha={law.alpha}, E={law.E} ({law.provenance.strip().rstrip('.')}); "
            f"it is computed for the i.i.d. loss only, {STATED_CAVEAT} ({FIT_ADVICE}).")
    if law.loss_range is None:
        return text + " It states no calibration losses, so its rows read `stated` unchecked."
    low, high = law.loss_range
    margin, sds = _margin(law, noise_sd, source)
    noise = (f"a loss outside them by less than {margin:.4f} nats ({sds}) cannot be told from them" if margin else
             "no seed-noise estimate widens them (`noise: {repeats: 2}` in the sweep, `--noise-sigma`, or `loss_noise` "
             "in the law)")
    outside = "outside them by more than that margin" if margin else "outside them"
    meanings = {  # each value a row of a stated law can carry (below E has its own paragraph)
        Basis.STATED: "both losses lie within them",
        Basis.AT_EDGE: "a loss lies outside them, within that margin: read as in range",
        Basis.OUT_OF_RANGE: f"a loss lies {outside}: an efficiency there would extrapolate the law, not estimate "
                            "this sweep's, so none is given",
    }
    present = [f"`{basis.value}`: {meaning}" for basis, meaning in meanings.items()
               if (table["efficiency_basis"] == basis.value).any()]
    return (text + f" Its constants were calibrated on i.i.d. losses {low:g}-{high:g}; {noise}."
            + (" Per row, " + "; ".join(present) + "." if present else ""))


def _no_efficiency(table: pd.DataFrame) -> str:
    """Why a generation table has no data efficiency at all (every row's basis is empty)."""
    iid_like = table[table["set"].isin(["objective", IID])]
    if not len(iid_like):
        return "No data efficiency: it is a ratio on the i.i.d. loss, and no certification has one."
    lacks = [what for what, present in (("a real-only baseline", (iid_like["method"] == BASELINE_METHOD).any()),
                                         ("a synthetic-data certification",
                                          (iid_like["method"] != BASELINE_METHOD).any())) if not present]
    if not lacks:  # not reached: generation_table gives every synthetic i.i.d. row beside a baseline a basis
        return "No data efficiency was computed for the i.i.d. loss."
    return ("No data efficiency: it compares a synthetic-data certification's i.i.d. loss with the real-only "
            f"baseline's, and the ledger lacks {' and '.join(lacks)} with an i.i.d. loss.")


def _generation_fits(table: pd.DataFrame | str, noise_sd: float | None,
                     notes: Mapping[str, list[str]]) -> tuple[str, dict[str, PowerLawFit | str]] | None:
    """L(G) per algorithm, fitted once for every section (None: no finite loss yet, ``table`` is why):
    the points, the bootstrap count, the noise (``noise_sd``: ``--noise-sigma``) and the notes
    (:func:`analysis.experiments.curve_notes`) of ``megadocs analysis fit SWEEP.yaml``, so both give
    the same verdicts."""
    if isinstance(table, str):
        return None
    main, points = curve_points(table)
    return main, fit_groups(points, x="g", y="loss", group="method", noise_sigma=noise_sd, notes=notes)


def _next_generations_section(report: _Report, fits: tuple[str, dict[str, PowerLawFit | str]] | None) -> None:
    """First section: what the fitted L(G) per algorithm predicts for the next doubling of G."""
    report.add("## Where to spend the next generations", "")
    if fits is None or not fits[1]:
        report.add("No synthetic-data certification has a loss yet: there is no L(G) to fit, so nothing to "
                   "predict.", "")
        return
    main, by_method = fits
    shown = next_generations(by_method)
    if not any(isinstance(fit, PowerLawFit) for fit in by_method.values()):
        report.add(f"No algorithm's L(G) could be fitted ({main} loss; E, A and alpha need three distinct G), "
                   "so nothing is predicted:", "", _markdown_table(shown), "")
        return
    report.add(
        f"From the fitted L(G) = E + A G^(-alpha) per algorithm ({main} loss): the loss measured at the largest "
        "G certified beside the fit's value there; the loss predicted at twice that G and what the doubling "
        "gains (`gain_2g`), each with the interval of the fit's bootstrap refits (every refit fits the points); "
        "and the asymptote E (the best any G can give). One doubling rests on the slope of the last points, "
        "which they can pin even where they leave E NOT determined; a blank is a number the points do not "
        "determine, and `note` says why. "
        "An extrapolation, not a measurement: certify 2G before relying on it.", "",
        _markdown_table(shown.dropna(axis=1, how="all")), "",
    )


def _experiment_sections(report: _Report, runs: pd.DataFrame, certifications: pd.DataFrame,
                         table: pd.DataFrame | str, transfer_sources: Mapping[str, str],
                         diversity: pd.DataFrame | None, *, students: pd.DataFrame,
                         transfers: Mapping[str, TransferSummary] | None) -> None:
    """Figure 4 (stitch order), Figure 6 (transfers), student scaling and generation diversity;
    ``table`` is the generation table of ``certifications`` (a string: why there is none)."""
    order = stitch_order_table(table) if not isinstance(table, str) else pd.DataFrame()
    if len(order):
        report.add("## Stitch order and long-context loss (Figure 4)", "",
                   "Stitched megadocs with the real document last (the paper's), first, and left out, on every "
                   "validation set (long-context sets are the extra held-out stores of the train config).", "")
        for val_set, part in order.groupby("set", sort=True):
            report.add(f"### {val_set}", "", _markdown_table(part[["method", "g", "certified", "loss", "gain"]]), "")
            report.figure(lambda val_set=val_set: plot_generation_scaling(order, val_set=val_set,
                                                                          title=f"Stitch order ({val_set})"),
                          f"fig4-stitch-order-{val_set}", f"Figure 4: stitch order, {val_set} loss vs G")
    transfers = transfer_table(runs, certifications, transfer_sources, current=transfers)
    if len(transfers):
        report.add("## Transferred hyperparameters (Figure 6)", "",
                   "Each method at its own certified point and at another certification's (`transfers:` in the "
                   "sweep); `cost` is what the borrowed hyperparameters lose.", "",
                   _markdown_table(transfers), "")
        report.figure(lambda: plot_transfers(transfers), "fig6-transfers", "Figure 6: own vs transferred hyperparameters")
        for row in transfers[transfers["own_loss"].isna()].itertuples():
            report.add(f"No cost for `{row.transfer}`: the sweep has no certified {row.method} at G={row.g:g} to "
                       f"compare with (certify `fixed: {{method: {row.method}, g: {row.g:g}}}` for its own optimum).", "")
    elif transfer_sources:
        report.skipped.append("Figure 6 (transfers): no transfer run has finished yet")
    students = student_scaling_table(students)  # every model size
    if len(students):
        report.add("## Student scaling", "",
                   "Loss win over the real-only baseline of the same model size (`gain.<model>`), and how much it "
                   "grows from the smallest to the largest model (`growth`; presets by parameter count; paper, 300M -> 1.5B: simple "
                   "0.144 -> 0.212, stitched 0.18 -> 0.248, latent 0.211 -> 0.274).", "",
                   _markdown_table(students), "")
    if diversity is not None and len(diversity):
        report.add("## Generation diversity vs G", "",
                   "Do more generations add new text? Distinct n-grams and compression ratio falling with G, or "
                   "cross-generation overlap rising, mean the extra generations repeat each other "
                   "(`megadocs gen diversity`; a thoughts pool at every G' its split points serve). Read next to "
                   "the loss curve above.", "",
                   _markdown_table(diversity.assign(pool=diversity["pool"].map(lambda path: Path(path).name))), "")
        report.figure(lambda: plot_diversity(diversity), "fig-diversity-vs-g", "Generation diversity vs G'")
    elif diversity is not None:  # the sweep names pools, none generated or measured yet
        report.skipped.append("generation diversity vs G: no pool of the sweep has a diversity block yet "
                              "(run `megadocs gen diversity --pool POOL` on each)")


def _synthetic_only_section(report: _Report, certifications: pd.DataFrame) -> None:
    """Figure 13: how much of a method's gain needs the real data mixed in."""
    table = synthetic_only_table(certifications)
    if len(table):
        shown = table if set(table["model"]) != {"base"} else table.drop(columns=["model"])
        report.add("## Synthetic-only ablation (Figure 13)", "",
                   "Each method trained on synthetic data only (mix 1, steps from `synthetic_epochs`, certified over "
                   "synthetic epochs and weight decay) against its mixed certification. `gain_*` is the loss win "
                   "over the real-only baseline; `share_from_real` = 1 - gain_synthetic_only / gain_mixed is the "
                   "share of the gain that comes from mixing real data.", "",
                   _markdown_table(shown), "")
        report.figure(lambda: plot_synthetic_only(table), "fig13-synthetic-only",
                      "Figure 13: mixed vs synthetic-only tuned loss vs G")
    elif synthetic_only_mask(certifications).any():
        report.skipped.append("Figure 13 (synthetic-only ablation): no method and G has a certified mixed and a "
                              "certified synthetic-only certification and a certified real-only baseline yet")


def _ensemble_sections(report: _Report, ensembles: pd.DataFrame | None, studies: Mapping[str, EnsembleSummary] | None,
                       problems: Mapping[str, str] | None, certifications: pd.DataFrame) -> None:
    """Each ensemble study, and per validation set the L(K) fits and their asymptotes, each compared
    with the real-only ensemble of its source's model and setting (:func:`analysis.ensembles.ensemble_pairing`)."""
    report.add("## Ensembles (Figure 7)", "")
    for name, study in (studies or {}).items():
        at = (f"members at `{study.source}`'s certified point ({_point_text(study.source_point)})"
              if study.source_point is not None else f"`{study.source}` is not certified yet")
        report.add(f"- ensemble study `{name}` ({at}): {len(study.completed)} of {study.wanted} members completed"
                   + (f"; {len(study.stale)} run(s) of an earlier certified point are not used" if study.stale else ""))
        problem = (problems or {}).get(name) or study.refusal()
        if problem:
            report.add(f"  - not scored: {problem}")
        else:
            report.add(f"  - losses per K: `megadocs train ensemble --members {' '.join(study.completed)} "
                       f"--json ensembles/{name}.json`")
    if studies:
        report.add("")
    if ensembles is None or len(ensembles) == 0:
        report.skipped.append(
            "Figure 7 (ensembles): no ensemble study could be scored (the reasons are under Ensembles)" if problems
            else "Figure 7 (ensembles): no ensemble losses given (run `megadocs train ensemble --json` over the "
            "ensemble members and pass the files with --ensembles)"
        )
        report.add("_No ensemble losses given._", "")
        return
    pairing = ensemble_pairing(studies or {}, certifications)
    for val_set in sorted(ensembles["set"].unique(), key=lambda s: (s != IID, s)):
        fits = fit_ensembles(ensembles, val_set=val_set)
        report.add(f"### {val_set}", "", _markdown_table(compare_asymptotes(fits, pairing=pairing)), "")
        report.add(*_fit_blocks(fits, "K"))
        report.figure(
            lambda fits=fits, val_set=val_set: plot_ensembles(ensembles, fits, val_set=val_set),
            f"fig7-ensembles-{val_set}",
            f"Figure 7: {val_set} loss vs ensemble size K",
        )


def render_report(
    runs: pd.DataFrame,
    certifications: pd.DataFrame,
    summaries: Sequence[CertificationSummary],
    out_dir: str | Path,
    *,
    sweep_name: str = "sweep",
    grids: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    ensemble_studies: Mapping[str, EnsembleSummary] | None = None,
    ensemble_problems: Mapping[str, str] | None = None,
    law: ReferenceLaw | PowerLawFit | None = None,
    ensembles: pd.DataFrame | None = None,
    notes: Sequence[str] | str | None = None,
    transfer_sources: Mapping[str, str] | None = None,
    diversity: pd.DataFrame | None = None,
    findings: bool | Sequence[str] = True,
    transfers: Mapping[str, TransferSummary] | None = None,
    preface: Sequence[str] | str | None = None,
    noise_sd: float | None = None,
) -> Path:
    """Write ``out_dir/report.md`` (and ``out_dir/figures/``) from the analysis tables.

    ``noise_sd``: the seed-to-seed sd of one loss (``--noise-sigma``), used wherever the report
    judges against seed noise (Findings, rises with G, a law's range margin) and in the
    bootstrap of its L(G) fits, as ``megadocs analysis fit --noise-sigma`` uses it; None: the
    certifications' own, pooled (:func:`analysis.noise.seed_noise`), and fits estimate it.

    ``preface``: paragraphs right under the title, before the Findings (the demo's: a rehearsal on
    toy data, not findings).

    ``findings``: True (the default) opens the report with a "Findings" section computed from the
    certifications of any sweep (:func:`analysis.findings.findings`); a list of paragraphs is
    appended to it (e.g. what is only illustrative at the caller's scale); False leaves it out.
    ``transfers`` (``LedgerTables.transfers``) keeps each transfer's result at its source's
    current certified point only (without it, every transfer run is tabulated)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    certifications = with_optional_columns(certifications)  # every section reads them (Figure 11: bounds)
    law = law if law is not None else load_reference_law()
    report = _Report(out_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report.add(f"# Report: {sweep_name}", "", f"Generated {stamp} by `megadocs analysis report`.", "")
    for paragraph in [preface] if isinstance(preface, str) else preface or []:
        report.add(paragraph, "")
    if findings is not False:
        report.add("## Findings", "")
        for paragraph in [*findings_of(generation_curves(certifications), noise_sd=noise_sd, every=certifications),
                          *([] if findings is True else findings)]:
            report.add(paragraph, "")
    if notes:
        report.add("## Notes", "")
        for note in [notes] if isinstance(notes, str) else notes:
            report.add(note, "")  # one paragraph each

    statuses = runs["status"].value_counts().to_dict() if len(runs) else {}
    compute = compute_seconds(runs)
    tokens = float(runs["metric.tokens_seen"].sum()) if "metric.tokens_seen" in runs else math.nan
    report.add(
        "## Summary",
        "",
        f"- certifications: {len(certifications)} ({int(certifications['certified'].sum()) if len(certifications) else 0} certified)",
        f"- runs: {len(runs)} ({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items())) or 'none'})",
        f"- compute used: {_hours(compute)} of run wall time"
        + (f", {tokens:,.0f} tokens trained" if math.isfinite(tokens) else ""),
        f"- validation sets: {', '.join(val_sets(runs)) or 'none recorded'}",
        "",
    )
    if len(runs) == 0 or len(certifications) == 0:
        report.add("The ledger holds no runs yet: nothing to tabulate or draw.", "")
        report.skipped.append("every table and figure: the ledger is empty")
    else:
        curves = generation_curves(certifications)  # neither the ablation nor another model size is a point of L(G)
        try:  # built once: the generation, stitch-order and fit sections read the same rows
            table: pd.DataFrame | str = generation_table(curves, law=law, noise_sd=noise_sd)
        except UserError as exc:  # no finite loss yet: the message names the section
            table = str(exc)
        point_notes = curve_notes(certifications)
        fits = _generation_fits(table, noise_sd, point_notes)
        _next_generations_section(report, fits)
        report.add("## Certified points", "", _markdown_table(_certified_points_table(certifications)), "")
        for note in _basis_notes(certifications):
            report.add(note, "")
        moved = [f"{s.name}: {format_extensions(s.extensions)}" for s in summaries if s.extensions]
        if moved:
            report.add("Search bounds moved through `extend:` (a value appended beyond a bound each time the best "
                       "point sat on it, in order): " + "; ".join(moved) + ".", "")
        _generation_sections(report, curves, table, law, grids, fits, noise_sd, point_notes)
        _experiment_sections(report, runs, curves, table, transfer_sources or {}, diversity,
                             students=certifications, transfers=transfers)
        _synthetic_only_section(report, certifications)
        _search_sections(report, runs, summaries, grids)
    _ensemble_sections(report, ensembles, ensemble_studies, ensemble_problems, certifications)
    report.add("## Not drawn", "")
    report.add(*([f"- {s}" for s in report.skipped] or ["Every figure could be drawn."]), "")
    path = out_dir / "report.md"
    write_atomic(path, "\n".join(report.lines))
    return path


def build_report(
    sweep: Sweep,
    out_dir: str | Path,
    *,
    ensembles=None,
    notes: Sequence[str] | str | None = None,
    reference_law: str | Path | ReferenceLaw | PowerLawFit | None = None,
    findings: bool | Sequence[str] = True,
    preface: Sequence[str] | str | None = None,
    noise_sd: float | None = None,
) -> Path:
    """Read a sweep's ledger and write ``out_dir/report.md``; returns its path.

    Args:
        sweep: the loaded sweep (``search.sweep.load_sweep`` turns a sweep file into one).
        ensembles: a DataFrame (algorithm, k, loss[, set]), file(s) ``[ALGORITHM=]PATH``
            readable by :func:`analysis.ensembles.load_ensemble_table`, or ``"auto"``: score the
            sweep's ensemble studies now with ``megadocs train ensemble`` (trained members only;
            results in ``out_dir/ensembles/``).
        notes: paragraphs of a "Notes" section after the Findings (the demo's notes).
        findings: open with a "Findings" section (default; see :func:`render_report`).
        preface: paragraphs under the title, before everything else (see :func:`render_report`).
        reference_law: a law file, a ReferenceLaw or a fitted law (default: the shipped law).
        noise_sd: a given seed-noise sd of one loss (see :func:`render_report`).
    """
    tables = load_tables(sweep)
    wants_auto = isinstance(ensembles, (str, list, tuple)) and (
        [ensembles] if isinstance(ensembles, str) else list(ensembles)) == ["auto"]
    problems: dict[str, str] = {}
    if wants_auto:
        sources, problems = score_ensemble_studies(tables.ensembles, Path(out_dir) / "ensembles")
        ensembles = sources or None
    if ensembles is not None and not isinstance(ensembles, pd.DataFrame):
        ensembles = load_ensemble_table(ensembles)
    law = reference_law
    if isinstance(law, (str, Path)):
        law = load_reference_law(law)
    return render_report(
        tables.runs,
        tables.certifications,
        tables.summaries,
        out_dir,
        sweep_name=tables.sweep_name,
        grids=tables.grids,
        ensemble_studies=tables.ensembles,
        ensemble_problems=problems,
        law=law,
        ensembles=ensembles,
        notes=notes,
        transfer_sources=tables.transfer_sources,
        diversity=tables.diversity,
        findings=findings,
        transfers=tables.transfers,
        preface=preface,
        noise_sd=noise_sd,
    )
