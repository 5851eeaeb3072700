"""``certify``'s live progress line over a whole grid baseline, at growing grid sizes.

Every drive round the controller's progress line (``search.controller.Progress.update``) says each
strategy's state: for a baseline (``--strategy grid|tpe``), :meth:`search.strategies.Strategy.phase`
reads its runs by the certifier's rule (its :attr:`~search.strategies.Strategy.evidence`), so that
one whose best point its runs certify says ``certified``. A grid baseline records one run per grid
point, so a sweep has about one round per point: a phase that re-reads every run each round costs
the square of the grid over the sweep.

Measured here, per grid size: a grid baseline (``search.baselines.baseline_strategy``, with the
certification's start, as the controller builds it) driven to the end over a seeded analytic
landscape (``search.landscapes.random_landscape``, kind ``bowl``) by ``search.strategies.drive``
with 8 simulated slots (``search.simulate.SimulatedEvaluator``); each round calls the real
``Progress.update`` (on a text stream, as in a log file). Figures are CPU seconds
(``time.process_time``, this process only) summed over the sweep:

- ``phase_cpu_s``: the state the line says for the baseline (``reported_state(phase(), budget_stop())``,
  as ``Progress.update`` computes it), timed alone in the same rounds;
- ``progress_cpu_s``: the whole ``Progress.update`` (the finished count, the line; the states
  were decided just before, by the timed phase);
- ``drive_cpu_s``: the whole drive (recording outcomes, dispatch, the simulated evaluator, the line);
- ``fresh_phase_cpu_s``: the baseline of the ratio, the same drive where every record drops the
  kept decision (``search.strategies.still_decided`` answers False), so each round decides afresh
  on all the runs, as the line did before it kept a decision; ``states_agree``: both said the
  same states in the same rounds.

Usage: ``python benchmarks/progress_scale.py [--sizes 252,1008,5400]`` (about two minutes, nearly
all of it the fresh baseline at 5400 points); the last stdout line is a JSON summary for
``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Mapping
from typing import Any
from unittest import mock

from search.baselines import baseline_strategy
from search.controller import Progress
from search.grid import Grid
from search.landscapes import random_landscape
from search.simulate import SimulatedEvaluator
from search.strategies import Strategy, drive, reported_state

SLOTS = 8
GRIDS: dict[int, dict[str, list[float]]] = {
    # the paper's sweep (benchmarks/search_efficiency.py "megadocs")
    252: {"lr": [1e-3, 3e-3, 1e-2], "wd": [0.1, 0.4, 0.8, 1.6], "epochs": [1, 2, 4, 8, 16, 32, 64],
          "mix": [0.5, 0.75, 0.9]},
    # the public code's wider grids (search_efficiency "public")
    1008: {"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], "wd": [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4],
           "epochs": [1, 2, 4, 8, 16, 32, 64], "mix": [0.5, 0.75, 0.9]},
    # a dense grid (10 weight decays, 9 epochs, 10 mixing fractions)
    5400: {"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
           "wd": [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6],
           "epochs": [1, 2, 4, 8, 16, 32, 64, 128, 256],
           "mix": [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]},
}


class TimedProgress(SimulatedEvaluator):
    """The simulated evaluator with the controller's progress line on every round, timed."""

    def __init__(self, objective: Any) -> None:
        super().__init__(objective, slots=SLOTS)
        self.progress = Progress(stream=io.StringIO())
        self.phase_s = self.progress_s = 0.0
        self.states: list[str] = []  # what the line said, each round

    def tick(self, strategies: Mapping[str, Strategy]) -> None:
        began = time.process_time()
        states = " ".join(f"{name}:{reported_state(s.phase(), s.budget_stop()).value}"
                          for name, s in strategies.items())
        self.phase_s += time.process_time() - began
        self.states.append(states)
        began = time.process_time()
        self.progress.update(strategies, len(self._queue))
        self.progress_s += time.process_time() - began


def sweep(size: int) -> tuple[TimedProgress, int, float]:
    """A grid baseline driven to the end: the evaluator (its timings and states), runs, drive CPU-s."""
    axes = GRIDS[size]
    grid = Grid.from_mapping(axes)
    assert grid.size == size, (size, grid.size)
    start = {name: values[len(values) // 2] for name, values in axes.items()}
    strategy = baseline_strategy("grid", "grid/a", grid, start=start)
    evaluator = TimedProgress(random_landscape(0, "bowl", axes))
    began = time.process_time()
    stats = drive([strategy], evaluator)
    return evaluator, stats.dispatched, time.process_time() - began


def measure(size: int) -> dict[str, Any]:
    kept, runs, drive_s = sweep(size)
    with mock.patch("search.strategies.still_decided", lambda *args, **kwargs: False):
        fresh, _, _ = sweep(size)
    said = [s for i, s in enumerate(kept.states) if i == 0 or kept.states[i - 1] != s]
    return {"size": size, "runs": runs, "rounds": len(kept.states),
            "phase_cpu_s": round(kept.phase_s, 3), "progress_cpu_s": round(kept.progress_s, 3),
            "drive_cpu_s": round(drive_s, 3), "fresh_phase_cpu_s": round(fresh.phase_s, 3),
            "states_agree": kept.states == fresh.states, "states": " -> ".join(said)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in GRIDS),
                        help=f"grid sizes to measure, of {sorted(GRIDS)}")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [measure(size) for size in sizes]
    print(f"{'grid':>6} {'runs':>6} {'rounds':>6} {'phase CPU-s':>11} {'fresh CPU-s':>11} {'progress CPU-s':>14} "
          f"{'drive CPU-s':>11} {'agree':>5}")
    for row in rows:
        print(f"{row['size']:>6} {row['runs']:>6} {row['rounds']:>6} {row['phase_cpu_s']:>11.3f} "
              f"{row['fresh_phase_cpu_s']:>11.3f} {row['progress_cpu_s']:>14.3f} {row['drive_cpu_s']:>11.3f} "
              f"{row['states_agree']!s:>5}  {row['states']}")
    first, last = rows[0], rows[-1]
    print(json.dumps({
        "name": "progress_scale", "slots": SLOTS,
        "ratio": round(last["fresh_phase_cpu_s"] / max(last["phase_cpu_s"], 1e-6), 1),  # fresh / kept, largest grid
        "phase_growth": round(last["phase_cpu_s"] / max(first["phase_cpu_s"], 1e-6), 1),
        "fresh_phase_growth": round(last["fresh_phase_cpu_s"] / max(first["fresh_phase_cpu_s"], 1e-6), 1),
        "size_growth": round(last["size"] / first["size"], 1),
        "states_agree": all(row["states_agree"] for row in rows),
        "tables": {"a grid baseline's progress line over a whole sweep (CPU seconds)": rows},
    }))


if __name__ == "__main__":
    main()
