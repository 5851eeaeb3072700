"""Adapter: a sweep's search ledger -> the analysis tables (``analysis.frame``).

The only module of ``analysis`` that reads a ledger; it takes a loaded ``search.sweep.Sweep`` (the
CLIs load the file with ``search.sweep.load_sweep``) and uses the public reading API
(``search.ledger.read_snapshot``, ``read_runs``, ``search.status.summarize``), reading the
ledger once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.experiments import diversity_table
from analysis.frame import certifications_frame, runs_frame

if TYPE_CHECKING:
    from search.status import CertificationSummary, EnsembleSummary, TransferSummary
    from search.sweep import Sweep

__all__ = ["LedgerTables", "load_tables"]

log = logging.getLogger(__name__)


@dataclass
class LedgerTables:
    """Everything the report needs from a ledger, read once."""

    sweep_name: str
    runs: pd.DataFrame
    certifications: pd.DataFrame
    summaries: list[CertificationSummary]
    grids: dict[str, dict[str, list[Any]]]
    """Each certification's grid {axis: values} (a certification may replace the sweep's): the report's
    and notebook's certification maps and hyperparameter axes (a setting's pinned axes are
    ``CertificationSummary.pinned``, which the certifications frame reads)."""
    ensembles: dict[str, EnsembleSummary]
    """Ensemble studies by name: the members at the source's current certified point (only they
    are scored) and the runs of an earlier certified point (``search.status.EnsembleSummary``)."""
    transfer_sources: dict[str, str] = field(default_factory=dict)
    """Transfer name -> the certification whose certified point it runs at."""
    transfers: dict[str, TransferSummary] = field(default_factory=dict)
    """Transfers by name: the result at the source's current certified point, if any
    (``search.status.TransferSummary``; a run at an earlier certified point is none)."""
    diversity: pd.DataFrame | None = None
    """Generation diversity vs G of the sweep's pools (``analysis.experiments.diversity_table``);
    None when the sweep names no pools, empty when none of them has a diversity block yet."""


def _grids_of(sweep: Sweep) -> dict[str, dict[str, list[Any]]]:
    """{certification: {axis: values}} from the sweep's own resolution of each certification's grid."""
    return {cert.name: {axis: list(values) for axis, values in sweep.grid_for(cert).as_mapping().items()}
            for cert in sweep.certifications}


def load_tables(sweep: Sweep) -> LedgerTables:
    """Read the runs and certification summaries of a loaded sweep into the analysis tables
    (``search.sweep.load_sweep`` loads a sweep file)."""
    from search.ledger import read_runs, read_snapshot, undescribed_line
    from search.status import summarize, summarize_ensembles, summarize_transfers

    snapshot = read_snapshot(sweep)  # each study read once by the readers below
    if (line := undescribed_line(snapshot.undescribed_counts(), controller_live=snapshot.holder is not None)):
        log.warning("%s", line)  # trials that name no point are no runs: in no table
    runs = runs_frame(read_runs(sweep, snapshot=snapshot), sweep=sweep.name, base_model=sweep.base_model)
    summaries = summarize(sweep, snapshot=snapshot)
    grids = _grids_of(sweep)
    return LedgerTables(
        sweep_name=sweep.name,
        runs=runs,
        certifications=certifications_frame(summaries, runs, base_model=sweep.base_model),
        summaries=summaries,
        grids=grids,
        ensembles={e.name: e for e in summarize_ensembles(sweep, summaries, snapshot=snapshot)},
        transfer_sources={t.name: t.source for t in sweep.transfers},
        transfers={t.name: t for t in summarize_transfers(sweep, summaries, snapshot=snapshot)},
        diversity=diversity_table(sweep.pools, _gs_by_method(sweep)) if sweep.pools else None,
    )


def _gs_by_method(sweep: Sweep) -> dict[str, list[int]]:
    from search.params import RunParams

    gs: dict[str, list[int]] = {}
    for cert in sweep.certifications:
        fixed = RunParams(fixed=cert.fixed)
        if fixed.named_method is not None and fixed.g is not None:
            gs.setdefault(str(fixed.named_method), []).append(int(fixed.g))
    return gs
