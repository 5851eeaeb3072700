"""What one run is: params -> (identity, run directory, a job that returns metrics).

Two objectives:

- :class:`CallableObjective`: the sweep's ``objective: module:callable``, any
  ``f(params) -> float | {"loss": float, ...}``. Identity = hash of the import path, the code's
  version (``objective_version``, default the sha256 of the module's source file) and params.
- :class:`TrainObjective` (default): builds a train ``RunConfig`` from the sweep's ``train:``
  base and the point (``lr -> optim.lr``, ``wd -> optim.weight_decay``, ``epochs ->
  data.real_epochs``, ``mix -> data.mixing_fraction``; fixed ``method``/``g`` select
  ``data.synthetic``; ensemble ``seed`` sets ``seed`` and ``data.seed``), identity =
  ``RunConfig.identity()`` (which covers what the store and pool *are*, not their paths), and runs ``train.loop.run(config, run_dir)``.

The job is a :class:`RunTask`, a submitit ``Checkpointable``: on SLURM timeout/preemption it is
requeued as is and resumes from its run directory. A task holds an exclusive lock on its run
directory and returns an existing ``metrics.json`` without running, so a run is never computed
twice, even if it was (re)submitted twice.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import importlib
import inspect
import json
import math
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import submitit

from megadocs.config import config_hash, parse_config
from megadocs.errors import UserError
from search.sweep import TRAIN_AXES, Sweep

__all__ = ["RunTask", "CallableObjective", "TrainObjective", "make_objective", "normalise_metrics", "METRICS_FILE",
           "ObjectiveReturnError"]

METRICS_FILE = "metrics.json"
LOCK_FILE = ".run.lock"
INVALID = "invalid"
"""A job's result status when the objective returned no loss (never written to metrics.json)."""
JOB_FILE = "job.json"


class ObjectiveReturnError(ValueError):
    """The objective returned something that is not a loss (a user error, not a node failure)."""


def import_callable(path: str):
    """``module:attr`` -> a callable; UserError (one line) naming the path when it cannot be
    imported (whatever the module raises on import) or is not callable."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attr)
    except Exception as exc:  # noqa: BLE001 - a broken module may raise anything on import
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"objective: cannot import {path!r}: {type(exc).__name__}: {text}") from None
    if not callable(found):
        raise UserError(f"objective: {path!r} is a {type(found).__name__}, not a callable "
                        f"(expected f(params) -> float | {{'loss': float, ...}})")
    return found


def normalise_metrics(value: Any) -> dict[str, Any]:
    """A float or a dict with ``loss``/``val_loss`` -> metrics with ``status`` and ``val_loss``.

    NaN and +inf are a diverged run (``val_loss`` inf, as train records it); -inf is no loss: status
    ``failed`` with a ``reason``. Raises ObjectiveReturnError for anything that is not a number.
    """
    if isinstance(value, Mapping) and value.get("status") == "failed":
        return {**value, "reason": value.get("reason") or "failed"}  # already normalised: no loss
    if isinstance(value, Mapping):
        metrics = dict(value)
        loss = metrics.get("val_loss", metrics.get("loss"))
        if loss is None:
            raise ObjectiveReturnError(f"returned a dict without 'loss' or 'val_loss' (keys {sorted(metrics)})")
    else:
        metrics, loss = {}, value
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        try:
            if isinstance(loss, (str, bytes)):
                raise TypeError(loss)
            loss = float(loss)  # numpy and torch scalars
        except (TypeError, ValueError):
            raise ObjectiveReturnError(f"returned {str(loss)[:40]!r} ({type(loss).__name__}), not a number "
                                       f"(expected a float or {{'loss': float, ...}})") from None
    loss = float(loss)
    if math.isnan(loss):
        loss = math.inf
    if loss == -math.inf:
        metrics.update(status="failed", reason="the objective returned loss -inf (not a loss; check the objective)")
        metrics["val_loss"] = None
        return metrics
    metrics["val_loss"] = loss
    metrics.setdefault("status", "completed" if math.isfinite(loss) else "diverged")
    return metrics


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


class RunTask(submitit.helpers.Checkpointable):
    """One run as a submitit job. ``objective`` is an import path, or None for train/."""

    def __init__(self, run_dir: str, params: Mapping[str, Any], objective: str | None = None,
                 train_config: Mapping[str, Any] | None = None) -> None:
        self.run_dir = str(run_dir)
        self.params = dict(params)
        self.objective = objective
        self.train_config = dict(train_config) if train_config is not None else None

    def __call__(self) -> dict[str, Any]:
        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a duplicate submission waits, then reads the result
            metrics_path = run_dir / METRICS_FILE
            if metrics_path.is_file():
                return json.loads(metrics_path.read_text())
            _write_json_atomic(run_dir / JOB_FILE, {
                "host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
                "params": self.params,
            })
            if self.train_config is not None:
                return self._train(run_dir)
            start = time.perf_counter()
            try:
                metrics = normalise_metrics(import_callable(self.objective)(dict(self.params)))
            except ObjectiveReturnError as exc:  # the controller stops the sweep with this line
                return {"status": INVALID, "error": str(exc)}
            metrics.setdefault("wall_time_s", time.perf_counter() - start)
            metrics.setdefault("params", self.params)
            _write_json_atomic(metrics_path, metrics)
            return metrics

    def _train(self, run_dir: Path) -> dict[str, Any]:
        from train.config import RunConfig
        from train.loop import Preempted, run

        config = parse_config(self.train_config, RunConfig, source=str(run_dir / "config"))
        try:
            return normalise_metrics(run(config, run_dir))  # train writes metrics.json itself
        except Preempted as exc:
            # SIGTERM (scontrol requeue, preemption, scancel): the checkpoint is saved. Exit without
            # a submitit result, which would read as a failed run while SLURM runs the job again.
            raise SystemExit(3) from exc


def module_source_hash(path: str) -> str:
    """sha256 (16 hex) of the source file of ``module:callable``'s module: the code's version."""
    module = importlib.import_module(path.partition(":")[0])
    try:
        source = inspect.getsourcefile(module) or module.__file__
    except TypeError:  # a built-in module
        source = None
    if not source or not Path(source).is_file():
        raise UserError(f"objective: cannot read the source of {path!r} to version its runs; "
                        "set objective_version: in the sweep")
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]


class CallableObjective:
    def __init__(self, path: str, version: str | None = None) -> None:
        import_callable(path)  # fail early, in the controller, with one line
        self.path = path
        self.version = version if version is not None else module_source_hash(path)

    def identity(self, params: Mapping[str, Any]) -> str:
        return config_hash({"objective": self.path, "version": self.version, "params": dict(params)})

    def task(self, params: Mapping[str, Any], run_dir: Path) -> RunTask:
        return RunTask(str(run_dir), params, objective=self.path)


def _set(config: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    config[leaf] = value


class TrainObjective:
    """The default objective: one train/ run per point (see the module docstring)."""

    def __init__(self, sweep: Sweep) -> None:
        self.base = copy.deepcopy(sweep.train or {})
        store = self.base.get("data", {}).get("store")
        if isinstance(store, str):  # jobs may run elsewhere (SLURM): pin the store's location
            self.base["data"]["store"] = str(Path(store).absolute())
        self.pools = sweep.pools
        self.source = f"{sweep.name}: train"

    def config(self, params: Mapping[str, Any]):
        """The validated RunConfig for ``params`` (UserError naming the field if invalid)."""
        from train.config import RunConfig

        config = copy.deepcopy(self.base)
        for axis, field in TRAIN_AXES.items():
            if axis in params:
                value = params[axis]
                _set(config, field, int(round(value)) if axis == "epochs" else value)
        method = params.get("method", "real")
        if method == "real":
            _set(config, "data.synthetic", None)
            _set(config, "data.mixing_fraction", 0.0)
        else:
            g = int(params["g"])
            _set(config, "data.synthetic", {"pool": self.pool(method, g), "algorithm": method, "g": g})
        if "model" in params:  # student scaling: the same method on another model preset
            _set(config, "model.preset", params["model"])
        if "seed" in params:  # repeats and ensemble members: initialisation and data order
            _set(config, "seed", int(params["seed"]))
            _set(config, "data.seed", int(params["seed"]))
        return parse_config(config, RunConfig, source=self.source)

    def pool(self, method: str, g: int) -> str:
        entry = self.pools.get(method, self.pools.get(method.split("-")[0]))
        if entry is None:
            raise UserError(f"pools.{method}: no synthetic pool for method {method!r}")
        if isinstance(entry, Mapping):
            if g not in entry:
                raise UserError(f"pools.{method}: no pool for g={g} (have {sorted(entry)})")
            entry = entry[g]
        pool = Path(entry.format(g=g)).absolute()
        documents = pool / "assembled" / f"{method}-g{g}" / "documents.jsonl"
        if not documents.is_file():
            raise UserError(f"pools.{method}: {documents} not found (run `megadocs gen assemble --pool {pool} "
                            f"--algorithm {method} --g {g}` first)")
        return str(pool)

    def identity(self, params: Mapping[str, Any]) -> str:
        return self.config(params).identity()

    def task(self, params: Mapping[str, Any], run_dir: Path) -> RunTask:
        return RunTask(str(run_dir), params, train_config=self.config(params).model_dump(mode="json"))


def make_objective(sweep: Sweep) -> CallableObjective | TrainObjective:
    if sweep.objective:
        return CallableObjective(sweep.objective, sweep.objective_version)
    return TrainObjective(sweep)
