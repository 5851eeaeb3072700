"""Worker of tests/train/test_distributed.py's one-rank error tests, run by torchrun (2 gloo ranks):
a sweep job (`search.objective.RunTask`) of CONFIG.yaml in the run directory OUT, where one rank
alone meets a UserError after the ranks agreed on their data. SCENARIO:

- ``rank1``: rank 1 as it prepares RUN (MOCK: a monkeypatched `RunLifecycle.prepare`, standing in
  for a fault that one rank meets on its own, such as a node's view of RUN);
- ``wandb``: rank 0 as it opens the trackers, W&B online with no credentials (the test's
  environment has none): only rank 0 opens them.

Each rank that returns prints its result as one JSON line (its rank and its failure's line, or None;
`tests.train.worker_output`: the ranks share torchrun's stdout).

Usage: torchrun --nproc-per-node=2 -m tests.train.one_rank_error_worker SCENARIO CONFIG.yaml OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from megadocs.errors import UserError
from megadocs.procs import world_from_env
from search.objective import JobFailure, RunTask
from tests.train.worker_output import print_result
from train.run_dir import RunLifecycle

MOCK_LINE = "MOCK: rank 1's own fault as it prepares RUN, after the ranks agreed"


def _mock_prepare(self, *args, **kwargs) -> None:  # MOCK: the fault rank 1 meets alone
    raise UserError(MOCK_LINE)


def main(scenario: str, config_path: str, out: str) -> None:
    rank = world_from_env()[0]
    config = yaml.safe_load(Path(config_path).read_text())
    if scenario == "rank1" and rank == 1:
        RunLifecycle.prepare = _mock_prepare
    if scenario == "wandb":
        config["tracking"] = {"wandb": {"mode": "online"}}
    result = RunTask(out, {"lr": 0.01}, train_config=config)()
    print_result({"rank": rank, "error": result.reason if isinstance(result, JobFailure) else None})


if __name__ == "__main__":
    main(*sys.argv[1:])
