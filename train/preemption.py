"""Preemption: SIGTERM/SIGUSR2/SIGINT become a flag the training loop reads at a step boundary.

The handler only records the signal (`PreemptionSignals`); the loop finishes the step in flight,
saves a checkpoint, waits until it is on disk, hands the signal to the handler installed before
(submitit's requeue), and raises `Preempted`. The CLI exits with status 75
(`megadocs.exits.Exit.PREEMPTED`), or 130 for SIGINT (Ctrl-C); a second Ctrl-C interrupts at once
and loses only the steps since the last checkpoint on disk. Several ranks stop together:
`PreemptionSignals.agree` is true on every rank when any saw a signal (`train.loop.Trainer` holds
the one check that knows the parallelism).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from train.distributed import DistributedContext

__all__ = ["PREEMPTION_SIGNALS", "Preempted", "PreemptionSignals"]

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on SIGTERM/SIGUSR2/SIGINT after saving a checkpoint; re-running resumes it."""

    def __init__(self, step: int, run_dir: Path, signum: int = signal.SIGTERM):
        what = "interrupted" if signum == signal.SIGINT else "preempted"
        super().__init__(f"{what} at step {step}; checkpoint saved in {run_dir}; re-run the same command to resume")
        self.step = step
        self.run_dir = run_dir
        self.signum = signum

    @property
    def interrupted(self) -> bool:
        """True for SIGINT (Ctrl-C): the CLI exits 130 instead of 3."""
        return self.signum == signal.SIGINT


PEER_STOP = 0  # `PreemptionSignals.requested` when another rank saw the signal


class PreemptionSignals:
    """While active, SIGTERM/SIGUSR2/SIGINT only set `requested`; the loop acts at a step boundary.

    `raise_if_requested()` hands the signal to the handler that was installed before (e.g.
    submitit's SIGUSR2 requeue) once the checkpoint is safe, then raises `Preempted`. A first
    SIGINT restores Python's own handler, so a second Ctrl-C interrupts at once. A process started
    with SIGINT ignored (a shell's background job, a sweep's local job: the terminal's Ctrl-C is
    the controller's to handle, which then stops its jobs with SIGTERM) keeps ignoring it. Outside
    the main thread signals cannot be caught, so nothing is installed there.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.requested = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT, signal.default_int_handler))

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPTION_SIGNALS:
                if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def agree(self, dist: DistributedContext) -> bool:
        """Whether any rank saw a signal; then every rank stops at this step boundary."""
        stop = dist.any(self.requested is not None)
        if stop and self.requested is None:
            self.requested = PEER_STOP
        return stop

    def raise_if_requested(self, step: int, run_dir: Path) -> None:
        """After the checkpoint of `step` is saved: hand the signal on, then raise Preempted."""
        if self.requested is None:
            return
        previous = self._previous.get(self.requested)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.requested, None)
        raise Preempted(step, run_dir, self.requested)
