"""A certification (or baseline) whose run budget stops it -- ``certify --max-runs N`` or the
sweep file's ``max_runs:``, both counted per certification -- records that stop in the ledger
(``search.strategies.Stop`` with ``StopReason.BUDGET``), so ``search status`` says ``stopped: run
budget spent (3 of 3 runs; ...)`` in the table and in ``--json`` instead of ``searching`` (a
baseline: ``running``) with no reason: a ``--max-runs`` given to ``certify`` is kept nowhere else.

A later ``certify`` with no budget or a larger one clears the record before it runs anything (a
status meanwhile says ``searching``) and replaces it or certifies; one with the same budget runs
and records nothing. A ledger written before the record reads as before.
"""

from __future__ import annotations

import sqlite3

import pytest

from megadocs.cli import main
from megadocs.executors import make_executor
from megadocs.exits import Exit
from search.controller import STRATEGIES, LedgerEvaluator, build_strategies
from search.ledger import STUDY_STOP, Ledger, StudyKind, read_runs, study_name
from search.objective import make_objective
from search.strategies import StopReason, StrategyState
from search.sweep import load_sweep

from .conftest import GRID, START, calls
from .test_baseline_stop import _status  # (--json certification, human text)


def _sweep(make_sweep, **cert):
    """The bowl on 72 points from an interior start: 4 runs certify nothing (the start has 6 neighbours)."""
    return make_sweep(grid=GRID, start=START, executor={"kind": "debug", "poll_s": 0.05, "max_parallel": 4},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}, **cert}])


def _certify(path, strategy, *args) -> int:
    return main(["search", "certify", str(path), "--no-progress", "--strategy", strategy, *args])


def _recorded(path, strategy):
    sweep = load_sweep(path)
    return Ledger(sweep.ledger_url, sweep.name).stop(study_name(sweep.name, "a", StudyKind(strategy)))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_budget_stop_is_recorded_and_status_says_it(make_sweep, workdir, capsys, strategy):
    path = _sweep(make_sweep)
    expected = Exit.NEGATIVE if strategy == "certify" else Exit.OK  # exit statuses as before
    assert _certify(path, strategy, "--max-runs", "3") == expected
    cert, text = _status(path, strategy, capsys)
    stop = cert["stop"]
    assert (cert["state"], stop["reason"], stop["runs"], stop["budget"]) == \
        (StrategyState.STOPPED.value, StopReason.BUDGET.value, 3, 3), cert  # old code: searching/running, no stop
    assert stop["summary"].startswith("run budget spent (3 of 3 runs") and "--max-runs" in stop["summary"]
    assert cert["reason"] == stop["summary"]
    assert f"a: stopped: {stop['summary']}" in text, text

    before = len(calls(workdir))  # the same budget: nothing runs, nothing new is recorded
    assert _certify(path, strategy, "--max-runs", "3") == expected
    assert len(calls(workdir)) == before and _status(path, strategy, capsys)[0]["stop"] == stop

    assert _certify(path, strategy, "--max-runs", "4") == expected  # a larger one goes on and replaces it
    cert, _ = _status(path, strategy, capsys)
    assert (cert["state"], cert["stop"]["runs"], cert["stop"]["budget"]) == ("stopped", 4, 4)


def test_a_search_that_goes_on_clears_the_record_before_it_runs_and_certifies(make_sweep, capsys):
    path = _sweep(make_sweep)
    assert _certify(path, "certify", "--max-runs", "3") == Exit.NEGATIVE
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    strategies, tasks = build_strategies(sweep, ledger, "certify", None)  # the next controller: no budget
    evaluator = LedgerEvaluator(sweep, ledger, make_executor(sweep.executor, sweep.out_dir / "jobs"),
                                make_objective(sweep), tasks)
    evaluator.restore(strategies)
    assert _recorded(path, "certify") is None  # cleared before it dispatched a run
    cert, _ = _status(path, "certify", capsys)
    assert (cert["state"], cert["stop"], cert["reason"]) == ("searching", None, None)
    assert _certify(path, "certify") == Exit.OK
    cert, _ = _status(path, "certify", capsys)
    assert (cert["state"], cert["stop"]) == ("certified", None)


def test_the_sweep_files_budget_is_named_in_the_record(make_sweep, capsys):
    path = _sweep(make_sweep, max_runs=2)
    assert _certify(path, "certify") == Exit.NEGATIVE
    cert, _ = _status(path, "certify", capsys)
    assert (cert["state"], cert["stop"]["runs"], cert["stop"]["budget"]) == ("stopped", 2, 2)
    assert "max_runs:" in cert["stop"]["summary"]


def test_a_ledger_without_the_record_reads_as_before(make_sweep, capsys):
    path = _sweep(make_sweep)
    assert _certify(path, "certify", "--max-runs", "3") == Exit.NEGATIVE
    with sqlite3.connect(load_sweep(path).out_dir / "ledger.db") as db:  # an older version's ledger
        assert db.execute("DELETE FROM study_user_attributes WHERE key = ?", (STUDY_STOP,)).rowcount == 1
    cert, _ = _status(path, "certify", capsys)
    assert (cert["state"], cert["stop"], cert["reason"]) == ("searching", None, None)  # as before
    assert len(read_runs(load_sweep(path))) == 3
