"""The analysis tables: one row per run, one row per certification (pure; no ledger access).

Everything downstream (fits, efficiency, figures, report, notebooks) reads these two pandas
DataFrames, so a reader can build them from any source; ``analysis.ledger`` fills them from a
sweep's ledger through ``search``'s public API.

Runs frame (:func:`runs_frame`), one row per trial of every certification:

==================  ==========================================================================
column              meaning
==================  ==========================================================================
``sweep``           sweep name
``certification``   certification name (one Optuna study per certification)
``kind``            ``certify`` | ``grid`` | ``tpe`` | ``ensemble`` (ensemble members' studies are
                    named ``ensemble/<name>``, baselines ``grid/<name>``, ``tpe/<name>``)
``trial``           trial number within the certification (order of creation), or NaN
``run_id``          run identity (config hash) and ``run_dir`` its directory
``status``          ``completed`` | ``diverged`` | ``failed`` | ``running`` | ... (ledger status)
``loss``            the objective (iid validation loss); NaN unless the run finished
``method``          fixed: ``real`` | ``simple`` | ``stitched`` | ... | ``latent``
``g``               fixed: generations per real document (0 for ``real``)
``model``           the model preset the run trains (``search.params.RunParams.trained_model``: its
                    fixed ``model``, else the sweep's ``search.sweep.Sweep.base_model``; None when
                    neither names one); ``seed``: fixed seed (NaN/None when the sweep has none)
``fixed.<key>``     any other fixed field of the certification
``point.<axis>``    grid point, one column per axis (``point.lr``, ``point.wd``, ``point.epochs``,
                    ``point.mix``)
``val_loss.<set>``  every validation loss in ``metrics.val_losses`` (``iid``, ``iid_short``,
                    ``iid_long``, extra sets)
``bench.<task>``    each task's accuracy in ``metrics.benchmarks`` (``acc`` of its
                    :class:`megadocs.formats.BenchmarkScore`; also ``bench.average``)
``metric.<name>``   every other numeric metric (``steps``, ``tokens_seen``, ``tokens_per_s``,
                    ``params``, ...); nested ones one column per number
                    (``metric.windows.real_seen``, ``metric.val_windows.iid``)
``member``          ensemble member index (ensemble studies only)
``wall_time_s``     compute used by the run (seconds); ``job_id``, ``attempts``, ``reason``
``failure``         why a ``failed`` run failed, as its job said (``megadocs.formats.FailureKind``:
                    ``invalid``, a user error that stopped the sweep, whose point the next
                    ``certify`` runs again; ``failed``, loss -inf); None otherwise
``adopted_from``    set when the ledger reused an identical run of another study (its compute is
                    counted there, so :func:`compute_seconds` skips it)
==================  ==========================================================================

Certifications frame (:func:`certifications_frame`), one row per certification: ``certification``,
``method``, ``g``, ``model``, ``seed``, ``base_model`` (the sweep's, ``search.sweep.Sweep.base_model``,
on every row, None where it names none: the model whose curves are named by their method alone,
:data:`BASE_MODEL`), ``curve_model`` (the model its curve is named by, as ``search status`` reads it:
its fixed ``model``, else ``base_model``; None where neither names one, even where its runs say one,
:data:`CURVE_MODEL`), ``state`` (the engine's), ``certified`` (bool), ``loss``
(certified loss, else best so far), ``point.<axis>`` of that point, ``bounds`` (each search
bound the certificate leans on, a tuple of ``search.grid.Bound``: axis, side, value, extended;
read this one), ``bounds_hit`` (their display form, e.g. ``"epochs upper"``; "" when none;
exported tables carry this one, not ``bounds``),
``support`` (what the certificate rests on as a whole: ``interior``, ``bound`` or ``not searched``,
``search.certificate.Support``; None when not certified), ``extended`` (axes whose evidence lies
beyond the listed grid, with the extension values, e.g. ``"epochs 128 (point)"``; "" when none),
``diverged_neighbours`` (the certificate's soft bounds, same form), ``point_runs`` (the certified
point's runs, one :class:`PointRun` each, by run identity: a run another certification adopted is
the same run there; a record column, left out of exports), ``setting`` (what the
certification fixes beyond method, G, model and seed, ``key=value`` pairs by key: its other fixed
params, a callable objective's, and each axis its grid gives one value, the sweep's way to fix a
point value, ``search.status.CertificationSummary.pinned``; "" when nothing:
``search.params.RunParams.setting``), ``noise_sd`` (pooled seed
noise, None without repeats), ``warm_start`` (the certification it starts from, or None), ``repeats``, ``ties`` (neighbours within noise of the certified
point), ``n_runs``, ``n_finished``, ``n_running``, ``n_failed``, ``path_length``, ``wall_time_s``
(summed over the certification's runs), ``tokens_seen`` (summed) and the certified point's
``val_loss.<set>`` and ``bench.<task>`` columns (mean over its ``point_runs``, its seeded repeats included).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from megadocs.errors import UserError
from megadocs.formats import IID, REAL, RunMetrics, RunStatus
from search.grid import format_bounds, points_equal
from search.ledger import RunRecord
from search.params import METHOD, MODEL, SEED, G, RunParams
from search.tuned import (  # the merge and curve rules' records and names, and a run's scores by column
    BENCH,
    DEFAULT_SETTING,
    VAL,
    PointRun,
    curve_label,
    curve_method,
    scores,
)

if TYPE_CHECKING:
    from search.status import CertificationSummary

__all__ = [
    "FIXED_COLUMNS",
    "POINT",
    "VAL",
    "BENCH",
    "METRIC",
    "SCORED",
    "runs_frame",
    "TABLE_SUFFIXES",
    "read_table",
    "certifications_frame",
    "columns_with",
    "axes",
    "val_sets",
    "point_of",
    "empty_runs_frame",
    "format_bounds",
    "BOUNDS",
    "RECORD_COLUMNS",
    "compute_seconds",
    "union_grid",
    "SETTING",
    "BASE_MODEL",
    "CURVE_MODEL",
    "setting_words",
    "DEFAULT_SETTING",
    "curve_label",
    "curve_method",
    "POINT_RUNS",
    "PointRun",
]

FIXED_COLUMNS = (METHOD, G, MODEL, SEED)
"""The params with typed reads (:class:`search.params.RunParams`), one column each."""
POINT, METRIC, FIXED = "point.", "metric.", "fixed."  # VAL, BENCH: search.tuned.scores' columns
SETTING = "setting"
"""The certifications frame's column of what a certification fixes beyond method, G, model and seed
(``search.params.RunParams.setting``): two certifications at one (method, G) with different settings are points of
two curves, not repeats of one (``analysis.experiments.generation_curves``)."""
BASE_MODEL = "base_model"
"""The certifications frame's column of the sweep's base model (``search.sweep.Sweep.base_model``, the
same on every row; None: the sweep names none): ``search.tuned.method_curves`` names a curve by its
method alone where it trains this model, ``method (model)`` otherwise, in ``search status`` and the
analysis alike (``analysis.experiments.generation_curves``). A frame without the column (built by
hand) says nothing of it."""
CURVE_MODEL = "curve_model"
"""The certifications frame's column of the model a certification's curve is named by
(``search.tuned.CurveMember.model``, as ``search status``'s G trend reads it): the model its fixed
params write, else the sweep's :data:`BASE_MODEL` (``search.params.RunParams.trained_model``); None
where neither names one. Unlike ``model`` it is never read from the runs: a sweep whose objective is
the user's own function and which names no base model (only the function knows the model) names a
curve ``method (model)`` where its certification writes ``model:``, by its method alone where it
writes none, whatever model its runs say (``analysis.experiments.generation_curves``). A frame
without the column (built by hand) names every curve by its method."""
BOUNDS = "bounds"
"""The certifications frame's column of search bounds as data (``search.grid.Bound`` tuples)."""
POINT_RUNS = "point_runs"
"""The certifications frame's column of the certified point's runs (a tuple of :class:`PointRun`):
``search status``'s, ``search.status.CertificationSummary.point_runs`` (the rule of which runs count is
``search.tuned.runs_at_point``). Two certifications of one configuration may share runs (the sweep
adopts a finished run of the same identity), which ``analysis.experiments.generation_curves`` counts
once."""
RECORD_COLUMNS = (BOUNDS, POINT_RUNS)
"""Columns that hold records, not plain values: read in Python, left out of exported tables
(``bounds_hit`` is their display form)."""
SCORED = (RunStatus.COMPLETED,)
"""Statuses whose loss is a number in the frame (a diverged run finished too, ``RunStatus.finished``,
but its loss is inf: never best); every other status has no loss."""
BASE_COLUMNS = (
    "sweep", "certification", "kind", "trial", "run_id", "run_dir", "status", "loss",
    *FIXED_COLUMNS, "member", "wall_time_s", "job_id", "attempts", "reason", "failure", "adopted_from",
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


# RunMetrics fields with columns of their own (every other number becomes ``metric.<name>``).
_OWN_COLUMNS = ("status", "val_loss", "val_losses", "benchmarks", "wall_time_s")


def _fixed_columns(params: RunParams, base_model: str | None) -> dict[str, Any]:
    """The :data:`FIXED_COLUMNS` of a run or certification: as the sweep wrote them, None where it
    wrote none (no ``method`` stays None here, whatever the objective makes of it), but the model
    the one it trains (:meth:`search.params.RunParams.trained_model` over ``base_model``): a
    certification that writes the base preset and one that writes none train one model."""
    return {METHOD: params.named_method, G: params.g, MODEL: params.trained_model(base_model), SEED: params.seed}


def _run_row(record: RunRecord, sweep: str | None, base_model: str | None) -> dict[str, Any]:
    """One runs-frame row from a ledger record (a running or failed run has no metrics)."""
    params = record.params()
    metrics = record.metrics if record.status.finished else None
    wall_time_s = record.wall_time_s
    if wall_time_s is None and metrics is not None:
        wall_time_s = metrics.wall_time_s
    loss = record.loss
    if loss is None and metrics is not None:
        loss = metrics.val_loss
    if record.status is RunStatus.DIVERGED:
        loss = math.inf
    elif record.status not in SCORED:
        loss = None
    row: dict[str, Any] = {
        "sweep": record.sweep or sweep,
        "certification": record.certification,
        "trial": record.trial,
        "kind": record.kind.value,
        "run_id": record.run_id,
        "run_dir": record.run_dir,
        "status": record.status.value,
        "loss": _number(loss),
        "job_id": record.job_id,
        "attempts": record.attempts,
        "reason": record.reason,
        "failure": None if record.failure is None else record.failure.value,
        "wall_time_s": wall_time_s,
        "member": record.member,
        "adopted_from": record.adopted_from,
    }
    row.update(_fixed_columns(params, base_model))
    if row["method"] == REAL and row["g"] is None:
        row["g"] = 0
    for key, value in params.other_fixed().items():
        row[FIXED + key] = value
    for axis, value in params.point.items():
        row[POINT + axis] = value
    if metrics is not None:
        row.update(_metric_columns(metrics))
    return row


def _metric_columns(metrics: RunMetrics) -> dict[str, float | None]:
    """``val_loss.<set>``, ``bench.<task>`` and ``metric.<name>`` columns of one run."""
    columns = scores(metrics)
    numbers = {name: getattr(metrics, name) for name in RunMetrics.model_fields if name not in _OWN_COLUMNS}
    numbers.update(metrics.extra)  # a sweep's own objective's metrics
    for name, value in numbers.items():
        if hasattr(value, "model_dump"):  # a nested record (windows read): one column per number
            value = value.model_dump()
        nested = value.items() if isinstance(value, Mapping) else [(None, value)]
        for key, item in nested:
            number = _number(item)
            if number is not None:
                columns[METRIC + name + ("" if key is None else f".{key}")] = number
    return columns


def compute_seconds(runs: pd.DataFrame) -> float:
    """Run wall time summed over runs, counting a run adopted from another study only once."""
    if len(runs) == 0 or "wall_time_s" not in runs:
        return math.nan
    own = runs[runs["adopted_from"].isna()] if "adopted_from" in runs else runs
    return float(pd.to_numeric(own["wall_time_s"], errors="coerce").sum(min_count=1))


def union_grid(grids: Mapping[str, Mapping[str, Iterable[Any]]] | None) -> dict[str, list[Any]] | None:
    """All certifications' axis values together (Figure 11 shares one axis per hyperparameter)."""
    if not grids:
        return None
    union: dict[str, set] = {}
    for grid in grids.values():
        for axis, values in grid.items():
            union.setdefault(axis, set()).update(values)
    return {axis: sorted(values) for axis, values in union.items()}


def _format_extended(certificate) -> str:
    """``"epochs 128 (point)"``: the axes whose certificate evidence lies beyond the listed grid
    (``extend:``), with the extension values used, and whether the certified point itself does."""
    if certificate is None:
        return ""
    return ", ".join(
        f"{axis.axis} {' '.join(f'{v:g}' for v in axis.extended)} ({'point' if axis.on_extension else 'neighbour'})"
        for axis in certificate.basis.extended
    )


def setting_words(setting: str) -> str:
    """A :data:`SETTING` value in a sentence, as what it is: "under {setting_words(s)}" (the empty
    setting by :data:`DEFAULT_SETTING`, the word its curve's label has).

    >>> setting_words("temperature=0.5")
    'the fixed setting temperature=0.5'
    >>> setting_words("")
    'the default setting'
    """
    return f"the fixed setting {setting}" if setting else f"the {DEFAULT_SETTING} setting"


def empty_runs_frame() -> pd.DataFrame:
    return pd.DataFrame(columns=list(BASE_COLUMNS))


def runs_frame(records: Iterable[RunRecord], *, sweep: str | None = None,
               base_model: str | None = None) -> pd.DataFrame:
    """One row per run from ledger records (``search.ledger.read_runs``); ``sweep`` names the
    sweep of records that carry none, ``base_model`` (``search.sweep.Sweep.base_model``) the model
    of a run that fixes none."""
    rows = [_run_row(record, sweep, base_model) for record in records]
    if not rows:
        return empty_runs_frame()
    frame = pd.DataFrame(rows)
    ordered = [c for c in BASE_COLUMNS if c in frame] + sorted(c for c in frame if c not in BASE_COLUMNS)
    frame = frame[ordered]
    for column in ("loss", "wall_time_s", *columns_with(frame, VAL), *columns_with(frame, BENCH)):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["g"] = pd.to_numeric(frame["g"], errors="coerce")
    return frame


def columns_with(frame: pd.DataFrame, prefix: str) -> list[str]:
    return [c for c in frame.columns if isinstance(c, str) and c.startswith(prefix)]


def axes(frame: pd.DataFrame) -> list[str]:
    """Grid axis names present in a frame (``lr``, ``wd``, ...)."""
    return [c[len(POINT):] for c in columns_with(frame, POINT)]


def val_sets(frame: pd.DataFrame) -> list[str]:
    """Validation set names present in a frame, ``iid`` first."""
    names = [c[len(VAL):] for c in columns_with(frame, VAL)]
    return sorted(names, key=lambda n: (n != IID, n))


def point_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The grid point of a runs-frame row; axes the run's certification lacks (NaN in the union
    frame, e.g. ``mix`` for the real-only baseline) are not part of it."""
    return {
        k[len(POINT):]: v
        for k, v in row.items()
        if isinstance(k, str) and k.startswith(POINT) and not pd.isna(v)
    }


def certifications_frame(summaries: Iterable[CertificationSummary], runs: pd.DataFrame, *,
                         base_model: str | None = None) -> pd.DataFrame:
    """One row per certification from ``search.status.summarize`` and the runs frame.

    The extra-set and benchmark columns are the mean over the certified point's runs (its
    :data:`POINT_RUNS`: ``search status``'s, ``CertificationSummary.point_runs``, by
    ``search.tuned.runs_at_point``; the certificate's loss is their mean too). ``setting`` is the summary's
    fixed params and the axes its grid gives one value (``CertificationSummary.pinned``), as
    ``search status`` reads them; ``base_model`` (``search.sweep.Sweep.base_model``) is the model of
    a certification that fixes none.
    """
    rows = []
    for summary in summaries:
        name = summary.name
        mine = runs[runs["certification"] == name] if len(runs) else runs
        certificate = summary.certificate
        point = summary.point
        counts = summary.runs
        bounds = certificate.bounds_hit if certificate else summary.bounds_hit
        row: dict[str, Any] = {
            "certification": name,
            BASE_MODEL: base_model,
            "state": summary.state.value,
            "certified": certificate is not None,
            "loss": _number(summary.loss),
            BOUNDS: tuple(bounds),
            "bounds_hit": format_bounds(bounds),
            "support": certificate.basis.support.value if certificate else None,
            "extended": _format_extended(certificate),
            "diverged_neighbours": format_bounds(certificate.diverged if certificate else ()),
            "noise_sd": _number(summary.noise.sigma),
            "warm_start": summary.warm_start,
            "repeats": summary.noise.repeats,
            "ties": len(certificate.ties) if certificate else 0,
            "n_runs": len(mine),
            "n_finished": counts.finished,
            "n_running": counts.running,
            "n_failed": counts.failed,
            "path_length": len(summary.path),
            "wall_time_s": float(summary.compute.wall_time_s),
            "tokens_seen": (
                float(mine["metric.tokens_seen"].sum(min_count=1))
                if len(mine) and "metric.tokens_seen" in mine
                else math.nan
            ),
        }
        params = RunParams.split(summary.fixed, axes=())
        for key, value in _fixed_columns(params, base_model).items():
            if value is None and len(mine) and mine[key].notna().all():  # every run says the same: the sweep's
                values = mine[key].unique()  # (not a seed of noise repeats: they carry 1, 2, ... beside none)
                value = values[0] if len(values) == 1 else None
            row[key] = value
        if row["method"] == REAL and row["g"] is None:
            row["g"] = 0
        row[SETTING] = params.setting(summary.pinned)
        row[CURVE_MODEL] = params.trained_model(base_model)  # not from the runs: the model status names curves by
        for axis, value in point.items():
            row[POINT + axis] = value
        chosen = [r for _, r in mine.iterrows() if point and points_equal(point_of(r), point)]
        if chosen:
            first = min(chosen, key=lambda r: 0 if pd.isna(r[SEED]) else float(r[SEED]))
            row["run_dir"] = first["run_dir"]  # the point's run without a seed (repeats carry seed 1, 2, ...)
        row[POINT_RUNS] = tuple(summary.point_runs)  # search status's runs at the point, its loss their mean
        for column in (*columns_with(mine, VAL), *columns_with(mine, BENCH)):
            numbers = [run.values[column] for run in summary.point_runs if column in run.values]
            row[column] = sum(numbers) / len(numbers) if numbers else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["g"] = pd.to_numeric(frame["g"], errors="coerce")
        frame = frame.sort_values(["method", "g", "certification"], na_position="last", kind="stable")
    return frame.reset_index(drop=True)


TABLE_SUFFIXES = (".csv", ".parquet", ".json")
"""The table files the analysis commands read (`read_table`): CSV with a header row, parquet, JSON."""


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV, JSON (list of rows) or parquet table as a DataFrame; UserError naming the file otherwise
    (missing, another format, empty, not UTF-8, or not parseable as its suffix says)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected a table: {', '.join(TABLE_SUFFIXES)})")
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}
    if path.suffix not in readers:
        raise UserError(f"{path}: unknown table format {path.suffix!r} (expected {', '.join(TABLE_SUFFIXES)})")
    try:
        return readers[path.suffix](path)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (expected a {path.suffix[1:]} table; save the file as UTF-8)") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty (expected a {path.suffix[1:]} table with a header row)") from None
    except (ValueError, OSError) as exc:  # pandas' and pyarrow's parse errors (ParserError, ArrowInvalid: ValueErrors)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"{path}: not a readable {path.suffix[1:]} table ({first})") from None
