"""Faults the sweep rehearsal (benchmarks/rehearsal.py) found, each pinned by a test: a controller
killed while it was creating a trial, the ledger's server restarting under the controller, and
submissions the run directories' full file system refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from megadocs.cli import main
from search.ledger import ATTR_FIXED, ATTR_POINT, ATTR_RUN_ID, Ledger, read_runs
from search.objective import make_objective
from search.params import RunParams
from search.status import summarize
from search.sweep import load_sweep
from tests.waiting import wait_for

from .conftest import calls


def _ledger(path):
    from search.sweep import load_sweep

    sweep = load_sweep(path)
    return sweep, Ledger(sweep.ledger_url, sweep.name)


@pytest.mark.parametrize("described", [(), (ATTR_FIXED,), (ATTR_FIXED, ATTR_POINT), (ATTR_FIXED, ATTR_POINT, ATTR_RUN_ID)],
                         ids=["created-only", "no-point", "point", "run-id"])
def test_a_trial_the_killed_controller_left_half_written_is_run_once(make_sweep, workdir, described, capsys, caplog):
    """A controller SIGKILLed inside ``Ledger.new_run`` leaves a RUNNING trial with some of its
    attributes (they are written one by one; created-only is also what a lost commit
    acknowledgement leaves, test_postgres): the next controller runs its point (once), or
    closes a trial that names no point; meanwhile ``status`` and ``analysis`` count it as the
    stopped run of its point, or say in one line that a trial names no point (it had been left
    out without a word). Nothing crashes on one."""
    path = make_sweep()
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "1"]) == 1  # the ledger exists
    sweep, ledger = _ledger(path)
    study = f"{sweep.name}/a"
    point = {"lr": 0.003, "wd": 0.4, "epochs": 8}  # a neighbour of the start: the search wants it
    fixed = {"method": "simple", "g": 4}
    run_id = make_objective(sweep).identity(RunParams(point=point, fixed=fixed).merged())  # today's identity
    attrs = {ATTR_POINT: point, ATTR_FIXED: fixed, ATTR_RUN_ID: run_id}
    trial = ledger.storage.create_new_trial(ledger.study_id(study))
    ledger.update(trial, **{key: attrs[key] for key in described})

    capsys.readouterr()
    assert main(["search", "status", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [summary] = report["certifications"]
    assert summary["runs"]["finished"] == 1
    assert main(["analysis", "export", str(path), "--out", str(workdir / "runs.csv")]) == 0
    exported = (workdir / "runs.csv").read_text().splitlines()
    if ATTR_POINT in described:  # a run of its point, not submitted: the next certify runs it
        assert summary["runs"]["stopped"] == 1 and report["undescribed"] == []
        assert [job["point"] for job in report["jobs"]] == [point] and len(exported) == 1 + 2
    else:  # no run of any point: one line (status, analysis), in no count, no row
        assert report["undescribed"] == [{"study": study, "trials": 1}] and report["jobs"] == []
        assert summary["runs"]["stopped"] == 0 and len(exported) == 1 + 1
        assert [r.message.count("name no point") for r in caplog.records if r.name == "analysis.ledger"] == [1]
        assert main(["search", "status", str(path)]) == 0
        assert capsys.readouterr().out.count("name no point") == 1

    assert main(["search", "certify", str(path), "--no-progress"]) == 0
    [summary] = summarize(load_sweep(path))
    assert summary.state.value == "certified"
    evaluated = [tuple(sorted((k, c[k]) for k in point)) for c in calls(workdir)]
    assert len(evaluated) == len(set(evaluated))  # no point ran twice
    runs = read_runs(load_sweep(path))
    assert not [r for r in runs if r.status == "running"], runs  # nothing left hanging
    assert all(r.run_id and r.run_dir for r in runs)
    if ATTR_POINT not in described:  # closed by the next controller's start: nothing ran for it
        assert ledger.storage.get_trial(trial).state is optuna.trial.TrialState.FAIL
    capsys.readouterr()
    assert main(["search", "status", str(path)]) == 0
    assert "name no point" not in capsys.readouterr().out


def _tried_to_submit(path) -> bool:
    """The controller recorded a run it is about to submit (trials are created first)."""
    from search.storage import LedgerMissing

    try:
        return any(r.status == "running" for r in read_runs(load_sweep(path)))
    except LedgerMissing:
        return False


def test_submissions_a_full_file_system_refuses_wait_for_space(make_sweep, workdir, small_filesystem):
    """The sweep's output folder (run directories and submitit's job files) fills up: submitting
    fails with ENOSPC. The controller keeps the runs and submits them again once there is room,
    instead of dying with the traceback."""
    path = make_sweep(executor={"kind": "local", "max_parallel": 3, "poll_s": 0.2, "max_retries": 0},
                      grid={"lr": [0.001, 0.003, 0.01]}, start={"lr": 0.003},
                      out=str(small_filesystem / "out"), ledger=f"sqlite:///{workdir / 'ledger.db'}")
    filler = small_filesystem / "filler"
    with open(filler, "wb", buffering=0) as handle:
        stats = os.statvfs(small_filesystem)
        os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize)
    log = workdir / "controller.err"  # a file, not a pipe: read while the controller runs
    with open(log, "w") as stderr:
        controller = subprocess.Popen([sys.executable, "-m", "megadocs.cli", "search", "certify", str(path),
                                       "--no-progress"], stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    try:
        # a few refused tries (each says "cannot submit"), however long the machine takes to make them
        wait_for(lambda: log.read_text().count("cannot submit") >= 3 or controller.poll() is not None, 120,
                 "the controller to try three submissions", interval_s=0.2)
        assert _tried_to_submit(path)
        assert controller.poll() is None, log.read_text()[-2000:]  # still alive
        filler.unlink()
        controller.wait(timeout=300)
    finally:
        if controller.poll() is None:
            controller.kill()
    err = log.read_text()
    assert controller.returncode == 0, err[-2000:]
    assert "cannot submit" in err and "No space left on device" in err
    [summary] = summarize(load_sweep(path))
    assert summary.state.value == "certified"
    evaluated = [tuple(sorted(c.items())) for c in calls(workdir)]
    assert len(evaluated) == len(set(evaluated)) == len(read_runs(load_sweep(path)))


def test_a_result_the_killed_controller_had_half_recorded_is_not_a_divergence(make_sweep, workdir):
    """``Ledger.complete`` writes the trial's status and metrics, then commits its state and loss:
    a controller SIGKILLed in between (the rehearsal's kill) left "completed" without a loss, which
    the next controller read as a diverged run (loss +inf) and certified around. The trial's
    Optuna state is the commit: the run is running until it is set, and is finished again."""
    from megadocs.formats import RunMetrics, RunStatus
    from search.ledger import ATTR_METRICS, ATTR_STATUS
    from search.objective import make_objective

    path = make_sweep()
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "1"]) == 1
    sweep, ledger = _ledger(path)
    optimum = {"lr": 0.003, "wd": 0.8, "epochs": 16}  # the bowl's optimum: a neighbour of the start
    params = RunParams(point=optimum, fixed={"method": "simple", "g": 4})
    run_id = make_objective(sweep).identity(params.merged())
    trial = ledger.new_run(f"{sweep.name}/a", params=params, run_id=run_id,
                           run_dir=str(sweep.out_dir / "runs" / run_id))
    ledger.update(trial, **{ATTR_STATUS: RunStatus.COMPLETED.value,  # killed before the state and loss
                            ATTR_METRICS: RunMetrics(status=RunStatus.COMPLETED, val_loss=2.84)})

    assert main(["search", "certify", str(path), "--no-progress"]) == 0
    [summary] = summarize(load_sweep(path))
    assert summary.certificate.point == optimum and summary.to_dict()["certificate"]["soft_bounds"] == []
    [record] = [r for r in read_runs(load_sweep(path)) if r.point == optimum]
    assert record.status == "completed" and record.loss is not None


def test_an_ensemble_member_written_without_its_index_gets_it(make_sweep, workdir):
    """The member index is a new ensemble trial's last attribute: a controller killed just before
    writing it left a member the next controller ran without ever naming it (member None, listed
    after the others)."""
    from search.objective import make_objective
    from search.status import summarize_ensembles

    small = {"grid": {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8], "epochs": [4, 8]},
             "start": {"lr": 0.003, "wd": 0.8, "epochs": 8}}
    path = make_sweep(**small, ensembles=[{"name": "e", "from": "a", "members": 2}])
    assert main(["search", "certify", str(path), "--no-progress"]) == 3  # certified on the grid's upper wd
    path = make_sweep(**small, ensembles=[{"name": "e", "from": "a", "members": 3}])  # one member more
    sweep, ledger = _ledger(path)
    [certification] = summarize(sweep)
    cert, [ens] = sweep.certifications[0], sweep.ensembles
    third = ens.member_params(certification.certificate.point, sweep.grid_for(cert).as_mapping(), cert.fixed)[2]
    run_id = make_objective(sweep).identity(third.merged())
    ledger.new_run(f"{sweep.name}/ensemble/e", params=third, run_id=run_id,
                   run_dir=str(sweep.out_dir / "runs" / run_id))  # killed before the member index (new_run's extra)

    assert main(["search", "certify", str(path), "--no-progress"]) == 3
    [ensemble] = summarize_ensembles(load_sweep(path))
    assert [m.member for m in ensemble.members] == [0, 1, 2] and len(ensemble.completed) == 3
