"""The pure certification core on analytic landscapes, checked against brute force (no Optuna,
no submitit: milliseconds)."""

from __future__ import annotations

import math

import pytest

from search.certificate import CertState, Noise, Outcome
from search.certify import decide
from search.grid import Grid
from search.landscapes import Landscape, bowl, edge, plateau, random_landscape, rugged
from search.simulate import SimulatedEvaluator
from search.strategies import CertifySearch, FixedPoints, GridSearch, drive

AXES = {
    "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "wd": [0.1, 0.2, 0.4, 0.8, 1.6],
    "epochs": [1, 2, 4, 8, 16, 32, 64],
    "mix": [0.5, 0.75, 0.9],
}
GRID = Grid.from_mapping(AXES)
START = {"lr": 1e-3, "wd": 0.4, "epochs": 4, "mix": 0.75}


def is_local_optimum(grid, fn, point) -> bool:
    loss = fn(point)
    return all(fn(n.point) >= loss for n in grid.neighbours(point))


def certify(fn, grid=GRID, start=START, slots=4, **kwargs):
    search = CertifySearch("c", grid, start, **kwargs)
    evaluator = SimulatedEvaluator(fn, slots=slots)
    stats = drive([search], evaluator)
    return search, evaluator, stats


def test_grid_neighbours_and_bounds():
    point = {"lr": 1e-4, "wd": 0.8, "epochs": 64, "mix": 0.75}
    found = {(n.axis, n.direction.value) for n in GRID.neighbours(point)}
    assert found == {("lr", "up"), ("wd", "down"), ("wd", "up"), ("epochs", "down"), ("mix", "down"), ("mix", "up")}
    assert [(b.axis, b.side) for b in GRID.bounds_hit(point)] == [("lr", "lower"), ("epochs", "upper")]
    single = Grid.from_mapping({"lr": [1e-3, 3e-3], "mix": [0.0]})
    assert single.bounds_hit({"lr": 3e-3, "mix": 0.0})[0].axis == "lr"
    assert len(single.bounds_hit({"lr": 3e-3, "mix": 0.0})) == 1  # a one-value axis is fixed, not a bound
    with pytest.raises(ValueError, match="strictly increasing"):
        Grid.from_mapping({"lr": [3e-3, 1e-3]})
    assert GRID.key({"lr": 0.003000000001, "wd": 0.4, "epochs": 4.0, "mix": 0.75}) == (3, 2, 2, 1)


@pytest.mark.parametrize("fn", [bowl, rugged, plateau, edge], ids=["bowl", "rugged", "plateau", "edge"])
def test_certified_point_is_a_brute_force_local_optimum(fn):
    search, evaluator, _ = certify(fn)
    result = search.decide()
    assert result.state is CertState.CERTIFIED
    cert = result.certificate
    assert is_local_optimum(GRID, fn, cert.point)
    assert math.isclose(cert.loss, fn(cert.point))
    # the evidence is complete: every existing neighbour with its true loss
    assert {tuple(sorted(n.point.items())) for n in cert.neighbours} == {
        tuple(sorted(n.point.items())) for n in GRID.neighbours(cert.point)
    }
    assert all(math.isclose(n.loss, fn(n.point)) for n in cert.neighbours)
    # never evaluated a point twice, and far fewer than the grid
    keys = [tuple(sorted(r.point.items())) for r in evaluator.calls]
    assert len(keys) == len(set(keys)) < GRID.size


def test_bowl_finds_the_global_optimum_and_edge_reports_the_bound():
    cert = certify(bowl)[0].decide().certificate
    assert cert.point == {"lr": 3e-3, "wd": 0.8, "epochs": 16, "mix": 0.75}
    assert cert.bounds_hit == ()
    cert = certify(edge)[0].decide().certificate
    assert cert.point["epochs"] == 64
    assert [(b.axis, b.side) for b in cert.bounds_hit] == [("epochs", "upper")]


def test_many_random_landscapes_against_brute_force():
    for seed in range(40):
        kind = ["bowl", "multimodal", "plateau", "bound", "noisy"][seed % 5]
        fn = random_landscape(seed, kind, AXES)
        search, _, _ = certify(fn, slots=1 + seed % 6)
        cert = search.decide().certificate
        assert cert is not None, (seed, kind)
        assert is_local_optimum(GRID, fn, cert.point), (seed, kind)


def test_ties_do_not_move_the_centre():
    flat = Landscape(plateau=10.0)  # every point has the same loss
    search, evaluator, _ = certify(flat)
    assert search.decide().certificate.point == START
    assert len(evaluator.calls) == 1 + len(GRID.neighbours(START))


def test_diverged_counts_as_evaluated_with_inf():
    def fn(p):
        return math.nan if p["lr"] >= 3e-3 else bowl(p)

    cert = certify(fn)[0].decide().certificate
    assert cert.point["lr"] == 1e-3
    up = [n for n in cert.neighbours if n.axis == "lr" and n.direction.value == "up"]
    assert up and up[0].loss == math.inf


def test_failed_neighbour_blocks_certification_and_is_reported():
    bad = {"lr": 3e-3, "wd": 0.8, "epochs": 32, "mix": 0.75}

    def fn(p):
        if p == bad:
            raise RuntimeError("node died")
        return bowl(p)

    search, _, _ = certify(fn)
    result = search.decide()
    assert result.state is CertState.FAILED
    assert result.certificate is None
    assert result.blocked_by == ((bad, "node died"),)


def test_the_decision_is_a_pure_function_of_the_evidence():
    grid = Grid.from_mapping({"x": [1, 2, 3, 4]})
    first = decide(grid, {"x": 2}, {})
    assert first.state is CertState.SEEDING
    assert first.wanted == ({"x": 2}, {"x": 1}, {"x": 3})
    outcomes = {((1,), 0): Outcome.finished(1.0), ((0,), 0): Outcome.finished(2.0), ((2,), 0): Outcome.finished(0.5)}
    moved = decide(grid, {"x": 2}, outcomes)
    assert moved.centre == {"x": 3} and moved.wanted == ({"x": 4},)
    assert moved.path == ({"x": 2}, {"x": 3})
    outcomes[((3,), 0)] = Outcome.finished(0.7)
    done = decide(grid, {"x": 2}, outcomes)
    assert done.state is CertState.CERTIFIED and done.certificate.point == {"x": 3}
    assert [b.to_dict() for b in done.bounds_hit] == []


def test_momentum_orders_the_continuing_neighbour_first():
    grid = Grid.from_mapping({"x": [1, 2, 3, 4, 5], "y": [1, 2, 3]})
    outcomes = {((1, 1), 0): Outcome.finished(1.0), ((2, 1), 0): Outcome.finished(0.5)}
    assert decide(grid, {"x": 2, "y": 2}, outcomes, seed_neighbours=False).wanted[0] == {"x": 4, "y": 2}


def test_parallelism_cuts_rounds_not_correctness():
    serial = certify(bowl, slots=1)
    wide = certify(bowl, slots=8)
    assert serial[0].decide().certificate.point == wide[0].decide().certificate.point
    assert wide[1].clock < serial[1].clock / 2  # simulated wall clock


def test_warm_start_and_shared_slots():
    g4 = CertifySearch("g4", GRID, START)
    g8 = CertifySearch("g8", GRID, None, waits_for="g4", fallback=START)
    evaluator = SimulatedEvaluator(bowl, slots=3)
    drive([g4, g8], evaluator)
    assert g8.start == g4.decide().certificate.point
    assert g8.decide().state is CertState.CERTIFIED
    assert len(g8.outcomes) == 1 + len(GRID.neighbours(g8.start))  # started at the optimum


def test_budget_stops_the_search():
    search, evaluator, _ = certify(bowl, max_runs=5)
    assert len(evaluator.calls) == 5
    assert search.decide().state is not CertState.CERTIFIED and search.done()


def test_grid_strategy_and_fixed_points():
    small = Grid.from_mapping({"lr": [1e-3, 3e-3, 1e-2], "wd": [0.4, 0.8]})
    exhaustive = GridSearch("grid", small)
    source = CertifySearch("src", small, {"lr": 1e-3, "wd": 0.4})
    members = FixedPoints("ens", waits_for="src", make_points=lambda p: [{**p, "seed": k} for k in range(3)])
    evaluator = SimulatedEvaluator(bowl, slots=2)
    drive([exhaustive, source, members], evaluator)
    assert len(exhaustive.outcomes) == small.size
    assert [p["seed"] for p in members.points] == [0, 1, 2]
    assert all(o.state.value == "finished" for o in members.outcomes.values())


def test_property_any_loss_table_certifies_a_true_local_optimum():
    """Arbitrary small grids and loss tables (with ties, infinities and failures), any slot count."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @st.composite
    def problems(draw):
        sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
        grid = Grid.from_mapping({f"a{i}": list(range(n)) for i, n in enumerate(sizes)})
        points = list(grid.points())
        losses = draw(st.lists(st.sampled_from([0.0, 1.0, 1.0, 2.0, 3.0, math.inf, math.nan, None]),
                               min_size=len(points), max_size=len(points)))
        table = {key_of(p): loss for p, loss in zip(points, losses)}
        start = draw(st.sampled_from(points))
        slots = draw(st.integers(1, 5))
        repeats = draw(st.sampled_from([1, 1, 3]))  # seed-independent losses: repeats must not change the answer
        return grid, table, start, slots, repeats

    def key_of(point):
        return tuple(sorted((k, v) for k, v in point.items() if k != "seed"))

    def draw_of(point):
        return tuple(sorted(point.items()))

    @settings(max_examples=300, deadline=None)
    @given(problems())
    def check(problem):
        grid, table, start, slots, repeats = problem

        def fn(point):
            loss = table[key_of(point)]
            if loss is None:
                raise RuntimeError("failed")
            return loss

        search = CertifySearch("c", grid, start, noise=Noise(repeats=repeats))
        evaluator = SimulatedEvaluator(fn, slots=slots)
        drive([search], evaluator)
        draws = [draw_of(r.point) for r in evaluator.calls]
        assert len(draws) == len(set(draws))  # never evaluated twice
        assert all(r.point.get("seed", 0) < repeats for r in evaluator.calls)
        result = search.decide()

        def loss_of(point):
            value = table[key_of(point)]
            return math.inf if value is None or math.isnan(value) else value

        if result.state is CertState.CERTIFIED:
            cert = result.certificate
            assert math.isfinite(cert.loss)  # a certificate never rests on an infinite loss
            assert table[key_of(cert.point)] is not None
            assert all(table[key_of(n.point)] is not None for n in grid.neighbours(cert.point))
            assert all(loss_of(n.point) >= loss_of(cert.point) for n in grid.neighbours(cert.point))
            ties = {key_of(n.point) for n in cert.ties}
            assert ties == {key_of(n.point) for n in grid.neighbours(cert.point) if loss_of(n.point) == cert.loss}
            diverged = {(b.axis, b.value) for b in cert.diverged}
            assert diverged == {(n.axis, n.point[n.axis]) for n in grid.neighbours(cert.point)
                                if math.isinf(loss_of(n.point))}
        elif result.reason:  # searched outward from the start and found no finite loss anywhere
            assert result.state is CertState.FAILED and result.reason.startswith("no finite loss")
            assert all(loss is None or not math.isfinite(loss) for loss in table.values())
        else:
            assert result.state is CertState.FAILED and result.blocked_by
            assert all(table[key_of(p)] is None for p, _ in result.blocked_by)

    check()


def test_warm_start_from_a_failed_source_fails_with_the_reason():
    def fn(p):
        raise RuntimeError("cluster down")

    g4 = CertifySearch("g4", GRID, START, seed_neighbours=False)
    g8 = CertifySearch("g8", GRID, None, waits_for="g4", fallback=START)
    members = FixedPoints("ens", waits_for="g4", make_points=lambda p: [p])
    drive([g4, g8, members], SimulatedEvaluator(fn, slots=2))
    assert g4.decide().state is CertState.FAILED
    assert g8.done() and g8.decide().state is CertState.FAILED
    assert g8.decide().reason == "source g4 ended failed"
    assert g8.decide().blocked_by == ()  # the failed points are g4's, counted there (not g8's start)
    assert members.done() and members.points == [] and members.source_failed


def test_one_free_slot_goes_to_each_certification_in_turn():
    """With one slot the round-robin resumes where it stopped: the first dispatches visit every
    certification once before any gets a second run (the first in the list used to get them all)."""
    evaluator = SimulatedEvaluator(bowl, slots=1)
    searches = [CertifySearch(name, GRID, START) for name in ("a", "b", "c")]
    drive(searches, evaluator)
    tasks = [request.task for request in evaluator.calls]
    assert tasks[:3] == ["a", "b", "c"] and tasks[3:6] == ["a", "b", "c"]
    assert all(search.decide().state is CertState.CERTIFIED for search in searches)
