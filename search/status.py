"""Where every certification of a sweep stands, recomputed from the ledger by the same pure core
and the same replay (:func:`search.ledger.replay`) the controller uses, so ``status`` and
``certify`` can never disagree.

Public API (used by analysis; keep stable): :func:`summarize` -> :class:`CertificationSummary`,
:func:`g_trend_warnings`. ``megadocs search status`` is one :class:`StatusReport`
(:func:`status_report`: the certifications, ensembles, transfers, jobs, the live controller,
undescribed trials and warnings); ``--json`` prints its ``to_dict()`` (standard JSON, the shape in
docs/architecture.md), the human view prints its parts, so the two say the same things. What each
certificate rests on is its :class:`search.certificate.Basis`; ``megadocs search certify``'s exit
status is :func:`certify_exit` (:class:`search.certificate.CertifyExit`); ``search status`` exits 0
whenever it read the ledger.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from megadocs.formats import REAL, RunStatus, dumps_json
from megadocs.procs import PidPlace
from search.baselines import baseline_strategy
from search.certificate import (
    Certificate,
    CertifyExit,
    CertState,
    Decision,
    Extension,
    NoiseEstimate,
    RunState,
    Support,
    point_key,
)
from search.grid import Bound, Grid, Side, values_equal
from search.ledger import (
    STUDY_START,
    LedgerSnapshot,
    RunRecord,
    StudyKind,
    read_snapshot,
    replay,
    start_edit,
    study_name,
    undescribed_line,
)
from search.params import MODEL, RunParams, format_point, pinned_axes
from search.strategies import (
    CertifySearch,
    Stop,
    Strategy,
    StrategyState,
    baseline_phase,
    failed_line,
    reported_state,
    waiting_line,
)
from search.sweep import SYNTHETIC_ONLY_MIX, Sweep
from search.tuned import Certified, CurveMember, PointRun, TunedLoss, curve_labels, runs_at_point, tuned_at_g

__all__ = ["CertificationSummary", "LedgerFacts", "BestPoint", "RunCounts", "Compute", "summarize", "summarize_ensembles",
           "EnsembleSummary", "EnsembleMember", "summarize_transfers", "TransferSummary", "TransferState",
           "g_trend_warnings", "g_trend", "start_edits", "warm_start_advice", "format_table", "format_bases", "format_stops", "format_reruns", "format_extensions",
           "JobWatch", "certify_exit",
           "StatusReport", "status_report", "RunJob", "RunJobState", "Controller"]



@dataclass(frozen=True)
class BestPoint:
    params: dict[str, Any]
    loss: float  # mean over the point's draws


@dataclass(frozen=True)
class RunCounts:
    """Runs (draws: repeats count) of a certification by their latest state."""

    finished: int = 0
    running: int = 0
    failed: int = 0
    stopped: int | None = None  # with a JobWatch only: the ledger says running, the job is gone


@dataclass(frozen=True)
class Compute:
    """Compute this certification spent itself (runs adopted from elsewhere are not counted)."""

    wall_time_s: float = 0.0
    tokens_seen: int = 0
    runs: int = 0  # ledger trials, adopted ones included

    @classmethod
    def of_records(cls, records: Iterable[RunRecord]) -> Compute:
        """The wall time and tokens of the finished trials that ran here (not adopted), of all ``records``."""
        wall, tokens, runs = 0.0, 0, 0
        for record in records:
            runs += 1
            if record.status.finished and record.adopted_from is None:
                wall += float(record.wall_time_s or 0.0)
                tokens += (record.metrics.tokens_seen or 0) if record.metrics else 0
        return cls(wall, tokens, runs)


@dataclass(frozen=True)
class LedgerFacts:
    """What the ledger says of one certification besides the runs replayed into its strategy
    (:meth:`CertificationSummary.of_search`); the defaults are a strategy summarised without a ledger."""

    study: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    pinned: Mapping[str, Any] = field(default_factory=dict)
    """The axes its grid gives one value (:func:`search.params.pinned_axes`): :attr:`CertificationSummary.pinned`."""
    warm_start: str | None = None
    records: tuple[RunRecord, ...] = ()
    """Its ledger trials (for :class:`Compute`)."""
    extensions: tuple[Extension, ...] = ()
    """The extensions the ledger recorded, preferred over those the replay derives: they name the
    centre that asked for each when it was dispatched."""
    budget_stop: Stop | None = None
    """The run budget's stop the ledger recorded, checked to still hold (:meth:`Stop.spent_on`):
    state ``stopped`` in place of a search's phases, its ``reason`` the stop's line."""
    budget_spent: bool = False
    """Its budget spent with nothing in flight: the reason, for ledgers older than the stop record."""
    stopped: int | None = None
    """Points the ledger calls running whose job is gone (:class:`JobWatch`; None: not asked)."""
    to_rerun: tuple[tuple[dict[str, Any], str], ...] = ()
    """Each failed run that stopped the sweep on an error outside it (:attr:`RunRecord.to_rerun`):
    its point as the strategy knows it (a repeat's ``seed`` included) and its reason, in the
    ledger's order; :meth:`CertificationSummary.of_search` keeps those the next ``certify`` runs."""


@dataclass(frozen=True)
class CertificationSummary:
    """Where one certification stands: what ``status`` prints and analysis reads.

    ``to_dict()`` is one entry of ``megadocs search status --json``'s ``certifications``
    (docs/architecture.md). ``state`` is the certifier's :class:`CertState`; a baseline strategy
    (grid, tpe) makes no search from a start, so its seeding/searching phases read as its
    :class:`search.strategies.StrategyState` (not started, running, done) instead.
    """

    name: str
    state: CertState | StrategyState
    best: BestPoint | None
    runs: RunCounts
    certificate: Certificate | None
    path: tuple[dict[str, Any], ...]
    bounds_hit: tuple[Bound, ...]  # of the best point
    outstanding: tuple[dict[str, Any], ...] | None = ()
    """Points still to dispatch or in flight: the certifier's wanted neighbours, a grid baseline's
    unrun points up to its budget; None where the ledger cannot say (TPE samples them, until it
    converged)."""
    to_ask: int | None = None
    """Runs the certifier's decision asks for and has not dispatched yet (:attr:`Decision.wanted`,
    its run budget aside): at least this many still run before it can certify (``search plan``'s
    floor under a search past its expected runs); None for a baseline (``outstanding`` says)."""
    blocked_by: tuple[tuple[dict[str, Any], str], ...] = ()  # failed points and why
    to_rerun: tuple[tuple[dict[str, Any], str], ...] = ()
    """Points whose run stopped the sweep on an error outside it (a user error, an objective that
    returned no loss; :attr:`search.ledger.RunRecord.to_rerun`), with its reason: not evaluated yet,
    wanted, and run again by the next ``certify`` (they block nothing and are not counted failed)."""
    noise: NoiseEstimate = NoiseEstimate(1, None, 0, 2.0)
    reason: str | None = None  # why it cannot certify (failed), stopped (budget; a baseline's stop) or waits (seeding)
    sources: tuple[str, ...] = ()
    """The warm-start sources its ``reason`` names, nearest first: those it waits for (seeding), or
    those whose failure failed it (:meth:`search.strategies.Strategy.source_chain`); not in ``--json``."""
    study: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    pinned: dict[str, Any] = field(default_factory=dict)
    """The axes its grid gives one value, with that value (:func:`search.params.pinned_axes` of
    :meth:`search.sweep.Sweep.grid_for`): with its other fixed params, its setting
    (:meth:`RunParams.setting`), which curve of its method it is on (:func:`g_trend`); not in ``--json``."""
    start: dict[str, Any] | None = None
    warm_start: str | None = None
    compute: Compute = Compute()
    extensions: tuple[Extension, ...] = ()  # extension values reached, in order (search/certify.py)
    point_runs: tuple[PointRun, ...] = ()
    """The runs whose mean is :attr:`loss`, at :attr:`point` (the certified point, else the best so far),
    each run identity once, with its ``loss`` and scores (:func:`search.tuned.runs_at_point`, the one
    rule: the analysis's certifications frame carries these): what one configuration's certifications
    are merged by (:func:`search.tuned.configuration_loss`); not in ``--json``."""
    stop: Stop | None = None
    """A baseline's stop before its run budget (TPE converged, a grid exhausted), as the ledger
    recorded it (a grid's also seen in its evidence), or any search's by its run budget
    (``StopReason.BUDGET``: state ``stopped``) while no run was added since; None while it runs, for
    a certified or failed certification, and where a ledger older than the record has none."""

    @property
    def certified(self) -> bool:
        return self.certificate is not None

    @property
    def support(self) -> Support | None:
        """What the certificate rests on as a whole (None: not certified)."""
        return None if self.certificate is None else self.certificate.basis.support

    @property
    def loss(self) -> float | None:
        """The certified loss, else the best loss so far (None before anything finished)."""
        if self.certificate is not None:
            return self.certificate.loss
        return None if self.best is None else self.best.loss

    @property
    def point(self) -> dict[str, Any]:
        """The certified point, else the best point so far ({} before anything finished)."""
        if self.certificate is not None:
            return dict(self.certificate.point)
        return {} if self.best is None else dict(self.best.params)

    @classmethod
    def of_search(cls, strategy: Strategy, ledger: LedgerFacts = LedgerFacts()) -> CertificationSummary:
        """The summary of a certification's evidence: ``strategy`` is the certifier, or a baseline
        whose runs the certifier's rule reads (:attr:`Strategy.evidence`: its best point, its
        certificate where they certify it) and which says itself what is outstanding, why it stopped
        (:meth:`Strategy.stop`, also the ``reason`` unless its evidence failed) and where it stands
        while its evidence certifies nothing (:meth:`Strategy.phase`, the progress line's rule);
        ``ledger``: what the ledger adds (:class:`LedgerFacts`)."""
        search = _evidence(strategy)
        baseline = None if strategy is search else strategy
        decision = search.decide()
        # a baseline's stop before its budget, else the budget's (it may have been a --max-runs: only the record says it)
        stop = (baseline.stop() if baseline is not None else None) or ledger.budget_stop
        # the progress line's rule (Strategy.phase, then reported_state), on the decision made above
        state = reported_state(decision.state if baseline is None else baseline_phase(baseline.state(), decision.state),
                               stop)
        return cls(
            name=search.name, state=state,
            best=None if decision.centre is None else BestPoint(decision.centre, decision.centre_loss),
            runs=RunCounts(search.count(RunState.FINISHED), search.count(RunState.RUNNING) - (ledger.stopped or 0),
                           search.count(RunState.FAILED), ledger.stopped),
            certificate=decision.certificate, path=decision.path, bounds_hit=decision.bounds_hit,
            outstanding=_outstanding(decision, baseline),
            to_ask=len(decision.wanted) if baseline is None else None,
            blocked_by=decision.blocked_by, to_rerun=_to_rerun(ledger.to_rerun, strategy, decision, baseline),
            noise=decision.noise,
            reason=_reason(decision, state, stop, baseline=baseline is not None, runs=len(search.outcomes),
                           budget_spent=ledger.budget_spent),
            study=ledger.study, fixed=dict(ledger.fixed), pinned=dict(ledger.pinned), start=search.start, warm_start=ledger.warm_start,
            compute=Compute.of_records(ledger.records), extensions=_merge_extensions(ledger.extensions, search.extensions),
            stop=stop, sources=search.source_chain(),
            point_runs=runs_at_point(ledger.records, decision.certificate.point if decision.certificate is not None
                                  else decision.centre or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``status --json`` object, standard JSON: an infinite (diverged) loss is ``null``
        beside ``"diverged": true`` (see :func:`_standard`)."""
        return _standard({
            "name": self.name,
            "study": self.study,
            "fixed": dict(self.fixed),
            "state": self.state.value,
            "best": None if self.best is None else {"params": self.best.params, "loss": self.best.loss},
            "runs": {"finished": self.runs.finished, "running": self.runs.running, "failed": self.runs.failed,
                     **({} if self.runs.stopped is None else {"stopped": self.runs.stopped})},
            "outstanding": None if self.outstanding is None else list(self.outstanding),
            "to_ask": self.to_ask,
            "bounds_hit": [b.to_dict() for b in self.bounds_hit],
            "certificate": self.certificate.to_dict() if self.certificate else None,
            "path": list(self.path),
            "blocked_by": [{"params": p, "reason": r} for p, r in self.blocked_by],
            "to_rerun": [{"params": p, "reason": r} for p, r in self.to_rerun],
            "reason": self.reason,
            "noise": self.noise.to_dict(),
            "start": self.start,
            "warm_start": self.warm_start,
            "compute": {"wall_time_s": self.compute.wall_time_s, "tokens_seen": self.compute.tokens_seen,
                        "runs": self.compute.runs},
            "extensions": [e.to_dict() for e in self.extensions],
            "stop": None if self.stop is None else self.stop.to_dict(),
        })


def _source_reason(source: CertificationSummary, by_name: Mapping[str, CertificationSummary]) -> str | None:
    """Why an ensemble or a transfer from ``source`` has no point to run at, in a warm start's words
    (:func:`search.strategies.waiting_line`, :func:`search.strategies.failed_line`): ``waiting for b,
    which waits for a (stopped: run budget spent)``, ``source b, which waits for a, ended failed``;
    None once ``source`` is certified."""
    if source.certified:
        return None
    chain = (source.name, *source.sources)
    if source.state is CertState.FAILED:
        return failed_line(chain)
    end = by_name[chain[-1]]  # the search that holds the chain: stopped by its budget, or searching
    return waiting_line(chain, end.stop if end.state is StrategyState.STOPPED else None)


def _outstanding(decision: Decision, baseline: Strategy | None) -> tuple[dict[str, Any], ...] | None:
    """The points still to dispatch or in flight: a baseline's own (it dispatches its points, not
    the certifier's; None where it cannot say), else the certifier's wanted (once it has a centre)
    and running ones. A budget's stop leaves them: what it would run next, given a larger budget."""
    if baseline is not None:
        return baseline.outstanding()
    return (*decision.wanted, *decision.running) if decision.centre is not None else decision.running


def _to_rerun(candidates: Iterable[tuple[dict[str, Any], str]], strategy: Strategy, decision: Decision,
              baseline: Strategy | None) -> tuple[tuple[dict[str, Any], str], ...]:
    """The points of ``candidates`` (:attr:`LedgerFacts.to_rerun`) that the next ``certify`` runs
    again: without another run recorded, and wanted (the certifier's ``decision.wanted``, a
    baseline's outstanding points; any, where a sampler cannot say: TPE); the latest reason of each."""
    wanted = decision.wanted if baseline is None else baseline.outstanding()
    keys = None if wanted is None else {strategy.key(point) for point in wanted}
    found: dict[Any, tuple[dict[str, Any], str]] = {}
    for point, reason in candidates:
        key = strategy.key(point)
        if key not in strategy.outcomes and (keys is None or key in keys):
            found[key] = (point, reason)
    return tuple(found.values())


def _reason(decision: Decision, state: CertState | StrategyState, stop: Stop | None, *, baseline: bool, runs: int,
            budget_spent: bool) -> str | None:
    """Why a certification stands where it does (``state``): the certifier's reason, where a
    baseline's own state does not stand in for the certifier's seeding/searching; else a budget
    spent before a ledger kept its stop (``budget_spent``, of ``runs``); else ``stop``'s line."""
    searching = decision.state in (CertState.SEEDING, CertState.SEARCHING)
    if searching and state is not StrategyState.STOPPED and budget_spent:  # a ledger older than the record
        return f"run budget spent ({runs} runs) before it could certify"
    reason = None if searching and baseline else decision.reason
    return reason if reason is not None or stop is None else stop.describe()


def _merge_extensions(recorded: Iterable[Extension], derived: Iterable[Extension]) -> tuple[Extension, ...]:
    """The derived extensions (the evidence's truth), each replaced by the ledger's record of it
    when there is one (written at dispatch: the centre that asked for it)."""
    by_step = {e.step: e for e in recorded}
    return tuple(by_step.get(e.step, e) for e in derived)


def certify_exit(summaries: Iterable[CertificationSummary]) -> CertifyExit:
    """``megadocs search certify``'s exit status for these certifications (:class:`CertifyExit`)."""
    return CertifyExit.of((s.state, s.support, bool(s.blocked_by)) for s in summaries)


class RunJobState(str, Enum):
    """What ``search status``'s job list says of a run the ledger calls running, or that failed."""

    QUEUED = "queued"  # no job yet; the live controller submits it when a slot frees
    STOPPED = "stopped"  # no live controller submits it (Ctrl-C, killed before submitting), or its job is gone
    RUNNING = "running"
    UNCHECKED = "unchecked"  # a local job on another host or in another container: its pid is not asked from here
    ENDED = "ended"  # the job wrote its result, not in the ledger yet (its controller was killed): certify records it
    FAILED = "failed"


class JobWatch:
    """What became of the jobs the ledger calls running (:meth:`state`), asked of the executor
    (local pid, SLURM state), so that ``status`` after a killed controller does not report dead
    jobs as running. Reads no result file (only whether there is one); a job folder outside the
    sweep is refused (UntrustedPath). Each job is asked once (on SLURM, a ``squeue``/``sacct``
    call): one watch serves one command."""

    def __init__(self, sweep, *, controller_live: bool = False) -> None:
        self.sweep = sweep
        self.controller_live = controller_live
        """A live controller holds the sweep (``LedgerSnapshot.holder``): its runs without a job are
        waiting for a slot or being submitted, not stopped."""
        self._executor = None
        self._states: dict[tuple[str, str | None], RunJobState] = {}

    def state(self, record: RunRecord) -> RunJobState:
        """The job of a run the ledger calls running: without one, ``queued`` while a live
        controller holds the sweep (it submits the run when a slot frees), else ``stopped``; a local
        job whose pid cannot be asked from here (:attr:`RunRecord.job_place`: another host, machine
        or container) ``unchecked``, never taken for ended; else ``running``, ``ended`` (it wrote
        its result, which the ledger does not hold yet: its controller was killed after submitting
        it, the next ``certify`` records it) or ``stopped`` (gone)."""
        if not record.job_id:
            return RunJobState.QUEUED if self.controller_live else RunJobState.STOPPED
        if not PidPlace.asked_here(record.job_place):
            return RunJobState.UNCHECKED
        key = (record.job_id, record.job_folder)
        if key not in self._states:
            jobs = self._jobs()
            self._states[key] = (RunJobState.RUNNING if jobs.alive(*key) else
                                 RunJobState.ENDED if jobs.has_result(*key) else RunJobState.STOPPED)
        return self._states[key]

    def _jobs(self):
        if self._executor is None:
            from megadocs.executors import make_executor

            self._executor = make_executor(self.sweep.executor, self.sweep.out_dir / "jobs",
                                           name=f"megadocs-{self.sweep.name}", create=False)
        return self._executor

    def close(self) -> None:
        """Let go of the executor and the jobs it re-attached, now. Left to the interpreter's exit,
        submitit's ``LocalJob.__del__`` ran after its modules were torn down and printed a
        traceback (``'NoneType' object is not callable``) under every ``status`` of a local sweep:
        an import keeps the command's frame, and so this watch, alive until then."""
        self._executor = None


def summarize(sweep: Sweep, strategy: str = "certify", max_runs: int | None = None, *,
              watch: JobWatch | None = None, snapshot: LedgerSnapshot | None = None,
              warn_off_grid: bool = True) -> list[CertificationSummary]:
    """One :class:`CertificationSummary` per certification, recomputed from the ledger.

    Args:
        sweep: the loaded sweep (:func:`search.sweep.load_sweep` turns a file into one).
        strategy: ``certify`` (default) or a baseline (``grid``/``tpe``) run on the same sweep;
            for a baseline, ``certificate`` is set when its best point happens to be certifiable
            from its evidence.
        max_runs: the run budget the controller had (``--max-runs``; default each
            certification's ``max_runs``): an uncertified search that spent it says so in ``reason``.
        watch: asks the executor whether each running run's job still runs (:class:`JobWatch`,
            shared with the command's job list); those whose job is gone count as
            ``runs.stopped``, not ``running`` (the next ``certify`` re-attaches, adopts or re-runs
            them). None: not asked.
        snapshot: the ledger already read (:func:`search.ledger.read_snapshot`), shared with the
            command's other readers; read now when not given.
        warn_off_grid: warn about trials at points the grid no longer lists (one line per
            certification); ``certify`` passes False, its controller's restore said it already.
    """
    snapshot = snapshot if snapshot is not None else read_snapshot(sweep)
    kind = StudyKind(strategy)
    summaries = []
    searches: dict[str, CertifySearch] = {}  # a warm start's sources: earlier in the file, so built already
    budget_stops: dict[str, Stop] = {}  # a warm start waits on a source its budget stopped: it says so
    for cert in sweep.certifications:
        study = study_name(sweep.name, cert.name, kind)
        budget = max_runs if max_runs is not None else cert.max_runs
        strategy, grid = _strategy(sweep, cert, kind, snapshot.study_attrs(study).get(STUDY_START), budget,
                                   searches, budget_stops)
        search = _evidence(strategy)
        records = snapshot.runs(study)
        n_stopped = _replay_runs(strategy, records, fixed=cert.fixed, grid=grid, watch=watch,
                                 warn_off_grid=warn_off_grid)
        recorded_stop = snapshot.stop(study)
        if recorded_stop is not None:
            strategy.restore_stop(recorded_stop)  # TPE's convergence is in no run: only this record says it
        budget_stop = recorded_stop if recorded_stop is not None and not search.running() and \
            recorded_stop.spent_on(grid, len(search.outcomes)) else None
        if budget_stop is not None:
            budget_stops[cert.name] = budget_stop
        summaries.append(CertificationSummary.of_search(strategy, LedgerFacts(
            study=study, fixed=cert.fixed, pinned=pinned_axes(sweep.grid_for(cert).as_mapping()),
            warm_start=cert.warm_start, records=tuple(records),
            extensions=tuple(snapshot.extensions(study)), budget_stop=budget_stop,
            budget_spent=budget is not None and len(search.outcomes) >= budget and not search.running(),
            stopped=n_stopped, to_rerun=_rerun_candidates(strategy, records, fixed=cert.fixed, grid=grid),
        )))
    return summaries


def _strategy(sweep: Sweep, cert, kind: StudyKind, start: dict[str, Any] | None, budget: int | None,
              searches: dict[str, CertifySearch], budget_stops: Mapping[str, Stop]) -> tuple[Strategy, Grid]:
    """The strategy a certification's runs are replayed into, as its controller built it, and the
    grid they are checked against: the certifier from the recorded ``start`` (else the sweep's, or
    a wait for its warm start's source, resolved against the ``searches`` built so far, which it
    joins), or a baseline over the grid as listed (``build_strategies``) whose runs its certifier's
    evidence also reads."""
    grid = sweep.grid_for(cert)
    if kind is StudyKind.CERTIFY:
        start = sweep.resumed_start(cert, start, grid)
        if start is None and not cert.warm_start:
            start = sweep.start_for(cert)
        search = CertifySearch(cert.name, grid, start, seed_neighbours=sweep.seeds_neighbours(cert),
                               waits_for=cert.warm_start if start is None else None,
                               fallback=sweep.start_for(cert), noise=sweep.noise_for(cert))
        if search.waits_for is not None:
            search.resolve(searches, budget_stops)
        searches[cert.name] = search
        return search, grid
    grid = grid.listed_grid()
    start = sweep.resumed_start(cert, start, grid)
    baseline = baseline_strategy(kind.value, cert.name, grid, max_runs=budget,
                                 start=start if start is not None else sweep.start_for(cert),
                                 seed_neighbours=sweep.seeds_neighbours(cert))
    return baseline, grid


def _evidence(strategy: Strategy) -> CertifySearch:
    """What the certifier's rule reads of a strategy: the certifier itself, or a baseline's
    evidence (:attr:`Strategy.evidence`: its runs, read by the certifier's rule)."""
    search = strategy if isinstance(strategy, CertifySearch) else strategy.evidence
    assert search is not None, f"{strategy.name}: a baseline's summary reads its runs by the certifier's rule"
    return search


def _strategys_run(strategy: Strategy, params: RunParams) -> bool:
    """Whether a run of `params` is one of `strategy`'s: a baseline's repeats (seeded runs) are
    its evidence's, not its own."""
    return params.seed is None or strategy is _evidence(strategy)


def _replay_runs(strategy: Strategy, records: list[RunRecord], *, fixed: Mapping[str, Any], grid: Grid,
                 watch: JobWatch | None, warn_off_grid: bool) -> int | None:
    """Feed a certification's ledger ``records`` to its ``strategy`` (:func:`search.ledger.replay`;
    a baseline's repeats are not its runs) and count the points whose latest run the ledger calls
    running while its job is stopped (:meth:`JobWatch.state`; None without a ``watch``)."""
    search = _evidence(strategy)
    stopped: set[Any] = set()
    for item in replay(records, fixed=fixed, grid=grid, warn_off_grid=warn_off_grid):
        if not _strategys_run(strategy, item.params):
            continue
        strategy.record(item.point, item.outcome)  # a baseline's also feeds its evidence
        key = search.key(item.point)
        stopped.discard(key)  # per point, its latest state
        if (watch is not None and item.outcome.state is RunState.RUNNING
                and watch.state(item.record) is RunJobState.STOPPED):
            stopped.add(key)
    if watch is None:
        return None
    return sum(search.outcomes[key].state is RunState.RUNNING for key in stopped if key in search.outcomes)


def _rerun_candidates(strategy: Strategy, records: Iterable[RunRecord], *, fixed: Mapping[str, Any],
                      grid: Grid) -> tuple[tuple[dict[str, Any], str], ...]:
    """:attr:`LedgerFacts.to_rerun` of a certification's ledger ``records``: the failed runs that
    stopped the sweep (:attr:`RunRecord.to_rerun`) at points on ``grid``, as ``strategy`` knows
    them (:func:`_strategys_run`), with their reasons."""
    found = []
    for record in records:
        if record.to_rerun and grid.contains(record.point):
            params = record.params(fixed)
            if _strategys_run(strategy, params):
                found.append((params.strategy_point(), record.reason or "failed"))
    return tuple(found)


@dataclass(frozen=True)
class EnsembleMember:
    """One trial of an ensemble study: its params (the grid point and the member's ``seed``,
    :meth:`search.ledger.RunRecord.params`), state and run directory."""

    member: int | None
    params: RunParams
    status: RunStatus
    run_dir: str | None
    run_id: str | None = None  # its run identity: another study may hold the same run (``search plan``'s total)

    def to_dict(self) -> dict[str, Any]:
        return {"member": self.member, "point": dict(self.params.point), "seed": self.params.seed,
                "status": self.status.value, "run_dir": self.run_dir}


@dataclass(frozen=True)
class EnsembleSummary:
    """Where one ensemble stands. Only runs at the members' points of the source's *current*
    certified point (:meth:`search.sweep.EnsembleConfig.member_params`) are its members; runs made
    at an earlier certified point (the grid was widened, the data changed) are ``stale``: kept in
    the ledger, never scored with the current ones.
    """

    name: str
    source: str
    method: str
    wanted: int  # members asked for (the sweep's ``members``)
    source_point: dict[str, Any] | None  # the source's certified point now; None while it is not certified
    source_state: CertState
    members: tuple[EnsembleMember, ...] = ()  # at the current point, in member order
    stale: tuple[EnsembleMember, ...] = ()  # finished runs at another point
    reason: str | None = None  # why the source gives no point yet (:func:`_source_reason`); None once certified

    @property
    def completed(self) -> list[str]:
        """Run directories of the completed members at the current point, in member order."""
        return [m.run_dir for m in self.members if m.status is RunStatus.COMPLETED and m.run_dir]

    def count(self, status: RunStatus) -> int:
        return sum(m.status is status for m in self.members)

    def refusal(self) -> str | None:
        """Why the members cannot be scored as one ensemble now, in one line (None: they can)."""
        stale = ""
        if self.stale:
            points = sorted({format_point(m.params.point) for m in self.stale})
            stale = (f"; {len(self.stale)} finished member(s) belong to an earlier certified point of "
                     f"{self.source} ({'; '.join(points)}) and are not mixed in")
        if self.source_point is None:  # a searching source, or its chain's wait or failure (a warm start's words)
            why = (f"source {self.source} is not certified now ({self.source_state.value})"
                   if self.source_state is CertState.SEARCHING or self.reason is None else self.reason)
            return f"{why}, so no point's members can be scored{stale}; re-run `megadocs search certify`"
        done = len(self.completed)
        if done < 2:
            return (f"{done} completed member(s) at {self.source}'s certified point ({format_point(self.source_point)}); "
                    f"need at least 2{stale}" + ("; re-run `megadocs search certify` to train them" if stale else ""))
        return None

    def describe(self) -> str:
        """One line for ``status``/``certify``: members done at the current point, and the stale ones."""
        at = f"at {format_point(self.source_point)}" if self.source_point is not None else \
            self.reason or f"waiting for {self.source}"
        text = (f"ensemble {self.name} (from {self.source}, {at}): {len(self.completed)}/{self.wanted} members "
                f"completed, {self.count(RunStatus.RUNNING)} running, {self.count(RunStatus.FAILED)} failed")
        if self.stale:
            text += f"; {len(self.stale)} finished at an earlier certified point (not used)"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Its entry in ``status --json``'s ``ensembles``: the counts :meth:`describe` says, each
        member, :meth:`refusal` and the line itself (``summary``)."""
        return {
            "name": self.name, "source": self.source, "method": self.method, "wanted": self.wanted,
            "source_point": self.source_point, "source_state": self.source_state.value,
            "completed": len(self.completed), "running": self.count(RunStatus.RUNNING),
            "failed": self.count(RunStatus.FAILED),
            "members": [m.to_dict() for m in self.members], "stale": [m.to_dict() for m in self.stale],
            "refusal": self.refusal(), "summary": self.describe(),
        }


class TransferState(str, Enum):
    """Where a transfer's one run stands (the word ``search status`` prints)."""

    WAITING = "waiting"  # no run yet: its source is not certified yet, or certify has not reached it
    BLOCKED = "blocked"  # no run, and none until its source certifies: the source ended failed
    RUNNING = "running"
    FINISHED = "finished"  # a diverged run is finished with loss +inf, as in the certifier
    FAILED = "failed"


@dataclass(frozen=True)
class TransferSummary:
    """Where one transfer (a method trained at another certification's certified point) stands.

    ``fixed`` is the target's fixed fields, ``source`` the certification whose point it borrows,
    ``point`` its run's grid point once it has one, ``loss`` that run's loss once finished.
    ``trial`` is that run's trial number in the transfer's study (``{sweep}/transfer/{name}``;
    ``RunRecord.trial``, the runs frame's ``trial`` column) and ``run_id`` its run identity: a
    reader matches the run by these, never by its point (two trials may share a point: a run
    adopted again after the source's point moved away and back).
    """

    name: str
    source: str
    fixed: dict[str, Any]
    state: TransferState
    point: dict[str, Any] | None = None
    loss: float | None = None
    trial: int | None = None
    run_id: str | None = None
    reason: str | None = None  # why the source gives no point yet (:func:`_source_reason`); None once certified

    def describe(self) -> str:
        """One line for ``search status``: the target, whose optimum it runs at, its state (a wait
        or a block in a warm start's words: :attr:`reason`) and loss."""
        target = " ".join(f"{k}={v}" for k, v in self.fixed.items())
        loss = f": loss {self.loss:.4f}" if self.loss is not None else ""
        state = self.state.value
        if self.state is TransferState.BLOCKED:
            state += f" ({self.reason}: it runs once {self.source} certifies)"
        elif self.state is TransferState.WAITING and self.reason is not None:
            state = self.reason  # "waiting for b, which waits for a"
        return f"transfer {self.name} ({target} at {self.source}'s optimum): {state}{loss}"

    def to_dict(self) -> dict[str, Any]:
        """Its entry in ``status --json``'s ``transfers`` (a diverged loss: see :func:`_standard`)."""
        return {"name": self.name, "source": self.source, "fixed": dict(self.fixed), "state": self.state.value,
                "point": self.point, "loss": self.loss, "trial": self.trial, "run_id": self.run_id,
                "summary": self.describe()}


def _read_sources(sweep: Sweep, summaries: Iterable[CertificationSummary] | None,
                  snapshot: LedgerSnapshot | None) -> tuple[LedgerSnapshot, dict[str, CertificationSummary]]:
    """The ledger (read now unless given) and the certifications' summaries by name (computed from
    it unless given): what an ensemble's or a transfer's summary reads of its source."""
    snapshot = snapshot if snapshot is not None else read_snapshot(sweep)
    return snapshot, {s.name: s for s in (summaries if summaries is not None else summarize(sweep, snapshot=snapshot))}


def summarize_ensembles(sweep: Sweep, summaries: Iterable[CertificationSummary] | None = None, *,
                        snapshot: LedgerSnapshot | None = None) -> list[EnsembleSummary]:
    """One :class:`EnsembleSummary` per ensemble of the sweep (``summaries``: the certifications'
    :func:`summarize`, computed here when not given; ``snapshot``: the ledger already read)."""
    if not sweep.ensembles:
        return []
    snapshot, by_name = _read_sources(sweep, summaries, snapshot)
    found = []
    for ens in sweep.ensembles:
        source = by_name[ens.source]
        cert = sweep.certification(ens.source)
        point = source.certificate.point if source.certificate is not None else None
        axes = sweep.grid_for(cert).as_mapping()
        wanted = {point_key(m.strategy_point()) for m in ens.member_params(point, axes)} if point else set()
        members, stale = [], []
        for record in snapshot.runs(study_name(sweep.name, ens.name, StudyKind.ENSEMBLE)):
            if record.status is RunStatus.SUPERSEDED or record.to_rerun:  # not evaluated (yet)
                continue
            member = EnsembleMember(record.member, record.params(), record.status, record.run_dir, record.run_id)
            if point_key(member.params.strategy_point()) in wanted:
                members.append(member)
            elif record.status.finished:
                stale.append(member)
        members.sort(key=lambda m: (m.member is None, m.member or 0))
        method = RunParams(fixed=cert.fixed).method
        found.append(EnsembleSummary(ens.name, ens.source, str(method), ens.members, point,
                                     source.state, tuple(members), tuple(stale), _source_reason(source, by_name)))
    return found


def _standard(value: Any) -> Any:
    """A diverged run's loss (+inf) becomes ``"loss": null`` beside ``"diverged": true``."""
    if isinstance(value, Mapping):
        out = {str(key): _standard(item) for key, item in value.items()}
        loss = value.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            out["diverged"] = True
        return out
    if isinstance(value, (list, tuple)):
        return [_standard(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarize_transfers(sweep: Sweep, summaries: Iterable[CertificationSummary] | None = None, *,
                        snapshot: LedgerSnapshot | None = None) -> list[TransferSummary]:
    """One :class:`TransferSummary` per transfer of the sweep, from its latest non-superseded run
    at the source's *current* certified point (``summaries``: the certifications' :func:`summarize`,
    computed here when not given; ``snapshot``: the ledger already read). As for ensembles, a run
    at an earlier certified point (the sweep file changed since: a widened grid, new data) is not
    this transfer's result: until the source certifies again and the transfer runs there, it is
    ``waiting`` (it was reported finished with the old point's loss)."""
    if not sweep.transfers:
        return []
    snapshot, by_name = _read_sources(sweep, summaries, snapshot)
    found = []
    for transfer in sweep.transfers:
        source = by_name[transfer.source]
        certificate = source.certificate
        current = point_key(certificate.point) if certificate is not None else None
        records = [r for r in snapshot.runs(study_name(sweep.name, transfer.name, StudyKind.TRANSFER))
                   if r.status is not RunStatus.SUPERSEDED and not r.to_rerun and point_key(r.point) == current]
        latest = records[-1] if records else None
        waiting = TransferState.BLOCKED if source.state is CertState.FAILED else TransferState.WAITING
        state = (waiting if latest is None else TransferState.FINISHED if latest.status.finished
                 else TransferState.FAILED if latest.status is RunStatus.FAILED else TransferState.RUNNING)
        found.append(TransferSummary(
            name=transfer.name, source=transfer.source, fixed=dict(transfer.fixed), state=state,
            point=latest.point if latest else None,
            loss=latest.loss if latest and state is TransferState.FINISHED else None,
            trial=latest.trial if latest else None, run_id=latest.run_id if latest else None,
            reason=_source_reason(source, by_name),
        ))
    return found


@dataclass(frozen=True)
class RunJob:
    """One run in flight or failed, with its job: what to follow with squeue/sacct or cancel with
    scancel. ``job_id`` None: never handed to an executor (queued, or stopped before it was)."""

    certification: str  # as RunRecord.certification: "a", "grid/a", "ensemble/e", "transfer/t"
    trial: int
    point: dict[str, Any]
    state: RunJobState
    job_id: str | None
    attempts: int
    reason: str | None
    elsewhere: str | None = None  # where an unchecked job runs (megadocs.procs.PidPlace.where)

    @classmethod
    def of(cls, record: RunRecord, watch: JobWatch) -> RunJob | None:
        """The record's entry (None: finished, superseded, failed without a job, or to run again
        (:attr:`RunRecord.to_rerun`, listed under its certification): nothing to follow)."""
        running = record.status is RunStatus.RUNNING
        if not (running or (record.status is RunStatus.FAILED and record.job_id and not record.to_rerun)):
            return None
        state = watch.state(record) if running else RunJobState.FAILED
        elsewhere = record.job_place.where() if state is RunJobState.UNCHECKED and record.job_place else None
        return cls(record.certification, record.trial, dict(record.point), state, record.job_id, record.attempts,
                   record.reason, elsewhere)

    def describe(self) -> str:
        """The job list's line."""
        point = " ".join(f"{k}={v}" for k, v in self.point.items())
        where = f"{self.certification} {point}"
        if self.state is RunJobState.QUEUED:
            return f"{where}: queued, no job yet (the running controller submits it when a slot frees)"
        if self.job_id is None:  # stopped on purpose (Ctrl-C), or killed before submitting
            return (f"{where}: stopped, no job ({self.reason or 'not submitted yet'}); "
                    "`megadocs search certify` runs it again")
        status = {RunJobState.STOPPED: "stopped (its job is gone; `megadocs search certify` resumes it)",
                  RunJobState.ENDED: "ended, result not recorded yet (`megadocs search certify` records it)",
                  RunJobState.UNCHECKED: f"running {self.elsewhere} (not checked from here)",
                  }.get(self.state, self.state.value)
        reason = f": {self.reason}" if self.state is RunJobState.FAILED and self.reason else ""
        return f"{where}: {status}, job {self.job_id} (attempt {self.attempts}){reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"certification": self.certification, "trial": self.trial, "point": self.point,
                "state": self.state.value, "job_id": self.job_id, "attempts": self.attempts, "reason": self.reason,
                "summary": self.describe()}


@dataclass(frozen=True)
class Controller:
    """The live controller holding the sweep (the lock's holder; its token stays out)."""

    host: str
    pid: int
    since: str

    def describe(self) -> str:
        return f"controller: running on host {self.host}, pid {self.pid}, since {self.since}"


@dataclass(frozen=True)
class StatusReport:
    """Everything ``megadocs search status`` says of a sweep, typed: the human view prints its
    parts, ``--json`` its :meth:`to_dict`. Ensembles and transfers are the certifier's (only
    ``certify`` runs them): a baseline strategy's report has none.

    ``undescribed`` counts, per study, the trials that name no point: created, but their
    description never written (a controller stopped in between, or a database connection cut
    after the server committed the trial and before the controller heard, which then creates
    the trial again). They are no run of any point: left out of every count, and closed (Optuna
    state FAIL, with a reason) by the next controller's start.
    """

    sweep: str
    strategy: StudyKind
    certifications: tuple[CertificationSummary, ...]
    ensembles: tuple[EnsembleSummary, ...] = ()
    transfers: tuple[TransferSummary, ...] = ()
    jobs: tuple[RunJob, ...] = ()
    controller: Controller | None = None
    undescribed: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # start_edits, g_trend_warnings

    def undescribed_line(self) -> str | None:
        """One line for the undescribed trials (:func:`search.ledger.undescribed_line`)."""
        return undescribed_line(self.undescribed, controller_live=self.controller is not None)

    def to_dict(self) -> dict[str, Any]:
        """The ``status --json`` object (docs/architecture.md), standard JSON (:func:`_standard`)."""
        return _standard({
            "sweep": self.sweep,
            "strategy": self.strategy.value,
            "certifications": [s.to_dict() for s in self.certifications],
            "ensembles": [e.to_dict() for e in self.ensembles],
            "transfers": [t.to_dict() for t in self.transfers],
            "jobs": [j.to_dict() for j in self.jobs],
            "controller": None if self.controller is None else asdict(self.controller),
            "undescribed": [{"study": study, "trials": n} for study, n in self.undescribed.items()],
            "warnings": list(self.warnings),
        })

    def to_json(self) -> str:
        """The ``status --json`` text."""
        return dumps_json(self.to_dict(), indent=1)


def status_report(sweep: Sweep, strategy: str = "certify", *, watch: JobWatch,
                  snapshot: LedgerSnapshot | None = None) -> StatusReport:
    """The :class:`StatusReport` of ``sweep`` under ``strategy`` (as :func:`summarize`; ``watch``
    asks the executor about running jobs, each once for both the counts and the job list)."""
    snapshot = snapshot if snapshot is not None else read_snapshot(sweep)
    kind = StudyKind(strategy)
    summaries = summarize(sweep, strategy, watch=watch, snapshot=snapshot)  # dead jobs are not "running"
    certify = kind is StudyKind.CERTIFY
    holder = snapshot.holder
    return StatusReport(
        sweep=sweep.name, strategy=kind, certifications=tuple(summaries),
        ensembles=tuple(summarize_ensembles(sweep, summaries, snapshot=snapshot)) if certify else (),
        transfers=tuple(summarize_transfers(sweep, summaries, snapshot=snapshot)) if certify else (),
        jobs=tuple(job for record in snapshot.all_runs() if (job := RunJob.of(record, watch)) is not None),
        controller=None if holder is None else Controller(str(holder["host"]), int(holder["pid"]), str(holder["since"])),
        undescribed=snapshot.undescribed_counts(),
        warnings=(*start_edits(sweep, kind, snapshot), *g_trend_warnings(summaries, sweep.base_model)),
    )


def start_edits(sweep: Sweep, kind: StudyKind, snapshot: LedgerSnapshot) -> list[str]:
    """One line per certification whose sweep-file start or warm start its started search does not
    use (:func:`search.ledger.start_edit`; ``certify`` says them when it restores the search)."""
    edits = []
    for cert in sweep.certifications:
        grid = sweep.grid_for(cert)
        grid = grid if kind is StudyKind.CERTIFY else grid.listed_grid()
        attrs = snapshot.study_attrs(study_name(sweep.name, cert.name, kind))
        if (edit := start_edit(sweep, cert, attrs, grid, kind=kind)) is not None:
            edits.append(edit)
    return edits


def g_trend(summaries: Iterable[CertificationSummary], base_model: str | None = None) -> dict[str, list[tuple[float, TunedLoss]]]:
    """Each curve's tuned loss at each of its G, by G: what :func:`g_trend_warnings` compares.

    Which certifications form which curve, and its name, is the analysis's rule
    (:func:`search.tuned.method_curves`): one curve per method and model (the one each trains,
    :meth:`RunParams.trained_model` over ``base_model``, the sweep's :attr:`Sweep.base_model`: ``model:
    300m`` and no model are one curve where the base is 300m; named where it is not the base model),
    split by setting (its other fixed params and its grid axes given one value,
    :meth:`RunParams.setting`) only where two settings share a G; the synthetic-only ablation (mix 1)
    is a curve of its own, ``(synthetic only)``; the real-only baseline (G=0) is none, as in the
    analysis. At one G, certifications of one configuration (the
    same fixed params: they differ only in how their search ran) are one point by
    :func:`search.tuned.configuration_loss` (the analysis's rule too), and several fixed seeds their mean
    (:func:`search.tuned.tuned_at_g`)."""
    certified: dict[bool, list[tuple[CurveMember, CertificationSummary]]] = {False: [], True: []}
    for summary in summaries:
        fixed, certificate = summary.fixed, summary.certificate
        if certificate and "g" in fixed and "method" in fixed and fixed["method"] != REAL:  # the baseline: no curve
            params = RunParams.split(fixed, axes=())
            member = CurveMember(str(fixed["method"]), float(fixed["g"]), params.setting(summary.pinned),
                                 params.trained_model(base_model))
            ablation = values_equal(certificate.point.get("mix", 0.0), SYNTHETIC_ONLY_MIX)  # not a point of the mixed curve
            certified[ablation].append((member, summary))
    curves: dict[str, dict[float, dict[str, list[Certified]]]] = defaultdict(lambda: defaultdict(dict))
    for ablation, part in certified.items():
        for (member, summary), label in zip(part, curve_labels([member for member, _ in part], base_model)):
            trained = {**summary.fixed, MODEL: member.model} if member.model is not None else summary.fixed
            configuration = repr(sorted((str(k), repr(v)) for k, v in trained.items()))  # the model written or not
            certificate = summary.certificate
            curves[label + (" (synthetic only)" if ablation else "")][member.g].setdefault(configuration, []).append(
                Certified(summary.name, certificate.point, {"loss": certificate.loss}, summary.point_runs))
    return {method: [(g, tuned_at_g(by_g[g].values())) for g in sorted(by_g)] for method, by_g in sorted(curves.items())}


def g_trend_warnings(summaries: Iterable[CertificationSummary], base_model: str | None = None) -> list[str]:
    """Algorithms whose certified loss rises with G (:func:`g_trend`): a sign a search did not
    converge (a larger G can always reuse a smaller G's hyperparameters, so the tuned loss should
    not rise). A rise within the sweep's seed noise (the pooled estimate with the most degrees of
    freedom: ``sds`` x sigma x sqrt(2), two single-run losses) is not a sign of anything and is not
    flagged. The advice is :func:`warm_start_advice`.
    """
    summaries = list(summaries)
    warm_starts = {summary.name: summary.warm_start for summary in summaries}
    estimates = [s.noise for s in summaries if s.noise.sigma is not None]
    noise = max(estimates, key=lambda n: n.df, default=None)
    tolerance = noise.sds * noise.sigma * math.sqrt(2) if noise is not None else 0.0
    warnings = []
    for method, tuned in g_trend(summaries, base_model).items():
        for (g_a, a), (g_b, b) in zip(tuned, tuned[1:]):
            rise = b.loss - a.loss
            if rise <= tolerance:
                continue
            size = (f" ({rise / noise.sigma:.1f} noise sds)" if noise is not None and noise.sigma > 0 else
                    " (no noise estimate: it may be seed noise; `noise: {repeats: 2}` measures it)" if noise is None
                    else "")
            names = f"{a.label} g={g_a:g}: {a.loss:.4f} -> {b.label} g={g_b:g}: {b.loss:.4f}"
            warnings.append(f"{method}: certified loss rises with G ({names}){size}; the larger G's search may not "
                            f"have converged: {warm_start_advice(a.certification, b.certification, warm_starts)}")
    return warnings


def warm_start_advice(source: str | None, target: str | None, warm_starts: Mapping[str, str | None]) -> str:
    """What to do about a tuned loss that rose from certification ``source``'s G to ``target``'s (one
    rule for ``search status``/``certify`` and the analysis's report). ``warm_starts``: each
    certification's ``warm_start``.

    A target that already starts from the source needs its runs looked at. Otherwise a new search
    from the source's certificate: a search that has started keeps the start its ledger recorded (an
    edited ``warm_start`` does not move it), so the advice is a certification with the target's fixed
    params under a new name; the runs the two share are reused, and both `status`'s G trend and the
    analysis merge the two as one configuration (:func:`search.tuned.configuration_loss`).

    >>> warm_start_advice("latent-g2", "latent-g4", {"latent-g4": "latent-g2"})
    "latent-g4 already starts from latent-g2's certificate: look at its runs (`megadocs search status`)"
    """
    if source is None or target is None:
        return "look at the searches' runs (`megadocs search status`)"
    if warm_starts.get(target) == source:
        return f"{target} already starts from {source}'s certificate: look at its runs (`megadocs search status`)"
    return (f"search again from {source}'s certificate: add a certification with {target}'s fixed params under a new "
            f"name and `warm_start: {source}` (editing {target}'s warm_start does not move a search that has started; "
            f"the runs the two share are reused: where both certify one point its loss is the mean of their distinct "
            f"runs there, where they certify two the lower one is used)")


def _fmt_noise(summary: CertificationSummary) -> str:
    """Seed noise sd and the certificate's ties within noise, e.g. "0.0102 (df 9), 1 tie"."""
    noise = summary.noise
    text = "-" if noise.repeats == 1 else (
        "?" if noise.sigma is None else f"{noise.sigma:.4f} (df {noise.df})")
    ties = len(summary.certificate.ties) if summary.certificate else 0
    return text + (f", {ties} tie{'s' if ties > 1 else ''}" if ties else "")


STOPPED_STATES = (StrategyState.DONE, StrategyState.STOPPED)
"""States whose table cell names the stop's reason (``done: converged``, ``stopped: budget``)."""


def format_table(summaries: Iterable[CertificationSummary]) -> str:
    """The human table of ``megadocs search status``."""
    from rich.console import Console
    from rich.table import Table

    summaries = list(summaries)
    extended = any(s.extensions for s in summaries)
    table = Table(title=None)
    for column in ("certification", "state", "best point", "loss", "runs f/r/x", "outstanding", "bounds hit",
                   *(("extended",) if extended else ()), "noise sd, ties", "compute"):
        table.add_column(column)
    for s in summaries:
        bounds = [b.label + (" (extended)" if b.extended else "") for b in s.bounds_hit]
        if s.certificate:
            bounds += [f"{b.axis} {b.side.value} (diverged)" for b in s.certificate.diverged]
        state = s.state.value + (f": {s.support.value}" if s.support is not None else "")
        state += f": {s.stop.reason.value}" if s.stop is not None and s.state in STOPPED_STATES else ""
        state += f" ({len(s.blocked_by)} failed)" if s.blocked_by else ""
        state += f" ({len(s.to_rerun)} to re-run)" if s.to_rerun else ""
        if s.runs.stopped:
            state += f" ({s.runs.stopped} stopped)"
        table.add_row(
            s.name, state, format_point(s.best.params if s.best else None),
            "-" if s.best is None else f"{s.best.loss:.4f}",
            f"{s.runs.finished}/{s.runs.running}/{s.runs.failed}",
            "unknown (tpe samples them)" if s.outstanding is None else str(len(s.outstanding)), ", ".join(bounds) or "-",
            *((format_extensions(s.extensions),) if extended else ()), _fmt_noise(s), f"{s.compute.wall_time_s:.0f}s",
        )
    buffer = io.StringIO()
    Console(file=buffer, width=180, color_system=None).print(table)
    return buffer.getvalue()


def format_extensions(extensions: Iterable[Extension]) -> str:
    """e.g. ``epochs above 64: 128, 256`` (the values appended beyond each end, in order)."""
    sides: dict[tuple[str, str], list[str]] = defaultdict(list)
    edges: dict[tuple[str, str], Any] = {}
    for extension in extensions:
        where = (extension.axis, "above" if extension.side is Side.UPPER else "below")
        edges.setdefault(where, extension.after)
        sides[where].append(f"{extension.value:g}")
    return "; ".join(f"{axis} {side} {edges[(axis, side)]:g}: {', '.join(values)}"
                     for (axis, side), values in sides.items()) or "-"


def format_stops(summaries: Iterable[CertificationSummary]) -> list[str]:
    """One line per baseline stopped before its run budget, per search its budget stopped and per
    warm start waiting for its source, e.g. ``a: done: converged after 23 of 50 runs (its last 200
    proposals were points already run)``, ``a: stopped: run budget spent (3 of 3 runs of this
    certification; re-run certify without --max-runs, or with a larger one, to go on)``
    (:meth:`Stop.describe`), ``b: seeding: waiting for a (stopped: run budget spent)`` (its
    ``reason``: :meth:`search.strategies.CertifySearch.decide`)."""
    return [f"{s.name}: {s.state.value}: {s.stop.describe() if s.stop is not None else s.reason}"
            for s in summaries if s.stop is not None or (s.state is CertState.SEEDING and s.reason)]


def format_reruns(summaries: Iterable[CertificationSummary]) -> list[str]:
    """One line per point to run again (:attr:`CertificationSummary.to_rerun`), e.g. ``a: to re-run
    {'lr': 0.01, 'wd': 0.8, 'epochs': 16}: data.store: ... not found``."""
    return [f"{s.name}: to re-run {params}: {reason}" for s in summaries for params, reason in s.to_rerun]


def format_bases(summaries: Iterable[CertificationSummary]) -> list[str]:
    """One line per certificate: what it rests on (:meth:`search.certificate.Basis.describe`), and
    the extensions its search made with the centre that asked for each."""
    lines = []
    for s in summaries:
        if s.certificate is not None:
            lines.append(f"{s.name}: certified at {format_point(s.certificate.point)}: "
                         f"{s.certificate.basis.describe()}")
        for extension in s.extensions:
            cause = (f"the best point {format_point(extension.centre)} sat on that edge" if extension.centre is not None
                     else f"its start, warm-started from {s.warm_start}'s certificate" if s.warm_start
                     else "its start")
            runs = "" if extension.runs is None else f" after {extension.runs} runs"
            lines.append(f"{s.name}: extended {extension.describe()}{runs}: {cause}")
    return lines
