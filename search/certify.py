"""The local-optimality certification rule (paper.md, "Local-optimality certification").

The paper's rule: hyperparameters live on a discrete grid, one axis per hyperparameter. A grid
point is *locally optimal* when moving any one axis one step up or down does not give a lower
loss. Search: seed runs around a best guess; repeatedly take the best finished run, run all its
2*d neighbours, stop when none improves: that run is *certified*. Search bounds are a compute
limit, not evidence: a certificate that leans on a bound must say so.

:func:`decide` is that rule as a pure function of the evidence: given the grid, the start point
and the outcomes recorded so far (in the order they finished), it says the state
(:class:`~search.certificate.CertState`), the runs to dispatch next and, once certified, the
:class:`~search.certificate.Certificate`. It keeps no state, so resuming is re-reading the ledger
and deciding again, and ``status`` recomputes the same answer the controller would. The records
it reads and returns, and their wording, are :mod:`search.certificate`; who asks for runs and how
they run is :mod:`search.strategies`.

Noise-free (``Noise(repeats=1)``, the default; every point is one run):

- Centre = the best finished point ("the best finished run"; the first to finish among equal
  losses, so ties never cause a move: a neighbour must be *strictly* lower to take over).
- Before anything finished: run ``start`` (and, by default, its neighbours in the same batch: the
  paper's "seed runs around a best guess", and the first thing the search would ask for anyway).
- Otherwise: ask for every neighbour of the centre not yet run ("run all its 2*d neighbours";
  fewer where the grid ends: each missing side is a bound the certificate lists). The centre is
  certified when every existing neighbour finished and none is lower ("none improves"). Runs of
  an old centre still in flight are left to finish (their evidence is kept; cancelling wastes the
  compute spent), but nothing new is dispatched around a centre that is no longer the best.
- A failed neighbour (retries exhausted) blocks the certificate and is reported; it is never
  treated as "not lower".

Seed noise (``Noise(repeats=N)``, where "lower" must be told from noise): run ``r`` of a point
carries ``seed: r`` (the first, ``r = 0``, none); a point's loss is the mean of up to N draws, and
the noise sigma is pooled over every point with two or more finite draws. Repeats go only where
they decide something:

- a point is *complete* after N draws; only complete points can be the centre (a certificate never
  rests on one lucky draw), and the centre's own N draws give the first noise estimate;
- a point whose mean is below the centre's but not complete yet (a *contender*) gets more draws:
  all at once when it is clearly better, one at a time otherwise;
- a neighbour whose gap to the centre is within ``sds`` noise standard errors (widened by the
  Student-t factor while the estimate has few degrees of freedom) gets one more draw at a time, up
  to N; one clearly worse after fewer draws is settled there;
- after N draws, a neighbour still within noise of the centre is a *tie*, flagged in the
  certificate with its gap in noise units (exact ties are flagged the same way without noise).

Divergence: a certificate never rests on an infinite loss. While every complete point diverged,
the search runs unevaluated points outward from the start (nearest first) until one is finite,
and ends FAILED with a reason when the grid holds none. Diverged neighbours of a certified point
are a *soft bound* (listed like the grid's bounds): the loss may fall again beyond.

Bounds and extension values: a grid may carry values beyond the ends the user listed (``extend:``
in the sweep, :meth:`search.grid.Grid.extended`). The search reaches one only as a neighbour of the
centre (when the best point sits on the edge reached so far); the start's seeding neighbours and
the outward search stay inside the part reached. A certificate hits a bound only where the listed
extension values ran out, and then says so (``Bound.extended``). Every run is one a search on the
fully extended grid would also ask for, so extending never costs more runs than listing the values
from the start (tests/search/test_extend.py).

Dispatch order (keeps total runs *and* wall-clock rounds low): ``wanted`` lists contenders' draws,
then the centre's unrun neighbours, then repeat draws; among neighbours the one continuing the last
move (same axis, same direction) goes first, the likeliest to improve again on a smooth landscape.
The caller recomputes the decision whenever a run finishes, so the search moves as soon as one
improving neighbour finishes, without waiting for the rest of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search.certificate import (
    Certificate,
    CertState,
    Decision,
    Draw,
    NeighbourEvidence,
    Noise,
    NoiseEstimate,
    Outcome,
    RunState,
    point_key,
)
from search.grid import Bound, Direction, Grid, Key, Side
from search.params import RunParams

__all__ = ["decide", "still_decided"]


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


def still_decided(decision: Decision, grid: Grid, draw: Draw, before: Outcome | None, after: Outcome,
                  *, repeats: int) -> bool:
    """Whether :func:`decide` on the evidence with ``after`` recorded for ``draw`` (replacing
    ``before``; None: a new draw) gives ``decision`` again, field for field, so a caller that keeps
    the last decision recomputes only where the evidence it rests on changed. True only where that
    follows from the rule without reading the evidence:

    - noise-free (``repeats`` 1: no pooled sigma, no contenders, every finished point complete),
      and ``draw``'s point has no other draw in the evidence (the caller's to know, e.g. no draw with
      a repeat above 0 was recorded: a second draw would change the pooled sigma);
    - ``decision`` has a centre with a finite loss (seeding and the outward search read every point);
    - ``before`` is None or RUNNING (a settled outcome replaced changes the finishing order);
    - ``draw`` is neither the centre nor one of its neighbours (the only points the decision
      reads besides the centre), and, finished, is not strictly lower than the centre (which
      would move it: ties never do).

    >>> grid = Grid.from_mapping({"lr": [1, 2, 3, 4]})
    >>> evidence = {((1,), 0): Outcome.finished(1.0), ((0,), 0): Outcome.finished(2.0)}
    >>> decision = decide(grid, {"lr": 2}, evidence)
    >>> still_decided(decision, grid, ((3,), 0), None, Outcome.finished(1.0), repeats=1)
    True
    >>> still_decided(decision, grid, ((3,), 0), None, Outcome.finished(0.5), repeats=1)  # a new centre
    False
    >>> still_decided(decision, grid, ((2,), 0), None, Outcome.running(), repeats=1)  # a neighbour
    False
    """
    if repeats != 1 or decision.centre is None or decision.centre_loss is None:
        return False
    if not math.isfinite(decision.centre_loss) or (before is not None and before.state is not RunState.RUNNING):
        return False
    key, _ = draw
    if sum(abs(a - b) for a, b in zip(key, grid.key(decision.centre))) <= 1:  # the centre or a neighbour
        return False
    return after.state is not RunState.FINISHED or after.loss >= decision.centre_loss


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

