"""megadocs.procs' reaper: what an owner started dies with the owner, and nothing else does.

Real processes throughout (`sleep` stands for vLLM's engine core; tests/gen/test_vllm.py runs the
real engine under a SIGKILLed owner)."""

from __future__ import annotations

import subprocess
import sys

import psutil

from megadocs.procs import process_start, start_reaper, stop_reaper


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


def test_an_owner_gone_without_closing_takes_its_processes_along():
    engine = _sleeper()
    reaper = start_reaper([engine.pid])
    try:
        reaper.stdin.close()  # what the owner's death does to the pipe: EOF, nothing written
        reaper.wait(timeout=120)
        assert engine.wait(timeout=120) == -9
    finally:
        engine.kill()


def test_an_owner_that_closed_them_leaves_its_processes_alone():
    engine = _sleeper()
    reaper = start_reaper([engine.pid])
    try:
        stop_reaper(reaper)
        assert reaper.returncode == 0 and engine.poll() is None
    finally:
        engine.kill()


def test_a_pid_taken_by_another_process_since_is_not_killed():
    """The reaper names each process by pid and start time: a pid reused is another process."""
    other = _sleeper()
    try:
        assert process_start(other.pid) is not None
        reaper = subprocess.Popen([sys.executable, "-m", "megadocs.procs", f"{other.pid}:{process_start(other.pid) - 1}"],
                                  stdin=subprocess.PIPE)
        reaper.stdin.close()
        assert reaper.wait(timeout=120) == 0
        assert other.poll() is None and psutil.pid_exists(other.pid)
    finally:
        other.kill()


def test_nothing_to_guard_starts_no_reaper():
    gone = _sleeper()
    gone.kill()
    gone.wait()
    assert start_reaper([]) is None and start_reaper([gone.pid]) is None
