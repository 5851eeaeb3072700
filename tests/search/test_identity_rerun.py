"""A sweep never reuses a finished run whose identity changed: a callable objective's identity
covers its module's source, and the ledger's old trials are marked superseded, not used. A job runs
only the source that named its run: one edited in between is refused, nothing run."""

from __future__ import annotations

import os
import pickle
import sys

import pytest

from megadocs.formats import FailureKind, RunDir, RunStatus
from search.certificate import CertifyExit
from search.ledger import read_runs
from search.objective import CallableObjective
from search.status import summarize
from search.sweep import load_sweep
from tests.search.conftest import calls

ON_BOUND = CertifyExit.CERTIFIED_ON_BOUND  # epochs 1 (and lr 0.01 once the optimum moves) sit on the small grid's ends

OBJECTIVE = '''
import json, os

def bowl(params):
    with open(os.environ["SEARCH_TEST_CALLS"], "a") as handle:
        handle.write(json.dumps(params, sort_keys=True) + "\\n")
    return (params["lr"] - {best}) ** 2 + 0.01 * params["epochs"]
'''


def _write_objective(workdir, best: float) -> None:
    (workdir / "changing_objective.py").write_text(OBJECTIVE.format(best=best))
    sys.modules.pop("changing_objective", None)  # a new controller process imports the new code


def test_a_changed_objective_module_re_runs_and_supersedes_the_old_trials(make_sweep, workdir, monkeypatch,
                                                                         caplog):
    from megadocs.cli import main

    monkeypatch.syspath_prepend(str(workdir))
    grid = {"lr": [0.001, 0.003, 0.01], "epochs": [1, 2]}
    path = make_sweep(objective="changing_objective:bowl", grid=grid, start={"lr": 0.003, "epochs": 1})
    _write_objective(workdir, best=0.003)
    assert main(["search", "certify", str(path), "--no-progress"]) == ON_BOUND
    first = len(calls(workdir))
    assert first > 0
    assert main(["search", "certify", str(path), "--no-progress"]) == ON_BOUND
    assert len(calls(workdir)) == first  # same code, same data: nothing runs again

    _write_objective(workdir, best=0.01)  # the objective's code changed
    with caplog.at_level("WARNING"):
        assert main(["search", "certify", str(path), "--no-progress"]) == ON_BOUND
    assert len(calls(workdir)) > first  # its points ran again
    assert "marked superseded" in caplog.text
    runs = read_runs(load_sweep(path))
    superseded = [r for r in runs if r.status == "superseded"]
    assert len(superseded) == first and all("objective code changed" in r.reason for r in superseded)
    current = [r for r in runs if r.status == "completed"]
    assert {r.run_id for r in current}.isdisjoint({r.run_id for r in superseded})
    (summary,) = summarize(load_sweep(path))
    assert summary.state.value == "certified"
    assert summary.certificate.point["lr"] == 0.01  # decided by the new code's losses only


def test_objective_version_pins_the_identity(make_sweep, workdir, monkeypatch):
    from megadocs.cli import main

    monkeypatch.syspath_prepend(str(workdir))
    grid = {"lr": [0.001, 0.003, 0.01], "epochs": [1, 2]}
    path = make_sweep(objective="changing_objective:bowl", objective_version="v1", grid=grid,
                      start={"lr": 0.003, "epochs": 1})
    _write_objective(workdir, best=0.003)
    assert main(["search", "certify", str(path), "--no-progress"]) == ON_BOUND
    first = len(calls(workdir))
    _write_objective(workdir, best=0.0031)  # a comment-level edit the user declares irrelevant
    assert main(["search", "certify", str(path), "--no-progress"]) == ON_BOUND
    assert len(calls(workdir)) == first
    assert all(r.status == "completed" for r in read_runs(load_sweep(path)))


def test_a_grid_value_removed_from_the_file_is_one_line_per_certification(make_sweep, workdir, caplog):
    """Trials at a point the edited grid no longer lists are ignored, said once per command in one
    line per certification (it was one line per trial, printed by the restore and again by the
    summary: hundreds of lines at the paper's size)."""
    from megadocs.cli import main

    grid = {"lr": [0.001, 0.003, 0.01], "wd": [0.1, 0.4], "epochs": [1, 2]}
    path = make_sweep(grid=grid, start={"lr": 0.003, "wd": 0.1, "epochs": 1})
    assert main(["search", "certify", str(path), "--no-progress"]) in (0, 3)
    dropped = [r for r in read_runs(load_sweep(path)) if r.point["lr"] == 0.001]
    assert len(dropped) >= 2  # the start's neighbour and more: several trials off the new grid
    path = make_sweep(grid={**grid, "lr": [0.003, 0.01]}, start={"lr": 0.003, "wd": 0.1, "epochs": 1})
    with caplog.at_level("WARNING"):
        main(["search", "certify", str(path), "--no-progress"])
    lines = [r.getMessage() for r in caplog.records if "no longer on the grid" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"a: {len(dropped)} trial(s)") and "lr=0.001" in lines[0], lines


def test_a_job_runs_only_the_module_source_that_named_its_run(workdir, monkeypatch):
    """The job executes the bytes it hashed: an edit after the task was made is refused in one
    line naming the file, with nothing run (the job, pickled as submitit does, may start hours later)."""
    monkeypatch.syspath_prepend(str(workdir))
    _write_objective(workdir, best=0.003)
    objective = CallableObjective("changing_objective:bowl")
    task = pickle.loads(pickle.dumps(objective.task({"lr": 0.01, "epochs": 1}, workdir / "a", "id")))
    _write_objective(workdir, best=0.01)  # edited after the controller named the run (a new job process)
    failure = task()
    assert failure.kind is FailureKind.INVALID and len(failure.reason.splitlines()) == 1
    assert failure.reason.startswith(f"{workdir / 'changing_objective.py'} changed since the sweep named this run")
    assert "nothing was run" in failure.reason and "superseded" in failure.reason
    assert calls(workdir) == [] and not RunDir(workdir / "a").is_done()
    # a plain re-run names the new source: its job runs the new code
    fresh = CallableObjective("changing_objective:bowl").task({"lr": 0.01, "epochs": 1}, workdir / "b", "id")
    assert fresh.source_hash != task.source_hash
    assert fresh().val_loss == pytest.approx(0.01) and len(calls(workdir)) == 1
    # a version the sweep gives is the user's promise: not checked
    assert CallableObjective("changing_objective:bowl", "v1").task({"lr": 0.01}, workdir / "c", "id").source_hash is None


def test_a_verified_module_imports_relatively_under_its_own_name(workdir, monkeypatch):
    monkeypatch.syspath_prepend(str(workdir))
    package = workdir / "objpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scale.py").write_text("SCALE = 2.0\n")
    (package / "obj.py").write_text("from .scale import SCALE\n\n\n"
                                    "def f(params):\n    return SCALE * params['lr'] if __name__ == 'objpkg.obj' else -1.0\n")
    task = CallableObjective("objpkg.obj:f").task({"lr": 0.25}, workdir / "run", "id")
    assert task.source_hash is not None and task().val_loss == 0.5
    import objpkg

    assert sys.modules["objpkg.obj"] is objpkg.obj and objpkg.obj.f.__module__ == "objpkg.obj"
    for name in ("objpkg.obj", "objpkg.scale", "objpkg"):
        del sys.modules[name]


def test_a_module_edited_under_a_running_sweep_stops_it_and_certify_runs_the_new_code(make_sweep, workdir,
                                                                                      monkeypatch, capsys):
    """Through the controller and local job processes: the module is edited once the first point
    ran, after the controller named the second point's run: the sweep stops in one line, nothing
    runs; a plain re-run certifies with the new code only, the old code's trial superseded."""
    from megadocs.cli import main

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(workdir), os.environ["PYTHONPATH"]]))  # the jobs'
    monkeypatch.syspath_prepend(str(workdir))
    path = make_sweep(objective="changing_objective:bowl", grid={"lr": [0.003, 0.01], "epochs": [1]},
                      start={"lr": 0.01, "epochs": 1},
                      executor={"kind": "local", "max_parallel": 1, "poll_s": 0.1, "max_retries": 0})
    _write_objective(workdir, best=0.003)
    task, made = CallableObjective.task, []

    def edited_then_task(self, *args, **kwargs):  # after the controller named the run, before its job
        made.append(task(self, *args, **kwargs))
        if len(made) == 2:
            _write_objective(workdir, best=0.01)
        return made[-1]

    with monkeypatch.context() as patch:
        patch.setattr(CallableObjective, "task", edited_then_task)
        assert main(["search", "certify", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: objective changing_objective:bowl: {workdir / 'changing_objective.py'} changed "
                          "since the sweep named this run") and "nothing was run" in err
    assert [call["lr"] for call in calls(workdir)] == [0.01]  # the first point, by the old code; then nothing
    ran, refused = read_runs(load_sweep(path))
    assert ran.status is RunStatus.COMPLETED and refused.status is RunStatus.FAILED and refused.to_rerun

    assert main(["search", "certify", str(path), "--no-progress"]) == ON_BOUND
    assert sorted(call["lr"] for call in calls(workdir)[1:]) == [0.003, 0.01]  # both points, by the new code
    runs = read_runs(load_sweep(path))
    old = next(r for r in runs if r.trial_id == ran.trial_id)
    assert old.status is RunStatus.SUPERSEDED and "objective code changed" in old.reason
    current = [r for r in runs if r.status is RunStatus.COMPLETED]
    assert len(current) == 2 and refused.run_id not in {r.run_id for r in current}
    (summary,) = summarize(load_sweep(path))
    assert summary.certificate.point["lr"] == 0.01  # the new code's optimum
