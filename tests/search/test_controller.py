"""The controller through the real Optuna ledger (SQLite, journal file) with the in-process
(debug) executor: certificates, deduplication, retries, failures, warm starts, ensembles,
baselines, and the reading API analysis uses."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from megadocs.cli import main
from megadocs.formats import FailureKind, RunStatus
from search.certificate import CertifyExit
from search.grid import Grid
from search.landscapes import bowl
from search.ledger import read_runs
from search.status import g_trend_warnings, summarize, summarize_ensembles
from search.strategies import StrategyState
from search.sweep import load_sweep

from .conftest import GRID, calls, let_go


def certify(path, *args) -> int:
    return main(["search", "certify", str(path), "--no-progress", *args])


def brute_force_local_optimum(point, fixed) -> bool:
    grid = Grid.from_mapping(GRID)
    loss = bowl({**point, **fixed})
    return all(bowl({**n.point, **fixed}) >= loss for n in grid.neighbours(point))


@pytest.mark.parametrize("ledger", [None, "ledger.journal"], ids=["sqlite", "journal"])
def test_certifies_and_records_evidence_in_the_ledger(make_sweep, workdir, ledger, capsys):
    path = make_sweep(**({"ledger": ledger} if ledger else {}))
    assert certify(path) == 0
    assert "certified" in capsys.readouterr().out
    [summary] = summarize(load_sweep(path))
    assert summary.state.value == "certified"
    cert = summary.to_dict()["certificate"]
    assert brute_force_local_optimum(cert["point"], {"method": "simple", "g": 4})
    assert math.isclose(cert["loss"], bowl({**cert["point"], "method": "simple", "g": 4}))
    assert len(cert["neighbours"]) == len(Grid.from_mapping(GRID).neighbours(cert["point"]))
    assert summary.best.params == cert["point"] and summary.path[-1] == cert["point"]
    assert summary.path[0] == {"lr": 0.003, "wd": 0.8, "epochs": 8}
    runs = read_runs(load_sweep(path))
    assert summary.to_dict()["runs"] == {"finished": len(runs), "running": 0, "failed": 0}
    run = runs[0]
    for key in ("certification", "point", "fixed", "run_id", "run_dir", "status", "loss", "metrics", "job_id",
                "wall_time_s", "attempts"):
        assert key in run.to_dict()
    assert run.status == "completed" and run.metrics.tokens_seen == 1000
    assert run.fixed == {"method": "simple", "g": 4} and run.attempts == 1
    assert json.loads((workdir / "runs/t/runs" / run.run_id / "metrics.json").read_text())["val_loss"] == run.loss
    # each point evaluated once; re-running the finished sweep runs nothing
    assert len(calls(workdir)) == len(runs) == len({json.dumps(c, sort_keys=True) for c in calls(workdir)})
    assert certify(path) == 0
    assert len(calls(workdir)) == len(runs)
    capsys.readouterr()
    assert main(["search", "status", str(path), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["certifications"]
    assert entry["state"] == "certified" and set(entry["best"]) == {"params", "loss"}
    assert {"finished", "running", "failed"} <= set(entry["runs"]) and entry["bounds_hit"] == []


def test_identical_runs_are_shared_across_certifications(make_sweep, workdir):
    path = make_sweep(certifications=[
        {"name": "a", "fixed": {"method": "simple", "g": 4}},
        {"name": "b", "fixed": {"method": "simple", "g": 4}, "start": {"lr": 0.01, "wd": 0.1, "epochs": 1}},
    ])
    assert certify(path) == 0
    runs = read_runs(load_sweep(path))
    by_cert = {name: [r for r in runs if r.certification == name] for name in ("a", "b")}
    assert all(by_cert.values())
    evaluated = {json.dumps(c, sort_keys=True) for c in calls(workdir)}
    assert len(calls(workdir)) == len(evaluated)  # no config ran twice
    assert len(evaluated) == len({r.run_id for r in runs}) < len(runs)
    assert any(r.adopted_from for r in runs)


def test_the_progress_line_counts_shared_runs_apart(make_sweep, workdir, capsys):
    """A result reused from another certification's run (adopted, or a run in flight both asked
    for) trained nothing: the live line said ``19 finished`` for 18 trained runs."""
    from megadocs.cli import main

    path = make_sweep(certifications=[
        {"name": "a", "fixed": {"method": "simple", "g": 4}},
        {"name": "b", "fixed": {"method": "simple", "g": 4}, "start": {"lr": 0.01, "wd": 0.1, "epochs": 1}},
    ])
    capsys.readouterr()
    assert main(["search", "certify", str(path)]) == 0  # stderr is no terminal: one plain line per change
    runs = read_runs(load_sweep(path))
    trained = len({r.run_id for r in runs})
    assert trained == len(calls(workdir)) < len(runs)
    last = [line for line in capsys.readouterr().err.splitlines() if line.startswith("certify: ")][-1]
    assert last.startswith(f"certify: {len(runs)} finished ({len(runs) - trained} reused), 0 running | "), last
    capsys.readouterr()
    assert main(["search", "certify", str(path)]) == 0  # a resume counts the restored results alike
    last = [line for line in capsys.readouterr().err.splitlines() if line.startswith("certify: ")][-1]
    assert last.startswith(f"certify: {len(runs)} finished ({len(runs) - trained} reused), 0 running | "), last


def test_bound_is_reported_and_diverged_counts_as_inf(make_sweep, workdir):
    path = make_sweep(grid={"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [1, 2, 4]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 2}, objective="search.landscapes:diverging")
    assert certify(path) == CertifyExit.CERTIFIED_ON_BOUND  # certified, on the epochs bound
    [summary] = summarize(load_sweep(path))
    cert = summary.certificate
    assert cert.point == {"lr": 0.003, "wd": 0.8, "epochs": 4}
    assert [b.to_dict() for b in cert.bounds_hit] == [{"axis": "epochs", "side": "upper", "value": 4, "extended": False}]
    assert summary.bounds_hit == cert.bounds_hit
    up = [n for n in cert.neighbours if n.axis == "lr" and n.direction.value == "up"]
    assert up[0].loss == math.inf
    # a diverged neighbour is a soft bound, listed like the grid's bounds
    assert summary.to_dict()["certificate"]["soft_bounds"] == [{"axis": "lr", "side": "upper", "value": 0.01, "extended": False}]
    runs = read_runs(load_sweep(path))
    assert {r.status.value for r in runs} == {"completed", "diverged"}
    diverged = next(r for r in runs if r.status == "diverged")
    assert diverged.loss == math.inf and diverged.metrics.val_loss is None
    run_dir = workdir / "runs/t/runs" / diverged.run_id
    assert json.loads((run_dir / "metrics.json").read_text(), parse_constant=_refuse)["val_loss"] is None


def _refuse(constant: str):
    raise AssertionError(f"non-standard JSON constant {constant}")


def test_status_json_is_standard_json_with_diverged_losses_as_null(make_sweep, capsys):
    path = make_sweep(grid={"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [1, 2, 4]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 2}, objective="search.landscapes:diverging")
    assert certify(path) == CertifyExit.CERTIFIED_ON_BOUND  # epochs 4 is the grid's end
    capsys.readouterr()
    assert main(["search", "status", str(path), "--json"]) == 0
    [summary] = json.loads(capsys.readouterr().out, parse_constant=_refuse)["certifications"]  # Infinity would fail here
    up = [n for n in summary["certificate"]["neighbours"] if n["axis"] == "lr" and n["direction"] == "up"]
    assert up[0]["loss"] is None and up[0]["diverged"] is True
    assert math.isfinite(summary["certificate"]["loss"]) and "diverged" not in summary["certificate"]
    assert summary["certificate"]["soft_bounds"] == [{"axis": "lr", "side": "upper", "value": 0.01, "extended": False}]


def test_infrastructure_failures_are_retried(make_sweep, workdir):
    path = make_sweep(objective="tests.search.objectives:flaky")
    assert certify(path) == 0
    runs = read_runs(load_sweep(path))
    assert summarize(load_sweep(path))[0].state.value == "certified"
    assert all(r.attempts == 2 and "simulated node failure" in r.reason for r in runs)


def test_a_failed_neighbour_blocks_certification_and_is_reported(make_sweep, capsys):
    path = make_sweep(objective="tests.search.objectives:broken_corner",
                      grid={"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [8, 16]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 16})
    assert certify(path) == CertifyExit.WORK_FAILED  # the bowl's optimum is lr 0.003: its lr-up neighbour always fails
    err = capsys.readouterr().err
    assert "blocked by {'lr': 0.01" in err and "CUDA out of memory (simulated)" in err
    [summary] = summarize(load_sweep(path))
    assert summary.state.value == "failed" and summary.certificate is None
    assert summary.runs.failed == 1
    assert summary.blocked_by[0][0] == {"lr": 0.01, "wd": 0.8, "epochs": 16}
    failed = [r for r in read_runs(load_sweep(path)) if r.status == "failed"]
    assert failed[0].attempts == 2 and "out of memory" in failed[0].reason
    # the failure is kept, not silently retried: a re-run stays failed until asked, and says how
    assert certify(path) == CertifyExit.WORK_FAILED
    err = capsys.readouterr().err
    assert "1 failed point(s) block their certificates" in err
    assert f"`megadocs search certify {path} --retry-failed`" in err
    assert main(["search", "status", str(path)]) == 0
    assert "--retry-failed" in capsys.readouterr().out
    assert certify(path, "--retry-failed") == CertifyExit.WORK_FAILED
    assert [r.attempts for r in read_runs(load_sweep(path)) if r.status == "failed"] == [2, 2]


def test_a_warm_start_from_a_failed_source_names_it_and_counts_one_failed_point(make_sweep, workdir, capsys):
    """b warm-starts from a, whose lr-up neighbour always fails: a's one failed point is counted
    once (it was also listed under b, as its never-run start: '2 failed point(s)'), and both
    certify and status say why b did not certify."""
    path = make_sweep(objective="tests.search.objectives:broken_corner",
                      grid={"lr": [0.003, 0.01], "wd": [0.8], "epochs": [16]}, start={"lr": 0.003, "wd": 0.8, "epochs": 16},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                      {"name": "b", "fixed": {"method": "simple", "g": 8}, "warm_start": "a"}],
                      transfers=[{"name": "t", "from": "a", "fixed": {"method": "stitched", "g": 4}}])
    assert certify(path) == CertifyExit.WORK_FAILED  # a failed run, not a "no"
    err = capsys.readouterr().err
    assert "1 failed point(s) block" in err and "b: not certified: source a ended failed" in err, err
    assert main(["search", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 failed point(s) block" in out and "b: not certified: source a ended failed" in out, out
    # a transfer from the failed source is not "waiting" (as if it would run by itself)
    assert ("transfer t (method=stitched g=4 at a's optimum): blocked (source a ended failed: it runs once a certifies)"
            in out.splitlines()), out
    a, b = summarize(load_sweep(path))
    assert len(a.blocked_by) == 1 and b.blocked_by == () and b.runs.failed == 0


def test_a_user_error_inside_a_job_is_not_retried(make_sweep, workdir, capsys):
    """A store that is not there fails the same way every time: one line, no retries (issue 34:
    a deterministic "store not found" was retried twice)."""
    path = make_sweep(objective="tests.search.objectives:user_error", executor={"kind": "debug", "max_parallel": 1,
                                                                                "poll_s": 0.05, "max_retries": 2})
    assert certify(path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "store not found" in err, err
    assert err.endswith(f"; fix it and re-run `megadocs search certify {path}` (it runs this point again)"), err
    assert len(calls(workdir)) == 1
    [run] = read_runs(load_sweep(path))
    assert run.status == "failed" and run.attempts == 1 and run.failure is FailureKind.INVALID


STOPPED_AT = {"lr": 0.01, "wd": 0.8, "epochs": 16}
"""Where ``user_error_until_fixed`` stops the sweep: the lr-up neighbour of the start below."""


def _stopping_sweep(make_sweep):
    return make_sweep(objective="tests.search.objectives:user_error_until_fixed",
                      grid={"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [8, 16]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 16})


def _calls_at(workdir, point) -> int:
    return sum(all(call[k] == v for k, v in point.items()) for call in calls(workdir))


def test_a_point_that_stopped_the_sweep_runs_again_once_its_cause_is_fixed(make_sweep, workdir, capsys):
    """A user error inside a job (its cause lies outside the run) stops the sweep; status reads its
    point as to re-run, not failed; once fixed, a plain certify (no --retry-failed) runs it again,
    in a new trial and the same run directory (the refused job left nothing naming another run)."""
    path = _stopping_sweep(make_sweep)
    assert certify(path) == 2
    err = capsys.readouterr().err
    assert "store not found" in err and f"re-run `megadocs search certify {path}`" in err
    assert "--retry-failed" not in err
    [stopped] = [r for r in read_runs(load_sweep(path)) if r.status is RunStatus.FAILED]
    assert stopped.point == STOPPED_AT and stopped.failure is FailureKind.INVALID and stopped.to_rerun
    assert main(["search", "status", str(path), "--json"]) == 0
    [summary] = json.loads(capsys.readouterr().out)["certifications"]
    assert summary["to_rerun"] == [{"params": STOPPED_AT, "reason": stopped.reason}]
    assert summary["state"] != "failed" and summary["blocked_by"] == [] and summary["runs"]["failed"] == 0
    assert main(["search", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"a: to re-run {STOPPED_AT}: {stopped.reason}" in out.splitlines(), out
    assert f"then `megadocs search certify {path}` runs them again" in out and "--retry-failed" not in out
    let_go(workdir, "fixed")
    assert certify(path) == CertifyExit.CERTIFIED_ON_BOUND  # epochs 8 or 16: an end of the grid
    assert _calls_at(workdir, STOPPED_AT) == 2  # the refused job, then the re-run
    runs = [r for r in read_runs(load_sweep(path)) if r.point == STOPPED_AT]
    assert [r.status for r in runs] == [RunStatus.FAILED, RunStatus.COMPLETED]
    assert runs[1].trial != runs[0].trial and runs[1].run_dir == runs[0].run_dir
    [summary] = summarize(load_sweep(path))
    assert summary.certified and summary.to_rerun == () and summary.runs.failed == 0
    assert STOPPED_AT in [n.point for n in summary.certificate.neighbours]


def test_a_trial_failed_before_failure_kinds_were_recorded_waits_for_retry_failed(make_sweep, workdir, monkeypatch,
                                                                                  capsys):
    """A ledger written by earlier code recorded no failure kind: its failed trial is kept, as then,
    until --retry-failed, even where its job met a user error."""
    from search.ledger import Ledger

    path = _stopping_sweep(make_sweep)
    fail = Ledger.fail
    with monkeypatch.context() as patch:  # what earlier code wrote: the failure without its kind
        patch.setattr(Ledger, "fail", lambda self, trial_id, reason, kind=None, **attrs: fail(self, trial_id, reason,
                                                                                               **attrs))
        assert certify(path) == 2
    [old] = [r for r in read_runs(load_sweep(path)) if r.status is RunStatus.FAILED]
    assert old.failure is None and not old.to_rerun
    let_go(workdir, "fixed")
    assert certify(path) == CertifyExit.WORK_FAILED  # blocked by the kept failure
    assert _calls_at(workdir, STOPPED_AT) == 1
    assert "1 failed point(s) block their certificates" in capsys.readouterr().err
    assert certify(path, "--retry-failed") == CertifyExit.CERTIFIED_ON_BOUND  # epochs 8 or 16: an end of the grid
    assert _calls_at(workdir, STOPPED_AT) == 2


def test_warm_start_ensembles_and_g_trend(make_sweep, workdir):
    path = make_sweep(
        certifications=[
            {"name": "real", "fixed": {"method": "real"}},
            {"name": "simple-g4", "fixed": {"method": "simple", "g": 4}},
            {"name": "simple-g8", "fixed": {"method": "simple", "g": 8}, "warm_start": "simple-g4"},
        ],
        ensembles=[{"name": "real-ens", "from": "real", "members": 3, "epochs_multiplier": 2}],
    )
    assert certify(path) == 0
    summaries = {s.name: s for s in summarize(load_sweep(path))}
    g4, g8 = summaries["simple-g4"], summaries["simple-g8"]
    assert g8.start == g4.certificate.point and g8.path[0] == g8.start
    assert g8.runs.finished == 1 + len(Grid.from_mapping(GRID).neighbours(g8.start))
    members = [r for r in read_runs(load_sweep(path)) if r.certification == "ensemble/real-ens"]
    real_point = summaries["real"].certificate.point
    assert sorted(r.member for r in members) == [0, 1, 2]
    assert sorted(r.fixed["seed"] for r in members) == [1, 2, 3]
    assert all(r.point == {**real_point, "epochs": real_point["epochs"] * 2} for r in members)
    assert len({r.run_dir for r in members}) == 3 and all(r.status == "completed" for r in members)
    [ensemble] = summarize_ensembles(load_sweep(path))
    assert len(ensemble.completed) == 3 and [m.member for m in ensemble.members] == [0, 1, 2]
    assert ensemble.stale == () and ensemble.refusal() is None
    assert g_trend_warnings(list(summaries.values())) == []
    # a certified loss that rises with G is flagged
    g8 = dataclasses.replace(g8, certificate=dataclasses.replace(g8.certificate, loss=g4.certificate.loss + 0.1))
    [warning] = g_trend_warnings([g4, g8])
    assert warning.startswith("simple: certified loss rises with G")
    assert "already starts from simple-g4's certificate" in warning  # g8 warm-starts from g4: no "set warm_start"


@pytest.mark.parametrize("strategy", ["grid", "tpe"])
def test_baseline_strategies(make_sweep, workdir, strategy):
    path = make_sweep()
    assert certify(path, "--strategy", strategy, "--max-runs", "20") == 0
    runs = [r for r in read_runs(load_sweep(path)) if r.certification == f"{strategy}/a"]
    assert len(runs) == 20 and len({r.run_id for r in runs}) == 20
    [summary] = summarize(load_sweep(path), strategy)
    assert summary.best.loss == min(r.loss for r in runs)
    # certify afterwards reuses the baseline's runs instead of running them again
    before = len(calls(workdir))
    assert certify(path) == 0
    certify_runs = [r for r in read_runs(load_sweep(path)) if r.certification == "a"]
    assert any(r.adopted_from for r in certify_runs)
    assert len(calls(workdir)) - before == sum(r.adopted_from is None for r in certify_runs)


def test_max_runs_caps_the_search(make_sweep, workdir, capsys):
    path = make_sweep()
    assert certify(path, "--max-runs", "3") == 1  # stopped before certifying: said so, not exit 0
    err = capsys.readouterr().err
    assert "a: not certified: run budget spent (3 of 3 runs of this certification; re-run certify without " \
           "--max-runs, or with a larger one, to go on)" in err
    assert len(read_runs(load_sweep(path))) == 3
    assert summarize(load_sweep(path))[0].state is StrategyState.STOPPED  # recorded: test_budget_stop.py
    assert load_sweep(path).certifications[0].name == "a"


def test_the_shipped_analytic_example_certifies(workdir):
    import yaml

    from .conftest import REPO

    data = yaml.safe_load((REPO / "search/examples/analytic.yaml").read_text())
    data["executor"] = {"kind": "debug", "max_parallel": 4, "poll_s": 0.05}
    path = workdir / "analytic.yaml"
    path.write_text(yaml.safe_dump(data))
    assert certify(path) == 0
    summaries = summarize(load_sweep(path))
    assert [s.state.value for s in summaries] == ["certified"] * len(data["certifications"])
    sweep = load_sweep(path)
    for summary, cert in zip(summaries, sweep.certifications):
        grid, point = sweep.grid_for(cert), summary.certificate.point
        loss = bowl({**point, **cert.fixed})
        assert all(bowl({**n.point, **cert.fixed}) >= loss for n in grid.neighbours(point))


@pytest.mark.parametrize("point,axes,expected", [
    ({"lr": 0.01, "epochs": 4, "mix": 0.5}, {"epochs": [2, 4, 8]}, {"epochs": 8}),
    # synthetic only (mix 1): the run's length is synthetic_epochs, so that is what doubles
    ({"lr": 0.01, "mix": 1.0, "synthetic_epochs": 3}, {"synthetic_epochs": [1, 3]}, {"synthetic_epochs": 6}),
    ({"lr": 0.01, "epochs": 1.5}, {"epochs": [0.5, 1.5]}, {"epochs": 3.0}),
])
def test_ensemble_members_scale_every_epochs_axis(point, axes, expected):
    from search.sweep import EnsembleConfig

    members = EnsembleConfig(name="e", source="c", members=3, epochs_multiplier=2.0, seed_offset=10).member_params(
        point, axes)
    assert [m.seed for m in members] == [10, 11, 12]
    assert all(m.point == {**point, **expected} and m.fixed == {} for m in members)


def test_ensemble_members_belong_to_the_current_certified_point(make_sweep, workdir):
    """Widening a grid moves the certified point: the members trained at the old point are never
    counted, scored or reported with the new point's (issue 34: "4 of 2 members completed")."""
    narrow = {"lr": [0.003], "wd": [0.8], "epochs": [4, 8]}
    ensembles = [{"name": "e", "from": "a", "members": 2}]
    certifications = [{"name": "a", "fixed": {"method": "real"}}]
    path = make_sweep(grid=narrow, start={"lr": 0.003, "wd": 0.8, "epochs": 8}, ensembles=ensembles,
                      certifications=certifications)
    assert certify(path) == 3  # certified on the epochs bound
    [old] = summarize_ensembles(load_sweep(path))
    assert old.source_point == {"lr": 0.003, "wd": 0.8, "epochs": 8} and len(old.completed) == 2

    path = make_sweep(grid={**narrow, "epochs": [4, 8, 16, 32]}, start={"lr": 0.003, "wd": 0.8, "epochs": 8},
                      ensembles=ensembles, certifications=certifications)
    [moving] = summarize_ensembles(load_sweep(path))  # the widened grid: the source searches again
    assert moving.source_point is None and moving.completed == [] and len(moving.stale) == 2
    assert moving.refusal().startswith("source a is not certified now (searching)")

    assert certify(path) == 0
    [new] = summarize_ensembles(load_sweep(path))
    assert new.source_point == {"lr": 0.003, "wd": 0.8, "epochs": 16}
    assert all(m.params.point["epochs"] == 32 for m in new.members) and len(new.completed) == 2
    assert {m.params.point["epochs"] for m in new.stale} == {16} and new.refusal() is None
    assert set(new.completed).isdisjoint(m.run_dir for m in new.stale)
    assert new.describe().endswith("2/2 members completed, 0 running, 0 failed; 2 finished at an earlier "
                                   "certified point (not used)")


def test_progress_shows_the_runs_in_flight_and_never_redraws_into_a_log():
    """Off a terminal the progress is a plain line per change (a log file gets no carriage-return
    redraws); its running count is the one after the latest dispatch (issue 34: stale count)."""
    import io

    from search.certificate import Outcome
    from search.controller import Progress
    from search.strategies import FixedPoints

    strategies = {"e": FixedPoints("e", [{"lr": 0.01}])}
    strategies["e"].record({"lr": 0.01}, Outcome.running())  # dispatched (before it: "e:not started")
    log = io.StringIO()
    progress = Progress(log)
    progress.update(strategies, 0)
    for _ in range(3):  # polled while waiting: printed once
        progress.refresh_running(2)
    progress.close()
    assert log.getvalue().splitlines() == ["certify: 0 finished, 0 running | e:running",
                                           "certify: 0 finished, 2 running | e:running"]
    assert "\r" not in log.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress(screen)
    progress.update(strategies, 0)
    progress.refresh_running(2)
    assert "running 2 | e:running" in screen.getvalue().rsplit("\r", 1)[-1]
    progress.update(strategies, 2, reused=1)  # a result that shares another's run: said apart
    assert "1 reused, running 2 | e:running" in screen.getvalue().rsplit("\r", 1)[-1]
    progress.close()


def test_runs_are_linked_for_tensorboard_by_certification_and_point(tmp_path):
    import os

    from search.objective import link_tensorboard

    links = tmp_path / "out" / "tensorboard"
    first, second = tmp_path / "out" / "runs" / "aaa", tmp_path / "out" / "runs" / "bbb"
    (first / "tensorboard").mkdir(parents=True)
    link_tensorboard(links, "simple-g4", {"lr": 0.01, "wd": 0.1, "epochs": 8}, first)
    link = links / "simple-g4" / "lr=0.01,wd=0.1,epochs=8"
    assert link.resolve() == (first / "tensorboard").resolve() and not os.path.isabs(os.readlink(link))
    link_tensorboard(links, "simple-g4", {"lr": 0.01, "wd": 0.1, "epochs": 8}, second)  # the point's run changed
    assert os.readlink(link) == os.path.join("..", "..", "runs", "bbb", "tensorboard")
    link_tensorboard(links, "ensemble/real-ens", {"lr": 0.01, "epochs": 16, "seed": 1}, first)
    assert (links / "ensemble" / "real-ens" / "lr=0.01,epochs=16,seed=1").resolve() == (first / "tensorboard").resolve()
    assert sorted(p.name for p in links.rglob("*") if p.name.startswith(".")) == []  # no temporary link left


def test_the_ctrl_c_line_says_what_becomes_of_the_jobs():
    from search.controller import SweepInterrupted

    assert SweepInterrupted(0, ["812_0", "812_1"], "slurm").message("megadocs search certify s.yaml") == (
        "interrupted: 2 slurm job(s) keep running (scancel 812_0 812_1 to stop them); "
        "`megadocs search certify s.yaml` re-attaches them")
    assert SweepInterrupted(2, [], "local").message("megadocs search certify s.yaml") == (
        "interrupted: 2 run(s) stopped (train runs saved a checkpoint); `megadocs search certify s.yaml` resumes them")
    assert SweepInterrupted(0, [], "local", again=True).message("megadocs search certify s.yaml").startswith("interrupted again:")
