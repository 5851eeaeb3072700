"""``megadocs search status``: the human view and ``--json`` are one typed record
(``search.status.StatusReport``), so a script reading the JSON learns everything the human view
says (ensembles, transfers, jobs, the controller, undescribed trials), and a baseline strategy's
state is said in its own words, not the certifier's phases."""

from __future__ import annotations

import json

import pytest

from megadocs.cli import main
from search.baselines import BASELINES
from search.certificate import CertState
from search.controller import STRATEGIES
from search.ledger import Ledger, StudyKind, read_runs, study_name
from search.params import RunParams
from search.status import summarize
from search.strategies import StrategyState
from search.sweep import load_sweep

SMALL = {"grid": {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8], "epochs": [4, 8]},
         "start": {"lr": 0.003, "wd": 0.8, "epochs": 8}}


def _refuse(constant: str):
    raise AssertionError(f"not standard JSON: {constant}")


def _status(path, capsys, *extra: str) -> tuple[dict, str]:
    """``status --json`` (parsed, standard JSON only) and the human view of the same ledger."""
    capsys.readouterr()
    assert main(["search", "status", str(path), "--json", *extra]) == 0
    data = json.loads(capsys.readouterr().out, parse_constant=_refuse)
    assert main(["search", "status", str(path), *extra]) == 0
    return data, capsys.readouterr().out


def test_the_json_says_everything_the_human_view_says(make_sweep, capsys):
    """Before, ``--json`` was the certifications' list only: ensembles, transfers, jobs and the
    undescribed trials were in the human view alone."""
    path = make_sweep(**SMALL, ensembles=[{"name": "e", "from": "a", "members": 2}],
                      transfers=[{"name": "t", "from": "a", "fixed": {"method": "stitched", "g": 4}}])
    assert main(["search", "certify", str(path), "--no-progress"]) == 3  # certified, on the grid's upper wd
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    cert = sweep.certifications[0]  # a run handed to no job (a stopped controller) and a trial naming no point
    ledger.new_run(f"{sweep.name}/a", params=RunParams(point={"lr": 0.01, "wd": 0.4, "epochs": 4}, fixed=cert.fixed),
                   run_id="stopped", run_dir=str(sweep.out_dir / "runs" / "stopped"))
    ledger.storage.create_new_trial(ledger.study_id(f"{sweep.name}/a"))

    data, human = _status(path, capsys)
    assert set(data) == {"sweep", "strategy", "certifications", "ensembles", "transfers", "jobs", "controller",
                         "undescribed", "warnings"}
    assert data["sweep"] == "t" and data["strategy"] == "certify" and data["controller"] is None
    [certification] = data["certifications"]
    assert certification["name"] == "a" and certification["certificate"]["basis"]["support"]
    [ensemble], [transfer], [job] = data["ensembles"], data["transfers"], data["jobs"]
    lines = human.splitlines()
    for entry in (ensemble, transfer, job):  # each line of the human view is an entry's summary
        assert entry["summary"] in lines
    assert ensemble["completed"] == 2 and [m["member"] for m in ensemble["members"]] == [0, 1]
    assert ensemble["source_point"] == certification["certificate"]["point"] and ensemble["refusal"] is None
    [run] = [r for r in read_runs(sweep) if r.kind == "transfer"]
    assert (transfer["state"], transfer["trial"], transfer["run_id"], transfer["loss"]) == \
        ("finished", run.trial, run.run_id, run.loss)
    assert job["state"] == "stopped" and job["job_id"] is None and job["point"] == {"lr": 0.01, "wd": 0.4, "epochs": 4}
    assert data["undescribed"] == [{"study": "t/a", "trials": 1}]
    assert sum("name no point" in line for line in lines) == 1 and "t/a (1)" in human
    assert certification["runs"]["finished"] == len([r for r in read_runs(sweep) if r.certification == "a"]) - 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_says_where_it_stands_in_its_own_words(make_sweep, capsys, strategy):
    """A baseline with nothing run said "seeding", the certifier's phase (it seeds a search from a
    start, which a grid does not); it is "not started". A search whose run budget is spent before
    its best point is certifiable is "stopped", the controller's record of its budget (it had said
    "searching"; a baseline "done"): tests/search/test_budget_stop.py."""
    path = make_sweep(**SMALL, certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}, "max_runs": 2}])
    sweep = load_sweep(path)  # the ledger holds the strategy's study, and no run of it
    Ledger(sweep.ledger_url, sweep.name).study_id(study_name(sweep.name, "a", StudyKind(strategy)), create=True)
    data, human = _status(path, capsys, "--strategy", strategy)
    [entry] = data["certifications"]
    words = {s.value for s in CertState} | {StrategyState.STOPPED.value} if strategy == "certify" else \
        {s.value for s in StrategyState} | {CertState.CERTIFIED.value, CertState.FAILED.value}
    nothing_run = CertState.SEEDING if strategy == "certify" else StrategyState.NOT_STARTED
    assert entry["state"] == nothing_run.value and entry["state"] in words
    assert f"│ {nothing_run.value}" in human

    assert main(["search", "certify", str(path), "--no-progress", "--strategy", strategy]) in (0, 1)
    [entry] = _status(path, capsys, "--strategy", strategy)[0]["certifications"]  # its 2 runs spent
    spent = StrategyState.STOPPED
    assert entry["state"] == spent.value and entry["state"] in words and entry["reason"].startswith("run budget spent")


def test_a_baseline_reports_no_ensembles_or_transfers(make_sweep, capsys):
    """Ensembles and transfers are the certifier's (only ``certify`` runs them): under
    ``--strategy grid`` they had been computed from the grid's summaries ("waiting for a to
    certify (seeding)")."""
    path = make_sweep(**SMALL, ensembles=[{"name": "e", "from": "a", "members": 2}],
                      transfers=[{"name": "t", "from": "a", "fixed": {"method": "stitched", "g": 4}}])
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "1"]) == 1
    data, human = _status(path, capsys, "--strategy", "grid")
    assert data["ensembles"] == data["transfers"] == [] and data["strategy"] == "grid"
    assert "ensemble e" not in human and "transfer t" not in human


def test_the_json_says_how_many_runs_the_search_still_asks_for(make_sweep, capsys):
    """``to_ask`` (:attr:`CertificationSummary.to_ask`, the floor of ``plan``'s ``left exp.``) was
    not in ``--json``: a script saw ``outstanding`` (asked and in flight together) and could not
    tell what a budget-stopped search still asks for. A baseline's is null (its ``outstanding`` says)."""
    path = make_sweep(**SMALL)
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "1"]) == 1  # the start alone ran
    [entry] = _status(path, capsys)[0]["certifications"]
    [summary] = summarize(load_sweep(path))
    assert entry["to_ask"] == summary.to_ask == len(entry["outstanding"]) - entry["runs"]["running"] > 0, entry
    for strategy in BASELINES:
        [entry] = _status(path, capsys, "--strategy", strategy)[0]["certifications"]
        assert entry["to_ask"] is None, (strategy, entry)
