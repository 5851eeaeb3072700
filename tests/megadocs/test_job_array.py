"""``run_job_array`` (the shard arrays of ``gen`` and ``tokenize-pool``) with submitit's real
local executor: the submitter says failures at once and successes throttled, then the failures
in one line, as work that failed (exit 4), not bad input (exit 2)."""

from __future__ import annotations

import pytest

from megadocs.errors import UserError, WorkFailed
from megadocs.job_arrays import ARRAY_PROGRESS_STEPS, ArrayProgress, run_job_array


def test_a_many_task_array_says_every_failure_a_tenth_of_successes_and_the_final_count(tmp_path, capfd):
    """A SLURM array of 256 shards printed 256 lines (one per task end): the failures drowned.
    float.fromhex() without its argument raises: two of the tasks fail."""
    n = 30
    tasks = [float.fromhex if i in (3, 17) else int for i in range(n)]
    with pytest.raises(WorkFailed) as failed:
        run_job_array(tasks, [f"shard {i}" for i in range(n)], kind="local", profile=None, folder=tmp_path / "jobs")
    assert not isinstance(failed.value, UserError)  # the input was fine: exit 4, not 2
    err = capfd.readouterr().err
    ended = [line for line in err.splitlines() if "task(s) ended" in line]
    assert sorted(line.split(" (job")[0] for line in ended if "FAILED" in line) == ["shard 17", "shard 3"], ended
    assert len(ended) <= ARRAY_PROGRESS_STEPS + 3, ended  # a tenth each, the two failures, the last
    assert ended[-1].endswith(f"{n} of {n} task(s) ended"), ended
    assert "shard 3" in str(failed.value) and "shard 17" in str(failed.value) and "\n" not in str(failed.value)


def test_successes_are_said_after_quiet_seconds_even_within_a_tenth():
    """A slow array (hours per tenth) still says something every ``every_s`` seconds."""
    now = [0.0]
    progress = ArrayProgress(1000, every_s=60.0, clock=lambda: now[0])
    assert progress.ended("shard 0", "0", ok=True) is None
    now[0] = 61.0
    assert progress.ended("shard 1", "1", ok=True) == "shard 1 (job 1) done; 2 of 1000 task(s) ended"
    assert progress.ended("shard 2", "2", ok=True) is None


def _profile(path, **fields):
    """A SLURM profile file with ``fields`` over the local cluster's defaults."""
    import yaml

    path.write_text(yaml.safe_dump({"partition": "debug", "mem_gb": 1, "time_min": 5, **fields}))
    return str(path)


@pytest.mark.parametrize("field", ["tasks_per_node", "nodes"])
def test_a_profile_of_several_tasks_per_job_is_refused_before_anything_is_submitted(field, tmp_path, monkeypatch):
    """A data-parallel training profile (8 tasks per job) given to a shard array would run each
    shard's task 8 times at once: 8 engines on one shard, 8 writers of its rows."""
    from megadocs import job_arrays
    from megadocs.executors import SlurmProfile

    assert field in SlurmProfile.model_fields
    profile = _profile(tmp_path / "train-8.yaml", **{field: 8})
    submitted = []
    monkeypatch.setattr(job_arrays, "make_executor", lambda *args, **kwargs: submitted.append(args))
    with pytest.raises(UserError) as refused:
        run_job_array([int], ["shard 0"], kind="slurm", profile=profile, folder=tmp_path / "jobs")
    line = str(refused.value)
    assert line.startswith(f"--profile {profile}: ") and f"{field} 8" in line and "\n" not in line
    assert "tasks_per_node: 1 and nodes: 1" in line
    assert not submitted and not (tmp_path / "jobs").exists()


def test_a_profile_of_one_task_per_job_passes_the_check(tmp_path):
    from megadocs.job_arrays import check_array_executor

    check_array_executor("slurm", _profile(tmp_path / "one.yaml", tasks_per_node=1, nodes=1, gpus_per_node=1))
