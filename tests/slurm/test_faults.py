"""Cluster faults the sweep rehearsal (benchmarks/rehearsal.py) found, pinned on the real cluster."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
    from tests.slurm.jobs import sleep_for, wait_for_file

    monkeypatch.setattr(executors, "QUEUE_CHECK_S", 2.0)  # the queue is asked every 30 s in a sweep
    monkeypatch.setattr(executors, "LOST_GRACE_S", 1.0)
    executor = SlurmExecutor(tmp_path / "jobs", load_profile(LOCAL_PROFILE), max_parallel=1)  # array %1
    # task 1 is cancelled inside the queued range 1-2; task 2 then runs, and the range's record goes.
    # Task 0 runs until the test lets it end: task 1 is surely still queued when it is cancelled
    # (a task 0 of fixed length could end first on a loaded machine, and task 1 be cancelled running)
    go = tmp_path / "go"
    jobs = executor.submit([lambda: wait_for_file(str(go)), lambda: sleep_for(1), lambda: sleep_for(1)])
    first, cancelled, last = jobs
    try:
        wait_for(lambda: slurm_state(first) == "RUNNING", 120, f"{first} to run")
        assert executor.poll(cancelled).state is JobState.RUNNING  # queued: accounting says PENDING
        subprocess.run(["scancel", cancelled], check=True)
        go.touch()
        wait_for(lambda: executor.poll(last).state is JobState.DONE, 90, f"{last} to run after the cancelled one")
        poll = wait_for(lambda: (p := executor.poll(cancelled)).state is not JobState.RUNNING and p, 120,
                        f"the cancelled {cancelled} to be reported")
        assert poll.state is JobState.LOST, poll
        assert executor.poll(first).state is JobState.DONE
    finally:
        subprocess.run(["scancel", *jobs], capture_output=True)



def test_a_cancelled_job_that_raised_names_slurm_state_before_its_error(slurm_cluster, tmp_path):
    """`scancel` of a `gen --executor slurm` task mid-shard reached vLLM's engine process too; the
    shard raised EngineDeadError and the submitter's one line said only that, as if vLLM were
    broken. A job SLURM ended says so first (its state, who cancelled), then the job's error."""
    from megadocs.executors import JobState, SlurmExecutor, load_profile
    from tests.slurm.jobs import wait_on_child

    executor = SlurmExecutor(tmp_path / "jobs", load_profile(LOCAL_PROFILE), max_parallel=1)
    seconds = 100 + os.getpid() % 1000 / 1000  # names this test's child among the node's processes
    [job] = executor.submit([lambda: wait_on_child(seconds)])
    try:  # cancelled while its child runs (before, submitit would shrug off the SIGTERM: no exception)
        wait_for(lambda: subprocess.run(["pgrep", "-f", f"^sleep {seconds}$"], capture_output=True).returncode == 0,
                 120, f"{job}'s child to run")
        subprocess.run(["scancel", job], check=True)
        poll = wait_for(lambda: (p := executor.poll(job)).state is not JobState.RUNNING and p, 180,
                        f"the cancelled {job} to be reported")
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    assert poll.state is JobState.FAILED, poll
    assert poll.reason.startswith("SLURM ended it (CANCELLED"), poll.reason
    assert "CalledProcessError" in poll.reason, poll.reason

def test_ctrl_c_of_a_shard_job_array_cancels_its_slurm_tasks(slurm_cluster, tmp_path):
    """`gen` and `tokenize-pool` wait on one job array of shard tasks (``run_job_array``). Ctrl-C
    used to stop only the submitter: the tasks ran on, and the re-run, which resumes every
    unfinished shard, started a second job writing the same shard. Now the tasks still queued or
    running are cancelled, named in the one line."""
    import signal
    import sys
    import textwrap

    folder, repo = tmp_path / "jobs", Path(__file__).resolve().parents[2]
    script = tmp_path / "submit.py"
    script.write_text(textwrap.dedent(f"""
        import functools, sys
        from pathlib import Path
        sys.path.insert(0, {str(repo)!r})
        import cloudpickle
        import tests.slurm.jobs as jobs
        cloudpickle.register_pickle_by_value(jobs)  # test helpers are not installed on the nodes' path
        from megadocs.job_arrays import run_job_array
        try:
            run_job_array([functools.partial(jobs.sleep_for, 600)] * 3, ["shard 0", "shard 1", "shard 2"],
                          kind="slurm", profile={str(LOCAL_PROFILE)!r}, folder=Path({str(folder)!r}))
        except KeyboardInterrupt as exc:
            print(f"interrupted: {{exc}}", file=sys.stderr)
            sys.exit(130)
    """))
    submitter = subprocess.Popen([sys.executable, str(script)], cwd=repo, stderr=subprocess.PIPE, text=True)
    first = ""
    while not first.startswith("submitted"):  # "submitted 3 shard task(s) to slurm: A_0, A_1, A_2 (logs: ...)"
        first = submitter.stderr.readline()
        assert first, "the submitter ended before submitting"
    job_ids = first.split(": ", 1)[1].split(" (logs")[0].split(", ")
    try:
        wait_for(lambda: slurm_state(job_ids[0]) == "RUNNING", 120, f"{job_ids[0]} to run")
        submitter.send_signal(signal.SIGINT)
        assert submitter.wait(timeout=180) == 130
        message = submitter.stderr.read()
        assert f"cancelled 3 slurm task(s) ({', '.join(job_ids)})" in message, first + message
        wait_for(lambda: all(slurm_state(job_id) in ("CANCELLED", "UNKNOWN") for job_id in job_ids), 180,
                 "every task of the array to be cancelled")
    finally:
        subprocess.run(["scancel", job_ids[0].split("_")[0]], check=False)
        submitter.kill()
