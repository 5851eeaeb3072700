"""Process-level helpers: liveness (every lock and leftover-cleanup), entry points' environment, and
which process of a multi-process run this is (torch-free: every sweep job asks, most never need torch)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["pid_alive", "apply_environment_defaults", "world_from_env"]


def pid_alive(pid: int) -> bool:
    """True when a process with this pid runs on this host (zombies count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def apply_environment_defaults(defaults: Mapping[str, str]) -> None:
    """Set each variable that the environment does not already set (for CLI entry points only).

    Library modules declare the variables they need (e.g. ``train.device.ENVIRONMENT_DEFAULTS``)
    and never write ``os.environ`` themselves; the process's entry point applies them, and child
    processes (submitit jobs, SLURM with its default ``--export=ALL``) inherit them.
    """
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


def world_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's or SLURM's variables; (0, 1, 0) when neither
    describes several processes. torchrun's win: `srun torchrun ...` sets both."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0
