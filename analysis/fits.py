"""Power-law fits of tables, a fit in words and in JSON (the maths is :mod:`analysis.scaling`).

:func:`fit_groups` fits one law per group of a DataFrame (a group that cannot be fitted maps to
the reason), each group's bootstrap on its own noise stream. :func:`param_status`,
:func:`quote_param` and :func:`describe_fit` are a fit in the words every output uses (the report,
the CLI, figure legends); :func:`fit_json` is a fitted law in standard JSON and :func:`fit_record`
one group of ``megadocs analysis fit --json`` as a typed :class:`FitRecord` (:class:`ParamRecord`
per parameter).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.fit_checks import FitOptionError, TooFewPoints
from analysis.scaling import PARAMS, PowerLawFit, fit_power_law
from megadocs.config import StrictModel
from megadocs.errors import UserError

__all__ = ["NotFitted", "ParamRecord", "FitRecord", "param_status", "quote_param", "describe_fit", "fit_json", "fit_record",
           "fit_groups"]


class NotFitted(str):
    """Why a group of :func:`fit_groups` was not fitted: the text every output prints (it is a ``str``)
    and ``too_few_points``, whether the fit refused too few distinct x for its free parameters
    (:class:`analysis.fit_checks.TooFewPoints`: a curve too short so far) rather than points no law
    describes."""

    too_few_points: bool

    def __new__(cls, text: str, *, too_few_points: bool = False) -> NotFitted:
        reason = super().__new__(cls, text)
        reason.too_few_points = too_few_points
        return reason


class ParamRecord(StrictModel):
    """One parameter of a fitted law in standard JSON (null: no finite value or no interval)."""

    estimate: float | None
    low: float | None
    high: float | None
    fixed: bool
    determined: bool


class FitRecord(StrictModel):
    """One group of ``megadocs analysis fit --json``, fitted or not, in one shape: ``error`` is null
    for a fitted law and the fit's fields are null (``notes`` empty) for a group that could not be
    fitted, whose ``error`` says why (the ``UserError`` text: too few distinct x, rising losses), and
    ``failed`` whether it counts as a failed fit (the command's exit 1)."""

    group: str | int | float | None
    """The group's value (null: the table was fitted as one group)."""
    x: str
    """The column of sizes the law is a function of (``g``, ``D``, ``k``, ...)."""
    error: str | None = None
    failed: bool = False
    """A group not fitted that makes the command exit 1; false for a fitted one and for one excused
    (``fit SWEEP.yaml``: a curve of a method's other setting with too few G so far,
    ``analysis.experiments.failed_curves``)."""
    n_points: int | None = None
    loss: str | None = None
    level: float | None = None
    params: dict[str, ParamRecord] | None = None
    rmse_log: float | None = None
    notes: list[str] = []


def param_status(fit: PowerLawFit, name: str) -> str:
    """What the points say about parameter ``name``, in the words every output uses (the report,
    the CLI, figure legends): ``fixed``, ``NOT determined`` (with the interval where there is
    one: it shows how loose), the interval (``95% CI [low, high]``) or ``no interval``."""
    interval = fit.interval(name)
    ci = f"{int(fit.level * 100)}% CI [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else None
    if name in fit.fixed:
        return "fixed"
    if not fit.determined[name]:
        return "NOT determined" + (f"; {ci}" if ci else "")
    return ci or "no interval"


def quote_param(fit: PowerLawFit, name: str) -> str:
    """``name=value (status)``: a parameter as a legend or a sentence quotes it (see :func:`param_status`)."""
    return f"{name}={fit.params[name]:.4g} ({param_status(fit, name)})"


def describe_fit(fit: PowerLawFit, x_name: str = "x") -> str:
    """One line per parameter and the notes, for reports and the CLI."""
    lines = [f"L({x_name}) = E + A * {x_name}^(-alpha), {fit.n_points} points, {fit.loss} loss on log residuals"]
    for name in PARAMS:
        lines.append(f"  {name:5s} = {fit.params[name]:.4g}  ({param_status(fit, name)})")
    lines.append(f"  rmse of log residuals = {fit.rmse_log:.3g}")
    lines.extend(f"  note: {note}" for note in fit.notes)
    return "\n".join(lines)


def fit_json(fit: PowerLawFit) -> dict:
    """A fitted law in standard JSON (no NaN): each parameter's estimate, low and high (null where
    there is no interval), whether it is fixed or determined; the level, fit quality and notes
    (a :class:`FitRecord`'s fit fields; ``analysis efficiency --json``'s ``law``)."""

    def number(value) -> float | None:
        return float(value) if value is not None and math.isfinite(value) else None

    params = {}
    for name in PARAMS:
        interval = None if name in fit.fixed else fit.interval(name)
        params[name] = ParamRecord(
            estimate=number(fit.params[name]),
            low=number(interval[0]) if interval else None,
            high=number(interval[1]) if interval else None,
            fixed=name in fit.fixed,
            determined=bool(fit.determined[name]),
        ).model_dump()
    return {"n_points": fit.n_points, "loss": fit.loss, "level": fit.level, "params": params,
            "rmse_log": number(fit.rmse_log), "notes": list(fit.notes)}


def fit_record(group, x: str, fit: PowerLawFit | str, *, failed: bool) -> FitRecord:
    """A :func:`fit_groups` result as its JSON record (``group``: a numpy scalar becomes plain);
    ``failed``: whether a group not fitted counts as a failed fit (:attr:`FitRecord.failed`)."""
    group = group.item() if hasattr(group, "item") else group
    if isinstance(fit, str):
        return FitRecord(group=group, x=x, error=str(fit), failed=failed)
    return FitRecord(group=group, x=x, **fit_json(fit))


def fit_groups(frame, *, x: str, y: str, group: str, notes: Mapping[Any, Sequence[str]] | None = None,
               **options) -> dict[str, PowerLawFit | NotFitted]:
    """Fit one law per group of a DataFrame; a group that cannot be fitted maps to the reason
    (:class:`NotFitted`: a ``str`` that says whether the group had too few points).

    ``notes``: per group, lines the caller adds to its fit's notes (to the reason where it cannot be
    fitted), e.g. how a curve got its points (``analysis.experiments.curve_notes``).

    Every group's bootstrap draws its own independent noise (seeded by ``seed`` and the group's
    name), so draws of two groups can be paired to give an interval for their difference.

    The reason is the ``UserError`` text (too few points, non-decreasing losses), so reports can
    print it instead of a number.

    Raises:
        UserError: rows with no value in ``group`` (pandas' groupby would drop them unseen).
    """
    no_group = frame[frame[group].isna()]
    if len(no_group):
        shown = ", ".join(f"{x}={value:g}" for value in no_group[x].to_numpy(dtype=float)[:5])
        raise UserError(f"fit: column {group!r} has no value in {len(no_group)} row(s) ({shown}"
                        f"{', ...' if len(no_group) > 5 else ''}); give each row its group, or fit without grouping")
    results: dict[str, PowerLawFit | NotFitted] = {}
    seed = options.pop("seed", 0)
    for name, part in frame.groupby(group, sort=True):
        finite = np.isfinite(part[y].to_numpy(dtype=float))
        # A diverged (inf) or missing loss has no place on a power law, but leaving it out silently
        # would present the curve as the whole group: the fit's notes name what was left out.
        left_out = [f"{x}={value:g}" for value in part.loc[~finite, x].to_numpy(dtype=float)]
        part = part[finite]
        # Each group's bootstrap gets its own stream: with one seed for all, the draws of two
        # groups share their noise, and a difference of paired draws (compare_asymptotes) came
        # out several times too narrow. Keyed by the name, not the position: a group's interval (and
        # the verdicts read from it, E_AT_ZERO) must not change when another algorithm joins the sweep.
        group_seed = int(np.random.SeedSequence([seed, zlib.crc32(str(name).encode())]).generate_state(1)[0])
        try:
            results[name] = fit_power_law(part[x].to_numpy(dtype=float), part[y].to_numpy(dtype=float),
                                          seed=group_seed, **options)
        except FitOptionError:  # an option no fit takes: said once, not as every group not fitted
            raise
        except UserError as exc:
            reason = str(exc) + (f" ({len(left_out)} non-finite loss(es) left out: "
                                 f"{', '.join(left_out)})" if left_out else "")
            results[name] = NotFitted("; ".join([reason, *(notes or {}).get(name, ())]),
                                      too_few_points=isinstance(exc, TooFewPoints))
            continue
        if left_out:
            results[name].notes.append(f"{len(left_out)} non-finite loss(es) (diverged or missing) left out "
                                       f"of the fit: {', '.join(left_out)}")
        results[name].notes.extend((notes or {}).get(name, ()))
    return results
