"""Checkpoints: no pickled code is ever run, RNG states survive without pickle, and the
background writer snapshots at the step boundary, writes one file at a time and is waited for."""

from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from megadocs.errors import UserError, WorkFailed
from train import checkpoint
from train.checkpoint import (
    CheckpointWriter,
    checkpoint_path,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    saved_checkpoint,
)


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def _state(model, optimizer, scheduler, step=7):
    return dict(model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                counters={"tokens_seen": 123, "wall_time_s": 1.5}, identity="abc")


class _RunsCode:
    """Unpickling this writes a marker file: what a crafted state.pt would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_state_file_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = checkpoint_path(tmp_path / "run")
    path.parent.mkdir(parents=True)
    with open(path, "wb") as handle:
        pickle.dump({"format": checkpoint.FORMAT, "identity": "abc", "x": _RunsCode(str(marker))}, handle)
    assert not marker.exists()
    # the same bytes under the old weights_only=False load would have run the code:
    # pickle.load(open(path, "rb")) creates the marker
    model, optimizer, scheduler = _parts()
    with pytest.raises(UserError, match="not a safe .* checkpoint \\((refused to unpickle|cannot read) it") as info:
        load_checkpoint(tmp_path / "run", model=model, optimizer=optimizer, scheduler=scheduler, identity="abc")
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0.5, 0.0])
def test_a_cut_off_checkpoint_is_unreadable_not_unsafe(tmp_path, cut):
    """A checkpoint cut short (a copy that stopped, a disk fault) is said to be unreadable in one line;
    "refused to unpickle" is for a file that would run code."""
    model, optimizer, scheduler = _parts()
    save_checkpoint(tmp_path, **_state(model, optimizer, scheduler))
    path = checkpoint_path(tmp_path)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * cut)])
    with pytest.raises(UserError, match=rf"^{path}: not a safe .* checkpoint \(cannot read it: .*\); "
                                        "delete it to restart the run$") as info:
        load_checkpoint(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, identity="abc")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("state", [{"format": "megadocs.train-checkpoint/1", "identity": "abc"},
                                   {"format": "something-else/3"}, [1, 2]])
def test_a_checkpoint_of_another_format_is_refused_in_one_line_naming_what_to_do(tmp_path, state):
    """The refusal comes from the table of older formats (megadocs.compat), in this reader's words."""
    path = checkpoint_path(tmp_path / "run")
    path.parent.mkdir(parents=True)
    torch.save(state, path)  # loads with weights_only=True: only the format is wrong
    model, optimizer, scheduler = _parts()
    with pytest.raises(UserError, match=rf"^{path}: RUN/checkpoint: format: .*; delete it to restart the run$") as info:
        load_checkpoint(tmp_path / "run", model=model, optimizer=optimizer, scheduler=scheduler, identity="abc")
    assert "\n" not in str(info.value)
    older = isinstance(state, dict) and state["format"].endswith("/1")
    assert ("written by `megadocs.train-checkpoint/1`" in str(info.value)) == older


def test_the_step_and_save_of_a_checkpoint_are_read_whatever_its_identity_and_refused_as_a_full_read_is(tmp_path):
    """`saved_checkpoint`, what each rank of a data-parallel run reports of RUN (`train.loop.run`):
    the step saved and its save's id (None: no checkpoint), of any identity (RUN's own record is
    checked first, by the run); a copy keeps the id, another save at the same step has another, a
    checkpoint saved before ids has none; a cut-off file is refused with `read_checkpoint`'s line."""
    assert saved_checkpoint(tmp_path) is None
    model, optimizer, scheduler = _parts()
    for folder in ("first", "second"):
        save_checkpoint(tmp_path / folder, **{**_state(model, optimizer, scheduler, step=120), "identity": "another"})
    first, second = saved_checkpoint(tmp_path / "first"), saved_checkpoint(tmp_path / "second")
    assert first.step == second.step == 120 and first.save_id and first != second
    (tmp_path / "copy" / "checkpoint").mkdir(parents=True)
    path = checkpoint_path(tmp_path / "first")
    shutil.copy(path, checkpoint_path(tmp_path / "copy"))
    assert saved_checkpoint(tmp_path / "copy") == first
    older = {key: value for key, value in torch.load(path, weights_only=True).items() if key != "save_id"}
    torch.save(older, checkpoint_path(tmp_path / "copy"))
    assert saved_checkpoint(tmp_path / "copy") == checkpoint.SavedCheckpoint(120, None)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError) as full:
        read_checkpoint(tmp_path / "first", identity="another")
    with pytest.raises(UserError) as step:
        saved_checkpoint(tmp_path / "first")
    assert str(step.value) == str(full.value) and "cannot read it" in str(step.value)


def test_a_checkpoint_read_for_the_ranks_agreement_is_resumed_from_without_parsing_the_file_again(tmp_path,
                                                                                                     monkeypatch):
    """A data-parallel run reads RUN's checkpoint once for the ranks' agreement (`saved_checkpoint`)
    and resumes from what it read then (`read_checkpoint`'s `saved`): the file's pickle is parsed
    once, where it was parsed twice (once more as the trainer built the model); the identity is
    still checked."""
    model, optimizer, scheduler = _parts()
    save_checkpoint(tmp_path, **_state(model, optimizer, scheduler, step=120))
    loads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))  # MOCK: counts
    saved = saved_checkpoint(tmp_path)
    state = read_checkpoint(tmp_path, identity="abc", saved=saved)
    assert len(loads) == 1 and state["step"] == 120 and state["save_id"] == saved.save_id
    with pytest.raises(UserError, match="checkpoint of config abc, not of this config other"):
        read_checkpoint(tmp_path, identity="other", saved=saved)


def test_rng_states_and_training_state_round_trip_without_pickle(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    random.gauss(0, 1)  # a cached gaussian in Python's state
    model, optimizer, scheduler = _parts()
    save_checkpoint(tmp_path, **_state(model, optimizer, scheduler))
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), random.gauss(0, 1))
    raw = torch.load(checkpoint_path(tmp_path), weights_only=True)  # plain tensors and values only
    assert raw["step"] == 7 and raw["format"] == checkpoint.FORMAT

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    fresh_model, fresh_optimizer, fresh_scheduler = _parts(seed=1)
    resumed = load_checkpoint(tmp_path, model=fresh_model, optimizer=fresh_optimizer, scheduler=fresh_scheduler,
                              identity="abc")
    assert resumed == {"step": 7, "counters": {"tokens_seen": 123, "wall_time_s": 1.5}}
    assert (random.random(), np.random.rand(), torch.rand(1).item(), random.gauss(0, 1)) == expected
    assert torch.equal(fresh_model.weight, model.weight)
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert fresh_scheduler.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"]


def test_writer_snapshots_at_the_boundary_and_never_writes_twice_at_once(tmp_path, monkeypatch):
    """The disk is made slow (a sleep in the write: the one thing mocked); training mutates the
    live model while the write is pending, and a second save waits for the first. The writes of
    steps 1 and 3 go on only once the test lets them (after save() returned and the weights
    changed), so that "pending" holds however slow the machine."""
    real_write = checkpoint._write
    active, overlaps, order = [], [], []
    lock = threading.Lock()
    held = {1: threading.Event(), 3: threading.Event()}

    def slow_write(path, state):
        with lock:
            active.append(state["step"])
            if len(active) > 1:
                overlaps.append(tuple(active))
        if state["step"] in held:
            held[state["step"]].wait(timeout=120)
        time.sleep(0.3)
        real_write(path, state)
        order.append(state["step"])
        with lock:
            active.remove(state["step"])

    monkeypatch.setattr(checkpoint, "_write", slow_write)
    model, optimizer, scheduler = _parts()
    before = model.weight.detach().clone()
    with CheckpointWriter(tmp_path) as writer:
        writer.save(**_state(model, optimizer, scheduler, step=1))
        assert order == []  # training continues while the file is written
        with torch.no_grad():
            model.weight.add_(1.0)  # the next step updates parameters in place
        held[1].set()
        writer.save(**_state(model, optimizer, scheduler, step=2))  # waits for step 1's write
        assert order == [1]
    assert order == [1, 2] and not overlaps  # leaving the block waited for the last write
    saved = torch.load(checkpoint_path(tmp_path), weights_only=True)
    assert saved["step"] == 2 and torch.equal(saved["model"]["weight"], before + 1.0)

    # the step-1 snapshot held the pre-update weights, not a view of the live tensor
    with CheckpointWriter(tmp_path / "one") as writer:
        writer.save(**_state(model, optimizer, scheduler, step=3))
        with torch.no_grad():
            model.weight.add_(5.0)
        held[3].set()
    assert torch.equal(torch.load(checkpoint_path(tmp_path / "one"), weights_only=True)["model"]["weight"],
                       before + 1.0)
    assert not [p for p in os.listdir(checkpoint_path(tmp_path).parent) if p.startswith(".")]  # no temp left


def test_writer_reports_a_failed_write_on_wait(tmp_path, monkeypatch):
    def failing_write(path, state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write", failing_write)
    model, optimizer, scheduler = _parts()
    writer = CheckpointWriter(tmp_path)
    writer.save(**_state(model, optimizer, scheduler))
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    writer.wait()  # reported once


@pytest.mark.parametrize("headroom", [20_000, 90_000])  # the write fails in torch's zip writer or at the flush
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_says_so(small_filesystem, headroom):
    """The sweep rehearsal's disk-full fault on the real writer: the write fails with ENOSPC (not
    torch's "unexpected pos" RuntimeError), the previous checkpoint loads unchanged, no temporary
    file is left, and once space is back the next checkpoint is written."""
    torch.manual_seed(0)
    model = torch.nn.Linear(96, 96)  # ~37 KB of weights, ~110 KB per checkpoint with AdamW moments
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.randn(2, 96)).sum().backward()
    optimizer.step()
    writer = CheckpointWriter(small_filesystem)
    writer.save(**_state(model, optimizer, scheduler, step=1))
    writer.wait()
    saved = model.weight.detach().clone()
    filler = small_filesystem / "filler"
    with open(filler, "wb", buffering=0) as handle:  # leave less room than one checkpoint
        free = os.statvfs(small_filesystem).f_bavail * os.statvfs(small_filesystem).f_frsize
        os.posix_fallocate(handle.fileno(), 0, free - headroom)

    with torch.no_grad():
        model.weight.add_(1.0)
    writer.save(**_state(model, optimizer, scheduler, step=2))
    with pytest.raises(OSError) as full:
        writer.wait()
    assert full.value.errno == errno.ENOSPC and "state.pt" in str(full.value), full.value
    state = read_checkpoint(small_filesystem, identity="abc")
    assert state["step"] == 1 and torch.equal(state["model"]["weight"], saved)
    assert os.listdir(checkpoint_path(small_filesystem).parent) == ["state.pt"]  # no temporary file left

    filler.unlink()
    writer.save(**_state(model, optimizer, scheduler, step=3))
    writer.wait()
    assert read_checkpoint(small_filesystem, identity="abc")["step"] == 3


def test_resuming_drops_a_log_line_the_full_disk_cut_short(tmp_path):
    """A full disk cuts the training log's last line short (its write is partial): resuming keeps
    the complete lines up to the checkpoint's step instead of failing on the torn one, and
    re-running that run never succeeds otherwise."""
    from train.run_dir import RunLifecycle

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 10, "loss": 5.1}\n{"step": 20, "loss": 4.2}\n{"step": 30, "loss": 3.9}\n{"step": 40, "lo')
    RunLifecycle(tmp_path, "abc").truncate_log(20)
    assert log.read_text() == '{"step": 10, "loss": 5.1}\n{"step": 20, "loss": 4.2}\n'


def faulty_path(path: Path, code: int) -> Path:
    """``path`` on a file system that fails to stat it (``is_file``) with errno ``code``. MOCK: no
    NFS server here to fail for real (EIO, ESTALE)."""

    class Faulty(type(path)):
        def is_file(self) -> bool:
            raise OSError(code, os.strerror(code), str(self))

    return Faulty(path)


@pytest.mark.parametrize("where", ["stat", "load"])
@pytest.mark.parametrize("code", [errno.EIO, errno.ESTALE])
def test_a_file_system_fault_reading_a_checkpoint_is_a_fault_to_retry_not_bad_input(tmp_path, monkeypatch,
                                                                                    where, code):  # fmt: skip
    """An NFS server's EIO or ESTALE reading a sound checkpoint is no user error (which stops a
    sweep and says to delete the file): one line naming the file, WorkFailed (exit 4, retried), and
    the file is kept."""
    model, optimizer, scheduler = _parts()
    path = save_checkpoint(tmp_path, **_state(model, optimizer, scheduler))
    saved = path.read_bytes()
    if where == "stat":
        monkeypatch.setattr(checkpoint, "checkpoint_path", lambda run_dir: faulty_path(path, code))
    else:
        def failing_load(*args, **kwargs):  # MOCK: a file system that fails the read (no NFS here)
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(checkpoint.torch, "load", failing_load)
    with pytest.raises(WorkFailed) as info:
        read_checkpoint(tmp_path, identity="abc")
    message = str(info.value)
    assert message.startswith(f"{path}: could not read the checkpoint") and os.strerror(code) in message
    assert "\n" not in message and "delete" not in message
    assert path.read_bytes() == saved
