"""Adapter: a sweep's search ledger -> the analysis tables (``analysis.frame``).

The only module of ``analysis`` that talks to ``search``; it uses the public reading API
(``search.sweep.load_sweep``, ``search.ledger.read_runs``, ``search.status.summarize``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.experiments import diversity_table
from analysis.frame import certifications_frame, runs_frame

if TYPE_CHECKING:
    from search.status import CertificationSummary, EnsembleSummary

__all__ = ["LedgerTables", "load_sweep", "load_tables"]


@dataclass
class LedgerTables:
    """Everything the report needs from a ledger, read once."""

    sweep_name: str
    runs: pd.DataFrame
    certifications: pd.DataFrame
    summaries: list[CertificationSummary]
    grids: dict[str, dict[str, list[Any]]]
    """Each certification's grid {axis: values} (a certification may replace the sweep's)."""
    ensembles: dict[str, EnsembleSummary]
    """Ensemble studies by name: the members at the source's current certified point (only they
    are scored) and the runs of an earlier certified point (``search.status.EnsembleSummary``)."""
    transfer_sources: dict[str, str] = field(default_factory=dict)
    """Transfer name -> the certification whose certified point it runs at."""
    diversity: pd.DataFrame | None = None
    """Generation diversity vs G of the sweep's pools (``analysis.experiments.diversity_table``)."""


def load_sweep(sweep_path_or_obj):
    """A loaded sweep from a path (``search.sweep.load_sweep``) or the object itself."""
    if isinstance(sweep_path_or_obj, (str, Path)):
        from search.sweep import load_sweep as load

        return load(sweep_path_or_obj)
    return sweep_path_or_obj


def _grids_of(sweep) -> dict[str, dict[str, list[Any]]]:
    """{certification: {axis: values}} from the sweep's own resolution of each certification's grid."""
    grids = {}
    for cert in getattr(sweep, "certifications", []):
        grid = sweep.grid_for(cert) if hasattr(sweep, "grid_for") else None
        if grid is not None:
            grids[cert.name] = {axis: list(values) for axis, values in grid.as_mapping().items()}
    return grids


def load_tables(sweep_path_or_obj) -> LedgerTables:
    """Read the runs and certification summaries of a sweep into the analysis tables."""
    from search.ledger import read_runs
    from search.status import summarize, summarize_ensembles

    sweep = load_sweep(sweep_path_or_obj)
    name = str(getattr(sweep, "name", "sweep"))
    runs = runs_frame(read_runs(sweep), sweep=name)
    preset = sweep.train.model.preset if sweep.train is not None else None
    if preset and len(runs):
        runs["model"] = runs["model"].fillna(preset)  # the sweep's base model unless fixed.model says otherwise
    summaries = summarize(sweep)
    return LedgerTables(
        sweep_name=name,
        runs=runs,
        certifications=certifications_frame(summaries, runs),
        summaries=summaries,
        grids=_grids_of(sweep),
        ensembles={e.name: e for e in summarize_ensembles(sweep, summaries)},
        transfer_sources={t.name: t.source for t in getattr(sweep, "transfers", [])},
        diversity=diversity_table(getattr(sweep, "pools", {}) or {}, _gs_by_method(sweep)),
    )


def _gs_by_method(sweep) -> dict[str, list[int]]:
    gs: dict[str, list[int]] = {}
    for cert in getattr(sweep, "certifications", []):
        if "method" in cert.fixed and "g" in cert.fixed:
            gs.setdefault(str(cert.fixed["method"]), []).append(int(cert.fixed["g"]))
    return gs
