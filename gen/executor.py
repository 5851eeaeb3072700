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
import sys
import time
from pathlib import Path

import submitit

from gen import pool as pool_format
from gen.generate import GenerateOptions, init_pool, run_shards
from megadocs.errors import UserError

__all__ = ["ShardTask", "submit_shards"]

POLL_S = {"local": 1.0, "slurm": 10.0}


class ShardTask(submitit.helpers.Checkpointable):
    """One array task: generate shard ``options.shard``; returns the shard's statistics."""

    def __init__(self, options: GenerateOptions):
        self.options = options

    def __call__(self) -> dict:
        run_shards(self.options)
        marker = pool_format.done_path(Path(self.options.out), self.options.shard, self.options.num_shards)
        return json.loads(marker.read_text())


def submit_shards(options: GenerateOptions, executor: str, profile: str | None = None,
                  timeout_min: float = 7 * 24 * 60, wait: bool = True) -> dict:
    """Submit every not-done shard of the pool as one job array; wait and return the manifest.

    Raises:
        UserError: a bad executor/profile, or shards that failed (their logs are named).
    """
    from megadocs.executors import ExecutorConfig, JobState, make_executor

    if executor not in ("local", "slurm"):
        raise UserError(f"--executor: expected local or slurm, got {executor!r}")
    if executor == "slurm" and not profile:
        raise UserError("--profile: required with --executor slurm (e.g. slurm/profiles/local.yaml)")
    init_pool(options)
    out, count = Path(options.out), options.num_shards
    todo = [i for i in range(count) if not pool_format.done_path(out, i, count).is_file()]
    if todo:
        config = ExecutorConfig(kind=executor, profile=profile, max_parallel=max(1, len(todo)),
                                timeout_min=timeout_min)
        folder = out / "submitit"
        jobs = make_executor(config, folder)
        tasks = [ShardTask(options.model_copy(update={"shard": i, "progress": False})) for i in todo]
        ids = jobs.submit(tasks)
        print(f"submitted {len(ids)} shard task(s) to {executor}: {', '.join(ids)} (logs: {folder})",
              file=sys.stderr)
        if not wait:
            return pool_format.read_manifest(out)
        pending = dict(zip(ids, todo))
        failures = []
        while pending:
            time.sleep(POLL_S[executor])
            for job_id, shard in list(pending.items()):
                poll = jobs.poll(job_id)
                if poll.state == JobState.RUNNING:
                    continue
                del pending[job_id]
                if poll.state != JobState.DONE:
                    failures.append(f"shard {shard} (job {job_id}): {poll.reason}")
        if failures:
            raise UserError(f"{len(failures)} shard task(s) failed; re-run to resume them: "
                            + "; ".join(failures))
    return pool_format.refresh_statistics(out)
