"""A dress rehearsal of a sweep: every training job evaluates a surrogate instead of training.

The paper's sweep (``search/examples/paper-300m.yaml``) is some thousand GPU runs over weeks. A
rehearsal runs the same sweep file through the real controller, executor and ledger, with jobs
that last seconds: :func:`rehearsal_sweep` swaps the default objective for :func:`rehearse` (and
points executor, ledger and output at what runs here); nothing else in the sweep changes.

- :class:`PaperSurrogate`: the loss surface of one training run, per (method, G, model): a smooth
  bowl around the paper's published optimum (paper.md, "Published optima"; tuned losses from
  "Results": real-only 3.5544, simple 3.41 at G=32, stitched 1.64x, latent 1.80x; student scaling
  at 1.5b), seed noise (a repeat or ensemble member draws anew), divergence at too-high learning
  rates, and validation halves (``iid_short``/``iid_long``: megadocs gain more on long documents).
  Transfers are ordinary points of it; ensembles get :meth:`PaperSurrogate.ensemble_losses`.
- :func:`rehearse`: the job. It "trains" for a few seconds in steps, checkpoints its step in
  ``RUN/checkpoint/state.json`` (its ``run_dir``) after each one through the atomic writer
  (:func:`megadocs.formats.write_json`), resumes from it, and returns metrics shaped like train's.
  It appends ``start``/``done``/``error``/``invalid`` events to an evaluation journal outside the run
  directory (an independent witness of what ran, for :func:`audit`) and hangs, once, when the
  rehearsal arms :data:`HANG_MARKER` (a job stuck past its time limit). Where the rehearsal names
  its data (:data:`DATA_ENV`), the job reads it first, as a training job opens its stores, and
  raises a :class:`~megadocs.errors.UserError` naming it when it is not there (journal
  ``invalid``): its result is an ``invalid`` failure and the controller stops the sweep.
- :func:`audit`: "nothing run twice", from SLURM's accounting and the ledger, not from the
  controller's own word (see its docstring for the definitions).

Cost of a job: a Python start that imports ``search.objective`` (about 0.5 s on an idle core
here, no torch) plus 0.8-3 s of sleeping (times :data:`SCALE_ENV`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from megadocs.errors import UserError
from megadocs.formats import REAL, RunStatus, write_json
from megadocs.provenance import slurm_job_id
from search.objective import module_source_hash
from search.params import RunParams
from search.sweep import TRAIN_AXES, Sweep

__all__ = ["PaperSurrogate", "SURROGATE", "rehearse", "rehearsal_sweep", "OBJECTIVE", "CONTROL_ENV",
           "SCALE_ENV", "DATA_ENV", "STEP_S", "HANG_MARKER", "JOURNAL", "Dispatch", "Audit", "audit", "read_journal",
           "epoch_seconds"]

OBJECTIVE = "search.rehearsal:rehearse"
"""The callable objective a rehearsal runs in place of training."""
CONTROL_ENV = "MEGADOCS_REHEARSAL_CONTROL"
"""Folder (outside the run directories' file system) with the journal and fault markers."""
SCALE_ENV = "MEGADOCS_REHEARSAL_SCALE"
"""Multiplies every job's duration (0: no sleeping, for a fault-free reference in-process)."""
DATA_ENV = "MEGADOCS_REHEARSAL_DATA"
"""A file every job reads before it trains (the rehearsal's training data; unset: none read). Not
there: the job raises a :class:`~megadocs.errors.UserError` naming it, as a training job does on a
missing store."""
JOURNAL = "evaluations.jsonl"
HANG_MARKER = "hang"
"""Present in the control folder: the next job to start claims it and hangs (signals blocked).
It may hold a JSON list of param names: then only a job whose params have them all claims it
(``["seed"]``: an ensemble member or repeat)."""
STEP_S = 0.25
"""Seconds of one simulated training step at scale 1 (a checkpoint is written after each)."""

# --- the surface ---------------------------------------------------------------------------------

GS = (1, 2, 4, 8, 16, 32)
TUNED = {  # tuned i.i.d. loss per G at 300m: simple 3.41 (1.48x), stitched 3.375 (1.64x), latent 3.344 (1.80x)
    "simple": (3.490, 3.465, 3.442, 3.427, 3.417, 3.410),
    "stitched": (3.485, 3.455, 3.425, 3.400, 3.385, 3.375),
    "latent": (3.480, 3.445, 3.415, 3.385, 3.360, 3.344),
}
REAL_TUNED = {"300m": 3.5544, "1.5b": 3.30}
"""Real-only tuned loss per model (paper: 3.5544 at 300M; the 1.5B value is illustrative)."""
STUDENT_GAIN = {"simple": (0.144, 0.212), "stitched": (0.18, 0.248), "latent": (0.211, 0.274)}
"""Gain over real-only at G=32, 300M -> 1.5B (paper.md, student scaling)."""
STITCH_ORDER_COST = {"stitched": 0.0, "stitched-first": 0.012, "stitched-none": 0.025}
"""Real document last beats first beats left out."""
SYNTHETIC_ONLY_COST = 0.06
"""Mix 1 (no real stream) loses this much against the mixed optimum."""
CURVATURE = {"lr": 0.03, "wd": 0.012, "epochs": 0.012, "mix": 0.005, "synthetic_epochs": 0.012}
"""Loss per squared unit of distance: log2 units on lr, wd, epochs; tenths on mix."""
LOG_AXES = frozenset({"lr", "wd", "epochs", "synthetic_epochs"})
SEED_SIGMA = 0.002
"""Seed noise sd of one run (initialisation and data order)."""
ENSEMBLE_DROP, ENSEMBLE_ALPHA = 0.24, 0.8
"""Ensemble of K members: L(K) = E + (L1 - E) K^-alpha with E = L1 - drop (real-only about 3.31)."""
LONG_GAIN = {"stitched": 0.012, "stitched-first": 0.008, "stitched-none": 0.006, "latent": 0.016}
"""Extra gain per doubling of G on the long half of the i.i.d. set (megadocs help long documents)."""
MODEL_TIME = {"300m": 1.0, "1.5b": 1.5}


def _method_base(method: str) -> str:
    return "stitched" if method.startswith("stitched") else method


def _centre(method: str, g: int) -> dict[str, float]:
    """Where the optimum of (method, G) lies: at the published optima (lr 3e-3, wd 0.4-1.6, epochs
    8-32, mix 0.75-0.9); stitched and latent at G=32 want more synthetic data than mix 0.9 allows
    (the paper's only bound hits besides real-only's weight decay)."""
    if method == REAL:
        return {"lr": 3e-3, "wd": 1.6, "epochs": 16}
    base = _method_base(method)
    mix = 0.95 if g >= 32 and base in ("stitched", "latent") else 0.75
    if base == "simple":
        return {"lr": 3e-3, "wd": 0.8, "epochs": 16 if g <= 4 else 8, "mix": mix}
    if base == "stitched":
        return {"lr": 3e-3, "wd": 0.4, "epochs": 32 if g <= 2 else 16, "mix": mix, "synthetic_epochs": 2}
    return {"lr": 3e-3, "wd": 0.8 if g <= 4 else 0.4, "epochs": 32 if g <= 4 else 16, "mix": mix}


def _coordinate(axis: str, value: float) -> float:
    return math.log2(float(value)) if axis in LOG_AXES else 10.0 * float(value)


def _unit_hash(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


@dataclass(frozen=True)
class PaperSurrogate:
    """One run's losses as a function of its params (grid point + fixed values + seed).

    Deterministic: the same params give the same losses in any process (the seed noise is drawn
    from a hash of the params and ``seed``).
    """

    seed: int = 0
    sigma: float = SEED_SIGMA

    def tuned(self, method: str, g: int, model: str = "300m") -> float:
        """The loss at the continuous optimum of (method, G, model)."""
        real = REAL_TUNED.get(model, REAL_TUNED["300m"])
        if method == REAL:
            return real
        base = _method_base(method)
        if g not in GS:
            raise ValueError(f"g: the surrogate knows G in {list(GS)}, got {g}")
        loss = TUNED[base][GS.index(g)]
        loss += STITCH_ORDER_COST.get(method, 0.0)
        if model == "1.5b":  # the win over real-only grows with the student (paper: at G=32)
            small, large = STUDENT_GAIN[base]
            loss = real - (REAL_TUNED["300m"] - loss) * large / small
        return loss

    @staticmethod
    def fixed(params: Mapping[str, Any]) -> tuple[str, int, str]:
        """(method, G, model) of a run's params; G 1 and the 300m model where they fix none."""
        run = RunParams.split(params, TRAIN_AXES)
        return str(run.method), int(1 if run.g is None else run.g), str("300m" if run.model is None else run.model)

    def diverges(self, params: Mapping[str, Any]) -> bool:
        """lr 1e-2 diverges on the 1.5b student, and on the 300m model in runs of 32+ epochs."""
        lr = float(params.get("lr", 3e-3))
        return lr >= 1e-2 and (self.fixed(params)[2] == "1.5b" or float(params.get("epochs", 1)) >= 32)

    def noise(self, params: Mapping[str, Any]) -> float:
        run = RunParams.split(params, TRAIN_AXES)
        point = sorted(replace(run, seed=None).merged().items())
        rng = random.Random(_unit_hash("rehearsal-seed-noise", self.seed, point, run.repeat))
        return self.sigma * rng.gauss(0.0, 1.0)

    def loss(self, params: Mapping[str, Any]) -> float:
        """The i.i.d. validation loss (NaN when the run diverges)."""
        if self.diverges(params):
            return math.nan
        method, g, model = self.fixed(params)
        loss = self.tuned(method, g, model)
        centre = _centre(method, g)
        for axis, target in centre.items():
            if axis in params:
                delta = _coordinate(axis, params[axis]) - _coordinate(axis, target)
                loss += CURVATURE[axis] * delta * delta
        if float(params.get("mix", 0.0)) >= 1.0:  # synthetic only: no real stream
            loss += SYNTHETIC_ONLY_COST
        return loss + self.noise(params)

    def metrics(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """What train would report: the objective and the validation halves (null when diverged)."""
        loss = self.loss(params)
        if math.isnan(loss):
            return {"status": RunStatus.DIVERGED.value, "val_loss": None,
                    "val_losses": {"iid": None, "iid_short": None, "iid_long": None}}
        method, g, _ = self.fixed(params)
        long_gain = LONG_GAIN.get(method, 0.0) * math.log2(g) if method != REAL else 0.0
        return {"status": RunStatus.COMPLETED.value, "val_loss": loss,
                "val_losses": {"iid": loss, "iid_short": loss - 0.11, "iid_long": loss + 0.11 - long_gain}}

    def ensemble_losses(self, member_losses: Sequence[float]) -> list[float]:
        """L(K) for K = 1..len(members) of an ensemble of these members (logit averaging):
        ``E + (L1 - E) K^-alpha`` with L1 the mean of the first K members' own losses."""
        losses = []
        for k in range(1, len(member_losses) + 1):
            single = sum(member_losses[:k]) / k
            asymptote = single - ENSEMBLE_DROP
            losses.append(asymptote + (single - asymptote) * k ** -ENSEMBLE_ALPHA)
        return losses

    def seconds(self, params: Mapping[str, Any]) -> float:
        """Simulated training time at scale 1: 0.8-3 s, growing with the run's length."""
        mix = min(float(params.get("mix", 0.0)), 0.9)
        passes = float(params.get("epochs", params.get("synthetic_epochs", 1))) / (1 - mix)
        return (0.5 + math.log2(1 + passes) / 6) * MODEL_TIME.get(self.fixed(params)[2], 1.0)


SURROGATE = PaperSurrogate()


# --- the job -------------------------------------------------------------------------------------


def _control() -> Path | None:
    folder = os.environ.get(CONTROL_ENV)
    return Path(folder) if folder else None


def _journal(event: str, run: str, **fields: Any) -> None:
    """Append one event to the control folder's journal (one short line per O_APPEND write, so
    concurrent jobs' lines do not interleave). No control folder: no journal."""
    control = _control()
    if control is None:
        return
    record = {"t": time.time(), "event": event, "run": run, "job": slurm_job_id(), "pid": os.getpid(), **fields}
    with open(control / JOURNAL, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _hang_if_armed(run: str, params: Mapping[str, Any]) -> None:
    """Claim the hang marker (an atomic rename: one job gets it) and hang like a deadlocked job:
    every catchable signal blocked, so neither submitit's timeout handler nor SIGTERM runs and
    only SLURM's SIGKILL at the time limit (plus KillWait) ends it."""
    control = _control()
    if control is None:
        return
    marker = control / HANG_MARKER
    try:
        wanted = json.loads(marker.read_text() or "[]")
        if not all(name in params for name in wanted):
            return
        os.rename(marker, control / f"{HANG_MARKER}.claimed-{run}")
    except (FileNotFoundError, ValueError):
        return
    _journal("hang", run)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT})
    while True:
        time.sleep(3600)


def _read_data(run: str) -> None:
    """Read the rehearsal's data (:data:`DATA_ENV`), as a training job opens its stores first: not
    there, the job journals ``invalid`` and raises a UserError naming it (the job's result is then
    an ``invalid`` failure, and the controller stops the sweep in one line)."""
    path = os.environ.get(DATA_ENV)
    if not path:
        return
    try:
        Path(path).read_bytes()
    except FileNotFoundError:
        error = f"data: {path} not found (the rehearsal's training data, {DATA_ENV})"
        _journal("invalid", run, error=error)
        raise UserError(error) from None


def _checkpointed_step(path: Path) -> int:
    """The step of the run's checkpoint (0 without one). A torn file raises: it must never exist."""
    try:
        return int(json.loads(path.read_text())["step"])
    except FileNotFoundError:
        return 0


def rehearse(params: Mapping[str, Any], *, run_dir: Path) -> dict[str, Any]:
    """The rehearsal's training job (a sweep's callable objective, run by ``RunTask`` in the
    run's directory ``run_dir``).

    Trains ``steps`` simulated steps from its checkpoint, writing the checkpoint after each step
    (atomically: a full disk or a kill leaves the previous one), then returns the surrogate's
    metrics. Journal: ``invalid`` (its data was not there, nothing trained),
    ``start`` (with the step it resumed from), ``error`` (a checkpoint that could not be written,
    with its errno), ``done`` (with the steps this attempt trained).
    """
    run_dir = Path(run_dir)
    run = run_dir.name
    _read_data(run)
    scale = float(os.environ.get(SCALE_ENV, "1"))
    steps = max(2, round(SURROGATE.seconds(params) / STEP_S))
    state = run_dir / "checkpoint" / "state.json"
    resumed = _checkpointed_step(state)
    _journal("start", run, resumed_from=resumed, steps=steps)
    _hang_if_armed(run, params)
    state.parent.mkdir(parents=True, exist_ok=True)
    for step in range(resumed + 1, steps + 1):
        time.sleep(STEP_S * scale)
        try:
            write_json(state, {"step": step, "steps": steps})
        except OSError as exc:
            _journal("error", run, step=step, errno=exc.errno, error=f"{type(exc).__name__}: {exc.strerror or exc}")
            raise
    metrics = SURROGATE.metrics(params)
    _journal("done", run, trained=steps - resumed)
    return {**metrics, "steps": steps}


def read_journal(control: str | os.PathLike) -> list[dict[str, Any]]:
    """The journal's events in the order written (a line cut by a killed writer is skipped)."""
    path = Path(control) / JOURNAL
    events = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


# --- the sweep -----------------------------------------------------------------------------------


def rehearsal_sweep(sweep: Sweep, *, out: str | os.PathLike, ledger: str, profile: str | os.PathLike,
                    poll_s: float = 1.0, max_parallel: int | None = None) -> Sweep:
    """``sweep`` as a rehearsal: the surrogate as its objective and this machine's SLURM profile,
    ledger and output folder. Its grid, starts, certifications, warm starts, transfers, ensembles,
    retries and parallelism are unchanged; ``poll_s`` shrinks with the jobs (hours -> seconds)."""
    data = sweep.model_dump(mode="json", by_alias=True, exclude_none=True)
    executor = {**data["executor"], "kind": "slurm", "profile": str(profile), "poll_s": poll_s}
    if max_parallel is not None:
        executor["max_parallel"] = max_parallel
    # the surrogate's source hash now: every controller of this rehearsal agrees on run identities
    data.update(objective=OBJECTIVE, objective_version=module_source_hash(OBJECTIVE), executor=executor,
                ledger=ledger, out=str(out))
    return Sweep.model_validate(data)


# --- nothing run twice ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatch:
    """One allocation of a SLURM job as the accounting (``sacct -D``) records it, with the run its
    submitted payload trains (from the submitit submission file the job was started with)."""

    job_id: str
    run: str
    state: str  # COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, REQUEUED, ...
    submit: float  # epoch seconds (sacct's resolution: 1 s)


@dataclass
class Audit:
    """What ran, from SLURM's accounting, the ledger and the jobs' own journal.

    Definitions (the controller's word is not used):

    - A run is **run twice** when (a) SLURM accepted a job for it after the ledger had recorded
      its result (the job whose result was recorded excepted: sacct times are whole seconds), or
      (b) two different jobs of it that each evaluated it (below) ran to completion (sacct
      COMPLETED) and neither returned a failure (below), or (c) an evaluation of it trained steps
      after an earlier evaluation had finished (the journal; an evaluation whose job returned a
      failure finished nothing).
    - A job **evaluated** a run when the journal holds a ``start`` event of that job (its SLURM job
      id) for that run. A job that completed without one computed nothing: a duplicate submission
      (a controller killed between ``sbatch`` and the ledger recording the job) waits on the run
      directory's lock and returns the result saved there (:class:`search.objective.RunTask`). A
      job that journaled a ``start`` and was then killed (an OOM kill, ``scancel``, a lost node, a
      hang past its time limit) did not complete. Where no job of a run journaled a ``start`` (no
      control folder, so no journal; a lost line), the journal cannot witness the run and every
      job of it that completed counts as an evaluation.
    - A job **returned a failure** when the ledger recorded its trial as failed with the failure
      the job returned (the trial's ``failure``: ``invalid``, a user error; ``failed``, a loss of
      -inf). SLURM's accounting says COMPLETED (the job ended normally), but it computed no
      result: the next ``certify`` runs an invalid point again (``--retry-failed`` a failed one),
      and that job's result is the run's first, not its second.
    - A **retry** is any further job of a run (a new job id) submitted while its result was not
      recorded (an earlier job was killed, cancelled, timed out, lost its node, or returned a
      failure and the point was run again; or a controller killed before it recorded an earlier
      job submitted the run again).
    - A **requeue** is a further allocation of the same job id (SLURM requeued it: node failure,
      time limit with a requeue, preemption).
    """

    runs: int = 0
    jobs: int = 0
    allocations: int = 0
    retries: int = 0
    requeues: int = 0
    run_twice: dict[str, list[str]] = field(default_factory=dict)  # run -> why

    def twice(self, run: str, why: str) -> None:
        self.run_twice.setdefault(run, []).append(why)


def audit(dispatches: Iterable[Dispatch], recorded: Mapping[str, tuple[float, str | None]],
          journal: Iterable[Mapping[str, Any]] = (), returned_failure: Mapping[str, Collection[str]] | None = None,
          ) -> Audit:
    """Check "nothing run twice" (definitions: :class:`Audit`).

    Args:
        dispatches: every allocation of every job of the sweep (sacct ``-D``), with its run.
        recorded: run -> (epoch seconds when the ledger first recorded its result, the job id
            recorded with it).
        journal: the jobs' evaluation events (:func:`read_journal`): which jobs evaluated a run.
        returned_failure: run -> the ids of its jobs that returned a failure: the job id of each
            of its trials the ledger failed with a ``failure`` (:attr:`search.ledger.RunRecord.failure`),
            and of each re-attached job that met a user error (its run was submitted again in the same
            trial, so no trial records that job's failure; benchmarks/rehearsal.py reads them from the journal).
    """
    returned_failure = returned_failure or {}
    started: dict[str, set[str | None]] = {}  # run -> the jobs that journaled an evaluation of it
    trained_again: list[tuple[str, str]] = []  # (run, why): a run trained after it had finished
    finished: dict[str, float] = {}
    for event in journal:  # one scan
        run = event["run"]
        if event["event"] == "start":
            started.setdefault(run, set()).add(event.get("job"))
        elif event["event"] == "done" and event.get("job") not in returned_failure.get(run, ()):
            finished.setdefault(run, event["t"])
            if event["t"] > finished[run] and event.get("trained", 0) > 0:
                trained_again.append((run, f"trained again by job {event.get('job')} after it had finished"))
    by_run: dict[str, list[Dispatch]] = {}
    for dispatch in dispatches:
        by_run.setdefault(dispatch.run, []).append(dispatch)
    result = Audit(runs=len(by_run))
    for run, allocations in sorted(by_run.items()):
        jobs: dict[str, list[Dispatch]] = {}
        for allocation in sorted(allocations, key=lambda d: d.submit):
            jobs.setdefault(allocation.job_id, []).append(allocation)
        result.jobs += len(jobs)
        result.allocations += len(allocations)
        result.requeues += len(allocations) - len(jobs)
        result.retries += len(jobs) - 1
        done_at, recorded_job = recorded.get(run, (math.inf, None))
        for job_id, mine in jobs.items():
            if job_id != recorded_job and min(d.submit for d in mine) >= math.floor(min(done_at, 1e18)):
                result.twice(run, f"job {job_id} submitted after its result was recorded")
        completed = [job_id for job_id, mine in jobs.items() if any(d.state == "COMPLETED" for d in mine)
                     and job_id not in returned_failure.get(run, ())]  # ended normally with no result
        witnessed = started.get(run, set()) & jobs.keys()  # none: a gap in the journal, every completion counts
        evaluating = [job_id for job_id in completed if job_id in witnessed] if witnessed else completed
        if len(evaluating) > 1:
            result.twice(run, f"jobs {', '.join(evaluating)} both completed")
    for run, why in trained_again:
        result.twice(run, why)
    return result


def epoch_seconds(text: str) -> float:
    """sacct's local ISO time (``2026-12-04T15:02:11``) as epoch seconds."""
    return datetime.fromisoformat(text).timestamp()
