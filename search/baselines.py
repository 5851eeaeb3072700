"""The baseline strategies (``--strategy grid|tpe``) by name: what the controller drives and what
``search status`` replays a baseline's ledger into to say where it stands, built in one place so
the two agree on each baseline's run budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search.grid import Grid
from search.strategies import CertifySearch, GridSearch, Strategy
from search.tpe import TPESearch

__all__ = ["BASELINES", "TPE_DEFAULT_TRIALS", "baseline_strategy"]

BASELINES = ("grid", "tpe")

TPE_DEFAULT_TRIALS = 50
"""TPE's run budget when neither ``--max-runs`` nor the certification's ``max_runs`` sets one (a
smaller grid: its size)."""


def baseline_strategy(kind: str, name: str, grid: Grid, *, max_runs: int | None = None, seed: int = 0,
                      start: Mapping[str, Any] | None = None, seed_neighbours: bool = True) -> Strategy:
    """The baseline strategy ``kind`` over ``grid``: ``grid`` a :class:`GridSearch` (every point
    once, up to ``max_runs``), ``tpe`` a :class:`TPESearch` of ``max_runs`` runs, else the grid's
    size up to TPE_DEFAULT_TRIALS. With ``start`` (the certification's), its runs are also read by
    the certifier's rule from there (:attr:`Strategy.evidence`, with the certification's
    ``seed_neighbours``, which says which failed runs block it before any finished): the controller's progress line
    and ``search status`` then say ``certified``/``failed`` alike where they certify or fail its
    best point (:meth:`Strategy.phase`).

    Raises:
        ValueError: ``kind`` is not one of BASELINES.
    """
    if kind == "grid":
        strategy: Strategy = GridSearch(name, grid, max_runs=max_runs)
    elif kind == "tpe":
        strategy = TPESearch(name, grid, n_trials=max_runs or min(grid.size, TPE_DEFAULT_TRIALS), seed=seed)
    else:
        raise ValueError(f"strategy: expected one of {', '.join(BASELINES)} for a baseline, got {kind!r}")
    if start is not None:
        strategy.evidence = CertifySearch(name, grid, start, seed_neighbours=seed_neighbours)
    return strategy
