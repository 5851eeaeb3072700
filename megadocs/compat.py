"""Readers of older on-disk and ledger formats, gathered here: one table, one format version per record.

Every record that was ever written in another shape, or carries a format version, has an entry in
:data:`RECORDS`: where it lives, its current format version, how an older one is recognised (most
records carry no version field: :attr:`Record.detect` reads the version off the data's shape), and
per older version either

- a pure **upgrade** ``data -> data`` to the next version (applied in turn up to the current one), or
- a declared **format break**: such data is refused in one line naming the file and field and what to
  do (:class:`FormatBreak`, a :class:`~megadocs.errors.UserError`), or
- **kept**: the reader keeps the recorded value as it is and re-checks it another way (said in
  :attr:`Older.how`, e.g. an earlier pool fingerprint is recomputed by the earlier rule).

The readers call :func:`upgrade` (or :func:`version`) and then read the current shape only. What is
written to disk today is unchanged: no version field is added to a record that never had one.

An upgrade spells the older file's values as that file wrote them (literal strings, not today's
enums): a format that was written is history, and its reader must not move when a name moves today.
``tests/megadocs/test_compat.py`` checks, for every record, that each older example upgrades to
something today's reader accepts and that current data passes through unchanged.

This module imports nothing of the project but :mod:`megadocs.errors`, so that every owner of a
record (:mod:`megadocs.formats` included) can import it.

Example:
    >>> upgrade(BENCHMARK_SCORE, 0.7)
    {'acc': 0.7}
    >>> version(JOB_RESULT, {"status": "failed", "reason": "oom"}), RECORDS[JOB_RESULT].current
    (1, 2)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from megadocs.errors import UserError

__all__ = [
    "Older", "Record", "RECORDS", "FormatBreak", "version", "is_older", "upgrade", "older",
    "RUN_METRICS", "BENCHMARK_SCORE", "ENSEMBLE_REPORT", "JOB_RESULT", "BOUND", "RUN_REVISION",
    "SYNTHETIC_IDENTITY", "POOL_TOKENS", "CHECKPOINT", "TOKEN_STORE", "POOL_MANIFEST", "POOL_FINGERPRINT", "LEDGER_GRID_PARAMS",
    "RUN_RECORD", "CONTROLLER_HOLDER",
]


class FormatBreak(UserError):
    """Data in a format this code refuses (a declared break): one line naming where and what to do."""


@dataclass(frozen=True)
class Older:
    """One older version of a record: what wrote it, and how it is read today (exactly one of
    ``upgrade``, ``refuse``, or neither: kept as recorded, ``how`` says how the reader treats it)."""

    version: int
    written: str
    """What wrote it and until when ("files without ``format``, before commit abc1234")."""
    example: Any
    """A document of this version (the tests upgrade it; the docs show it)."""
    upgrade: Callable[[Any], Any] | None = None
    """Pure: this version's data -> the next version's (a new object; the argument is not changed)."""
    refuse: str | None = None
    """A declared format break: what the user does about it (the end of the one-line error)."""
    how: str | None = None
    """Neither upgraded nor refused: how the reader treats the recorded value."""
    dated: bool = True
    """False: its data looks like a later version's (only a kept value: its reader tells them apart)."""

    def __post_init__(self) -> None:
        assert sum(x is not None for x in (self.upgrade, self.refuse, self.how)) == 1, self.version
        assert self.dated or self.how is not None, self.version


@dataclass(frozen=True)
class Record:
    """A versioned record: where it lives, who reads it, its current version and the older ones."""

    where: str
    """The file and field it is read from (named in a format break)."""
    reader: str
    """The current reader (``module:qualname``), which calls :func:`upgrade` or :func:`version`."""
    current: int
    detect: Callable[[Any], int]
    """The version of raw data (the current version for data this table cannot date)."""
    example: Any
    """A document in the current shape."""
    older: tuple[Older, ...]


# --- run metrics (RUN/metrics.json; the ledger's `metrics` attribute) ----------------------

RUN_METRICS = "run-metrics"


def _metrics_version(data: Any) -> int:
    if not isinstance(data, Mapping):
        return 2
    params_as_point = isinstance(data.get("params"), Mapping)
    completed_without_loss = data.get("val_loss") is None and data.get("status") == "completed"
    return 1 if params_as_point or completed_without_loss else 2


def _metrics_1_to_2(data: Mapping[str, Any]) -> dict[str, Any]:
    """A callable objective's point stored as ``params`` -> ``point``; a completed run without a
    finite loss -> diverged. (Non-finite numbers, and the ledger's "inf" strings, are nulled by
    :func:`megadocs.formats.finite_or_none` before: the rule every record is read and written by.)"""
    data = dict(data)
    if isinstance(data.get("params"), Mapping):
        data["point"] = data.pop("params")
    if data.get("val_loss") is None and data.get("status") == "completed":
        data["status"] = "diverged"
    return data


# --- a task's benchmark scores (metrics.benchmarks[task]) -----------------------------------

BENCHMARK_SCORE = "benchmark-score"


def _score_version(data: Any) -> int:
    if isinstance(data, int | float) and not isinstance(data, bool):
        return 1
    if isinstance(data, Mapping) and "acc" not in data and "accuracy" in data:
        return 1
    return 2


def _score_1_to_2(data: Any) -> Any:
    """A bare number is that task's accuracy; an ``accuracy`` key is ``acc``."""
    if isinstance(data, Mapping):
        return {("acc" if key == "accuracy" else key): value for key, value in data.items()}
    return {"acc": data}


# --- the ensemble report (megadocs train ensemble --json OUT) -------------------------------

ENSEMBLE_REPORT = "ensemble-report"


def _report_version(data: Any) -> int:
    sets = data.get("sets") if isinstance(data, Mapping) else None
    return 1 if isinstance(sets, Mapping) and any(isinstance(rows, list) for rows in sets.values()) else 2


def _report_1_to_2(data: Mapping[str, Any]) -> dict[str, Any]:
    """A set written as a bare list of rows -> ``{"by_k": rows}`` (no ``source``). Rows' keys since
    dropped (e.g. ``tokens``) are ignored by the row record itself."""
    sets = {name: {"by_k": rows} if isinstance(rows, list) else rows for name, rows in data["sets"].items()}
    return {**data, "sets": sets}


# --- a job's result (the submitit result pickle a controller adopts) ------------------------

JOB_RESULT = "job-result"


def _job_version(data: Any) -> int:
    return 1 if isinstance(data, Mapping) and data.get("status") in ("invalid", "failed") else 2


def _job_1_to_2(data: Mapping[str, Any]) -> dict[str, Any]:
    """A status dict -> the fields of ``search.objective.JobFailure`` (``kind``, ``reason``)."""
    if data["status"] == "invalid":
        return {"kind": "invalid", "reason": data.get("error") or "returned no loss"}
    return {"kind": "failed", "reason": data.get("reason") or "failed"}


# --- a search bound (a certificate's bounds_hit / soft_bounds; search status --json) ---------

BOUND = "bound"


def _bound_version(data: Any) -> int:
    return 1 if isinstance(data, Mapping) and not {"value", "extended"} <= data.keys() else 2


def _bound_1_to_2(data: Mapping[str, Any]) -> dict[str, Any]:
    """No ``extended`` (no extension existed): false; no ``value``: null."""
    return {"value": None, "extended": False, **data}


# --- the run identity (RUN/identity.json) ----------------------------------------------------

RUN_REVISION = "run-revision"
SYNTHETIC_IDENTITY = "synthetic-identity"


def _revision_version(data: Any) -> int:
    return 1 if isinstance(data, Mapping) and "training_revision" not in data else 2


def _revision_1_to_2(data: Mapping[str, Any]) -> dict[str, Any]:
    """Recorded before revisions were: training revision 1 (which train then refuses by revision)."""
    return {**data, "training_revision": 1}


def _synthetic_version(data: Any) -> int:
    """Of ``identity.json``'s ``data.synthetic`` (None for a run without a synthetic stream)."""
    if not isinstance(data, Mapping) or "assembled" not in data:
        return 3
    return 1 if data.get("tokenization") == "pieces/1" else 2


# --- a sharded step's record of runs (FOLDER/submitit/submissions.json) ---------------------

RUN_RECORD = "run-record"
_PROCESS_PLACE = ("boot", "pidns", "heartbeat")


def _record_entries(data: Any) -> list[Any]:
    entries = data.get("submissions") if isinstance(data, Mapping) else None
    return entries if isinstance(entries, list) else []


def _of_kind(data: Any, kind: str) -> list[Mapping[str, Any]]:
    return [e for e in _record_entries(data) if isinstance(e, Mapping) and e.get("kind") == kind]


def _run_record_version(data: Any) -> int:
    """Version 1: a process entry without a heartbeat key (recorded before heartbeats); 2: a local
    array without its host (recorded before local arrays said where their pids are)."""
    if any("heartbeat" not in entry for entry in _of_kind(data, "process")):
        return 1
    return 2 if any("host" not in entry for entry in _of_kind(data, "local")) else 3


def _run_record_1_to_2(data: Mapping[str, Any]) -> dict[str, Any]:
    """A process entry without boot, pid namespace and heartbeat: all three unknown (null); it is
    asked through /proc where its host is this one, and counts as going elsewhere (no heartbeat to
    age), as it did when written."""
    entries = [{**dict.fromkeys(_PROCESS_PLACE), **entry}
               if isinstance(entry, Mapping) and entry.get("kind") == "process" else entry
               for entry in _record_entries(data)]
    return {**data, "submissions": entries}


def _run_record_2_to_3(data: Mapping[str, Any]) -> dict[str, Any]:
    """A local array without host, boot, pid namespace and heartbeat: all unknown (null); its
    pids are asked here, as they were when written."""
    entries = [{**dict.fromkeys(("host", *_PROCESS_PLACE)), **entry}
               if isinstance(entry, Mapping) and entry.get("kind") == "local" else entry
               for entry in _record_entries(data)]
    return {**data, "submissions": entries}


# --- the controller lock's holder (ledger: study `{sweep}#controller`, attribute `holder`) -----

CONTROLLER_HOLDER = "controller-holder"
_HOLDER_PLACE = ("started", "boot", "pidns")


def _holder_version(data: Any) -> int:
    """Version 1: a holder without its kernel boot and pid namespace (recorded by host and pid)."""
    return 1 if isinstance(data, Mapping) and not {"boot", "pidns"} <= data.keys() else 2


def _holder_1_to_2(data: Mapping[str, Any]) -> dict[str, Any]:
    """Boot, pid namespace (and a start time, where absent) unknown (null): a holder of this host
    is asked through /proc, one elsewhere by its heartbeat, as when it was written."""
    return {**dict.fromkeys(_HOLDER_PLACE), **data}


# --- formats that carry a `format` field ---------------------------------------------------

POOL_TOKENS = "pool-tokens"
CHECKPOINT = "checkpoint"
TOKEN_STORE = "token-store"
POOL_MANIFEST = "pool-manifest"


def _format_field(prefix: str, where: str, reader: str, current: int, written: str = "", refuse: str = "") -> Record:
    """A record versioned by its ``format: "{prefix}/N"`` field whose earlier N (if any: ``written``)
    is refused (version 0: the field is absent or another format's)."""

    def detect(data: Any) -> int:
        found = data.get("format") if isinstance(data, Mapping) else None
        name, _, number = str(found).rpartition("/")
        return int(number) if name == prefix and number.isdigit() else 0

    earlier = Older(current - 1, f"`{prefix}/{current - 1}` ({written})", example={"format": f"{prefix}/{current - 1}"},
                    refuse=refuse)
    return Record(where=f"{where}: format", reader=reader, current=current, detect=detect,
                  example={"format": f"{prefix}/{current}"}, older=(earlier,) if written else ())


# --- kept as recorded ---------------------------------------------------------------------

POOL_FINGERPRINT = "pool-fingerprint"
LEDGER_GRID_PARAMS = "ledger-grid-params"


def _fingerprint_version(data: Any) -> int:
    """Of a pool manifest's ``generator_revision``: ``dir-sha256:`` is version 1; a ``sha256:`` of
    version 2 (every file) and 3 (today's) look alike: only recomputing tells them apart."""
    return 1 if str(data).startswith("dir-sha256:") else 3


def _grid_param_version(data: Any) -> int:
    """Of a param's distribution as Optuna stores it (JSON): a categorical over finite numbers is
    version 1 (today a numeric axis is an Int/Float distribution, a categorical one is not numeric)."""
    found = json.loads(data) if isinstance(data, str) else data
    if not isinstance(found, Mapping) or found.get("name") != "CategoricalDistribution":
        return 2
    choices = found.get("attributes", {}).get("choices", [])
    numeric = all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in choices)
    return 1 if choices and numeric else 2


RECORDS: dict[str, Record] = {
    RUN_METRICS: Record(
        where="metrics.json", reader="megadocs.formats:RunMetrics", current=2, detect=_metrics_version,
        example={"status": "completed", "val_loss": 3.25, "point": {"lr": 0.003}},
        older=(Older(1, "metrics.json and ledger metrics before the run contract (ef164c8): a callable "
                        "objective's point as `params`, a completed run with no finite loss",
                     example={"status": "completed", "val_loss": None, "params": {"lr": 0.003}},
                     upgrade=_metrics_1_to_2),)),
    BENCHMARK_SCORE: Record(
        where="metrics.json: benchmarks.TASK", reader="megadocs.formats:BenchmarkScore", current=2,
        detect=_score_version, example={"acc": 0.7, "acc_norm": 0.6, "items": 3},
        older=(Older(1, "scores analysis accepted before the typed record (6c34f3a): a bare accuracy, "
                        "or an `accuracy` key", example={"accuracy": 0.4, "acc_stderr": 0.1},
                     upgrade=_score_1_to_2),)),
    ENSEMBLE_REPORT: Record(
        where="ensemble report (`megadocs train ensemble --json`)", reader="train.ensemble_report:EnsembleReport",
        current=2, detect=_report_version,
        example={"members": ["a", "b"], "context": 64, "windows": 8,
                 "sets": {"iid": {"source": {"store": "s", "split": "val"}, "by_k": [{"k": 1, "loss": 3.4}]}}},
        older=(Older(1, "reports before a set recorded its source (before ab8f100): a set as a bare list of "
                        "rows, no `context` or `windows`",
                     example={"members": ["a"], "sets": {"iid": [{"k": 1, "loss": 3.4, "tokens": 512}]}},
                     upgrade=_report_1_to_2),)),
    JOB_RESULT: Record(
        where="job result (submitit result pickle)", reader="search.objective:JobFailure.of", current=2,
        detect=_job_version, example={"kind": "failed", "reason": "the objective returned loss -inf"},
        older=(Older(1, "jobs run by code before typed job results (f62b2b5) returned a status dict",
                     example={"status": "invalid", "error": "returned no loss"}, upgrade=_job_1_to_2),)),
    BOUND: Record(
        where="certificate: bounds_hit / soft_bounds", reader="search.grid:Bound.parse", current=2,
        detect=_bound_version, example={"axis": "epochs", "side": "upper", "value": 64, "extended": True},
        older=(Older(1, "bounds recorded before search bounds could be extended (96ab7f5): no `extended`",
                     example={"axis": "epochs", "side": "upper", "value": 64}, upgrade=_bound_1_to_2),)),
    RUN_REVISION: Record(
        where="identity.json: training_revision", reader="train.run_dir:recorded_revision", current=2,
        detect=_revision_version, example={"identity": "0123456789abcdef", "data": {}, "training_revision": 2},
        older=(Older(1, "identity.json before training revisions were recorded (0abe579): revision 1",
                     example={"identity": "0123456789abcdef", "data": {}}, upgrade=_revision_1_to_2),)),
    SYNTHETIC_IDENTITY: Record(
        where="identity.json: data.synthetic", reader="train.run_dir:earlier_synthetic_identity", current=3,
        detect=_synthetic_version, example={"algorithm": "stitched", "g": 2, "pool": {}, "rule": 1},
        older=(Older(1, "a latent run recorded by its assembled file, its documents tokenized in pieces "
                        "(a203a7d until eefc248)", example={"assembled": {}, "tokenization": "pieces/1"},
                     refuse="its latent documents were tokenized in pieces, not whole as today: train it again "
                            "(another --out)"),
               Older(2, "a synthetic run recorded by its assembled file's manifest and the generator's path "
                        "(until eefc248)", example={"assembled": {}},
                     how="if its pool is unchanged, adopt it with `megadocs train --reidentify {out}`, else "
                         "use another --out"))),
    RUN_RECORD: Record(
        where="FOLDER/submitit/submissions.json: submissions", reader="megadocs.run_record:_read_submissions",
        current=3, detect=_run_record_version,
        example={"submissions": [{"kind": "process", "host": "node7", "pid": 41, "started": 9, "boot": "b",
                                  "pidns": 4026531836, "heartbeat": 1764940000.0},
                                 {"kind": "local", "job_ids": ["43"], "host": "node7", "boot": "b",
                                  "pidns": 4026531836, "heartbeat": 1764940000.0},
                                 {"kind": "slurm", "job_ids": ["42_0"], "host": None, "boot": None, "pidns": None,
                                  "heartbeat": None}]},
        older=(Older(1, "records of runs before heartbeats (836bb66): a process by host, pid and start time",
                     example={"submissions": [{"kind": "process", "host": "node7", "pid": 41, "started": 9}]},
                     upgrade=_run_record_1_to_2),
               Older(2, "records of runs before local arrays named their place (until 1f4b3dd): a local "
                        "array by its pids only", example={"submissions": [{"kind": "local", "job_ids": ["43"]}]},
                     upgrade=_run_record_2_to_3))),
    CONTROLLER_HOLDER: Record(
        where="ledger: study {sweep}#controller: holder", reader="search.ledger:_holder_alive", current=2,
        detect=_holder_version,
        example={"host": "node7", "pid": 41, "since": "2026-12-05T13:00:00+00:00", "heartbeat": 1764940000.0,
                 "token": "0123abcd", "started": 9, "boot": "b", "pidns": 4026531836},
        older=(Older(1, "holders before boot ids and pid namespaces (until 024d525): host, pid, start time",
                     example={"host": "node7", "pid": 41, "since": "2026-12-05T13:00:00+00:00",
                              "heartbeat": 1764940000.0, "token": "0123abcd", "started": 9},
                     upgrade=_holder_1_to_2),)),
    POOL_TOKENS: _format_field("megadocs.pool-tokens", "TOKENS/manifest.json", "train.pool_tokens:require_pool_tokens",
                               2, "daa745a until f337c94: latent documents tokenized in pieces",
                               "run `megadocs data tokenize-pool` again"),
    CHECKPOINT: _format_field("megadocs.train-checkpoint", "RUN/checkpoint", "train.checkpoint:read_checkpoint",
                              2, "before 2efeb72: RNG states pickled, not loadable with weights_only=True",
                              "delete it to restart the run"),
    TOKEN_STORE: _format_field("megadocs.token-store", "STORE/manifest.json", "megadocs.corpus:is_token_store", 1),
    POOL_MANIFEST: _format_field("megadocs.gen-pool", "POOL/manifest.json", "megadocs.pools:parse_manifest", 1),
    POOL_FINGERPRINT: Record(
        where="POOL/manifest.json: generator_revision", reader="megadocs.pools:check_extends", current=3,
        detect=_fingerprint_version, example="sha256:0123456789abcdef",
        older=(Older(1, "pools made before content fingerprints (7ee1caf): `dir-sha256:` over small files' "
                        "bytes and weight files' sizes", example="dir-sha256:0123456789abcdef",
                     how="kept; extended only when the generator still gives it "
                         "(megadocs.fingerprint.legacy_fingerprint)"),
               Older(2, "pools made until 73ed271: `sha256:` over every file, model card included",
                     example="sha256:0123456789abcdef", dated=False,
                     how="kept; extended only when the generator still gives it "
                         "(model_fingerprint(every_file=True))"))),
    LEDGER_GRID_PARAMS: Record(
        where="ledger: a trial's param distribution (Optuna's JSON)", reader="search.ledger:Ledger.new_run", current=2,
        detect=_grid_param_version,
        example='{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 4, "high": 16}}',
        older=(Older(1, "studies begun before numeric axes were Int/Float distributions (until dc59cba): categorical "
                        "over the grid as listed (the study's `grid` attribute)",
                     example='{"name": "CategoricalDistribution", "attributes": {"choices": [4, 8]}}',
                     how="kept: later trials of the study record the axis with the same categorical; a value "
                         "outside its choices is left out of the params (readers use the `point` attribute)"),)),
}
"""Every versioned record, by name (docs/architecture.md, "Older formats")."""


def version(record: str, data: Any) -> int:
    """The format version of ``data`` as record ``record`` (its :attr:`Record.detect`)."""
    return RECORDS[record].detect(data)


def is_older(record: str, data: Any) -> bool:
    """Whether ``data`` is in an older version of ``record`` than the current one."""
    return version(record, data) < RECORDS[record].current


def older(record: str, number: int) -> Older | None:
    """The table's entry for version ``number`` of ``record``; None when it has none (the current
    version, or a version this code never wrote)."""
    return next((entry for entry in RECORDS[record].older if entry.version == number), None)


def upgrade(record: str, data: Any, *, source: str = "", action: str | None = None) -> Any:
    """``data`` in the current shape of ``record``: current data is returned as is (the same
    object), older data is upgraded version by version (new objects; ``data`` is not changed).

    ``source`` says where this data was read (a config field, a path); ``action`` is what to do
    about a refused version in this reader's words (the exact command), instead of the table's.

    Raises:
        FormatBreak: the data is in a version the table refuses, or one this code never wrote
            (one line naming ``source``, the record's field, what wrote it and what to do).
    """
    entry = RECORDS[record]
    where = f"{source}: {entry.where}" if source else entry.where
    found = entry.detect(data)
    while found < entry.current:
        step = older(record, found)
        if step is None:
            todo = f"; {action}" if action else ""
            raise FormatBreak(f"{where}: format version {found} is unknown to this code (current: "
                              f"{entry.current}){todo}")
        if step.refuse is not None:
            raise FormatBreak(f"{where}: written by {step.written}; {action or step.refuse}")
        if step.upgrade is None:  # kept as recorded: its reader handles it
            return data
        data = step.upgrade(data)
        found = entry.detect(data)
    return data
