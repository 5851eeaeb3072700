"""Worker of tests/train/test_distributed.py's rendezvous test: one rank (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT from the environment) joins the run's process group with the device
setting DEVICE (`train.distributed.init_distributed`) and prints one JSON line: its rank and the
error it stopped with (type and line), or none.

Usage: python -m tests.train.rendezvous_worker DEVICE
"""

from __future__ import annotations

import sys

from megadocs.errors import UserError, WorkFailed
from megadocs.procs import world_from_env
from tests.train.worker_output import print_result
from train.distributed import init_distributed


def main(device: str) -> None:
    rank = world_from_env()[0]
    try:
        init_distributed(device)
    except (UserError, WorkFailed) as exc:
        print_result({"rank": rank, "error": type(exc).__name__, "line": str(exc)})
        return
    print_result({"rank": rank, "error": None})


if __name__ == "__main__":
    main(*sys.argv[1:])
