"""An in-memory :class:`~search.strategies.Evaluator` with a simulated clock.

Used by the certifier's tests and by ``benchmarks/search_efficiency.py``: points are evaluated
by a plain function, each run "takes" ``duration(point)`` time units, and :meth:`wait` advances
the clock to the next finishing run, so wall-clock rounds can be measured without waiting.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from search.certificate import Outcome
from search.strategies import Evaluator, Request, Result

__all__ = ["SimulatedEvaluator"]


class SimulatedEvaluator(Evaluator):
    """Evaluates ``objective(point)`` with at most ``slots`` runs in flight.

    ``objective`` returns a loss, or raises to simulate an infrastructure failure (reported
    FAILED with the exception's message). ``calls`` counts evaluations per task and point.
    """

    def __init__(
        self,
        objective: Callable[[Mapping[str, Any]], float],
        slots: int = 4,
        duration: Callable[[Mapping[str, Any]], float] | None = None,
    ) -> None:
        self.objective = objective
        self.slots = slots
        self.duration = duration or (lambda point: 1.0)
        self.clock = 0.0
        self._queue: list[tuple[float, int, Request]] = []
        self._counter = 0
        self.calls: list[Request] = []

    def free_slots(self) -> int:
        return self.slots - len(self._queue)

    def submit(self, requests: Sequence[Request]) -> None:
        assert len(requests) <= self.free_slots(), "driver must respect free_slots"
        for request in requests:
            self._counter += 1
            heapq.heappush(self._queue, (self.clock + self.duration(request.point), self._counter, request))

    def wait(self) -> list[Result]:
        assert self._queue, "wait() called with nothing in flight"
        finish, _, request = heapq.heappop(self._queue)
        self.clock = max(self.clock, finish)
        self.calls.append(request)
        try:
            loss = self.objective(request.point)
        except Exception as exc:  # noqa: BLE001 - any error is a simulated infrastructure failure
            return [Result(request.task, request.point, Outcome.failed(str(exc)))]
        loss = math.inf if loss is None else float(loss)
        return [Result(request.task, request.point, Outcome.finished(loss))]
