"""Run a pool's shards as one submitit job array (``--executor local|slurm``).

Each array task runs one shard (``GenerateOptions.shard = i``) through :func:`gen.generate.run_shards`,
so it is resumable on its own: a task that times out or is preempted is requeued by submitit
(:class:`ShardTask` is ``Checkpointable``, ``max_requeues`` in the profile) and continues from its
last flushed chunk; a task whose shard is already done returns at once. The submitter writes the
pool manifest before submitting (no race between tasks), then waits for the array and refreshes
the statistics.

The executors and the SLURM profile model are ``megadocs.executors``' (one submitit adapter in the
project; ``search`` does not depend on ``gen``). ``local`` starts every task at once on this
machine (submitit's LocalExecutor); use it for small pools or tests, ``slurm`` for clusters.
"""

from __future__ import annotations

import json
from pathlib import Path

import submitit

from gen import pool as pool_format
from gen.generate import GenerateOptions, init_pool, run_shards

__all__ = ["ShardTask", "submit_shards"]


class ShardTask(submitit.helpers.Checkpointable):
    """One array task: generate shard ``options.shard``; returns the shard's statistics."""

    def __init__(self, options: GenerateOptions):
        self.options = options

    def __call__(self) -> dict:
        run_shards(self.options)
        marker = pool_format.done_path(Path(self.options.out), self.options.shard, self.options.num_shards)
        return json.loads(marker.read_text())


def submit_shards(options: GenerateOptions, executor: str, profile: str | None = None,
                  timeout_min: float = 7 * 24 * 60) -> dict:
    """Submit every not-done shard of the pool as one job array; wait and return the manifest.

    Raises:
        UserError: a bad executor/profile, or shards that failed (their logs are named).
    """
    from megadocs.executors import check_array_executor, run_job_array

    check_array_executor(executor, profile)
    init_pool(options)
    out, count = Path(options.out), options.num_shards
    todo = [i for i in range(count) if not pool_format.done_path(out, i, count).is_file()]
    tasks = [ShardTask(options.model_copy(update={"shard": i, "progress": False})) for i in todo]
    run_job_array(tasks, [f"shard {i}" for i in todo], kind=executor, profile=profile, folder=out / "submitit",
                  timeout_min=timeout_min)
    return pool_format.refresh_statistics(out)
