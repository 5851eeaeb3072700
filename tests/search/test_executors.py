"""The executor adapters: local jobs re-attached from another process's view, in-process failures,
and the sbatch script a SLURM profile produces (no cluster needed for that one)."""

from __future__ import annotations

import time

import yaml

from megadocs.executors import InProcessExecutor, JobState, LocalExecutor, SlurmExecutor, load_profile
from search.objective import RunTask


def test_local_jobs_are_reattached_by_id(workdir, monkeypatch):
    monkeypatch.setenv("SEARCH_TEST_SLEEP", "1")
    first = LocalExecutor(workdir / "jobs", timeout_min=5)
    [job_id] = first.submit([RunTask(str(workdir / "run"), {"lr": 0.003, "wd": 0.8},
                                     objective="tests.search.objectives:logged")])
    other = LocalExecutor(workdir / "jobs", timeout_min=5)  # a restarted controller knows only the id
    assert other.poll(job_id).state is JobState.RUNNING
    deadline = time.time() + 120
    while (poll := other.poll(job_id)).state is JobState.RUNNING and time.time() < deadline:
        time.sleep(0.2)
    assert poll.state is JobState.DONE and poll.value.status == "completed"
    assert (workdir / "run" / "metrics.json").is_file()


def test_a_second_submission_of_a_finished_run_reads_its_result(workdir):
    task = RunTask(str(workdir / "run"), {"lr": 0.003}, objective="tests.search.objectives:logged")
    first, second = task(), task()
    assert first == second
    assert len((workdir / "calls.jsonl").read_text().splitlines()) == 1


def test_in_process_failures_and_unknown_jobs():
    executor = InProcessExecutor()
    [ok, bad] = executor.submit([lambda: 1.5, lambda: 1 / 0])
    assert executor.poll(ok).value == 1.5
    assert executor.poll(bad).state is JobState.FAILED and "ZeroDivisionError" in executor.poll(bad).reason
    assert InProcessExecutor().poll(ok).state is JobState.LOST


def test_slurm_profile_becomes_sbatch_options_without_a_cluster(workdir):
    profile_path = workdir / "gpu.yaml"
    profile_path.write_text(yaml.safe_dump({
        "partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64, "time_min": 240,
        "account": "lab", "qos": "high", "constraint": None, "additional_parameters": {"requeue": True},
        "setup": ["source .venv/bin/activate"], "max_requeues": 5, "array_parallelism": 16,
    }))
    executor = SlurmExecutor(workdir / "jobs", load_profile(profile_path), max_parallel=4, name="megadocs-t")
    slurm = executor._executor._executor  # submitit's SlurmExecutor inside the AutoExecutor
    script = slurm._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB", "--time=240",
                 "--account=lab", "--qos=high", "--requeue", "--job-name=megadocs-t", "--signal=USR2"):
        assert f"#SBATCH {line}" in script
    assert "source .venv/bin/activate" in script
    assert slurm.parameters["array_parallelism"] == 4 and slurm.max_num_timeout == 5


def test_shipped_profiles_load():
    from .conftest import REPO

    profiles = sorted((REPO / "slurm/profiles").glob("*.yaml"))
    assert profiles
    for path in profiles:
        assert load_profile(path).time_min >= 1
