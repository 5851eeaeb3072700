"""The local cluster itself: the script is idempotent, jobs run as arrays, accounting sees them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm.conftest import CLUSTER_SCRIPT, LOCAL_PROFILE, sacct_history, wait_for, wait_jobs
from tests.slurm.jobs import where_am_i

pytestmark = pytest.mark.slurm


@pytest.mark.skipif(os.geteuid() != 0, reason="`up` needs root (it would ask sudo for a password)")
def test_up_again_is_a_no_op_and_status_reports_every_daemon(slurm_cluster):
    state = Path(subprocess.run([CLUSTER_SCRIPT, "status"], capture_output=True, text=True).stdout.split()[2])
    before = {p.name: p.read_text() for p in (state / "pids").iterdir()}

    up = subprocess.run([CLUSTER_SCRIPT, "up"], capture_output=True, text=True, timeout=120)
    status = subprocess.run([CLUSTER_SCRIPT, "status"], capture_output=True, text=True)

    assert up.returncode == 0, up.stderr
    assert {p.name: p.read_text() for p in (state / "pids").iterdir()} == before  # nothing restarted
    assert status.returncode == 0, status.stdout
    for daemon in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"):
        assert f"{daemon}: running" in status.stdout
    assert "idle" in status.stdout or "mixed" in status.stdout or "allocated" in status.stdout


def _free_port_base(count: int = 4) -> int:
    """The first of `count` consecutive free TCP ports on 127.0.0.1 above the default cluster's."""
    for base in range(7817, 9000, 10):
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free ports")


def _alive(pid: str) -> bool:
    return Path(f"/proc/{pid.strip()}").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="`up` needs root (it would ask sudo for a password)")
def test_a_second_cluster_comes_up_and_down_without_touching_anything_else(slurm_cluster, tmp_path):
    """`down` stops exactly what its `up` started: here a second cluster (own state, ports, no
    /etc link) next to the running one, sharing its munged."""
    main_state = Path(subprocess.run([CLUSTER_SCRIPT, "status"], capture_output=True, text=True).stdout.split()[2])
    main_pids = {p.name: p.read_text() for p in (main_state / "pids").iterdir()}
    state = tmp_path / "second"
    env = {**os.environ, "MEGADOCS_SLURM_STATE": str(state), "MEGADOCS_SLURM_PORT": str(_free_port_base()),
           "MEGADOCS_SLURM_LINK_ETC": "0", "MEGADOCS_SLURM_CLUSTER": "second"}
    env.pop("SLURM_CONF", None)
    script = [str(CLUSTER_SCRIPT)]
    try:
        assert subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=180).returncode == 0
        started = {p.name: p.read_text() for p in (state / "pids").iterdir()}
        assert set(started) >= {"mariadbd", "slurmdbd", "slurmctld", "slurmd"}
        client = {**env, "SLURM_CONF": str(state / "etc" / "slurm.conf")}
        job = subprocess.run(["sbatch", "--parsable", "--wait", "--output", str(tmp_path / "job.out"),
                              "--wrap", "true"], env=client, capture_output=True, text=True, timeout=60)
        assert job.returncode == 0, job.stderr
        assert subprocess.run([*script, "up"], env=env, capture_output=True, text=True).returncode == 0
        assert {p.name: p.read_text() for p in (state / "pids").iterdir()} == started  # idempotent
    finally:
        down = subprocess.run([*script, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not any(_alive(pid) for pid in started.values())  # everything it started is stopped
    assert subprocess.run([*script, "status"], env=env, capture_output=True).returncode != 0
    # ... and nothing else: the first cluster (and the munged the second one shared) still run
    assert {p.name: p.read_text() for p in (main_state / "pids").iterdir()} == main_pids
    assert all(_alive(pid) for pid in main_pids.values())
    assert subprocess.run(["sinfo"], capture_output=True).returncode == 0


def test_a_job_array_runs_through_the_profile_and_accounting_records_it(slurm_cluster, tmp_path):
    from megadocs.executors import JobState, SlurmExecutor, load_profile

    executor = SlurmExecutor(tmp_path / "jobs", load_profile(LOCAL_PROFILE), max_parallel=4)
    tasks = [lambda x=x: where_am_i(x) for x in range(3)]
    job_ids = executor.submit(tasks)

    polls = wait_jobs(executor, job_ids, timeout_s=90)
    assert [p.state for p in polls] == [JobState.DONE] * 3, [p.reason for p in polls]
    results = [p.value for p in polls]
    array_id = job_ids[0].split("_")[0]
    assert job_ids == [f"{array_id}_{i}" for i in range(3)]  # one array, not three jobs
    assert [r["value"] for r in results] == [0, 1, 4]
    assert {r["array_job_id"] for r in results} == {array_id}
    assert sorted(r["array_task_id"] for r in results) == ["0", "1", "2"]
    assert {r["python"] for r in results} == {sys.executable}  # the controller's (this clone's) python
    # accounting (slurmdbd) knows every task's final state
    wait_for(
        lambda: [state for _, state in sacct_history(array_id)] == ["COMPLETED"] * 3,
        timeout_s=120, what=f"sacct to record array {array_id} as COMPLETED",
    )
    assert [jid for jid, _ in sacct_history(array_id)] == job_ids


def test_status_liveness_follows_slurm_states_for_a_reattached_job(slurm_cluster, tmp_path):
    """What `search status` asks after a controller died: a fresh executor, re-attached to a job
    id and folder from the ledger, sees the job running, then gone once SLURM cancelled it."""
    from megadocs.executors import SlurmExecutor, load_profile
    from megadocs.trust import UntrustedPath
    from tests.slurm.jobs import sleep_for

    folder = tmp_path / "jobs"
    submitter = SlurmExecutor(folder, load_profile(LOCAL_PROFILE), max_parallel=4)
    [job_id] = submitter.submit([lambda: sleep_for(120)])
    try:
        wait_for(lambda: "RUNNING" in [state for _, state in sacct_history(job_id)], 120, "the job to run")
        status_side = SlurmExecutor(folder, load_profile(LOCAL_PROFILE), max_parallel=4)
        assert status_side.alive(job_id, str(folder))
        with pytest.raises(UntrustedPath):  # a folder outside the executor's own
            SlurmExecutor(folder, load_profile(LOCAL_PROFILE), max_parallel=4).alive(job_id, str(tmp_path))
    finally:
        subprocess.run(["scancel", job_id], check=True)
    later = SlurmExecutor(folder, load_profile(LOCAL_PROFILE), max_parallel=4)
    wait_for(lambda: not later.alive(job_id, str(folder)), 120, "SLURM to report the job ended")
