"""One exit-status vocabulary (megadocs.exits.Exit) for every command: documented once, each
exception kind mapped to its status by the console script, certify's statuses members of it."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest

from megadocs import cli
from megadocs.errors import DiskFull, UserError, WorkFailed
from megadocs.exits import EXIT_MEANINGS, Exit
from search.certificate import CertifyExit, CertState, Support

ARCHITECTURE = Path(__file__).parents[2] / "docs" / "architecture.md"

RAISED = {  # what a handler raises -> the status the console script exits with
    UserError("--x: expected a number"): Exit.BAD_INPUT,
    WorkFailed("1 task(s) failed; re-run to resume them: shard 0"): Exit.WORK_FAILED,
    DiskFull("no space left on device writing x; re-run the same command once there is space"): Exit.WORK_FAILED,
    OSError(errno.ENOSPC, "No space left on device", "x"): Exit.WORK_FAILED,
    KeyboardInterrupt(): Exit.INTERRUPTED,
}


def test_every_status_has_one_meaning_documented_once():
    assert set(EXIT_MEANINGS) == set(Exit)
    assert len({status.value for status in Exit}) == len(Exit)  # an alias would be two meanings for one number
    text = ARCHITECTURE.read_text()
    for status in Exit:
        assert f"| {status.value} | `{status.name}` |" in text, status  # its row of the Conventions table


def test_certify_statuses_are_members_of_the_vocabulary_with_the_same_meaning():
    for status in CertifyExit:
        assert status.value in {s.value for s in Exit}, status
    assert CertifyExit.WORK_FAILED.value == Exit.WORK_FAILED and CertifyExit.CERTIFIED.value == Exit.OK


@pytest.mark.parametrize(("state", "support", "failed_runs", "expected"), [
    (CertState.FAILED, None, True, CertifyExit.WORK_FAILED),  # was 1: blocked by a failed/cancelled run
    (CertState.CERTIFIED, Support.INTERIOR, True, CertifyExit.WORK_FAILED),
    (CertState.FAILED, None, False, CertifyExit.NOT_CERTIFIED),  # no finite loss: the answer is no
    (CertState.SEARCHING, None, False, CertifyExit.NOT_CERTIFIED),  # its run budget spent
    (CertState.CERTIFIED, Support.BOUND, False, CertifyExit.CERTIFIED_ON_BOUND),
    (CertState.CERTIFIED, Support.INTERIOR, False, CertifyExit.CERTIFIED),
])
def test_a_failed_run_is_work_failed_not_an_answer(state, support, failed_runs, expected):
    assert CertifyExit.of([(state, support, failed_runs)]) is expected


@pytest.mark.parametrize("raised", list(RAISED), ids=lambda exc: type(exc).__name__)
def test_the_console_script_maps_each_kind_of_stop_to_its_status(raised, monkeypatch, capsys):
    """A job-array task that failed exited 2 (bad input): a script could not tell "fix the
    input" from "re-run". A full disk exited 1, the same as "not certified"."""
    def handler(args):
        raise raised

    parser = argparse.ArgumentParser(prog="megadocs")
    parser.set_defaults(func=handler)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == RAISED[raised]
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
