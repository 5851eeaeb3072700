"""A certification against a real PostgreSQL server (a throwaway one started in a temp dir)."""

from __future__ import annotations

import contextlib
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

from .conftest import READ_ONLY_COMMANDS

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(password: str | None = None):
    """A throwaway PostgreSQL server: trust authentication, or scram-sha-256 with ``password``
    for the superuser ``megadocs``; yields its port."""
    binaries = [shutil.which(name) for name in ("initdb", "pg_ctl", "postgres")]
    if not all(binaries):
        if os.environ.get("MEGADOCS_REQUIRE_POSTGRES", "") not in ("", "0"):
            pytest.fail("MEGADOCS_REQUIRE_POSTGRES is set but initdb/pg_ctl/postgres are not on PATH")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl, postgres) not found")
    # not under pytest's tmp dir: its parents are private to root, the server user cannot enter
    root = Path(tempfile.mkdtemp(prefix="megadocs-pg-"))
    user = None
    auth = ["--auth=trust"]
    if password is not None:
        (root / "pwfile").write_text(password + "\n")
        auth = ["--auth=scram-sha-256", f"--pwfile={root / 'pwfile'}"]
    if os.geteuid() == 0:  # postgres refuses to run as root: use an unprivileged account
        for name in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        os.chmod(root, 0o755)
        for path in (root, *root.iterdir()):
            shutil.chown(path, user.pw_uid, user.pw_gid)
    data, port = root / "data", _free_port()
    run_as = {"user": user.pw_uid, "group": user.pw_gid} if user else {}
    env = {**os.environ, "HOME": str(root)}
    subprocess.run(["initdb", "-D", str(data), "-U", "megadocs", *auth], check=True,
                   capture_output=True, cwd=root, env=env, **run_as)
    subprocess.run(["pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True, cwd=root, env=env, **run_as)
    try:
        yield port
    finally:
        subprocess.run(["pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True, cwd=root,
                       env=env, **run_as)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url():
    with _server() as port:
        yield f"postgresql://megadocs@127.0.0.1:{port}/postgres"


SECRET = "S3cr3t-pw-7f1c"


@pytest.fixture
def password_server(monkeypatch, tmp_path):
    """A server that wants SECRET; no password reaches libpq from the environment by accident."""
    for name in ("PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.pgpass of the machine's user
    with _server(SECRET) as port:
        yield port


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


def _outputs(capfd, argv) -> tuple[int, str, str]:
    """Exit status, stdout and stderr (file-descriptor level: also logging and warnings)."""
    status = main(argv)
    captured = capfd.readouterr()
    return status, captured.out, captured.err


def test_password_never_appears_in_any_output(make_sweep, workdir, password_server, capfd):
    url = f"postgresql://megadocs:{SECRET}@127.0.0.1:{password_server}/postgres"
    path = make_sweep(ledger=url)
    seen = []

    def run(command):
        argv = [word.format(sweep=path, tmp=workdir) for word in command]
        status, out, err = _outputs(capfd, argv)
        seen.append((argv, out + err))
        return status, err

    # working commands
    assert run(["search", "certify", "{sweep}", "--no-progress"])[0] == 0
    for command in READ_ONLY_COMMANDS:
        assert run(command)[0] in (0, 1), seen[-1]  # fit may find too few points: exit 1, still no secret
    # the "held by another controller" refusal names the ledger
    from search.ledger import Ledger

    ledger = Ledger(url, "t")
    assert SECRET not in ledger.url and "***" in ledger.url  # the ledger's own attribute
    with ledger.controller_lock():
        status, err = run(["search", "certify", "{sweep}", "--no-progress"])
        assert status == 2 and "held by another controller" in err and "megadocs:***@127.0.0.1" in err, err

    # failing commands: a wrong password, and a server that is not there (the secret stays in the URL)
    for bad in (f"postgresql://megadocs:{SECRET}x@127.0.0.1:{password_server}/postgres",
                f"postgresql://megadocs:{SECRET}@127.0.0.1:{_free_port()}/postgres"):
        path = make_sweep(name="t", ledger=bad)
        for command in [["search", "certify", "{sweep}", "--no-progress"], *READ_ONLY_COMMANDS]:
            status, err = run(command)
            assert status == 2, seen[-1]
            assert err.count("\n") == 1 and "cannot open postgresql://megadocs:***@127.0.0.1" in err, err
    leaks = [argv for argv, text in seen if SECRET in text]
    assert not leaks, leaks
    written = [workdir / "table.csv", *(workdir / "report").rglob("*.md")]  # what export and report wrote
    assert written[1:] and all(SECRET not in path.read_text() for path in written)
    assert len(seen) == 1 + len(READ_ONLY_COMMANDS) + 1 + 2 * (1 + len(READ_ONLY_COMMANDS))


@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE", "none"])
def test_password_from_the_environment_or_a_pgpass_file(make_sweep, workdir, password_server, capfd,
                                                        monkeypatch, source):
    """The sweep file names no password; libpq takes it from PGPASSWORD or a ~/.pgpass-style file."""
    if source == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", SECRET)
    elif source == "PGPASSFILE":
        pgpass = workdir / "pgpass"
        pgpass.write_text(f"127.0.0.1:{password_server}:*:megadocs:{SECRET}\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
    path = make_sweep(ledger=f"postgresql://megadocs@127.0.0.1:{password_server}/postgres")
    status, out, err = _outputs(capfd, ["search", "certify", str(path), "--no-progress"])
    if source == "none":
        assert status == 2 and err.count("\n") == 1 and "cannot open postgresql://megadocs@127.0.0.1" in err, err
    else:
        assert status == 0, err
        assert [r["status"] for r in read_runs(path)] and all(r["status"] == "completed" for r in read_runs(path))
    assert SECRET not in out + err
