"""The one way a test waits for something another process does: poll a condition, never sleep a
fixed time. The timeout is a generous bound (a failure names what never happened); the wait itself
ends as soon as the condition holds, so a slow machine costs time, not a flaky test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float) -> T:
    """Poll ``condition()`` every ``interval_s`` until it is truthy and return its value; fail the
    test naming ``what`` after ``timeout_s``. Choose ``interval_s`` by what one poll costs: a read
    of /proc can run every 10 ms, a SLURM accounting query every 0.5 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
