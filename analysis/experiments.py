"""The paper's experiments beyond the generation curves, as tables (pure, over the analysis frames).

- :func:`stitch_order_table`: Figure 4, stitched with the real document last / first / left out,
  per G and validation set (the long-context sets are extra held-out stores, docs/architecture.md).
- :func:`transfer_table`: Figure 6, a method at its own certified point vs at another
  certification's (the sweep's ``transfers:``), per G.
- :func:`student_scaling_table`: the loss win over the real-only baseline of the same model size,
  per algorithm, G and model preset (the frame's ``model``: the one each trains), presets by size.
- :func:`diversity_table`: generation diversity vs G from the pools' manifests (``megadocs gen
  diversity``), to read next to the loss curve.
- :func:`next_generations`: from the fitted L(G) per algorithm, the predicted loss at twice the
  largest G and what that doubling gains, and the asymptote E, each with its bootstrap interval and
  each only where the points determine it (blank with the reason otherwise).
- :func:`synthetic_only_table`: Figure 13, the synthetic-only ablation (mix 1, no real stream):
  per method and G, the gain over the real-only baseline of the mixed and the synthetic-only
  certification, and the share of the gain that comes from mixing real data.
  :func:`without_synthetic_only` keeps those certifications out of the generation curves, and
  :func:`generation_curves` also the student-scaling certifications of other model sizes, makes a
  method's certifications under another fixed setting than its main one a curve of their own
  (``method [setting]``), and makes certifications of one configuration (:data:`CONFIGURATION`:
  another start, noise or max_runs) one point, their runs counted once (:func:`curve_notes` says
  both);
  :func:`generation_points` are the points of every L(G) fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.configurations import (
    CONFIGURATION,
    lowest_recipe,
    model_key,
    one_point_per_configuration,
    recipe_losses,
)
from analysis.frame import (
    BASE_MODEL,
    CURVE_MODEL,
    FIXED,
    POINT,
    SETTING,
    curve_label,
    curve_method,
    setting_words,
)
from analysis.generation import BASELINE_METHOD, baseline_for, generation_table, loss_column, main_set
from analysis.scaling import MIN_BOOT, PowerLawFit, percentile_interval, power_law
from megadocs.errors import UserError
from megadocs.formats import IID
from megadocs.pools import read_manifest, resolve_pool
from search.grid import values_equal
from search.params import RunParams
from search.sweep import SYNTHETIC_ONLY_MIX
from search.tuned import CurveMember, curve_labels, method_curves
from train.presets import by_size

if TYPE_CHECKING:
    from search.status import TransferSummary

__all__ = [
    "STITCH_ORDERS",
    "stitch_order_table",
    "transfer_table",
    "student_scaling_table",
    "diversity_table",
    "next_generations",
    "NEXT_DOUBLING",
    "synthetic_only_mask",
    "without_synthetic_only",
    "main_model_mask",
    "generation_curves",
    "curve_notes",
    "CONFIGURATION",
    "curve_points",
    "generation_points",
    "setting_curves",
    "failed_curves",
    "synthetic_only_table",
]

STITCH_ORDERS = ("stitched", "stitched-first", "stitched-none")
"""Real document last (the paper's megadoc), first, and left out."""


def stitch_order_table(generation: pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`analysis.generation.generation_table` for the stitch orders, when at least
    two orders were certified; empty otherwise."""
    part = generation[generation["method"].isin(STITCH_ORDERS)]
    if part["method"].nunique() < 2:
        return part.iloc[0:0]
    return part.reset_index(drop=True)


def _model_names(certifications: pd.DataFrame) -> pd.Series:
    """Each certification's model preset (the frame's ``model``: its ``fixed.model``, else the sweep's
    ``search.sweep.Sweep.base_model``), ``base`` where neither names one: the sweep's one unnamed base model."""
    return certifications["model"].map(lambda value: model_key(value) or "base")


def transfer_table(runs: pd.DataFrame, certifications: pd.DataFrame, sources: Mapping[str, str],
                   val_set: str = IID, *, current: Mapping[str, TransferSummary] | None = None) -> pd.DataFrame:
    """One row per transfer run: ``transfer``, ``method``, ``g``, ``source`` (its certification),
    ``own_loss`` (the method's own certified loss at that G and model as the curves read it, in the
    transfer's setting where there is one: :func:`_own_loss`; NaN if not certified in the sweep),
    ``transfer_loss``, ``source_loss`` and ``cost`` (transfer - own: what the other method's
    hyperparameters lose).

    ``current`` (``LedgerTables.transfers``: search's ``summarize_transfers``) keeps only the run
    at each source's current certified point: a run at an earlier one (the source's grid was
    widened since) is no result of the transfer, as for ``search status``. Without it every
    finished transfer run is a row."""
    column = loss_column(val_set)
    if len(runs) == 0 or "kind" not in runs:
        return pd.DataFrame()
    transfers = runs[(runs["kind"] == "transfer") & runs["loss"].notna()]
    rows = []
    by_name = certifications.set_index("certification") if len(certifications) else None
    for _, run in transfers.iterrows():
        name = str(run["certification"]).removeprefix("transfer/")
        if current is not None and not _is_current(current.get(name), run["trial"]):
            continue
        loss = run[column] if column in run and pd.notna(run[column]) else run["loss"]
        own = _own_loss(certifications, run, column)
        source = sources.get(name)
        source_loss = math.nan
        if isinstance(source, str) and by_name is not None and source in by_name.index:
            value = by_name.loc[source, column] if column in by_name else by_name.loc[source, "loss"]
            source_loss = float(value) if pd.notna(value) else math.nan
        rows.append({"transfer": name, "method": run["method"],
                     "g": run["g"], "source": source, "own_loss": own, "transfer_loss": float(loss),
                     "source_loss": source_loss, "cost": float(loss) - own})
    return pd.DataFrame(rows).sort_values(["method", "g"], kind="stable").reset_index(drop=True) if rows \
        else pd.DataFrame()


def _own_loss(certifications: pd.DataFrame, run: pd.Series, column: str) -> float:
    """A transfer run's method's own loss at its G and model as the curves read it: its certified
    certifications there without the synthetic-only ablation (:func:`without_synthetic_only`), one
    point per configuration and fixed-seed repeats their mean, those of the transfer's setting (its
    other fixed params, :meth:`search.params.RunParams.setting`) where there are some, of several recipes
    the lowest: the rule :func:`analysis.generation.baseline_for` applies to a baseline. NaN where
    none is certified."""
    if len(certifications) == 0 or column not in certifications:
        return math.nan
    settings = certifications.get(SETTING, pd.Series("", index=certifications.index)).fillna("").astype(str)
    methods = pd.Series([curve_method(str(method), setting) for method, setting in zip(certifications["method"], settings)],
                        index=certifications.index)  # a curve of another setting is still the method's own
    same = certifications[(methods == run["method"]) & (certifications["g"] == run["g"])
                          & certifications["certified"].astype(bool)]
    if "model" in certifications and "model" in run:
        model = model_key(run["model"])
        same = same[same["model"].map(lambda value: model_key(value) == model).astype(bool)]
    fixed = {key.removeprefix(FIXED): value for key, value in run.items()
             if isinstance(key, str) and key.startswith(FIXED) and model_key(value) is not None}
    return baseline_for(without_synthetic_only(same), RunParams(fixed=fixed).setting(), column)[0]


def _is_current(summary: TransferSummary | None, trial: Any) -> bool:
    """Whether the transfer run with this trial number (in its transfer's study) is its transfer's
    current result (search decides which: ``TransferSummary.trial``)."""
    return summary is not None and summary.trial is not None and summary.trial == trial


def student_scaling_table(certifications: pd.DataFrame, val_set: str = IID) -> pd.DataFrame:
    """Loss win over the same model size's real-only baseline: rows (method, g), one ``gain.<model>``
    column per model preset and ``growth`` (largest model's gain - smallest's), the models smallest
    first (:func:`train.presets.by_size`; a model no preset names keeps its place). Empty unless at
    least two model sizes have a certified baseline. A (method, G, model) reads its certifications as the curves do: the synthetic-only ablation left
    out (:func:`without_synthetic_only`), one point per configuration and fixed-seed repeats their
    mean (:func:`analysis.configurations.recipe_losses`); each compared with the baseline of its
    setting where there is one (:func:`analysis.generation.baseline_for`); of several settings, the
    largest gain."""
    column = loss_column(val_set)
    if len(certifications) == 0 or "model" not in certifications or column not in certifications:
        return pd.DataFrame()
    certified = certifications[certifications["certified"] & certifications[column].notna()].copy()
    certified["model"] = _model_names(certified)
    real = certified[certified["method"] == BASELINE_METHOD]
    baselines = real.groupby("model")[column].min().sort_values(ascending=False, kind="stable")  # worst first
    if len(baselines) < 2:
        return pd.DataFrame()
    models = by_size(baselines.index)  # worst baseline first, the presets then smallest first
    rows = []
    synthetic = without_synthetic_only(certified[certified["method"] != BASELINE_METHOD])
    for (method, g), part in synthetic.groupby(["method", "g"], sort=True):
        row: dict[str, Any] = {"method": method, "g": g}
        for model in models:
            gains = [baseline_for(real[real["model"] == model], _setting(repeats.iloc[0]), column)[0]
                     - loss  # each recipe against its setting's baseline
                     for loss, repeats in recipe_losses(part[part["model"] == model], column)]
            row[f"gain.{model}"] = max(gains) if gains else math.nan
        gains = [row[f"gain.{m}"] for m in models]
        row["growth"] = gains[-1] - gains[0]
        rows.append(row)
    return pd.DataFrame(rows)


def _setting(row: pd.Series) -> str:
    """A certifications-frame row's :data:`analysis.frame.SETTING` ("" where the frame has none)."""
    value = row.get(SETTING, "")
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _pool_dirs(pools: Mapping[str, Any], gs: Mapping[str, list[int]]) -> list[tuple[str, Path]]:
    """(method, pool directory) for every (method, G) a sweep certifies that its ``pools`` name
    (:func:`megadocs.pools.resolve_pool`), each directory once."""
    found: dict[Path, str] = {}
    for method, values in gs.items():
        for g in values:
            try:
                found.setdefault(resolve_pool(pools, method, g), method)
            except UserError:  # no pool for that method: nothing to draw
                continue
    return [(method, pool) for pool, method in found.items()]


def diversity_table(pools: Mapping[str, Any], gs: Mapping[str, list[int]]) -> pd.DataFrame:
    """One row per (pool, G'): ``method``, ``pool``, ``g`` and the diversity measures, from each
    pool manifest's ``diversity`` (``megadocs gen diversity``; pools not generated yet, or without
    one, are skipped). ``gs``: the G values certified per method."""
    rows = []
    for method, pool in _pool_dirs(pools, gs):
        try:
            manifest = read_manifest(pool)
        except UserError:
            continue
        if manifest.diversity is None:
            continue
        for g, measures in manifest.diversity.by_g.items():
            rows.append({"method": method, "pool": str(pool), "kind": manifest.kind.value, "g": g,
                         **{k: (math.nan if v is None else v) for k, v in measures.model_dump().items()}})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).drop_duplicates(subset=["pool", "g"])
    return frame.sort_values(["method", "pool", "g"], kind="stable").reset_index(drop=True)


def next_generations(fits: Mapping[str, PowerLawFit | str]) -> pd.DataFrame:
    """What one more doubling of G buys, per algorithm, quoted only where the points determine it.

    Columns: ``g_max`` (the largest G measured), ``measured_at_g_max`` (the certified loss there, the
    lowest where several were fitted at that G), ``fitted_at_g_max`` (the law's value there; they
    differ where the law does not pass through the point), ``predicted_2g`` and ``gain_2g`` =
    fitted(G) - predicted(2G), each with ``_low``/``_high`` from the fit's bootstrap draws, the
    asymptote E with its interval, and ``note`` (why a number is blank).

    A prediction one doubling past the points needs the local slope, not the asymptote:
    L(2G) - L(G) = -s (1 - 2^-alpha) / alpha with s = -dL/dlnG at G, and (1 - 2^-alpha) / alpha
    only moves from ln 2 (alpha -> 0) to 0.5 (alpha = 1). Losses falling linearly in log G leave E
    NOT determined yet pin s, so the prediction is quoted with the interval of the bootstrap refits
    (each fits the points). Nominal 95% intervals of L(2G) cover the generating curve's value in 95%
    of 210 seeded flattening 6-G curves (``tests/analysis/test_scaling.py``, asserted there), and,
    measured once outside the suite (40 seeded curves each, 0.3% lognormal noise, 200 refits, so
    +-5%), in 90% (G = 1..32) and 98% (G = 1..8) of curves linear in log G, whose E was NOT
    determined in 95-98% of them. It is blank, with the reason, where the points do not determine it:

    * no bootstrap interval (as many G as parameters: the law interpolates, no residual gives the
      noise; points on the law to rounding, whose refits would all be the curve itself, a zero-width
      interval; or no refits): nothing says how far the curve may bend past the last point;
    * E at the lowest loss (its search bound: the losses have not started to flatten), or a free
      alpha at its search bound: the law's 2G value and gain are set by the bound, not the points
      (every refit stops at it too, so the draws' interval would be narrow for no reason).

    The asymptote is blank where E is NOT determined (a bound or a long extrapolation is no number to
    plan with)."""
    rows = []
    for method, fit in sorted(fits.items()):
        if not isinstance(fit, PowerLawFit):
            rows.append({"method": method, "note": fit})
            continue
        g_max = float(np.max(fit.x))
        measured = float(np.min(np.asarray(fit.y, dtype=float)[np.asarray(fit.x, dtype=float) == g_max]))
        row: dict[str, Any] = {"method": method, "g_max": g_max, "measured_at_g_max": measured,
                               "fitted_at_g_max": float(fit.predict(g_max)),
                               **dict.fromkeys(NEXT_DOUBLING, math.nan),
                               "asymptote": math.nan, "asymptote_low": math.nan, "asymptote_high": math.nan}
        why_not = _doubling_undetermined(fit)
        notes = [f"no 2G prediction: {why_not}"] if why_not else []
        if not why_not:
            row.update(_doubling(fit, g_max))
        if fit.determined["E"]:
            interval_e = fit.interval("E")
            row["asymptote"] = fit.E
            if interval_e:
                row["asymptote_low"], row["asymptote_high"] = interval_e
        else:
            notes.append("asymptote E NOT determined (see the fit's notes)")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


NEXT_DOUBLING = ("predicted_2g", "predicted_low", "predicted_high", "gain_2g", "gain_low", "gain_high")
"""The columns of :func:`next_generations` that are blank where the points do not determine them."""


def _doubling_undetermined(fit: PowerLawFit) -> str | None:
    """Why the points do not determine the law one doubling past its largest x (None: they do)."""
    if fit.E_at_lowest_loss:
        return ("E ended at the lowest loss, its search bound (the losses have not started to flatten): "
                "the law's value at 2G is set by that bound, not by the points")
    if "alpha" not in fit.fixed and not fit.determined["alpha"]:
        return "alpha ended at its search bound: the curve's bend past the last point is set by that bound"
    if fit.samples is None or len(fit.samples) < MIN_BOOT:
        reason = next((note for note in fit.notes if note.startswith("no interval")),
                      "no interval: the fit drew no bootstrap refits")
        return f"{reason} (nothing says how far the curve bends past the last point)"
    return None


def _doubling(fit: PowerLawFit, g_max: float) -> dict[str, float]:
    """Predicted loss at 2G and the gain of the doubling, with percentile intervals of the draws."""
    E, A, alpha = fit.samples.T
    at_2g = np.asarray(power_law(2 * g_max, E, A, alpha), dtype=float)
    gain = np.asarray(power_law(g_max, E, A, alpha), dtype=float) - at_2g
    predicted, fitted = float(fit.predict(2 * g_max)), float(fit.predict(g_max))
    (predicted_low, predicted_high), (gain_low, gain_high) = (percentile_interval(draws, fit.level)
                                                              for draws in (at_2g, gain))
    return {"predicted_2g": predicted, "predicted_low": predicted_low, "predicted_high": predicted_high,
            "gain_2g": fitted - predicted, "gain_low": gain_low, "gain_high": gain_high}


def synthetic_only_mask(certifications: pd.DataFrame) -> pd.Series:
    """True for certifications whose point trains on synthetic data only (``point.mix`` 1)."""
    column = POINT + "mix"
    if len(certifications) == 0 or column not in certifications:
        return pd.Series(False, index=certifications.index, dtype=bool)
    mix = pd.to_numeric(certifications[column], errors="coerce")
    return mix.map(lambda value: bool(pd.notna(value) and values_equal(value, SYNTHETIC_ONLY_MIX))).astype(bool)


def without_synthetic_only(certifications: pd.DataFrame) -> pd.DataFrame:
    """The certifications the generation curves and fits are drawn from: a synthetic-only point at
    the same (method, G) is an ablation, not a second measurement of L(G)."""
    if len(certifications) == 0:
        return certifications
    return certifications[~synthetic_only_mask(certifications)].reset_index(drop=True)


def _base_model(certifications: pd.DataFrame) -> Any:
    """The sweep's base model as the frame says it (its :data:`BASE_MODEL`); None where it does not (a
    frame built by hand, a sweep that names none: a curve is then named by the model its
    certification writes, :data:`CURVE_MODEL`, as ``search status`` names it, never by one its runs say)."""
    if BASE_MODEL not in certifications or len(certifications) == 0:
        return None
    return model_key(certifications[BASE_MODEL].iloc[0])


def main_model_mask(certifications: pd.DataFrame) -> pd.Series:
    """True for the certifications of the model whose L(G) curves are drawn: the sweep's base model
    (the frame's :data:`BASE_MODEL`), whose curves ``search status`` names by their method alone, where
    a certification trains it; else (a frame that does not say it, a sweep that names none, or none
    trains it) the one most of them train. The paper's sweep certifies four methods on the 1.5b student too: those are compared
    in the student-scaling table, not drawn on the 300m curves."""
    if len(certifications) == 0 or "model" not in certifications:
        return pd.Series(True, index=certifications.index, dtype=bool)
    models = _model_names(certifications)
    main = _base_model(certifications)
    if main is None or not (models == main).any():
        main = models.value_counts().idxmax()
    return (models == main).astype(bool)


def generation_curves(certifications: pd.DataFrame) -> pd.DataFrame:
    """The certifications L(G) is drawn, fitted and summarised from: the main model's
    (:func:`main_model_mask`), without the synthetic-only ablation (:func:`without_synthetic_only`),
    one curve per setting (its ``method`` the curve's name, :func:`curve_notes`) and one row per
    :data:`CONFIGURATION` (:func:`curve_notes` names the certifications made one point)."""
    return _curves(certifications)[0]


def curve_notes(certifications: pd.DataFrame) -> dict[str, list[str]]:
    """Per curve, the notes that say how its certifications became its points. Where two
    certifications of a method at one G differ in a fixed setting (the frame's ``setting``: a fixed
    param, a grid axis given one value), they measure two curves, not seed repeats of one point: each
    setting of the method is its own curve. The setting most of the method's certifications have (a
    tie: the first in sort order, nothing fixed first) keeps the method's name; every other is named
    ``method [setting]`` (which certifications form which curve, and its name, is
    :func:`search.tuned.method_curves`, ``search status``'s G-trend rule too) in the ``method``
    column of :func:`generation_curves`, so that the generation table, the fits, the rise check and the figures read it as a curve of its own, compared with the
    real-only baseline of its setting (:func:`analysis.generation.baseline_for`); one with too few G
    to fit keeps its points and the fit's reason. A setting certified only at G the method's curve does not
    have (the sweep file changed between G: never two settings at one G) is a point of that curve, as
    the sweep wrote it, with a note that names the G and the setting: the paper compares one
    algorithm's tuned loss across G, and a curve of its own would leave the method's curve without
    those G. Certifications of one configuration
    (:data:`CONFIGURATION`: they differ only in how their search ran) become one point, their shared
    runs counted once (:func:`one_point_per_configuration`), and a note says how. Every output that fits L(G) (the report,
    the notebook, ``megadocs analysis fit SWEEP.yaml``) adds these to the fit's notes
    (``analysis.fits.fit_groups``'s ``notes``)."""
    return _curves(certifications)[1]


def _curves(certifications: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """:func:`generation_curves` and :func:`curve_notes` of ``certifications``."""
    if len(certifications) == 0:
        return certifications, {}
    curves = without_synthetic_only(certifications[main_model_mask(certifications)].reset_index(drop=True))
    curves, notes = _one_curve_per_setting(curves)
    curves, combined = one_point_per_configuration(curves)
    for method, lines in combined.items():
        notes.setdefault(method, []).extend(lines)
    return curves, notes


def _one_curve_per_setting(curves: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``curves`` with each certification's ``method`` its curve's name by ``search status``'s rule
    (:func:`search.tuned.method_curves`), and the notes that say how (:func:`curve_notes`)."""
    if SETTING not in curves:
        return curves, {}
    synthetic = curves[curves["method"].notna() & (curves["method"] != BASELINE_METHOD)]
    base = _base_model(curves)  # None: the sweep names none (or the frame does not say)
    models = (list(synthetic[CURVE_MODEL].map(model_key)) if CURVE_MODEL in synthetic
              else [None] * len(synthetic))  # a frame built by hand: each curve named by its method
    members = [CurveMember(str(method), float(g), setting, model)
               for method, g, setting, model in zip(synthetic["method"], synthetic["g"],
                                                    synthetic[SETTING].fillna("").astype(str), models)]
    labels = curves["method"].copy()
    labels[synthetic.index] = curve_labels(members, base)
    notes: dict[str, list[str]] = {}
    for curve in method_curves(members, base):
        method, kept = curve.method, curve.main
        for setting, at in curve.joined:
            gs = ", ".join(f"{g:g}" for g in at)
            notes.setdefault(method, []).append(
                f"{method} at G={gs} was certified under {setting_words(setting)}, its other G under "
                f"{setting_words(kept)}: one curve, as the sweep wrote it (no G has both), so what changes "
                "between those G may be the setting's, not G's")
        for setting in curve.apart:
            notes[curve_label(method, setting)] = [
                f"{method}'s certifications under {setting_words(setting)}, certified at a G of {method}'s curve "
                f"under another ({setting_words(kept)}, the one most of {method}'s certifications have): a curve "
                "of its own, not seed repeats of that one's points"]
    return curves.assign(method=labels), notes


def generation_points(certifications: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The points every L(G) fit is made from (the report, the notebook and ``megadocs analysis fit
    SWEEP.yaml``, so that all three give the same fit and verdicts): :func:`curve_points` of the
    generation table over :func:`generation_curves`.

    Raises:
        UserError: no certification has a finite loss.
    """
    return curve_points(generation_table(generation_curves(certifications)))


def setting_curves(points: pd.DataFrame) -> set[str]:
    """The curves of ``points`` (:func:`generation_points`, or a frame over :func:`generation_curves`)
    that are a method's other setting than its main one, ``method [setting]``
    (:func:`search.tuned.curve_label`): not the method's own curve."""
    if SETTING not in points or "method" not in points:
        return set()
    settings = points[SETTING].fillna("").astype(str)
    return {str(label) for label, setting in zip(points["method"], settings)
            if curve_method(str(label), setting) != str(label)}


def failed_curves(fits: Mapping[Any, PowerLawFit | str], points: pd.DataFrame, group: str = "method") -> list[Any]:
    """The groups of ``fits`` (``analysis.fits.fit_groups`` of ``points``, :func:`generation_points`,
    by ``group``: the curves, by method, unless ``megadocs analysis fit SWEEP.yaml --group`` names
    another column) whose fit failed: those that make the command exit 1. Every group not fitted,
    except one whose points all lie on curves of a method's other setting (:func:`setting_curves`; by
    method: such a curve) with too few points for the fit's free parameters
    (``analysis.fits.NotFitted.too_few_points``): a setting tried at one G so far keeps its points and
    its reason, and is no failed fit, however the points are grouped. A method's own curve that cannot
    be fitted (too few G included: the method itself has no L(G)), a group with a point of one, and a
    group whose points no law describes (losses that do not fall) are failed fits."""
    others = setting_curves(points)
    labels = points["method"].astype(str) if "method" in points else pd.Series("", index=points.index)

    def another_settings(name: Any) -> bool:
        mine = labels[points[group] == name] if group in points else labels.iloc[:0]
        return len(mine) > 0 and set(mine) <= others

    return [name for name, fit in fits.items()  # the names as fits has them (a --group of numbers: numbers)
            if isinstance(fit, str) and not (getattr(fit, "too_few_points", False) and another_settings(name))]


def curve_points(table: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The set the curves are read on (:func:`analysis.generation.main_set`) and the synthetic rows
    of a generation table over :func:`generation_curves` on it (columns of
    :data:`analysis.generation.COLUMNS`; ``loss`` on that set), for a caller that has the table."""
    main = main_set(table)
    points = table[(table["set"] == main) & (table["method"] != BASELINE_METHOD) & (table["g"] > 0)]
    return main, points.reset_index(drop=True)


def synthetic_only_table(certifications: pd.DataFrame, val_set: str = IID) -> pd.DataFrame:
    """Figure 13: one row per (method, G[, model]) with both a certified mixed and a certified
    synthetic-only certification, and a certified real-only baseline of the same model (both gains
    against one: the mixed certification's setting's where there is one,
    :func:`analysis.generation.baseline_for`). The mixed and the synthetic-only losses are each read
    as the curves read a (method, G): one point per configuration, fixed-seed repeats their mean, of
    several recipes the lowest (:func:`analysis.configurations.lowest_recipe`).

    Columns: ``method``, ``g``, ``model``, ``baseline`` (the baseline's name, as in the generation
    table), ``baseline_loss``, ``mixed_loss``, ``synthetic_only_loss``,
    ``gain_mixed`` and ``gain_synthetic_only`` (baseline - loss), ``mixed_mix`` (the mixed
    certification's certified mix), and ``share_from_real`` = 1 - gain_synthetic_only / gain_mixed,
    the share of the mixed gain that comes from mixing real data in (NaN when the mixed run does
    not beat the baseline: there is no gain to share). Empty when no pair exists."""
    column = loss_column(val_set)
    if len(certifications) == 0 or column not in certifications:
        return pd.DataFrame()
    certified = certifications[certifications["certified"] & certifications[column].notna()].copy()
    if "model" not in certified:
        certified["model"] = None
    certified["model"] = _model_names(certified)
    only = synthetic_only_mask(certified)
    real = certified[certified["method"] == BASELINE_METHOD]
    rows = []
    synthetic = certified[(certified["method"] != BASELINE_METHOD) & ~only]
    for (method, g, model), mixed in synthetic.groupby(["method", "g", "model"], sort=True):
        ablation = certified[only & (certified["method"] == method) & (certified["g"] == g)
                             & (certified["model"] == model)]
        if ablation.empty:
            continue
        mixed_loss, mixed_repeats = lowest_recipe(mixed, column)
        only_loss, _only = lowest_recipe(ablation, column)
        best_mixed = mixed_repeats.iloc[0]  # the row that stands for the recipe (its setting, point)
        # both gains against one baseline: the mixed certification's setting's where there is one
        baseline, name = baseline_for(real[real["model"] == model], _setting(best_mixed), column)
        if not math.isfinite(baseline):
            continue
        gain_mixed, gain_only = baseline - mixed_loss, baseline - only_loss
        rows.append({
            "method": method, "g": g, "model": model, "baseline": name, "baseline_loss": baseline,
            "mixed_loss": mixed_loss, "synthetic_only_loss": only_loss,
            "gain_mixed": gain_mixed, "gain_synthetic_only": gain_only,
            "mixed_mix": float(best_mixed[POINT + "mix"]) if POINT + "mix" in best_mixed
            and pd.notna(best_mixed[POINT + "mix"]) else math.nan,
            "share_from_real": 1 - gain_only / gain_mixed if gain_mixed > 0 else math.nan,
        })
    return pd.DataFrame(rows)
