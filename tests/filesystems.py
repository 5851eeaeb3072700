"""A small file system that really fills up (a tmpfs), for the disk-full tests and the sweep
rehearsal (benchmarks/rehearsal.py). Mounting needs root (CAP_SYS_ADMIN)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["tmpfs"]


@contextlib.contextmanager
def tmpfs(path: Path, megabytes: int, *, files: int | None = None) -> Iterator[bool]:
    """Mount a tmpfs of ``megabytes`` at ``path`` (created) for the block: True, or False where
    mounting is not permitted (``path`` is then a plain folder). Unmounted (lazily) on exit.
    ``files``: at most this many files and folders (its inodes, the root included); a file
    created beyond them fails with ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={megabytes}m" + ("" if files is None else f",nr_inodes={files}")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
