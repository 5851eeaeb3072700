"""Kill the controller (SIGKILL) mid-sweep under the real local executor, contend with a second
controller, restart: no duplicate run, no lost run, running jobs re-attached."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from megadocs.cli import main
from search.certificate import CertifyExit
from search.ledger import read_runs
from search.status import summarize
from search.sweep import load_sweep
from tests import waiting

from .conftest import calls, let_go

SMALL_GRID = {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8, 1.6], "epochs": [4, 8, 16]}
FREE = 4
"""Runs of the first controller that finish; the next wait for the test (``objectives.gated``)."""


def controller(path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "megadocs.cli", "search", "certify", str(path), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def killed_with_jobs_in_flight(path) -> dict:
    """Start a controller, SIGKILL it once a job is in flight; the runs then in flight, by run id."""
    first = controller(path)
    try:
        wait_for(lambda: any(r.status == "running" and r.job_id for r in _runs(path)) or first.poll() is not None,
                 what="a job in flight")
        assert first.poll() is None, first.communicate()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    return {r.run_id: r for r in _runs(path) if r.status == "running" and r.job_id}


def wait_for(condition, what: str, timeout_s: float = 120.0):
    """`tests.waiting.wait_for` every 0.2 s (a poll reads the ledger)."""
    waiting.wait_for(condition, timeout_s, what, interval_s=0.2)


@pytest.mark.parametrize("noise", [None, pytest.param({"repeats": 2}, marks=pytest.mark.slow)],
                         ids=["noise-free", "repeats"])
def test_sigkill_mid_sweep_then_restart(make_sweep, workdir, monkeypatch, noise):
    # the first FREE runs finish, the next stay in flight until the test lets them go: a fixed sleep
    # could end, on a loaded machine, while status or the contending controller were still starting
    monkeypatch.setenv("SEARCH_TEST_FREE_RUNS", str(FREE))
    path = make_sweep(
        executor={"kind": "local", "max_parallel": 3, "poll_s": 0.1},
        grid=SMALL_GRID, start={"lr": 0.001, "wd": 0.4, "epochs": 4},
        **({"noise": noise, "objective": "tests.search.objectives:gated_seed_noisy"} if noise
           else {"objective": "tests.search.objectives:gated"}),
    )
    first = controller(path)
    try:
        try:
            # some runs finished and others in flight (held: their job ids recorded)
            wait_for(lambda: len(calls(workdir)) == FREE and any(r.status == "running" and r.job_id for r in _runs(path))
                     or first.poll() is not None, what="a sweep with finished and running runs")
            assert first.poll() is None, first.communicate()

            # status reads the ledger while the controller writes it
            status = subprocess.run([sys.executable, "-m", "megadocs.cli", "search", "status", str(path)],
                                    capture_output=True, text=True, timeout=120)
            assert status.returncode == 0, status.stderr
            assert f"controller: running on host {os.uname().nodename}, pid {first.pid}" in status.stdout, status.stdout
            live = subprocess.run([sys.executable, "-m", "megadocs.cli", "search", "status", str(path), "--json"],
                                  capture_output=True, text=True, timeout=120)
            [summary] = json.loads(live.stdout)["certifications"]
            assert summary["runs"]["finished"] >= 1, live.stdout

            second = subprocess.run(
                [sys.executable, "-m", "megadocs.cli", "search", "certify", str(path), "--no-progress"],
                capture_output=True, text=True, timeout=120,
            )
            assert second.returncode == 2, second.stderr
            assert f"pid {first.pid}" in second.stderr and "held by another controller" in second.stderr
            assert "host " in second.stderr and "since " in second.stderr
            assert f"(ledger {load_sweep(path).ledger_url})" in second.stderr  # the file as it is, not another
            assert first.poll() is None and len(calls(workdir)) == FREE  # still mid-sweep: nothing let go
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        in_flight = {r.run_id: r for r in _runs(path) if r.status == "running"}
        assert in_flight, "kill landed while runs were in flight"
        # a kill between a trial's creation and its job's submission leaves it without a job id: the
        # restart submits it then (once)
        assert any(r.job_id for r in in_flight.values())

        restarted = controller(path)
        try:  # the held jobs run on: let go once the restarted controller holds the sweep
            wait_for(lambda: _holder_pid(path) == restarted.pid or restarted.poll() is not None,
                     what="the restarted controller to take the sweep")
            let_go(workdir)
            out, err = restarted.communicate(timeout=300)
        finally:
            if restarted.poll() is None:
                restarted.kill()
                restarted.wait()
    finally:
        let_go(workdir)  # no job is left waiting, whatever failed
    assert restarted.returncode == CertifyExit.CERTIFIED_ON_BOUND, err  # epochs 16: SMALL_GRID's end

    runs = read_runs(load_sweep(path))
    assert all(r.status == "completed" for r in runs), [(r.status, r.point, r.fixed, r.reason)
                                                           for r in runs if r.status != "completed"]
    evaluated = [json.dumps(c, sort_keys=True) for c in calls(workdir)]
    assert len(evaluated) == len(set(evaluated)) == len(runs)  # none twice, none lost
    for run_id, before in in_flight.items():
        [after] = [r for r in runs if r.run_id == run_id]
        assert after.attempts == 1  # re-attached (or submitted once), not re-run
        assert before.job_id is None or after.job_id == before.job_id
    [summary] = summarize(load_sweep(path))
    assert summary.state.value == "certified"
    assert summary.certificate.point == {"lr": 0.003, "wd": 0.8, "epochs": 16}
    if noise:  # repeats are runs like any other: seeded, re-attached, never run twice
        assert summary.certificate.draws == 2 and summary.certificate.noise.sigma is not None
        assert {r.fixed.get("seed", 0) for r in runs} == {0, 1}


def test_local_jobs_that_met_a_user_error_under_a_killed_controller_run_again_without_stopping(make_sweep, workdir):
    """Local jobs re-attached by pid: they met a user error (their data away) after their controller
    was killed; the user fixes it and re-runs certify, which submits their runs again (no retry
    spent, one warning each) and certifies without stopping on the stale results."""
    path = make_sweep(executor={"kind": "local", "max_parallel": 3, "poll_s": 0.1},
                      objective="tests.search.objectives:gated_user_error_until_fixed",
                      grid={"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [16]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 16})
    try:
        in_flight = killed_with_jobs_in_flight(path)
        let_go(workdir)  # the data is still away: they meet the user error, with no controller
        wait_for(lambda: len(calls(workdir)) >= len(in_flight), what="the jobs in flight to meet the user error")
    finally:
        let_go(workdir)
    let_go(workdir, "fixed")
    second = subprocess.run([sys.executable, "-m", "megadocs.cli", "search", "certify", str(path), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == CertifyExit.CERTIFIED, second.stderr  # lr 0.003: inside the searched axis
    assert "fix it and re-run" not in second.stderr
    again = [line for line in second.stderr.splitlines() if "submitted by an earlier certify" in line]
    assert len(again) == len(in_flight), second.stderr
    runs = read_runs(load_sweep(path))
    for run_id, before in in_flight.items():  # the same trial, a new job, the attempt given back
        [after] = [r for r in runs if r.run_id == run_id]
        assert after.status == "completed" and after.trial == before.trial and after.attempts == 1
        assert after.job_id != before.job_id and f"its job {before.job_id}, submitted by an earlier" in after.reason


def test_runs_in_flight_when_their_identity_changed_are_superseded_and_their_jobs_cancelled(make_sweep, workdir):
    """The objective's version changed while local jobs ran under a killed controller: the next
    certify does not adopt their results (about the old code), but marks their trials superseded,
    cancels their jobs and runs their points under the new identity, in one certify."""
    import yaml

    from megadocs.procs import pid_alive

    path = make_sweep(executor={"kind": "local", "max_parallel": 3, "poll_s": 0.1},
                      objective="tests.search.objectives:gated", objective_version="v1",
                      grid={"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [16]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 16})
    in_flight = killed_with_jobs_in_flight(path)
    assert all(pid_alive(int(r.job_id)) for r in in_flight.values())  # held by the gate
    sweep = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**sweep, "objective_version": "v2"}, sort_keys=False))  # new code
    second = controller(path)
    try:
        wait_for(lambda: all(not pid_alive(int(r.job_id)) for r in in_flight.values()) or second.poll() is not None,
                 what="the stale jobs to be cancelled")
        assert not calls(workdir)  # nothing evaluated yet: the stale jobs never returned
    finally:
        let_go(workdir)  # the new identity's jobs go on
    out, err = second.communicate(timeout=300)
    assert second.returncode == CertifyExit.CERTIFIED, err
    assert f"({len(in_flight)} still running: their jobs are cancelled)" in err, err
    runs = read_runs(load_sweep(path))
    for run_id, before in in_flight.items():
        [after] = [r for r in runs if r.trial == before.trial and r.certification == before.certification]
        assert after.status == "superseded" and f"identity {run_id} is now" in after.reason, after
    completed = [r for r in runs if r.status == "completed"]
    assert completed and not {r.run_id for r in completed} & set(in_flight)  # no result of the old code used
    assert len(calls(workdir)) == len(completed)  # and none of the old jobs evaluated


def test_lost_job_is_retried_under_the_local_executor(make_sweep, workdir):
    path = make_sweep(executor={"kind": "local", "max_parallel": 3, "poll_s": 0.1, "max_retries": 1},
                      objective="tests.search.objectives:killed_once",
                      grid={"lr": [0.001, 0.003], "wd": [0.8], "epochs": [16]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 16})
    result = subprocess.run([sys.executable, "-m", "megadocs.cli", "search", "certify", str(path), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == CertifyExit.CERTIFIED_ON_BOUND, result.stderr  # lr 0.003: the grid's end
    runs = read_runs(load_sweep(path))
    assert len(runs) == 2
    assert all(r.status == "completed" and r.attempts == 2 and "lost" in r.reason for r in runs)


def test_ctrl_c_stops_local_runs_in_one_line_and_the_rerun_resumes_them(make_sweep, workdir, monkeypatch):
    """Ctrl-C reaches the whole foreground process group, jobs included: the jobs ignore it, the
    controller stops them itself, says so without a traceback and exits 130; nothing keeps
    running; the re-run submits the stopped runs again (no retry spent) and never runs more than
    max_parallel at once (issue 34: submitit tracebacks, orphaned jobs, 3 runs with a limit of 2)."""
    from megadocs.procs import child_pids, pid_alive

    monkeypatch.setenv("SEARCH_TEST_SLEEP", "600")  # far longer than the waits below: only a stop ends them
    path = make_sweep(executor={"kind": "local", "max_parallel": 2, "poll_s": 0.1},
                      objective="tests.search.objectives:timed",
                      grid={"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [8]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 8})
    first = subprocess.Popen([sys.executable, "-m", "megadocs.cli", "search", "certify", str(path), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # (the ledger's job ids too: the controller records them after the jobs started)
        wait_for(lambda: len(calls(workdir)) == 2 and len([r for r in _runs(path) if r.status == "running" and r.job_id])
                 == 2, what="two runs inside the objective, their job ids recorded")
        jobs = [int(r.job_id) for r in _runs(path) if r.status == "running"]
        processes = jobs + [task for job in jobs for task in child_pids(job)]
        assert len(jobs) == 2 and len(processes) == 4
        os.killpg(first.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1] == (f"interrupted: 2 run(s) stopped (train runs saved a checkpoint); `megadocs search certify "
                         f"{path}` resumes them"), err
    assert len(lines) == 2 and lines[0].startswith("interrupted: stopping 2 local run(s)"), err
    wait_for(lambda: not any(pid_alive(pid) for pid in processes), timeout_s=60, what="every job process gone")
    stopped = [r for r in read_runs(load_sweep(path)) if r.status == "running"]
    assert len(stopped) == 2 and all(r.job_id is None and r.attempts == 0 for r in stopped)
    assert all(r.reason == "interrupted during attempt 1" for r in stopped)

    monkeypatch.setenv("SEARCH_TEST_SLEEP", "1")
    resumed = controller(path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    runs = read_runs(load_sweep(path))
    assert all(r.status == "completed" for r in runs)
    assert all(r.attempts == 1 for r in runs if r.trial in {s.trial for s in stopped})
    times = [json.loads(line) for line in (workdir / "calls.jsonl.times").read_text().splitlines()]
    overlap = max(sum(t["start"] <= u["start"] < t["end"] for t in times) for u in times)
    assert len(times) == len(runs) and overlap <= 2


def test_dead_holder_is_taken_over(make_sweep):
    from search.ledger import LOCK_HOLDER, Ledger
    from search.sweep import load_sweep

    sweep = load_sweep(make_sweep())
    ledger = Ledger(sweep.ledger_url, sweep.name)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with ledger.controller_lock():
        ledger.storage.set_study_user_attr(ledger._lock_id, LOCK_HOLDER, {
            "host": os.uname().nodename, "pid": dead.pid, "since": "earlier", "heartbeat": time.time(), "token": "x"})
        assert ledger.holder() is None  # its pid is gone
        with Ledger(sweep.ledger_url, sweep.name).controller_lock() as other:
            assert other.holder()["pid"] == os.getpid()


def test_busy_holder_stays_alive_and_silent_remote_holder_dies(make_sweep):
    from search.ledger import LOCK_HOLDER, STALE_AFTER_S, ControllerBusy, Ledger, process_start
    from search.sweep import load_sweep

    sweep = load_sweep(make_sweep())
    ledger = Ledger(sweep.ledger_url, sweep.name)
    long_ago = time.time() - 10 * STALE_AFTER_S
    with ledger.controller_lock():
        # this host, live process, no heartbeat for long (e.g. a long in-process run): still held
        ledger.storage.set_study_user_attr(ledger._lock_id, LOCK_HOLDER, {
            "host": os.uname().nodename, "pid": os.getpid(), "since": "earlier", "heartbeat": long_ago,
            "token": "x", "started": process_start(os.getpid())})
        with pytest.raises(ControllerBusy, match=f"pid {os.getpid()}"):
            Ledger(sweep.ledger_url, sweep.name)._acquire()
        # another host that stopped beating: taken over
        ledger.storage.set_study_user_attr(ledger._lock_id, LOCK_HOLDER, {
            "host": "elsewhere", "pid": 1, "since": "earlier", "heartbeat": long_ago, "token": "x"})
        with Ledger(sweep.ledger_url, sweep.name).controller_lock() as other:
            assert other.holder()["host"] == os.uname().nodename


HOLD_IN_A_CONTAINER = """
import sys
from search.ledger import Ledger
from search.sweep import load_sweep
sweep = load_sweep(sys.argv[1])
with Ledger(sweep.ledger_url, sweep.name).controller_lock():
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_holder_in_another_pid_namespace_of_this_host_counts_by_its_heartbeat(make_sweep):
    """A controller in a container of this host (a real pid namespace: ``unshare --pid``; same
    hostname and kernel) records its pid as that namespace sees it: pid 1, which here is another
    process. It is not judged by that pid (here pid 1 started at another time: taken for dead, and
    the sweep taken over under a live controller) but by its heartbeat, fresh: the sweep stays its."""
    from search.ledger import ControllerBusy, Ledger
    from tests.tree import ROOT

    path = make_sweep()
    sweep = load_sweep(path)
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", HOLD_IN_A_CONTAINER, str(path)]
    contained = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        if contained.stdout.readline() != "held\n":
            pytest.skip(f"no pid namespace can be made here (needs root): {contained.stderr.read()[-300:]}")
        holder = Ledger(sweep.ledger_url, sweep.name).holder()
        assert holder is not None and holder["pid"] == 1 and holder["host"] == os.uname().nodename
        with pytest.raises(ControllerBusy, match="pid 1,"):
            Ledger(sweep.ledger_url, sweep.name)._acquire()
    finally:
        contained.communicate("", timeout=60)
    assert contained.returncode == 0
    with Ledger(sweep.ledger_url, sweep.name).controller_lock() as other:  # released: free
        assert other.holder()["pid"] == os.getpid()


def _holder_pid(path) -> int | None:
    from search.ledger import Ledger

    sweep = load_sweep(path)
    holder = Ledger(sweep.ledger_url, sweep.name).holder()
    return None if holder is None else holder["pid"]


def _runs(path):
    try:
        return read_runs(load_sweep(path))
    except Exception:  # noqa: BLE001 - the ledger may not exist yet
        return []


@pytest.mark.slow
def test_two_controllers_on_a_fresh_ledger(make_sweep, workdir):
    """Started at the same moment on a ledger that does not exist yet: one certifies, the other
    gets the one-line refusal (never a database traceback). The runs wait until one controller
    has exited: the other cannot have finished the sweep (and let go of it) before its contender
    started, however slowly, on a loaded machine, that one started."""
    for attempt in range(2):
        path = make_sweep(name=f"race{attempt}", executor={"kind": "local", "max_parallel": 3, "poll_s": 0.1},
                          objective="tests.search.objectives:gated",
                          grid={"lr": [0.001, 0.003], "wd": [0.8], "epochs": [8]},
                          start={"lr": 0.003, "wd": 0.8, "epochs": 8})
        both = [controller(path), controller(path)]
        try:
            wait_for(lambda both=both: any(p.poll() is not None for p in both), what="one controller to exit")
            let_go(workdir)
            outputs = [p.communicate(timeout=300) for p in both]
            results = [(p.returncode, *output) for p, output in zip(both, outputs, strict=True)]
        finally:
            let_go(workdir)
            for p in both:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        (workdir / "markers" / "go").unlink()  # the next attempt's runs wait again
        codes = sorted(code for code, _, _ in results)
        assert codes == [2, CertifyExit.CERTIFIED_ON_BOUND], results  # one certifies (on the lr bound), one is refused
        [(_, _, err)] = [r for r in results if r[0] == 2]
        assert "held by another controller" in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and "sqlalchemy" not in err.lower()


def test_a_lock_whose_holder_field_is_empty_is_not_taken_while_its_creator_lives(make_sweep, monkeypatch):
    import optuna

    from search import ledger as ledger_module
    from search.ledger import LOCK_HOLDER, ControllerBusy, Ledger, process_start
    from search.sweep import load_sweep

    monkeypatch.setattr(ledger_module, "EMPTY_HOLDER_WAIT_S", 0.5)
    sweep = load_sweep(make_sweep())
    ledger = Ledger(sweep.ledger_url, sweep.name)
    creator = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the creator made the lock study and announced itself, but has not named itself in the lock yet
        direction = [optuna.study.StudyDirection.MINIMIZE]
        ledger.storage.create_new_study(direction, ledger._lock_name)
        announced = ledger.storage.create_new_study(direction, f"{ledger._lock_name}#creator-token")
        ledger.storage.set_study_user_attr(announced, LOCK_HOLDER, {
            "host": os.uname().nodename, "pid": creator.pid, "since": "now", "heartbeat": time.time(),
            "token": "creator-token", "started": process_start(creator.pid)})
        with pytest.raises(ControllerBusy, match=f"pid {creator.pid}"):
            Ledger(sweep.ledger_url, sweep.name)._acquire()
    finally:
        creator.kill()
        creator.wait()
    # its creator died between the two writes: taken over, and its announcement cleaned up
    with Ledger(sweep.ledger_url, sweep.name).controller_lock() as other:
        assert other.holder()["pid"] == os.getpid()
        names = [s.study_name for s in other.storage.get_all_studies()]
        assert not any(name.startswith(f"{other._lock_name}#") for name in names)


@pytest.mark.parametrize("strategy", ["certify", "grid"])
def test_a_grid_changed_so_the_recorded_start_is_off_it_resumes_from_the_nearest_point(make_sweep, capsys, strategy):
    """The ledger records each certification's start when it is created (a warm start's when its
    source certifies) and a resumed search starts from it. Replacing the grid's values so that the
    recorded start is no grid value any more (epochs 4 of [2, 4, 8] -> [2, 6, 16], the sweep's start
    moved with it) made ``status``, ``plan`` and ``certify`` end in a traceback (``ValueError:
    epochs: 4 is not a grid value``): the recorded start now snaps onto the grid as a warm start does."""
    small = {"grid": {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8], "epochs": [2, 4, 8]},
             "start": {"lr": 0.003, "wd": 0.8, "epochs": 4},
             "certifications": [{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                {"name": "b", "fixed": {"method": "simple", "g": 8}, "warm_start": "a"}]}
    path = make_sweep(**small)
    assert main(["search", "certify", str(path), "--no-progress", "--strategy", strategy]) in (0, 3)
    path = make_sweep(**{**small, "grid": {**small["grid"], "epochs": [2, 6, 16]},
                         "start": {**small["start"], "epochs": 6}})
    capsys.readouterr()
    assert main(["search", "status", str(path), "--strategy", strategy]) == 0
    assert main(["search", "plan", str(path)]) == 0
    assert main(["search", "certify", str(path), "--no-progress", "--strategy", strategy]) in (0, 3)
    assert main(["search", "status", str(path), "--json", "--strategy", strategy]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index('{\n'):])
    assert [c["state"].split(":")[0] for c in report["certifications"]] == ["certified"] * 2
