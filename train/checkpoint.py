"""Atomic training checkpoints: model, optimizer, LR scheduler, RNG states, step and counters.

One file, ``RUN/checkpoint/state.pt``, replaced atomically (``megadocs.formats.atomic_file``:
written to a temporary name in the same directory, fsynced, then renamed), so a kill at any moment leaves either the previous or the
new checkpoint, never a torn one. Restoring everything bit-for-bit is what lets a preempted run
finish with exactly the metrics of an uninterrupted one.

The file holds only tensors, numbers, strings, lists and dicts, and is read with
``torch.load(weights_only=True)``: a crafted ``state.pt`` cannot run code. RNG states are stored
as integer tensors, not pickled Python/NumPy objects; the data position is the step (the batch
order is a pure function of it, ``train.data``).

Writing is asynchronous (:class:`CheckpointWriter`): at the step boundary the state is copied to
host memory (the only pause training sees) and a background thread writes it; at most one write
is pending, and :meth:`CheckpointWriter.wait` is called before the next snapshot, before exit and
before a preemption is acknowledged.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megadocs import compat
from megadocs.errors import UserError, WorkFailed
from megadocs.formats import RunDir, atomic_file

__all__ = ["STATE_FILE", "CONTENT_ERRNOS", "CheckpointWriter", "save_checkpoint", "load_checkpoint", "read_checkpoint",
           "SavedCheckpoint", "saved_checkpoint", "restore_progress", "checkpoint_path", "snapshot_state"]

STATE_FILE = "state.pt"
FORMAT = "megadocs.train-checkpoint/2"  # /2: RNG states as tensors, loadable with weights_only=True


def checkpoint_path(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoint / STATE_FILE


# --- RNG states as plain tensors ---------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["mt"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))  # fmt: skip
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- saving ------------------------------------------------------------------------------------


def _to_host(value: Any) -> Any:
    """A deep copy with every tensor copied to CPU memory (the snapshot outlives the next step,
    which updates parameters and optimizer moments in place)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _to_host(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(item) for item in value)
    return value


def snapshot_state(*, model: torch.nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                   scheduler: Any, step: int, counters: dict[str, Any], identity: str,
                   full_states: tuple[dict, dict] | None = None) -> dict[str, Any]:  # fmt: skip
    """The full training state after `step` updates, in host memory, independent of the live one,
    named by a random ``save_id`` of its own (`SavedCheckpoint`: two saves at the same step differ).

    `full_states`: (model state, index-keyed optimizer state) already unsharded in host memory
    (`train.sharding.full_state_dicts`), used as they are instead of copying `model`/`optimizer`.
    """
    model_state, optimizer_state = full_states or (_to_host(model.state_dict()), _to_host(optimizer.state_dict()))
    return {
        "format": FORMAT,
        "identity": identity,
        "step": int(step),
        "save_id": secrets.token_hex(8),
        "counters": dict(counters),
        "model": model_state,
        "optimizer": optimizer_state,
        "scheduler": _to_host(scheduler.state_dict()),
        "rng": _rng_state(),
    }


def _write(path: Path, state: dict[str, Any]) -> None:
    """torch.save through the one atomic writer (temporary file, fsync, rename, directory fsync).

    A full file system fails the write and leaves the previous checkpoint as it was (the
    temporary file is removed). It is raised as OSError(ENOSPC) naming the file, also where
    torch's zip writer reports the failed write as its own RuntimeError ("unexpected pos ..."),
    so a job's log says what to fix (the CLI prints it as one line: `megadocs.cli.main`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as handle:
        try:
            torch.save(state, handle)
        except RuntimeError as exc:
            stats = os.statvfs(path.parent)  # the temporary file still holds what was written
            if stats.f_bavail * stats.f_frsize >= 1 << 20:
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc


def save_checkpoint(run_dir: Path, **state: Any) -> Path:
    """Write the full training state synchronously (:func:`snapshot_state` arguments); returns the file."""
    path = checkpoint_path(run_dir)
    _write(path, snapshot_state(**state))
    return path


class CheckpointWriter:
    """Checkpoints written on a background thread, one at a time.

    `save` snapshots the state to host memory in the calling thread (so training may continue
    at once), waits for any write still pending (never two at once, and the newer file always
    lands last), then starts the write. `wait` blocks until the pending write is durable and
    re-raises its error. Use as a context manager: leaving it waits.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = checkpoint_path(run_dir)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.pending_step: int | None = None

    def save(self, **state: Any) -> None:
        snapshot = snapshot_state(**state)
        self.wait()
        self.pending_step = snapshot["step"]
        self._thread = threading.Thread(target=self._run, args=(snapshot,), name="checkpoint-writer")
        self._thread.start()

    def _run(self, snapshot: dict[str, Any]) -> None:
        try:
            _write(self.path, snapshot)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread by wait()
            self._error = exc

    def wait(self) -> None:
        """Block until the pending write (if any) is on disk; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.pending_step = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wait()


# --- loading -----------------------------------------------------------------------------------


CONTENT_ERRNOS = frozenset({errno.EINVAL})
"""The OSErrors a checkpoint's *content* gives: torch's zip reader seeks before the start of a cut-off
file (EINVAL). Any other OSError reading it is the file system's (an NFS server's EIO or ESTALE): the
file may be sound, so it is a fault to retry, never a reason to delete it."""


def read_checkpoint(run_dir: Path, *, identity: str, saved: SavedCheckpoint | None = None) -> dict[str, Any] | None:
    """The checkpoint of RUN as saved (tensors memory-mapped: the ranks of a node reading it share
    its pages); None when the run has no checkpoint. `saved`: RUN's checkpoint as `saved_checkpoint`
    read it (a data-parallel run's agreement on RUN: `train.loop.run`), whose state is used, the file
    not parsed again; None: read here.

    Raises:
        UserError: the file's content is bad: cut off, not a checkpoint, an older format, anything
            but tensors and plain values (a crafted file: never executed), or the checkpoint of
            a run with another identity (a different config in the same directory).
        WorkFailed: the file system failed to read it (`CONTENT_ERRNOS` aside): one line naming
            the file, which is left as it is; running again resumes from it (a sweep retries the run).
    """
    path = checkpoint_path(run_dir)
    state = saved.state if saved is not None else _saved_state(path)
    if state is not None and state["identity"] != identity:
        raise UserError(
            f"{path}: checkpoint of config {state['identity']}, not of this config {identity}; "
            "use another --out or delete the run directory"
        )
    return state


@dataclass(frozen=True)
class SavedCheckpoint:
    """Which checkpoint RUN holds, as `saved_checkpoint` reads it without its tensors.

    >>> str(SavedCheckpoint(120, "3f2a9c1d0b7e4a65")), str(SavedCheckpoint(120, None))
    ('checkpoint at step 120 (save 3f2a9c1d0b7e4a65)', 'checkpoint at step 120')
    """

    step: int
    """The step it was saved after."""
    save_id: str | None
    """The random id its save gave it (`snapshot_state`): the same in a copy of the file, another
    in another save at the same step (None: saved before checkpoints had one)."""
    state: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """The state as saved, its tensors memory-mapped and not yet read, for `read_checkpoint` to use
    without parsing the file again."""

    def __str__(self) -> str:
        return f"checkpoint at step {self.step}" + (f" (save {self.save_id})" if self.save_id else "")


def saved_checkpoint(run_dir: Path) -> SavedCheckpoint | None:
    """The step RUN's checkpoint was saved after and its save's id; None when the run has no
    checkpoint. Read as `read_checkpoint` reads the file, but only the zip's index and the pickled
    structure are: its tensors are memory-mapped and never touched (a 300m model's state with
    AdamW's moments is ~3.6 GB). Its identity is not checked (`read_checkpoint` does, once RUN's
    own record is).

    Raises:
        UserError, WorkFailed: as `read_checkpoint`, for the file's content or its file system.
    """
    state = _saved_state(checkpoint_path(run_dir))
    return None if state is None else SavedCheckpoint(int(state["step"]), state.get("save_id"), state)


def _saved_state(path: Path) -> dict[str, Any] | None:
    """The state saved at `path`, its tensors memory-mapped (None: no file there), upgraded to
    this format; raises as `read_checkpoint`, but for the identity."""
    try:
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in CONTENT_ERRNOS:
            raise WorkFailed(f"{path}: could not read the checkpoint ({exc}); it is left as it is: run again once "
                             "its file system answers, to resume from it") from exc
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # weights_only refuses a pickle that would run code (UnpicklingError); a cut-off, corrupt or
        # foreign file fails in the zip reader (RuntimeError, OSError EINVAL) or ends early
        what = "refused to unpickle it" if isinstance(exc, pickle.UnpicklingError) else "cannot read it"
        raise UserError(
            f"{path}: not a safe {FORMAT} checkpoint ({what}: {reason[:160]}); delete it to restart the run"
        ) from None
    compat.upgrade(compat.CHECKPOINT, state, source=str(path), action="delete it to restart the run")
    return state


def restore_progress(state: dict[str, Any], *, scheduler: Any) -> dict[str, Any]:
    """Restore the schedule and the RNG states of a `read_checkpoint` state (the model and the
    optimizer are the caller's: plain or sharded); returns ``{"step", "counters"}``."""
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return {"step": state["step"], "counters": state["counters"]}


def load_checkpoint(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    identity: str,
) -> dict[str, Any] | None:
    """Restore state saved by `save_checkpoint` into an unsharded model and its optimizer; None
    when the run has no checkpoint. Returns ``{"step": int, "counters": dict}``; raises as
    `read_checkpoint`.
    """
    state = read_checkpoint(run_dir, identity=identity)
    if state is None:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return restore_progress(state, scheduler=scheduler)
