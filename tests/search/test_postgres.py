"""A certification against a real PostgreSQL server (a throwaway one started in a temp dir)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from megadocs.cli import main
from search.ledger import read_runs
from search.status import summarize

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_url():
    binaries = [shutil.which(name) for name in ("initdb", "pg_ctl", "postgres")]
    if not all(binaries):
        if os.environ.get("MEGADOCS_REQUIRE_POSTGRES", "") not in ("", "0"):
            pytest.fail("MEGADOCS_REQUIRE_POSTGRES is set but initdb/pg_ctl/postgres are not on PATH")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl, postgres) not found")
    # not under pytest's tmp dir: its parents are private to root, the server user cannot enter
    root = Path(tempfile.mkdtemp(prefix="megadocs-pg-"))
    user = None
    if os.geteuid() == 0:  # postgres refuses to run as root: use an unprivileged account
        for name in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        os.chmod(root, 0o755)
        shutil.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", _free_port()
    run_as = {"user": user.pw_uid, "group": user.pw_gid} if user else {}
    env = {**os.environ, "HOME": str(root)}
    subprocess.run(["initdb", "-D", str(data), "-U", "megadocs", "--auth=trust"], check=True,
                   capture_output=True, cwd=root, env=env, **run_as)
    subprocess.run(["pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True, cwd=root, env=env, **run_as)
    try:
        yield f"postgresql://megadocs@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True, cwd=root,
                       env=env, **run_as)
        shutil.rmtree(root, ignore_errors=True)


def test_certification_on_postgresql(make_sweep, postgres_url):
    path = make_sweep(ledger=postgres_url, certifications=[
        {"name": "a", "fixed": {"method": "simple", "g": 4}},
        {"name": "b", "fixed": {"method": "stitched", "g": 4}, "warm_start": "a"},
    ])
    assert main(["search", "certify", str(path), "--no-progress"]) == 0
    summaries = {s.name: s for s in summarize(path)}
    assert summaries["a"].state.value == summaries["b"].state.value == "certified"
    assert summaries["b"].start == summaries["a"].certificate.point
    runs = read_runs(path)
    assert runs and all(r["status"] == "completed" for r in runs)
    # the controller lock lives in the same server
    from search.ledger import ControllerBusy, Ledger

    with Ledger(postgres_url, "t").controller_lock():
        assert main(["search", "certify", str(path), "--no-progress"]) == 2
        with pytest.raises(ControllerBusy, match="held by another controller"):
            Ledger(postgres_url, "t")._acquire()
