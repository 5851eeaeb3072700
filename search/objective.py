"""What one run is: params -> (identity, run directory, a job that returns metrics).

Two objectives:

- :class:`CallableObjective`: the sweep's ``objective: module:callable``, any
  ``f(params) -> float | {"loss": float, ...}`` (one with a ``run_dir`` keyword also gets its run
  directory, e.g. to keep checkpoints there). Identity = hash of the import path, the code's
  version (``objective_version``, default the sha256 of the module's source file: that file
  only, not what it imports) and params. With the default, the job executes the module from the
  bytes it read and hashed, and only when they are that version (an edit since the controller
  named the run is refused in one line, nothing run: the next ``certify`` runs the point with the
  new code under its new identity; :class:`RunTask`).
- :class:`TrainObjective` (default): builds a train ``RunConfig`` from the sweep's ``train:``
  base and the point (``lr -> optim.lr``, ``wd -> optim.weight_decay``, ``epochs ->
  data.real_epochs``, ``mix -> data.mixing_fraction``, ``synthetic_epochs -> data.synthetic_epochs``
  (with ``mix: [1.0]``, synthetic only); fixed ``method``/``g`` select
  ``data.synthetic``; ensemble ``seed`` sets ``seed`` and ``data.seed``), identity =
  ``RunConfig.identity()`` (which covers what the store and pool *are*, not their paths), and runs ``train.loop.run(config, run_dir)``
  on the stores its job opened, once it has checked that the config's identity on them (agreed by
  all of its ranks) is the one that named ``run_dir`` (data replaced in between fails the trial in
  one line: :class:`RunTask`).

The job is a :class:`RunTask`, a submitit ``Checkpointable``: on SLURM timeout/preemption it is
requeued as is and resumes from its run directory. A task holds an exclusive lock on its run
directory and returns an existing ``metrics.json`` without running, so a run is never computed
twice, even if it was (re)submitted twice. A :class:`~megadocs.errors.UserError` inside a job (a
store or pool that is not there, a config train refuses) is deterministic: the job returns it as
an ``invalid`` result (:class:`~megadocs.formats.FailureKind`), which the controller reports in one
line instead of retrying it; once the user fixed the cause, the next ``certify`` runs the point again.
A job of several tasks returns it on every rank for a UserError every rank raised alike
(:class:`~megadocs.errors.EveryRankError`: the ranks' agreement); a rank that met one on its own
returns it and exits non-zero, so that the launcher ends the others (:meth:`RunTask.__call__`).

Each train run of a sweep is also linked as ``{out}/tensorboard/{certification}/{point}``
(:func:`link_tensorboard`), so ``tensorboard --logdir {out}/tensorboard`` shows runs by name.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.machinery import SOURCE_SUFFIXES, ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

import submitit

from megadocs import compat
from megadocs.config import config_hash, parse_config
from megadocs.errors import EveryRankError, UserError, on_every_rank
from megadocs.exits import Exit
from megadocs.formats import REAL, FailureKind, RunDir, RunMetrics, RunStatus, write_json
from megadocs.pools import pool_identity, resolve_pool
from megadocs.procs import exclusive_lock, world_from_env
from megadocs.provenance import slurm_job_id
from megadocs.provenance import write as write_provenance
from search.params import RunParams
from search.sweep import TRAIN_AXES, BaseTrain, Sweep

__all__ = ["RunTask", "JobResult", "JobFailure", "FailureKind", "CallableObjective", "TrainObjective", "make_objective", "normalise_metrics",
           "ObjectiveReturnError", "MinusInfLoss", "INVALID", "TENSORBOARD_LINKS", "point_label", "link_tensorboard"]


INVALID = FailureKind.INVALID.value
"""A job's result status when the objective returned no loss or the job met a user error."""


@dataclass(frozen=True)
class JobFailure:
    """What a job returns when it has no metrics: the other half of ``RunMetrics | JobFailure``
    (:data:`JobResult`, what :class:`RunTask` returns and the controller resolves); its ``kind``
    (:class:`~megadocs.formats.FailureKind`) is recorded with the failed trial."""

    kind: FailureKind
    reason: str

    @classmethod
    def of(cls, value: Any) -> JobFailure | None:
        """``value`` as a failure, or None when it is none. Jobs run by earlier code returned a
        status dict, still read when a sweep is resumed across an upgrade (:data:`megadocs.compat.RECORDS`)."""
        if isinstance(value, JobFailure):
            return value
        if compat.is_older(compat.JOB_RESULT, value):
            fields = compat.upgrade(compat.JOB_RESULT, value)
            return cls(FailureKind(fields["kind"]), fields["reason"])
        return None


JobResult = RunMetrics | JobFailure
"""What a :class:`RunTask` returns."""
TENSORBOARD_LINKS = "tensorboard"
"""``{out}/tensorboard/{certification}/{point}`` links to each run's ``RUN/tensorboard``."""


class ObjectiveReturnError(ValueError):
    """The objective returned something that is not a loss (a user error, not a node failure)."""


class MinusInfLoss(ValueError):
    """The objective returned -inf: no loss at all (a failed run, never a certificate)."""


@contextlib.contextmanager
def _importing(path: str) -> Iterator[None]:
    """Whatever importing ``module:attr`` raises (a broken module may raise anything) -> one
    UserError line naming the path."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken module may raise anything on import
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"objective: cannot import {path!r}: {type(exc).__name__}: {text}") from None


def import_callable(path: str, source_hash: str | None = None):
    """``module:attr`` -> a callable; UserError (one line) naming the path when it cannot be
    imported (whatever the module raises on import) or is not callable.

    ``source_hash``: the module's :func:`module_source_hash` that versions the runs (None: not
    checked). The module is then executed from the very bytes that were read and hashed
    (:func:`_import_verified`), never re-read after the check, and refused (one line, nothing run)
    when they are not that version: the module was edited since the sweep named the run."""
    module_name, _, attr = path.partition(":")
    with _importing(path):
        module = (importlib.import_module(module_name) if source_hash is None
                  else _import_verified(path, source_hash))
        found = getattr(module, attr)
    if not callable(found):
        raise UserError(f"objective: {path!r} is a {type(found).__name__}, not a callable "
                        f"(expected f(params) -> float | {{'loss': float, ...}})")
    return found


def normalise_metrics(value: Any) -> RunMetrics:
    """What a job returned (train's :class:`RunMetrics`, or an objective's number or dict with
    ``loss``/``val_loss``) -> :class:`RunMetrics`. NaN and +inf are a diverged run.

    Raises:
        ObjectiveReturnError: the value is not a number (nor a dict holding one).
        MinusInfLoss: the loss is -inf: no loss at all (a failed run with this reason).
    """
    if isinstance(value, RunMetrics):
        return value
    if isinstance(value, Mapping):
        metrics = dict(value)
        loss = metrics.get("val_loss", metrics.get("loss"))
        if loss is None and metrics.get("status") != RunStatus.DIVERGED.value:
            raise ObjectiveReturnError(f"returned a dict without 'loss' or 'val_loss' (keys {sorted(metrics)})")
    else:
        metrics, loss = {}, value
    if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))):
        try:
            if isinstance(loss, (str, bytes)):
                raise TypeError(loss)
            loss = float(loss)  # numpy and torch scalars
        except (TypeError, ValueError):
            raise ObjectiveReturnError(f"returned {str(loss)[:40]!r} ({type(loss).__name__}), not a number "
                                       f"(expected a float or {{'loss': float, ...}})") from None
    loss = None if loss is None else float(loss)
    if loss == -math.inf:
        raise MinusInfLoss("the objective returned loss -inf (not a loss; check the objective)")
    finite = loss is not None and math.isfinite(loss)
    metrics["val_loss"] = loss if finite else None
    metrics.setdefault("status", (RunStatus.COMPLETED if finite else RunStatus.DIVERGED).value)
    return RunMetrics.parse(metrics, source="objective")


class RunTask(submitit.helpers.Checkpointable):
    """One run as a submitit job. ``objective`` is an import path, or None for train/.

    A job with several tasks (the profile's ``tasks_per_node``/``nodes``) is one data-parallel run:
    every task calls this, rank 0 alone takes the run directory's lock and writes job.json (the
    other ranks wait for it inside ``train.loop.run``'s rendezvous, so none blocks on the lock
    rank 0 holds; rank 0 joins them also when the run is done), and every rank returns the run's
    metrics (submitit reports rank 0's). A UserError every rank raises alike (the ranks'
    agreement, a config train refuses: :class:`~megadocs.errors.EveryRankError`) is every rank's
    ``invalid`` result, as with one task. Any other UserError is this rank's alone: its ``invalid``
    result naming the rank (``rank 1 of 2: ...``) is written as this task's result and the task
    exits 2, so that srun's ``--kill-on-bad-exit`` (or torchrun) ends the other ranks at once
    instead of leaving them in their rendezvous or next collective; the poll of the failed job
    carries the refusal and the controller records it as one (its line, not retried). Any other
    exception fails the task, and the controller retries the job, naming the rank whose error came first.

    ``identity``: the run identity the controller named ``run_dir`` by (a train run's; None: not
    checked). The job opens the stores once and trains on them only when the config's identity on
    them is that one (``train.loop.run``'s ``expected_identity``, checked once every rank has
    joined and agreed on what it opened, so a mismatch fails every rank with the same line): data
    replaced at its path between the controller's identity and the job would otherwise train in a
    folder (and a ledger trial) named for other data.

    ``source_hash``: a callable objective's :func:`module_source_hash` that named the run (None: a
    version the sweep gave, not checked). The job executes the module's source only when the bytes
    it read are that version (:func:`import_callable`), else refuses in one line, nothing run: code
    edited since the controller named the run would otherwise be recorded as the old code's.
    """

    identity: str | None = None  # a task pickled by earlier code has none
    source_hash: str | None = None

    def __init__(self, run_dir: str, params: Mapping[str, Any], objective: str | None = None,
                 train_config: Mapping[str, Any] | None = None, identity: str | None = None,
                 source_hash: str | None = None) -> None:
        self.run_dir = str(run_dir)
        self.params = dict(params)
        self.objective = objective
        self.train_config = dict(train_config) if train_config is not None else None
        self.identity = identity
        self.source_hash = source_hash

    def __call__(self) -> JobResult:
        run_dir = RunDir(self.run_dir)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        try:
            return self._run(run_dir)
        except UserError as exc:  # deterministic: the same job would fail the same way again
            try:
                rank, world_size, _ = world_from_env()
            except UserError:  # the launcher's variables themselves (`exc` says which): one task's refusal
                rank, world_size = 0, 1
            if world_size > 1 and not isinstance(exc, EveryRankError):
                # met by this rank, perhaps alone (a node's own fault, no rendezvous to find),
                # while the others wait for it (a rendezvous, their next collective:
                # NCCL 10 minutes). Its refusal is this task's result, and it exits non-zero, so that
                # srun (--kill-on-bad-exit) or torchrun ends them at once; the controller reads the
                # refusal (not a failure to retry) from this task's result file
                refusal = JobFailure(FailureKind.INVALID, f"rank {rank} of {world_size}: {exc}")
                if not _return_from_task(refusal):  # no submitit job (torchrun by hand): the error is all
                    raise
                traceback.print_exc()  # the task's log says why it exited
                raise SystemExit(Exit.BAD_INPUT) from exc
            return JobFailure(FailureKind.INVALID, str(exc))

    def _run(self, run_dir: RunDir) -> JobResult:
        rank, world_size, _ = world_from_env()
        if world_size > 1 and self.train_config is None:
            raise EveryRankError(f"objective {self.objective}: a callable objective runs as one task; use "
                                 f"tasks_per_node: 1 and nodes: 1 in the SLURM profile (got {world_size} tasks)")
        if rank > 0:
            return self._train(run_dir)
        with exclusive_lock(run_dir.lock):  # a duplicate submission waits, then reads the result
            if run_dir.is_done():  # the other ranks are joining `train.loop.run`: join them (it returns the metrics)
                return self._train(run_dir) if world_size > 1 else RunMetrics.load(run_dir.metrics)
            write_json(run_dir.job, {
                "host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                "job_id": slurm_job_id() or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),  # as sacct names it
                "params": self.params,
            })
            if self.train_config is not None:
                return self._train(run_dir)
            objective = import_callable(self.objective, self.source_hash)  # the code that named the run, or a UserError
            write_provenance(run_dir)  # train/ writes its own (with the device) for train runs
            start = time.perf_counter()
            # an objective that keeps checkpoints of its own (search.rehearsal) asks for its folder
            extra = {"run_dir": run_dir.path} if "run_dir" in inspect.signature(objective).parameters else {}
            try:
                metrics = normalise_metrics(objective(dict(self.params), **extra))
            except ObjectiveReturnError as exc:  # the controller stops the sweep with this line
                return JobFailure(FailureKind.INVALID, str(exc))
            except MinusInfLoss as exc:  # a failed run with its reason; nothing is written
                return JobFailure(FailureKind.FAILED, str(exc))
            if metrics.wall_time_s is None:
                metrics.wall_time_s = time.perf_counter() - start
            if metrics.point is None:
                metrics.point = dict(self.params)
            metrics.save(run_dir.metrics)
            return metrics

    def _train(self, run_dir: RunDir) -> RunMetrics:
        from train.config import RunConfig
        from train.loop import Preempted, run

        with on_every_rank():  # every rank was given the same config
            config = parse_config(self.train_config, RunConfig, source=str(run_dir.path / "config"))
        try:
            # `run` opens the stores once and checks their identity after every rank has joined: a
            # rank that opened other data fails them all with one line, not in the rendezvous
            return run(config, run_dir.path, expected_identity=self.identity)  # train writes metrics.json itself
        except Preempted as exc:
            if exc.interrupted:  # Ctrl-C of an in-process (debug) run: the controller's to handle
                raise KeyboardInterrupt from exc
            # SIGTERM (scontrol requeue, preemption, scancel, a controller stopping its local jobs):
            # the checkpoint is saved. Exit without a submitit result, which would read as a failed
            # run while SLURM runs the job again. A rank other than 0 exits 0: srun ends a job's
            # step when a task exits non-zero (--kill-on-bad-exit, megadocs.executors), which could
            # kill rank 0 while it requeues the job (submitit's SIGUSR2 handler, rank 0 only)
            raise SystemExit(Exit.PREEMPTED if world_from_env()[0] == 0 else 0) from exc


def _return_from_task(result: JobResult) -> bool:
    """Write ``result`` as this submitit task's returned value (its result file, as submitit writes
    one), for a task that then exits non-zero to end the job's other tasks; False outside a
    submitit job (nothing written). The executor reads it with the job's failure
    (:class:`megadocs.executors.Poll`'s ``value``)."""
    from submitit.core.utils import cloudpickle_dump, temporary_save_path

    try:
        result_file = submitit.JobEnvironment().paths.result_pickle
    except (RuntimeError, KeyError):  # not a submitit job (torchrun; SLURM's variables without submitit's folder)
        return False
    with temporary_save_path(result_file) as temporary:
        cloudpickle_dump(("success", result), temporary)
    return True


def module_source_hash(path: str) -> str:
    """sha256 (16 hex) of the source file of ``module:callable``'s module: the code's version.

    It covers that one file only, not the modules it imports (nor data it reads): an edit there
    keeps the version; set ``objective_version:`` in the sweep to version such code yourself."""
    return _source_hash(_module_source(path)[1])


def _source_hash(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()[:16]


def _module_source(path: str) -> tuple[ModuleSpec, bytes]:
    """The spec of ``module:callable``'s module (found, not executed; its parent packages are
    imported) and its source file's bytes, read once."""
    with _importing(path):
        spec = importlib.util.find_spec(path.partition(":")[0])
        if spec is None:
            raise ModuleNotFoundError(f"no module named {path.partition(':')[0]!r}")
    origin = Path(spec.origin) if spec.has_location and spec.origin else None
    if origin is None or origin.suffix not in SOURCE_SUFFIXES or not origin.is_file():
        raise UserError(f"objective: cannot read the source of {path!r} to version its runs; "
                        "set objective_version: in the sweep")
    return spec, origin.read_bytes()


_VERIFIED: dict[str, tuple[str, ModuleType]] = {}
"""Module name -> (source hash, module) of each module :func:`_import_verified` executed in this
process, reused while it is still the one imported under that name (in-process jobs: ``debug``)."""


def _import_verified(path: str, source_hash: str) -> ModuleType:
    """``module:callable``'s module executed from the source bytes whose hash is ``source_hash``.

    The file is read once; those bytes are hashed and, when they are that version, compiled and
    executed as the module (named and registered in ``sys.modules`` as an import does, so its
    relative imports, ``__name__`` and pickling work as when imported). Hashing the file and then
    importing it would read it twice, and an edit in between would run unnamed code.

    Raises:
        UserError: one line naming the file when its source is not that version (nothing run).
    """
    module_name = path.partition(":")[0]
    known = _VERIFIED.get(module_name)
    if known is not None and known[0] == source_hash and sys.modules.get(module_name) is known[1]:
        return known[1]
    spec, source = _module_source(path)
    found = _source_hash(source)
    if found != source_hash:
        raise UserError(f"{spec.origin} changed since the sweep named this run (source {source_hash}, now "
                        f"{found}); nothing was run: re-running certify runs this point with the new code "
                        "(the old code's trials are marked superseded)")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module  # before executing it, as an import does
    try:
        exec(compile(source, spec.origin, "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - the verified source
    except BaseException:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise
    parent, _, child = module_name.rpartition(".")
    if parent:  # `import pkg.mod` then `pkg.mod` reads the attribute an import sets
        setattr(sys.modules[parent], child, module)
    _VERIFIED[module_name] = (found, module)
    return module


class CallableObjective:
    """The sweep's ``objective: module:callable`` (see the module docstring); imported once here,
    so a path that does not import fails in the controller with one line."""

    stop_grace_s = 0.0
    """Seconds a run gets to stop when its controller is interrupted: nothing to save here."""

    def __init__(self, path: str, version: str | None = None) -> None:
        import_callable(path)  # fail early, in the controller, with one line
        self.path = path
        # the version when it is the module's source: each job checks that it runs that source
        self.source_hash = module_source_hash(path) if version is None else None
        self.version = version if version is not None else self.source_hash

    def identity(self, params: Mapping[str, Any], where: str | None = None) -> str:
        """The run's identity (nothing to check: the callable takes any params; ``where`` is unused)."""
        return config_hash({"objective": self.path, "version": self.version, "params": dict(params)})

    def task(self, params: Mapping[str, Any], run_dir: Path, identity: str, group: str | None = None) -> RunTask:
        """The job of one point; `identity` (`identity(params)`, which names `run_dir`) is checked
        through its part that can change under the job: the module's source (:attr:`source_hash`,
        when it versions the runs); `group` (the certification) only labels train's trackers."""
        return RunTask(str(run_dir), params, objective=self.path, source_hash=self.source_hash)

    def link(self, out_dir: Path, task: str, point: Mapping[str, Any], run_dir: Path) -> None:
        """Nothing to link: a callable objective's runs write no TensorBoard events."""


@contextlib.contextmanager
def _naming(where: str | None) -> Iterator[None]:
    """A UserError raised inside names ``where`` first (the sweep entry whose run it is)."""
    try:
        yield
    except UserError as exc:
        if where is None:
            raise
        raise UserError(f"{where}: {exc}") from None


def _set(config: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    config[leaf] = value


class TrainObjective:
    """The default objective: one train/ run per point (see the module docstring)."""

    stop_grace_s = 120.0
    """Seconds a local run gets to stop when its controller is interrupted: the step in progress
    and a checkpoint (seconds at toy scale; a 1.5b model's 18.5 GB state takes longer)."""

    def __init__(self, sweep: Sweep) -> None:
        train = sweep.train or BaseTrain()
        self.base = train.config()
        if train.data.store is not None:  # jobs may run elsewhere (SLURM): pin the store's location
            self.base["data"]["store"] = str(Path(train.data.store).absolute())
        self.pools = sweep.pools
        self.source = f"{sweep.name}: train"
        self._ready: set[tuple[str, str]] = set()  # (pool, store) checked: tokenized for the store

    def config(self, params: Mapping[str, Any], where: str | None = None):
        """The validated RunConfig for ``params``: the one check of a run's train config and pool,
        made before the sweep starts (at :meth:`search.sweep.Sweep.runs_known_before`), by
        ``search plan`` (without the pools) and again at each dispatch, at the point asked for (a
        pool is read once per controller; one removed later is refused by the run's job).

        Raises:
            UserError: one line naming the field (or pool) and what was expected, after ``where``
                (the sweep entry whose run it is, e.g. ``transfers[0] (t)``) when given.
        """
        with _naming(where):
            return self._config(params)

    def _config(self, params: Mapping[str, Any]):
        from train.config import RunConfig

        run = RunParams.split(params, TRAIN_AXES)
        config = copy.deepcopy(self.base)
        for axis, field in TRAIN_AXES.items():
            if axis in run.point:  # train validates each (an epochs value must be whole: never rounded here)
                _set(config, field, run.point[axis])
        method = run.method
        if method == REAL:
            _set(config, "data.synthetic", None)
            _set(config, "data.mixing_fraction", 0.0)
        else:
            g = int(run.g)
            _set(config, "data.synthetic", {"pool": str(resolve_pool(self.pools, method, g)), "algorithm": method,
                                            "g": g})
        if run.model is not None:  # student scaling: the same method on another model preset
            _set(config, "model.preset", run.model)
        if run.seed is not None:  # repeats and ensemble members: initialisation and data order
            _set(config, "seed", run.repeat)
            _set(config, "data.seed", run.repeat)
        parsed = parse_config(config, RunConfig, source=self.source)
        if parsed.data.synthetic is not None:
            self.check_pool(method, parsed.data.synthetic.pool, parsed.data.store)
        return parsed

    def check_pool(self, method: str, pool: str, store: str) -> None:
        """Refuse (one line) a pool training could not read: none there, or not tokenized for the
        store (what a run reads; checked once per pool, before any run is dispatched)."""
        from train.pool_tokens import require_pool_tokens
        from train.store import TokenStore

        if (pool, store) not in self._ready:
            pool_identity(pool, field=f"pools.{method}")  # the pool first: it is what the sweep names
            require_pool_tokens(pool, TokenStore.open(store), field=f"pools.{method}")
            self._ready.add((pool, store))

    def identity(self, params: Mapping[str, Any], where: str | None = None) -> str:
        """``RunConfig.identity()`` of the point's run (:meth:`config` checks it first; the data's
        manifests are read: a store that is not there is refused here, after ``where``)."""
        with _naming(where):
            return self._config(params).identity()

    def task(self, params: Mapping[str, Any], run_dir: Path, identity: str, group: str | None = None) -> RunTask:
        """The job of one point; `identity` is the one that named `run_dir` (`identity(params)` when
        the controller asked): the job trains only on data of that identity (:class:`RunTask`).
        `group` (the certification that asked first) groups its curves in TensorBoard/W&B
        (`tracking.group`, not part of the run's identity)."""
        config = self.config(params).model_dump(mode="json")
        if group is not None and config["tracking"]["group"] is None:
            config["tracking"]["group"] = group
        return RunTask(str(run_dir), params, train_config=config, identity=identity)

    def link(self, out_dir: Path, task: str, point: Mapping[str, Any], run_dir: Path) -> None:
        """Name the run in TensorBoard by its certification and point (:func:`link_tensorboard`)."""
        link_tensorboard(out_dir / TENSORBOARD_LINKS, task, point, run_dir)


def point_label(point: Mapping[str, Any]) -> str:
    """A point as a short file name: ``lr=0.01,wd=0.1,epochs=8`` (repeats and members add ``seed``).

    >>> point_label({"lr": 0.01, "wd": 0.1, "epochs": 8, "seed": 1})
    'lr=0.01,wd=0.1,epochs=8,seed=1'
    """
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def link_tensorboard(links_dir: Path, task: str, point: Mapping[str, Any], run_dir: Path) -> None:
    """``links_dir/{task}/{point}`` -> ``run_dir/tensorboard`` (relative, replaced atomically when a
    point's run changes). TensorBoard names a run by its path under ``--logdir``, and follows the
    link (measured with tensorboard 2.21); a run that several certifications share appears under
    each. The target may not exist yet: the run creates it when it starts."""
    link = links_dir / task / point_label(point)
    target = os.path.relpath(Path(run_dir) / RunDir.TENSORBOARD, link.parent)
    if link.is_symlink() and os.readlink(link) == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    os.replace(temporary, link)


def make_objective(sweep: Sweep) -> CallableObjective | TrainObjective:
    """The sweep's objective: its ``objective:`` callable, else train/ (:class:`TrainObjective`)."""
    if sweep.objective:
        return CallableObjective(sweep.objective, sweep.objective_version)
    return TrainObjective(sweep)
