"""Strategies and the driver: who asks for runs, and the loop that runs them over an evaluator.

A :class:`Strategy` proposes points and records outcomes; :class:`CertifySearch` wraps the pure
certification rule (:func:`search.certify.decide`, which looks only at the evidence recorded),
:class:`GridSearch` and :class:`FixedPoints` are the baselines and fixed runs (ensembles,
transfers), and ``search.tpe`` adds Optuna's TPE. :func:`drive` runs any strategies together
over an :class:`Evaluator` until none wants anything more.

Evaluators adapt this to something that runs points: ``search/controller.py`` (Optuna ledger +
submitit jobs) and ``search/simulate.py`` (in memory, with a simulated clock).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from search.certificate import (
    Certificate,
    CertState,
    Decision,
    Draw,
    Extension,
    Noise,
    Outcome,
    RunState,
    point_key,
)
from search.certify import decide, still_decided
from search.grid import Grid, Key
from search.params import RunParams

__all__ = ["Strategy", "StrategyState", "StopReason", "Stop", "reported_state", "baseline_phase", "CertifySearch",
           "GridSearch", "FixedPoints", "Request", "Result", "Evaluator", "DriveStats", "drive", "CHAIN_NAMED",
           "waiting_line", "failed_line"]


class StrategyState(str, Enum):
    """Where a strategy other than the certifier stands (a baseline, an ensemble's or a transfer's
    fixed runs): the word the progress line and ``search status`` print for it. The certifier's
    own phases (:class:`search.certificate.CertState`: seeding, searching) describe a search from a
    start that the others do not make; a baseline whose best point is certifiable on its
    evidence still says ``certified`` (or ``failed``) as the certifier would."""

    NOT_STARTED = "not started"  # nothing of it recorded yet
    WAITING = "waiting"  # for its source certification
    RUNNING = "running"  # runs in flight or still wanted
    DONE = "done"  # wants nothing more: every point run, its run budget spent (or TPE converged)
    STOPPED = "stopped"  # its run budget spent before it ended, as the controller recorded (StopReason.BUDGET)


CHAIN_NAMED = 4
"""The most sources a reason names (:func:`waiting_line`, :func:`failed_line`); a longer chain (the
paper's G=1, 2, 4, ... warm starts make chains of five) names its first two and last."""


class StopReason(str, Enum):
    """Why a strategy stopped (:class:`Stop`): before its run budget (a baseline), or by it."""

    CONVERGED = "converged"  # TPE: its proposals kept landing on points already run
    EXHAUSTED = "exhausted"  # grid: every point of the grid run
    BUDGET = "budget"  # any strategy with a grid: its run budget (--max-runs or max_runs:) spent before it ended


@dataclass(frozen=True)
class Stop:
    """A strategy's stop, as the ledger keeps it (study attribute ``search.ledger.STUDY_STOP``)
    and ``search status`` says it (``--json``: ``stop``): a baseline's before its run budget
    (:meth:`Strategy.stop`), or any search's by its run budget (:meth:`Strategy.budget_stop`).

    Convergence lives in a sampler's state, not in the runs: without this record a reader (or a
    restarted controller) could only call a baseline done once its budget was spent. A budget
    given as ``certify --max-runs`` lives nowhere but in this record: without it ``status`` said
    ``searching``. ``grid`` is the fingerprint of the grid it stopped on (:attr:`Grid.fingerprint`):
    a stop holds only on that grid (a widened grid, or one whose values changed, is searched on);
    ``points`` its size, which is all a stop recorded before the fingerprint (``grid`` None) holds
    on. Build one with :meth:`on`; :meth:`to_dict`/:meth:`from_dict` own the stored field names.
    """

    reason: StopReason
    runs: int  # runs of this certification recorded when it stopped
    budget: int | None  # its run budget then (None: none)
    points: int  # the grid's size then
    detail: str  # why, in words (the strategy's own rule), or, for BUDGET, how to go on
    grid: str | None = None  # the grid's fingerprint then (None: recorded before fingerprints)

    @classmethod
    def on(cls, grid: Grid, reason: StopReason, runs: int, budget: int | None, detail: str) -> Stop:
        """A stop of a search of ``grid`` now: its size and fingerprint recorded with it."""
        return cls(reason, runs, budget, grid.size, detail, grid.fingerprint)

    def headline(self) -> str:
        """The stop in a few words, e.g. ``run budget spent``, ``converged`` (:meth:`describe` goes on)."""
        return "run budget spent" if self.reason is StopReason.BUDGET else self.reason.value

    def describe(self) -> str:
        """e.g. ``converged after 23 of 50 runs (its last 200 proposals were points already run)``,
        ``run budget spent (3 of 3 runs of this certification; re-run certify without --max-runs,
        or with a larger one, to go on)``."""
        if self.reason is StopReason.BUDGET:
            spent = (f"{self.runs} of {self.budget} runs" if self.budget is None or self.runs <= self.budget
                     else f"{self.runs} runs, over its budget of {self.budget}")
            return f"{self.headline()} ({spent} of this certification; {self.detail})"
        of = "" if self.budget is None else f" of {self.budget}"
        return f"{self.reason.value} after {self.runs}{of} runs ({self.detail})"

    def holds_on(self, grid: Grid) -> bool:
        """Whether this stop still holds for a search of ``grid``: the same grid (its fingerprint), or,
        for a stop recorded before fingerprints, the same number of points (as such a ledger read before)."""
        return self.points == grid.size if self.grid is None else self.grid == grid.fingerprint

    def spent_on(self, grid: Grid, runs: int) -> bool:
        """Whether this BUDGET stop still describes a search of ``grid`` with ``runs`` recorded and
        none in flight (no run was added since: a later controller with a larger budget clears
        the record before it runs anything, but a reader checks anyway)."""
        return self.reason is StopReason.BUDGET and self.holds_on(grid) and self.runs == runs

    def to_dict(self) -> dict[str, Any]:
        """The stored record; ``summary`` is :meth:`describe` (not read back)."""
        return {"reason": self.reason.value, "runs": self.runs, "budget": self.budget, "points": self.points,
                "grid": self.grid, "detail": self.detail, "summary": self.describe()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stop:
        budget, grid = data["budget"], data.get("grid")  # grid: absent in stops recorded before fingerprints
        return cls(StopReason(data["reason"]), int(data["runs"]), None if budget is None else int(budget),
                   int(data["points"]), str(data["detail"]), None if grid is None else str(grid))


def reported_state(phase: CertState | StrategyState, stop: Stop | None) -> CertState | StrategyState:
    """The state ``certify``'s progress line and ``search status`` both say for a search: its
    ``phase`` (the certifier's :class:`CertState` on its evidence, a baseline's own
    :class:`StrategyState`), or ``stopped`` where its run budget stopped it (``stop``:
    :attr:`StopReason.BUDGET`) before it certified or failed. The controller passes the live
    :meth:`Strategy.budget_stop`, ``status`` the one the ledger recorded: one rule, two sources.

    >>> budget = Stop(StopReason.BUDGET, 3, 3, 72, "re-run certify with a larger --max-runs to go on")
    >>> reported_state(CertState.SEARCHING, budget).value, reported_state(StrategyState.DONE, budget).value
    ('stopped', 'stopped')
    >>> reported_state(CertState.CERTIFIED, budget).value, reported_state(CertState.SEARCHING, None).value
    ('certified', 'searching')
    """
    if stop is not None and stop.reason is StopReason.BUDGET and phase not in (CertState.CERTIFIED, CertState.FAILED):
        return StrategyState.STOPPED
    return phase


def baseline_phase(own: StrategyState, evidence: CertState) -> CertState | StrategyState:
    """What a baseline reads as (before a run budget's stop): ``certified``/``failed`` where the
    certifier's rule on its runs (``evidence``) certifies or fails its best point, else its ``own``
    state: a baseline makes no search from a start, so the certifier's seeding/searching are not its.

    >>> baseline_phase(StrategyState.RUNNING, CertState.CERTIFIED).value
    'certified'
    >>> baseline_phase(StrategyState.DONE, CertState.SEARCHING).value
    'done'
    """
    return evidence if evidence in (CertState.CERTIFIED, CertState.FAILED) else own


def _chain_text(chain: Sequence[str]) -> str:
    """``b, which waits for a``: sources nearest first, at most :data:`CHAIN_NAMED` of them named."""
    if len(chain) <= CHAIN_NAMED:
        return ", which waits for ".join(chain)
    return (", which waits for ".join(chain[:2])
            + f", ... {len(chain) - 3} more ..., which waits for {chain[-1]}")


def waiting_line(chain: Sequence[str], stop: Stop | None = None) -> str:
    """Why a search waits for its sources (``chain``, nearest first: each waits for the next), and
    the run budget's ``stop`` that holds the last one: the one description of a wait, for a warm
    start (:meth:`Strategy.waiting_reason`) and for an ensemble or a transfer in ``search status``.

    >>> waiting_line(["b", "a"], Stop(StopReason.BUDGET, 3, 3, 72, "re-run certify to go on"))
    'waiting for b, which waits for a (stopped: run budget spent)'
    >>> waiting_line("fedcba")
    'waiting for f, which waits for e, ... 3 more ..., which waits for a'
    """
    return f"waiting for {_chain_text(chain)}" + ("" if stop is None else f" ({StrategyState.STOPPED.value}: "
                                                                         f"{stop.headline()})")


def failed_line(chain: Sequence[str], state: CertState = CertState.FAILED) -> str:
    """Why a search has no start from its sources: the nearest (``chain[0]``) ended in ``state``
    without a certificate, through the others it waited for (the same chain as :func:`waiting_line`).

    >>> failed_line(["a"]), failed_line(["b", "a"])
    ('source a ended failed', 'source b, which waits for a, ended failed')
    """
    return f"source {_chain_text(chain)}{',' if len(chain) > 1 else ''} ended {state.value}"


class Strategy(ABC):
    """One search over one certification's points, fed outcomes by :func:`drive`.

    Strategies never run anything: they say which points they want (:meth:`wanted`) and
    learn what happened (:meth:`record`). All their state is the recorded outcomes, so a
    strategy rebuilt from a ledger continues where the previous controller stopped.

    The base owns the bookkeeping every strategy shares: the outcomes (one per :meth:`key`, in
    finishing order), the run budget, in-flight counts, waiting for a source. Subclasses fill
    :meth:`_wanted` and :meth:`_done` (and may override :meth:`key` and :meth:`_recorded`).
    """

    name: str
    grid: Grid | None = None
    """The points it searches (None: a fixed list of points, which has no run budget)."""
    budget_hint: str = "re-run certify with a larger --max-runs to go on"
    """How to go on once the run budget stopped it (:meth:`budget_stop`'s detail): the controller
    names where its budget was set (``--max-runs``, the sweep file's ``max_runs:``)."""
    waits_for: str | None = None
    """Name of another strategy whose result this one needs before it can start (warm start)."""
    source_failed: str | None = None
    """Why the ``waits_for`` source gave nothing to start from (:func:`failed_line`: ``source b,
    which waits for a, ended failed``)."""
    failed_sources: tuple[str, ...] = ()
    """The sources through which a failure failed it, nearest first (``("b", "a")``: b ended failed
    because a did); () while it has not failed so."""
    source_stop: Stop | None = None
    """While it waits: the run budget's stop that holds the ``waits_for`` source before it ended
    (:meth:`resolve`); a larger budget lets the source go on, so this one waits, it has not failed."""
    source: Strategy | None = None
    """While it waits: the ``waits_for`` source as :meth:`resolve` last found it (a source that itself
    waits makes a chain: :meth:`waiting_reason` follows it to its cause)."""
    evidence: CertifySearch | None = None
    """A baseline's own runs as the certifier's rule reads them (fed by :meth:`record`, from its
    certification's start: a baseline makes no warm start), so that one whose best point its runs
    certify or fail reads ``certified``/``failed`` (:meth:`phase`); None for the certifier itself
    and for fixed runs."""

    def __init__(self, name: str, *, max_runs: int | None = None, waits_for: str | None = None) -> None:
        self.name = name
        self.max_runs = max_runs
        self.waits_for = waits_for
        self.outcomes: dict[Hashable, Outcome] = {}
        self._counts = dict.fromkeys(RunState, 0)  # outcomes per state, kept by record (asked every round)

    # -- public, called by drive -----------------------------------------------------------

    def key(self, point: Mapping[str, Any]) -> Hashable:
        """The identity under which a point's outcome is kept (default: the whole point dict)."""
        return point_key(point)

    def wanted(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` points to dispatch now, best first; never one already recorded.

        Called by :func:`drive` whenever slots are free. May return fewer (or none) while it
        waits for running points, its source, or when the budget is spent. Raises nothing.
        """
        limit = min(limit, self.budget_left())
        if limit <= 0 or self.waits_for is not None:
            return []
        found = []
        for point in self._wanted(limit):
            if self.key(point) not in self.outcomes:
                found.append(point)
            if len(found) >= limit:
                break
        return found

    def record(self, point: Mapping[str, Any], outcome: Outcome) -> None:
        """Called when a point is dispatched (``RUNNING``) and when it finishes or fails."""
        key = self.key(point)
        before = self.outcomes.get(key)
        if outcome.state is not RunState.RUNNING:
            self.outcomes.pop(key, None)  # re-insert: the dict order is the finishing order
        self.outcomes[key] = outcome
        self._counts[outcome.state] += 1
        if before is not None:
            self._counts[before.state] -= 1
        if self.evidence is not None:
            self.evidence.record(point, outcome)
        self._recorded(point, outcome)

    def outstanding(self) -> tuple[dict[str, Any], ...] | None:
        """The points still to dispatch (within the run budget) or in flight, as far as the
        outcomes recorded so far show them; None when they cannot be known from the outcomes (a
        sampler whose next points come from its own state, TPE). ``search status``'s column."""
        return None

    def count(self, state: RunState) -> int:
        """Number of recorded points whose latest outcome is in ``state`` (counted as they are recorded)."""
        return self._counts[state]

    def running(self) -> int:
        """Number of recorded points still in flight."""
        return self.count(RunState.RUNNING)

    def budget_left(self) -> float:
        """Runs it may still record within ``max_runs`` (inf without a budget; in-flight runs count)."""
        return math.inf if self.max_runs is None else max(0, self.max_runs - len(self.outcomes))

    def budget_spent(self) -> bool:
        """True when the run budget stopped the strategy (nothing in flight, nothing left)."""
        return self.budget_left() == 0 and not self.running()

    def done(self) -> bool:
        """True when the strategy will want nothing more (certified, failed, budget spent)."""
        return self.budget_spent() or self._done()

    def stop(self) -> Stop | None:
        """Why it is done before its run budget (:class:`Stop`); None while it is not done, when
        its budget stopped it, or for a strategy that stops only by its evidence (the certifier).
        The controller records it in the ledger once the strategy is done (:meth:`Evaluator.finished`)."""
        return None

    def budget_stop(self) -> Stop | None:
        """A :attr:`StopReason.BUDGET` stop when its run budget stopped it before it ended by its
        own rule (certified or failed, every point run, converged); None otherwise. The
        controller records it like :meth:`stop` (the budget may be a ``--max-runs`` that nothing
        else keeps); the strategy itself never takes it back from the ledger: the next
        controller's budget is its own."""
        if self.grid is None or not self.budget_spent() or self._done():
            return None
        return Stop.on(self.grid, StopReason.BUDGET, len(self.outcomes), self.max_runs, self.budget_hint)

    def restore_stop(self, stop: Stop) -> None:  # noqa: B027 - optional hook
        """The stop the ledger recorded for this strategy (a restarted controller, ``search status``),
        called after its evidence was recorded. A strategy whose stop cannot be seen in its
        evidence (TPE's convergence) takes it up here; the others ignore it."""

    def state(self) -> StrategyState:
        """Its :class:`StrategyState` on the outcomes recorded so far."""
        if self.waits_for is not None:
            return StrategyState.WAITING
        if self.done():
            return StrategyState.DONE
        return StrategyState.RUNNING if self.outcomes else StrategyState.NOT_STARTED

    def phase(self) -> CertState | StrategyState:
        """What it reads as before a run budget's stop (:func:`reported_state` adds that; the one
        rule for ``certify``'s progress line and ``search status``): its :meth:`state`, or, for a
        baseline whose :attr:`evidence` certifies or fails its best point, ``certified``/``failed``
        as the certifier would say (the certifier: its own :class:`CertState`, :meth:`CertifySearch.phase`).
        Costs one :func:`search.certify.decide` on a baseline's runs where they changed what it rests
        on (:meth:`CertifySearch.decide` keeps the last decision), else nothing: the progress line asks
        every round, and a grid baseline has about a round per grid point."""
        own = self.state()
        return own if self.evidence is None else baseline_phase(own, self.evidence.decide().state)

    def resolve(self, others: Mapping[str, Strategy], stops: Mapping[str, Stop] | None = None) -> None:
        """Called by :func:`drive` before each dispatch round while ``waits_for`` is set. Once the
        source certification is done, clears ``waits_for`` and hands its certificate (None when
        it did not certify) to :meth:`_source_done`. A source its run budget stopped is not done
        for this one: it keeps waiting, that stop in :attr:`source_stop` (the source's
        :meth:`budget_stop`, or, for a reader that rebuilt the source without its budget
        (``search status``), ``stops``: the stops the ledger recorded, by source name)."""
        source = others[self.waits_for]
        assert isinstance(source, CertifySearch), f"{self.waits_for} is not a certification"
        self.source = source
        self.source_stop = (stops or {}).get(self.waits_for) or source.budget_stop()
        if self.source_stop is not None or not source.done():
            return
        result = source.decide()
        if result.certificate is None:
            self.failed_sources = (self.waits_for, *source.failed_sources)
            self.source_failed = failed_line(self.failed_sources, result.state)
        self.waits_for = self.source = None
        self._source_done(result.certificate)

    def waiting_chain(self) -> tuple[tuple[str, ...], Stop | None]:
        """While it waits: the sources it waits for, nearest first (each source that itself waits
        is followed to the one it waits for), and the run budget's stop that holds the last one
        (None: none); ``((), None)`` when it does not wait. A chain that comes back to a search
        already named (strategies built in code: a sweep file's warm starts name earlier
        certifications only) ends there."""
        if self.waits_for is None:
            return (), None
        chain, node, stop = [self.waits_for], self, self.source_stop
        seen = {id(self)}
        while stop is None and (source := node.source) is not None and source.waits_for is not None \
                and id(source) not in seen:
            seen.add(id(source))
            chain.append(source.waits_for)
            node, stop = source, source.source_stop
        return tuple(chain), stop

    def source_chain(self) -> tuple[str, ...]:
        """The sources its reason names, nearest first: those it waits for (:meth:`waiting_chain`),
        or those through which a source's failure failed it (:attr:`failed_sources`); () when neither.
        ``search status`` describes an ensemble or a transfer from this search by it."""
        return self.waiting_chain()[0] or self.failed_sources

    def waiting_reason(self) -> str | None:
        """Why it waits (None: it does not), following a chain of warm starts to its cause
        (:func:`waiting_line` on :meth:`waiting_chain`), e.g. ``waiting for b, which waits for a
        (stopped: run budget spent)``."""
        chain, stop = self.waiting_chain()
        return waiting_line(chain, stop) if chain else None

    # -- hooks -----------------------------------------------------------------------------

    @abstractmethod
    def _wanted(self, limit: int) -> list[dict[str, Any]]:
        """Candidate points in priority order (the base drops recorded ones and applies limits)."""

    @abstractmethod
    def _done(self) -> bool:
        """True when, budget aside, nothing more is wanted and nothing is in flight."""

    def _recorded(self, point: Mapping[str, Any], outcome: Outcome) -> None:  # noqa: B027 - optional hook
        """Called after every :meth:`record` (e.g. TPE tells its sampler)."""

    def _source_done(self, certificate: Certificate | None) -> None:  # noqa: B027 - optional hook
        """Subclasses that wait for a source start from its certificate here."""


class CertifySearch(Strategy):
    """Local-optimality certification on ``grid`` from ``start`` (see the module docstring).

    ``start`` may be None with ``waits_for`` naming another CertifySearch: the start is then
    that search's certified point projected onto this grid, extension values included, so a
    certificate that moved a bound moves the next one's start (``fallback`` fills missing axes).
    Points it asks for carry ``seed: r`` for repeat r > 0 (``noise.repeats`` > 1).
    :attr:`extensions` lists, in order, every extension value its evidence reached; each new one
    is also handed to ``on_extend`` (the controller records it in the ledger).
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
        on_start: Callable[[dict[str, Any]], None] | None = None,
        noise: Noise = Noise(),
        on_extend: Callable[[Extension], None] | None = None,
    ) -> None:
        super().__init__(name, max_runs=max_runs, waits_for=waits_for if start is None else None)
        self.grid = grid
        self.start = dict(start) if start is not None else None
        self.seed_neighbours = seed_neighbours
        self.noise = noise
        self.fallback = dict(fallback or {})
        self.on_start = on_start  # called with the resolved start point (the controller persists it)
        self.on_extend = on_extend  # called with each new Extension (the controller records it)
        self.outcomes: dict[Draw, Outcome] = {}
        self.extensions: list[Extension] = []
        self._reach = grid.reach(())  # the part of the grid its outcomes reached (widened by record)
        self._decision: Decision | None = None  # the last decide(), while the evidence it rests on stands
        self._repeated = False  # a draw with a repeat above 0 was recorded (the kept decision no longer holds)

    def record(self, point: Mapping[str, Any], outcome: Outcome) -> None:
        """As :meth:`Strategy.record`; a point beyond the part of the grid reached so far
        (an extension value) is an :class:`Extension`, noted with the centre that asked for it."""
        draw = self.key(point)
        key, repeat = draw
        beyond = self.grid.beyond(key, self._reach)
        centre = self.decide().centre if beyond and self.start is not None else None
        runs, before = len(self.outcomes), self.outcomes.get(draw)
        super().record(point, outcome)
        self._reach = self.grid.reach([key], self._reach)
        self._repeated = self._repeated or repeat > 0
        if self._decision is not None and (self._repeated or not still_decided(
                self._decision, self.grid, draw, before, outcome, repeats=self.noise.repeats)):
            self._decision = None
        for axis, side, value, after in beyond:
            extension = Extension(axis, side, value, after, centre, runs)
            self.extensions.append(extension)
            if self.on_extend:
                self.on_extend(extension)

    def key(self, point: Mapping[str, Any]) -> Draw:
        """(grid key, repeat): ``seed`` tells repeats apart; the other keys must be the grid's axes."""
        run = RunParams.split(point, self.grid.names)
        return self.grid.key({**run.point, **run.fixed}), run.repeat  # grid.key refuses a key that is no axis

    def _source_done(self, certificate: Certificate | None) -> None:
        if certificate is None:
            return
        self.start = self.grid.nearest(certificate.point, self.fallback)
        self._decision = None
        if self.on_start:
            self.on_start(self.start)

    def decide(self) -> Decision:
        """What the evidence so far implies (:func:`decide`); while the start waits for a source
        certification, SEEDING with why as its ``reason`` (:meth:`waiting_reason`: ``waiting for a``,
        ``waiting for b, which waits for a (stopped: run budget spent)``), or FAILED with the source's ending
        (no point of this certification failed: ``blocked_by`` stays empty, so a failed point is
        counted once, under the certification where it ran).

        The last decision is kept while the outcomes recorded since leave it standing
        (:func:`search.certify.still_decided`: a run away from the centre and its neighbours, no
        better than the centre): the same decision :func:`decide` would make, without reading every run."""
        if self.start is None:
            if self.source_failed:
                return Decision(CertState.FAILED, None, None, (), (), (), None, (), (), reason=self.source_failed)
            return Decision(CertState.SEEDING, None, None, (), (), (), None, (), (), reason=self.waiting_reason())
        if self._decision is None:
            self._decision = decide(self.grid, self.start, self.outcomes, seed_neighbours=self.seed_neighbours,
                                    noise=self.noise)
        return self._decision

    def phase(self) -> CertState:
        """Its :class:`CertState` on the evidence (:meth:`decide`)."""
        return self.decide().state

    def _wanted(self, limit: int) -> list[dict[str, Any]]:
        return [] if self.start is None else [dict(p) for p in self.decide().wanted]  # the kept decision's own stay

    def _done(self) -> bool:
        if self.start is None:
            return self.source_failed is not None
        return self.decide().state in (CertState.CERTIFIED, CertState.FAILED)


class GridSearch(Strategy):
    """Exhaustive baseline: every grid point once (up to ``max_runs``), best = argmin."""

    def __init__(self, name: str, grid: Grid, *, max_runs: int | None = None) -> None:
        super().__init__(name, max_runs=max_runs)
        self.grid = grid
        self._order = tuple(grid.keys())  # the grid's points in the order it runs them
        self._first_unrun = 0  # every key of _order before it is recorded (a recorded key stays recorded)

    def key(self, point: Mapping[str, Any]) -> Key:
        return self.grid.key(point)

    def _wanted(self, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` unrun points in grid order (from the first unrun one: a sweep in
        order costs each point once, not the grid each round)."""
        order = self._order
        while self._first_unrun < len(order) and order[self._first_unrun] in self.outcomes:
            self._first_unrun += 1
        found = []
        for index in range(self._first_unrun, len(order)):
            if order[index] not in self.outcomes:
                found.append(self.grid.point(order[index]))
                if len(found) >= limit:
                    break
        return found

    def _done(self) -> bool:
        return not self.running() and len(self.outcomes) >= self.grid.size

    def stop(self) -> Stop | None:
        """EXHAUSTED once every grid point ran (seen in the evidence: a record of it is not needed to
        read it back, but says it in the same words)."""
        if not self._done():
            return None
        return Stop.on(self.grid, StopReason.EXHAUSTED, len(self.outcomes), self.max_runs, "every grid point run")

    def outstanding(self) -> tuple[dict[str, Any], ...]:
        """The unrun grid points up to the run budget, then those in flight (one pass over the
        grid: thousands of points, microseconds each)."""
        left = min(self.grid.size, self.budget_left())
        unrun = self._wanted(int(left)) if left > 0 else []
        return (*unrun, *(self.grid.point(k) for k, o in self.outcomes.items() if o.state is RunState.RUNNING))


class FixedPoints(Strategy):
    """A fixed list of points to run once each (ensemble members), optionally after a source
    certification: ``make_points(certified_point)`` builds the list once it is certified."""

    def __init__(self, name: str, points: Sequence[Mapping[str, Any]] | None = None, *,
                 waits_for: str | None = None,
                 make_points: Callable[[dict[str, Any]], Sequence[Mapping[str, Any]]] | None = None) -> None:
        super().__init__(name, waits_for=waits_for if points is None else None)
        self.points = [dict(p) for p in points] if points is not None else None
        self.make_points = make_points

    def _source_done(self, certificate: Certificate | None) -> None:
        if certificate is None:
            self.points = []
            return
        assert self.make_points is not None, f"{self.name}: a waiting FixedPoints builds its points with make_points"
        self.points = [dict(p) for p in self.make_points(certificate.point)]

    def _wanted(self, limit: int) -> list[dict[str, Any]]:
        return [] if self.points is None else [p for p in self.points if self.key(p) not in self.outcomes]

    def _done(self) -> bool:
        return self.points is not None and not self.running() and all(
            self.key(p) in self.outcomes for p in self.points)


# --------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class Request:
    """A point a strategy (``task``: its name) wants run, handed to :meth:`Evaluator.submit`."""

    task: str
    point: dict[str, Any]


@dataclass(frozen=True)
class Result:
    """A requested point's outcome, returned by :meth:`Evaluator.wait` (FINISHED or FAILED)."""

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
        KeyboardInterrupt); what becomes of the runs in flight is the evaluator's (the controller's:
        local runs stopped and run again, SLURM jobs re-attached on the next start).
        """

    def tick(self, strategies: Mapping[str, Strategy]) -> None:  # noqa: B027 - optional hook
        """Called once per loop iteration (progress display, heartbeats); a no-op by default."""

    def finished(self, strategy: Strategy) -> None:  # noqa: B027 - optional hook
        """Called once per :func:`drive` for each strategy as soon as it is done (wants nothing more,
        nothing in flight), also one done from the start (its evidence restored); the controller
        records its :meth:`Strategy.stop` here. A no-op by default."""


@dataclass
class DriveStats:
    """What one :func:`drive` did: runs dispatched, waits, and every result in arrival order."""

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
    finished: set[str] = set()
    while True:
        for strategy in strategies:
            if strategy.waits_for is not None:
                strategy.resolve(by_name)
        evaluator.tick(by_name)
        free = evaluator.free_slots()
        requests: list[Request] = []
        if free > 0:
            queues = [[Request(s.name, p) for p in s.wanted(free)] for s in strategies if not s.done()]
            if queues:  # the round-robin starts where the last one stopped: one free slot at a time
                turn = stats.dispatched % len(queues)  # still reaches every strategy in turn
                queues = queues[turn:] + queues[:turn]
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
        for strategy in strategies:  # after wanted(): TPE learns it converged there
            # running() first: a cheap count, where the certifier's done() decides on all its evidence
            if strategy.name not in finished and not strategy.running() and strategy.done():
                finished.add(strategy.name)
                evaluator.finished(strategy)
        if not any(s.running() for s in strategies):
            if requests:
                continue
            return stats
        stats.rounds += 1
        for result in evaluator.wait():
            by_name[result.task].record(result.point, result.outcome)
            stats.results.append(result)
