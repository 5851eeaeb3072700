"""Worker of tests/train/test_distributed.py's one-rank error test, run by torchrun (2 gloo ranks):
a sweep job (`search.objective.RunTask`) of CONFIG.yaml in the run directory OUT, where rank 1
alone meets a UserError after the ranks agreed on their data, as it prepares RUN (MOCK: a
monkeypatched `RunLifecycle.prepare`, standing in for a fault that one rank meets on its own, such
as rank 0's W&B settings or a node's view of RUN). Each rank that returns prints its result.

Usage: torchrun --nproc-per-node=2 -m tests.train.one_rank_error_worker CONFIG.yaml OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from megadocs.errors import UserError
from megadocs.procs import world_from_env
from search.objective import RunTask
from train.run_dir import RunLifecycle

MOCK_LINE = "MOCK: rank 1's own fault as it prepares RUN, after the ranks agreed"


def _mock_prepare(self, *args, **kwargs) -> None:  # MOCK: the fault rank 1 meets alone
    raise UserError(MOCK_LINE)


def main(config_path: str, out: str) -> None:
    rank = world_from_env()[0]
    if rank == 1:
        RunLifecycle.prepare = _mock_prepare
    result = RunTask(out, {"lr": 0.01}, train_config=yaml.safe_load(Path(config_path).read_text()))()
    print(json.dumps({"rank": rank, "result": repr(result)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
