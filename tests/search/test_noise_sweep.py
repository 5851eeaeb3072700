"""Noise, non-finite losses and bad objectives through the real controller and ledger (debug
executor, SQLite): repeats are ordinary seeded runs, the certificate carries the noise estimate,
-inf is a failed run with its reason, a broken objective stops the sweep in one line."""

from __future__ import annotations

import json

import pytest

from megadocs.cli import main
from megadocs.formats import FailureKind
from search.certificate import CertifyExit
from search.grid import Grid
from search.landscapes import bowl
from search.ledger import read_runs
from search.status import summarize
from search.sweep import load_sweep

from .conftest import calls

SMALL = {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8, 1.6], "epochs": [4, 8, 16]}
FIXED = {"method": "simple", "g": 4}


def certify(path, *args) -> int:
    return main(["search", "certify", str(path), "--no-progress", *args])


def test_noise_repeats_are_seeded_runs_and_the_certificate_carries_sigma(make_sweep, workdir, capsys):
    path = make_sweep(objective="tests.search.objectives:seed_noisy", grid=SMALL, noise={"repeats": 3},
                      start={"lr": 0.001, "wd": 0.4, "epochs": 4})
    assert certify(path) == CertifyExit.CERTIFIED_ON_BOUND  # the bowl's epochs 16 is SMALL's end
    out = capsys.readouterr().out
    assert "noise sd" in out
    [summary] = summarize(load_sweep(path))
    cert = summary.certificate
    assert summary.state.value == "certified" and cert.draws == 3
    assert cert.noise.repeats == 3 and cert.noise.sigma is not None and 0.003 < cert.noise.sigma < 0.03
    grid = Grid.from_mapping(SMALL)
    truth = bowl({**cert.point, **FIXED})
    assert all(bowl({**n.point, **FIXED}) >= truth for n in grid.neighbours(cert.point))  # the noise-free optimum
    # repeats are ordinary runs: the first carries no seed, the others seed 1, 2; the objective saw them
    runs = read_runs(load_sweep(path))
    at_centre = sorted(r.fixed.get("seed", 0) for r in runs if r.point == cert.point)
    assert at_centre == [0, 1, 2]
    assert {c.get("seed", 0) for c in calls(workdir) if {k: c[k] for k in SMALL} == cert.point} == {0, 1, 2}
    assert len(runs) == len({r.run_id for r in runs}) == len(calls(workdir))  # none twice
    # some points were settled on one draw: repeats were spent where they decide something
    per_point: dict = {}
    for r in runs:
        per_point.setdefault(json.dumps(r.point, sort_keys=True), []).append(r)
    assert any(len(v) == 1 for v in per_point.values())
    # status --json: the analysis contract, standard JSON
    assert main(["search", "status", str(path), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["certifications"]
    assert entry["certificate"]["noise"]["sigma"] == cert.noise.sigma
    assert all({"gap_sd", "tie", "draws"} <= set(n) for n in entry["certificate"]["neighbours"])
    # a re-run continues from the ledger: nothing new
    assert certify(path) == CertifyExit.CERTIFIED_ON_BOUND
    assert len(calls(workdir)) == len(runs)


def test_minus_inf_is_a_failed_run_in_the_ledger_too(make_sweep, workdir, capsys):
    path = make_sweep(objective="tests.search.objectives:minus_inf_corner",
                      grid={"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [8, 16]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 16})
    assert certify(path) == CertifyExit.WORK_FAILED  # the optimum's lr-up neighbour returns -inf: blocked, not certified
    err = capsys.readouterr().err
    assert "blocked by {'lr': 0.01" in err and "-inf" in err
    [summary] = summarize(load_sweep(path))
    assert summary.state.value == "failed" and summary.certificate is None
    [failed] = [r for r in read_runs(load_sweep(path)) if r.status == "failed"]
    assert failed.attempts == 1 and "-inf" in failed.reason  # deterministic: not retried
    assert failed.loss is None and failed.failure is FailureKind.FAILED and not failed.to_rerun
    runs = len(calls(workdir))
    assert certify(path) == CertifyExit.WORK_FAILED and len(calls(workdir)) == runs  # kept until --retry-failed
    assert "--retry-failed" in capsys.readouterr().err


def test_a_non_number_return_stops_the_sweep_after_the_first_batch(make_sweep, workdir, capsys):
    path = make_sweep(objective="tests.search.objectives:returns_text")
    assert certify(path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: objective tests.search.objectives:returns_text: returned '0.5' (str), not a number")
    assert "\n" not in err and err.endswith(f"fix it and re-run `megadocs search certify {path}` (it runs this point again)")
    assert 1 <= len(calls(workdir)) <= load_sweep(path).executor.max_parallel  # not every point of the grid


@pytest.mark.parametrize(("objective", "expected"), [
    ("tests.search.objectives:NOT_CALLABLE", "'tests.search.objectives:NOT_CALLABLE' is a float, not a callable"),
    ("tests.search.no_such_module:f", "cannot import 'tests.search.no_such_module:f': ModuleNotFoundError"),
    ("tests.search.objectives:missing", "cannot import 'tests.search.objectives:missing': AttributeError"),
])
def test_a_broken_objective_is_refused_before_any_job(make_sweep, workdir, capsys, objective, expected):
    path = make_sweep(objective=objective)
    assert certify(path) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err
    assert calls(workdir) == [] and not (workdir / "runs/t/jobs").exists()


def test_the_train_objective_maps_a_repeat_seed_to_initialisation_and_data_order(tiny_store):
    from search.objective import TrainObjective
    from search.sweep import Sweep

    sweep = Sweep.model_validate({
        "name": "t", "train": {"data": {"store": str(tiny_store), "context": 64}, "model": {"preset": "tiny-1m"}},
        "grid": {"lr": [0.003, 0.01]}, "start": {"lr": 0.003}, "noise": {"repeats": 2},
        "certifications": [{"name": "real", "fixed": {"method": "real"}}],
    })
    objective = TrainObjective(sweep)
    first = objective.config({"lr": 0.003, "method": "real"})
    repeat = objective.config({"lr": 0.003, "method": "real", "seed": 1})
    assert (first.seed, first.data.seed) == (0, 0) and (repeat.seed, repeat.data.seed) == (1, 1)
    assert repeat.identity() != first.identity()  # its own run directory, never adopted as the first run
    assert repeat.optim.lr == first.optim.lr == 0.003


def test_all_diverged_is_never_certified_and_exits_non_zero(make_sweep, workdir, capsys):
    grid = {"lr": [0.001, 0.003], "wd": [0.4, 0.8], "epochs": [8]}
    path = make_sweep(objective="tests.search.objectives:always_nan", grid=grid,
                      start={"lr": 0.003, "wd": 0.8, "epochs": 8})
    assert certify(path) == 1
    err = capsys.readouterr().err
    assert "a: not certified: no finite loss: all 4 evaluated points diverged" in err
    [summary] = summarize(load_sweep(path))
    assert summary.state.value == "failed" and summary.certificate is None
    assert len(calls(workdir)) == Grid.from_mapping(grid).size  # searched outward over the whole grid
    assert main(["search", "status", str(path), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["certifications"]  # standard JSON: the infinite best loss is null
    assert entry["best"]["loss"] is None and entry["reason"].startswith("no finite loss")
