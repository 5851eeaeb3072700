"""Certifications that measure one point of L(G): one :data:`CONFIGURATION` (method, G, model, fixed
seed and setting), searched more than once (another start, noise or max_runs), is one point, its runs
counted once (:func:`one_point_per_configuration`). The generation curves (``analysis.experiments``)
and the real-only baseline a curve is compared with (``analysis.generation.baseline_for``) both read
it, so that one configuration gives one loss everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.frame import BENCH, POINT_RUNS, SETTING, VAL, PointRun, columns_with, point_of
from search.params import SEED, format_point
from search.tuned import Certified, configuration_loss, tuned_at_g

__all__ = ["CONFIGURATION", "model_key", "configuration_groups", "one_point_per_configuration",
           "seed_repeats", "recipe_losses", "lowest_recipe"]


def model_key(value: Any) -> Any:
    """A frame's value as a grouping key: NaN (a missing model or seed) and None are one value."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


CONFIGURATION = ("method", "g", "model", "seed", SETTING)
"""What makes two certifications measure one point of L(G): the same method, G, model, fixed seed and
setting (:meth:`search.params.RunParams.setting`). Certifications that share all of these and differ only in
how their search ran (``start``, ``noise``, ``max_runs``, a grid's other values) search one
configuration; different fixed seeds are seed repeats."""
_ALL_BUT_SEED = tuple(column for column in CONFIGURATION if column != SEED)


def configuration_groups(frame: pd.DataFrame, columns: Sequence[str] = CONFIGURATION) -> list[list[Any]]:
    """The index labels of ``frame``'s rows, grouped by their values in ``columns`` (those the frame
    has; NaN and None one value), groups in order of first row; a row without a method is a group of
    its own."""
    keys = [column for column in columns if column in frame]
    groups: dict[tuple, list[Any]] = {}
    for index, row in frame.iterrows():
        key = tuple(model_key(row[key]) for key in keys)
        groups.setdefault(key if model_key(row.get("method")) is not None else ("no method", index), []).append(index)
    return list(groups.values())


def seed_repeats(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """``frame`` one row per configuration (:func:`one_point_per_configuration`), grouped into the
    fixed-seed repeats of one recipe: rows that differ only in their ``seed``, one group each, in
    order of first row. A recipe's loss is their mean: the lowest of several seeds is the luckiest,
    biased low (a G's point of the G-trend is that mean too, ``analysis.generation.monotonicity``)."""
    points, _notes = one_point_per_configuration(frame)
    return [points.loc[members] for members in configuration_groups(points, _ALL_BUT_SEED)]


def recipe_losses(frame: pd.DataFrame, column: str) -> list[tuple[float, pd.DataFrame]]:
    """Each recipe of ``frame`` (its fixed-seed repeats, :func:`seed_repeats`) with its loss on
    ``column``: the mean over the repeats, by ``search status``'s rule (:func:`search.tuned.tuned_at_g`,
    each repeat one configuration). The one reading of a recipe's loss for the baseline
    (``analysis.generation.baseline_for``) and the student and synthetic-only tables.

    >>> frame = pd.DataFrame({"method": "real", "g": 0, "seed": [0, 1, 0], "setting": ["", "", "wd=0.4"],
    ...                       "certification": ["a", "a-s1", "b"], "loss": [3.5, 3.7, 3.55]})
    >>> [(loss, list(part["certification"])) for loss, part in recipe_losses(frame, "loss")]
    [(3.6, ['a', 'a-s1']), (3.55, ['b'])]
    """
    return [(tuned_at_g([Certified.of_loss(loss)] for loss in pd.to_numeric(part[column])).loss, part)
            for part in seed_repeats(frame)]


def lowest_recipe(frame: pd.DataFrame, column: str) -> tuple[float, pd.DataFrame]:
    """Of ``frame``'s recipes (:func:`recipe_losses`) the lowest loss on ``column`` and its fixed-seed
    repeats (a tie: the first recipe); ``frame`` has at least one row."""
    return min(recipe_losses(frame, column), key=lambda recipe: recipe[0])


def one_point_per_configuration(curves: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """One row per :data:`CONFIGURATION` of ``curves``, and per method the notes that say which
    certifications were made one point and how.

    Certifications of one configuration are not independent repeats: the sweep adopts a finished run
    of the same identity, so two of them at one point may rest on the very same runs. They become
    one point: where some are certified, only those (a search still running is left out beside them),
    merged by :func:`search.tuned.configuration_loss` (``search status``'s G trend's rule too): at
    each certified point its loss columns are the mean over the distinct runs there
    (:data:`analysis.frame.POINT_RUNS`; a certification without run identities counts as a run of its
    own); of different points (two local optima) the curve takes the lowest loss, the better-tuned one.
    The row is that point's certification with the most distinct runs (its name, point, noise)."""
    if len(curves) == 0:
        return curves, {}
    kept: list[Any] = []
    values: dict[Any, dict[str, float]] = {}
    notes: dict[str, list[str]] = {}
    for members in configuration_groups(curves):
        if len(members) == 1:
            kept.extend(members)
            continue
        representative, means, note = _combined(curves.loc[members])
        kept.append(representative)
        values[representative] = means
        notes.setdefault(str(curves.loc[representative, "method"]), []).append(note)
    if not values:
        return curves, {}
    frame = curves.loc[sorted(kept)].copy()
    for index, means in values.items():
        for column, value in means.items():
            frame.loc[index, column] = value
    return frame.reset_index(drop=True), notes


def _combined(part: pd.DataFrame) -> tuple[Any, dict[str, float], str]:
    """The row that stands for several certifications of one configuration (its index), the loss
    columns it takes, and the note that says how (:func:`one_point_per_configuration`; the merge is
    :func:`search.tuned.configuration_loss`, ``search status``'s G trend's rule too)."""
    names = [str(name) for name in part["certification"]]
    certified = part["certified"].astype(bool) if "certified" in part else pd.Series(True, index=part.index)
    searching = [str(name) for name, done in zip(part["certification"], certified) if not done]
    candidates = part[certified] if certified.any() else part
    if not certified.any():
        searching = []
    indices = list(candidates.index)
    certifications = [Certified(str(row["certification"]), point_of(row), _values(row), _runs(row))
                       for _, row in candidates.iterrows()]
    merged = configuration_loss(certifications)
    numbers = ["loss", *columns_with(part, VAL), *columns_with(part, BENCH)]
    means = {column: merged.best.values.get(column, math.nan) for column in numbers}
    representative = indices[merged.best.representative]
    g = part["g"].iloc[0]
    text = (f"one point at G={g:g} from {' and '.join(names)}: they search one configuration (method, G, model, "
            "seed and setting; only how their search ran differs: start, noise, max_runs), so they are one "
            "measurement, not seed repeats")
    if searching:
        text += f"; {', '.join(searching)} not certified yet: left out beside the certified one(s)"
    if len(merged.points) == 1:
        shared = merged.best.shared(certifications)
        text += (f"; the certified point {_point_words(merged.best.point)} rests on {len(merged.best.runs)} distinct "
                 f"run(s){f' ({shared} shared)' if shared else ''}, loss {merged.best.loss:.4f} their mean")
    else:
        found = "; ".join(f"{_point_words(m.point)}: {m.loss:.4f} ({', '.join(certifications[i].name for i in m.members)})"
                          for m in merged.points)
        text += (f"; they certified different points ({found}, each the mean of its distinct runs): the curve takes "
                 f"the lowest, {part.loc[representative, 'certification']}'s, the better-tuned of the local optima")
    return representative, means, text


def _runs(row: pd.Series) -> tuple[PointRun, ...]:
    """A certification's runs at its point (:data:`analysis.frame.POINT_RUNS`); none where the frame
    has no run identities (a frame built by hand): then it counts as a run of its own."""
    runs = row.get(POINT_RUNS)
    return runs if isinstance(runs, tuple) else ()


def _values(row: pd.Series) -> dict[str, float]:
    """A certification's own numbers: its finite loss, ``val_loss.<set>`` and ``bench.<task>``."""
    return {column: float(row[column]) for column, value in row.items()
            if (column == "loss" or str(column).startswith((VAL, BENCH))) and _finite(value)}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) and math.isfinite(float(value))


def _point_words(point: Mapping[str, Any]) -> str:
    return f"({format_point(point)})" if point else "(no grid point)"
