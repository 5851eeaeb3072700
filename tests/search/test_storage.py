"""A trial's attributes are written together or not at all, on every kind of ledger.

A controller SIGKILLed between two of a trial's attributes once left a run's job id without its
attempt count (tests/search/test_resume.py failed so, once, in CI). The kill here is real; only its
moment is chosen: the child process kills itself as its second attribute is handed to the database
(a SQLite or PostgreSQL transaction) or to the journal file, the point where writing them one by one
had already committed the first.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from search.ledger import Ledger

ATTRS = {"job_id": "4242", "job_folder": "/jobs", "attempts": 1}

KILLED_MID_UPDATE = """
import os, signal, sys
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend
from search.ledger import Ledger

url, trial_id, attrs = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3])
handed = 0

def killed_at_the_second(original):
    def wrapper(*args, **kwargs):
        global handed
        handed += 1
        if handed == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapper

RDBStorage._set_trial_attr_without_commit = killed_at_the_second(RDBStorage._set_trial_attr_without_commit)
JournalFileBackend.append_logs = killed_at_the_second(JournalFileBackend.append_logs)
Ledger(url, "t").update(trial_id, **attrs)
"""


def killed_mid_update(url: str) -> dict:
    """A trial's attributes after a process updating three of them was killed at the second."""
    ledger = Ledger(url, "t")
    trial_id = ledger.storage.create_new_trial(ledger.study_id("t/a", create=True))
    child = subprocess.run([sys.executable, "-c", KILLED_MID_UPDATE, url, str(trial_id), repr(ATTRS)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode in (0, -9), child.stderr
    return Ledger(url, "t", create=False).storage.get_trial(trial_id).user_attrs


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_kill_mid_update_leaves_all_attributes_or_none(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if kind == "sqlite" else str(tmp_path / "ledger.journal")
    attrs = killed_mid_update(url)
    assert attrs in ({}, ATTRS), attrs


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_an_update_writes_every_attribute_and_replaces_earlier_values(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if kind == "sqlite" else str(tmp_path / "ledger.journal")
    ledger = Ledger(url, "t")
    trial_id = ledger.storage.create_new_trial(ledger.study_id("t/a", create=True))
    ledger.update(trial_id, **ATTRS)
    ledger.update(trial_id, attempts=2, job_id=None)
    assert Ledger(url, "t", create=False).storage.get_trial(trial_id).user_attrs == {**ATTRS, "attempts": 2,
                                                                                    "job_id": None}
