"""A real `megadocs train` process stopped by SIGTERM (a scheduler) or SIGINT (Ctrl-C) mid-run
saves a checkpoint at the step boundary, and the re-run resumes to bit-identical metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from megadocs.exits import Exit
from megadocs.formats import RunMetrics
from train.loop import run
from train.train_cli import load_run_config

EXIT_PREEMPTED = Exit.PREEMPTED
EXIT_INTERRUPTED = Exit.INTERRUPTED


def _megadocs(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("megadocs")), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def config(small_store, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "run.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"store": str(small_store), "real_epochs": 1, "context": 64},
        "optim": {"batch_size": 32, "micro_batch_size": 16},
        "eval": {"val_windows": 128},
        "checkpoint_every": 1000,  # the only mid-run checkpoint is the one the signal triggers
        "device": "cpu",
    }))
    return path


@pytest.fixture(scope="module")
def uninterrupted(config, tmp_path_factory) -> RunMetrics:
    """The reference every interrupted run must equal, trained once in this process (one thread,
    like the subprocesses)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(load_run_config(config), tmp_path_factory.mktemp("resume") / "uninterrupted")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("signum", "status", "word"), [
    pytest.param(signal.SIGTERM, EXIT_PREEMPTED, "preempted", id="sigterm"),
    pytest.param(signal.SIGINT, EXIT_INTERRUPTED, "interrupted", id="sigint", marks=pytest.mark.slow),
])
def test_signal_then_rerun_matches_an_uninterrupted_run(config, uninterrupted, tmp_path, signum, status, word):
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_megadocs("train", str(config), "--out", str(interrupted)), env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = interrupted / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().strip()):  # some steps are done
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no training step logged in 120 s"
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    logged = json.loads(log.read_text().splitlines()[-1])["step"]
    match = re.search(word + r" at step (\d+); checkpoint saved; re-run the same command to resume", err)
    assert match, err
    stopped = int(match.group(1))
    assert stopped >= logged >= 10
    assert (interrupted / "checkpoint" / "state.pt").is_file() and not (interrupted / "metrics.json").exists()
    import torch

    assert torch.load(interrupted / "checkpoint" / "state.pt", weights_only=True)["step"] == stopped
    assert "Traceback" not in err and "KeyboardInterrupt" not in err

    resumed = subprocess.run(_megadocs("train", str(config), "--out", str(interrupted)), env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    b = uninterrupted
    a = RunMetrics.load(interrupted / "metrics.json")
    assert a.steps == b.steps > stopped
    assert a.val_losses == b.val_losses  # bit-identical, not approximately equal
    assert a.val_loss == b.val_loss and a.tokens_seen == b.tokens_seen


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it():
    """A sweep's local job starts with SIGINT ignored (the terminal's Ctrl-C is its controller's,
    which stops the job with SIGTERM): the run must not take Ctrl-C back; SIGTERM still stops it."""
    from train.preemption import PreemptionSignals

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with PreemptionSignals() as signals:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert signals.requested is None
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert signals.requested == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
