"""The Optuna ledger: every run of a sweep, one study per certification, and the controller lock.

Layout (docs/architecture.md, "Search ledger"):

- Study ``{sweep}/{certification}`` per certification (``{sweep}/grid/{c}`` and
  ``{sweep}/tpe/{c}`` for the baseline strategies, ``{sweep}/ensemble/{name}`` for ensembles).
  Study user attributes: ``kind``, ``fixed``, ``grid`` (as listed), ``start`` (the resolved
  start, also for warm starts), ``warm_start`` (the certification's ``warm_start`` when that start
  was recorded: null for none; absent in ledgers written before the record), ``extensions`` (every extension value the search reached, in
  order, with the centre that asked for it: :class:`search.certificate.Extension`; absent in ledgers
  written before extensions, which read as none), ``stop`` (a baseline's stop before its run
  budget, or any search's by its run budget: :class:`search.strategies.Stop`; absent or null
  while it runs, and in ledgers written before the record, which read as no stop).
- One trial per (study, point). Trial params are the grid point, typed so that Optuna's own tools
  (optuna-dashboard) plot it numerically: numeric axes are Float/Int distributions over the
  axis's range, on a log scale for ``lr`` and ``wd`` (`axis_distribution`); the fixed ``method``
  and ``g`` are params too (a categorical over `METHODS`, an int on a log scale), so studies can
  be compared by algorithm and G. Trial user attributes are the ATTR_* constants below;
  ``metrics`` is the run's :class:`megadocs.formats.RunMetrics` as JSON, ``status`` a
  :class:`megadocs.formats.RunStatus`, ``provenance`` the run's ``RUN/provenance.json`` and
  ``job_place`` the host, kernel boot and pid namespace where a local job's id (a pid) can be asked
  (:class:`megadocs.procs.PidPlace`; absent for SLURM jobs and in older ledgers: asked here),
  ``failure`` the :class:`megadocs.formats.FailureKind` a failed run's job returned (``invalid``: the
  cause lies outside the run, and the next ``certify`` runs the point again; ``failed``: loss -inf,
  kept until ``--retry-failed``; absent for a job lost or killed after every retry, and for trials
  failed before the record: kept until ``--retry-failed``, as then: :func:`replay`). The
  trial's value is the loss (+inf for a diverged run); COMPLETE = evaluated,
  FAIL = failed (its ``reason`` says why), RUNNING = dispatched.
- Study ``{sweep}#controller`` exists while a controller holds the sweep; its attributes name
  the holder (host, kernel boot, pid namespace, pid, start time, since, heartbeat).

Runs never write to the ledger; only the controller does (jobs write their run directory), so
SQLite on a local disk is safe and a journal file works on NFS.

Opening the database is :mod:`search.storage`. Readers (``status``, ``analysis``) open the ledger
with ``create=False``: a ledger that does not
exist (a typo in ``out:``/``ledger:``/``name:``) is refused in one line and nothing is created.
A URL's password never appears in a message or attribute (:func:`megadocs.trust.redact_url`);
keep it out of the sweep file with libpq's ``PGPASSWORD`` or ``~/.pgpass`` (``PGPASSFILE``).

Public reading API (used by analysis; keep stable): :func:`read_runs`. A reader that needs
several studies reads the ledger once (:func:`read_snapshot`, a :class:`LedgerSnapshot`) and
passes it on: each study read again costs a full read of its trials.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

from megadocs import compat
from megadocs.errors import UserError
from megadocs.formats import METHODS, FailureKind, RunMetrics, RunStatus
from megadocs.procs import PidPlace, process_running, process_start
from megadocs.trust import redact_url
from search.certificate import Extension, Outcome
from search.grid import Grid, values_equal
from search.params import METHOD, G, RunParams, format_point
from search.storage import connect, ledger_missing
from search.strategies import Stop

if TYPE_CHECKING:  # only a type here: reading a ledger needs no sweep-file models at import
    from search.sweep import CertificationConfig, Sweep

log = logging.getLogger(__name__)

__all__ = [
    "StudyKind",
    "RunRecord",
    "Replayed",
    "replay",
    "Ledger",
    "ControllerBusy",
    "read_runs",
    "read_snapshot",
    "start_edit",
    "warm_start_of",
    "LedgerSnapshot",
    "undescribed_line",
    "study_name",
    "axis_distribution",
]

# Trial user attributes (docs/architecture.md). Values are JSON-serialisable.
ATTR_POINT = "point"
ATTR_FIXED = "fixed"
ATTR_RUN_ID = "run_id"
ATTR_RUN_DIR = "run_dir"
ATTR_JOB_ID = "job_id"
ATTR_JOB_FOLDER = "job_folder"
ATTR_JOB_PLACE = "job_place"  # {host, boot, pidns} of a job whose id is a pid there (local, debug); else null
ATTR_STATUS = "status"
ATTR_METRICS = "metrics"
ATTR_WALL_TIME = "wall_time_s"
ATTR_ATTEMPTS = "attempts"
ATTR_REASON = "reason"
ATTR_ADOPTED_FROM = "adopted_from"
ATTR_MEMBER = "member"
ATTR_PROVENANCE = "provenance"
ATTR_FAILURE = "failure"  # FailureKind of a FAILED trial whose job returned one; absent otherwise (and in older ledgers)

# Axes whose values span orders of magnitude: shown (and compared) on a log scale.
LOG_AXES = frozenset({"lr", "wd"})
# Fixed values exposed as params: the synthetic-data method (categorical) and G (search.params
# METHOD and G).
# The method categorical's choices are megadocs.formats.METHODS, in its order (Optuna's
# check_distribution_compatibility refuses other choices for a param a study already has).
G_PARAM_HIGH = 4096  # the distribution's range only has to hold every G; one range keeps studies comparable

# Study user attributes.
STUDY_KIND = "kind"
STUDY_FIXED = "fixed"
STUDY_GRID = "grid"
STUDY_START = "start"
STUDY_WARM_START = "warm_start"  # the warm_start a search began under, recorded with its start (absent in older ledgers)
STUDY_SUPERSEDED = "superseded"  # {trial number: reason}: finished trials whose identity changed
STUDY_EXTENSIONS = "extensions"  # [Extension.to_dict()]: extension values reached, in order
STUDY_STOP = "stop"  # Stop.to_dict() or null: a baseline stopped before its run budget, a search by it
# Controller lock study attribute.
LOCK_HOLDER = "holder"
LOCK_SUFFIX = "#controller"

HEARTBEAT_EVERY_S = 10.0
STALE_AFTER_S = 120.0
"""A holder on another host is dead when its heartbeat is older than this."""
EMPTY_HOLDER_WAIT_S = 5.0
"""How long a contender waits for a live creator to name itself in a lock it just created."""


class StudyKind(str, Enum):
    CERTIFY = "certify"
    GRID = "grid"
    TPE = "tpe"
    ENSEMBLE = "ensemble"
    TRANSFER = "transfer"


def study_name(sweep: str, task: str, kind: StudyKind = StudyKind.CERTIFY) -> str:
    """``{sweep}/{task}`` for certifications, ``{sweep}/{kind}/{task}`` otherwise."""
    return f"{sweep}/{task}" if kind is StudyKind.CERTIFY else f"{sweep}/{kind.value}/{task}"


@dataclass(kw_only=True)
class RunRecord:
    """One trial of a sweep's ledger: what :meth:`Ledger.runs` and :func:`read_runs` return.

    The typed record analysis reads (``analysis.frame.runs_frame``); ``to_dict`` is its plain
    JSON form. Build one by keyword; the fields a ledger always fills but a reader may not need
    (``sweep``, ``kind``, ``trial``, ``trial_id``, ids and paths) have defaults.

    Example:
        >>> from megadocs.formats import METHODS, RunMetrics, RunStatus
        >>> record = RunRecord(certification="stitched-g4", point={"lr": 3e-3}, status=RunStatus.COMPLETED,
        ...                    loss=3.4, metrics=RunMetrics(status=RunStatus.COMPLETED, val_loss=3.4))
        >>> record.outcome().loss, record.to_dict()["status"]
        (3.4, 'completed')
    """

    sweep: str = ""
    certification: str  # the study name without the "{sweep}/" prefix, e.g. "stitched-g4", "ensemble/real-ens"
    kind: StudyKind = StudyKind.CERTIFY
    trial: int = 0  # trial number within the study
    trial_id: int = 0
    point: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    run_dir: str | None = None
    status: RunStatus
    loss: float | None = None  # None unless evaluated; inf for a diverged run
    metrics: RunMetrics | None = None  # the run's metrics once it finished
    job_id: str | None = None
    job_folder: str | None = None
    job_place: PidPlace | None = None
    """Where ``job_id`` names a process (a local or in-process job: :attr:`megadocs.executors.Executor.place`);
    None for a SLURM job, and in ledgers written before the record (asked here, as then)."""
    wall_time_s: float | None = None
    attempts: int = 0
    reason: str | None = None
    failure: FailureKind | None = None
    """Why a FAILED run failed, as its job said (:class:`~megadocs.formats.FailureKind`); None for a
    job lost or killed after every retry, and in ledgers written before the record."""
    adopted_from: str | None = None
    member: int | None = None
    started: str | None = None
    completed: str | None = None
    provenance: dict[str, Any] | None = None  # the run's RUN/provenance.json (megadocs.provenance)

    def to_dict(self) -> dict[str, Any]:
        """Plain values: ``status`` as its string, ``metrics`` as its JSON object (or None)."""
        data = asdict(self)
        data["status"] = self.status.value
        data["kind"] = self.kind.value
        data["failure"] = None if self.failure is None else self.failure.value
        data["metrics"] = None if self.metrics is None else self.metrics.to_json()
        return data

    def params(self, fixed: Mapping[str, Any] | None = None) -> RunParams:
        """The trial's run params from its ``point`` and ``fixed`` attributes (the ledger keeps the
        seed among the fixed values: :meth:`RunParams.trial_fixed`).

        Args:
            fixed: the certification's fixed params now: the point and seed go with these instead
                of the recorded ones (the run this trial's point is today: what restore re-attaches
                and identity checks compare), and a ``seed`` they fix stays fixed.
        """
        recorded = RunParams.split({**self.point, **self.fixed}, axes=self.point, fixed=fixed or ())
        return recorded if fixed is None else replace(recorded, fixed=fixed)

    @property
    def to_rerun(self) -> bool:
        """A failed run whose cause lies outside it (:attr:`FailureKind.INVALID`: a user error, or an
        objective that returned no loss): it stopped the sweep and nothing was trained, so the next
        ``certify`` runs its point again, unlike a failure kept until ``--retry-failed``."""
        return self.status is RunStatus.FAILED and self.failure is FailureKind.INVALID

    def outcome(self) -> Outcome:
        """What the certifier knows from this trial (the one mapping, used by restore and status)."""
        if self.status.finished:
            return Outcome.finished(math.inf if self.loss is None else self.loss)
        if self.status is RunStatus.FAILED:
            return Outcome.failed(self.reason or "failed")
        return Outcome.running()


@dataclass(frozen=True)
class Replayed:
    """One ledger trial as evidence for a strategy: its params under the task's fixed params now
    (:meth:`RunRecord.params`), the outcome, and the record it came from."""

    params: RunParams
    outcome: Outcome
    record: RunRecord

    @property
    def point(self) -> dict[str, Any]:
        """The point the strategy knows the trial by: grid axes and the repeat's or member's ``seed``."""
        return self.params.strategy_point()


def replay(records: Iterable[RunRecord], *, fixed: Mapping[str, Any], grid: Grid | None = None,
           retry_failed: bool = False, warn_off_grid: bool = True) -> list[Replayed]:
    """Ledger records -> strategy evidence, in the records' (finishing) order.

    The one function the controller's restore and ``status`` both use, so they cannot disagree.
    A recorded ``seed`` the task's ``fixed`` lacks (a repeat's or ensemble member's) joins the
    point; the fixed params are the task's (:meth:`RunRecord.params`). Trials off ``grid`` (the
    sweep file changed) are skipped, with one warning line per study unless ``warn_off_grid`` is
    False (a command whose controller said it already). A failed trial whose cause lies outside
    its run (:attr:`RunRecord.to_rerun`) is skipped, so its point is not evaluated yet (the next
    ``certify`` runs it again); the other failed trials (loss -inf, a job lost after every retry,
    any trial failed before the ledger recorded why) are kept unless ``retry_failed``.
    """
    replayed, off_grid = [], []
    for record in records:
        if grid is not None and not grid.contains(record.point):
            off_grid.append(record)
            continue
        if record.status is RunStatus.SUPERSEDED:
            continue  # evidence about other data or code (see search.controller)
        if record.status is RunStatus.FAILED and (retry_failed or record.to_rerun):
            continue  # not evaluated yet: its point runs again
        replayed.append(Replayed(record.params(fixed), record.outcome(), record))
    if warn_off_grid:
        _warn_off_grid(off_grid)
    return replayed


def _warn_off_grid(records: list[RunRecord]) -> None:
    """One line for a study's trials at points the grid no longer lists (a value was removed from
    the sweep file), however many there are."""
    if not records:
        return
    points = "; ".join(" ".join(f"{k}={v}" for k, v in r.point.items()) for r in records[:3])
    more = f" and {len(records) - 3} more" if len(records) > 3 else ""
    log.warning("%s: %d trial(s) at points no longer on the grid are ignored (%s%s)", records[0].certification,
                len(records), points, more)


class ControllerBusy(UserError):
    """Another live controller holds the sweep."""


def axis_distribution(axis: str, values: list[Any]):
    """The Optuna distribution a grid axis is recorded with (see the module docstring).

    Numbers become an `IntDistribution`/`FloatDistribution` over ``[min, max]`` (log scale for
    LOG_AXES when every value is positive); anything else stays a `CategoricalDistribution`.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values or len(numbers) != len(values) or not all(math.isfinite(v) for v in numbers):
        return CategoricalDistribution(list(values))
    log_scale = axis in LOG_AXES and min(numbers) > 0
    if all(isinstance(v, int) for v in numbers):
        return IntDistribution(min(numbers), max(numbers), log=log_scale)
    return FloatDistribution(float(min(numbers)), float(max(numbers)), log=log_scale)


def _fixed_distribution(key: str, value: Any):
    """`method` and `g` as params; None for other fixed values."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if key == METHOD and value in METHODS:
        return CategoricalDistribution(list(METHODS))
    if key == G and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return IntDistribution(1, max(G_PARAM_HIGH, value), log=True)
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    """Attributes are stored as standard JSON: non-finite floats become null (the run's status
    says why; ledgers written before stored the strings "inf"/"nan", read as null too)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, RunMetrics):
        return value.to_json()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class Ledger:
    """The ledger of one sweep. Not thread-safe; one controller writes, anyone may read.

    ``url`` is the URL for display (password masked); ``create=False`` (readers) refuses a ledger
    that does not exist or holds nothing of this sweep (:class:`search.storage.LedgerMissing`).
    """

    def __init__(self, url: str, sweep: str, *, create: bool = True) -> None:
        self.url = redact_url(url)
        self.sweep = sweep
        self.storage = connect(url, create=create)
        self._study_ids: dict[str, int] = {}
        if not create and not self.study_names() and self.holder() is None:
            raise ledger_missing(f"{self.url} has no runs of sweep {sweep!r}")

    # -- studies ---------------------------------------------------------------------------

    def study_id(self, name: str, *, create: bool = False, attrs: Mapping[str, Any] | None = None) -> int | None:
        """The id of study ``name`` (full name), creating it (with ``attrs``) when ``create``."""
        import optuna

        if name in self._study_ids:
            return self._study_ids[name]
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            if not create:
                return None
            try:
                study_id = self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
            except optuna.exceptions.DuplicatedStudyError:
                study_id = self.storage.get_study_id_from_name(name)
            for key, value in (attrs or {}).items():
                self.storage.set_study_user_attr(study_id, key, _jsonable(value))
        self._study_ids[name] = study_id
        return study_id

    def study_attrs(self, name: str) -> dict[str, Any]:
        """Study ``name``'s user attributes ({} for a study not in the ledger)."""
        study_id = self.study_id(name)
        return {} if study_id is None else self.storage.get_study_user_attrs(study_id)

    def set_study_attr(self, name: str, key: str, value: Any) -> None:
        self.storage.set_study_user_attr(self.study_id(name, create=True), key, _jsonable(value))

    def record_start(self, name: str, point: Mapping[str, Any], warm_start: str | None) -> None:
        """Record the start study ``name``'s search begins from, once its warm start's source is
        certified (or, its warm start removed before then, when it begins from ``start:``), and that
        ``warm_start`` (:func:`start_edit` compares them with the sweep file). The warm start first:
        a start is never recorded without it."""
        self.set_study_attr(name, STUDY_WARM_START, warm_start)
        self.set_study_attr(name, STUDY_START, dict(point))

    def extensions(self, name: str) -> list[Extension]:
        """The extensions recorded for study ``name``, in order (none in older ledgers)."""
        return _extensions(self.study_attrs(name))

    def record_extension(self, name: str, extension: Extension) -> None:
        """Append ``extension`` to study ``name``'s record unless that value is recorded already
        (a restarted controller replays its evidence)."""
        recorded = self.extensions(name)
        if extension.step not in {e.step for e in recorded}:
            self.set_study_attr(name, STUDY_EXTENSIONS, [e.to_dict() for e in [*recorded, extension]])

    def stop(self, name: str) -> Stop | None:
        """The stop recorded for study ``name`` (None: none, also in older ledgers)."""
        return _stop(self.study_attrs(name))

    def record_stop(self, name: str, stop: Stop) -> None:
        """Record ``stop`` for study ``name`` unless that very stop is recorded already (a restarted
        controller finds its baselines done again); a later stop replaces an earlier one."""
        if self.stop(name) != stop:
            self.set_study_attr(name, STUDY_STOP, stop.to_dict())

    def clear_stop(self, name: str) -> None:
        """Forget study ``name``'s recorded stop (a search that goes on: a larger run budget, or
        none). Optuna cannot delete a study attribute: it becomes null, which reads as none."""
        if self.stop(name) is not None:
            self.set_study_attr(name, STUDY_STOP, None)

    def study_names(self) -> list[str]:
        """Names of this sweep's run studies (not the lock)."""
        return [s.study_name for s in self.storage.get_all_studies() if self._is_run_study(s.study_name)]

    def _is_run_study(self, name: str) -> bool:
        """Whether study ``name`` holds this sweep's runs (not the lock, not another sweep's)."""
        return name.startswith(f"{self.sweep}/") and LOCK_SUFFIX not in name

    # -- runs ------------------------------------------------------------------------------

    def runs(self, name: str) -> list[RunRecord]:
        """Trials of study ``name`` in finishing order (running trials last, by number).

        A trial that names no point is no run (a controller stopped between creating it and
        describing it, see :meth:`abandon_undescribed`) and is left out."""
        study_id = self.study_id(name)
        if study_id is None:
            return []
        return self._read(name, study_id, self.storage.get_study_user_attrs(study_id))[0]

    def _read(self, name: str, study_id: int, study_attrs: Mapping[str, Any]) -> tuple[list[RunRecord], list[int]]:
        """:meth:`runs` of a study whose id and attributes are known, and the ids of its
        undescribed trials (:meth:`abandon_undescribed`): one read of its trials (Optuna's own
        objects, not copied: nothing here changes them)."""
        from optuna.trial import TrialState

        kind = StudyKind(study_attrs.get(STUDY_KIND, StudyKind.CERTIFY.value))
        superseded = study_attrs.get(STUDY_SUPERSEDED, {})
        records, undescribed = [], []
        for trial in self.storage.get_all_trials(study_id, deepcopy=False):
            attrs = trial.user_attrs
            if ATTR_POINT not in attrs:
                if trial.state is TrialState.RUNNING:
                    undescribed.append(trial._trial_id)
                continue
            status = RunStatus(attrs.get(ATTR_STATUS, RunStatus.RUNNING.value))
            if trial.state is TrialState.RUNNING:
                # the state change is the commit (complete/fail write the attributes first): a
                # controller killed in between left a result that is not recorded yet
                status = RunStatus.RUNNING
            metrics = attrs.get(ATTR_METRICS)
            reason = attrs.get(ATTR_REASON)
            if str(trial.number) in superseded:
                status, reason = RunStatus.SUPERSEDED, superseded[str(trial.number)]
            loss = None
            if trial.state is TrialState.COMPLETE and trial.value is not None:
                loss = float(trial.value)
            records.append(
                RunRecord(
                    sweep=self.sweep,
                    certification=name[len(self.sweep) + 1 :],
                    kind=kind,
                    trial=trial.number,
                    trial_id=trial._trial_id,
                    point=dict(attrs.get(ATTR_POINT, {})),
                    fixed=dict(attrs.get(ATTR_FIXED, {})),
                    run_id=attrs.get(ATTR_RUN_ID),
                    run_dir=attrs.get(ATTR_RUN_DIR),
                    status=status,
                    loss=loss,
                    metrics=RunMetrics.parse(metrics, source=f"{name}#{trial.number}") if metrics else None,
                    job_id=attrs.get(ATTR_JOB_ID),
                    job_folder=attrs.get(ATTR_JOB_FOLDER),
                    job_place=_job_place(attrs.get(ATTR_JOB_PLACE)),
                    wall_time_s=attrs.get(ATTR_WALL_TIME),
                    attempts=int(attrs.get(ATTR_ATTEMPTS, 0)),
                    reason=reason,
                    failure=_failure(attrs.get(ATTR_FAILURE)),
                    adopted_from=attrs.get(ATTR_ADOPTED_FROM),
                    member=attrs.get(ATTR_MEMBER),
                    provenance=attrs.get(ATTR_PROVENANCE),
                    started=trial.datetime_start.isoformat() if trial.datetime_start else None,
                    completed=trial.datetime_complete.isoformat() if trial.datetime_complete else None,
                )
            )
        records.sort(key=lambda r: (r.completed is None, r.completed or "", r.trial))
        return records, undescribed

    def snapshot(self) -> LedgerSnapshot:
        """Every study of this sweep read once (their attributes, runs and the lock's holder), for
        a reader that looks at several studies (``search status``, a controller's restore,
        analysis): one listing of the studies, then one read of each study's trials."""
        with _gc_paused():
            return self._snapshot()

    def _snapshot(self) -> LedgerSnapshot:
        attrs: dict[str, dict[str, Any]] = {}
        records: dict[str, list[RunRecord]] = {}
        undescribed: dict[str, list[int]] = {}
        holder = None
        for study in self.storage.get_all_studies():  # carries each study's attributes
            name = study.study_name
            if name == self._lock_name:
                holder = _live_holder(study.user_attrs)
            elif self._is_run_study(name):
                self._study_ids[name] = study._study_id
                attrs[name] = dict(study.user_attrs)
                records[name], undescribed[name] = self._read(name, study._study_id, study.user_attrs)
        return LedgerSnapshot(self.sweep, attrs, records, holder, undescribed)

    def abandon_undescribed(self, undescribed: Iterable[int]) -> int:
        """Close (Optuna state FAIL) these RUNNING trials that name no point: a controller stopped
        between creating one and describing it (:meth:`new_run` writes its attributes one by
        one). Nothing ran for them; returns how many.

        Args:
            undescribed: their trial ids as a :meth:`snapshot` taken under the controller lock
                found them (:attr:`LedgerSnapshot.undescribed`).
        """
        from optuna.trial import TrialState

        undescribed = list(undescribed)
        for trial_id in undescribed:
            self.storage.set_trial_user_attr(trial_id, ATTR_REASON, "never described (its controller stopped "
                                             "while creating it); nothing ran")
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        return len(undescribed)

    def new_run(
        self,
        name: str,
        *,
        params: RunParams,
        run_id: str,
        run_dir: str,
        grid: Mapping[str, list[Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> int:
        """Create a RUNNING trial for a run about to be dispatched; returns its trial id. The
        trial's ``point`` attribute is the params' point, its ``fixed`` the fixed params with the
        seed (:meth:`RunParams.trial_fixed`; read back by :meth:`RunRecord.params`)."""
        point, fixed = params.point, params.trial_fixed()
        study_id = self.study_id(name, create=True)
        trial_id = self.storage.create_new_trial(study_id)
        for axis, value in point.items():
            if grid and axis in grid and value in grid[axis]:
                self._set_param(trial_id, axis, value, axis_distribution(axis, list(grid[axis])),
                                legacy=(study_id, list(grid[axis])))
        for key, value in fixed.items():
            distribution = _fixed_distribution(key, value)
            if distribution is not None and key not in point:
                self._set_param(trial_id, key, value, distribution)
        attrs = {  # written together: a point is only ever recorded with its fixed values
            ATTR_FIXED: dict(fixed),
            ATTR_POINT: dict(point),
            ATTR_RUN_ID: run_id,
            ATTR_RUN_DIR: run_dir,
            ATTR_STATUS: RunStatus.RUNNING.value,
            ATTR_ATTEMPTS: 0,
            **(extra or {}),
        }
        self.update(trial_id, **attrs)
        return trial_id

    def _set_param(self, trial_id: int, name: str, value: Any, distribution,
                   legacy: tuple[int, list[Any]] | None = None) -> None:  # fmt: skip
        """Record a param. A study begun by an older version (``legacy``: its id and the axis's
        values) recorded axes as categoricals over its grid as listed (the study's ``grid``
        attribute, else the values given); Optuna refuses a second kind for the same name, so those
        keep theirs, and an extension value outside them is left out of the params (readers use
        the ``point`` attribute; params serve Optuna's own tools). Declared in
        :data:`megadocs.compat.RECORDS` (``ledger-grid-params``)."""
        from optuna.distributions import CategoricalDistribution

        try:
            self.storage.set_trial_param(trial_id, name, distribution.to_internal_repr(value), distribution)
        except ValueError:  # "Cannot set different distribution kind to the same parameter name"
            if legacy is None or isinstance(distribution, CategoricalDistribution):
                raise
            study_id, values = legacy
            legacy_choices = list((self.storage.get_study_user_attrs(study_id).get(STUDY_GRID) or {}).get(name, values))
            if value not in legacy_choices:
                log.debug("trial %d: %s=%r is outside the study's categorical choices; not a param", trial_id, name,
                          value)
                return
            categorical = CategoricalDistribution(legacy_choices)
            self.storage.set_trial_param(trial_id, name, categorical.to_internal_repr(value), categorical)

    def update(self, trial_id: int, **attrs: Any) -> None:
        """Set trial user attributes (only while the trial is RUNNING), all in one write: a
        controller killed meanwhile leaves all of them or none (:func:`search.storage.set_trial_user_attrs`)."""
        self.storage.set_trial_user_attrs(trial_id, {key: _jsonable(value) for key, value in attrs.items()})

    def complete(self, trial_id: int, *, metrics: RunMetrics, **attrs: Any) -> None:
        """Record an evaluated run; its loss is ``metrics.objective`` (a diverged run: +inf).
        The attributes go first, the trial's state last: that is the commit (:meth:`runs`)."""
        from optuna.trial import TrialState

        self.update(trial_id, **{ATTR_STATUS: metrics.status.value, ATTR_METRICS: metrics,
                                 ATTR_WALL_TIME: metrics.wall_time_s, **attrs})
        self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [metrics.objective])

    def supersede(self, name: str, reasons: Mapping[int, str]) -> None:
        """Mark finished trials (by number) of study ``name`` as superseded: their run identity no
        longer matches the data or code. Optuna freezes a finished trial's attributes, so the
        marks live on the study; :meth:`runs` reports those trials with status ``superseded``."""
        study_id = self.study_id(name)
        marks = dict(self.storage.get_study_user_attrs(study_id).get(STUDY_SUPERSEDED, {}))
        marks.update({str(number): reason for number, reason in reasons.items()})
        self.storage.set_study_user_attr(study_id, STUDY_SUPERSEDED, marks)

    def fail(self, trial_id: int, reason: str, *, kind: FailureKind | None = None, **attrs: Any) -> None:
        """Record a failed run: ``kind`` as its job returned it (:attr:`RunRecord.failure`), None
        for an infrastructure failure after all retries."""
        from optuna.trial import TrialState

        failure = {} if kind is None else {ATTR_FAILURE: kind.value}
        self.update(trial_id, **{ATTR_STATUS: RunStatus.FAILED.value, ATTR_REASON: reason, **failure, **attrs})
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    # -- controller lock -------------------------------------------------------------------

    @contextmanager
    def controller_lock(self):
        """Hold the sweep for this process; refuse (ControllerBusy) while a live holder has it.

        The lock is a study whose creation is atomic in every Optuna storage. A holder is dead
        when its pid is gone (asked where its pid can be: this host, boot and pid namespace), or
        elsewhere when its heartbeat is older than STALE_AFTER_S (:func:`_holder_alive`).
        """
        token = self._acquire()
        try:
            yield self
        finally:
            self._release(token)

    @property
    def _lock_name(self) -> str:
        return f"{self.sweep}{LOCK_SUFFIX}"

    def _acquire(self) -> str:
        """Take the lock study. Creating it and naming its holder are two writes; so that a
        contender never mistakes a lock whose holder field is still empty for a dead one, the
        holder first announces itself in a study of its own (``{lock}#{token}``, no contention)
        and removes it once the lock names it. An empty lock is taken over only when no live
        announced candidate could be its creator."""
        import optuna

        token = uuid.uuid4().hex
        holder = {**PidPlace.current().to_json(), "pid": os.getpid(), "since": _now(), "heartbeat": time.time(),
                  "token": token, "started": process_start(os.getpid())}
        try:
            candidate = self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                                      f"{self._lock_name}#{token}")
        except optuna.exceptions.DuplicatedStudyError:  # a lost commit acknowledgement, retried: the
            candidate = self.storage.get_study_id_from_name(f"{self._lock_name}#{token}")  # name is ours alone
        try:
            self.storage.set_study_user_attr(candidate, LOCK_HOLDER, holder)
            for _ in range(5):
                try:
                    study_id = self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                                             self._lock_name)
                except optuna.exceptions.DuplicatedStudyError:
                    study_id = self._study_id_or_none(self._lock_name)
                    if study_id is None:  # released meanwhile
                        continue
                    current = self._wait_for_holder(study_id, token)
                    if current is not None and _holder_alive(current):
                        raise ControllerBusy(
                            f"sweep {self.sweep!r} is held by another controller: host {current['host']}, "
                            f"pid {current['pid']}, since {current['since']} (ledger {self.url}); stop it or wait"
                        ) from None
                    try:
                        self.storage.delete_study(study_id)  # the holder is dead: take over
                    except KeyError:
                        pass
                    continue
                self.storage.set_study_user_attr(study_id, LOCK_HOLDER, holder)
                self._lock_id, self._last_beat, self._holder = study_id, time.time(), holder
                return token
        finally:
            try:
                self.storage.delete_study(candidate)
            except KeyError:
                pass
        raise ControllerBusy(f"sweep {self.sweep!r}: could not take the controller lock (contended); retry")

    def _study_id_or_none(self, name: str) -> int | None:
        """Study ``name``'s id asked afresh (None: no such study): unlike :meth:`study_id`, never
        cached, since the lock study is deleted and created again."""
        try:
            return self.storage.get_study_id_from_name(name)
        except KeyError:
            return None

    def _wait_for_holder(self, study_id: int, token: str) -> dict[str, Any] | None:
        """The lock's holder; while its field is empty, a live announced candidate (other than
        ``token``) stands for it: its creator is between its two writes. None: nobody alive."""
        deadline = time.time() + EMPTY_HOLDER_WAIT_S
        while True:
            try:
                current = self.storage.get_study_user_attrs(study_id).get(LOCK_HOLDER)
            except KeyError:
                return None
            if current is not None:
                return current
            prefix = f"{self._lock_name}#"
            candidates = [s for s in self.storage.get_all_studies()
                          if s.study_name.startswith(prefix) and not s.study_name.endswith(token)]
            live = [s.user_attrs.get(LOCK_HOLDER) for s in candidates
                    if s.user_attrs.get(LOCK_HOLDER) and _holder_alive(s.user_attrs[LOCK_HOLDER])]
            if not live:
                for stale in candidates:  # announcements of controllers that died: clean up
                    try:
                        self.storage.delete_study(stale._study_id)
                    except KeyError:
                        pass
                return None
            if time.time() > deadline:
                return live[0]
            time.sleep(0.25)

    def heartbeat(self, force: bool = False) -> None:
        """Refresh the lock's heartbeat (cheap to call often: writes every HEARTBEAT_EVERY_S)."""
        if force or time.time() - self._last_beat >= HEARTBEAT_EVERY_S:
            self._holder["heartbeat"] = time.time()
            self.storage.set_study_user_attr(self._lock_id, LOCK_HOLDER, self._holder)
            self._last_beat = time.time()

    def _release(self, token: str) -> None:
        try:
            current = self.storage.get_study_user_attrs(self._lock_id).get(LOCK_HOLDER) or {}
            if current.get("token") == token:
                self.storage.delete_study(self._lock_id)
        except KeyError:
            pass

    def holder(self) -> dict[str, Any] | None:
        """The live controller holding the sweep (its lock's holder), or None."""
        study_id = self._study_id_or_none(self._lock_name)
        return None if study_id is None else _live_holder(self.storage.get_study_user_attrs(study_id))


@dataclass(frozen=True)
class LedgerSnapshot:
    """One sweep's ledger as read at one moment (:meth:`Ledger.snapshot`): each study's attributes
    and runs, by full study name, in the ledger's order, the live controller's lock holder (None
    when no live controller holds the sweep) and each study's undescribed trials (RUNNING trials
    that name no point: :meth:`Ledger.abandon_undescribed`). Readers share it so that one command
    reads each study once; the records are shared too: treat them as read-only.
    """

    sweep: str
    attrs: Mapping[str, Mapping[str, Any]]
    records: Mapping[str, list[RunRecord]]
    holder: dict[str, Any] | None = None
    undescribed: Mapping[str, list[int]] = field(default_factory=dict)

    def study_names(self) -> list[str]:
        """Names of the sweep's run studies, as :meth:`Ledger.study_names`."""
        return list(self.records)

    def runs(self, name: str) -> list[RunRecord]:
        """Study ``name``'s runs, as :meth:`Ledger.runs` ([] for a study not in the ledger)."""
        return list(self.records.get(name, ()))

    def study_attrs(self, name: str) -> dict[str, Any]:
        """As :meth:`Ledger.study_attrs`."""
        return dict(self.attrs.get(name, {}))

    def extensions(self, name: str) -> list[Extension]:
        """As :meth:`Ledger.extensions`."""
        return _extensions(self.attrs.get(name, {}))

    def stop(self, name: str) -> Stop | None:
        """As :meth:`Ledger.stop`."""
        return _stop(self.attrs.get(name, {}))

    def all_runs(self) -> list[RunRecord]:
        """Every run of the sweep, study by study: :func:`read_runs`."""
        return [record for records in self.records.values() for record in records]

    def undescribed_counts(self) -> dict[str, int]:
        """How many undescribed trials each study holds (studies with none left out)."""
        return {study: len(ids) for study, ids in self.undescribed.items() if ids}


def undescribed_line(counts: Mapping[str, int], *, controller_live: bool) -> str | None:
    """The one line a reader says about undescribed trials (``counts``:
    :meth:`LedgerSnapshot.undescribed_counts`; None when there are none). Such a trial was
    created but never described: its controller stopped in between, or its database connection
    was cut after the server committed the trial and before the controller heard (it then
    created the trial again). It is no run of any point: readers leave it out of every count and
    the next controller's start closes it (:meth:`Ledger.abandon_undescribed`)."""
    if not counts:
        return None
    studies = ", ".join(f"{study} ({n})" for study, n in counts.items())
    who = "the running controller is describing them, or an earlier one" if controller_live else "a controller"
    return (f"ledger: {sum(counts.values())} trial(s) name no point, in {studies}: {who} stopped or lost its "
            "database connection while creating them; no run, counted nowhere; the next `megadocs search certify` "
            "closes them")


def _failure(value: str | None) -> FailureKind | None:
    """A failed trial's recorded kind (None: none recorded: a job lost after every retry, or a
    ledger older than the record)."""
    return None if value is None else FailureKind(value)


def _job_place(data: Mapping[str, Any] | None) -> PidPlace | None:
    """A trial's recorded job place (None: a SLURM job, or a ledger older than the record)."""
    return None if data is None else PidPlace.from_json(data)


def _extensions(study_attrs: Mapping[str, Any]) -> list[Extension]:
    """A study's recorded extensions, in order (none in older ledgers)."""
    return [Extension.from_dict(item) for item in study_attrs.get(STUDY_EXTENSIONS, [])]


def _stop(study_attrs: Mapping[str, Any]) -> Stop | None:
    """A study's recorded stop (None: none recorded, as in ledgers written before the record)."""
    data = study_attrs.get(STUDY_STOP)
    return None if data is None else Stop.from_dict(data)


def _live_holder(lock_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The lock study's holder while that controller is alive; None otherwise."""
    current = lock_attrs.get(LOCK_HOLDER)
    return current if current and _holder_alive(current) else None


@contextmanager
def _gc_paused():
    """Python's cyclic garbage collector paused while a read builds objects that stay alive (a
    ledger's records): its passes over them free nothing and cost as much as the read itself
    (0.25 ms a trial, benchmarks/status_scale.py). Any cyclic garbage made meanwhile is
    collected by the next pass after the block."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _holder_alive(holder: Mapping[str, Any]) -> bool:
    """A holder whose pid can be asked here (this host, kernel boot and pid namespace:
    :class:`megadocs.procs.PidPlace`): its process still exists (same pid and start time, so a
    reused pid does not count; a controller busy with a long in-process run stays alive without
    heartbeats). Elsewhere (another host, machine of this name, container): it beat within
    STALE_AFTER_S. (Heartbeats every 10 s, stale after 2 min: a waiting controller should take
    over a dead one's sweep soon, and a beat is one small ledger write from the controller's own
    loop; a sharded step's record of runs beats a shared file under a lock, hence once a minute.)"""
    holder = compat.upgrade(compat.CONTROLLER_HOLDER, holder)
    if PidPlace.from_json(holder).askable():
        return process_running(int(holder["pid"]), holder["started"])
    return time.time() - float(holder["heartbeat"]) <= STALE_AFTER_S


def read_snapshot(sweep: Sweep) -> LedgerSnapshot:
    """A sweep's ledger read once (:meth:`Ledger.snapshot`), to pass to :func:`read_runs` and to
    ``search.status``'s readers so that together they read each study once.

    Raises:
        LedgerMissing: the sweep's ledger does not exist (nothing is created).
    """
    return Ledger(sweep.ledger_url, sweep.name, create=False).snapshot()


def read_runs(sweep: Sweep, *, snapshot: LedgerSnapshot | None = None) -> list[RunRecord]:
    """Every run of a sweep (all its studies), one :class:`RunRecord` per trial.

    Args:
        sweep: the loaded sweep (:func:`search.sweep.load_sweep` turns a file into one).
        snapshot: the ledger already read (:func:`read_snapshot`); read now when not given.

    Returns:
        records with ``sweep, certification, kind, trial, point, fixed, run_id, run_dir, status
        (a RunStatus), loss (None unless evaluated; inf if diverged), metrics (a RunMetrics or
        None), job_id, job_folder, job_place, wall_time_s, attempts, reason, failure (a FailureKind
        or None), adopted_from, member,
        started, completed`` (``to_dict()`` for JSON). ``certification`` is e.g. ``"stitched-g4"``, ``"grid/stitched-g4"``
        or ``"ensemble/real-ens"``; ensemble members carry their ``seed`` in ``fixed``.

    Example:
        >>> from search.sweep import load_sweep
        >>> runs = read_runs(load_sweep("search/examples/analytic.yaml"))  # doctest: +SKIP
    """
    return (snapshot if snapshot is not None else read_snapshot(sweep)).all_runs()


def warm_start_of(cert: CertificationConfig, kind: StudyKind) -> str | None:
    """The warm start a study of ``kind`` for ``cert`` begins under (:data:`STUDY_WARM_START`): the
    certification's for its certifier; none for a baseline (grid, tpe), which waits for no source
    and reads its runs from ``start:`` (:meth:`Sweep.start_for`) whatever ``warm_start:`` says."""
    return cert.warm_start if kind is StudyKind.CERTIFY else None


def start_edit(sweep: Sweep, cert: CertificationConfig, attrs: Mapping[str, Any], grid: Grid, *,
               kind: StudyKind) -> str | None:
    """One line when the sweep file asks ``cert`` for a start its search, already begun, does not use.

    A started search keeps the start its study (of ``kind``) recorded (``attrs``: :data:`STUDY_START`,
    and :data:`STUDY_WARM_START`), so an edited ``warm_start:`` (the one it began under differs,
    :func:`warm_start_of`: a baseline's is none), or, without a warm start, an edited ``start:``
    (:meth:`Sweep.start_for` differs from the start it resumes from on ``grid``,
    :meth:`Sweep.resumed_start`: a grid edit that snaps the record is no edit of the start) changes
    nothing; the line says what to do instead. None when nothing was recorded (a warm start whose
    source is not certified yet: an edit moves it) or nothing changed. A ledger older than the
    warm-start record is compared on the start alone, without a warm start.
    """
    recorded = attrs.get(STUDY_START)
    if recorded is None:
        return None
    advice = (f"a started search keeps its start: to search from the new one, add a certification with "
              f"{cert.name}'s fixed params under a new name")
    warm_start = warm_start_of(cert, kind)
    if STUDY_WARM_START in attrs and attrs[STUDY_WARM_START] != warm_start:
        began = attrs[STUDY_WARM_START]
        began = f"{began}, at {format_point(recorded)}" if began else f"none, at {format_point(recorded)}"
        return (f"{cert.name}: warm_start in the sweep file ({warm_start or 'none'}) differs from the one its "
                f"search began from ({began}); {advice}")
    if warm_start or attrs.get(STUDY_WARM_START):
        return None
    wanted, resumed = sweep.start_for(cert), sweep.resumed_start(cert, recorded, grid)
    if all(values_equal(wanted[axis], resumed[axis]) for axis in grid.names):
        return None
    return (f"{cert.name}: start in the sweep file ({format_point(wanted)}) differs from the one its search began "
            f"from ({format_point(recorded)}); {advice}")
