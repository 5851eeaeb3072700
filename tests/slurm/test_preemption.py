"""Preemption and time limits on the real cluster, with real training runs (tiny preset).

The jobs are the sweep's own: `search.objective.RunTask` (a submitit Checkpointable) running
`train.loop.run`, submitted as job arrays through `megadocs.executors.SlurmExecutor` and the local
profile.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.slurm.conftest import LOCAL_PROFILE, final_history, sacct_history, slurm_state, wait_for, wait_jobs

pytestmark = pytest.mark.slurm


def _train_config(store: Path, *, epochs: int) -> dict:
    """A tiny run: ~40 steps per epoch, a checkpoint every 5 steps, a short evaluation."""
    return {
        "data": {"store": str(store), "real_epochs": epochs, "context": 128},
        "model": {"preset": "tiny-1m"},
        "optim": {"batch_size": 16, "micro_batch_size": 16},
        "eval": {"val_windows": 16},
        "checkpoint_every": 5,
        "device": "cpu",
        "compile": "off",
    }


def _executor(folder: Path, **profile_changes):
    from megadocs.executors import SlurmExecutor, load_profile

    profile = load_profile(LOCAL_PROFILE).model_copy(update=profile_changes)
    return SlurmExecutor(folder, profile, max_parallel=4)


def _log_lines(run_dir: Path) -> list[str]:
    path = run_dir / "log.jsonl"
    return path.read_text().splitlines() if path.is_file() else []


@pytest.mark.usefixtures("time_limited_run")  # started first: its waits overlap this test
def test_scontrol_requeue_mid_run_resumes_and_matches_an_uninterrupted_run(slurm_cluster, small_store, tmp_path):
    from megadocs.executors import JobState
    from search.objective import RunTask

    config = _train_config(small_store, epochs=2)
    requeued, reference = tmp_path / "requeued", tmp_path / "uninterrupted"
    executor = _executor(tmp_path / "jobs")
    job_ids = executor.submit([RunTask(str(requeued), {}, train_config=config),
                               RunTask(str(reference), {}, train_config=config)])

    # mid-run: a checkpoint and a logged step exist, training is still going
    wait_for(lambda: (requeued / "checkpoint").is_dir() and _log_lines(requeued), 180, "the first checkpoint")
    logged_before = _log_lines(requeued)
    assert not (requeued / "metrics.json").exists()
    assert slurm_state(job_ids[0]) == "RUNNING"
    subprocess.run(["scontrol", "requeue", job_ids[0]], check=True)

    polls = wait_jobs(executor, job_ids, timeout_s=240)

    assert [p.state for p in polls] == [JobState.DONE, JobState.DONE], [p.reason for p in polls]
    history = final_history(job_ids[0])
    assert history == ["REQUEUED", "COMPLETED"], history  # SLURM ran the same job id twice
    # it resumed from its checkpoint: the steps logged before the requeue (with their timings)
    # are still the head of the log; a restart from step 0 would have rewritten them
    assert _log_lines(requeued)[: len(logged_before)] == logged_before
    interrupted, uninterrupted = polls[0].value, polls[1].value
    for key in ("val_loss", "val_losses", "steps", "tokens_seen", "config_hash"):
        assert getattr(interrupted, key) == getattr(uninterrupted, key), key
    assert json.loads((requeued / "metrics.json").read_text())["val_loss"] == uninterrupted.val_loss


@pytest.fixture(scope="module")
def time_limited_run(slurm_cluster, small_store, tmp_path_factory):
    """A run far longer than its time limit, submitted before the other tests of this module so
    that its minutes of waiting for SLURM's time limits overlap theirs.

    SLURM checks time limits every 30 s and sends the `--signal` at the first check past
    limit - delay - 30 s: with time_min=1 and USR2@5 each attempt is told it is out of time 25-55 s
    in, a check before it would be killed. A watcher thread snapshots the run's log at the first
    requeue (what the first attempt trained)."""
    from search.objective import RunTask

    tmp = tmp_path_factory.mktemp("time-limit")
    run_dir = tmp / "run"
    executor = _executor(tmp / "jobs", time_min=1, max_requeues=1, additional_parameters={"signal": "USR2@5"})
    [job_id] = executor.submit([RunTask(str(run_dir), {}, train_config=_train_config(small_store, epochs=200))])
    first_attempt: dict[str, list[str]] = {}

    def watch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if "REQUEUED" in [state for _, state in sacct_history(job_id)]:
                first_attempt["log"] = _log_lines(run_dir)
                return
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield executor, job_id, run_dir, watcher, first_attempt
    subprocess.run(["scancel", job_id], capture_output=True)


def test_time_limit_requeues_up_to_max_requeues_then_fails_with_the_reason(time_limited_run):
    from megadocs.executors import JobState

    executor, job_id, run_dir, watcher, first_attempt = time_limited_run
    [poll] = wait_jobs(executor, [job_id], timeout_s=300)
    watcher.join()

    assert poll.state is JobState.FAILED, poll
    assert "timed-out too many times" in poll.reason
    assert final_history(job_id) == ["REQUEUED", "FAILED"]  # one requeue (max_requeues=1), then the end
    # the first attempt trained and checkpointed at the signal; the second resumed from there
    assert first_attempt.get("log"), "the first attempt saved no progress before its time ran out"
    final_log = _log_lines(run_dir)
    assert final_log[: len(first_attempt["log"])] == first_attempt["log"]
    assert len(final_log) > len(first_attempt["log"])
    assert (run_dir / "checkpoint").is_dir() and not (run_dir / "metrics.json").exists()
