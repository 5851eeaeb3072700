"""Cluster faults the sweep rehearsal (benchmarks/rehearsal.py) found, pinned on the real cluster."""

from __future__ import annotations

import subprocess

import pytest

from tests.slurm.conftest import LOCAL_PROFILE, slurm_state, wait_for

pytestmark = pytest.mark.slurm


def test_a_queued_array_task_cancelled_before_it_ran_is_lost_not_running_for_ever(slurm_cluster, tmp_path,
                                                                                 monkeypatch):
    """scancel on a queued array task leaves no accounting record of its own, so submitit kept
    reporting its last state (PENDING) for ever and the sweep waited on it for ever. The
    executor now asks the queue itself about a job accounting calls queued or unknown."""
    from megadocs import executors
    from megadocs.executors import JobState, SlurmExecutor, load_profile
    from tests.slurm.jobs import sleep_for

    monkeypatch.setattr(executors, "QUEUE_CHECK_S", 2.0)  # the queue is asked every 30 s in a sweep
    monkeypatch.setattr(executors, "LOST_GRACE_S", 1.0)
    executor = SlurmExecutor(tmp_path / "jobs", load_profile(LOCAL_PROFILE), max_parallel=1)  # array %1
    # task 1 is cancelled inside the queued range 1-2; task 2 then runs, and the range's record goes
    jobs = executor.submit([lambda: sleep_for(8), lambda: sleep_for(1), lambda: sleep_for(1)])
    first, cancelled, last = jobs
    try:
        wait_for(lambda: slurm_state(first) == "RUNNING", 60, f"{first} to run")
        assert executor.poll(cancelled).state is JobState.RUNNING  # queued: accounting says PENDING
        subprocess.run(["scancel", cancelled], check=True)
        wait_for(lambda: executor.poll(last).state is JobState.DONE, 90, f"{last} to run after the cancelled one")
        poll = wait_for(lambda: (p := executor.poll(cancelled)).state is not JobState.RUNNING and p, 30,
                        f"the cancelled {cancelled} to be reported")
        assert poll.state is JobState.LOST, poll
        assert executor.poll(first).state is JobState.DONE
    finally:
        subprocess.run(["scancel", *jobs], capture_output=True)
