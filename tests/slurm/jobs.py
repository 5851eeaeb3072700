"""Small callables the `slurm` tests run as cluster jobs (pickled by value, see conftest)."""

from __future__ import annotations

import os
import socket


def where_am_i(x: int) -> dict:
    """What a job array task sees: its SLURM ids, the python it runs under, and a computed value."""
    import sys

    return {
        "value": x * x,
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "host": socket.gethostname(),
        "python": sys.executable,
    }


def sleep_for(seconds: float) -> float:
    """A job that stays RUNNING for a while (the executor's liveness check is asked meanwhile)."""
    import time

    time.sleep(seconds)
    return seconds


def wait_for_file(path: str) -> str:
    """A job that stays RUNNING until the test creates ``path`` (the nodes share this file system):
    the test, not a sleep's length, decides when it ends."""
    import time
    from pathlib import Path

    while not Path(path).exists():
        time.sleep(0.1)
    return path


def wait_on_child(seconds: float) -> None:
    """A job whose work runs in a child process, as vLLM's engine does: ``scancel`` SIGTERMs the
    child too and the job raises (CalledProcessError) instead of ending without a result."""
    import subprocess

    subprocess.run(["sleep", str(seconds)], check=True)


def fail_on_rank_one(seconds: float) -> int:
    """A job of 2 tasks whose rank 1 raises at once while rank 0 waits ``seconds`` for it, as a
    rank waits in a collective whose peer died (NCCL notices no dead peer before its timeout); a
    SIGTERM does not end its wait (submitit only logs it), as it does not end a training rank's."""
    import time

    rank = int(os.environ["SLURM_PROCID"])
    if rank == 1:
        raise ValueError("rank 1 broke while building its model")
    time.sleep(seconds)
    return rank


def sweep_run_failing_on_rank_one(run_dir: str, train_config: dict) -> object:
    """The sweep's own job (`search.objective.RunTask`) of ``train_config`` on 2 tasks whose rank 1
    alone meets a UserError as it prepares RUN, after the ranks agreed on their data (MOCK: a
    monkeypatched `RunLifecycle.prepare`, standing in for a fault of one node's own)."""
    from megadocs.errors import UserError
    from search.objective import RunTask
    from train.run_dir import RunLifecycle

    if int(os.environ["SLURM_PROCID"]) == 1:
        def prepare(self, *args, **kwargs) -> None:  # MOCK: the fault rank 1 meets alone
            raise UserError("MOCK: rank 1's own fault as it prepares RUN")

        RunLifecycle.prepare = prepare
    return RunTask(run_dir, {"lr": "default"}, train_config=train_config)()
