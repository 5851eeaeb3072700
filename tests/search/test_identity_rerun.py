"""A sweep never reuses a finished run whose identity changed: a callable objective's identity
covers its module's source, and the ledger's old trials are marked superseded, not used."""

from __future__ import annotations

import sys

from search.certificate import CertifyExit
from search.ledger import read_runs
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
