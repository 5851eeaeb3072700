"""The report's first screen: what a sweep found, in plain words, computed from the ledger.

Does synthetic data beat the real-only baseline, which algorithm is best, by how much relative
to the seed noise, which certificates lean on a search bound, and whether the tuned loss falls
with G. A difference counts as real only when it exceeds :data:`analysis.noise.CLEAR_SDS` standard deviations
of the difference of two single runs (``sigma * sqrt(2)``, sigma the seed noise of one loss:
:func:`analysis.noise.seed_noise`); otherwise it is called a tie within noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from analysis.frame import BOUNDS, SETTING
from analysis.generation import (
    BASELINE_METHOD,
    RISE_TOLERANCE,
    Rise,
    generation_table,
    loss_column,
    monotonicity,
)
from analysis.noise import CLEAR_SDS, noise_tolerance, seed_noise
from megadocs.errors import UserError
from search.grid import Bound

__all__ = ["rises_with_g", "findings"]

LR_EPOCHS = ("lr", "epochs")
"""Axes whose bound makes a certificate a grid corner rather than an optimum (mix may sit on its
bound: the best share of synthetic data can be the largest the grid allows)."""


def rises_with_g(table: pd.DataFrame, sigma: float) -> tuple[str, list[Rise]]:
    """Does the tuned loss rise with G? A one-sentence verdict for a user and the rises behind it
    (a table without a synthetic certification, or with one G per algorithm, says so: "does not
    rise" would read as a finding).

    With a noise estimate (``sigma`` finite) a rise counts beyond :func:`noise_tolerance`: only then
    is it a search that did not converge. Without one, every rise above ``RISE_TOLERANCE`` is
    listed, and the verdict says that it cannot be told from seed noise (never "failed").
    """
    synthetic = table[table["method"] != BASELINE_METHOD]
    if not len(synthetic):
        return "No synthetic-data certification has a loss: nothing to say about the tuned loss as G grows.", []
    if synthetic.groupby("method")["g"].nunique().max() < 2:  # "does not rise" would be vacuous
        return "One G per algorithm: nothing to say about the tuned loss as G grows.", []
    known = math.isfinite(sigma)
    tolerance = max(RISE_TOLERANCE, noise_tolerance(sigma))
    rises = monotonicity(table, tolerance=tolerance, sigma=sigma if known else None)
    if not known:
        if not rises:
            return "Tuned loss does not rise with G.", []
        return ("Tuned loss rises with G, but the sweep has no noise estimate (set `noise: {repeats: 2}` or more), "
                "so a rise this size cannot be told from seed noise.", rises)
    limit = (f"beyond seed noise (more than {tolerance:.4f} nats, {CLEAR_SDS:g} sds of a two-run difference at the "
             f"seed-noise sd {sigma:.4f})")
    if rises:
        return (f"Tuned loss rises with G {limit}: a larger G can reuse a smaller G's hyperparameters, so the "
                "larger G's search probably did not converge.", rises)
    small = len(monotonicity(table))
    return f"Tuned loss does not rise with G {limit}" + (
        f" ({small} rise(s) smaller than the noise threshold)." if small else "."), []


def _lr_epochs_bounds(bounds: Iterable[Bound]) -> list[str]:
    """Labels of the lr/epochs bounds among a certificate's (``"epochs upper"``), sorted."""
    return sorted(bound.label for bound in bounds if bound.axis in LR_EPOCHS)


def _comparison(baseline: pd.DataFrame, synthetic: pd.DataFrame, val_set: str, sigma: float,
                noise_text: str) -> list[str]:
    """The headline (does synthetic data help?) and the best tuned loss per algorithm."""
    tolerance = noise_tolerance(sigma)
    best_per_method = synthetic.loc[synthetic.groupby("method")["loss"].idxmin()].sort_values("loss")
    best = best_per_method.iloc[0]
    # each row's own baseline: of its setting where there is one (generation_table's baseline_for)
    base_loss, gain = float(best["baseline_loss"]), float(best["gain"])
    several = baseline[SETTING].fillna("").astype(str).nunique() > 1 if SETTING in baseline else False
    whose = (f" ({best['baseline']}, the one {best['method']} is compared with: each algorithm is compared with "
             "the baseline of its setting where there is one, named under Generation scaling)" if several else "")

    def verdict(delta: float) -> str:
        if not tolerance:
            return "not tested against noise"
        units = f"{abs(delta) / sigma:.1f} noise sds" if sigma > 0 else "noise sd 0"
        if delta > tolerance:
            return f"clearly better ({units})"
        if delta < -tolerance:
            return f"clearly worse ({units})"
        return f"a tie within noise ({units})"

    helps = tolerance and gain > tolerance
    hurts = tolerance and gain < -tolerance
    headline = ("Synthetic data helps at this scale" if helps else
                "Synthetic data hurts at this scale" if hurts else
                "Synthetic data makes no difference beyond seed noise at this scale" if tolerance else
                "Whether synthetic data helps cannot be told from single runs")
    lines = [
        f"**{headline}.** Real-only baseline{whose}: {val_set} loss {base_loss:.4f}. Best synthetic: "
        f"{best['method']} at G={best['g']:g}, {float(best['loss']):.4f} ({gain:+.4f} nats vs the baseline, "
        f"{verdict(gain)}); {noise_text}."
    ]
    per_method = [
        f"{row.method} {float(row.loss):.4f} at G={row.g:g} ({verdict(float(row.gain))})"
        for row in best_per_method.itertuples()
    ]
    ranking = "Best tuned loss per algorithm (vs the baseline): " + "; ".join(per_method) + "."
    if len(best_per_method) > 1:
        second = best_per_method.iloc[1]
        ranking += (f" Best algorithm: {best['method']}, ahead of {second['method']} by "
                    f"{float(second['loss']) - float(best['loss']):.4f} nats "
                    f"({verdict(float(second['loss']) - float(best['loss']))}).")
    lines.append(ranking)
    return lines


def findings(certifications: pd.DataFrame, *, noise_sd: float | None = None,
             every: pd.DataFrame | None = None) -> list[str]:
    """Markdown paragraphs (one per list item) for the report's "Findings" section, for any sweep:
    what it lacks (a baseline, a synthetic certification, a noise estimate) is said, not skipped.

    Gains are in nats against the seed noise; data efficiency is left to the report's generation
    section, which gives it with its basis and interval (no law here: a fitted baseline law would
    bootstrap every certification's ratio for a table these lines never print). ``noise_sd``: the
    seed noise of one loss to judge against, where the user gives it (:func:`analysis.noise.seed_noise`).
    ``every``: the certifications the "not certified yet" and on-bound lines name, where
    ``certifications`` are fewer (the report's are the curves', ``analysis.experiments.generation_curves``,
    which merge or leave out some: those are still named here); default ``certifications``."""
    if certifications is None or len(certifications) == 0:
        return ["Nothing certified yet: the ledger holds no certification."]
    lines: list[str] = []
    sigma, source = seed_noise(certifications, noise_sd)
    tolerance = noise_tolerance(sigma)
    sets = [s for s in ("iid", "objective") if loss_column(s) in certifications]
    val_set = sets[0] if sets else "objective"
    try:
        table = generation_table(certifications, sets=[val_set])
    except UserError as exc:  # no finite loss yet; anything else is a bug and must not read as "nothing yet"
        return [f"Nothing to compare yet: {exc}."]
    baseline = table[table["method"] == BASELINE_METHOD]
    synthetic = table[table["method"] != BASELINE_METHOD]
    noise_text = (
        f"seed noise sd {sigma:.4f} nats ({source}), so a difference "
        f"of two single runs is clear beyond {tolerance:.4f}"
        if tolerance else "seed noise was not measured (no `noise: repeats`) nor given (`--noise-sigma`), so no difference can be called clear"
    )
    if len(baseline) and len(synthetic):
        lines.extend(_comparison(baseline, synthetic, val_set, sigma, noise_text))
    else:
        lines.append(f"On the {val_set} loss the ledger lacks a "
                     f"{'real-only baseline' if not len(baseline) else 'synthetic certification'} to compare with; "
                     f"{noise_text}.")
    if len(synthetic):  # without one, the line above already says what the ledger lacks
        trend, rises = rises_with_g(table, sigma)
        lines.append(" ".join([trend, *(rise.message() + "." for rise in rises)]))

    named = certifications if every is None else every
    names = (named["certification"] if "certification" in named else
             [f"{method} G={g:g}" if pd.notna(g) else str(method) for method, g in zip(named["method"], named["g"])])
    if "certified" in named:
        pending = [str(name) for name, done in zip(names, named["certified"]) if not done]
        if pending:
            lines.append("Not certified yet (their loss is the best found so far, not an optimum): "
                         + ", ".join(pending) + ".")
    if BOUNDS in named:  # a frame built by hand or read from an export may have none: nothing to say
        lines.extend(_bound_lines(dict(zip(names, named[BOUNDS])), named))
    return lines


def _bound_lines(bounds: dict[str, Iterable[Bound]], certifications: pd.DataFrame) -> list[str]:
    """Certificates at grid corners (an lr/epochs bound) or at a mixing-fraction bound, or that none
    is at a corner (``bounds``: each certification's search bounds)."""
    lines = []
    corners = [(name, _lr_epochs_bounds(hit)) for name, hit in bounds.items()]
    corners = [(name, labels) for name, labels in corners if labels]
    mixes = [name for name, hit in bounds.items() if any(bound.axis == "mix" for bound in hit)]
    certified = certifications["certified"].astype(bool) if "certified" in certifications else None
    if corners:
        lines.append("Certificates on an lr/epochs bound of the grid (grid corners, not optima): "
                     + "; ".join(f"{name} ({', '.join(b)})" for name, b in corners) + ".")
    elif certified is None or certified.any():  # nothing certified: no certified point to call interior
        lines.append("No certificate sits on an lr or epochs bound: every certified point is an interior optimum "
                     "of those axes.")
    if mixes:
        lines.append("Certificates at a mixing-fraction bound (" + ", ".join(mixes) + ") say the best share of "
                     "synthetic data is the grid's extreme there; that bound is a finding, not a search failure.")
    return lines
