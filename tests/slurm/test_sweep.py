"""Certification sweeps on the real cluster: `executor: {kind: slurm, profile: local.yaml}`.

The objective is the search tests' analytic bowl (tests/search/objectives.py: it logs every
evaluation to SEARCH_TEST_CALLS and sleeps SEARCH_TEST_SLEEP seconds), so these tests exercise
the cluster path, not training; training on SLURM is covered by test_preemption.py.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from megadocs.exits import Exit
from megadocs.formats import RunDir
from tests.slurm.conftest import LOCAL_PROFILE, REPO, final_history, slurm_state, wait_for

pytestmark = pytest.mark.slurm

GRID = {"lr": [0.001, 0.003, 0.01], "wd": [0.1, 0.4, 0.8, 1.6]}
START = {"lr": 0.003, "wd": 0.4}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Controllers run here; their jobs inherit this environment (sbatch --export=ALL)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SEARCH_TEST_CALLS", str(tmp_path / "calls.jsonl"))
    return tmp_path


def _sweep(workdir: Path, *, grid=GRID, start=START, max_retries: int = 1, max_parallel: int = 8,
           objective: str = "tests.search.objectives:logged", noise: dict | None = None) -> Path:
    path = workdir / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "slurm-bowl",
        "executor": {"kind": "slurm", "profile": str(LOCAL_PROFILE), "max_parallel": max_parallel, "poll_s": 0.5,
                     "max_retries": max_retries},
        "out": str(workdir / "out"),
        "objective": objective,
        "grid": grid,
        "start": start,
        "certifications": [{"name": "real", "fixed": {"method": "real"}}],
        **({"noise": noise} if noise else {}),
    }, sort_keys=False))
    return path


def _megadocs(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "megadocs.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _controller(path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "megadocs.cli", "search", "certify", str(path), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(path: Path) -> list[dict]:
    """The ledger's runs; none while the controller has not created the ledger yet."""
    from search.ledger import read_runs
    from search.storage import LedgerMissing
    from search.sweep import load_sweep

    try:
        return read_runs(load_sweep(path))
    except LedgerMissing:
        return []


def _calls(workdir: Path) -> list[tuple]:
    path = workdir / "calls.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [tuple(sorted(json.loads(line).items())) for line in lines]


def _bowl_argmin() -> dict:
    from search.landscapes import bowl

    points = [dict(zip(GRID, values), method="real") for values in itertools.product(*GRID.values())]
    best = min(points, key=bowl)
    return {axis: best[axis] for axis in GRID}


def test_certification_sweep_runs_as_job_arrays(slurm_cluster, workdir):
    path = _sweep(workdir)

    done = _megadocs("search", "certify", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]

    [summary] = json.loads(_megadocs("search", "status", str(path), "--json").stdout)["certifications"]
    assert summary["state"] == "certified"
    assert summary["certificate"]["point"] == _bowl_argmin()  # convex bowl: the local optimum is global
    runs = _runs(path)
    assert len(_calls(workdir)) == len(set(_calls(workdir))) == len(runs)  # every point once
    job_ids = [run.job_id for run in runs]
    # a batch of several runs is one job array (its tasks ARRAYID_TASK); a round that asks for one
    # run alone (a centre with one unrun neighbour left, or results arriving one at a time on a
    # loaded machine) is a plain job: submitit makes no array of one
    assert all(re.fullmatch(r"\d+(_\d+)?", job_id) for job_id in job_ids), job_ids
    tasks = Counter(job_id.split("_")[0] for job_id in job_ids if "_" in job_id)
    assert tasks and max(tasks.values()) > 1, job_ids  # batches went as arrays, not one sbatch per run
    assert len(set(job_ids)) == len(job_ids)
    for job_id in job_ids:
        assert final_history(job_id) == ["COMPLETED"]  # SLURM's own accounting agrees
    for run in runs:  # the job's own record names it as the ledger and sacct do (an array task too)
        assert json.loads(RunDir(run.run_dir).job.read_text())["job_id"] == run.job_id


def test_controller_killed_while_jobs_run_reattaches_by_job_id_without_duplicates(slurm_cluster, workdir, monkeypatch):
    monkeypatch.setenv("SEARCH_TEST_SLEEP", "12")
    path = _sweep(workdir, max_parallel=4)  # the local node's 4 slots: every submitted job runs at once
    first = _controller(path)

    def in_flight():  # (none between its trial and its job id: the controller may be dispatching a round)
        running = [r for r in _runs(path) if r.status == "running"]
        return running if running and all(r.job_id and slurm_state(r.job_id) == "RUNNING" for r in running) else None

    try:
        wait_for(in_flight, 120, "jobs of the sweep to be running on SLURM")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    running = [r for r in _runs(path) if r.status == "running"]  # as the killed controller left them
    assert running and all(r.job_id for r in running)
    killed_with = {r.run_id: r.job_id for r in running}

    # with no controller, the jobs go on; status names them by job id
    status = _megadocs("search", "status", str(path))
    assert status.returncode == 0, status.stderr
    for job_id in killed_with.values():
        assert job_id in status.stdout, f"status does not show running job {job_id}:\n{status.stdout}"

    # the re-attached jobs sleep the 12 s they were submitted with (sbatch exports the submitter's
    # environment); the runs the second controller submits need no time in flight
    monkeypatch.setenv("SEARCH_TEST_SLEEP", "1")
    second = _megadocs("search", "certify", str(path), "--no-progress", timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]

    runs = {r.run_id: r for r in _runs(path)}
    for run_id, job_id in killed_with.items():  # re-attached: finished under the same job, not resubmitted
        assert runs[run_id].status == "completed"
        assert runs[run_id].job_id == job_id and runs[run_id].attempts == 1
        assert final_history(job_id) == ["COMPLETED"]
    calls = _calls(workdir)
    assert len(calls) == len(set(calls)) == len(runs), "a point was evaluated twice"
    [summary] = json.loads(_megadocs("search", "status", str(path), "--json").stdout)["certifications"]
    assert summary["state"] == "certified" and summary["certificate"]["point"] == _bowl_argmin()


def test_cancelled_job_is_retried_then_the_run_fails_with_its_reason(slurm_cluster, workdir, monkeypatch):
    """scancel stands in for a node failure: the controller retries (max_retries=1), then records
    the run as failed with SLURM's reason."""
    monkeypatch.setenv("SEARCH_TEST_SLEEP", "300")
    path = _sweep(workdir, grid={"lr": [0.003], "wd": [0.4]}, max_retries=1)  # one point: the start
    controller = _controller(path)
    cancelled = []
    try:
        for attempt in (1, 2):
            def running_job(attempt=attempt):
                runs = _runs(path)
                if runs and runs[0].attempts == attempt and runs[0].job_id:
                    job_id = runs[0].job_id
                    return job_id if slurm_state(job_id) == "RUNNING" else None
                return None

            job_id = wait_for(running_job, 90, f"attempt {attempt} to run on SLURM")
            subprocess.run(["scancel", job_id], check=True)
            cancelled.append(job_id)
        out, err = controller.communicate(timeout=120)
    finally:
        if controller.poll() is None:
            controller.kill()
        subprocess.run(["scancel", *cancelled], capture_output=True)

    assert controller.returncode == Exit.WORK_FAILED, err[-3000:]  # its run was cancelled: work failed, not a 'no'
    assert cancelled[0] != cancelled[1]  # the retry was a new job
    assert [final_history(job_id) for job_id in cancelled] == [["CANCELLED"], ["CANCELLED"]]
    [run] = _runs(path)
    assert run.status == "failed" and run.attempts == 2
    assert "CANCELLED" in run.reason and cancelled[1] in run.reason, run.reason
    [summary] = json.loads(_megadocs("search", "status", str(path), "--json").stdout)["certifications"]
    assert summary["state"] == "failed"
    status = _megadocs("search", "status", str(path)).stdout
    assert f"failed, job {cancelled[1]} (attempt 2)" in status, status


def test_noise_repeats_on_slurm_survive_a_controller_kill(slurm_cluster, workdir, monkeypatch):
    """`noise: {repeats: 2}`: repeats are seeded array tasks like any run; a killed controller's
    repeats are re-attached by job id, none runs twice, and the certificate carries sigma."""
    monkeypatch.setenv("SEARCH_TEST_SLEEP", "6")
    path = _sweep(workdir, max_parallel=4, objective="tests.search.objectives:seed_noisy",
                  noise={"repeats": 2})
    first = _controller(path)

    def seeded_in_flight():
        running = [r for r in _runs(path) if r.status == "running" and r.job_id]
        return running if any("seed" in r.fixed for r in running) else None

    try:
        wait_for(seeded_in_flight, 180, "a repeat (seeded run) to be in flight on SLURM")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_with = {r.run_id: r.job_id for r in _runs(path) if r.status == "running" and r.job_id}

    monkeypatch.setenv("SEARCH_TEST_SLEEP", "1")  # for the second controller's runs; the re-attached keep 6 s
    second = _megadocs("search", "certify", str(path), "--no-progress", timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = {r.run_id: r for r in _runs(path)}
    for run_id, job_id in killed_with.items():
        assert runs[run_id].job_id == job_id and runs[run_id].attempts == 1
    calls = _calls(workdir)
    assert len(calls) == len(set(calls)) == len(runs), "a run was evaluated twice"
    [summary] = json.loads(_megadocs("search", "status", str(path), "--json").stdout)["certifications"]
    assert summary["state"] == "certified" and summary["certificate"]["draws"] == 2
    assert summary["certificate"]["noise"]["sigma"] is not None
    point = summary["certificate"]["point"]
    assert sorted(r.fixed.get("seed", 0) for r in runs.values() if r.point == point) == [0, 1]


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "not-fixed"])
def test_jobs_that_met_a_user_error_before_the_rerun_run_again_and_stop_only_if_it_persists(
        slurm_cluster, workdir, monkeypatch, fixed):
    """The first controller stops on one job's user error (its data away) while the other jobs it
    submitted still run and meet it too. The user fixes the cause (or not) and re-runs certify: the
    re-attached jobs' stale errors stop nothing, their runs are submitted again (no retry spent); a
    fixed sweep runs to the end, one not fixed stops once, on a job the second controller submitted."""
    monkeypatch.setenv("SEARCH_TEST_MARKERS", str(workdir / "markers"))
    monkeypatch.setenv("SEARCH_TEST_FREE_RUNS", "1")  # one job meets the error at once, the others once let go
    path = _sweep(workdir, max_parallel=4, objective="tests.search.objectives:gated_user_error_until_fixed")
    try:
        _rerun_after_stale_user_errors(path, workdir, fixed)
    finally:  # no job left waiting on the cluster, whatever failed
        (workdir / "markers").mkdir(exist_ok=True)
        (workdir / "markers" / "go").touch()
        subprocess.run(["scancel", *(r.job_id for r in _runs(path) if r.status == "running" and r.job_id)],
                       capture_output=True)


def _rerun_after_stale_user_errors(path: Path, workdir: Path, fixed: bool) -> None:
    first = _megadocs("search", "certify", str(path), "--no-progress", timeout=240)
    assert first.returncode == Exit.BAD_INPUT, first.stderr[-3000:]
    assert first.stderr.count("fix it and re-run") == 1, first.stderr[-3000:]
    submitted = _runs(path)  # every trial of the first controller has its job (none was stopped)
    left = {r.run_id: r for r in submitted if r.status == "running"}
    [stopped] = [r for r in submitted if r.status == "failed"]
    assert left and all(r.job_id for r in left.values()), submitted

    (workdir / "markers" / "go").touch()  # the jobs left running meet the user error too
    wait_for(lambda: len(_calls(workdir)) == len(submitted), 180, "every job left running to meet the user error")
    for record in left.values():  # ended, their results written: the next controller reads them at once
        assert final_history(record.job_id) == ["COMPLETED"]
    if fixed:
        (workdir / "markers" / "fixed").touch()
    second = _megadocs("search", "certify", str(path), "--no-progress", timeout=300)
    again = [line for line in second.stderr.splitlines() if "submitted by an earlier certify" in line]
    assert len(again) == len(left), second.stderr[-3000:]
    runs = _runs(path)
    for record in left.values():  # the same trial, a new job, the attempt given back
        [rerun] = [r for r in runs if r.trial == record.trial and r.certification == record.certification]
        assert rerun.job_id != record.job_id and rerun.attempts == 1
        if rerun.status != "failed":  # (the one that stopped the sweep says its own error)
            assert f"its job {record.job_id}, submitted by an earlier certify, met a user error" in rerun.reason
    [summary] = json.loads(_megadocs("search", "status", str(path), "--json").stdout)["certifications"]
    if fixed:
        assert second.returncode == 0, second.stderr[-3000:]
        assert "fix it and re-run" not in second.stderr
        calls = Counter(_calls(workdir))
        refused = [stopped, *left.values()]
        assert [calls[tuple(sorted({**r.point, **r.fixed}.items()))] for r in refused] == [2] * len(refused), calls
        assert summary["state"] == "certified" and summary["to_rerun"] == []
        return
    # not fixed: one stop, on a job of its own
    assert second.returncode == Exit.BAD_INPUT, second.stderr[-3000:]
    assert second.stderr.count("fix it and re-run") == 1, second.stderr[-3000:]
    first_jobs = {stopped.job_id, *(r.job_id for r in left.values())}
    failed = [r for r in runs if r.status == "failed" and r.trial != stopped.trial]
    assert len(failed) == 1 and failed[0].to_rerun and failed[0].job_id not in first_jobs, runs
    # status: the runs submitted again are in flight, the point that stopped it is to re-run
    running = [r.point for r in runs if r.status == "running"]
    assert summary["runs"]["running"] == len(running)
    assert failed[0].point in [entry["params"] for entry in summary["to_rerun"]], summary
    assert not [entry for entry in summary["to_rerun"] if entry["params"] in running], summary
