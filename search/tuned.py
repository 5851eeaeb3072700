"""The tuned loss of one configuration and of one curve at one G: the merge rule, pure.

paper.md, "Results": each (algorithm, G) is compared by its tuned loss. A configuration (method, G,
model, fixed seed and setting) can be certified more than once (a search run again under a new
name, a warm start): :func:`configuration_loss` makes those one point, and :func:`tuned_at_g`
averages a curve's fixed-seed repeats at one G. The one rule of ``search status``'s G trend
(:func:`search.status.g_trend`) and of the analysis's curves, rise check and recipes
(``analysis.configurations``, ``analysis.generation``).

Which certifications form which curve, and its name, is one rule too, :func:`method_curves` (each
certification's curve: :func:`curve_labels`): ``search status``'s G trend and the analysis's curves
(``analysis.experiments.generation_curves``) read the same curves.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from megadocs.formats import RunMetrics, RunStatus
from search.grid import points_equal
from search.ledger import RunRecord

__all__ = ["DEFAULT_SETTING", "curve_label", "curve_method", "CurveMember", "MethodCurves", "method_curves", "curve_labels",
           "VAL", "BENCH", "scores", "PointRun", "runs_at_point", "Certified", "PointMeasure", "ConfigurationLoss", "configuration_loss",
           "TunedLoss", "tuned_at_g"]


DEFAULT_SETTING = "default"
"""How a curve's label names the empty setting (nothing fixed beyond method, G and model: the sweep's
defaults) where it is not the method's main curve, ``method [default]`` (:func:`curve_label`); never
a setting's own text, which is ``key=value`` pairs."""


def curve_label(method: str, setting: str) -> str:
    """The name of ``method``'s curve under ``setting`` where it is not the method's main curve
    (:func:`method_curves`); the empty setting is :data:`DEFAULT_SETTING`.

    >>> curve_label("simple", "temperature=0.5"), curve_label("simple", "")
    ('simple [temperature=0.5]', 'simple [default]')
    """
    return f"{method} [{setting or DEFAULT_SETTING}]"


def curve_method(label: str, setting: str) -> str:
    """The method of a curve named ``label`` whose certifications have ``setting`` (the inverse of
    :func:`curve_label`; a plain method name is its own method).

    >>> curve_method("simple [temperature=0.5]", "temperature=0.5"), curve_method("simple", "epochs=4")
    ('simple', 'simple')
    """
    return label.removesuffix(curve_label("", setting))


@dataclass(frozen=True)
class CurveMember:
    """One certification as :func:`method_curves` reads it: its method, G, the model it trains (None:
    the base model's) and its setting, what it fixes beyond method, G, model and seed (its other fixed
    params and the grid axes it is given one value) as :meth:`search.params.RunParams.setting` writes
    it ("" for none: the analysis frame's ``setting`` column)."""

    method: str
    g: float
    setting: str = ""
    model: str | None = None


@dataclass(frozen=True)
class MethodCurves:
    """One method's (and model's) curves (:func:`method_curves`)."""

    method: str
    """Its main curve's name: the method, with ``(model)`` where it trains another than the base model."""
    main: str
    """The setting the main curve is named by: the one most of its certifications have (a tie: the
    first in sort order, nothing fixed first)."""
    joined: tuple[tuple[str, tuple[float, ...]], ...] = ()
    """Each other setting certified only at G the main curve lacks (the sweep file changed between G),
    with those G: points of the main curve."""
    apart: tuple[str, ...] = ()
    """Each other setting certified at a G of the main curve: a curve of its own, :func:`curve_label`."""

    def label(self, setting: str) -> str:
        """The curve of a certification of this method under ``setting``."""
        return curve_label(self.method, setting) if setting in self.apart else self.method


def method_curves(members: Iterable[CurveMember], base_model: str | None = None) -> list[MethodCurves]:
    """Which certifications form which L(G) curve, by method (and model: one trained on another than
    ``base_model`` is ``method (model)``), in order of name. Two certifications of a method at one G
    under two settings measure two curves, not seed repeats of one point: the setting most of the
    method's certifications have keeps the method's name, every other certified at a G of that curve is
    ``method [setting]``. A setting certified only at G the curve lacks (the sweep file changed between
    G: never two settings at one G) is a point of the method's curve, as the sweep wrote it: the paper
    compares one algorithm's tuned loss across G. The one rule of ``search status``'s G trend
    (:func:`search.status.g_trend`) and the analysis's curves (``analysis.experiments.curve_notes``).

    >>> method_curves([CurveMember("s", 1), CurveMember("s", 2), CurveMember("s", 2, "t=1"), CurveMember("s", 4, "t=2")])
    [MethodCurves(method='s', main='', joined=(('t=2', (4,)),), apart=('t=1',))]
    """
    by_method: dict[str, list[CurveMember]] = defaultdict(list)
    for member in members:
        by_method[_method(member, base_model)].append(member)
    curves = []
    for method, part in sorted(by_method.items()):
        counts = Counter(member.setting for member in part)
        main, *others = sorted(counts, key=lambda setting: (-counts[setting], setting))
        on_curve = {member.g for member in part if member.setting == main}  # growing as settings join it
        joined, apart = [], []
        for setting in others:
            at = {member.g for member in part if member.setting == setting}
            if on_curve.isdisjoint(at):
                on_curve |= at
                joined.append((setting, tuple(sorted(at))))
            else:
                apart.append(setting)
        curves.append(MethodCurves(method, main, tuple(joined), tuple(apart)))
    return curves


def curve_labels(members: Sequence[CurveMember], base_model: str | None = None) -> list[str]:
    """Each member's curve (:func:`method_curves`), in order.

    >>> curve_labels([CurveMember("s", 2), CurveMember("s", 2, "t=1"), CurveMember("s", 2, model="1.5b")], "300m")
    ['s', 's [t=1]', 's (1.5b)']
    """
    by_method = {curve.method: curve for curve in method_curves(members, base_model)}
    return [by_method[_method(member, base_model)].label(member.setting) for member in members]


def _method(member: CurveMember, base_model: str | None) -> str:
    """The name of ``member``'s method's main curve (:attr:`MethodCurves.method`)."""
    return member.method if member.model is None or member.model == base_model else f"{member.method} ({member.model})"


VAL, BENCH = "val_loss.", "bench."
"""How a run's scores are named by column (:func:`scores`): ``val_loss.<set>`` (each validation
set's loss), ``bench.<task>`` (each benchmark's accuracy): the analysis frame's columns."""


def scores(metrics: RunMetrics | None) -> dict[str, float | None]:
    """A run's validation losses (``val_loss.<set>``) and benchmark accuracies (``bench.<task>``: the
    ``acc`` of its :class:`megadocs.formats.BenchmarkScore`, where it has one) by column, as its
    metrics hold them ({} without metrics): the numbers a :class:`PointRun` carries beside its loss.

    >>> from megadocs.formats import BenchmarkScore
    >>> sciq = BenchmarkScore.table({"sciq": {"acc": 0.7}})
    >>> scores(RunMetrics(status=RunStatus.COMPLETED, val_loss=3.4, val_losses={"iid": 3.4}, benchmarks=sciq))
    {'val_loss.iid': 3.4, 'bench.sciq': 0.7}
    """
    if metrics is None:
        return {}
    columns: dict[str, float | None] = {VAL + name: value for name, value in metrics.val_losses.items()}
    for name, score in (metrics.benchmarks or {}).items():
        if score.acc is not None:
            columns[BENCH + name] = score.acc
    return columns


@dataclass(frozen=True)
class PointRun:
    """One run at a certification's certified point: its identity (``run_id``, shared by every study
    that adopted it; None: not known, a run of its own) and its finite numbers by column (``loss``,
    and :func:`scores`' ``val_loss.<set>`` and ``bench.<task>``; a column the run has no finite
    number in is absent)."""

    run_id: str | None
    values: Mapping[str, float] = field(default_factory=dict)


def runs_at_point(records: Iterable[RunRecord], point: Mapping[str, Any]) -> tuple[PointRun, ...]:
    """The runs whose mean is a certification's loss at ``point`` (its grid axes; () for an empty
    ``point``), among ``records`` (its ledger trials, in the ledger's order): each completed run there
    with a finite loss, its seeded (noise) repeats included and a run adopted from another study too
    (it is the same run there), each run identity once (the first); a run without an identity (a
    ledger older than run identities) is a run of its own, never dropped. A diverged, failed,
    superseded or running trial is none. The one rule of :attr:`search.status.CertificationSummary.point_runs`,
    which the analysis's certifications frame carries (``analysis.frame.POINT_RUNS``) and both merge
    one configuration's certifications by (:func:`configuration_loss`).

    >>> from megadocs.formats import RunStatus
    >>> at = {"lr": 3e-3}
    >>> run = lambda run_id, loss, status=RunStatus.COMPLETED, **kw: RunRecord(
    ...     certification="c", point=at, run_id=run_id, status=status, loss=loss, **kw)
    >>> [(r.run_id, r.values["loss"]) for r in runs_at_point([run("r0", 3.5), run(None, 3.6, fixed={"seed": 1}),
    ...     run("r0", 3.5, adopted_from="b"), run("r2", float("inf"), RunStatus.DIVERGED)], at)]
    [('r0', 3.5), (None, 3.6)]
    """
    runs: dict[Any, PointRun] = {}
    for i, record in enumerate(records):
        if (point and record.status is RunStatus.COMPLETED and record.loss is not None and math.isfinite(record.loss)
                and points_equal(record.point, point)):
            values = {column: float(value) for column, value in scores(record.metrics).items()
                      if value is not None and math.isfinite(value)}
            runs.setdefault(record.run_id if record.run_id is not None else ("record", i),
                            PointRun(record.run_id, {"loss": float(record.loss), **values}))
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
