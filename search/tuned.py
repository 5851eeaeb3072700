"""The tuned loss of one configuration and of one curve at one G: the merge rule, pure.

paper.md, "Results": each (algorithm, G) is compared by its tuned loss. A configuration (method, G,
model, fixed seed and setting) can be certified more than once (a search run again under a new
name, a warm start): :func:`configuration_loss` makes those one point, and :func:`tuned_at_g`
averages a curve's fixed-seed repeats at one G. The one rule of ``search status``'s G trend
(:func:`search.status.g_trend`) and of the analysis's curves, rise check and recipes
(``analysis.configurations``, ``analysis.generation``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from megadocs.formats import RunStatus
from search.grid import points_equal
from search.ledger import RunRecord

__all__ = ["PointRun", "runs_at_point", "Certified", "PointMeasure", "ConfigurationLoss", "configuration_loss",
           "TunedLoss", "tuned_at_g"]


@dataclass(frozen=True)
class PointRun:
    """One run at a certification's certified point: its identity (``run_id``, shared by every study
    that adopted it; None: not known, a run of its own) and its numbers by column (``loss``; the
    analysis's frame adds ``val_loss.<set>`` and ``bench.<task>``; a column the run has no number in
    is absent)."""

    run_id: str | None
    values: Mapping[str, float] = field(default_factory=dict)


def runs_at_point(records: Iterable[RunRecord], point: Mapping[str, Any]) -> tuple[PointRun, ...]:
    """:attr:`search.status.CertificationSummary.point_runs`: the completed runs with a finite loss among ``records``
    (one certification's) at ``point`` (its grid axes; seeded repeats there included), each run
    identity once (the first), in the records' order; () for an empty ``point``."""
    runs: dict[Any, PointRun] = {}
    for i, record in enumerate(records):
        if (point and record.status is RunStatus.COMPLETED and record.loss is not None and math.isfinite(record.loss)
                and points_equal(record.point, point)):
            runs.setdefault(record.run_id if record.run_id is not None else ("record", i),
                            PointRun(record.run_id, {"loss": float(record.loss)}))
    return tuple(runs.values())


@dataclass(frozen=True)
class Certified:
    """One certification of a configuration as :func:`configuration_loss` reads it: its name (None: not
    named), its certified point, its certified numbers by column (``loss``: the certificate's), and the
    runs at its point (where none are known, one run of its own with those numbers)."""

    name: str | None
    point: Mapping[str, Any]
    values: Mapping[str, float]
    runs: tuple[PointRun, ...] = ()

    @property
    def point_runs(self) -> tuple[PointRun, ...]:
        """:attr:`runs`, or one run of its own (no identity) with its certified numbers."""
        return self.runs or (PointRun(None, self.values),)

    @classmethod
    def of_loss(cls, loss: float, name: str | None = None) -> Certified:
        """A certification known only by its loss (no point, no run identities)."""
        return cls(name, {}, {"loss": float(loss)})


@dataclass(frozen=True)
class PointMeasure:
    """One certified point of a configuration (:func:`configuration_loss`)."""

    point: dict[str, Any]
    members: tuple[int, ...]
    """The positions (in the certifications given) of those certified here, in order."""
    runs: tuple[PointRun, ...]
    """Their runs here, each identity once (a run without one: each its own)."""
    values: dict[str, float]
    """Each column's mean over the runs that have a number in it."""
    representative: int
    """The member with the most runs here (a tie: the first): the certification that stands for the point."""

    @property
    def loss(self) -> float:
        return self.values.get("loss", math.nan)

    def shared(self, certified: Sequence[Certified]) -> int:
        """How many run identities more than one of its members rests on."""
        counts: dict[str, int] = defaultdict(int)
        for member in self.members:
            for run_id in {run.run_id for run in certified[member].point_runs if run.run_id is not None}:
                counts[run_id] += 1
        return sum(count > 1 for count in counts.values())


@dataclass(frozen=True)
class ConfigurationLoss:
    """:func:`configuration_loss`: every certified point of one configuration, and the one it takes."""

    points: tuple[PointMeasure, ...]
    best: PointMeasure


def configuration_loss(certified: Sequence[Certified]) -> ConfigurationLoss:
    """The loss of one configuration (method, G, model, fixed seed and setting) certified once or more:
    once, its certified numbers. More than once, its certifications are not independent repeats: the sweep adopts a finished run of the same
    identity, so two of them at one point may rest on the very same runs (taking the lower of their
    losses would pick the luckier subset of one set of runs, biased low). So at each certified point
    every column is the mean over the distinct runs there; of different points (two local optima) the
    lowest loss counts, the better-tuned one (a tie: the first). The one rule of ``search status``'s G
    trend (:func:`search.status.g_trend`) and the analysis's curves (``analysis.configurations``).

    >>> run = lambda run_id, loss: PointRun(run_id, {"loss": loss})
    >>> once = Certified("a", {"lr": 3e-3}, {"loss": 3.50}, (run("r0", 3.50),))
    >>> again = Certified("a-again", {"lr": 3e-3}, {"loss": 3.53}, (run("r0", 3.50), run("r1", 3.56)))
    >>> merged = configuration_loss([once, again]).best
    >>> round(merged.loss, 4), merged.representative
    (3.53, 1)
    >>> configuration_loss([once, Certified("b", {"lr": 1e-2}, {"loss": 3.48})]).best.point
    {'lr': 0.01}
    """
    if not certified:
        raise ValueError("configuration_loss: expected at least one certification")
    if len(certified) == 1:
        [one] = certified
        point = PointMeasure(dict(one.point), (0,), one.point_runs, dict(one.values), 0)
        return ConfigurationLoss((point,), point)
    at: list[tuple[Mapping[str, Any], list[int]]] = []
    for i, one in enumerate(certified):
        for point, members in at:
            if points_equal(point, one.point):
                members.append(i)
                break
        else:
            at.append((one.point, [i]))
    measured = []
    for point, members in at:
        runs: dict[Any, PointRun] = {}
        for i in members:
            for k, run in enumerate(certified[i].point_runs):
                runs.setdefault(run.run_id if run.run_id is not None else (i, k), run)
        columns = dict.fromkeys(column for run in runs.values() for column in run.values)
        values = {column: sum(numbers) / len(numbers)
                  for column in columns if (numbers := [run.values[column] for run in runs.values() if column in run.values])}
        representative = max(members, key=lambda i: (len(certified[i].point_runs), -i))
        measured.append(PointMeasure(dict(point), tuple(members), tuple(runs.values()), values, representative))
    best = min(measured, key=lambda m: m.loss if math.isfinite(m.loss) else math.inf)
    return ConfigurationLoss(tuple(measured), best)


@dataclass(frozen=True)
class TunedLoss:
    """The tuned loss of one curve at one G (:func:`tuned_at_g`)."""

    loss: float
    certifications: tuple[str | None, ...]
    """The certification whose point gave each configuration's loss, in order (None: one not named)."""

    @property
    def certification(self) -> str | None:
        """The one certification that gave the loss; None for several fixed seeds (their mean)."""
        return self.certifications[0] if len(self.certifications) == 1 else None

    @property
    def label(self) -> str:
        """How a line names it: the certification, or ``seeds of a, b``."""
        if len(self.certifications) == 1:
            return str(self.certifications[0])
        return "seeds of " + ", ".join(sorted(str(name) for name in self.certifications))


def tuned_at_g(configurations: Iterable[Sequence[Certified]]) -> TunedLoss:
    """One curve's tuned loss at one G, from its certifications grouped by configuration (the same
    fixed params: they differ only in how their search ran): each configuration's loss by
    :func:`configuration_loss`, and over configurations (fixed-seed repeats) their mean: the lowest of
    several seeds is the luckiest, biased low. The one rule of ``search status``'s G trend
    (:func:`search.status.g_trend`) and the analysis's rise check and recipes (``analysis.generation.monotonicity``,
    ``analysis.configurations.recipe_losses``, whose rows are one per configuration).

    >>> tuned_at_g([[Certified.of_loss(3.5, "a")], [Certified.of_loss(3.6, "a-s1")]])
    TunedLoss(loss=3.55, certifications=('a', 'a-s1'))
    """
    best = []
    for configuration in configurations:
        configuration = list(configuration)
        point = configuration_loss(configuration).best
        best.append((point.loss, configuration[point.representative].name))
    if not best:
        raise ValueError("tuned_at_g: expected at least one configuration with a loss")
    return TunedLoss(sum(loss for loss, _ in best) / len(best), tuple(name for _, name in best))
