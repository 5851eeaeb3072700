"""Local-optimality certification: the algorithm, in plain Python over an abstract evaluator.

The rule (paper.md, "Local-optimality certification"): a grid point is *certified* when all of
its existing one-step neighbours have been evaluated and none has a lower loss.

The search is stateless given its evidence: :func:`decide` looks only at the start point and the
outcomes recorded so far (in the order they finished) and says what to run next. That makes
resuming trivial (re-read the ledger, decide again) and lets ``status`` recompute the same answer
the controller would.

Evidence comes in *draws*: run ``r`` of a point carries ``seed: r`` in its params (the first,
``r = 0``, carries none). With ``Noise(repeats=1)`` (the default) every point is one draw and the
rule is the noise-free one:

- Centre = the best finished point (first to finish among equal losses, so ties never cause a
  move: a neighbour must be *strictly* lower to take over).
- Before anything finished: run ``start`` (and, by default, its neighbours in the same batch,
  which saves a round: they are the first thing the search would ask for anyway).
- Otherwise: ask for every neighbour of the centre not yet run. Runs of an old centre that are
  still in flight are left to finish (their evidence is kept; cancelling wastes the compute
  already spent), but nothing new is dispatched around a centre that is no longer the best.

With ``Noise(repeats=N)`` the loss of a point is the mean of up to N draws, and the seed noise
sigma is pooled over every point with two or more finite draws. Repeats go only where they
decide something:

- a point becomes *complete* after N draws; only complete points can be the centre (so a
  certificate never rests on one lucky draw), and the centre's own N draws give the first
  noise estimate;
- a point whose mean is below the centre's but which is not complete yet (a *contender*) gets
  more draws: all of them at once when it is clearly better, one at a time otherwise;
- a neighbour of the centre whose gap is within ``sds`` noise standard errors gets one more
  draw at a time, up to N; one that is clearly worse after fewer draws is settled there;
- after N draws, a neighbour still within noise of the centre is a *tie*, flagged in the
  certificate with its gap in noise units (exact ties are flagged the same way without noise).

A certificate never rests on an infinite loss: while every complete point diverged, the search
runs unevaluated points outward from the start (nearest first) until one is finite, and ends
FAILED with a reason when the grid holds none. Diverged neighbours of a certified point are a
*soft bound* (listed in the certificate like the grid's bounds): the loss may fall again beyond.

Search bounds are a compute limit, not evidence (paper.md). A grid may carry *extension values*
beyond the ends the user listed (``extend:`` in the sweep, :meth:`search.grid.Grid.extended`):

- the search reaches an extension value only as a neighbour of the centre: when the best point
  sits on the edge reached so far and values are left on that side, the next one is run like
  any neighbour, and the search continues from whichever is better. The start's seeding
  neighbours and the outward search stay inside the part reached (listed values, the start and
  every point with evidence), so a search whose best point never sits on an edge runs none;
- a certificate hits a bound only where the listed extension values ran out
  (``Bound.extended``): then it leans on the new bound, and says so.

Every run is thus one a search on the fully extended grid would also ask for (that search also
seeds a start on the edge with its extension neighbours): extending never costs more runs than
listing the values from the start (tests/search/test_extend.py).

What a certificate rests on is a typed :class:`Basis`: per axis, :class:`Support` INTERIOR (a
no-better neighbour evaluated on both sides), BOUND (the grid ends there) or NOT_SEARCHED (a
single value); as a whole the weakest of its searched axes, NOT_SEARCHED when no axis was
searched (one run, no comparison); with the draws behind it (noise-aware or one run per point).

Dispatch policy (keeps total runs *and* wall-clock rounds low): each time a run finishes the
decision is recomputed, so the search moves on as soon as one improving neighbour finishes, without
waiting for the rest of the batch. When slots are scarce, the neighbour that continues the last
move (same axis, same direction) goes first: on smooth landscapes it is the likeliest to
improve again. A failed neighbour of the centre (retries exhausted) blocks the certificate and
is reported; it is never treated as "not lower".

Who asks for runs and how they are run is :mod:`search.strategies` (the strategies and the
driver loop over an abstract evaluator); this module is the rule alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

from megadocs.exits import Exit
from search.grid import Bound, Direction, Grid, Key, Side
from search.params import RunParams

__all__ = [
    "RunState",
    "Outcome",
    "CertState",
    "Certificate",
    "Support",
    "AxisBasis",
    "Basis",
    "Extension",
    "CertifyExit",
    "NeighbourEvidence",
    "Noise",
    "NoiseEstimate",
    "Decision",
    "decide",
    "point_key",
    "Draw",
]

Draw = tuple[Key, int]
"""One run of a grid point: its key and its repeat index (0 = the run without a seed)."""


class RunState(str, Enum):
    """What the certifier knows about one run."""

    RUNNING = "running"
    FINISHED = "finished"  # evaluated; a diverged run is FINISHED with loss +inf
    FAILED = "failed"  # infrastructure failure after all retries, or no usable loss: no evidence


@dataclass(frozen=True)
class Outcome:
    state: RunState
    loss: float | None = None
    reason: str | None = None

    @classmethod
    def running(cls) -> Outcome:
        return cls(RunState.RUNNING)

    @classmethod
    def finished(cls, loss: float) -> Outcome:
        """An evaluated run. NaN and +inf are a diverged run (loss +inf, as train records it);
        -inf is no loss at all: a FAILED outcome with the reason (never a certificate)."""
        loss = float(loss)
        if loss == -math.inf:
            return cls.failed("the objective returned loss -inf (not a loss; check the objective)")
        return cls(RunState.FINISHED, math.inf if math.isnan(loss) else loss)

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(RunState.FAILED, None, reason)


class CertState(str, Enum):
    SEEDING = "seeding"  # nothing complete yet
    SEARCHING = "searching"  # a centre exists, some runs still to do or in flight
    CERTIFIED = "certified"  # all existing neighbours evaluated, none lower (on the evidence)
    FAILED = "failed"  # blocked by failed runs, no finite loss anywhere, or a failed warm-start source


@dataclass(frozen=True)
class Noise:
    """How a certification treats seed noise (``noise: {repeats, sds}`` in a sweep file).

    Attributes:
        repeats: at most this many draws per point (1 = noise-free: one run decides).
        sds: a neighbour within this many noise standard errors of the centre is not decided
            by its draws so far (it gets another draw, up to ``repeats``; then it is a tie).
    """

    repeats: int = 1
    sds: float = 2.0

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"noise.repeats: expected >= 1, got {self.repeats}")
        if not self.sds > 0:
            raise ValueError(f"noise.sds: expected > 0, got {self.sds}")


@dataclass(frozen=True)
class NoiseEstimate:
    """The pooled seed-noise estimate a certificate was decided with (sigma None: not estimable)."""

    repeats: int
    sigma: float | None
    df: int  # degrees of freedom: sum over points of (finite draws - 1)
    sds: float

    def to_dict(self) -> dict[str, Any]:
        return {"repeats": self.repeats, "sigma": self.sigma, "df": self.df, "sds": self.sds}


@dataclass(frozen=True)
class NeighbourEvidence:
    point: dict[str, Any]
    loss: float  # mean over draws (+inf: diverged)
    axis: str
    direction: Direction
    draws: int = 1
    gap_sd: float | None = None  # (loss - centre loss) / sigma; None without a noise estimate
    tie: bool = False  # not lower, but within noise of the centre (or exactly equal)

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.point, "loss": self.loss, "axis": self.axis, "direction": self.direction.value,
                "draws": self.draws, "gap_sd": self.gap_sd, "tie": self.tie}


@dataclass(frozen=True)
class Extension:
    """A value appended beyond an end of the listed grid: ``value`` on ``axis``'s ``side``, next to
    ``after`` (the edge before it). ``centre`` is the best point, on that edge, whose neighbour
    it was (None: the start itself lies there, e.g. a warm start from a moved bound; or not
    known); ``runs``: the draws recorded before it (None: not known)."""

    axis: str
    side: Side
    value: Any
    after: Any
    centre: dict[str, Any] | None = None
    runs: int | None = None

    @property
    def step(self) -> tuple[str, Side, Any]:
        return (self.axis, self.side, self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "side": self.side.value, "value": self.value, "after": self.after,
                "centre": self.centre, "runs": self.runs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Extension:
        return cls(data["axis"], Side(data["side"]), data["value"], data["after"], data.get("centre"),
                   data.get("runs"))

    def describe(self) -> str:
        return f"{self.axis} {'above' if self.side is Side.UPPER else 'below'} {self.after:g} to {self.value:g}"


class Support(str, Enum):
    """What a certificate rests on, per axis and as a whole (the weakest of its searched axes)."""

    INTERIOR = "interior"  # a neighbour evaluated on both sides, none lower
    BOUND = "bound"  # the grid ends on a side: a compute limit, not evidence
    NOT_SEARCHED = "not searched"  # a single value: fixed by the sweep, never compared


@dataclass(frozen=True)
class AxisBasis:
    """One axis of a certificate: its support, the bounds it leans on, and the extension values
    among its evidence (the point's value and its two neighbours on this axis)."""

    axis: str
    support: Support
    bounds: tuple[Bound, ...] = ()
    extended: tuple[Any, ...] = ()
    on_extension: bool = False  # the certified point's own value is an extension value

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "support": self.support.value, "bounds": [b.to_dict() for b in self.bounds],
                "extended": list(self.extended), "on_extension": self.on_extension}


@dataclass(frozen=True)
class Basis:
    """What a certificate rests on (issue 34): the status line, ``status --json`` and the report
    print :meth:`describe`; ``search certify``'s exit status reads :attr:`support`."""

    support: Support
    axes: tuple[AxisBasis, ...]
    draws: int  # runs at the certified point
    noise: NoiseEstimate
    ties: int
    soft_bounds: tuple[Bound, ...] = ()

    def axes_with(self, support: Support) -> list[str]:
        return [a.axis for a in self.axes if a.support is support]

    @property
    def extended(self) -> tuple[AxisBasis, ...]:
        """Axes whose evidence used extension values (the certified point or a neighbour)."""
        return tuple(a for a in self.axes if a.extended)

    def describe(self) -> str:
        """One line, e.g. ``interior on every searched axis (lr, wd, epochs); mix not searched;
        1 run per point (seed noise not measured)``."""
        searched = [a.axis for a in self.axes if a.support is not Support.NOT_SEARCHED]
        fixed = self.axes_with(Support.NOT_SEARCHED)
        if self.support is Support.NOT_SEARCHED:
            parts = [f"nothing searched: every axis has a single value ({', '.join(fixed)}), so one point was "
                     f"run and compared with nothing; not evidence of an optimum"]
        else:
            if self.support is Support.INTERIOR:
                parts = [f"interior on every searched axis ({', '.join(searched)})"]
            else:
                bounds = [f"{b.axis} {b.side.value} {b.value:g}" + (" (last extension value)" if b.extended else "")
                          for a in self.axes for b in a.bounds]
                parts = [f"leans on bound(s) {', '.join(bounds)}: a compute limit, not evidence"]
                interior = self.axes_with(Support.INTERIOR)
                if interior:
                    parts.append(f"interior on {', '.join(interior)}")
            if fixed:
                parts.append(f"{', '.join(fixed)} not searched (single value)")
        for axis in self.extended:
            values = ", ".join(f"{v:g}" for v in axis.extended)
            parts.append(f"{axis.axis} moved beyond the listed grid: the point and its evidence at {values}"
                         if axis.on_extension else f"{axis.axis} evidence beyond the listed grid: a neighbour at {values}")
        if self.soft_bounds:
            parts.append("diverged neighbour(s) " + ", ".join(b.label for b in self.soft_bounds)
                         + " (soft bound)")
        if self.noise.repeats > 1:
            sd = "seed sd not estimated" if self.noise.sigma is None else f"seed sd {self.noise.sigma:.4g}"
            parts.append(f"noise-aware: {self.draws} runs at the point, up to {self.noise.repeats} per point, "
                         f"{sd}, {self.ties} tie(s) within noise")
        else:
            parts.append("1 run per point (seed noise not measured)"
                         + (f", {self.ties} exact tie(s)" if self.ties else ""))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"support": self.support.value, "axes": [a.to_dict() for a in self.axes], "draws": self.draws,
                "repeats": self.noise.repeats, "ties": self.ties, "summary": self.describe()}


class CertifyExit(IntEnum):
    """The exit status of ``megadocs search certify``, from what its certificates rest on (its
    ``--help`` and the README print :meth:`help`): the members of :class:`megadocs.exits.Exit`
    that certify uses, with their numbers. ``search status`` exits 0 whenever it read the ledger:
    each certificate's basis is in its output and ``--json``."""

    CERTIFIED = Exit.OK.value  # every certification certified, each interior on every searched axis
    NOT_CERTIFIED = Exit.NEGATIVE.value  # not certified on its evidence (no finite loss, budget spent)
    CERTIFIED_ON_BOUND = Exit.CERTIFIED_ON_BOUND.value  # all certified, one on a search bound or no axis
    WORK_FAILED = Exit.WORK_FAILED.value  # a run failed, was cancelled or killed (re-run, --retry-failed)

    @classmethod
    def of(cls, certifications: Iterable[tuple[CertState, Support | None, bool]]) -> CertifyExit:
        """The status for (state, the certificate's :attr:`Basis.support`, whether a run of it
        failed) of every certification: a failed run outranks every answer (the answer rests on
        work that did not finish)."""
        certifications = list(certifications)
        if any(failed_runs for _, _, failed_runs in certifications):
            return cls.WORK_FAILED
        if any(state is not CertState.CERTIFIED for state, _, _ in certifications):
            return cls.NOT_CERTIFIED
        if any(support is not Support.INTERIOR for _, support, _ in certifications):
            return cls.CERTIFIED_ON_BOUND
        return cls.CERTIFIED

    @classmethod
    def help(cls) -> str:
        """One paragraph for help screens."""
        return (f"exit status: {cls.CERTIFIED.value} every certification certified, interior on every searched "
                f"axis; {cls.NOT_CERTIFIED.value} a certification is not certified on its evidence (no finite "
                f"loss, or it spent its run budget); {cls.CERTIFIED_ON_BOUND.value} every certification "
                "certified, but a certificate leans on a search bound (a compute limit, not evidence: widen the "
                "grid or list values under extend:) or searched no axis (every axis has one value: one run, "
                f"compared with nothing); {cls.WORK_FAILED.value} a run failed, was cancelled or killed, or the "
                f"disk is full (re-run; --retry-failed re-runs failed points); {Exit.BAD_INPUT.value} bad input; "
                f"{Exit.INTERRUPTED.value} interrupted.")


@dataclass(frozen=True)
class Certificate:
    """The evidence behind a certified point. ``bounds_hit`` lists where there was no neighbour,
    ``diverged`` the neighbours that diverged (soft bounds: the loss may fall again beyond),
    ``extended`` the extension values among the point's and its neighbours' values, per axis."""

    point: dict[str, Any]
    loss: float
    neighbours: tuple[NeighbourEvidence, ...]
    bounds_hit: tuple[Bound, ...]
    diverged: tuple[Bound, ...] = ()
    noise: NoiseEstimate = NoiseEstimate(1, None, 0, 2.0)
    draws: int = 1
    extended: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def ties(self) -> tuple[NeighbourEvidence, ...]:
        return tuple(n for n in self.neighbours if n.tie)

    @property
    def basis(self) -> Basis:
        """What this certificate rests on, axis by axis (see :class:`Basis`)."""
        extended = dict(self.extended)
        axes = []
        for axis, value in self.point.items():
            bounds = tuple(b for b in self.bounds_hit if b.axis == axis)
            sides = {n.direction for n in self.neighbours if n.axis == axis}
            support = (Support.BOUND if bounds else Support.INTERIOR if len(sides) == 2 else Support.NOT_SEARCHED)
            values = extended.get(axis, ())
            axes.append(AxisBasis(axis, support, bounds, values, any(v == value for v in values)))
        searched = [a.support for a in axes if a.support is not Support.NOT_SEARCHED]
        support = (Support.NOT_SEARCHED if not searched
                   else Support.BOUND if Support.BOUND in searched else Support.INTERIOR)
        return Basis(support, tuple(axes), self.draws, self.noise, len(self.ties), self.diverged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "loss": self.loss,
            "draws": self.draws,
            "neighbours": [n.to_dict() for n in self.neighbours],
            "bounds_hit": [b.to_dict() for b in self.bounds_hit],
            "soft_bounds": [b.to_dict() for b in self.diverged],
            "ties": [n.point for n in self.ties],
            "noise": self.noise.to_dict(),
            "basis": self.basis.to_dict(),
        }


@dataclass(frozen=True)
class Decision:
    """What the evidence implies now. ``wanted`` is in dispatch priority order; its points carry
    ``seed`` for repeats."""

    state: CertState
    centre: dict[str, Any] | None
    centre_loss: float | None
    wanted: tuple[dict[str, Any], ...]
    running: tuple[dict[str, Any], ...]  # points whose draws the state waits for
    blocked_by: tuple[tuple[dict[str, Any], str], ...]  # failed points the state depends on, with reason
    certificate: Certificate | None
    path: tuple[dict[str, Any], ...]  # successive centres, oldest first
    bounds_hit: tuple[Bound, ...]
    noise: NoiseEstimate = NoiseEstimate(1, None, 0, 2.0)
    reason: str | None = None  # why a FAILED decision cannot certify (beyond blocked_by), or why SEEDING waits


# --------------------------------------------------------------------------- evidence per point


@dataclass
class _PointEvidence:
    losses: list[float] = field(default_factory=list)  # finished draws, in finishing order
    dispatched: set[int] = field(default_factory=set)  # repeat indices recorded in any state
    running: int = 0
    failed: str | None = None

    @property
    def n(self) -> int:
        return len(self.losses)

    @property
    def diverged(self) -> bool:
        return any(math.isinf(loss) for loss in self.losses)

    @property
    def mean(self) -> float:
        return math.inf if self.diverged else math.fsum(self.losses) / len(self.losses)


# Two-sided 97.5% Student-t quantiles: a threshold in noise units widens while the pooled
# estimate rests on few degrees of freedom (the estimate itself is then unreliable).
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
         12: 2.18, 15: 2.13, 20: 2.09, 30: 2.04}


def _t_inflation(df: int) -> float:
    """t(0.975, df) / z(0.975): how much wider a threshold is at ``df`` than with a known sigma."""
    known = [d for d in _T975 if d <= df]
    return (_T975[max(known)] if known else math.inf) / 1.96 if df <= 30 else 1.0


def _pooled_sigma(points: Mapping[Key, _PointEvidence]) -> tuple[float | None, int]:
    """Pooled within-point standard deviation over points with >= 2 finite draws, and its df."""
    squares, df = 0.0, 0
    for evidence in points.values():
        if evidence.n >= 2 and not evidence.diverged:
            mean = evidence.mean
            squares += math.fsum((x - mean) ** 2 for x in evidence.losses)
            df += evidence.n - 1
    return (math.sqrt(squares / df) if df else None), df


def _draw_point(grid: Grid, key: Key, repeat: int) -> dict[str, Any]:
    """A draw as the point strategies request: repeat r > 0 carries ``seed: r`` (search.params)."""
    return RunParams(point=grid.point(key), seed=repeat or None).strategy_point()


def _best(
    outcomes: Mapping[Draw, Outcome], repeats: int
) -> tuple[dict[Key, _PointEvidence], list[Key], Key | None]:
    """Per-point evidence, the successive centres (the path) and the current centre.

    A point is *complete* once it has ``repeats`` finished draws, or one diverged draw; the
    centre is the complete point with the lowest mean, the first to complete among equals.
    """
    points: dict[Key, _PointEvidence] = {}
    path: list[Key] = []
    best_loss = math.inf
    for (key, repeat), outcome in outcomes.items():
        evidence = points.setdefault(key, _PointEvidence())
        evidence.dispatched.add(repeat)
        if outcome.state is RunState.RUNNING:
            evidence.running += 1
            continue
        if outcome.state is RunState.FAILED:
            evidence.failed = evidence.failed or outcome.reason or "failed"
            continue
        was_complete = _complete(evidence, repeats)
        evidence.losses.append(outcome.loss)
        if not was_complete and _complete(evidence, repeats) and evidence.failed is None:
            if not path or evidence.mean < best_loss:
                path.append(key)
                best_loss = evidence.mean
    return points, path, (path[-1] if path else None)


def _complete(evidence: _PointEvidence, repeats: int) -> bool:
    return evidence.n >= repeats or evidence.diverged


def _next_repeats(evidence: _PointEvidence | None, repeats: int, count: int) -> list[int]:
    """Up to ``count`` repeat indices of a point not yet dispatched, lowest first."""
    taken = evidence.dispatched if evidence else set()
    return [r for r in range(repeats) if r not in taken][:count]


def decide(
    grid: Grid,
    start: Mapping[str, Any],
    outcomes: Mapping[Draw, Outcome],
    *,
    seed_neighbours: bool = True,
    noise: Noise = Noise(),
) -> Decision:
    """Decide the certification's state and the runs to dispatch next.

    Args:
        grid: the certification's grid.
        start: the seed point (on ``grid``).
        outcomes: (grid key, repeat) -> latest outcome, **in the order the outcomes were
            recorded** (a dict keeps insertion order); the order breaks ties between equal losses.
        seed_neighbours: also run the start's neighbours before the start is complete.
        noise: repeats per point and the decision threshold (see the module docstring).
    """
    repeats = noise.repeats
    points, path_keys, centre_key = _best(outcomes, repeats)
    path = tuple(grid.point(k) for k in path_keys)
    sigma, df = _pooled_sigma(points)
    estimate = NoiseEstimate(repeats, sigma, df, noise.sds)

    start_key = grid.key(start)
    reach = grid.reach([start_key, *points])  # extension values are reached only through a centre
    if centre_key is None:
        return _decide_seeding(grid, start_key, points, repeats, seed_neighbours, reach, path, estimate)

    centre = grid.point(centre_key)
    centre_evidence = points[centre_key]
    centre_loss = centre_evidence.mean

    if math.isinf(centre_loss):
        return _decide_outward(grid, start, points, repeats, centre, path, estimate, reach)

    def threshold(evidence: _PointEvidence) -> float:
        """The gap below which a point is not decided against the centre by its draws so far."""
        if repeats == 1:
            return 0.0
        if sigma is None:
            return math.inf
        se = sigma * math.sqrt(1 / evidence.n + 1 / centre_evidence.n)
        return noise.sds * _t_inflation(df) * se

    # contenders: incomplete points whose mean is below the centre's (any point of the evidence)
    contender_draws: list[dict[str, Any]] = []
    running: list[dict[str, Any]] = []
    contenders = sorted(
        (e.mean, k) for k, e in points.items()
        if e.n and not _complete(e, repeats) and e.failed is None and e.mean < centre_loss
    )
    blocked: list[Key] = []
    for _, key in contenders:
        evidence = points[key]
        if evidence.running:
            running.append(grid.point(key))
            continue
        clearly_better = centre_loss - evidence.mean > threshold(evidence)
        contender_draws += [_draw_point(grid, key, r)
                            for r in _next_repeats(evidence, repeats, repeats if clearly_better else 1)]

    neighbours = grid.neighbours(centre)
    # Continue the last move first: if the previous centre is a neighbour, the opposite side of it.
    if len(path_keys) >= 2:
        previous = path_keys[-2]
        neighbours.sort(key=lambda n: 0 if _continues(previous, centre_key, n.key) else 1)
    first_draws: list[dict[str, Any]] = []
    repeat_draws: list[dict[str, Any]] = []
    evidence_rows: list[NeighbourEvidence] = []
    for neighbour in neighbours:
        evidence = points.get(neighbour.key)
        if evidence is None or (not evidence.n and not evidence.running and evidence.failed is None):
            first_draws.append(neighbour.point)
            continue
        if evidence.failed is not None:
            blocked.append(neighbour.key)
            continue
        if not evidence.n or (evidence.running and not _complete(evidence, repeats)):
            running.append(neighbour.point)
            continue
        gap = evidence.mean - centre_loss
        if gap < 0:  # a contender (handled above)
            continue
        decided = _complete(evidence, repeats) or gap > threshold(evidence)
        if not decided:
            repeat_draws += [_draw_point(grid, neighbour.key, r) for r in _next_repeats(evidence, repeats, 1)]
            continue
        finite = math.isfinite(gap)
        evidence_rows.append(NeighbourEvidence(
            neighbour.point, evidence.mean, neighbour.axis, neighbour.direction, evidence.n,
            gap / sigma if finite and sigma else None, finite and gap <= threshold(evidence),
        ))
    wanted = tuple(contender_draws + first_draws + repeat_draws)
    failed = _failed_of(grid, points, blocked)
    bounds = tuple(grid.bounds_hit(centre))
    certificate = None
    pending = bool(wanted or running or contenders)
    if pending:
        state = CertState.SEARCHING
    elif failed:
        state = CertState.FAILED
    else:
        state = CertState.CERTIFIED
        assert all(e.loss >= centre_loss for e in evidence_rows), "centre is the best complete point"
        diverged = tuple(
            Bound(e.axis, Side.LOWER if e.direction is Direction.DOWN else Side.UPPER, e.point[e.axis])
            for e in evidence_rows if math.isinf(e.loss)
        )
        certificate = Certificate(centre, centre_loss, tuple(evidence_rows), bounds, diverged, estimate,
                                  centre_evidence.n, _extended_evidence(grid, centre, evidence_rows))
    return Decision(state, centre, centre_loss, wanted, tuple(running), failed, certificate, path, bounds, estimate)


def _failed_of(grid: Grid, points: Mapping[Key, _PointEvidence],
               keys: Iterable[Key]) -> tuple[tuple[dict[str, Any], str], ...]:
    """The failed points among ``keys``, each with its reason (a Decision's ``blocked_by``)."""
    return tuple((grid.point(k), points[k].failed) for k in keys if k in points and points[k].failed)


def _decide_seeding(grid: Grid, start_key: Key, points: Mapping[Key, _PointEvidence], repeats: int,
                    seed_neighbours: bool, reach, path: tuple, estimate: NoiseEstimate) -> Decision:
    """Nothing complete yet: run the start (all its draws) and, with ``seed_neighbours``, its
    neighbours inside the part reached (one draw each); FAILED once the start itself failed."""
    seeds = [start_key] + ([n.key for n in grid.neighbours(grid.point(start_key)) if grid.within(n.key, reach)]
                           if seed_neighbours else [])
    wanted = [_draw_point(grid, k, r) for k in seeds for r in _next_repeats(points.get(k), 1, 1)]
    wanted += [_draw_point(grid, start_key, r) for r in _next_repeats(points.get(start_key), repeats, repeats)]
    wanted = list({point_key(p): p for p in wanted}.values())  # repeat 0 of the start appears twice
    running = tuple(grid.point(k) for k in seeds if k in points and points[k].running)
    start_failed = bool(_failed_of(grid, points, [start_key]))
    state = CertState.SEEDING if (wanted or running) and not start_failed else CertState.FAILED
    return Decision(state, None, None, () if start_failed else tuple(wanted), running,
                    _failed_of(grid, points, seeds), None, path, (), estimate)


def _extended_evidence(grid: Grid, centre: Mapping[str, Any],
                       neighbours: Sequence[NeighbourEvidence]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """Per axis, the extension values among the centre's value and its neighbours' on that axis."""
    found = []
    for axis in grid.names:
        extra = grid.extension_values(axis)
        values = [centre[axis], *(n.point[axis] for n in neighbours if n.axis == axis)]
        used = tuple(sorted({v for v in values if any(v == e for e in extra)}))
        if used:
            found.append((axis, used))
    return tuple(found)


def _decide_outward(grid: Grid, start: Mapping[str, Any], points: Mapping[Key, _PointEvidence], repeats: int,
                    centre: dict[str, Any], path: tuple, estimate: NoiseEstimate, reach) -> Decision:
    """Every complete point diverged: run unevaluated points nearest the start first (grid steps),
    and the draws finite points still need, until a finite point completes. Points beyond the
    part reached (extension values no centre asked for) are not run: divergence is no bound."""
    start_key = grid.key(start)
    finite = [k for k, e in points.items() if e.n and not e.diverged and e.failed is None]
    wanted = [_draw_point(grid, k, r) for k in finite if not points[k].running
              for r in _next_repeats(points[k], repeats, repeats)]
    unrun = sorted(
        (sum(abs(a - b) for a, b in zip(key, start_key)), key)
        for key in (grid.key(p) for p in grid.points()) if key not in points and grid.within(key, reach)
    )
    wanted += [grid.point(k) for _, k in unrun]
    running = tuple(grid.point(k) for k, e in points.items() if e.running)
    if wanted or running:
        return Decision(CertState.SEARCHING, centre, math.inf, tuple(wanted), running, (), None, path, (), estimate)
    diverged = sum(e.diverged for e in points.values())
    failed = sum(e.failed is not None for e in points.values())
    reason = (f"no finite loss: all {diverged} evaluated points diverged"
              + (f" and {failed} failed" if failed else "") + "; nothing to certify")
    return Decision(CertState.FAILED, centre, math.inf, (), (), (), None, path, (), estimate, reason)


def _continues(previous: Key, centre: Key, candidate: Key) -> bool:
    """True when previous -> centre -> candidate is one straight step, twice."""
    step = tuple(c - p for c, p in zip(centre, previous))
    if sum(abs(s) for s in step) != 1:
        return False
    return tuple(n - c for n, c in zip(candidate, centre)) == step


def point_key(point: Mapping[str, Any]) -> tuple:
    """A hashable identity for any point dict (for points that are not on a grid)."""
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in point.items()))
