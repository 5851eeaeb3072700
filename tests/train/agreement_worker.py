"""Worker of tests/train/test_distributed.py's agreement tests: one of 2 gloo ranks (RANK and
WORLD_SIZE set as torchrun would) that finds other data than the other rank at the same path
(data.store ``store``, relative: each rank runs each scenario in a folder of its own, whose
``store`` links to the store it is to see, as a node-local path would), or meets a fault of its
file system, in each of the scenarios below (`SCENARIOS`), each on its own rendezvous port. Prints one JSON line per scenario: the scenario, the rank and the one-line
error it ended with (None: none; a UserError's line, any other exception's prefixed by its type)
and the type of that error's cause (None: none).

- ``loop``: `train.loop.run`, handed the stores as each rank opened them; rank 1 sees the other store;
- ``loop-fault``: `train.loop.run` where rank 1's file system fails it as it opens the stores (an
  OSError: NFS's ESTALE, injected here), rank 0 opening them;
- ``job``: a sweep job (`search.objective.RunTask`) named by the first store's identity, whose
  rank 1 sees the other store;
- ``job-renamed``: that job where both ranks see the other store (the controller's identity is
  not what they opened);
- ``job-missing``: that job where rank 1 sees no store;
- ``job-done``: that job, both ranks seeing the first store, in the finished run DONE (rank 0
  joins the others in `run`, which returns its metrics on every rank).
- ``loop-folder``: `train.loop.run` into RUN ``run``, relative: each rank's own folder (as a
  node-local path would be), rank 1's holding the finished run DONE's metrics, rank 0's none.
- ``loop-checkpoint``: `train.loop.run` into RUN ``run``, relative, rank 0's holding a checkpoint
  of this run at step 120 (what a preempted run leaves where only rank 0 writes), rank 1's none.
- ``loop-checkpoints``: `train.loop.run` into RUN ``run``, relative, each rank's holding a
  checkpoint of this run at step 120 of its own save (different states at the same step).
- ``loop-read-fault``: `train.loop.run` where rank 1's file system fails it as it reads RUN (an
  OSError: NFS's ESTALE reading metrics.json, injected here: `INJECTED`), rank 0 reading it.
- ``loop-prepare-fault``: `train.loop.run` where rank 0's file system fails it as it prepares RUN,
  which it alone writes (an OSError: EIO, injected here: `INJECTED`).
- ``loop-prepare-bug``: `train.loop.run` where rank 0 meets a bug as it prepares RUN (a TypeError,
  injected here: `INJECTED`).
- ``loop-prepare-full``: `train.loop.run` where rank 0's disk is full as it prepares RUN (an
  OSError: ENOSPC, injected here: `INJECTED`).

Usage: python -m tests.train.agreement_worker CONFIG.yaml OTHER_STORE DONE OUT PORT...  (a port a scenario)
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path
from unittest import mock

import torch
import yaml

from megadocs.errors import UserError
from search.objective import JobFailure, RunTask
from tests.train.worker_output import print_result
from train.checkpoint import save_checkpoint
from train.config import RunConfig
from train.data import RunStores
from train.loop import run
from train.run_dir import RunLifecycle

SCENARIOS = ("loop", "loop-fault", "job", "job-renamed", "job-missing", "job-done", "loop-folder", "loop-checkpoint", "loop-checkpoints",
             "loop-read-fault", "loop-prepare-fault", "loop-prepare-bug", "loop-prepare-full")
CHECKPOINT_STEP = 120  # of rank 0's RUN in ``loop-checkpoint``, and of each rank's in ``loop-checkpoints``
INJECTED = {  # MOCK: a file system that fails one rank (no NFS here to go stale), or a bug:
    # scenario -> (rank, RunLifecycle's step, error)
    "loop-read-fault": (1, "finished", OSError(errno.ESTALE, os.strerror(errno.ESTALE), "run/metrics.json")),
    "loop-prepare-fault": (0, "prepare", OSError(errno.EIO, os.strerror(errno.EIO), "run/config.yaml")),
    "loop-prepare-bug": (0, "prepare", TypeError("MOCK: a bug of RunLifecycle.prepare")),
    "loop-prepare-full": (0, "prepare", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "run/config.yaml")),
}


class StaleStores:
    """Stores on a node whose NFS view went stale: reading them fails with ESTALE."""

    def identity(self, config: RunConfig) -> str:
        raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), "store/tokens.bin")


def main(config_path: str, other_store: str, done: str, out: str, *ports: str) -> None:
    rank = int(os.environ["RANK"])
    base = yaml.safe_load(Path(config_path).read_text())
    ours = base["data"]["store"]
    named = RunStores.open(RunConfig.model_validate(base)).identity(RunConfig.model_validate(base))
    seen = {"loop": [ours, other_store], "loop-fault": [ours, ours], "job": [ours, other_store],
            "job-renamed": [other_store, other_store], "job-missing": [ours, None], "job-done": [ours, ours],
            "loop-folder": [ours, ours], "loop-checkpoint": [ours, ours], "loop-checkpoints": [ours, ours], "loop-read-fault": [ours, ours],
            "loop-prepare-fault": [ours, ours], "loop-prepare-bug": [ours, ours],
            "loop-prepare-full": [ours, ours]}  # fmt: skip
    folders = {scenario: Path(out, scenario) for scenario in SCENARIOS} | {
        "job-done": Path(done), "loop-folder": Path("run"), "loop-checkpoint": Path("run"), "loop-checkpoints": Path("run")}  # fmt: skip
    train = {**base, "data": {**base["data"], "store": "store"}}  # the same path on every rank
    for scenario, port in zip(SCENARIOS, ports, strict=True):
        os.environ["MASTER_PORT"] = port
        here = Path(out, "ranks", f"{scenario}-{rank}")
        here.mkdir(parents=True)
        if seen[scenario][rank] is not None:
            (here / "store").symlink_to(seen[scenario][rank])
        os.chdir(here)
        if scenario == "loop-folder" and rank == 1:  # this node's RUN: a finished run
            shutil.copytree(done, "run")
        if scenario == "loop-checkpoint" and rank == 0 or scenario == "loop-checkpoints":  # this node's RUN: a
            # preempted run's checkpoint
            model = torch.nn.Linear(1, 1)  # the agreement reads its step alone
            optimizer = torch.optim.SGD(model.parameters())
            save_checkpoint(Path("run"), model=model, optimizer=optimizer, step=CHECKPOINT_STEP, counters={},
                            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), identity=named)
        error = cause = None
        if scenario.startswith("loop"):
            config = RunConfig.model_validate(train)
            stores = StaleStores() if scenario == "loop-fault" and rank == 1 else RunStores.open(config)
            faulty, step, fault = INJECTED.get(scenario, (None, "", None))
            try:
                with mock.patch.object(RunLifecycle, step, side_effect=fault) if faulty == rank else contextlib.nullcontext():
                    run(config, folders[scenario], stores)
            except UserError as exc:
                error, cause = str(exc), exc.__cause__
            except Exception as exc:  # noqa: BLE001 - the test asserts its type and line
                error, cause = f"{type(exc).__name__}: {exc}", exc.__cause__
        else:
            result = RunTask(str(folders[scenario]), {"lr": 0.01}, train_config=train, identity=named)()
            error = result.reason if isinstance(result, JobFailure) else None
        print_result({"scenario": scenario, "rank": rank, "error": error,
                      "cause": None if cause is None else type(cause).__name__})


if __name__ == "__main__":
    main(*sys.argv[1:])
