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
