"""The executor adapters: local jobs re-attached from another process's view, in-process failures,
and the sbatch script a SLURM profile produces (no cluster needed for that one)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import yaml

from megadocs.errors import EveryRankError, UserError
from megadocs.executors import (
    MULTI_TASK_SRUN_ARGS,
    InProcessExecutor,
    JobState,
    LocalExecutor,
    Poll,
    SlurmExecutor,
    load_profile,
)
from megadocs.procs import threads_per_job
from search.objective import FailureKind, JobFailure, RunTask

from .conftest import REPO, let_go


def test_local_jobs_are_reattached_by_id(workdir):
    first = LocalExecutor(workdir / "jobs", timeout_min=5, max_parallel=1)
    [job_id] = first.submit([RunTask(str(workdir / "run"), {"lr": 0.003, "wd": 0.8},
                                     objective="tests.search.objectives:gated")])
    other = LocalExecutor(workdir / "jobs", timeout_min=5, max_parallel=1)  # a restarted controller knows only the id
    assert other.poll(job_id).state is JobState.RUNNING  # (it runs until let go, however slow this machine)
    let_go(workdir, "go")
    deadline = time.time() + 120
    while (poll := other.poll(job_id)).state is JobState.RUNNING and time.time() < deadline:
        time.sleep(0.2)
    assert poll.state is JobState.DONE and poll.value.status == "completed"
    assert (workdir / "run" / "metrics.json").is_file()


def _wait_done(executor, job_id, timeout=120.0):
    deadline = time.time() + timeout
    while (poll := executor.poll(job_id)).state is JobState.RUNNING and time.time() < deadline:
        time.sleep(0.1)
    return poll


def test_local_jobs_get_their_share_of_the_cores_and_leave_ctrl_c_to_the_controller(workdir, monkeypatch):
    """Threads per job = cores / max_parallel (issue 34: unset, two runs on two cores cost 3x the
    CPU); a job ignores the terminal's Ctrl-C, which the controller handles; a user's own
    OMP_NUM_THREADS wins."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    executor = LocalExecutor(workdir / "jobs", timeout_min=5, max_parallel=2)
    [job_id] = executor.submit([RunTask(str(workdir / "run"), {"lr": 0.003}, objective="tests.search.objectives:job_process")])
    assert "OMP_NUM_THREADS" not in os.environ  # only the job's environment has it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    metrics = _wait_done(executor, job_id).value
    assert metrics.extra["omp"] == str(threads_per_job(2)) and metrics.extra["sigint_ignored"] is True

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    executor = LocalExecutor(workdir / "jobs2", timeout_min=5, max_parallel=2)
    [job_id] = executor.submit([RunTask(str(workdir / "run2"), {"lr": 0.01}, objective="tests.search.objectives:job_process")])
    assert _wait_done(executor, job_id).value.extra["omp"] == "3"


def test_a_local_job_keeps_its_slot_until_its_process_exits(workdir):
    """A result on disk is not the end of the job: its process still holds a core until it exits,
    so the controller does not start the next run meanwhile (issue 34: 3 runs with a limit of 2)."""
    executor = LocalExecutor(workdir / "jobs", timeout_min=5, max_parallel=1)
    [job_id] = executor.submit([RunTask(str(workdir / "run"), {"lr": 0.003},
                                        objective="tests.search.objectives:lingers_at_exit")])
    job = executor._jobs[job_id]
    deadline = time.time() + 120
    while not job.paths.result_pickle.exists():
        assert time.time() < deadline
        time.sleep(0.05)
    assert executor.poll(job_id).state is JobState.RUNNING  # the result is there, the process is not done
    let_go(workdir, "exit")
    poll = _wait_done(executor, job_id)
    assert poll.state is JobState.DONE and job._process.poll() is not None


def test_local_jobs_each_get_a_gpu_no_running_job_holds_also_after_their_controller_is_gone(workdir, monkeypatch):
    """A local job saw no GPU at all (submitit starts each with CUDA_VISIBLE_DEVICES="" unless
    told GPUs): on a GPU machine a train run of ``device: auto`` ran on the CPU. Now each job sees
    one GPU of its own: two jobs, one submitted by a controller started after the first's was gone
    (it knows nothing of the first's job), see different GPUs while both run, a third finds none
    free (an OSError: the controller submits it at its next poll), and a GPU is free again once its
    job has ended. MOCK: CUDA_VISIBLE_DEVICES names two GPUs (one by index, one by UUID) that this
    CPU machine does not have, as a user's choice of GPUs on a GPU machine does."""
    from tests.search.objectives import gpus_seen

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,GPU-5e1c")
    try:
        first = LocalExecutor(workdir / "jobs", timeout_min=5, max_parallel=4)
        [one] = first.submit([gpus_seen])
        later = LocalExecutor(workdir / "jobs", timeout_min=5, max_parallel=4)  # a controller started after a kill
        [two] = later.submit([gpus_seen])
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,GPU-5e1c"  # only the jobs' environments changed
        with pytest.raises(OSError, match="0 of 2 GPU"):
            later.submit([gpus_seen])
    finally:
        let_go(workdir, "gpus")
    seen = [_wait_done(later, job_id).value for job_id in (one, two)]
    assert sorted(seen) == ["0", "GPU-5e1c"], seen  # old code: ['', '']
    assert (first.slots(4), first.slots(1)) == (2, 1)  # at most one job per GPU
    [three] = later.submit([gpus_seen])  # both ended: their GPUs are free again
    assert _wait_done(later, three).value in seen


def test_a_controller_runs_at_most_one_local_job_per_gpu_and_says_so_once(make_sweep, monkeypatch, caplog):
    """``executor.max_parallel: 4`` on a machine with 2 GPUs for local jobs: 2 slots, and one line
    saying why. MOCK: CUDA_VISIBLE_DEVICES names 2 GPUs this CPU machine does not have."""
    from megadocs.executors import make_executor
    from search.controller import LedgerEvaluator, build_strategies
    from search.ledger import Ledger
    from search.objective import make_objective
    from search.sweep import load_sweep

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    sweep = load_sweep(make_sweep(executor={"kind": "local", "max_parallel": 4}))
    ledger = Ledger(sweep.ledger_url, sweep.name)
    _, tasks = build_strategies(sweep, ledger, "certify", None)
    evaluator = LedgerEvaluator(sweep, ledger, make_executor(sweep.executor, sweep.out_dir / "jobs"),
                                make_objective(sweep), tasks)
    assert evaluator.free_slots() == 2
    [line] = [record.getMessage() for record in caplog.records if "max_parallel" in record.getMessage()]
    assert line.startswith("executor.max_parallel 4: local jobs run one per GPU") and "2 GPU(s) (0, 1;" in line, line


def test_a_second_submission_of_a_finished_run_reads_its_result(workdir):
    task = RunTask(str(workdir / "run"), {"lr": 0.003}, objective="tests.search.objectives:logged")
    first, second = task(), task()
    assert first == second
    assert len((workdir / "calls.jsonl").read_text().splitlines()) == 1


def test_a_job_without_a_loss_returns_a_typed_failure_and_old_status_dicts_still_read(workdir):
    """RunTask returns RunMetrics | JobFailure; results pickled by earlier code (status dicts) read
    as the same failures when a sweep is resumed across the upgrade."""
    minus_inf = RunTask(str(workdir / "a"), {"lr": 0.01}, objective="tests.search.objectives:minus_inf_corner")()
    text = RunTask(str(workdir / "b"), {"lr": 0.01}, objective="tests.search.objectives:returns_text")()
    assert isinstance(minus_inf, JobFailure) and minus_inf.kind is FailureKind.FAILED and "-inf" in minus_inf.reason
    assert isinstance(text, JobFailure) and text.kind is FailureKind.INVALID and "'0.5'" in text.reason
    assert JobFailure.of({"status": "failed", "reason": minus_inf.reason}) == minus_inf
    assert JobFailure.of({"status": "invalid", "error": text.reason}) == text
    assert JobFailure.of({"status": "completed", "val_loss": 2.0}) is None


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("error", [EveryRankError, UserError])
def test_a_user_error_of_one_rank_alone_ends_its_task_with_the_error(error, world, workdir, monkeypatch):
    """A UserError in a train job is an invalid result (exit 0), except one that a rank of several
    met on its own (not an EveryRankError: the ranks' agreement): raised, so that the task exits
    with it and srun/torchrun end the ranks waiting for it (tests/train/test_distributed.py)."""
    import train.loop

    def failing_run(config, out, stores=None, *, expected_identity=None):  # MOCK: where `run` raises
        raise error("eval.extra: a rank's line")

    monkeypatch.setattr(train.loop, "run", failing_run)
    monkeypatch.setenv("RANK", str(world - 1))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    task = RunTask(str(workdir / "run"), {"lr": 0.01}, train_config={"data": {"store": str(workdir / "store")}})
    if world > 1 and error is UserError:
        with pytest.raises(UserError, match="a rank's line"):
            task()
        return
    assert task() == JobFailure(FailureKind.INVALID, "eval.extra: a rank's line")


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
    # srun ends the job when a task fails only for a job of several tasks (one task: the step ends anyway)
    assert all(arg not in script for arg in MULTI_TASK_SRUN_ARGS)
    two_tasks = load_profile(profile_path).model_copy(update={"tasks_per_node": 2})
    slurm = SlurmExecutor(workdir / "jobs", two_tasks, max_parallel=4)._executor._executor
    [srun] = [line for line in slurm._make_submission_file_text("python -m x", "uid").splitlines() if line.startswith("srun ")]
    assert all(arg in srun.split() for arg in MULTI_TASK_SRUN_ARGS), srun


def test_a_failed_job_of_several_tasks_names_the_rank_that_failed_first_or_both_when_tied(workdir):
    """The failing rank is read from the tasks' result files (no cluster needed): the earliest error
    is the cause, the later ones its symptoms; errors the file system's clock cannot order (Lustre
    keeps whole seconds) are both named rather than one picked at random."""
    import submitit
    from submitit.core.utils import JobPaths, cloudpickle_dump

    profile = load_profile(REPO / "slurm" / "profiles" / "local.yaml").model_copy(update={"tasks_per_node": 3})
    executor = SlurmExecutor(workdir / "jobs", profile, max_parallel=1)
    job = submitit.SlurmJob(workdir / "jobs", "77")
    paths = {task: JobPaths(job.paths.folder, "77", task_id=task) for task in range(3)}
    errors = {1: "RuntimeError: Connection closed by peer", 2: "ValueError: rank 2 broke"}
    for task, line in errors.items():  # task 0 was killed without a result
        paths[task].folder.mkdir(parents=True, exist_ok=True)
        cloudpickle_dump(("error", f"Traceback (most recent call last):\n  x()\n{line}\n"), paths[task].result_pickle)

    def written(task: int, second: int) -> None:
        os.utime(paths[task].result_pickle, ns=(second * 10**9, second * 10**9))

    written(2, 100), written(1, 101)
    assert executor._failed_tasks(job) == Poll(JobState.FAILED, reason=f"rank 2 of 3: {errors[2]} (log: {paths[2].stderr})")
    written(1, 100)  # the same second: which came first is unknown, and the line says so
    line = executor._failed_tasks(job).reason
    assert line.startswith("rank 1 of 3: RuntimeError: Connection closed by peer") and "rank 2 " in line, line
    assert errors[2] in line, line


def test_a_failed_job_of_several_tasks_carries_what_a_rank_returned_its_refusal(workdir):
    """A rank that refused the run alone returns its refusal and exits non-zero (RunTask): the job
    failed, and its poll carries the refusal (typed) beside the other ranks' errors."""
    import submitit
    from submitit.core.utils import JobPaths, cloudpickle_dump

    profile = load_profile(REPO / "slurm" / "profiles" / "local.yaml").model_copy(update={"tasks_per_node": 2})
    executor = SlurmExecutor(workdir / "jobs", profile, max_parallel=1)
    job = submitit.SlurmJob(workdir / "jobs", "78")
    paths = [JobPaths(job.paths.folder, "78", task_id=task) for task in range(2)]
    paths[0].folder.mkdir(parents=True, exist_ok=True)
    refusal = JobFailure(FailureKind.INVALID, "rank 1 of 2: device: a line")
    cloudpickle_dump(("success", refusal), paths[1].result_pickle)
    # task 0 killed without a result: the refusal is the job's only word
    assert executor._failed_tasks(job) == Poll(JobState.FAILED, refusal,
                                               f"rank 1 of 2 returned, the job failed (log: {paths[1].stderr})")
    cloudpickle_dump(("error", "RuntimeError: Connection closed by peer\n"), paths[0].result_pickle)
    assert executor._failed_tasks(job) == Poll(JobState.FAILED, refusal,
                                               f"rank 0 of 2: RuntimeError: Connection closed by peer (log: {paths[0].stderr})")


def test_shipped_profiles_load():
    profiles = sorted((REPO / "slurm/profiles").glob("*.yaml"))
    assert profiles
    for path in profiles:
        assert load_profile(path).time_min >= 1
