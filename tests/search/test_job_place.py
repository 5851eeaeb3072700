"""Local jobs are asked only where their pids name them (the trial's job place): a controller in a
container of this host (a real pid namespace, ``unshare --pid``) runs a local sweep; ``search
status`` and a restarted controller outside it must not read the container's pids here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from megadocs.procs import child_pids
from search.certificate import CertifyExit
from search.ledger import Ledger, read_runs
from search.sweep import load_sweep
from tests import waiting

from .conftest import calls, let_go

CONTAINED = "{python} -m megadocs.cli search certify {path} --no-progress; exec sleep 600"
"""pid 1 of the namespace is this shell: the controller killed, its jobs (reparented) keep running."""


def _megadocs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "megadocs.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _running(path) -> list:
    try:
        return [r for r in read_runs(load_sweep(path)) if r.status == "running" and r.job_id]
    except Exception:  # noqa: BLE001 - the ledger may not exist yet
        return []


def test_local_jobs_of_a_controller_in_another_pid_namespace(make_sweep, workdir):
    # the jobs run until the test lets them go (a fixed sleep could end, on a loaded machine, while
    # status or the outside controller were still starting)
    path = make_sweep(executor={"kind": "local", "max_parallel": 2, "poll_s": 0.1},
                      objective="tests.search.objectives:gated",
                      grid={"lr": [0.001, 0.003], "wd": [0.8], "epochs": [16]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 16})
    shell = CONTAINED.format(python=sys.executable, path=path)
    contained = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", shell],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting.wait_for(lambda: len(_running(path)) == 2 or contained.poll() is not None, 120, "two jobs in flight",
                         interval_s=0.2)
        if contained.poll() is not None or not _running(path):
            pytest.skip(f"no pid namespace can be made here (needs root): {contained.stderr.read()[-300:]}")
        in_flight = _running(path)  # the start and its neighbour, both dispatched at once
        assert all(r.job_place is not None and not r.job_place.askable() for r in in_flight)

        # status outside the container: the job is not asked here (its pid names another process here)
        report = json.loads(_megadocs("search", "status", str(path), "--json").stdout)
        assert [job["state"] for job in report["jobs"]] == ["unchecked"] * len(in_flight), report["jobs"]
        assert all("running in another pid namespace on this host (a container) (not checked from here)" in job["summary"]
                   for job in report["jobs"])
        runs = report["certifications"][0]["runs"]
        assert runs["running"] == len(in_flight) and runs["stopped"] == 0, runs

        # the controller dies, its job runs on in the container; a controller outside takes over
        [inner_shell] = child_pids(contained.pid)
        [inner_controller] = child_pids(inner_shell)
        os.kill(inner_controller, signal.SIGKILL)
        sweep = load_sweep(path)
        ledger = Ledger(sweep.ledger_url, sweep.name)
        ledger.storage.delete_study(ledger.storage.get_study_id_from_name(ledger._lock_name))  # as if stale
        assert _running(path), "the contained job ran out before the controller outside started"
        outside = subprocess.Popen([sys.executable, "-m", "megadocs.cli", "search", "certify", str(path), "--no-progress",
                                    "--max-runs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:  # its jobs are submitted while the contained ones still run; then those are let go
            waiting.wait_for(lambda: all(r.attempts == 2 for r in _running(path)) or outside.poll() is not None, 120,
                             "the controller outside to submit both runs again", interval_s=0.2)
            let_go(workdir)
            _, err = outside.communicate(timeout=300)
        finally:
            if outside.poll() is None:
                outside.kill()
    finally:
        let_go(workdir)
        contained.kill()  # the namespace's pid 1: the kernel ends every process in it
        contained.wait()
    assert outside.returncode == CertifyExit.CERTIFIED_ON_BOUND, err  # lr 0.003: the grid's end
    assert "started in another pid namespace on this host (a container) (not checked from here); submitted again" in err
    runs = read_runs(load_sweep(path))
    assert len(runs) == 2 and all(r.status == "completed" and r.attempts == 2 for r in runs), runs
    assert len(calls(workdir)) == 2  # each job submitted outside waited for the contained one's result


ELSEWHERE = "node7.elsewhere.example"
"""MOCK: the host a local job of the sweep was started on, named in its trial (this test cannot
start one on another host); any name but this host's."""


def test_a_local_job_started_on_another_host_is_refused_not_run_twice(make_sweep, workdir, capsys):
    """A controller restarted on another login node (the sweep folder on a shared file system) cannot
    ask a local job's pid, and the run directory's flock need not hold between hosts: it submitted the
    run again, a second process training into the same RUN folder. It refuses in one line, nothing
    submitted; once the user says that host's jobs ended (``--jobs-ended-on``), it runs the point."""
    from megadocs.cli import main
    from megadocs.procs import PidPlace
    from search.ledger import ATTR_ATTEMPTS, ATTR_JOB_FOLDER, ATTR_JOB_ID, ATTR_JOB_PLACE, study_name
    from search.objective import make_objective
    from search.params import RunParams

    small = {"grid": {"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [16]},
             "start": {"lr": 0.003, "wd": 0.8, "epochs": 16}}
    path = make_sweep(**small)  # the debug executor runs the start
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "1"]) == CertifyExit.NOT_CERTIFIED
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    for lr, job_id, folder in ((0.001, "4242", str(sweep.out_dir / "jobs")),  # a local job there
                               (0.01, "debug-4242-1", None)):  # an in-process job, ended with its controller
        params = RunParams(point={"lr": lr, "wd": 0.8, "epochs": 16}, fixed=sweep.certifications[0].fixed)
        run_id = make_objective(sweep).identity(params.merged())
        trial = ledger.new_run(study_name(sweep.name, "a"), params=params, run_id=run_id,
                               run_dir=str(sweep.out_dir / "runs" / run_id))
        ledger.update(trial, **{ATTR_JOB_ID: job_id, ATTR_JOB_FOLDER: folder, ATTR_ATTEMPTS: 1,
                                ATTR_JOB_PLACE: PidPlace(ELSEWHERE, "b", 1).to_json()})
    path = make_sweep(executor={"kind": "local", "max_parallel": 2, "poll_s": 0.05, "max_retries": 1}, **small)
    capsys.readouterr()

    assert main(["search", "certify", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: local job(s) 4242 of this sweep run on host {ELSEWHERE} (a local job is asked only on its "
                   f"host): run `megadocs search certify {path}` on {ELSEWHERE}, which re-attaches them, or use a SLURM "
                   "executor to run a sweep's controller from any host; if that host is down and its jobs ended with "
                   f"it, `megadocs search certify {path} --jobs-ended-on {ELSEWHERE}` submits their runs again here")
    assert len(calls(workdir)) == 1  # nothing submitted
    waiting = [r for r in read_runs(load_sweep(path)) if r.status == "running"]
    assert [(r.job_id, r.attempts) for r in waiting] == [("4242", 1), ("debug-4242-1", 1)]

    assert main(["search", "certify", str(path), "--no-progress", "--jobs-ended-on", ELSEWHERE]) == CertifyExit.CERTIFIED
    runs = read_runs(load_sweep(path))
    assert [r.status for r in runs] == ["completed"] * 3 and [r.attempts for r in runs[1:]] == [2, 2]
    assert runs[1].reason.startswith(f"its local job 4242 was started on host {ELSEWHERE}, whose jobs ended")
    assert len(calls(workdir)) == 3
