"""Process-level helpers: liveness (every lock and leftover-cleanup) and entry points' environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["pid_alive", "apply_environment_defaults"]


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
