"""A certification (or baseline) whose run budget stops it -- ``certify --max-runs N`` or the
sweep file's ``max_runs:``, both counted per certification -- records that stop in the ledger
(``search.strategies.Stop`` with ``StopReason.BUDGET``), so ``search status`` says ``stopped: run
budget spent (3 of 3 runs; ...)`` in the table and in ``--json`` instead of ``searching`` (a
baseline: ``running``) with no reason: a ``--max-runs`` given to ``certify`` is kept nowhere else.

A later ``certify`` with no budget or a larger one clears the record before it runs anything (a
status meanwhile says ``searching``) and replaces it or certifies; one with the same budget runs
and records nothing. A ledger written before the record reads as before.

A warm start whose source its budget stopped keeps waiting (a larger budget goes on: it is not
failed) and says why: ``waiting for a (stopped: run budget spent)``; ``certify``'s live progress
line says each search's state as ``status`` does (``stopped``, not ``searching``/``done``).
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from megadocs.cli import main
from megadocs.executors import make_executor
from megadocs.exits import Exit
from search.certificate import CertState
from search.controller import STRATEGIES, LedgerEvaluator, build_strategies
from search.grid import Grid
from search.landscapes import bowl
from search.ledger import STUDY_STOP, Ledger, StudyKind, read_runs, study_name
from search.objective import make_objective
from search.simulate import SimulatedEvaluator
from search.status import summarize_ensembles
from search.strategies import CertifySearch, FixedPoints, StopReason, StrategyState, drive
from search.sweep import load_sweep

from .conftest import GRID, START, calls
from .test_baseline_stop import _live_states, _status  # (--json certification, human text)


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


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_live_progress_line_says_the_state_status_says(make_sweep, capsys, strategy):
    path = _sweep(make_sweep)
    capsys.readouterr()
    main(["search", "certify", str(path), "--strategy", strategy, "--max-runs", "3"])
    live = _live_states(capsys.readouterr().err)
    cert, _ = _status(path, strategy, capsys)
    task = "a" if strategy == "certify" else f"{strategy}/a"
    assert live == {task: cert["state"]} == {task: StrategyState.STOPPED.value}  # old code: searching / done


def test_a_warm_start_whose_source_its_budget_stopped_says_why_it_waits(make_sweep, capsys):
    path = make_sweep(grid=GRID, start=START, executor={"kind": "debug", "poll_s": 0.05, "max_parallel": 4},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                      {"name": "b", "fixed": {"method": "simple", "g": 8}, "warm_start": "a"}])
    capsys.readouterr()
    assert main(["search", "certify", str(path), "--max-runs", "3"]) == Exit.NEGATIVE
    err = capsys.readouterr().err
    live = _live_states(err)
    status, text = _status_all(path, capsys)
    waiting = "waiting for a (stopped: run budget spent)"
    assert f"b: not certified: {waiting}; re-run with a larger --max-runs" in err, err
    assert (status["a"]["state"], status["b"]["state"], status["b"]["reason"]) == \
        ("stopped", CertState.SEEDING.value, waiting), status  # old code: reason None
    assert f"b: seeding: {waiting}" in text, text
    assert live == {"a": "stopped", "b": "seeding"}  # old code: a:searching b:failed
    assert _certify(path, "certify") == Exit.OK  # no budget: a goes on, then b starts from its certificate
    status, _ = _status_all(path, capsys)
    assert [status[name]["state"] for name in "ab"] == ["certified", "certified"]
    assert status["b"]["start"] == status["a"]["certificate"]["point"] and status["b"]["reason"] is None


def test_a_chain_of_warm_starts_says_the_whole_cause(make_sweep, capsys):
    """c waits for b, b for a, and a's run budget stopped it: c says so through b (old code:
    ``waiting for b``, which names neither a nor why), in ``--json``'s ``reason``, the table's line
    and certify's closing line."""
    chain = [{"name": "a", "fixed": {"method": "simple", "g": 4}},
             {"name": "b", "fixed": {"method": "simple", "g": 8}, "warm_start": "a"},
             {"name": "c", "fixed": {"method": "simple", "g": 16}, "warm_start": "b"}]
    path = make_sweep(grid=GRID, start=START, executor={"kind": "debug", "poll_s": 0.05, "max_parallel": 4},
                      certifications=chain, ensembles=[{"name": "e", "from": "c", "members": 2}],
                      transfers=[{"name": "t", "from": "c", "fixed": {"method": "stitched", "g": 4}}])
    capsys.readouterr()
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "3"]) == Exit.NEGATIVE
    err = capsys.readouterr().err
    status, text = _status_all(path, capsys)
    through = "waiting for b, which waits for a (stopped: run budget spent)"
    assert [status[name]["reason"] for name in "bc"] == ["waiting for a (stopped: run budget spent)", through]
    assert f"c: seeding: {through}" in text and f"c: not certified: {through};" in err, (text, err)
    # an ensemble and a transfer from c say the same chain (old code: "waiting for c to certify (seeding)", "waiting")
    whole = "waiting for c, which waits for b, which waits for a (stopped: run budget spent)"
    assert f"ensemble e (from c, {whole}): 0/2 members completed" in text, text
    assert f"transfer t (method=stitched g=4 at c's optimum): {whole}" in text.splitlines(), text
    # the refusal analysis prints for the ensemble too (old code: "source c is not certified now (seeding)")
    [ensemble] = summarize_ensembles(load_sweep(path))
    assert ensemble.refusal() == f"{whole}, so no point's members can be scored; re-run `megadocs search certify`"


def test_a_warm_start_whose_chain_failed_names_the_chain():
    """c waits for b, b for a, and a failed (every run fails): c, and an ensemble from c, say the
    failure through b (old code: ``source 'b' ended failed``, which names neither a nor why)."""
    def fails(point):
        raise RuntimeError("cluster down")

    grid = Grid.from_mapping(GRID)
    a = CertifySearch("a", grid, START, seed_neighbours=False)
    b, c = (CertifySearch(name, grid, None, waits_for=source, fallback=START) for source, name in ("ab", "bc"))
    members = FixedPoints("ens", waits_for="c", make_points=lambda p: [p])
    drive([a, b, c, members], SimulatedEvaluator(fails, slots=2))
    assert [s.decide().state for s in (a, b, c)] == [CertState.FAILED] * 3
    assert (b.decide().reason, c.decide().reason) == \
        ("source a ended failed", "source b, which waits for a, ended failed")
    assert members.source_failed == "source c, which waits for b, which waits for a, ended failed"


def test_a_waiting_reason_is_bounded_on_a_long_chain_and_a_cycle():
    """Driver-level: a chain of six warm starts names the first two sources and the last, with how
    many are left out; a cycle (only strategies built in code can make one) ends where it repeats."""
    grid = Grid.from_mapping(GRID)
    names = "abcdefg"
    chain = [CertifySearch("a", grid, START, max_runs=3)] + [
        CertifySearch(name, grid, None, waits_for=source, fallback=START) for source, name in zip(names, names[1:])]
    drive(chain, SimulatedEvaluator(lambda p: bowl({**p, "method": "simple", "g": 4}), slots=2))
    assert chain[-1].decide().reason == ("waiting for f, which waits for e, ... 3 more ..., which waits for a "
                                         "(stopped: run budget spent)")
    assert chain[4].decide().reason == ("waiting for d, which waits for c, which waits for b, which waits for a "
                                        "(stopped: run budget spent)")  # CHAIN_NAMED sources: all named
    x = CertifySearch("x", grid, None, waits_for="y", fallback=START)
    y = CertifySearch("y", grid, None, waits_for="x", fallback=START)
    for search in (x, y):
        search.resolve({"x": x, "y": y})
    assert (x.decide().reason, y.decide().reason) == \
        ("waiting for y, which waits for x", "waiting for x, which waits for y")


def test_a_stop_holds_only_on_its_own_grid_not_another_of_its_size(make_sweep, capsys):
    """The budget stopped a after 3 runs (the start and two lr neighbours); the grid's last epochs
    value then changes (32 -> 64, where nothing ran): 72 points still, but another grid, so the
    stop no longer holds (old code: status still said stopped). A stop recorded before the grid's
    fingerprint (an older ledger) holds on any grid of its size, as it did."""
    path = _sweep(make_sweep)
    assert _certify(path, "certify", "--max-runs", "3") == Exit.NEGATIVE
    stop = _recorded(path, "certify")
    changed = {**GRID, "epochs": [*GRID["epochs"][:-1], 64]}
    path = make_sweep(grid=changed, start=START, executor={"kind": "debug", "poll_s": 0.05, "max_parallel": 4},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}}])
    cert, _ = _status(path, "certify", capsys)
    assert (cert["state"], cert["stop"], cert["runs"]["finished"]) == ("searching", None, 3), cert
    assert stop.grid == Grid.from_mapping(GRID).fingerprint != Grid.from_mapping(changed).fingerprint
    sweep = load_sweep(path)
    older = {key: value for key, value in stop.to_dict().items() if key != "grid"}  # no fingerprint
    Ledger(sweep.ledger_url, sweep.name).set_study_attr(study_name(sweep.name, "a", StudyKind.CERTIFY), STUDY_STOP,
                                                       older)
    cert, _ = _status(path, "certify", capsys)
    assert (cert["state"], cert["stop"]["grid"]) == ("stopped", None)  # as such a ledger read before


def _status_all(path, capsys) -> tuple[dict[str, dict], str]:
    """Every certification of ``status --json`` by name, and the human text."""
    capsys.readouterr()
    assert main(["search", "status", str(path), "--json"]) == 0
    certs = {c["name"]: c for c in json.loads(capsys.readouterr().out)["certifications"]}
    assert main(["search", "status", str(path)]) == 0
    return certs, capsys.readouterr().out


def test_a_budget_stopped_source_leaves_its_warm_starts_and_ensembles_waiting_not_failed():
    """The driver's view (the controller's, without a ledger): before, the source's spent budget
    made ``g8`` FAILED ("source 'g4' ended searching") and the ensemble done with no members."""
    grid = Grid.from_mapping(GRID)
    g4 = CertifySearch("g4", grid, START, max_runs=3)
    g8 = CertifySearch("g8", grid, None, waits_for="g4", fallback=START, max_runs=3)
    members = FixedPoints("ens", waits_for="g4", make_points=lambda p: [p])
    assert g8.decide().reason == "waiting for g4"  # before g4 ran anything (old code: None)
    drive([g4, g8, members], SimulatedEvaluator(lambda p: bowl({**p, "method": "simple", "g": 4}), slots=2))
    assert g4.budget_stop() is not None
    assert (g8.decide().state, g8.decide().reason, g8.done()) == \
        (CertState.SEEDING, "waiting for g4 (stopped: run budget spent)", False)
    assert (members.state(), members.points) == (StrategyState.WAITING, None)
