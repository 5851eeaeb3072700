"""A data-parallel run on the real cluster: one job of 2 tasks (gloo, CPU), the sweep's own
`search.objective.RunTask` through `megadocs.executors.SlurmExecutor` with `tasks_per_node: 2`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.slurm.conftest import LOCAL_PROFILE, wait_jobs

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
