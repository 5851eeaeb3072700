"""``run_job_array`` (the shard arrays of ``gen`` and ``tokenize-pool``) with submitit's real
local executor: the submitter says failures at once and successes throttled, then the failures
in one line, as work that failed (exit 4), not bad input (exit 2)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from megadocs.errors import UserError, WorkFailed
from megadocs.job_arrays import ARRAY_PROGRESS_STEPS, ArrayProgress, run_job_array
from megadocs.shards import ShardedStep

ROOT = Path(__file__).resolve().parents[2]


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


class GpuShards(ShardedStep):
    """Shards whose tasks use a GPU, as gen's do: each shard's marker says the GPU its task saw; a
    task that finds its GPU held by another running task fails (FileExistsError)."""

    GPU_TASKS = True

    def prepare(self) -> dict:
        return self.init_manifest({"format": "demo/1"}, same=lambda old: True)

    def _run_shard(self, index: int) -> dict:
        gpu = os.environ["CUDA_VISIBLE_DEVICES"]
        holding = self.folder / f"holding-{gpu}"
        os.close(os.open(holding, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        time.sleep(0.2)  # (holds it a little longer: no timing is asserted)
        holding.unlink()
        return {"gpu": gpu}


def test_a_local_array_of_gpu_tasks_runs_one_task_per_gpu_and_a_rerun_resumes(tmp_path, monkeypatch, capfd):
    """``gen --executor local --num-shards 3`` on a machine with GPUs was refused (every engine
    would have started on GPU 0; in fact submitit started each task with no GPU at all). Now the
    tasks run one per GPU, each on its own, the next as one ends; a re-run runs only the shards not
    done. MOCK: CUDA_VISIBLE_DEVICES names two GPUs this CPU machine does not have."""
    from megadocs import job_arrays

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setitem(job_arrays.ARRAY_POLL_S, "local", 0.1)
    step = GpuShards(tmp_path / "pool", 3, name="gpu-shards")
    assert step.submit("local")["complete"]
    gpus = [json.loads(step.done_path(i).read_text())["gpu"] for i in range(3)]
    assert set(gpus) == {"0", "1"}, gpus  # old code: {''}
    err = capfd.readouterr().err
    assert "3 shard task(s) on 2 GPU(s) (0, 1; CUDA_VISIBLE_DEVICES chooses them): 2 at a time" in err, err
    assert "submitted 2 shard task(s) to local:" in err and "the other 1 as GPUs free" in err, err

    step.done_path(1).unlink()  # one shard to do again
    assert GpuShards(tmp_path / "pool", 3, name="gpu-shards").submit("local")["complete"]
    err = capfd.readouterr().err
    assert "submitted 1 shard task(s) to local:" in err and "at a time" not in err, err
    assert json.loads(step.done_path(1).read_text())["gpu"] in ("0", "1")
