"""Generation scaling: certified loss vs G per algorithm, against the real-only baseline.

A larger G can reuse a smaller G's hyperparameters while epoching the synthetic stream less, so
a *tuned* loss should not rise with G (paper.md); a rise means a search that did not converge,
and :func:`monotonicity` says where. Every validation set (iid, its short/long halves, the
long-context sets) gets the same table: loss and gain over the real-only baseline; the i.i.d.
rows also data efficiency under the reference law (a law of i.i.d. loss vs real data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.configurations import lowest_recipe
from analysis.efficiency import NO_UPPER_BOUND, ReferenceLaw, efficiency
from analysis.frame import BOUNDS, SETTING, VAL, setting_words, val_sets
from analysis.noise import seed_noise
from analysis.scaling import PowerLawFit
from megadocs.errors import UserError
from megadocs.formats import IID, REAL
from search.status import warm_start_advice
from search.tuned import Certified, tuned_at_g

__all__ = ["BASELINE_METHOD", "COLUMNS", "empty_table", "with_optional_columns", "loss_column", "baseline_for",
           "generation_table", "baseline_notes", "main_set", "Rise", "monotonicity"]

BASELINE_METHOD = REAL
RISE_TOLERANCE = 1e-3
"""Loss rises smaller than this (nats) count as noise, not as a failed search."""
OPTIONAL_COLUMNS = {"certification": None, "certified": False, BOUNDS: (), "bounds_hit": "", "warm_start": None,
                    SETTING: ""}
"""Certifications-frame columns that :func:`analysis.frame.certifications_frame` always builds but a
frame built by hand (the analysis contract: any source) may leave out, and what a missing one means."""


COLUMNS = ("set", "certification", "method", "g", SETTING, "certified", BOUNDS, "bounds_hit", "warm_start", "loss",
           "baseline", "baseline_loss", "gain", "efficiency", "efficiency_low", "efficiency_high", "efficiency_basis",
           "efficiency_note")
"""The columns of :func:`generation_table`, in order (an empty table has them too: :func:`empty_table`)."""


def empty_table() -> pd.DataFrame:
    """A generation table without rows, for a caller that goes on where :func:`generation_table`
    refused (a notebook on a ledger with no finite loss yet)."""
    return pd.DataFrame(columns=list(COLUMNS))


def with_optional_columns(certifications: pd.DataFrame) -> pd.DataFrame:
    """``certifications`` with every :data:`OPTIONAL_COLUMNS` column, a missing one at its default
    (a frame built by hand, or read back from ``analysis export``, which leaves out the records)."""
    missing = {column: [default] * len(certifications) for column, default in OPTIONAL_COLUMNS.items()
               if column not in certifications}
    return certifications.assign(**missing)


def loss_column(val_set: str) -> str:
    """The certifications-frame column holding a validation set's loss (``loss`` for the objective)."""
    return "loss" if val_set == "objective" else VAL + val_set


def baseline_for(baselines: pd.DataFrame, setting: str, column: str) -> tuple[float, str | None]:
    """The real-only baseline a certification of ``setting`` is compared with on ``column``, and the
    certification that gave it: of ``baselines`` (real-only certifications) with a finite loss there,
    those of the same setting (:data:`analysis.frame.SETTING`; a frame without one: all) where there
    are some, else all. Of those, certifications of one configuration are one point by the curves'
    rule and fixed-seed repeats their mean (:func:`analysis.configurations.lowest_recipe`), named
    ``"mean of a and b"``: the lowest of several seeds is the luckiest, biased low. Of what is left
    (other settings where none is ``setting``'s, other models) the lowest. ``(nan, None)`` where none
    has a loss.

    A baseline of another setting (a pinned axis, another fixed param) measures another recipe: a
    curve is compared with its own setting's baseline, not with the lowest of them."""
    if column not in baselines:
        return math.nan, None
    losses = pd.to_numeric(baselines[column], errors="coerce")
    rows = baselines[losses.map(lambda value: math.isfinite(value) if pd.notna(value) else False).astype(bool)]
    if SETTING in rows:
        same = rows[rows[SETTING].fillna("").astype(str) == (setting or "")]
        rows = same if len(same) else rows
    if not len(rows):
        return math.nan, None
    loss, repeats = lowest_recipe(rows, column)
    return loss, _mean_name(repeats)


_MEAN_OF = "mean of "


def _mean_name(part: pd.DataFrame) -> str | None:
    """The name of a baseline that is the mean of ``part``'s certifications (fixed-seed repeats): the
    certification's own where there is one, ``"mean of a and b"`` for several (:func:`_members`)."""
    names = [str(name) for name in part.get("certification", pd.Series(dtype=object)) if pd.notna(name)]
    if len(part) == 1:
        return names[0] if names else None
    return _MEAN_OF + " and ".join(names) if names else None


def _members(name: str) -> list[str]:
    """The certifications a baseline's name (:func:`_mean_name`) stands for."""
    return name.removeprefix(_MEAN_OF).split(" and ") if name.startswith(_MEAN_OF) else [name]


def baseline_notes(table: pd.DataFrame) -> list[str]:
    """Where a generation table's real-only baselines differ in setting, which one each algorithm is
    compared with on the set its curves are read on (:func:`main_set`): the one of its setting, or,
    where it has none, the lowest, named (:func:`baseline_for`). Empty with one baseline setting."""
    if len(table) == 0:
        return []
    part = table[table["set"] == main_set(table)]
    real = part[part["method"] == BASELINE_METHOD]
    settings = real[SETTING].fillna("").astype(str)
    if settings.nunique() < 2:
        return []
    of_name = dict(zip(real["certification"], settings))
    of_name.update({name: of_name.get(_members(name)[0]) for name in part["baseline"].dropna().unique()
                    if name not in of_name})  # a mean of fixed-seed repeats: their (one) setting
    lines = []
    synthetic = part[(part["method"] != BASELINE_METHOD) & part["baseline"].notna()]
    for (method, setting, name), _rows in synthetic.groupby(["method", SETTING, "baseline"], sort=True):
        if of_name.get(name) == setting:
            lines.append(f"{method} under {setting_words(setting)} is compared with {name}, the real-only "
                         "baseline of its setting")
        else:
            lines.append(f"{method} under {setting_words(setting)} has no real-only baseline of its setting: "
                         f"it is compared with the lowest, {name}, under {setting_words(of_name.get(name, ''))}")
    return lines


def main_set(table: pd.DataFrame) -> str:
    """The validation set the curves are read on: ``iid`` when the runs report it (train's runs),
    else the objective's own loss (a callable objective's sweep, e.g. search/examples/analytic.yaml)."""
    sets = set(table["set"])
    return IID if IID in sets else ("objective" if "objective" in sets else sorted(sets)[0])


def generation_table(
    certifications: pd.DataFrame,
    *,
    law: ReferenceLaw | PowerLawFit | None = None,
    sets: list[str] | None = None,
    noise_sd: float | None = None,
) -> pd.DataFrame:
    """Long table: one row per (validation set, method, G) with baseline, gain and efficiency, from
    a certifications frame (:func:`analysis.frame.certifications_frame`, or one built by hand without
    the :data:`OPTIONAL_COLUMNS`).

    Columns (:data:`COLUMNS`): ``set``, ``certification``, ``method``, ``g``, ``setting``
    (:data:`analysis.frame.SETTING`), ``certified``, ``bounds`` (records), ``bounds_hit`` (their
    display form), ``warm_start``, ``loss``, ``baseline`` (the real-only certification the row is
    compared with: of its setting where there is one, else the lowest, fixed-seed repeats their mean
    ``"mean of a and b"``, :func:`baseline_for`;
    :func:`baseline_notes` says which where they differ), ``baseline_loss``, ``gain`` (baseline - loss), ``efficiency``, ``efficiency_low``,
    ``efficiency_high``, ``efficiency_basis`` (an :class:`analysis.efficiency.Basis` value: whose
    law gave it and how: stated, at the edge of its calibration losses, interpolated, ...) and
    ``efficiency_note`` (why a synthetic row has none: a loss clearly outside a given law's
    calibration losses, a fitted law that does not determine it, or a loss not above the law's
    asymptote E; or why its interval is blank: :data:`analysis.efficiency.NO_UPPER_BOUND`). Efficiency is only computed for the objective/iid sets: the reference law is a
    law of i.i.d. loss vs real data, so it says nothing about other domains. The seed noise that
    widens the law's evidence (a given law's calibration range, a fitted law's runs) is ``noise_sd``
    where given, else the certifications' own, pooled (:func:`analysis.noise.seed_noise`; none
    measured: the range is read closed).

    Raises:
        UserError: no certification has a loss.
    """
    if certifications is None or len(certifications) == 0:
        raise UserError("generation scaling: the ledger has no certifications (empty sweep?)")
    certifications = with_optional_columns(certifications)
    sets = sets or val_sets(certifications) or ["objective"]
    noise_sd, _source = seed_noise(certifications, noise_sd)
    rows = []
    for val_set in sets:
        column = loss_column(val_set)
        if column not in certifications:
            continue
        frame = certifications[certifications[column].notna() & certifications["method"].notna()]
        # astype(bool): on an empty frame map() gives an object Series, which pandas would read as
        # a list of column labels (KeyError: 'method' when every run of a sweep failed).
        frame = frame[frame[column].map(math.isfinite).astype(bool)]
        baselines = frame[frame["method"] == BASELINE_METHOD]
        of_setting: dict[str, tuple[float, str | None]] = {}  # baseline_for per setting, read once
        for _, row in frame.iterrows():
            loss = float(row[column])
            setting = "" if pd.isna(row[SETTING]) else str(row[SETTING])
            if setting not in of_setting:
                of_setting[setting] = baseline_for(baselines, setting, column)
            baseline_loss, baseline = of_setting[setting]
            record = {
                "set": val_set,
                "certification": row["certification"],
                "method": row["method"],
                "g": row["g"],
                SETTING: setting,
                "certified": bool(row["certified"]),
                BOUNDS: row[BOUNDS],
                "bounds_hit": row["bounds_hit"],
                "warm_start": row["warm_start"],
                "loss": loss,
                "baseline": baseline,
                "baseline_loss": baseline_loss,
                "gain": baseline_loss - loss,
                "efficiency": math.nan,
                "efficiency_low": math.nan,
                "efficiency_high": math.nan,
                "efficiency_basis": None,
                "efficiency_note": None,
            }
            iid_like = val_set in ("objective", IID)
            if law is not None and iid_like and math.isfinite(baseline_loss) and row["method"] != BASELINE_METHOD:
                result = efficiency(loss, baseline_loss, law, noise_sd=noise_sd)
                record["efficiency"] = result.ratio
                record["efficiency_basis"] = result.basis.value
                if result.interval:
                    record["efficiency_low"], record["efficiency_high"] = result.interval
                if not result.basis.determined or (result.interval is None and NO_UPPER_BOUND in result.note):
                    record["efficiency_note"] = result.note
            rows.append(record)
    if not rows:
        losses = pd.to_numeric(certifications.get("loss", pd.Series(dtype=float)), errors="coerce")
        diverged = int(losses.isin([math.inf, -math.inf]).sum())
        why = (f"{diverged} of {len(certifications)} diverged (inf loss), the others have no loss yet"
               if diverged else "none has a loss yet (not run, still running, or failed)")
        raise UserError(f"generation scaling: no certification has a finite loss: {why}")
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values(["set", "method", "g"], kind="stable").reset_index(drop=True)


@dataclass
class Rise:
    """A tuned loss that went up from one G to the next. A larger G can reuse a smaller G's
    hyperparameters, so a rise beyond seed noise means the larger G's search did not converge."""

    set: str
    method: str
    g_from: float
    g_to: float
    loss_from: float
    loss_to: float
    certification_from: str | None = None
    certification_to: str | None = None
    warm_started: bool = False
    """The larger G's certification already starts from the smaller G's certificate."""
    sigma: float | None = None
    """The seed-noise sd it was judged against (None: no noise estimate)."""

    def message(self) -> str:
        """One line for a user: the rise, how it compares with the noise, and what to do."""
        rise = self.loss_to - self.loss_from
        size = (f"{rise / self.sigma:.1f} noise sds" if self.sigma else
                "no noise estimate: it may be seed noise" if self.sigma is None else "noise sd 0")
        text = (f"{self.method} [{self.set}]: tuned loss rose from G={self.g_from:g} ({self.loss_from:.4f}) to "
                f"G={self.g_to:g} ({self.loss_to:.4f}), +{rise:.4f} nats ({size})")
        if self.certification_from or self.certification_to:  # one missing: seed repeats at its G
            warm_starts = {self.certification_to: self.certification_from} if self.warm_started else {}
            text += "; " + warm_start_advice(self.certification_from, self.certification_to, warm_starts)
        return text


def monotonicity(table: pd.DataFrame, *, tolerance: float = RISE_TOLERANCE, sigma: float | None = None) -> list[Rise]:
    """Rises of the tuned loss with G by more than ``tolerance`` per (set, method); empty when every
    curve is non-increasing. Several rows at one G (fixed-seed repeats: one row per configuration)
    are one point by ``search status``'s rule (:func:`search.tuned.tuned_at_g`): their mean loss.
    ``sigma`` (the seed noise the tolerance came from) is kept on each rise."""
    rises = []
    for (val_set, method), group in table[table["method"] != BASELINE_METHOD].groupby(["set", "method"]):
        points = [(g, tuned_at_g([Certified.of_loss(loss, _name(name))] for loss, name in zip(rows["loss"], rows["certification"])),
                   rows) for g, rows in group.groupby("g", sort=True)]
        for (g_from, before, _), (g_to, after, rows) in zip(points, points[1:]):
            if after.loss > before.loss + tolerance:
                source, target = before.certification, after.certification
                warm = target is not None and source is not None and rows["warm_start"].iloc[0] == source
                rises.append(Rise(val_set, method, g_from, g_to, before.loss, after.loss, source, target,
                                  warm_started=warm, sigma=sigma))
    return rises


def _name(name: object) -> str | None:
    """A generation table's certification name (None where none is named)."""
    return name if isinstance(name, str) and name else None
