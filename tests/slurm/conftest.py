"""Fixtures for the tests that run on the real local SLURM cluster (`slurm/local-cluster.sh up`).

Every test module here sets `pytestmark = pytest.mark.slurm`: tests/conftest.py skips them where
no cluster answers, except in CI (MEGADOCS_REQUIRE_SLURM=1), where a missing cluster is a failure.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests import waiting

REPO = Path(__file__).resolve().parents[2]
LOCAL_PROFILE = REPO / "slurm" / "profiles" / "local.yaml"
CLUSTER_SCRIPT = REPO / "slurm" / "local-cluster.sh"
POLL_S = 0.5
T = TypeVar("T")


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The partition name of a reachable cluster (fails, not skips, when none answers)."""
    if shutil.which("sinfo") is None:
        pytest.fail(f"SLURM is not installed; run {CLUSTER_SCRIPT} up")
    probe = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"no SLURM cluster answers (sinfo: {probe.stderr.strip()}); run {CLUSTER_SCRIPT} up")
    return probe.stdout.split()[0].rstrip("*")


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    """A real token store from the offline stdlib corpus, small enough that a cluster job's
    epoch (context 128, batch 16) is ~40 optimizer steps of a tiny model."""
    from train.store import prepare

    out = tmp_path_factory.mktemp("slurm-store") / "stdlib-40"
    prepare("stdlib", out, vocab_size=512, val_docs=8, max_docs=40, seed=0)
    return out


@pytest.fixture(autouse=True)
def _jobs_pickled_by_value():
    """Test helper modules are not installed: ship them inside the job pickle."""
    import cloudpickle

    from tests.slurm import jobs

    cloudpickle.register_pickle_by_value(jobs)
    yield
    cloudpickle.unregister_pickle_by_value(jobs)


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    """`tests.waiting.wait_for` at the pace of a SLURM query (every `POLL_S`)."""
    return waiting.wait_for(predicate, timeout_s, what, interval_s=POLL_S)


def sacct_history(job_id: str) -> list[tuple[str, str]]:
    """(JobID, State) of every allocation record of `job_id`, oldest first (requeues included)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-D", "-j", job_id, "-o", "JobID,State"],
        capture_output=True, text=True, check=True,
    ).stdout
    return [tuple(line.split("|")[:2]) for line in out.splitlines() if line.strip()]


TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED")


def final_history(job_id: str, timeout_s: float = 60) -> list[str]:
    """The states of every attempt of `job_id`, once accounting has recorded the last one's end."""
    def ended():
        states = [state.split()[0] for _, state in sacct_history(job_id)]
        return states if states and states[-1] in TERMINAL else None

    return wait_for(ended, timeout_s, f"accounting to record the end of job {job_id}")


def slurm_state(job_id: str) -> str:
    """The job's current state as the controller reports it (squeue), else accounting's last."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
    if out.strip():
        return out.split()[0]
    history = sacct_history(job_id)
    return history[-1][1].split()[0] if history else "UNKNOWN"


def wait_jobs(executor, job_ids: list[str], timeout_s: float) -> list:
    """Poll a search executor until no job is running; return the final polls in order."""
    from megadocs.executors import JobState

    def finished():
        polls = [executor.poll(job_id) for job_id in job_ids]
        return polls if all(p.state != JobState.RUNNING for p in polls) else None

    return wait_for(finished, timeout_s, f"jobs {job_ids} to finish")
