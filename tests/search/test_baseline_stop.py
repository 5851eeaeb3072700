"""A baseline that stops before its run budget (TPE converged, a grid exhausted) records that stop
in the ledger (``search.strategies.Stop``), so ``search status`` says ``done: converged after N of
M runs (...)`` in the table and in ``--json`` instead of ``running``, and a restarted controller
does not resume a converged TPE. A ledger written before the record reads as before.

On the bowl a stopped baseline has run its best point's neighbours, so its evidence certifies it
(state ``certified``, the stop said beside it); ``running`` -> ``done`` is the state of a
converged TPE whose best point still lacks a neighbour (the last test, on the status core)."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from megadocs.cli import main
from search.baselines import BASELINES, baseline_strategy
from search.certificate import Outcome
from search.grid import Grid
from search.landscapes import bowl
from search.ledger import STUDY_STOP, read_runs
from search.status import CertificationSummary
from search.strategies import Stop, StopReason, StrategyState
from search.sweep import load_sweep
from search.tpe import CONVERGED, TPESearch

from .conftest import GRID, calls

SMALL = {"lr": [0.001, 0.003], "wd": [0.4, 0.8], "epochs": [4, 8]}  # 8 points
START = {"lr": 0.003, "wd": 0.8, "epochs": 8}
BUDGET = 30  # the certification's max_runs: far more runs than the grid has points
WHY = {"grid": StopReason.EXHAUSTED, "tpe": StopReason.CONVERGED}  # each baseline's way to stop early


def _sweep(make_sweep, grid=SMALL, budget=BUDGET, max_parallel=4):
    return make_sweep(grid=grid, start=START, executor={"kind": "debug", "poll_s": 0.05, "max_parallel": max_parallel},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}, "max_runs": budget}])


def _certify(path, strategy) -> int:
    return main(["search", "certify", str(path), "--no-progress", "--strategy", strategy])


def _status(path, strategy, capsys) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["search", "status", str(path), "--strategy", strategy, "--json"]) == 0
    [cert] = json.loads(capsys.readouterr().out)["certifications"]
    assert main(["search", "status", str(path), "--strategy", strategy]) == 0
    return cert, capsys.readouterr().out


def _live_states(stderr: str) -> dict[str, str]:
    """Each strategy's state on the progress line's last plain line (stderr is no terminal here):
    ``certify: 3 finished, 0 running | a:stopped b:seeding``."""
    last = [line for line in stderr.splitlines() if line.startswith("certify: ")][-1]
    return dict(item.rsplit(":", 1) for item in re.split(r" (?=\S+:)", last.split(" | ", 1)[1]))


def test_every_baseline_has_a_way_to_stop_early():
    assert set(WHY) == set(BASELINES)


@pytest.mark.parametrize("strategy", BASELINES)
def test_a_baseline_stopped_before_its_budget_reads_done_with_why(make_sweep, capsys, strategy):
    path = _sweep(make_sweep)
    assert _certify(path, strategy) == 0
    cert, text = _status(path, strategy, capsys)
    assert cert["runs"]["finished"] == 8 and cert["state"] == "certified" and cert["outstanding"] == [], cert
    stop = cert["stop"]
    assert (stop["reason"], stop["runs"], stop["budget"], stop["points"]) == (WHY[strategy].value, 8, BUDGET, 8)
    assert stop["summary"].startswith(f"{WHY[strategy].value} after 8 of {BUDGET} runs (")
    assert cert["reason"] == stop["summary"]
    assert f"a: certified: {stop['summary']}" in text, text


@pytest.mark.parametrize("strategy", BASELINES)
def test_the_live_progress_line_says_certified_where_status_does(make_sweep, capsys, strategy):
    """A baseline whose runs certify its best point: certify's live line said ``done`` (the
    controller kept no certifier reading of a baseline's runs) while status said ``certified``;
    both now read ``Strategy.phase``."""
    path = _sweep(make_sweep)
    capsys.readouterr()
    assert main(["search", "certify", str(path), "--strategy", strategy]) == 0
    live = _live_states(capsys.readouterr().err)
    cert, _ = _status(path, strategy, capsys)
    assert live == {f"{strategy}/a": cert["state"]} == {f"{strategy}/a": "certified"}  # old code: done


def test_a_restarted_controller_does_not_resume_a_converged_tpe(make_sweep, workdir, capsys):
    path = _sweep(make_sweep, grid=GRID, budget=100, max_parallel=1)
    assert _certify(path, "tpe") == 0
    runs = len(read_runs(load_sweep(path)))
    assert runs < 72, runs  # seeded: TPE converges with grid points left unrun
    before = len(calls(workdir))
    assert _certify(path, "tpe") == 0
    assert len(calls(workdir)) == before and len(read_runs(load_sweep(path))) == runs  # old code: one more run
    cert, _ = _status(path, "tpe", capsys)
    assert cert["stop"]["reason"] == StopReason.CONVERGED.value and cert["stop"]["runs"] == runs


def test_a_converged_tpe_searches_on_when_its_grid_changes_but_not_its_size(make_sweep, workdir, capsys):
    """The convergence was recorded on GRID; a grid of the same size with one value moved is
    another grid: the next controller's TPE proposes again (old code: it ran nothing, converged)."""
    path = _sweep(make_sweep, grid=GRID, budget=100, max_parallel=1)
    assert _certify(path, "tpe") == 0
    before = len(calls(workdir))
    path = _sweep(make_sweep, grid={**GRID, "epochs": [*GRID["epochs"][:-1], 64]}, budget=100, max_parallel=1)
    assert _certify(path, "tpe") == 0
    assert len(calls(workdir)) > before
    cert, _ = _status(path, "tpe", capsys)
    assert cert["stop"]["grid"] == Grid.from_mapping(load_sweep(path).grid).fingerprint  # recorded anew


def test_a_ledger_without_the_stop_record_reads_as_before(make_sweep, workdir, capsys):
    path = _sweep(make_sweep)
    assert _certify(path, "tpe") == 0
    ledger = load_sweep(path).out_dir / "ledger.db"  # an older version's ledger: no stop recorded
    with sqlite3.connect(ledger) as db:
        assert db.execute("DELETE FROM study_user_attributes WHERE key = ?", (STUDY_STOP,)).rowcount == 1
    cert, _ = _status(path, "tpe", capsys)
    assert (cert["state"], cert["stop"], cert["reason"]) == ("certified", None, None)  # as before
    assert _certify(path, "tpe") == 0  # the next controller converges again, runs nothing, records it
    cert, _ = _status(path, "tpe", capsys)
    assert cert["state"] == "certified" and cert["stop"]["reason"] == StopReason.CONVERGED.value
    assert len(read_runs(load_sweep(path))) == 8


def test_a_converged_tpe_whose_best_point_lacks_a_neighbour_reads_done_not_running():
    grid = Grid.from_mapping(SMALL)

    def tpe(stop=None) -> TPESearch:
        search = baseline_strategy("tpe", "a", grid, max_runs=BUDGET, start=START)  # as status builds it
        for point in (START, {**START, "lr": 0.001}):  # the start's other neighbours never ran
            search.record(point, Outcome.finished(bowl({**point, "method": "simple", "g": 4})))
        if stop is not None:
            search.restore_stop(stop)
        return search

    def summary(search):
        return CertificationSummary.of_search(search)

    assert summary(tpe()).state is StrategyState.RUNNING  # nothing recorded says it converged: as before
    stop = Stop(StopReason.CONVERGED, 2, BUDGET, grid.size, CONVERGED)
    converged = tpe(stop)
    assert (summary(converged).state, summary(converged).stop) == (StrategyState.DONE, stop)
    assert summary(converged).reason == f"converged after 2 of {BUDGET} runs ({CONVERGED})"
    assert converged.wanted(4) == [] and converged.outstanding() == ()  # a restarted controller asks for nothing
    widened = tpe(Stop(StopReason.CONVERGED, 2, BUDGET, grid.size - 1, CONVERGED))  # stopped on a smaller grid
    assert widened.state() is StrategyState.RUNNING and widened.wanted(1)


def test_a_tpe_whose_proposals_hit_its_own_runs_in_flight_proposes_again_once_they_finish(monkeypatch):
    """Convergence is judged in a round with none of TPE's runs in flight: proposals that land on a
    run still in flight say nothing of where the sampler goes once its loss is known (before, such
    a round ended TPE once those runs finished, short of its budget, with an unrun point left)."""
    import search.tpe

    monkeypatch.setattr(search.tpe, "MAX_REPEATS", 2)
    grid = Grid.from_mapping({"lr": [0.001, 0.003, 0.01]})
    a, b, c = ({"lr": lr} for lr in (0.001, 0.003, 0.01))
    tpe = TPESearch("a", grid, n_trials=10)  # a budget beyond the grid: only convergence ends it

    def proposals(*points):  # the sampler's next proposals, in order (Optuna asks enqueued trials first)
        for point in points:
            tpe.study.enqueue_trial(point)

    proposals(a, b)
    assert tpe.wanted(2) == [a, b]
    for point in (a, b):
        tpe.record(point, Outcome.running())
    tpe.record(a, Outcome.finished(1.0))
    proposals(b, a)  # one in flight, one run: MAX_REPEATS known points in a row while b runs
    assert tpe.wanted(1) == [] and not tpe.done()
    tpe.record(b, Outcome.finished(0.5))
    assert not tpe.done() and tpe.stop() is None
    proposals(c)
    assert tpe.wanted(1) == [c]
    tpe.record(c, Outcome.running())
    tpe.record(c, Outcome.finished(0.7))
    proposals(a, b)  # nothing in flight: now it has converged
    assert tpe.wanted(1) == [] and tpe.done() and tpe.stop().reason is StopReason.CONVERGED
