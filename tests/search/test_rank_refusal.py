"""A run that one rank of a data-parallel job refuses (a UserError of that rank alone) reaches the
controller as a refusal: its one line, the trial failed `invalid`, never retried; a real fault of
such a rank (any other exception) is still a failed job that is retried."""

from __future__ import annotations

import yaml

from megadocs.cli import main
from megadocs.exits import Exit
from megadocs.formats import FailureKind
from search.ledger import read_runs
from search.sweep import load_sweep

POINT = {"lr": 0.003, "wd": 0.1, "epochs": 1}


def test_a_run_one_rank_refuses_is_not_retried_and_its_line_is_reported(tiny_store, workdir, monkeypatch, capsys):
    """Rank 1 of a job of 2 finds no rendezvous to join (no MASTER_ADDR, and a job that is no SLURM
    job of 2 tasks to derive it from): a UserError it meets alone, which no other rank can be told.
    Before, it ended the job as a failure, which the controller retried (`max_retries`) and then
    recorded as a failed run without its kind, the refusal's line buried in a traceback; now it is
    the sweep's one-line refusal after one attempt."""
    # MOCK: rank 1 of 2 (as torchrun or SLURM say it) in the one process the local executor starts
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    sweep = {
        "name": "refused",
        "executor": {"kind": "local", "max_parallel": 1, "poll_s": 0.2, "max_retries": 1},
        "train": {"data": {"store": str(tiny_store), "context": 64}, "model": {"preset": "tiny-1m"},
                  "optim": {"batch_size": 16, "micro_batch_size": 16}, "device": "cpu"},
        "grid": {axis: [value] for axis, value in POINT.items()},
        "start": POINT,
        "certifications": [{"name": "real", "fixed": {"method": "real"}}],
    }
    path = workdir / "refused.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))

    assert main(["search", "certify", str(path), "--no-progress"]) == Exit.BAD_INPUT
    err = capsys.readouterr().err.strip()
    [run] = read_runs(load_sweep(path))
    assert run.status == "failed" and run.failure is FailureKind.INVALID and run.attempts == 1, run
    assert run.reason.startswith("rank 1 of 2: distributed run: no MASTER_ADDR/MASTER_PORT"), run.reason
    assert len(err.splitlines()) == 1 and run.reason in err and run.to_rerun, err


def test_a_job_whose_launcher_variables_are_no_world_is_a_refusal_not_a_crash(workdir, monkeypatch):
    """RANK 2 of a WORLD_SIZE of 2 (an environment written by hand): the job's result is its one-line
    refusal naming both variables (the trial `invalid`, not retried). Before, the handler that turns
    a UserError into that result read the same variables again and raised out of it: a crashed job,
    retried `max_retries` times."""
    from search.objective import RunTask

    # MOCK: a launcher's variables that name no rank of its world, in this test's own process
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = RunTask(str(workdir / "run"), POINT, objective="tests.search.objectives:job_process")()
    assert result.kind is FailureKind.INVALID, result
    assert "RANK is 2 but WORLD_SIZE is 2" in result.reason, result.reason
