"""Certificates under seed noise, divergence and bad losses: the pure core only (milliseconds)."""

from __future__ import annotations

import math
import random
import statistics

from search.certificate import CertState, Noise, Outcome
from search.certify import decide
from search.grid import Grid
from search.landscapes import Landscape, SeedNoise, random_landscape
from search.simulate import SimulatedEvaluator
from search.strategies import CertifySearch, drive

LINE = Grid.from_mapping({"x": [1, 2, 3, 4, 5]})


def certify(fn, grid=LINE, start=None, slots=3, **kwargs):
    start = start or {"x": 3}
    search = CertifySearch("c", grid, start, **kwargs)
    evaluator = SimulatedEvaluator(fn, slots=slots)
    drive([search], evaluator)
    return search, evaluator


def table_objective(draws):
    """draws[(x, seed)] -> loss; seed 0 is the run without a seed."""
    def fn(params):
        return draws[(params["x"], params.get("seed", 0))]
    return fn


def test_repeats_carry_seeds_and_a_lucky_draw_never_certifies():
    # truth: x=3 best (1.00), x=4 at 1.01; x=4's first draw is lucky (0.99), its others are not
    draws = {(x, s): 1.0 + 0.01 * abs(x - 3) ** 2 + (0.003 if s % 2 else -0.003) for x in range(1, 6)
             for s in range(4)}
    draws[(4, 0)] = 0.99
    search, evaluator = certify(table_objective(draws), noise=Noise(repeats=4))
    result = search.decide()
    assert result.state is CertState.CERTIFIED
    assert result.certificate.point == {"x": 3} and result.certificate.draws == 4
    seeds = sorted(r.point.get("seed", 0) for r in evaluator.calls if r.point["x"] == 3)
    assert seeds == [0, 1, 2, 3]  # the first run carries no seed, repeats seed 1, 2, 3
    assert all("seed" not in r.point for r in evaluator.calls if r.point["x"] in (1, 5))
    # x=4 looked better after one draw: it was repeated until its mean said otherwise
    assert sum(r.point["x"] == 4 for r in evaluator.calls) >= 2
    [up] = [n for n in result.certificate.neighbours if n.direction.value == "up"]
    assert up.loss > result.certificate.loss


def test_noise_estimate_gaps_in_noise_units_and_ties_within_noise():
    rng = random.Random(0)
    truth = {1: 1.30, 2: 1.10, 3: 1.00, 4: 1.001, 5: 1.30}
    draws = {(x, s): truth[x] + rng.gauss(0, 0.01) for x in truth for s in range(6)}
    search, evaluator = certify(table_objective(draws), noise=Noise(repeats=6))
    cert = search.decide().certificate
    assert cert is not None and cert.point["x"] in (3, 4)
    noise = cert.noise
    assert noise.repeats == 6 and noise.df >= 5 and 0.004 < noise.sigma < 0.02
    by_x = {n.point["x"]: n for n in cert.neighbours}
    other = 4 if cert.point["x"] == 3 else 3
    assert by_x[other].tie and by_x[other].draws == 6  # 0.001 apart with sd 0.01: a tie, flagged
    assert [n.point for n in cert.ties] == [{"x": other}]
    assert by_x[other].gap_sd == (by_x[other].loss - cert.loss) / noise.sigma
    far = by_x.get(2) or by_x.get(5)
    assert not far.tie and far.gap_sd > 5
    # a clearly worse neighbour is settled after one draw: repeats go where they decide something
    assert sum(r.point["x"] == 5 for r in evaluator.calls) <= 1 or cert.point["x"] == 4
    assert cert.to_dict()["noise"]["sigma"] == noise.sigma
    assert cert.to_dict()["ties"] == [{"x": other}]


def test_noise_free_exact_ties_are_flagged_and_do_not_move_the_centre():
    flat = Landscape(plateau=10.0)
    grid = Grid.from_mapping({"lr": [1e-3, 3e-3, 1e-2], "wd": [0.4, 0.8]})
    search, _ = certify(flat, grid=grid, start={"lr": 3e-3, "wd": 0.4})
    cert = search.decide().certificate
    assert cert.point == {"lr": 3e-3, "wd": 0.4}
    assert len(cert.ties) == len(cert.neighbours) == 3 and all(n.gap_sd is None for n in cert.neighbours)
    assert cert.noise.repeats == 1 and cert.noise.sigma is None


def test_all_diverged_searches_outward_then_fails_with_a_reason():
    def finite_far(params):
        return 0.5 if params["x"] == 1 else math.inf

    search, evaluator = certify(finite_far, start={"x": 4})
    result = search.decide()
    assert result.state is CertState.CERTIFIED and result.certificate.point == {"x": 1}
    assert math.isfinite(result.certificate.loss)
    assert [(b.axis, b.side) for b in result.certificate.diverged] == [("x", "upper")]

    search, evaluator = certify(lambda p: math.nan, start={"x": 4})
    result = search.decide()
    assert result.state is CertState.FAILED and result.certificate is None
    assert result.reason == "no finite loss: all 5 evaluated points diverged; nothing to certify"
    assert len(evaluator.calls) == 5 and search.done()


def test_diverged_neighbours_are_soft_bounds():
    grid = Grid.from_mapping({"lr": [1e-3, 3e-3, 1e-2], "epochs": [1, 2, 4]})

    def fn(p):
        return math.inf if p["lr"] == 1e-2 else Landscape()(p)

    cert = certify(fn, grid=grid, start={"lr": 3e-3, "epochs": 2})[0].decide().certificate
    assert cert.point["lr"] == 3e-3
    assert [b.to_dict() for b in cert.diverged] == [{"axis": "lr", "side": "upper", "value": 1e-2, "extended": False}]
    assert cert.to_dict()["soft_bounds"] == [{"axis": "lr", "side": "upper", "value": 1e-2, "extended": False}]


def test_minus_inf_is_a_failed_run_with_a_reason():
    outcome = Outcome.finished(-math.inf)
    assert outcome.state.value == "failed" and "-inf" in outcome.reason
    assert Outcome.finished(math.nan).loss == math.inf
    search, _ = certify(lambda p: -math.inf if p["x"] == 4 else float(abs(p["x"] - 3)))
    result = search.decide()
    assert result.state is CertState.FAILED and result.certificate is None
    assert result.blocked_by == (({"x": 4}, outcome.reason),)


def test_budget_spent_is_not_done_certifying():
    search, evaluator = certify(lambda p: float(p["x"]), start={"x": 5}, max_runs=2, slots=1)
    assert len(evaluator.calls) == 2 and search.budget_spent() and search.done()
    assert search.decide().state is CertState.SEARCHING


def test_noise_free_decision_is_unchanged_by_repeats_of_one():
    grid = Grid.from_mapping({"x": [1, 2, 3]})
    outcomes = {((1,), 0): Outcome.finished(1.0), ((0,), 0): Outcome.finished(2.0), ((2,), 0): Outcome.finished(1.5)}
    one = decide(grid, {"x": 2}, outcomes)
    assert one.state is CertState.CERTIFIED and one.certificate.point == {"x": 2}
    four = decide(grid, {"x": 2}, outcomes, noise=Noise(repeats=4))
    assert four.state is CertState.SEARCHING and four.centre is None or four.state is CertState.SEEDING
    assert {"x": 2, "seed": 1} in four.wanted  # the start's repeats before anything is complete


def test_noise_recovers_the_noise_free_optimum_for_a_bounded_number_of_runs():
    """Ten seeded landscapes with seed noise as large as the optimum's closest neighbour gap:
    with repeats, at least 8 certificates are true local optima of the noise-free landscape, for
    at most 4x the runs of a noise-free certification (the issue's goal; the benchmark measures
    more levels)."""
    axes = {"lr": [1e-3, 3e-3, 1e-2], "wd": [0.1, 0.4, 0.8, 1.6], "epochs": [1, 2, 4, 8, 16, 32]}
    grid = Grid.from_mapping(axes)
    hits, ratios = 0, []
    for seed in range(10):
        truth = random_landscape(seed, "bowl", axes)
        start = random.Random(seed).choice(list(grid.points()))
        exact, exact_eval = certify(truth, grid=grid, start=start, slots=4)
        optimum = exact.decide().certificate.point
        gap = min(truth(n.point) - truth(optimum) for n in grid.neighbours(optimum))
        noisy = SeedNoise(truth, gap, seed)
        search, evaluator = certify(noisy, grid=grid, start=start, slots=4, noise=Noise(repeats=4))
        cert = search.decide().certificate
        assert cert is not None
        hits += all(truth(n.point) >= truth(cert.point) for n in grid.neighbours(cert.point))
        ratios.append(len(evaluator.calls) / len(exact_eval.calls))
    assert hits >= 8, hits
    assert statistics.mean(ratios) <= 4.0, ratios
