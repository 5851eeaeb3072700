"""One ``search status``, one controller restore and one analysis load read each study of the
ledger once. A full read of the ledger costs 0.2-0.6 CPU-ms per trial (benchmarks/RESULTS.md,
"status_scale"); at the paper's thousands of runs every extra read was seconds.
The spy wraps the real SQLite storage (Optuna's RDBStorage), so it counts what the database is
asked, not what our code says it does."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest

from megadocs.cli import main
from search.ledger import Ledger
from search.sweep import load_sweep


@pytest.fixture
def trial_reads(monkeypatch) -> Counter:
    """Reads of a study's trials (all of them, or those in some states), by study id."""
    reads: Counter = Counter()
    original = optuna.storages.RDBStorage.get_all_trials

    def spy(self, study_id, deepcopy=True, states=None):
        reads[study_id] += 1
        return original(self, study_id, deepcopy=deepcopy, states=states)

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_all_trials", spy)
    return reads


@pytest.fixture
def finished_sweep(make_sweep):
    """A finished sweep with two certifications, an ensemble and a transfer; its study ids."""
    path = make_sweep(grid={"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8], "epochs": [4, 8]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 8},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                      {"name": "b", "fixed": {"method": "stitched", "g": 4}, "warm_start": "a"}],
                      ensembles=[{"name": "e", "from": "a", "members": 2}],
                      transfers=[{"name": "t", "from": "a", "fixed": {"method": "latent", "g": 4}}])
    assert main(["search", "certify", str(path), "--no-progress"]) in (0, 3)
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name, create=False)
    studies = {ledger.study_id(name) for name in ledger.study_names()}
    assert len(studies) == 4
    return path, studies


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_search_status_reads_each_study_once(finished_sweep, trial_reads, json_flag, capsys):
    path, studies = finished_sweep
    trial_reads.clear()
    assert main(["search", "status", str(path), *json_flag]) == 0
    assert "transfer t" in capsys.readouterr().out or json_flag
    assert max(trial_reads.values()) == 1, dict(trial_reads)
    assert set(trial_reads) <= studies


def test_controller_restore_reads_each_study_once(finished_sweep, trial_reads):
    from megadocs.executors import make_executor
    from search.controller import LedgerEvaluator, build_strategies
    from search.objective import make_objective

    path, studies = finished_sweep
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    strategies, tasks = build_strategies(sweep, ledger)
    evaluator = LedgerEvaluator(sweep, ledger, make_executor(sweep.executor, sweep.out_dir / "jobs"),
                                make_objective(sweep), tasks)
    trial_reads.clear()
    evaluator.restore(strategies)
    assert dict(trial_reads) == {study: 1 for study in studies}
    by_name = {s.name: s for s in strategies}
    for strategy in strategies:  # as the driver does first: warm starts, ensembles and transfers find their source
        if strategy.waits_for is not None:
            strategy.resolve(by_name)
    assert all(s.done() for s in strategies)  # every strategy got its evidence: nothing left to run


def test_analysis_reads_each_study_once(finished_sweep, trial_reads):
    from analysis.ledger import load_tables

    path, studies = finished_sweep
    trial_reads.clear()
    tables = load_tables(load_sweep(path))
    assert len(tables.runs) and set(tables.ensembles) == {"e"}
    assert dict(trial_reads) == {study: 1 for study in studies}


def test_search_status_asks_the_executor_once_per_running_job(finished_sweep, monkeypatch, capsys):
    """The summaries and the job list share one JobWatch: on SLURM each question is a squeue/sacct."""
    from megadocs import executors
    from search.ledger import ATTR_JOB_ID, ATTR_STATUS, study_name

    path, _ = finished_sweep
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    [record, *_] = ledger.runs(study_name(sweep.name, "a"))
    trial = ledger.new_run(study_name(sweep.name, "a"), params=record.params(), run_id="r-dead", run_dir="r-dead")
    ledger.update(trial, **{ATTR_JOB_ID: "999999999", ATTR_STATUS: "running"})  # a pid that is gone
    asked: Counter = Counter()
    original = executors.make_executor

    def spying(*args, **kwargs):  # the sweep's real executor, its answers counted
        executor = original(*args, **kwargs)
        alive = executor.alive

        def spy(job_id, folder=None):
            asked[job_id] += 1
            return alive(job_id, folder)

        executor.alive = spy
        return executor

    monkeypatch.setattr(executors, "make_executor", spying)
    assert main(["search", "status", str(path)]) == 0
    assert ": stopped (its job is gone" in capsys.readouterr().out
    assert dict(asked) == {"999999999": 1}


def test_status_says_ended_for_a_job_that_finished_after_its_controller_died(make_sweep, capsys):
    """A controller SIGKILLed while its job runs: the job ends and writes its result, which no
    controller records until the next ``certify``. ``status`` said "stopped (its job is gone;
    certify resumes it)" of it and counted it stopped (seen on the local SLURM cluster); it is
    ended, not stopped, and the next ``certify`` adopts its result. A real submitit local job."""
    import json
    import time

    import yaml

    from megadocs.executors import JobState, make_executor
    from search.ledger import ATTR_JOB_FOLDER, ATTR_JOB_ID, ATTR_STATUS, study_name

    path = make_sweep(grid={"lr": [0.001, 0.003], "wd": [0.8], "epochs": [8]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 8})
    assert main(["search", "certify", str(path), "--no-progress"]) in (0, 3)
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "executor": {"kind": "local", "max_parallel": 1}}))
    sweep = load_sweep(path)
    jobs = make_executor(sweep.executor, sweep.out_dir / "jobs", name="t")
    [job_id] = jobs.submit([int])  # ends at once with a result (0)
    deadline = time.time() + 60
    while jobs.poll(job_id).state is not JobState.DONE:
        assert time.time() < deadline, "the local job wrote no result in 60 s"
        time.sleep(0.2)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    [record, *_] = ledger.runs(study_name(sweep.name, "a"))
    trial = ledger.new_run(study_name(sweep.name, "a"), params=record.params(), run_id="r-ended", run_dir="r-ended")
    ledger.update(trial, **{ATTR_JOB_ID: job_id, ATTR_JOB_FOLDER: str(jobs.folder), ATTR_STATUS: "running"})
    capsys.readouterr()

    assert main(["search", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert f": ended, result not recorded yet (`megadocs search certify` records it), job {job_id}" in out, out
    assert "stopped" not in out, out
    assert main(["search", "status", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [job["state"] for job in report["jobs"]] == ["ended"]
    assert report["certifications"][0]["runs"].get("stopped", 0) == 0, report["certifications"][0]["runs"]
