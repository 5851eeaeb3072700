"""Local-optimality certification: the algorithm, in plain Python over an abstract evaluator.

The rule (paper.md, "Local-optimality certification"): a grid point is *certified* when all of
its existing one-step neighbours have been evaluated and none has a strictly lower loss.

The search is stateless given its evidence: :func:`plan` looks only at the start point and the
outcomes recorded so far (in the order they finished) and says what to run next. That makes
resuming trivial (re-read the ledger, plan again) and lets ``status`` recompute the same answer
the controller would.

- Centre = the best finished point (first to finish among equal losses, so ties never cause a
  move: a neighbour must be *strictly* lower to take over).
- Before anything finished: run ``start`` (and, by default, its neighbours in the same batch,
  which saves a round: they are the first thing the search would ask for anyway).
- Otherwise: ask for every neighbour of the centre not yet run. Runs of an old centre that are
  still in flight are left to finish (their evidence is kept; cancelling wastes the compute
  already spent), but nothing new is dispatched around a centre that is no longer the best.

Dispatch policy (keeps total runs *and* wall-clock rounds low): each time a run finishes the
plan is recomputed, so the search moves on as soon as one improving neighbour finishes, without
waiting for the rest of the batch. When slots are scarce, the neighbour that continues the last
move (same axis, same direction) goes first: on smooth landscapes it is the likeliest to
improve again. A failed neighbour of the centre (retries exhausted) blocks the certificate and
is reported; it is never treated as "not lower".

Evaluators adapt this core to something that runs points: :class:`Evaluator` (see
``search/controller.py`` for Optuna + submitit, ``search/simulate.py`` for an in-memory one).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from search.grid import Bound, Direction, Grid, Key

__all__ = [
    "RunState",
    "Outcome",
    "CertState",
    "Certificate",
    "Plan",
    "plan",
    "Strategy",
    "CertifySearch",
    "GridSearch",
    "FixedPoints",
    "Request",
    "Result",
    "Evaluator",
    "drive",
    "point_key",
]


class RunState(str, Enum):
    """What the certifier knows about one point."""

    RUNNING = "running"
    FINISHED = "finished"  # evaluated; a diverged run is FINISHED with loss +inf
    FAILED = "failed"  # infrastructure failure after all retries: no evidence


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
        loss = float(loss)
        return cls(RunState.FINISHED, math.inf if math.isnan(loss) else loss)

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(RunState.FAILED, None, reason)


class CertState(str, Enum):
    SEEDING = "seeding"  # nothing finished yet
    SEARCHING = "searching"  # a centre exists, some neighbours still to run or running
    CERTIFIED = "certified"  # all existing neighbours finished, none strictly lower
    FAILED = "failed"  # blocked by failed runs (or by a failed warm-start source)


@dataclass(frozen=True)
class NeighbourEvidence:
    point: dict[str, Any]
    loss: float
    axis: str
    direction: Direction

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.point, "loss": self.loss, "axis": self.axis, "direction": self.direction.value}


@dataclass(frozen=True)
class Certificate:
    """The evidence behind a certified point. ``bounds_hit`` lists where there was no neighbour."""

    point: dict[str, Any]
    loss: float
    neighbours: tuple[NeighbourEvidence, ...]
    bounds_hit: tuple[Bound, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "loss": self.loss,
            "neighbours": [n.to_dict() for n in self.neighbours],
            "bounds_hit": [b.to_dict() for b in self.bounds_hit],
        }


@dataclass(frozen=True)
class Plan:
    """What the evidence implies now. ``wanted`` is in dispatch priority order."""

    state: CertState
    centre: dict[str, Any] | None
    centre_loss: float | None
    wanted: tuple[dict[str, Any], ...]
    running: tuple[dict[str, Any], ...]  # centre neighbours (or seeds) in flight
    blocked_by: tuple[tuple[dict[str, Any], str], ...]  # failed points the state depends on, with reason
    certificate: Certificate | None
    path: tuple[dict[str, Any], ...]  # successive centres, oldest first
    bounds_hit: tuple[Bound, ...]


def _best(outcomes: Mapping[Key, Outcome]) -> tuple[list[Key], Key | None]:
    """Successive best finished points in finishing order (the path) and the current best."""
    path: list[Key] = []
    best_loss = math.inf
    for key, outcome in outcomes.items():
        if outcome.state is not RunState.FINISHED:
            continue
        if not path or outcome.loss < best_loss:
            path.append(key)
            best_loss = outcome.loss
    return path, (path[-1] if path else None)


def plan(
    grid: Grid,
    start: Mapping[str, Any],
    outcomes: Mapping[Key, Outcome],
    *,
    seed_neighbours: bool = True,
) -> Plan:
    """Decide the certification's state and the points to run next.

    Args:
        grid: the certification's grid.
        start: the seed point (on ``grid``).
        outcomes: grid key -> latest outcome, **in the order the outcomes were recorded** (a
            dict keeps insertion order); the order breaks ties between equal losses.
        seed_neighbours: also run the start's neighbours before the start has finished.
    """
    path_keys, centre_key = _best(outcomes)
    path = tuple(grid.point(k) for k in path_keys)
    if centre_key is None:
        seeds = [grid.key(start)]
        if seed_neighbours:
            seeds += [n.key for n in grid.neighbours(start)]
        wanted = tuple(grid.point(k) for k in seeds if k not in outcomes)
        running = tuple(grid.point(k) for k in seeds if k in outcomes and outcomes[k].state is RunState.RUNNING)
        failed = tuple(
            (grid.point(k), outcomes[k].reason or "failed")
            for k in seeds
            if k in outcomes and outcomes[k].state is RunState.FAILED
        )
        state = CertState.SEEDING if wanted or running else CertState.FAILED
        return Plan(state, None, None, wanted, running, failed, None, path, ())

    centre = grid.point(centre_key)
    centre_loss = outcomes[centre_key].loss
    neighbours = grid.neighbours(centre)
    # Continue the last move first: if the previous centre is a neighbour, the opposite side of it.
    if len(path_keys) >= 2:
        previous = path_keys[-2]
        neighbours.sort(key=lambda n: 0 if _continues(previous, centre_key, n.key) else 1)
    wanted = tuple(n.point for n in neighbours if n.key not in outcomes)
    running = tuple(n.point for n in neighbours if n.key in outcomes and outcomes[n.key].state is RunState.RUNNING)
    failed = tuple(
        (n.point, outcomes[n.key].reason or "failed")
        for n in neighbours
        if n.key in outcomes and outcomes[n.key].state is RunState.FAILED
    )
    bounds = tuple(grid.bounds_hit(centre))
    certificate = None
    if wanted or running:
        state = CertState.SEARCHING
    elif failed:
        state = CertState.FAILED
    else:
        state = CertState.CERTIFIED
        evidence = tuple(
            NeighbourEvidence(n.point, outcomes[n.key].loss, n.axis, n.direction)
            for n in grid.neighbours(centre)
        )
        assert all(e.loss >= centre_loss for e in evidence), "centre is the best finished point"
        certificate = Certificate(centre, centre_loss, evidence, bounds)
    return Plan(state, centre, centre_loss, wanted, running, failed, certificate, path, bounds)


def _continues(previous: Key, centre: Key, candidate: Key) -> bool:
    """True when previous -> centre -> candidate is one straight step, twice."""
    step = tuple(c - p for c, p in zip(centre, previous))
    if sum(abs(s) for s in step) != 1:
        return False
    return tuple(n - c for n, c in zip(candidate, centre)) == step


def point_key(point: Mapping[str, Any]) -> tuple:
    """A hashable identity for any point dict (for points that are not on a grid)."""
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in point.items()))


# --------------------------------------------------------------------------- strategies


class Strategy(ABC):
    """One search over one certification's points, fed outcomes by :func:`drive`.

    Strategies never run anything: they say which points they want (:meth:`wanted`) and
    learn what happened (:meth:`record`). All their state is the recorded outcomes, so a
    strategy rebuilt from a ledger continues where the previous controller stopped.
    """

    name: str
    waits_for: str | None = None
    """Name of another strategy whose result this one needs before it can start (warm start)."""

    @abstractmethod
    def wanted(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` points to dispatch now, best first; never one already recorded.

        Called by :func:`drive` whenever slots are free. May return fewer (or none) while it
        waits for running points. Raises nothing.
        """

    @abstractmethod
    def record(self, point: Mapping[str, Any], outcome: Outcome) -> None:
        """Called when a point is dispatched (``RUNNING``) and when it finishes or fails."""

    @abstractmethod
    def running(self) -> int:
        """Number of recorded points still in flight."""

    @abstractmethod
    def done(self) -> bool:
        """True when the strategy will want nothing more (certified, failed, budget spent)."""

    source_failed: str | None = None
    """Why the ``waits_for`` source gave nothing to start from (it ended failed or uncertified)."""

    def resolve(self, others: Mapping[str, Strategy]) -> None:
        """Called by :func:`drive` before each planning round while ``waits_for`` is set. Once the
        source certification is done, clears ``waits_for`` and hands its certificate (None when
        it did not certify) to :meth:`_source_done`."""
        source = others[self.waits_for]
        assert isinstance(source, CertifySearch), f"{self.waits_for} is not a certification"
        if not source.done():
            return
        result = source.plan()
        if result.certificate is None:
            self.source_failed = f"source {self.waits_for!r} ended {result.state.value}"
        self.waits_for = None
        self._source_done(result.certificate)

    def _source_done(self, certificate: Certificate | None) -> None:  # noqa: B027 - optional hook
        """Subclasses that wait for a source start from its certificate here."""


class CertifySearch(Strategy):
    """Local-optimality certification on ``grid`` from ``start`` (see the module docstring).

    ``start`` may be None with ``waits_for`` naming another CertifySearch: the start is then
    that search's certified point projected onto this grid (``fallback`` fills missing axes).
    """

    def __init__(
        self,
        name: str,
        grid: Grid,
        start: Mapping[str, Any] | None,
        *,
        seed_neighbours: bool = True,
        max_runs: int | None = None,
        waits_for: str | None = None,
        fallback: Mapping[str, Any] | None = None,
        on_start: Any = None,
    ) -> None:
        self.name = name
        self.grid = grid
        self.start = dict(start) if start is not None else None
        self.seed_neighbours = seed_neighbours
        self.max_runs = max_runs
        self.waits_for = waits_for if start is None else None
        self.fallback = dict(fallback or {})
        self.on_start = on_start  # called with the resolved start point (the controller persists it)
        self.outcomes: dict[Key, Outcome] = {}

    def _source_done(self, certificate: Certificate | None) -> None:
        if certificate is None:
            return
        self.start = self.grid.nearest(certificate.point, self.fallback)
        if self.on_start:
            self.on_start(self.start)

    def plan(self) -> Plan:
        if self.start is None:
            failed = ((self.fallback, self.source_failed),) if self.source_failed else ()
            state = CertState.FAILED if self.source_failed else CertState.SEEDING
            return Plan(state, None, None, (), (), failed, None, (), ())
        return plan(self.grid, self.start, self.outcomes, seed_neighbours=self.seed_neighbours)

    def budget_left(self) -> int:
        return math.inf if self.max_runs is None else max(0, self.max_runs - len(self.outcomes))

    def wanted(self, limit: int) -> list[dict[str, Any]]:
        if self.start is None:
            return []
        return list(self.plan().wanted[: min(limit, self.budget_left())])

    def record(self, point: Mapping[str, Any], outcome: Outcome) -> None:
        key = self.grid.key(point)
        if outcome.state is not RunState.RUNNING:
            self.outcomes.pop(key, None)  # re-insert: the dict order is the finishing order
        self.outcomes[key] = outcome

    def running(self) -> int:
        return sum(o.state is RunState.RUNNING for o in self.outcomes.values())

    def done(self) -> bool:
        if self.start is None:
            return self.source_failed is not None
        current = self.plan()
        if current.state in (CertState.CERTIFIED, CertState.FAILED):
            return True
        return self.budget_left() == 0 and not self.running()


class GridSearch(Strategy):
    """Exhaustive baseline: every grid point once (up to ``max_runs``), best = argmin."""

    def __init__(self, name: str, grid: Grid, *, max_runs: int | None = None) -> None:
        self.name = name
        self.grid = grid
        self.max_runs = max_runs
        self.outcomes: dict[Key, Outcome] = {}

    def wanted(self, limit: int) -> list[dict[str, Any]]:
        budget = (self.max_runs if self.max_runs is not None else self.grid.size) - len(self.outcomes)
        found = []
        for point in self.grid.points():
            if len(found) >= min(limit, budget):
                break
            if self.grid.key(point) not in self.outcomes:
                found.append(point)
        return found

    def record(self, point: Mapping[str, Any], outcome: Outcome) -> None:
        key = self.grid.key(point)
        self.outcomes.pop(key, None)
        self.outcomes[key] = outcome

    def running(self) -> int:
        return sum(o.state is RunState.RUNNING for o in self.outcomes.values())

    def done(self) -> bool:
        return not self.running() and not self.wanted(1)


class FixedPoints(Strategy):
    """A fixed list of points to run once each (ensemble members), optionally after a source
    certification: ``make_points(certified_point)`` builds the list once it is certified."""

    def __init__(self, name: str, points: Sequence[Mapping[str, Any]] | None = None, *,
                 waits_for: str | None = None, make_points: Any = None) -> None:
        self.name = name
        self.points = [dict(p) for p in points] if points is not None else None
        self.waits_for = waits_for if points is None else None
        self.make_points = make_points
        self.outcomes: dict[tuple, Outcome] = {}

    def _source_done(self, certificate: Certificate | None) -> None:
        self.points = [] if certificate is None else [dict(p) for p in self.make_points(certificate.point)]

    def wanted(self, limit: int) -> list[dict[str, Any]]:
        if self.points is None:
            return []
        return [p for p in self.points if point_key(p) not in self.outcomes][:limit]

    def record(self, point: Mapping[str, Any], outcome: Outcome) -> None:
        self.outcomes[point_key(point)] = outcome

    def running(self) -> int:
        return sum(o.state is RunState.RUNNING for o in self.outcomes.values())

    def done(self) -> bool:
        return self.points is not None and not self.running() and not self.wanted(1)


# --------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class Request:
    task: str
    point: dict[str, Any]


@dataclass(frozen=True)
class Result:
    task: str
    point: dict[str, Any]
    outcome: Outcome


class Evaluator(ABC):
    """Runs points for :func:`drive`. Implementations own retries, deduplication and storage.

    Contract: every point passed to :meth:`submit` eventually comes back exactly once from
    :meth:`wait` as FINISHED or FAILED (infrastructure retries happen inside, unseen). Points
    that were already in flight when :func:`drive` started (recorded RUNNING in the strategies,
    e.g. re-attached after a controller restart) come back the same way.
    """

    @abstractmethod
    def free_slots(self) -> int:
        """How many more runs may start now. Called before every dispatch decision."""

    @abstractmethod
    def submit(self, requests: Sequence[Request]) -> None:
        """Start these runs (non-blocking). Called only with points not yet recorded for the task.

        An implementation may satisfy a request from an identical run (same run identity)
        that already finished or is in flight, instead of running it again.
        """

    @abstractmethod
    def wait(self) -> list[Result]:
        """Block until at least one in-flight run resolves; return all that resolved.

        Called only while some run is in flight. Raises whatever stops the controller (e.g.
        KeyboardInterrupt); runs keep going and are re-attached on the next start.
        """

    def tick(self, strategies: Mapping[str, Strategy]) -> None:  # noqa: B027 - optional hook
        """Called once per loop iteration (progress display, heartbeats); a no-op by default."""


@dataclass
class DriveStats:
    dispatched: int = 0
    rounds: int = 0  # calls to Evaluator.wait
    results: list[Result] = field(default_factory=list)


def drive(strategies: Sequence[Strategy], evaluator: Evaluator) -> DriveStats:
    """Run all strategies to completion, sharing the evaluator's slots round-robin.

    Returns when every strategy is done or can make no progress (e.g. a warm-start source
    that never certifies, a budget spent). Re-running with the same recorded outcomes
    continues exactly where it stopped.
    """
    by_name = {s.name: s for s in strategies}
    stats = DriveStats()
    while True:
        for strategy in strategies:
            if strategy.waits_for is not None:
                strategy.resolve(by_name)
        evaluator.tick(by_name)
        free = evaluator.free_slots()
        requests: list[Request] = []
        if free > 0:
            queues = [[Request(s.name, p) for p in s.wanted(free)] for s in strategies if not s.done()]
            while queues and len(requests) < free:  # round-robin across strategies
                for queue in list(queues):
                    if queue and len(requests) < free:
                        requests.append(queue.pop(0))
                    if not queue:
                        queues.remove(queue)
        if requests:
            for request in requests:
                by_name[request.task].record(request.point, Outcome.running())
            evaluator.submit(requests)
            stats.dispatched += len(requests)
        if not any(s.running() for s in strategies):
            if requests:
                continue
            return stats
        stats.rounds += 1
        for result in evaluator.wait():
            by_name[result.task].record(result.point, result.outcome)
            stats.results.append(result)
