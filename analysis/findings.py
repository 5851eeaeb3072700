"""The report's first screen: what a sweep found, in plain words, computed from the ledger.

Does synthetic data beat the real-only baseline, which algorithm is best, by how much relative
to the seed noise, which certificates lean on a search bound, and whether the tuned loss falls
with G. A difference counts as real only when it exceeds :data:`CLEAR_SDS` standard deviations
of the difference of two single runs (``sigma * sqrt(2)``, sigma the pooled seed noise of the
certifications that measured it); otherwise it is called a tie within noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from analysis.frame import BOUNDS
from analysis.generation import BASELINE_METHOD, generation_table, loss_column, monotonicity
from search.grid import Bound

__all__ = ["CLEAR_SDS", "pooled_noise", "noise_tolerance", "findings"]

CLEAR_SDS = 2.0
"""A gain or rise is clear beyond this many sds of a two-run difference."""

LR_EPOCHS = ("lr", "epochs")
"""Axes whose bound makes a certificate a grid corner rather than an optimum (mix may sit on its
bound: the best share of synthetic data can be the largest the grid allows)."""


def pooled_noise(certifications: pd.DataFrame) -> float:
    """Root-mean-square of the certifications' seed-noise estimates (nan when none measured it)."""
    if "noise_sd" not in certifications:
        return math.nan
    values = [float(v) for v in certifications["noise_sd"] if v is not None and math.isfinite(float(v))]
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


def noise_tolerance(sigma: float) -> float:
    """Smallest difference of two single-run losses that is clear of seed noise sigma (0 if unknown)."""
    return CLEAR_SDS * sigma * math.sqrt(2) if math.isfinite(sigma) else 0.0


def _lr_epochs_bounds(bounds: Iterable[Bound]) -> list[str]:
    """Labels of the lr/epochs bounds among a certificate's (``"epochs upper"``), sorted."""
    return sorted(bound.label for bound in bounds if bound.axis in LR_EPOCHS)


def findings(certifications: pd.DataFrame, *, law=None) -> list[str]:
    """Markdown paragraphs (one per list item) for the report's "Findings" section."""
    if certifications is None or len(certifications) == 0:
        return ["Nothing certified yet: the ledger holds no certification."]
    lines: list[str] = []
    sigma = pooled_noise(certifications)
    tolerance = noise_tolerance(sigma)
    sets = [s for s in ("iid", "objective") if loss_column(s) in certifications]
    val_set = sets[0] if sets else "objective"
    try:
        table = generation_table(certifications, law=law, sets=[val_set])
    except Exception as exc:  # UserError: no finished loss yet
        return [f"Nothing to compare yet: {exc}."]
    baseline = table[table["method"] == BASELINE_METHOD]
    synthetic = table[table["method"] != BASELINE_METHOD]
    noise_text = (
        f"seed noise sd {sigma:.4f} nats (pooled over the repeats the certifications ran), so a difference "
        f"of two single runs is clear beyond {tolerance:.4f}"
        if tolerance else "seed noise was not measured (no `noise: repeats`), so no difference can be called clear"
    )
    if not len(baseline) or not len(synthetic):
        lines.append(f"On the {val_set} loss ({noise_text}): the ledger lacks a "
                     f"{'real-only baseline' if not len(baseline) else 'synthetic certification'} to compare.")
        return lines
    base_loss = float(baseline["loss"].min())
    best_per_method = synthetic.loc[synthetic.groupby("method")["loss"].idxmin()].sort_values("loss")
    best = best_per_method.iloc[0]
    gain = base_loss - float(best["loss"])

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
    lines.append(
        f"**{headline}.** Real-only baseline: {val_set} loss {base_loss:.4f}. Best synthetic: "
        f"{best['method']} at G={best['g']:g}, {float(best['loss']):.4f} ({gain:+.4f} nats vs the baseline, "
        f"{verdict(gain)}); {noise_text}."
    )
    per_method = [
        f"{row.method} {float(row.loss):.4f} at G={row.g:g} ({verdict(base_loss - float(row.loss))})"
        for row in best_per_method.itertuples()
    ]
    ranking = "Best tuned loss per algorithm (vs the baseline): " + "; ".join(per_method) + "."
    if len(best_per_method) > 1:
        second = best_per_method.iloc[1]
        ranking += (f" Best algorithm: {best['method']}, ahead of {second['method']} by "
                    f"{float(second['loss']) - float(best['loss']):.4f} nats "
                    f"({verdict(float(second['loss']) - float(best['loss']))}).")
    lines.append(ranking)

    single_g = synthetic.groupby("method")["g"].nunique().max() < 2
    rises = monotonicity(table, tolerance=max(tolerance, 1e-3))
    within = monotonicity(table)
    if rises:
        lines.append("Tuned loss rises with G beyond noise for " + "; ".join(
            f"{r.method} (G={r.g_from:g} to {r.g_to:g}: {r.loss_from:.4f} to {r.loss_to:.4f})" for r in rises)
            + ": those searches did not converge.")
    elif single_g:
        lines.append("One G per algorithm: nothing to say about the tuned loss as G grows.")
    else:
        small = f" ({len(within)} rise(s) smaller than the noise threshold)" if within else ""
        lines.append(f"Tuned loss does not rise with G beyond noise for any algorithm{small}.")

    if "certified" in certifications:
        pending = [str(name) for name, done in zip(certifications["certification"], certifications["certified"])
                   if not done]
        if pending:
            lines.append("Not certified yet (their loss is the best found so far, not an optimum): "
                         + ", ".join(pending) + ".")
    bounds = dict(zip(certifications["certification"], certifications[BOUNDS]))
    corners = [(name, _lr_epochs_bounds(hit)) for name, hit in bounds.items()]
    corners = [(name, labels) for name, labels in corners if labels]
    mixes = [name for name, hit in bounds.items() if any(bound.axis == "mix" for bound in hit)]
    if corners:
        lines.append("Certificates on an lr/epochs bound of the grid (grid corners, not optima): "
                     + "; ".join(f"{name} ({', '.join(b)})" for name, b in corners) + ".")
    else:
        lines.append("No certificate sits on an lr or epochs bound: every certified point is an interior optimum "
                     "of those axes.")
    if mixes:
        lines.append("Certificates at a mixing-fraction bound (" + ", ".join(mixes) + ") say the best share of "
                     "synthetic data is the grid's extreme there; that bound is a finding, not a search failure.")
    return lines
