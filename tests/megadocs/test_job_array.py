"""``run_job_array`` (the shard arrays of ``gen`` and ``tokenize-pool``) with submitit's real
local executor: the submitter says each task's end as it happens, then the failures in one line."""

from __future__ import annotations

import pytest

from megadocs.errors import UserError
from megadocs.executors import run_job_array


def test_each_task_end_is_a_line_on_the_submitter_then_failures_in_one(tmp_path, capfd):
    """A SLURM array of a pool's shards ran for minutes (hours at the paper's size) with only
    "submitted N shard task(s)" on the terminal: nothing said which shards had ended."""
    with pytest.raises(UserError) as failed:
        run_job_array([int, int, float.fromhex], ["shard 0", "shard 1", "shard 2"], kind="local", profile=None,
                      folder=tmp_path / "jobs")  # float.fromhex() without its argument raises
    err = capfd.readouterr().err
    ended = [line for line in err.splitlines() if "task(s) ended" in line]
    assert len(ended) == 3, err
    assert sorted(line.split(" (job")[0] for line in ended) == ["shard 0", "shard 1", "shard 2"]
    assert [line.rsplit("; ", 1)[1] for line in ended] == [f"{n} of 3 task(s) ended" for n in (1, 2, 3)], ended
    assert sum("FAILED" in line for line in ended) == 1 and "shard 2" in str(failed.value), ended
    assert "\n" not in str(failed.value)
