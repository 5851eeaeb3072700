"""Worker of tests/train/test_distributed.py's rendezvous tests: one rank (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT from the environment) joins the run's process group with the device
setting DEVICE (`train.distributed.init_distributed`) and prints one JSON line: its rank and the
error it stopped with (type and line), or none.

With ``die-after-join``, the rank dies (exits :data:`DIED`, printing nothing) once it has said it
joined, as it waits for the others (MOCK: the rendezvous store's ``wait``, standing in for a rank
killed there: the OOM killer, a node's fault).

Usage: python -m tests.train.rendezvous_worker DEVICE [die-after-join]
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch.distributed

from megadocs.errors import UserError, WorkFailed
from megadocs.procs import world_from_env
from tests.train.worker_output import print_result
from train.distributed import init_distributed

DIED = 17
"""The exit status of a rank that died after it joined (``die-after-join``)."""


class _DiesOnWait:  # MOCK: the store of a rank killed once it said it joined
    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def wait(self, *args: Any) -> None:
        os._exit(DIED)


def _rendezvous_dying(rendezvous: Any) -> Any:
    def dying(*args: Any, **kwargs: Any) -> Any:
        for store, rank, world_size in rendezvous(*args, **kwargs):
            yield _DiesOnWait(store), rank, world_size

    return dying


def main(device: str, mock: str | None = None) -> None:
    rank = world_from_env()[0]
    if mock == "die-after-join":
        torch.distributed.rendezvous = _rendezvous_dying(torch.distributed.rendezvous)
    try:
        init_distributed(device)
    except (UserError, WorkFailed) as exc:
        print_result({"rank": rank, "error": type(exc).__name__, "line": str(exc)})
        return
    print_result({"rank": rank, "error": None})


if __name__ == "__main__":
    main(*sys.argv[1:])
