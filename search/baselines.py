"""The baseline strategies (``--strategy grid|tpe``) by name: what the controller drives and what
``search status`` replays a baseline's ledger into to say where it stands, built in one place so
the two agree on each baseline's run budget."""

from __future__ import annotations

from search.grid import Grid
from search.strategies import GridSearch, Strategy
from search.tpe import TPESearch

__all__ = ["BASELINES", "TPE_DEFAULT_TRIALS", "baseline_strategy"]

BASELINES = ("grid", "tpe")

TPE_DEFAULT_TRIALS = 50
"""TPE's run budget when neither ``--max-runs`` nor the certification's ``max_runs`` sets one (a
smaller grid: its size)."""


def baseline_strategy(kind: str, name: str, grid: Grid, *, max_runs: int | None = None, seed: int = 0) -> Strategy:
    """The baseline strategy ``kind`` over ``grid``: ``grid`` a :class:`GridSearch` (every point
    once, up to ``max_runs``), ``tpe`` a :class:`TPESearch` of ``max_runs`` runs, else the grid's
    size up to TPE_DEFAULT_TRIALS.

    Raises:
        ValueError: ``kind`` is not one of BASELINES.
    """
    if kind == "grid":
        return GridSearch(name, grid, max_runs=max_runs)
    if kind == "tpe":
        return TPESearch(name, grid, n_trials=max_runs or min(grid.size, TPE_DEFAULT_TRIALS), seed=seed)
    raise ValueError(f"strategy: expected one of {', '.join(BASELINES)} for a baseline, got {kind!r}")
