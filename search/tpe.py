"""Optuna's TPE sampler as a baseline strategy on the same grid (``--strategy tpe``).

TPE proposes points through an in-memory Optuna study (the ledger still records every run, like
for any strategy). A proposal already evaluated is answered from the evidence instead of
running again; parallel proposals use TPE's constant-liar mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from search.certificate import Outcome, RunState
from search.grid import Grid, Key
from search.strategies import Stop, StopReason, Strategy

__all__ = ["TPESearch"]

MAX_REPEATS = 200
"""Proposals in a row that hit known points before TPE is considered to have converged (in a round
that proposes nothing while none of its runs is in flight: see :meth:`TPESearch._wanted`)."""
CONVERGED = f"its last {MAX_REPEATS} proposals were points already run"
""":class:`~search.strategies.Stop`'s detail for a converged TPE."""


class TPESearch(Strategy):
    """TPE proposals on ``grid``, ``n_trials`` runs at most (the base's run budget)."""

    def __init__(self, name: str, grid: Grid, *, n_trials: int, seed: int = 0) -> None:
        super().__init__(name, max_runs=n_trials)
        self.grid = grid
        self.n_trials = n_trials
        self.distributions = {
            axis: optuna.distributions.CategoricalDistribution(list(values)) for axis, values in grid.axes
        }
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self._pending: dict[Key, list[int]] = {}  # asked trial numbers waiting for this point
        self.converged = False
        self._restored: Stop | None = None  # a convergence the ledger recorded (a restart)

    def key(self, point: Mapping[str, Any]) -> Key:
        return self.grid.key(point)

    def _wanted(self, limit: int) -> list[dict[str, Any]]:
        if self._restored is not None:
            return []
        found: list[dict[str, Any]] = []
        repeats = 0
        while len(found) < limit and repeats < MAX_REPEATS:
            trial = self.study.ask(self.distributions)
            point = {axis: trial.params[axis] for axis in self.grid.names}
            key = self.grid.key(point)
            known = self.outcomes.get(key)
            if known is not None and known.state is RunState.FINISHED:
                self.study.tell(trial, known.loss)
                repeats += 1
            elif known is not None or key in (self.grid.key(p) for p in found):
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                repeats += 1
            else:
                self._pending.setdefault(key, []).append(trial.number)
                found.append(point)
                repeats = 0
        # Converged only where the sampler had all of its evidence: proposals that hit a run still
        # in flight (or one just proposed) say nothing of where TPE goes once its loss is known.
        self.converged = repeats >= MAX_REPEATS and not found and not self.running()
        return found

    def _recorded(self, point: Mapping[str, Any], outcome: Outcome) -> None:
        if outcome.state is RunState.RUNNING:
            return
        numbers = self._pending.pop(self.grid.key(point), None)
        if numbers is None:  # evidence from the ledger (a restart): teach TPE directly
            if outcome.state is RunState.FINISHED:
                self.study.add_trial(optuna.trial.create_trial(
                    params=dict(point), distributions=self.distributions, value=outcome.loss))
            return
        for number in numbers:
            if outcome.state is RunState.FINISHED:
                self.study.tell(number, outcome.loss)
            else:
                self.study.tell(number, state=optuna.trial.TrialState.FAIL)

    def _done(self) -> bool:
        return not self.running() and self.converged

    def stop(self) -> Stop | None:
        """CONVERGED once done by converging (the sampler's state: only the ledger's record of it,
        :meth:`restore_stop`, tells a rebuilt TPE)."""
        if not self._done():
            return None
        return self._restored or Stop.on(self.grid, StopReason.CONVERGED, len(self.outcomes), self.max_runs, CONVERGED)

    def outstanding(self) -> tuple[dict[str, Any], ...] | None:
        """Nothing once converged; else unknown (its next points come from the sampler)."""
        return () if self._done() else None

    def restore_stop(self, stop: Stop) -> None:
        """A convergence recorded on this grid (:meth:`Stop.holds_on`): proposes nothing more (a sampler
        rebuilt from the runs could still find an unrun point and resume a search that had ended)."""
        if stop.reason is StopReason.CONVERGED and stop.holds_on(self.grid):
            self._restored = stop
            self.converged = True
