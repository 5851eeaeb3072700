"""The run contract: every name, path and record that two packages share, owned here once.

``train`` writes run directories and metrics that ``search`` stores in its ledger and ``analysis``
reads. Each of those agreements is declared in this module and imported by both sides
(docs/architecture.md, "The run contract"); the generation pool that ``gen`` writes and ``train``
reads has its own owner, :mod:`megadocs.pools`, and the megadoc rule :mod:`megadocs.megadoc`:

- the algorithm vocabulary (:data:`ALGORITHMS`, :data:`POOL_KIND`) and the sweep's methods
  (:data:`METHODS`: the algorithms plus :data:`REAL`);
- the run-directory layout (:class:`RunDir`);
- one run status (:class:`RunStatus`, and :class:`FailureKind`: why a run ended without metrics)
  and the metrics record (:class:`RunMetrics`, its benchmark scores :class:`BenchmarkScore`);
- the validation-set names (:data:`IID`, :data:`IID_SHORT`, :data:`IID_LONG`) and what a name the
  user gives may be (:data:`NAME_PATTERN`);
- one durability rule for files (:func:`atomic_file`, :func:`write_atomic`, :func:`write_json`,
  :func:`replace_dir`) and standard JSON (:func:`dumps_json`: no NaN/Infinity, ever).

Example:
    >>> RunMetrics.model_validate({"status": "diverged", "val_loss": float("inf")}).val_loss is None
    True
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import IO, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from megadocs import compat
from megadocs.config import format_validation_error
from megadocs.errors import UserError, names_file

__all__ = [
    "read_json_object",
    "Algorithm",
    "ALGORITHMS",
    "PoolKind",
    "POOL_KIND",
    "REAL",
    "METHODS",
    "NAME_PATTERN",
    "MANIFEST",
    "IID",
    "IID_SHORT",
    "IID_LONG",
    "IID_SETS",
    "half_names",
    "describe_validation_set",
    "RunStatus",
    "FailureKind",
    "RunMetrics",
    "WindowCounts",
    "BenchmarkScore",
    "RunDir",
    "finite_or_none",
    "dumps_json",
    "atomic_file",
    "write_atomic",
    "write_json",
    "replace_dir",
]

# --- the algorithm vocabulary --------------------------------------------------------------

Algorithm = Literal["simple", "stitched", "stitched-first", "stitched-none", "latent", "self-distill"]
"""How a generation pool becomes the synthetic stream (gen/assemble.py; paper.md). ``self-distill``:
unconditional samples of a trained model (``megadocs gen sample``), the self-distillation baseline."""
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)


class _StrEnum(str, Enum):
    """A str Enum that prints as its value (``f"{PoolKind.SAMPLE}"`` == ``"sample"``) on every
    Python (3.10's and 3.11's ``format`` of a str mixin otherwise differ)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class PoolKind(_StrEnum):
    """What a generation pool holds (``manifest.json`` ``kind``)."""

    REPHRASE = "rephrase"
    THOUGHTS = "thoughts"
    SAMPLE = "sample"


POOL_KIND: dict[Algorithm, PoolKind] = {
    "simple": PoolKind.REPHRASE,
    "stitched": PoolKind.REPHRASE,
    "stitched-first": PoolKind.REPHRASE,
    "stitched-none": PoolKind.REPHRASE,
    "latent": PoolKind.THOUGHTS,
    "self-distill": PoolKind.SAMPLE,
}
"""The pool kind each algorithm is assembled from."""
assert set(POOL_KIND) == set(ALGORITHMS)

REAL = "real"
"""The sweep method without a synthetic stream (real data only)."""
METHODS: tuple[str, ...] = (REAL, *ALGORITHMS)
"""Values of a certification's ``fixed.method``."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
"""A name the user gives (a sweep, a certification, a study, a ``NAME=`` of a flag): a letter or
digit, then letters, digits and ``_ . + -``; no ``/`` or ``=``, so it never reads as a path."""
assert all(re.fullmatch(NAME_PATTERN, method) for method in METHODS)

MANIFEST = "manifest.json"
"""The manifest of every data directory: a token store, a generation pool, a tokenized pool."""

# --- validation sets -----------------------------------------------------------------------

IID = "iid"
"""The held-out split of the training store: the objective every search minimises."""
IID_SHORT, IID_LONG = f"{IID}_short", f"{IID}_long"
IID_SETS = (IID, IID_SHORT, IID_LONG)
"""Names train reserves (an ``eval.extra`` set may not take them)."""


def half_names(name: str) -> tuple[str, str]:
    """The short/long-document halves of validation set ``name``: ``iid`` -> iid_short, iid_long."""
    return f"{name}_short", f"{name}_long"


def describe_validation_set(name: str) -> str:
    """What a validation-set name means, in a sentence for users (reports, the README's definitions).

    >>> describe_validation_set("iid_long")
    'iid_long: the iid loss on the tokens of the longer half of those held-out documents (ranked by length; a token counts in the half of the document it belongs to)'
    """
    if name == IID:
        return (f"{IID}: loss on held-out documents of the training store (the same kind of text as the real "
                "training data, never trained on): the objective every search minimises")
    for half, side in zip(half_names(IID), ("shorter", "longer")):
        if name == half:
            return (f"{name}: the {IID} loss on the tokens of the {side} half of those held-out documents (ranked by "
                    "length; a token counts in the half of the document it belongs to)")
    return f"{name}: loss on an extra held-out store (`eval.extra` in the train config)"


# --- run status and metrics ----------------------------------------------------------------


class RunStatus(_StrEnum):
    """Where a run stands: in ``metrics.json`` (completed/diverged) and in the search ledger."""

    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"  # trained to a non-finite loss: evaluated, loss is null (never best)
    FAILED = "failed"  # infrastructure failure after all retries (the ledger's ``reason`` says why)
    SUPERSEDED = "superseded"  # ledger: finished on data or code that has changed since; kept, never used

    @property
    def finished(self) -> bool:
        """The run produced a result (a diverged run is a result: an infinitely bad one)."""
        return self in (RunStatus.COMPLETED, RunStatus.DIVERGED)


class FailureKind(_StrEnum):
    """Why a run ended without metrics, as its job said (never written to ``metrics.json``): a
    search job's result (``search.objective.JobFailure``) and the ledger's ``failure`` of its
    FAILED trial. A run that failed otherwise (its job lost or killed after every retry) has none."""

    INVALID = "invalid"
    """The objective returned no loss, or the job met a user error (a store or pool not there, the
    data replaced at its path since the run was named, a config train refuses): the cause lies
    outside the run and nothing was trained. Not retried; the controller stops the sweep with its
    one line, and once the user fixed the cause the next ``certify`` runs the point again."""
    FAILED = "failed"
    """The objective returned loss -inf: a failed run with its reason, kept (not run again) until
    ``--retry-failed``: a deterministic failure would only fail again."""


_NON_FINITE_STRINGS = {"inf", "-inf", "infinity", "-infinity", "nan"}


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (and the "inf"/"nan" strings older ledgers stored)
    replaced by None, through mappings and lists: what standard JSON can carry."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and value.lower() in _NON_FINITE_STRINGS:
        return None
    if isinstance(value, Mapping):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


class WindowCounts(BaseModel):
    """Training windows of a run (train/streams.py): the real stream's windows per epoch, and the
    real and synthetic windows the run read (real: each window ``real_epochs`` times)."""

    model_config = ConfigDict(extra="forbid")

    real_per_epoch: int
    real_seen: int
    synthetic_seen: int


class BenchmarkScore(BaseModel):
    """One task's zero-shot scores in ``metrics.benchmarks`` (``train.downstream.evaluate_benchmarks``
    writes ``{task: {acc, acc_norm, items}, "average": {acc, acc_norm}}``; analysis reads ``acc``).

    Example:
        >>> BenchmarkScore.table({"sciq": {"acc": 0.7, "acc_norm": 0.6, "items": 3}})["sciq"].acc
        0.7
    """

    model_config = ConfigDict(extra="allow", frozen=True)  # other lm-eval metrics are kept, not dropped

    acc: float | None
    """Accuracy; null when lm-eval gave none (NaN)."""
    acc_norm: float | None = None
    """Length-normalised accuracy."""
    items: int | None = None
    """Items scored (absent on the ``average`` row)."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Older forms (a bare accuracy, an ``accuracy`` key): :data:`megadocs.compat.RECORDS`."""
        return compat.upgrade(compat.BENCHMARK_SCORE, data)

    @classmethod
    def table(cls, scores: Mapping[str, Any]) -> dict[str, BenchmarkScore]:
        """``evaluate_benchmarks``' output (task -> scores) as records, validated."""
        return {str(task): cls.model_validate(score) for task, score in scores.items()}


class RunMetrics(BaseModel):
    """``RUN/metrics.json``: written by train (or a sweep's own objective), stored by the search
    ledger, read by analysis. Its presence in a run directory means the run is done.

    Losses are finite numbers or null: a diverged run has ``val_loss: null`` and ``status:
    diverged``; a validation half with no tokens is null. Files written before this rule (NaN,
    Infinity, or the ledger's "inf" strings) are migrated on read. Fields of a sweep's own
    objective (``objective: module:callable``) are kept as extra fields.
    """

    model_config = ConfigDict(extra="allow")

    status: RunStatus
    """completed or diverged."""
    val_loss: float | None
    """The objective: iid validation loss; null when diverged."""
    val_losses: dict[str, float | None] = {}
    """Every validation set: iid, iid_short, iid_long, then ``eval.extra`` sets."""
    val_windows: dict[str, int] | None = None
    """Windows each validation set scored (fewer than requested when its split holds fewer)."""
    val_windows_requested: int | None = None
    """``eval.val_windows`` as asked."""
    steps: int | None = None
    windows: WindowCounts | None = None
    """Training windows per real epoch and read by the run, real and synthetic."""
    mixing_fraction_realised: float | None = None
    """Synthetic share of the training windows read (within one window of ``data.mixing_fraction``)."""
    tokens_seen: int | None = None
    wall_time_s: float | None = None
    tokens_per_s: float | None = None
    config_hash: str | None = None
    params: int | None = None
    """Model parameter count."""
    point: dict[str, Any] | None = None
    """The sweep point a callable objective was called with."""
    benchmarks: dict[str, BenchmarkScore] | None = None
    """lm-eval scores by task (``eval.benchmarks``), and their ``average``."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Non-finite numbers (NaN/Infinity, the "inf" strings of older ledgers) -> null, then
        older shapes upgraded (:data:`megadocs.compat.RECORDS`: ``params`` -> ``point``, a
        completed run without a finite loss -> diverged)."""
        if not isinstance(data, Mapping):
            return data
        return compat.upgrade(compat.RUN_METRICS, finite_or_none(dict(data)))

    @model_validator(mode="after")
    def _diverged_has_no_loss(self) -> RunMetrics:
        if self.status is RunStatus.DIVERGED:
            self.val_loss = None
        if not self.status.finished:
            raise ValueError(f"status: a finished run is completed or diverged, got {self.status.value!r}")
        return self

    @property
    def objective(self) -> float:
        """The loss a search minimises: ``val_loss``, or +inf for a diverged run."""
        return math.inf if self.val_loss is None else self.val_loss

    @property
    def extra(self) -> dict[str, Any]:
        """Fields a sweep's own objective returned beyond the typed ones."""
        return dict(self.model_extra or {})

    def to_json(self) -> dict[str, Any]:
        """The JSON object (standard JSON: no NaN/Infinity), typed fields first; optional fields
        left at their default are left out (``status`` and ``val_loss`` are always there)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    @classmethod
    def parse(cls, data: Any, *, source: str = "metrics") -> RunMetrics:
        """Validate a loaded object (a RunMetrics passes through); UserError naming ``source``."""
        if isinstance(data, RunMetrics):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, source, model=cls)) from None

    @classmethod
    def load(cls, path: str | Path) -> RunMetrics:
        """Read a metrics.json (older files with NaN/Infinity are accepted and migrated)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())  # Python's reader accepts NaN/Infinity
        except FileNotFoundError:
            raise UserError(f"{path}: file not found (expected a finished run's metrics)") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.parse(data, source=str(path))

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())


def read_json_object(path: str | Path, what: str, advice: str) -> dict[str, Any]:
    """The JSON object in ``path``, or a UserError naming the file, saying it is not ``what`` (cut
    short, not UTF-8, another JSON value) and giving ``advice``; the file is left as it is.

    >>> read_json_object(Path("/dev/null"), "a pool manifest", "restore it")
    Traceback (most recent call last):
    megadocs.errors.UserError: /dev/null: not a pool manifest (invalid JSON: Expecting value: line 1 column 1 (char 0)); restore it
    """
    try:
        data = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not {what} (invalid JSON: {exc}); {advice}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not {what} (a JSON {type(data).__name__}); {advice}")
    return data


# --- the run directory ---------------------------------------------------------------------


class RunDir:
    """The files of one run directory (``megadocs train --out RUN``; a sweep's ``runs/<id>``).

    ``metrics.json`` is written last: its presence means the run is done. ``checkpoint/`` is
    removed once ``model/`` and the metrics are written.

    >>> RunDir("runs/x").metrics.as_posix()
    'runs/x/metrics.json'
    """

    CONFIG = "config.yaml"  # the resolved RunConfig
    CONFIG_HASH = "config_hash"  # RunConfig.identity(); refuses another run in the same RUN
    IDENTITY = "identity.json"  # what the identity covers: the data's manifest identities
    CHECKPOINT = "checkpoint"  # resumable training state (train.checkpoint)
    LOG = "log.jsonl"  # one line per LOG_EVERY steps
    MODEL = "model"  # HF save_pretrained + tokenizer
    METRICS = "metrics.json"  # RunMetrics
    PROVENANCE = "provenance.json"  # megadocs.provenance: code, libraries, host, command, job
    TENSORBOARD = "tensorboard"  # train.tracking: TensorBoard event files
    WANDB = "wandb"  # train.tracking: W&B (offline) run, only with tracking.wandb
    JOB = "job.json"  # search: who runs it (host, pid, job id, params)
    LOCK = ".run.lock"  # search: one job at a time per run directory

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    config = property(lambda self: self.path / RunDir.CONFIG)
    config_hash = property(lambda self: self.path / RunDir.CONFIG_HASH)
    identity = property(lambda self: self.path / RunDir.IDENTITY)
    checkpoint = property(lambda self: self.path / RunDir.CHECKPOINT)
    log = property(lambda self: self.path / RunDir.LOG)
    model = property(lambda self: self.path / RunDir.MODEL)
    metrics = property(lambda self: self.path / RunDir.METRICS)
    provenance = property(lambda self: self.path / RunDir.PROVENANCE)
    tensorboard = property(lambda self: self.path / RunDir.TENSORBOARD)
    wandb = property(lambda self: self.path / RunDir.WANDB)
    job = property(lambda self: self.path / RunDir.JOB)
    lock = property(lambda self: self.path / RunDir.LOCK)

    def is_done(self) -> bool:
        return self.metrics.is_file()

    def read_metrics(self) -> RunMetrics | None:
        """The run's metrics, or None while it is not done."""
        return RunMetrics.load(self.metrics) if self.is_done() else None

    def has_model(self) -> bool:
        return (self.model / "config.json").is_file()


# --- standard JSON and durable writes ------------------------------------------------------


def dumps_json(data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Standard JSON text (RFC 8259): refuses NaN/Infinity instead of writing them.

    Callers turn a non-finite number into null plus a state first (:func:`finite_or_none`,
    :class:`RunMetrics`).

    Raises:
        ValueError: ``data`` holds a non-finite float.
    """
    return json.dumps(data, indent=indent, allow_nan=False, sort_keys=sort_keys)


def _fsync(path: str | Path) -> None:
    """fsync a file, or a directory to make a rename in it durable (a no-op where it cannot be
    opened: some file systems refuse to open directories)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """A handle on a private temporary file beside ``path`` that becomes ``path`` on success.

    On leaving the block the file is flushed, fsynced, renamed over ``path`` and the directory
    fsynced: readers see the old file or the whole new one, never a part, also after a crash.
    On an exception the temporary file is removed and ``path`` is untouched; a failed write (a
    full disk) names ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with names_file(path), open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write text or bytes to ``path`` atomically and durably (:func:`atomic_file`)."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)


def write_json(path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write standard JSON (:func:`dumps_json`, a trailing newline) atomically.

    Raises:
        ValueError: ``data`` holds NaN/Infinity (nothing is written).
    """
    try:
        text = dumps_json(data, indent=indent, sort_keys=sort_keys)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc} (write null plus a state instead)") from None
    write_atomic(path, text + "\n")


def _fsync_tree(root: Path) -> None:
    """Every file and folder under ``root``, ``root`` included."""
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(directory, name))
        _fsync(directory)


def replace_dir(tmp: str | Path, final: str | Path, *, remove_existing: bool = True) -> None:
    """Make the finished directory ``tmp`` become ``final``: its files fsynced, any earlier
    ``final`` removed (unless ``remove_existing`` is False, when only an empty one may be
    replaced and OSError says otherwise), one rename, the parent fsynced."""
    tmp, final = Path(tmp), Path(final)
    _fsync_tree(tmp)
    if remove_existing:
        shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync(final.parent)
