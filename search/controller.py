"""The sweep controller: the certification core driven through the Optuna ledger and submitit.

``run_sweep`` takes the controller lock, rebuilds every strategy from the ledger (finished,
failed and in-flight runs), re-attaches to jobs still running, and drives the strategies to the
end with :class:`LedgerEvaluator`. Killing it at any moment loses nothing: every dispatched run
is a RUNNING trial carrying its job id and submitit folder before the controller waits on it,
and every finished job's result sits in its run directory and submitit folder until adopted.

Stopping it on purpose (Ctrl-C, or a job's user error that stops the sweep) hands the runs in
flight to the executor (``Executor.on_interrupt``): local runs are stopped (a train run saves a
checkpoint first) and their trials lose their job, so the next ``certify`` submits them again
(resuming from the checkpoint, without spending a retry); SLURM jobs keep running and are
re-attached. Either way no more than ``max_parallel`` runs are ever in flight (local jobs on a machine
with GPUs: one per GPU, ``Executor.slots``, said in one line where that is fewer). The run whose
error stopped the sweep is a failed trial with its kind (``invalid``): the next ``certify`` runs
its point again, in a new trial (:func:`search.ledger.replay`), in the same run directory while its
identity is unchanged (its job refused before training: nothing there names another run).

Only a job this controller submitted stops the sweep. The other jobs in flight while the cause was
there (SLURM jobs keep running after a stop) meet it too; the next controller re-attaches them, and
an ``invalid`` result of a job an earlier controller submitted (:attr:`_Run.reattached`) may be older
than the user's fix: its run is submitted again at once, in the same trial, without spending a
retry, with a warning and the trial's reason saying why (:meth:`LedgerEvaluator._run_again`). If the
cause is still there, that new job meets it again and stops the sweep with the usual line.

A local job can be re-attached only where its pid can be asked (the trial's job place: this host,
kernel boot and pid namespace, :class:`megadocs.procs.PidPlace`). A controller started on another
host cannot tell whether it still runs, and the run directory's lock (``flock``) need not hold
between hosts (a shared file system may keep locks per client: Lustre without ``-o flock``, BeeGFS,
NFS with ``local_lock``), so a second job there could train into the same folder: it refuses in one
line before anything runs (:class:`JobsElsewhere`: run it on that host, which re-attaches them, or
with ``--jobs-ended-on HOST`` once that host is down and its jobs with it). One started on this
host in another pid namespace (a container: one kernel, whose lock holds) or under another kernel
boot (a reboot ended the jobs, or another machine of this name) submits the run again, saying so (a
job still running holds the run directory's lock, so the new one waits for it and returns its result).

Deduplication: a run's identity is the hash of its full config (``objective.identity``). A
point whose run already finished anywhere in the sweep (another certification, a baseline
strategy, an earlier controller) is adopted without running; one in flight is shared. A trial whose
identity is no longer its point's (the data or the objective's code changed) is superseded on
restore, and its job cancelled if it still runs (:meth:`LedgerEvaluator._current_records`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megadocs.errors import UserError
from megadocs.executors import Executor, JobState, check_executor, make_executor
from megadocs.formats import RunDir, RunMetrics, RunStatus
from megadocs.procs import PidPlace
from megadocs.provenance import read as read_provenance
from megadocs.trust import UntrustedPath, require_inside
from search.baselines import BASELINES, baseline_strategy
from search.certificate import Outcome, RunState
from search.grid import Grid
from search.ledger import (
    ATTR_ADOPTED_FROM,
    ATTR_ATTEMPTS,
    ATTR_JOB_FOLDER,
    ATTR_JOB_ID,
    ATTR_JOB_PLACE,
    ATTR_MEMBER,
    ATTR_PROVENANCE,
    ATTR_REASON,
    ATTR_RUN_DIR,
    ATTR_RUN_ID,
    STUDY_FIXED,
    STUDY_GRID,
    STUDY_KIND,
    STUDY_START,
    STUDY_WARM_START,
    Ledger,
    Replayed,
    RunRecord,
    StudyKind,
    replay,
    start_edit,
    study_name,
    warm_start_of,
)
from search.objective import (
    FailureKind,
    JobFailure,
    MinusInfLoss,
    ObjectiveReturnError,
    make_objective,
    normalise_metrics,
)
from search.params import RunParams
from search.strategies import (
    CertifySearch,
    Evaluator,
    FixedPoints,
    Request,
    Result,
    Stop,
    StopReason,
    Strategy,
    drive,
    reported_state,
)
from search.sweep import Sweep

__all__ = ["run_sweep", "LedgerEvaluator", "TaskInfo", "build_strategies", "budget_hint", "STRATEGIES",
           "SweepInterrupted", "SweepStopped", "JobsElsewhere"]

log = logging.getLogger(__name__)

STRATEGIES = ("certify", *BASELINES)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the controller: how many local runs it stopped, which jobs keep running."""

    def __init__(self, stopped: int, running: Sequence[str], kind: str, *, again: bool = False) -> None:
        super().__init__(f"{stopped} run(s) stopped, {len(running)} left running")
        self.stopped, self.running, self.kind, self.again = stopped, list(running), kind, again

    def message(self, command: str) -> str:
        """The one line ``megadocs search certify`` prints (exit status 130); ``command``: the
        certify command that goes on (:func:`search.cli.certify_command`)."""
        rerun = f"`{command}`"
        if self.again:
            return (f"interrupted again: local runs may still be stopping; {rerun} re-attaches any that still run "
                    "and resumes the others")
        parts = []
        if self.stopped:
            parts.append(f"{self.stopped} run(s) stopped (train runs saved a checkpoint); {rerun} resumes them")
        if self.running:
            stop = f" (scancel {' '.join(self.running)} to stop them)" if self.kind == "slurm" else ""
            parts.append(f"{len(self.running)} {self.kind} job(s) keep running{stop}; {rerun} re-attaches them")
        return "interrupted: " + ("; ".join(parts) if parts else f"nothing was running; {rerun} continues")


class SweepStopped(UserError):
    """A job's deterministic error whose cause lies outside the run (a user error, an objective
    that returned no loss: :attr:`megadocs.formats.FailureKind.INVALID`) stopped the sweep. Its
    trial is failed with that kind, so the next ``certify`` runs the point again once the cause is
    fixed (no ``--retry-failed``: :func:`search.ledger.replay`)."""

    def __init__(self, line: str) -> None:
        super().__init__(f"{line}; fix it and re-run certify")
        self.line = line

    def message(self, command: str) -> str:
        """The one line ``megadocs search certify`` prints (exit status 2); ``command``: the
        certify command to re-run (:func:`search.cli.certify_command`)."""
        return f"{self.line}; fix it and re-run `{command}` (it runs this point again)"


class JobsElsewhere(UserError):
    """Local jobs of the sweep in flight on another host (:attr:`hosts`: host -> job ids), whose pids
    cannot be asked from here: the controller refuses before anything runs, rather than submit their
    runs a second time (see the module docstring)."""

    def __init__(self, hosts: Mapping[str, Sequence[str]]) -> None:
        self.hosts = {host: list(ids) for host, ids in hosts.items()}
        super().__init__(self.message("megadocs search certify SWEEP"))

    def message(self, command: str) -> str:
        """The one line ``megadocs search certify`` prints (exit status 2); ``command``: the
        certify command (:func:`search.cli.certify_command`).

        >>> line = JobsElsewhere({"node7": ["41", "43"]}).message("megadocs search certify s.yaml")
        >>> line.split(" (")[0], line.endswith("`megadocs search certify s.yaml --jobs-ended-on node7` submits their runs again here")
        ('local job(s) 41, 43 of this sweep run on host node7', True)
        """
        hosts = ", ".join(self.hosts)
        jobs = "; ".join(f"local job(s) {', '.join(ids)} of this sweep run on host {host}" for host, ids in self.hosts.items())
        ended = " ".join(f"--jobs-ended-on {host}" for host in self.hosts)
        return (f"{jobs} (a local job is asked only on its host): run `{command}` on {hosts}, which re-attaches them, "
                "or use a SLURM executor to run a sweep's controller from any host; if that host is down and its jobs "
                f"ended with it, `{command} {ended}` submits their runs again here")


@dataclass
class TaskInfo:
    """How one strategy's points become runs and ledger trials."""

    study: str
    fixed: dict[str, Any]
    axes: tuple[str, ...]
    grid: dict[str, list[Any]] | None
    seed_offset: int | None = None  # ensembles: member index = seed - seed_offset
    where: str | None = None
    """How a refusal of its run's config names it (``Sweep.transfer_label``, ``Sweep.ensemble_label``)."""

    def params(self, point: Mapping[str, Any]) -> RunParams:
        """A strategy's point as a run of this task: the axes' values, the seed, the task's fixed
        params (and, after them, any other key of the point)."""
        return RunParams.from_strategy_point(point, self.axes, self.fixed)


@dataclass
class _Subscriber:
    task: str
    point: dict[str, Any]
    trial_id: int


@dataclass(frozen=True)
class _Finished:
    """A finished run any trial of the sweep may adopt instead of running it again."""

    metrics: RunMetrics
    source: str  # the trial that ran it, ``certification#trial`` (the task, for one this controller ran)
    job_id: str | None


@dataclass
class _Run:
    run_id: str
    params: dict[str, Any]
    run_dir: Path
    job_id: str | None = None
    attempts: int = 0
    job_folder: str | None = None  # where an earlier controller's job lives (re-attach)
    job_place: PidPlace | None = None  # where its job id is a pid (Executor.place)
    reattached: bool = False  # its job was submitted by an earlier controller (until this one submits it)
    subscribers: list[_Subscriber] = field(default_factory=list)


class LedgerEvaluator(Evaluator):
    """Runs points as submitit jobs and records every step in the ledger (see module docstring)."""

    def __init__(self, sweep: Sweep, ledger: Ledger, executor: Executor, objective: Any,
                 tasks: Mapping[str, TaskInfo], *, retry_failed: bool = False, progress: Any = None,
                 jobs_ended_on: Sequence[str] = ()) -> None:
        self.sweep = sweep
        self.ledger = ledger
        self.executor = executor
        self.objective = objective
        self.tasks = dict(tasks)
        self.max_parallel = executor.slots(sweep.executor.max_parallel)  # local jobs: one per GPU, where there are
        if self.max_parallel < sweep.executor.max_parallel:
            log.warning("executor.max_parallel %d: local jobs run one per GPU, and this machine has %s for them: at "
                        "most %d run at once", sweep.executor.max_parallel, executor.describe_gpus(), self.max_parallel)
        self.max_retries = sweep.executor.max_retries
        self.poll_s = sweep.executor.poll_s
        self.retry_failed = retry_failed
        self.progress = progress
        self.jobs_ended_on = frozenset(jobs_ended_on)  # hosts whose local jobs the user says have ended
        self.runs_dir = sweep.out_dir / "runs"
        self._inflight: dict[str, _Run] = {}
        self._done: dict[str, _Finished] = {}  # by run_id
        self._results, self._trained = 0, set()  # finished results given to strategies, and their runs
        self._ready: list[Result] = []

    # -- restore ---------------------------------------------------------------------------

    def restore(self, strategies: Sequence[Strategy]) -> None:
        """Feed the ledger's evidence to the strategies and re-attach in-flight runs. Reads each
        study once (:meth:`Ledger.snapshot`): the finished runs of every study for adoption, and
        each strategy's own study as its evidence, then the stop recorded for it (a baseline
        stopped before its budget: :meth:`Strategy.restore_stop`)."""
        snapshot = self.ledger.snapshot()
        for name in snapshot.study_names():
            for record in snapshot.runs(name):
                if record.status.finished and record.run_id:
                    metrics = record.metrics or RunMetrics(  # a ledger record without metrics
                        status=record.status, val_loss=record.loss, wall_time_s=record.wall_time_s)
                    self._done.setdefault(record.run_id, _Finished(metrics, f"{record.certification}#{record.trial}",
                                                                   record.job_id))
        current = {strategy.name: self._current_records(self.tasks[strategy.name],
                                                        snapshot.runs(self.tasks[strategy.name].study),
                                                        snapshot.undescribed.get(self.tasks[strategy.name].study, []))
                   for strategy in strategies}
        self._refuse_jobs_elsewhere([record for records in current.values() for record in records])
        orphans = []
        for strategy in strategies:
            info = self.tasks[strategy.name]
            grid = Grid.from_mapping(info.grid) if info.grid is not None else None
            for item in replay(current[strategy.name], fixed=info.fixed, grid=grid, retry_failed=self.retry_failed):
                strategy.record(item.point, item.outcome)
                if item.record.status.finished and item.record.run_id:
                    self._count_result(item.record.run_id)
                if item.record.status is RunStatus.RUNNING and (orphan := self._reattach(strategy.name, info, item)):
                    orphans.append(orphan)
            if (stop := snapshot.stop(info.study)) is not None:  # a converged TPE stays converged
                strategy.restore_stop(stop)
                if stop.reason is StopReason.BUDGET and _stop_to_record(strategy) != stop:
                    # it goes on (a larger budget, or none) or ended otherwise: status must not say
                    # "stopped" while it runs; the same budget keeps the record, a smaller one replaces it
                    self.ledger.clear_stop(info.study)
        if orphans:
            self._dispatch(orphans)

    def _refuse_jobs_elsewhere(self, records: Sequence[RunRecord]) -> None:
        """Refuse (:class:`JobsElsewhere`) while a running trial's local job (a process of its own,
        in a submitit folder) was started on another host than this one, unless the user said that
        host's jobs have ended (``jobs_ended_on``): checked before anything is re-attached or
        submitted. An in-process (debug) job, which has no folder, ended with its controller."""
        here = PidPlace.current().host
        elsewhere: dict[str, list[str]] = {}
        for record in records:
            place = record.job_place
            if (record.status is RunStatus.RUNNING and record.job_id and record.job_folder and place is not None
                    and place.host != here and place.host not in self.jobs_ended_on):
                elsewhere.setdefault(place.host, []).append(record.job_id)
        if elsewhere:
            raise JobsElsewhere(elsewhere)

    def _reattach(self, task: str, info: TaskInfo, item: Replayed) -> _Run | None:
        """Take up a run the ledger calls running (``item``, from :func:`search.ledger.replay`): its
        trial subscribes to the run in flight (one per run identity), whose job is polled from now
        on. Fills in what a controller killed mid-description left out (run id and directory, an
        ensemble member's index). Returns the run when it has no job to poll (killed between trial
        creation and submission: to submit now), else None."""
        record, params = item.record, item.params.merged()
        if record.run_id is None or record.run_dir is None:  # killed while describing the trial
            record.run_id = self.objective.identity(params, info.where)
            record.run_dir = str(self.runs_dir / record.run_id)
            self.ledger.update(record.trial_id, **{ATTR_RUN_ID: record.run_id, ATTR_RUN_DIR: record.run_dir})
        if info.seed_offset is not None and record.member is None:  # killed before its last attribute
            record.member = item.params.repeat - info.seed_offset
            self.ledger.update(record.trial_id, **{ATTR_MEMBER: record.member})
        run = self._inflight.get(record.run_id)
        orphan = None
        if run is None:
            # jobs write into it: only a folder inside the sweep's own runs/ (trust model)
            run_dir = require_inside(record.run_dir, self.runs_dir,
                                     what=f"{info.study} trial {record.trial}: run_dir in the ledger")
            run = _Run(record.run_id, params, run_dir, record.job_id, record.attempts, record.job_folder,
                       record.job_place, reattached=True)
            self._inflight[record.run_id] = run
            if not PidPlace.asked_here(run.job_place):
                self._resubmit_elsewhere(run, info, record)
            orphan = run if run.job_id is None else None
        run.subscribers.append(_Subscriber(task, item.point, record.trial_id))
        return orphan

    def _resubmit_elsewhere(self, run: _Run, info: TaskInfo, record: RunRecord) -> None:
        """A run whose job is a pid where this controller cannot ask (a container of this host, this
        host before a reboot or another machine of its name, or a host the user said its jobs ended
        on: :meth:`_refuse_jobs_elsewhere`): drop the job (its pid names another process here, or
        none: never polled nor signalled) to submit the run again, and say why, in the log and the
        trial's reason."""
        if run.job_place.host in self.jobs_ended_on:
            reason = (f"its local job {run.job_id} was started {run.job_place.where()}, whose jobs ended "
                      f"(--jobs-ended-on {run.job_place.host}); submitted again here")
        else:
            reason = (f"its local job {run.job_id} was started {run.job_place.where()} (not checked from here); "
                      "submitted again here: a job still running there holds the run directory's lock, and the "
                      "new job waits for it and returns its result")
        log.warning("%s trial %d: %s", info.study, record.trial, reason)
        self.ledger.update(record.trial_id, **{ATTR_REASON: reason})
        run.job_id = run.job_folder = run.job_place = None

    def _current_records(self, info: TaskInfo, records: list[RunRecord], undescribed: list[int]) -> list[RunRecord]:
        """The study's ``records``, after superseding runs whose identity has changed.

        A run's identity covers its data and the objective's code: a trial whose run_id is not
        today's identity of its point was computed (or is being computed) on something else. It
        is marked superseded in the ledger (never used again, kept for the record) and its point
        runs anew into a new run directory. A run still in flight under its old identity (the
        data or code changed while its job ran, say under a killed or stopped controller) is
        superseded too, its trial closed and its job cancelled (:meth:`Executor.cancel`): its
        result would be about the old data or code, or its job refuses the new ones. The trials
        a stopped controller left undescribed (``undescribed``, none of them in ``records``: a
        trial that names no point is no run) are closed here.
        """
        if self.ledger.abandon_undescribed(undescribed):
            log.warning("%s: closed trial(s) a stopped controller left undescribed (nothing ran for them)", info.study)
        stale: dict[int, str] = {}
        moving: list[RunRecord] = []  # in flight under an identity its point no longer has
        for record in records:
            in_flight = record.status is RunStatus.RUNNING
            if not record.run_id or not (record.status.finished or in_flight):
                continue
            current = self.objective.identity(record.params(info.fixed).merged(), info.where)
            if current != record.run_id:
                stale[record.trial] = (f"identity {record.run_id} is now {current} (fixed params, train config, data "
                                       "or objective code changed)")
                if in_flight:
                    moving.append(record)
        if not stale:
            return records
        self.ledger.supersede(info.study, stale)  # first: a controller killed next leaves no run to re-attach
        for record in moving:
            self.ledger.fail(record.trial_id, stale[record.trial])  # closed; its mark says superseded
        self.executor.cancel([(record.job_id, record.job_folder) for record in moving  # jobs it may signal
                              if record.job_id and PidPlace.asked_here(record.job_place)
                              and self._trusted(record.job_id, record.job_folder)])
        log.warning("%s: %d run(s) were made with fixed params, a train config, data or objective code that has "
                    "changed since%s; marked superseded, their points run again", info.study, len(stale),
                    f" ({len(moving)} still running: their jobs are cancelled)" if moving else "")
        return self.ledger.runs(info.study)

    # -- Evaluator -------------------------------------------------------------------------

    def free_slots(self) -> int:
        return self.max_parallel - len(self._inflight)

    def submit(self, requests: Sequence[Request]) -> None:
        new = []
        for request in requests:
            info = self.tasks[request.task]
            asked = info.params(request.point)
            params = asked.merged()
            run_id = self.objective.identity(params, info.where)  # the start's check, at the point asked for
            run_dir = self.runs_dir / run_id
            extra = {}
            if info.seed_offset is not None:
                extra[ATTR_MEMBER] = asked.repeat - info.seed_offset
            trial_id = self.ledger.new_run(info.study, params=asked, run_id=run_id, run_dir=str(run_dir),
                                           grid=info.grid, extra=extra)
            self.objective.link(self.sweep.out_dir, request.task, request.point, run_dir)
            subscriber = _Subscriber(request.task, request.point, trial_id)
            if run_id in self._done:
                done = self._done[run_id]
                self.ledger.complete(trial_id, metrics=done.metrics,
                                     **{ATTR_ADOPTED_FROM: done.source, ATTR_JOB_ID: done.job_id})
                self._ready.append(Result(request.task, request.point, Outcome.finished(done.metrics.objective)))
                self._count_result(run_id)
            elif run_id in self._inflight:
                run = self._inflight[run_id]
                run.subscribers.append(subscriber)
                self.ledger.update(trial_id, **self._job_attrs(run))
            else:
                run = _Run(run_id, params, run_dir, subscribers=[subscriber])
                self._inflight[run_id] = run
                new.append(run)
        if new:
            self._dispatch(new)

    def wait(self) -> list[Result]:
        while not self._ready:
            unsubmitted = [run for run in self._inflight.values() if run.job_id is None]
            if unsubmitted:
                self._dispatch(unsubmitted)
            for run in list(self._inflight.values()):
                if run.job_id is not None:
                    self._check(run)
            if not self._ready:
                self.ledger.heartbeat()
                if self.progress:
                    self.progress.refresh_running(len(self._inflight))
                time.sleep(self.poll_s)
        ready, self._ready = self._ready, []
        return ready

    def tick(self, strategies: Mapping[str, Strategy]) -> None:
        self.ledger.heartbeat()
        if self.progress:
            self.progress.update(strategies, len(self._inflight), reused=self.reused())

    def reused(self) -> int:
        """Finished results that trained nothing: they share a run another result counts (adopted
        from another certification, or one run in flight that several asked for)."""
        return self._results - len(self._trained)

    def _count_result(self, run_id: str) -> None:
        self._results += 1
        self._trained.add(run_id)

    def finished(self, strategy: Strategy) -> None:
        """Record a baseline's stop before its budget (:meth:`Strategy.stop`), or any search's by
        its run budget (:meth:`Strategy.budget_stop`), in its study, at once: a controller killed
        later, ``search status`` and the next controller all read it."""
        if (stop := _stop_to_record(strategy)) is not None:
            self.ledger.record_stop(self.tasks[strategy.name].study, stop)

    def stop(self, why: str) -> tuple[int, list[str]]:
        """The controller ends before the sweep does (``why``): hand the runs in flight to the
        executor (:meth:`Executor.on_interrupt`). A stopped run's trials lose their job (and the
        attempt it used), so the next controller submits them again without counting a retry.

        Returns:
            How many runs were stopped, and the job ids that keep running (re-attached next time).
        """
        runs = [run for run in self._inflight.values() if run.job_id and self._trusted(run.job_id, run.job_folder)]
        if not runs:
            return 0, []
        if self.executor.stops_on_interrupt:
            print(f"{why}: stopping {len(runs)} local run(s) (a train run saves a checkpoint first; Ctrl-C again "
                  "to stop waiting)", file=sys.stderr, flush=True)
        stopped = set(self.executor.on_interrupt([(run.job_id, run.job_folder) for run in runs],
                                                 grace_s=self.objective.stop_grace_s))
        for run in runs:
            if run.job_id in stopped:
                reason = f"{why} during attempt {run.attempts}"
                for subscriber in run.subscribers:
                    self.ledger.update(subscriber.trial_id, **{ATTR_JOB_ID: None, ATTR_JOB_FOLDER: None,
                                                               ATTR_JOB_PLACE: None, ATTR_ATTEMPTS: run.attempts - 1,
                                                               ATTR_REASON: reason})
        return len(stopped), [run.job_id for run in runs if run.job_id not in stopped]

    # -- internals -------------------------------------------------------------------------

    def _trusted(self, job_id: str, folder: str | None) -> bool:
        """Whether a job is one this controller may signal (its folder is the sweep's own)."""
        try:
            self.executor.alive(job_id, folder)
        except UntrustedPath:
            return False
        return True

    def _job_attrs(self, run: _Run) -> dict[str, Any]:
        place = None if run.job_place is None else run.job_place.to_json()
        return {ATTR_JOB_ID: run.job_id, ATTR_JOB_FOLDER: run.job_folder, ATTR_JOB_PLACE: place,
                ATTR_ATTEMPTS: run.attempts}

    def _dispatch(self, runs: Sequence[_Run]) -> None:
        """Submit ``runs`` as one batch. A submission the system refuses (OSError: the jobs
        folder's file system full, say) leaves them waiting for :meth:`wait` to submit again: the
        sweep goes on. (Were sbatch to have taken a job before the error, the second job would
        find the run's lock and result and return it without computing it again.)"""
        try:
            # a run shared by several certifications is grouped under the first that asked for it
            job_ids = self.executor.submit([
                self.objective.task(run.params, run.run_dir, run.run_id,
                                    group=run.subscribers[0].task if run.subscribers else None)
                for run in runs
            ])
        except OSError as exc:
            for run in runs:
                run.job_id = None
            log.warning("cannot submit %d run(s) now (%s); trying again in %.0f s", len(runs), exc, self.poll_s)
            return
        for run, job_id in zip(runs, job_ids):
            run.job_id = job_id
            run.job_folder = str(self.executor.folder) if self.executor.folder else None
            run.job_place = self.executor.place
            run.reattached = False
            run.attempts += 1
            for subscriber in run.subscribers:
                self.ledger.update(subscriber.trial_id, **self._job_attrs(run))

    def _check(self, run: _Run) -> None:
        poll = self.executor.poll(run.job_id, run.job_folder)
        if poll.state is JobState.RUNNING:
            return
        if poll.state is JobState.DONE:
            self._resolve(run, poll.value)
            return
        if poll.state is JobState.FAILED and (refusal := JobFailure.of(poll.value)) is not None:
            # a rank refused the run alone and ended the job (RunTask): its refusal, never retried
            self._resolve(run, refusal)
            return
        run_dir = RunDir(run.run_dir)
        if run_dir.is_done():  # the job was lost after the run completed: adopt its result
            self._resolve(run, run_dir.read_metrics())
            return
        reason = f"attempt {run.attempts} ({poll.state.value}): {poll.reason}"
        for subscriber in run.subscribers:
            self.ledger.update(subscriber.trial_id, **{ATTR_REASON: reason})
        if run.attempts <= self.max_retries:
            log.warning("run %s %s; retrying", run.run_id, reason)
            self._dispatch([run])
            return
        self._fail(run, reason)

    def _resolve(self, run: _Run, value: Any) -> None:
        """A job's return value: metrics (finish), a loss of -inf (a failed run, not retried: the
        objective is deterministic), or something that is no loss at all, or a user error (stop the
        sweep: :class:`SweepStopped`). Either failure is recorded with its kind, except a user error
        met by a job an earlier controller submitted: that run is submitted again
        (:meth:`_run_again`), and only a job this controller submitted stops the sweep."""
        failure = JobFailure.of(value)
        if failure is None:  # metrics, or a value of an objective not normalised in its job
            try:
                metrics = normalise_metrics(value)
            except ObjectiveReturnError as exc:
                failure = JobFailure(FailureKind.INVALID, str(exc))
            except MinusInfLoss as exc:
                failure = JobFailure(FailureKind.FAILED, str(exc))
            else:
                self._finish(run, metrics)
                return
        if failure.kind is FailureKind.INVALID and run.reattached:
            self._run_again(run, failure.reason)
            return
        self._fail(run, failure.reason, failure.kind)
        if failure.kind is FailureKind.INVALID:
            raise SweepStopped(f"objective {self.sweep.objective or 'train'}: {failure.reason} for params {run.params}")

    def _run_again(self, run: _Run, line: str) -> None:
        """A re-attached job (an earlier controller submitted it) met a user error (``line``): it
        may have met it while the cause was there, before the user fixed it and re-ran certify (every
        job in flight then meets it). Submit the run again at once, without spending a retry, and say
        why in the log and its trials' reason: if the cause persists, the new job (this controller's)
        meets it again and stops the sweep; if it was fixed, the point just runs."""
        reason = (f"its job {run.job_id}, submitted by an earlier certify, met a user error: {line}; "
                  "running it again")
        log.warning("run %s: %s", run.run_id, reason)
        for subscriber in run.subscribers:
            self.ledger.update(subscriber.trial_id, **{ATTR_REASON: reason})
        run.attempts -= 1  # the job's attempt is given back: _dispatch counts the new one
        self._dispatch([run])

    def _fail(self, run: _Run, reason: str, kind: FailureKind | None = None) -> None:
        """The run failed (``kind``: as its job said; None: lost or killed after every retry)."""
        del self._inflight[run.run_id]
        for subscriber in run.subscribers:
            self.ledger.fail(subscriber.trial_id, reason, kind=kind)
            self._ready.append(Result(subscriber.task, subscriber.point, Outcome.failed(reason)))

    def _finish(self, run: _Run, metrics: RunMetrics) -> None:
        del self._inflight[run.run_id]
        provenance = read_provenance(run.run_dir)
        extra = {ATTR_PROVENANCE: provenance} if provenance else {}
        for i, subscriber in enumerate(run.subscribers):
            self.ledger.complete(subscriber.trial_id, metrics=metrics, **self._job_attrs(run), **extra)
            self._ready.append(Result(subscriber.task, subscriber.point, Outcome.finished(metrics.objective)))
            self._count_result(run.run_id)
            if i == 0:
                self._done[run.run_id] = _Finished(metrics, subscriber.task, run.job_id)


def _stop_to_record(strategy: Strategy) -> Stop | None:
    """The stop the ledger keeps for a strategy that is done: its own rule's, else its budget's."""
    return strategy.stop() or strategy.budget_stop()


# ------------------------------------------------------------------------------ building


def budget_hint(kind: StudyKind, certification: str, *, option: bool, in_file: bool) -> str:
    """How to go on once a run budget stopped a search (:attr:`Strategy.budget_hint`). A budget
    counts the runs of one certification; ``option``: ``--max-runs`` set it, else the sweep file's
    ``max_runs:`` (``in_file``) or TPE's default number of trials did.

    >>> budget_hint(StudyKind.CERTIFY, "a", option=True, in_file=False)
    're-run certify without --max-runs, or with a larger one, to go on'
    """
    certify = "certify" if kind is StudyKind.CERTIFY else f"certify --strategy {kind.value}"
    if not option:
        return (f"raise max_runs: of certification {certification} in the sweep file, or re-run {certify} with a "
                "larger --max-runs, to go on")
    if kind is StudyKind.CERTIFY and not in_file:  # without a budget it searches until certified
        return "re-run certify without --max-runs, or with a larger one, to go on"
    return f"re-run {certify} with a larger --max-runs to go on"


def build_strategies(sweep: Sweep, ledger: Ledger, strategy: str = "certify",
                     max_runs: int | None = None, seed: int = 0) -> tuple[list[Strategy], dict[str, TaskInfo]]:
    """The strategies of a sweep (one per certification, plus ensembles under ``certify``) and how
    their points map to ledger studies. Creates the studies (with kind/fixed/grid/start)."""
    strategies: list[Strategy] = []
    tasks: dict[str, TaskInfo] = {}
    kind = StudyKind(strategy)
    for cert in sweep.certifications:
        grid = sweep.grid_for(cert)  # with its extension values: only the certifier reaches them
        if kind is not StudyKind.CERTIFY:
            grid = grid.listed_grid()
        task = cert.name if kind is StudyKind.CERTIFY else f"{kind.value}/{cert.name}"
        study = study_name(sweep.name, cert.name, kind)
        start = sweep.start_for(cert)
        ledger.study_id(study, create=True, attrs={
            STUDY_KIND: kind.value, STUDY_FIXED: cert.fixed, STUDY_GRID: grid.listed_grid().as_mapping(),
            **({STUDY_START: start, STUDY_WARM_START: None} if not warm_start_of(cert, kind) else {}),
        })
        tasks[task] = TaskInfo(study, dict(cert.fixed), grid.names, grid.as_mapping())
        budget = max_runs if max_runs is not None else cert.max_runs
        attrs = ledger.study_attrs(study)
        if (edit := start_edit(sweep, cert, attrs, grid, kind=kind)) is not None:
            log.warning("%s", edit)
        stored = sweep.resumed_start(cert, attrs.get(STUDY_START), grid)
        if stored is None and not warm_start_of(cert, kind):
            # a study created under a warm start whose source had not finished, the warm start since
            # removed, or a baseline created before a warm-started certification's baseline recorded
            # its start: it begins (reads its runs) from the sweep file's start, kept from here on (start_edit)
            ledger.record_start(study, start, None)
        if kind is StudyKind.CERTIFY:
            warm = cert.warm_start and stored is None
            strategies.append(CertifySearch(
                task, grid, None if warm else (stored or start), seed_neighbours=sweep.seeds_neighbours(cert),
                max_runs=budget, noise=sweep.noise_for(cert), waits_for=cert.warm_start if warm else None, fallback=start,
                on_start=lambda point, study=study, source=cert.warm_start: ledger.record_start(study, point, source),
                on_extend=lambda extension, study=study: ledger.record_extension(study, extension),
            ))
        else:
            # its runs read by the certifier's rule from where status reads them (Strategy.phase)
            strategies.append(baseline_strategy(kind.value, task, grid, max_runs=budget, seed=seed,
                                                start=stored or start, seed_neighbours=sweep.seeds_neighbours(cert)))
        strategies[-1].budget_hint = budget_hint(kind, cert.name, option=max_runs is not None,
                                                  in_file=cert.max_runs is not None)
    if kind is StudyKind.CERTIFY:
        for index, ens in enumerate(sweep.ensembles):
            cert = sweep.certification(ens.source)
            grid = sweep.grid_for(cert)
            task = f"ensemble/{ens.name}"
            study = study_name(sweep.name, ens.name, StudyKind.ENSEMBLE)
            ledger.study_id(study, create=True, attrs={STUDY_KIND: StudyKind.ENSEMBLE.value, STUDY_FIXED: cert.fixed,
                                                       "source": ens.source, "members": ens.members,
                                                       "epochs_multiplier": ens.epochs_multiplier})
            tasks[task] = TaskInfo(study, dict(cert.fixed), grid.names, None, seed_offset=ens.seed_offset,
                                   where=sweep.ensemble_label(index))
            strategies.append(FixedPoints(task, waits_for=ens.source,
                                          make_points=lambda p, e=ens, a=grid.as_mapping():
                                          [m.strategy_point() for m in e.member_params(p, a)]))
        for index, transfer in enumerate(sweep.transfers):
            grid = sweep.grid_for(sweep.certification(transfer.source))
            task = f"transfer/{transfer.name}"
            study = study_name(sweep.name, transfer.name, StudyKind.TRANSFER)
            ledger.study_id(study, create=True, attrs={STUDY_KIND: StudyKind.TRANSFER.value,
                                                       STUDY_FIXED: transfer.fixed, "source": transfer.source})
            tasks[task] = TaskInfo(study, dict(transfer.fixed), grid.names, None, where=sweep.transfer_label(index))
            strategies.append(FixedPoints(task, waits_for=transfer.source, make_points=lambda p: [dict(p)]))
    return strategies, tasks


class Progress:
    """Runs finished and in flight, and each certification's state, on stderr: one tqdm line that
    redraws on a terminal; elsewhere (a log file, CI) a plain line each time something changes."""

    def __init__(self, stream: Any = None) -> None:
        from tqdm import tqdm

        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = tqdm(desc="certify", unit="run", file=self.stream, dynamic_ncols=True) if self.live else None
        self.finished, self.reused, self.running, self.states = 0, 0, 0, ""
        self._shown: tuple[int, int, int, str] | None = None

    def update(self, strategies: Mapping[str, Strategy], running: int, *, reused: int = 0) -> None:
        """Count the finished runs and say each strategy's state (called once per drive round);
        ``reused``: how many of the finished results share a run another one trained (said apart:
        ``19 finished (1 reused)`` for 18 runs trained)."""
        finished = sum(s.count(RunState.FINISHED) for s in strategies.values())
        if self.bar is not None:
            self.bar.update(max(0, finished - self.finished))
        self.finished, self.reused = finished, reused
        states = []
        for name, strategy in strategies.items():  # the state status says (one rule: phase, reported_state)
            states.append(f"{name}:{reported_state(strategy.phase(), strategy.budget_stop()).value}")
        self.states = " ".join(states)
        self.refresh_running(running)

    def refresh_running(self, running: int) -> None:
        """Show the runs in flight now (called while the controller waits, after dispatches)."""
        self.running = running
        shown = (self.finished, self.reused, running, self.states)
        reused = f" ({self.reused} reused)" if self.reused else ""
        if self.bar is not None:  # the bar counts the finished results
            self.bar.set_postfix_str(f"{self.reused} reused, " * bool(self.reused) + f"running {running} | {self.states}",
                                     refresh=True)
        elif shown != self._shown:
            print(f"certify: {self.finished} finished{reused}, {running} running | {self.states}", file=self.stream,
                  flush=True)
        self._shown = shown

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_sweep(sweep: Sweep, *, strategy: str = "certify", max_runs: int | None = None,
              retry_failed: bool = False, progress: bool = False, jobs_ended_on: Sequence[str] = ()) -> None:
    """Certify (or run a baseline strategy on) every certification of ``sweep``; resumable.
    ``jobs_ended_on``: hosts whose local jobs of the sweep have ended (the host is down): their
    runs are submitted again here instead of refused (:class:`JobsElsewhere`).

    Raises:
        ControllerBusy: another live controller holds the sweep.
        JobsElsewhere: local jobs of the sweep run on another host (nothing was submitted).
        UserError: a bad objective, profile or ledger, a train config or pool of a certification,
            transfer or ensemble member (``Sweep.runs_known_before``, checked before the ledger is opened).
        SweepStopped: a job's deterministic error (a UserError; local runs in flight are stopped
            first, see the module docstring); the next run runs its point again.
        SweepInterrupted: Ctrl-C (a KeyboardInterrupt), after the runs in flight were handed to
            the executor.
    """
    objective = make_objective(sweep)
    for params, where in sweep.runs_known_before():  # a bad train config, pool, transfer or member fails now
        objective.identity(params.merged(), where)
    check_executor(sweep.executor)  # bad input creates nothing: no ledger, no jobs folder
    ledger = Ledger(sweep.ledger_url, sweep.name)
    with ledger.controller_lock():
        executor = make_executor(sweep.executor, sweep.out_dir / "jobs", name=f"megadocs-{sweep.name}")
        strategies, tasks = build_strategies(sweep, ledger, strategy, max_runs)
        display = Progress() if progress else None
        evaluator = LedgerEvaluator(sweep, ledger, executor, objective, tasks, retry_failed=retry_failed,
                                    progress=display, jobs_ended_on=jobs_ended_on)
        try:
            evaluator.restore(strategies)
            drive(strategies, evaluator)
        except KeyboardInterrupt:
            if display:
                display.close()
            try:
                stopped, running = evaluator.stop("interrupted")
            except KeyboardInterrupt:
                raise SweepInterrupted(0, [], executor.kind, again=True) from None
            raise SweepInterrupted(stopped, running, executor.kind) from None
        except UserError:
            evaluator.stop("stopped by an error")
            raise
        finally:
            if display:
                display.close()
