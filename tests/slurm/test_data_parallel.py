"""A data-parallel run on the real cluster: one job of 2 tasks (gloo, CPU), the sweep's own
`search.objective.RunTask` through `megadocs.executors.SlurmExecutor` with `tasks_per_node: 2`;
and such a job whose rank 1 raises while rank 0 waits for it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.slurm.conftest import LOCAL_PROFILE, final_history, wait_jobs

pytestmark = pytest.mark.slurm


def _train_config(store: Path) -> dict:
    return {
        "data": {"store": str(store), "real_epochs": 1, "context": 64},
        "model": {"preset": "tiny-1m"},
        "optim": {"batch_size": 16, "micro_batch_size": 4},
        "eval": {"val_windows": 32},
        "device": "cpu",
        "compile": "off",
    }


@pytest.mark.parametrize("parallelism", ["auto", pytest.param("fsdp", marks=pytest.mark.slow)])  # auto: DDP here
def test_two_task_job_trains_one_run_like_one_process(slurm_cluster, small_store, tmp_path, parallelism):
    from megadocs.executors import JobState, SlurmExecutor, load_profile
    from megadocs.formats import RunDir
    from search.objective import RunTask
    from train.config import RunConfig
    from train.loop import run

    config = {**_train_config(small_store), "parallelism": parallelism}  # execution only: the same identity
    profile = load_profile(LOCAL_PROFILE).model_copy(update={"tasks_per_node": 2})
    executor = SlurmExecutor(tmp_path / "jobs", profile, max_parallel=1)
    run_dir = tmp_path / "two-tasks"
    [job_id] = executor.submit([RunTask(str(run_dir), {"lr": "default"}, train_config=config)])
    reference = run(RunConfig.model_validate(config), tmp_path / "one-process")  # overlaps the job

    [poll] = wait_jobs(executor, [job_id], timeout_s=300)
    assert poll.state is JobState.DONE, poll.reason
    metrics = RunDir(run_dir).read_metrics()
    assert metrics.steps == reference.steps and metrics.tokens_seen == reference.tokens_seen
    assert math.isclose(metrics.val_loss, reference.val_loss, rel_tol=1e-5), (metrics, reference)
    job = json.loads(RunDir(run_dir).job.read_text())  # written once, by rank 0
    assert job["job_id"] == job_id and job["params"] == {"lr": "default"}
    outputs = sorted(path.name for path in (tmp_path / "jobs").glob(f"{job_id}_*_result.pkl"))
    assert len(outputs) == 2, outputs  # both tasks ran and returned
    chosen = "ddp" if parallelism == "auto" else parallelism
    logs = "".join(path.read_text() for path in (tmp_path / "jobs").glob(f"{job_id}_0_log.err"))
    assert f"parallelism: {parallelism} -> {chosen} on 2 processes" in logs, logs[-2000:]


def test_a_rank_that_raises_ends_its_job_at_once_and_the_failure_names_it(slurm_cluster, tmp_path):
    """srun --kill-on-bad-exit ends the job when rank 1 exits with its error, instead of waiting for
    rank 0's wait (SIGTERM, then SIGKILL after KillWait: rank 0 ignores the SIGTERM, as a training
    rank stuck in a collective does); the failure is rank 1's error, not rank 0's lack of a result."""
    from megadocs.executors import MULTI_TASK_SRUN_ARGS, JobState, SlurmExecutor, load_profile
    from tests.slurm import jobs

    profile = load_profile(LOCAL_PROFILE).model_copy(update={"tasks_per_node": 2})
    executor = SlurmExecutor(tmp_path / "jobs", profile, max_parallel=1)
    wait_s = 3600  # what rank 0 would wait for its dead peer (NCCL's timeout is 10 minutes)
    [job_id] = executor.submit([lambda: jobs.fail_on_rank_one(wait_s)])

    [poll] = wait_jobs(executor, [job_id], timeout_s=300)  # KillWait (30 s; 10 s in CI) + scheduling
    assert poll.state is JobState.FAILED, poll
    stderr = tmp_path / "jobs" / f"{job_id}_1_log.err"
    assert poll.reason == f"rank 1 of 2: ValueError: rank 1 broke while building its model (log: {stderr})", poll
    assert final_history(job_id) == ["FAILED"]  # not requeued
    srun = [line for line in (tmp_path / "jobs" / f"{job_id}_submission.sh").read_text().splitlines()
            if line.startswith("srun ")]
    assert len(srun) == 1 and all(arg in srun[0].split() for arg in MULTI_TASK_SRUN_ARGS), srun


def test_a_user_error_one_rank_meets_alone_ends_the_sweep_job_with_its_refusal(slurm_cluster, small_store, tmp_path):
    """The sweep's RunTask on 2 tasks: a UserError rank 1 meets alone, after the ranks agreed, is
    not an `invalid` result with exit 0 (which would leave rank 0 in its next collective): rank 1
    returns its refusal and exits non-zero, srun --kill-on-bad-exit ends the job, and the job's
    failure carries the refusal naming rank 1 (the controller's one line, not a retry; before, a
    failed job retried `max_retries` times)."""
    from megadocs.executors import JobState, SlurmExecutor, load_profile
    from search.objective import FailureKind, JobFailure
    from tests.slurm import jobs

    profile = load_profile(LOCAL_PROFILE).model_copy(update={"tasks_per_node": 2})
    executor = SlurmExecutor(tmp_path / "jobs", profile, max_parallel=1)
    config = _train_config(small_store)
    run_dir = str(tmp_path / "two-tasks")
    [job_id] = executor.submit([lambda: jobs.sweep_run_failing_on_rank_one(run_dir, config)])

    [poll] = wait_jobs(executor, [job_id], timeout_s=300)
    assert poll.state is JobState.FAILED, poll
    assert poll.value == JobFailure(FailureKind.INVALID, "rank 1 of 2: MOCK: rank 1's own fault as it prepares RUN"), poll
    stderr = (tmp_path / "jobs" / f"{job_id}_1_log.err").read_text()
    assert "UserError: MOCK: rank 1's own fault as it prepares RUN" in stderr, stderr[-2000:]
    assert final_history(job_id) == ["FAILED"]  # not requeued
