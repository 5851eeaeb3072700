"""Shared state that runs no stranger's code and loses no work (issue 14): result pickles named by
the ledger are read only inside the sweep's folder, read-only commands never create a ledger,
status asks the executor before calling a job running, and files that are not UTF-8 are one line."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megadocs.cli import main
from search.ledger import Ledger, read_runs
from search.objective import make_objective
from search.params import RunParams
from search.sweep import load_sweep

from .conftest import READ_ONLY_COMMANDS, calls


class _WritesMarker:
    """Unpickling this creates a file: the stand-in for an attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _ledger_with_running_trial(path: Path, job_id: str, job_folder: Path) -> None:
    """What a writer of a shared ledger can do: a RUNNING trial whose job folder it chose."""
    from search.controller import build_strategies
    from search.ledger import ATTR_ATTEMPTS, ATTR_JOB_FOLDER, ATTR_JOB_ID, study_name

    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    build_strategies(sweep, ledger)
    start = sweep.start_for(sweep.certifications[0])
    params = RunParams(point=start, fixed=sweep.certifications[0].fixed)
    run_id = make_objective(sweep).identity(params.merged())  # today's: the trial is re-attached, not superseded
    trial = ledger.new_run(study_name(sweep.name, "a"), params=params,
                           run_id=run_id, run_dir=str(sweep.out_dir / "runs" / run_id),
                           grid=sweep.grid_for(sweep.certifications[0]).as_mapping())
    ledger.update(trial, **{ATTR_JOB_ID: job_id, ATTR_JOB_FOLDER: str(job_folder), ATTR_ATTEMPTS: 1})


@pytest.mark.parametrize("where", ["folder-outside", "symlink-inside"])
def test_result_pickle_outside_the_sweep_is_refused_and_not_executed(make_sweep, workdir, capsys, where):
    from submitit.local.local import LocalJob

    path = make_sweep(executor={"kind": "local", "max_parallel": 1, "poll_s": 0.05})
    sweep = load_sweep(path)
    marker = workdir / "controller-ran-foreign-code"
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    job_id = "4242"
    crafted = LocalJob(elsewhere, job_id).paths.result_pickle
    crafted.write_bytes(pickle.dumps(("success", _WritesMarker(marker))))
    if where == "folder-outside":
        folder = elsewhere
    else:  # the folder is the sweep's own, its result file a symlink to the crafted one
        folder = sweep.out_dir / "jobs"
        folder.mkdir(parents=True)
        LocalJob(folder, job_id).paths.result_pickle.symlink_to(crafted)
    _ledger_with_running_trial(path, job_id, folder)
    capsys.readouterr()  # only what certify prints counts

    assert main(["search", "certify", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "refused" in err and f"job {job_id}" in err and "outside" in err, err
    assert not marker.exists()
    assert not calls(workdir)  # nothing ran either


def test_run_dir_outside_the_sweep_is_refused(make_sweep, workdir, capsys):
    """A crafted run_dir would make jobs write (and the controller read) elsewhere."""
    from search.controller import build_strategies
    from search.ledger import study_name

    path = make_sweep(executor={"kind": "local", "max_parallel": 1, "poll_s": 0.05})
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    build_strategies(sweep, ledger)
    params = RunParams(point=sweep.start_for(sweep.certifications[0]), fixed=sweep.certifications[0].fixed)
    ledger.new_run(study_name(sweep.name, "a"), params=params, run_id=make_objective(sweep).identity(params.merged()),
                   run_dir=str(workdir / "victim"), grid=None)
    capsys.readouterr()
    assert main(["search", "certify", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "run_dir in the ledger" in err and "outside" in err and not (workdir / "victim").exists()


def test_status_of_a_local_job_ends_without_a_shutdown_traceback(make_sweep, workdir):
    """status re-attaches the local job the ledger calls running to ask whether it runs; submitit's
    LocalJob.__del__ then ran at interpreter exit and printed 'Exception ignored in ... TypeError'."""
    path = make_sweep(executor={"kind": "local", "max_parallel": 1, "poll_s": 0.05})
    folder = load_sweep(path).out_dir / "jobs"
    folder.mkdir(parents=True)
    _ledger_with_running_trial(path, "4242", folder)
    for json_flag in ([], ["--json"]):
        status = subprocess.run([sys.executable, "-m", "megadocs.cli", "search", "status", str(path), *json_flag],
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and status.stderr == "", status.stderr


@pytest.mark.parametrize("controller_live", [True, False], ids=["controller-live", "controller-gone"])
def test_status_calls_a_live_controllers_unsubmitted_run_queued_not_stopped(make_sweep, workdir, capsys,
                                                                            controller_live):
    """A controller writes a run's trial before a slot frees for its job: while it holds the sweep,
    such a run is queued (status used to call it stopped and tell the user to run certify again,
    which the lock refuses); with no live controller it is stopped, as before."""
    from contextlib import nullcontext

    from search.controller import build_strategies
    from search.ledger import study_name

    path = make_sweep(executor={"kind": "local", "max_parallel": 1, "poll_s": 0.05})
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    build_strategies(sweep, ledger)
    cert = sweep.certifications[0]
    ledger.new_run(study_name(sweep.name, cert.name), params=RunParams(point=sweep.start_for(cert), fixed=cert.fixed),
                   run_id="queued", run_dir=str(sweep.out_dir / "runs" / "queued"),
                   grid=sweep.grid_for(cert).as_mapping())
    with ledger.controller_lock() if controller_live else nullcontext():  # this process: a live holder
        capsys.readouterr()
        assert main(["search", "status", str(path), "--json"]) == 0
        [summary] = json.loads(capsys.readouterr().out)["certifications"]
        assert main(["search", "status", str(path)]) == 0
        table = capsys.readouterr().out
    if controller_live:
        assert summary["runs"]["running"] == 1 and summary["runs"]["stopped"] == 0, summary["runs"]
        assert "queued, no job yet" in table and "stopped" not in table, table
    else:
        assert summary["runs"]["running"] == 0 and summary["runs"]["stopped"] == 1, summary["runs"]
        assert "stopped, no job (not submitted yet)" in table and "queued" not in table, table


@pytest.mark.parametrize("ledger", ["default", "sqlite", "journal"])
def test_read_only_commands_refuse_a_missing_ledger_and_create_nothing(make_sweep, workdir, capsys, ledger):
    typo = workdir / "typo"  # nothing exists under it
    overrides = {"out": str(typo / "out")}
    if ledger == "sqlite":
        overrides["ledger"] = f"sqlite:///{typo}/db/ledger.db"
    elif ledger == "journal":
        overrides["ledger"] = str(typo / "db" / "ledger.journal")
    path = make_sweep(**overrides)
    scratch = workdir / "scratch"
    scratch.mkdir()
    for command in READ_ONLY_COMMANDS:
        argv = [word.format(sweep=path, tmp=scratch) for word in command]
        assert main(argv) != 0, argv
        captured = capsys.readouterr()
        assert captured.out == "", argv
        err = captured.err.strip()
        assert "\n" not in err and "does not exist" in err and "nothing was created" in err, (argv, err)
        assert not typo.exists(), argv
    assert list(scratch.iterdir()) == []


def _damaged_sqlite(path: Path, damage: str) -> None:
    """A ledger file that is no SQLite database (``garbage``), or one cut short (``truncated``: its
    header says more pages than the file holds)."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    if damage == "garbage":
        path.write_bytes(bytes(range(256)) * 16)
        return
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    connection.close()
    path.write_bytes(path.read_bytes()[:4096 + 100])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_every_command_refuses_a_damaged_sqlite_ledger_in_one_line(make_sweep, workdir, capsys, damage):
    """A ledger.db that is not a database (a copy cut short, another file at its path): one line
    naming the ledger, exit 2, and the file left as it was, where status, plan and dashboard
    raised sqlite3.DatabaseError's traceback."""
    db = workdir / "db" / "ledger.db"
    _damaged_sqlite(db, damage)
    before = db.read_bytes()
    path = make_sweep(ledger=f"sqlite:///{db}")
    scratch = workdir / "scratch"
    scratch.mkdir()
    commands = [*READ_ONLY_COMMANDS, ["search", "plan", "{sweep}"], ["search", "certify", "{sweep}", "--no-progress"],
                ["search", "dashboard", "{sweep}", "--port", "1"]]
    for command in commands:
        argv = [word.format(sweep=path, tmp=scratch) for word in command]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("error: ledger: ") and str(db) in err, (argv, err)
        assert db.read_bytes() == before, argv


def test_read_only_commands_refuse_a_sweep_the_ledger_does_not_hold(make_sweep, workdir, capsys):
    """A shared ledger holding another sweep: a typo in name: is not an empty sweep."""
    ledger = f"sqlite:///{workdir}/shared.db"
    assert main(["search", "certify", str(make_sweep(name="real", ledger=ledger)), "--no-progress"]) == 0
    capsys.readouterr()
    typo = make_sweep(name="raal", ledger=ledger)
    assert main(["search", "status", str(typo)]) == 2
    assert "has no runs of sweep 'raal'" in capsys.readouterr().err
    assert main(["search", "status", str(make_sweep(name="real", ledger=ledger))]) == 0


def test_status_after_ctrl_c_of_certify_reports_dead_jobs_as_stopped(make_sweep, workdir, monkeypatch):
    """Ctrl-C reaches the controller and its local jobs (one process group): the controller stops
    the jobs and records them as stopped; status reports them so, and a job the ledger still
    calls running is checked by its pid instead of believed."""
    monkeypatch.setenv("SEARCH_TEST_SLEEP", "60")
    path = make_sweep(executor={"kind": "local", "max_parallel": 2, "poll_s": 0.1})
    controller = subprocess.Popen(
        [sys.executable, "-m", "megadocs.cli", "search", "certify", str(path), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            running = [r for r in _runs(path) if r.status == "running" and r.job_id]
            if len(running) == 2 and len(calls(workdir)) == 2:  # both jobs are inside the objective
                break
            assert controller.poll() is None, controller.communicate()
            assert time.time() < deadline, "no jobs in flight after 120 s"
            time.sleep(0.2)
        os.killpg(controller.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = controller.communicate(timeout=180)
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
            controller.wait()
    assert controller.returncode == 130, err
    pids = [int(r.job_id) for r in running]
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    for pid in pids:  # a job that outlived the interrupt: end it, as the user's second Ctrl-C would
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    assert {r.status.value for r in read_runs(load_sweep(path)) if r.run_id in {x.run_id for x in running}} == {"running"}

    status = subprocess.run([sys.executable, "-m", "megadocs.cli", "search", "status", str(path), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    [summary] = json.loads(status.stdout)["certifications"]
    assert summary["runs"]["running"] == 0 and summary["runs"]["stopped"] == 2, summary["runs"]
    table = subprocess.run([sys.executable, "-m", "megadocs.cli", "search", "status", str(path)],
                           capture_output=True, text=True, timeout=120)
    assert table.stdout.count(": stopped, no job (interrupted during attempt 1); `megadocs search certify` runs it "
                              "again") == 2, table.stdout
    assert "controller: running" not in table.stdout
    # a job the ledger still calls running (a controller killed otherwise) is asked for its pid
    from search.ledger import ATTR_JOB_ID, study_name

    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    [record, *_] = [r for r in ledger.runs(study_name(sweep.name, "a")) if r.status.value == "running"]
    ledger.update(record.trial_id, **{ATTR_JOB_ID: str(pids[0])})
    table = subprocess.run([sys.executable, "-m", "megadocs.cli", "search", "status", str(path)],
                           capture_output=True, text=True, timeout=120)
    assert table.stdout.count(": stopped (its job is gone") == 1, table.stdout


@pytest.mark.parametrize("kind", ["sweep", "profile", "train"])
def test_yaml_that_is_not_utf8_is_one_line_naming_file_and_byte(make_sweep, workdir, capsys, kind):
    latin1 = "name: t\n# r\xe9sum\xe9\n".encode("latin-1")
    if kind == "sweep":
        target = workdir / "sweep.yaml"
        target.write_bytes(latin1)
        argv = ["search", "status", str(target)]
    elif kind == "profile":
        target = workdir / "profile.yaml"
        target.write_bytes(b"partition: debug\n# caf\xe9\n")
        argv = ["search", "certify", str(make_sweep(executor={"kind": "slurm", "profile": str(target)})),
                "--no-progress"]
    else:
        target = workdir / "run.yaml"
        target.write_bytes(b"seed: 0\n# \xff\n")
        argv = ["train", str(target)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(target) in err and "not UTF-8" in err and "byte 0x" in err, err
    assert "line 2" in err


def _runs(path):
    try:
        return read_runs(load_sweep(path))
    except Exception:  # noqa: BLE001 - the ledger may not exist yet
        return []
