"""The certifier keeps its last decision while new evidence leaves it standing
(``search.certify.still_decided``), so ``certify``'s progress line, which asks every baseline's
phase every round, costs a decision only where the evidence it rests on changed. The kept decision
must be the one :func:`search.certify.decide` makes afresh on the same evidence, after every record:
runs dispatched, finished (better, tied, worse, diverged), failed and retried, in any order, with
and without seeded repeats. A grid baseline's own bookkeeping (its next points, its run counts) is
kept as it goes too, and must read as the outcomes do."""

from __future__ import annotations

import math
import random

import pytest

from search.baselines import baseline_strategy
from search.certificate import CertState, Noise, Outcome, RunState
from search.certify import decide
from search.grid import Grid
from search.landscapes import random_landscape
from search.params import RunParams
from search.strategies import CertifySearch, GridSearch, StrategyState, baseline_phase

AXES = {"lr": [1e-3, 3e-3, 1e-2], "wd": [0.1, 0.4, 0.8, 1.6], "epochs": [4, 8, 16]}  # 36 points
START = {"lr": 3e-3, "wd": 0.4, "epochs": 8}


def _random_outcome(rng: random.Random, loss: float) -> Outcome:
    roll = rng.random()
    if roll < 0.08:
        return Outcome.failed("lost")
    if roll < 0.14:
        return Outcome.finished(math.inf)
    if roll < 0.24:
        return Outcome.finished(round(loss, 1))  # coarse: ties with the centre
    return Outcome.finished(loss)


def _events(seed: int, grid: Grid, repeats: int) -> list[tuple[dict, Outcome]]:
    """A seeded history: points dispatched a few at a time and finishing in a random order, some
    failing and retried later, some finished points recorded again (a restore), seeded repeats."""
    rng = random.Random(seed)
    landscape = random_landscape(seed, "multimodal", AXES)
    points = list(grid.points())
    rng.shuffle(points)
    draws = [RunParams(point=p, seed=r or None).strategy_point() for p in points[:24] for r in range(repeats)
             if r == 0 or rng.random() < 0.5]
    events, in_flight = [], []
    for draw in draws:
        events.append((draw, Outcome.running()))
        in_flight.append(draw)
        while in_flight and rng.random() < 0.6:
            done = in_flight.pop(rng.randrange(len(in_flight)))
            outcome = _random_outcome(rng, landscape({k: v for k, v in done.items() if k != "seed"}))
            events.append((done, outcome))
            if outcome.state is RunState.FAILED and rng.random() < 0.5:  # retried (--retry-failed)
                events.append((done, Outcome.running()))
                in_flight.append(done)
            elif rng.random() < 0.05:  # recorded again as it stands
                events.append((done, outcome))
    for done in in_flight:
        events.append((done, _random_outcome(rng, landscape({k: v for k, v in done.items() if k != "seed"}))))
    return events


@pytest.mark.parametrize(("repeats", "drawn"), [(1, 1), (3, 3), (1, 3)])  # (1, 3): seeded runs of an earlier setting
@pytest.mark.parametrize("seed", range(12))
def test_the_kept_decision_is_a_fresh_decision_after_every_record(seed, repeats, drawn):
    grid = Grid.from_mapping(AXES)
    noise = Noise(repeats=repeats)
    search = CertifySearch("c", grid, START, noise=noise)
    baseline = baseline_strategy("grid", "g", grid, start=START)
    kept = 0
    for point, outcome in _events(seed, grid, drawn):
        before = search._decision
        search.record(point, outcome)
        if drawn == 1:
            baseline.record(point, outcome)
        kept += search._decision is not None and search._decision is before
        fresh = decide(grid, START, dict(search.outcomes), noise=noise)
        assert search.decide() == fresh
        assert search.phase() is fresh.state
        for state in RunState:
            assert search.count(state) == sum(o.state is state for o in search.outcomes.values())
        if drawn == 1:
            # the baseline runs 24 of the 36 points: its own state stays running
            assert baseline.phase() is baseline_phase(StrategyState.RUNNING, fresh.state)
    if drawn == 1:
        assert kept, "no record left the decision standing: the test exercises nothing kept"


def test_a_better_point_far_from_the_centre_moves_the_kept_decision():
    grid = Grid.from_mapping({"lr": [1, 2, 3, 4, 5]})
    search = CertifySearch("c", grid, {"lr": 2})
    for lr, loss in ((2, 1.0), (1, 2.0), (3, 2.0)):
        search.record({"lr": lr}, Outcome.running())
        search.record({"lr": lr}, Outcome.finished(loss))
    assert search.phase() is CertState.CERTIFIED
    search.record({"lr": 5}, Outcome.running())  # away from the centre: kept
    assert search.phase() is CertState.CERTIFIED
    search.record({"lr": 5}, Outcome.finished(0.5))  # better: the centre moves, its neighbour 4 is wanted
    assert search.decide().centre == {"lr": 5} and search.phase() is CertState.SEARCHING
    assert search.decide().wanted == ({"lr": 4},)


@pytest.mark.parametrize("seed", range(6))
def test_a_grid_baseline_asks_for_the_first_unrun_points_in_grid_order(seed):
    grid = Grid.from_mapping(AXES)
    rng = random.Random(seed)
    search = GridSearch("g", grid)
    for point in rng.sample(list(grid.points()), 20):  # out of order: a ledger's runs restored
        search.record(point, Outcome.running())
    for _ in range(5):
        limit = rng.randint(1, 8)
        expected = [p for p in grid.points() if grid.key(p) not in search.outcomes][:limit]
        wanted = search.wanted(limit)
        assert wanted == expected
        for point in wanted:
            search.record(point, Outcome.running())


def test_a_settled_run_recorded_again_is_decided_afresh():
    """An earlier centre recorded again (a restore) moves in the finishing order: the path changes."""
    grid = Grid.from_mapping({"lr": [1, 2, 3, 4, 5]})
    search = CertifySearch("c", grid, {"lr": 1})
    for lr, loss in ((1, 2.0), (4, 1.0)):
        search.record({"lr": lr}, Outcome.running())
        search.record({"lr": lr}, Outcome.finished(loss))
    assert search.decide().path == ({"lr": 1}, {"lr": 4})
    search.record({"lr": 1}, Outcome.finished(2.0))
    assert search.decide() == decide(grid, {"lr": 1}, dict(search.outcomes))
    assert search.decide().path == ({"lr": 4},)
