"""Atomic training checkpoints: model, optimizer, LR scheduler, RNG states, step and counters.

One file, ``RUN/checkpoint/state.pt``, replaced atomically (``megadocs.formats.atomic_file``:
written to a temporary name in the same directory, fsynced, then renamed), so a kill at any moment leaves either the previous or the
new checkpoint, never a torn one. Restoring everything bit-for-bit is what lets a preempted run
finish with exactly the metrics of an uninterrupted one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megadocs.formats import RunDir, atomic_file

__all__ = ["STATE_FILE", "save_checkpoint", "load_checkpoint", "checkpoint_path"]

STATE_FILE = "state.pt"
FORMAT = "megadocs.train-checkpoint/1"


def checkpoint_path(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoint / STATE_FILE


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    counters: dict[str, Any],
    identity: str,
) -> Path:
    """Write the full training state after `step` optimizer steps; returns the file."""
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "identity": identity,
        "step": step,
        "counters": counters,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
    }
    with atomic_file(path, "wb") as handle:
        torch.save(state, handle)
    return path


def load_checkpoint(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    identity: str,
) -> dict[str, Any] | None:
    """Restore state saved by `save_checkpoint`; None when the run has no checkpoint.

    Returns ``{"step": int, "counters": dict}``. Raises UserError when the checkpoint belongs
    to a run with another identity (a different config in the same directory).
    """
    from megadocs.errors import UserError

    path = checkpoint_path(run_dir)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != FORMAT:
        raise UserError(f"{path}: format {state.get('format')!r} is not {FORMAT!r}; delete it to restart")
    if state["identity"] != identity:
        raise UserError(
            f"{path}: checkpoint of config {state['identity']}, not of this config {identity}; "
            "use another --out or delete the run directory"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return {"step": state["step"], "counters": state["counters"]}
