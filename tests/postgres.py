"""A throwaway PostgreSQL server in a temp dir, for the postgres tests and the sweep rehearsal
(benchmarks/rehearsal.py): trust authentication, or scram-sha-256 with a password for the
superuser ``megadocs``. Needs ``initdb``/``pg_ctl``/``postgres`` on PATH
(:class:`PostgresUnavailable` otherwise; tests turn it into a skip, or a failure in CI).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresUnavailable", "ThrowawayPostgres", "free_port", "unavailable"]

REQUIRE_ENV = "MEGADOCS_REQUIRE_POSTGRES"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on PATH."""


def unavailable() -> str | None:
    """Why no throwaway server can start here, or None."""
    if not all(shutil.which(name) for name in ("initdb", "pg_ctl", "postgres")):
        return "PostgreSQL binaries (initdb, pg_ctl, postgres) not found"
    return None


PORT_TRIES = 5
"""Ports a server is started on before its start counts as failed (see ThrowawayPostgres.__enter__)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as server: server.url``; stopped and deleted on exit.

    Root cannot run postgres: as root the server runs as the ``postgres`` (or ``nobody``) account.
    """

    def __init__(self, password: str | None = None) -> None:
        if unavailable():
            raise PostgresUnavailable(unavailable())
        self.password = password
        # not under pytest's tmp dir: its parents are private to root, the server user cannot enter
        self.root = Path(tempfile.mkdtemp(prefix="megadocs-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._run_as: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"postgresql://megadocs@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "HOME": str(self.root)}
        if self.password is not None:  # for psql; never shown
            env["PGPASSWORD"] = self.password
        return subprocess.run(list(args), check=check, capture_output=True, cwd=self.root, env=env, **self._run_as)

    def __enter__(self) -> ThrowawayPostgres:
        auth = ["--auth=trust"]
        if self.password is not None:
            (self.root / "pwfile").write_text(self.password + "\n")
            auth = ["--auth=scram-sha-256", f"--pwfile={self.root / 'pwfile'}"]
        if os.geteuid() == 0:  # postgres refuses to run as root: use an unprivileged account
            user = None
            for name in ("postgres", "nobody"):
                try:
                    user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            os.chmod(self.root, 0o755)
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, user.pw_uid, user.pw_gid)
            self._run_as = {"user": user.pw_uid, "group": user.pw_gid}
        self._pg("initdb", "-D", str(self.data), "-U", "megadocs", *auth)
        for _ in range(PORT_TRIES - 1):
            try:
                self.start()
                return self
            except subprocess.CalledProcessError:
                # the free port was taken meanwhile (initdb takes seconds; any process's outgoing
                # connection may get it as its local port): another one, told by the server's log
                if "Address already in use" not in self.log_text():
                    raise
                self.port = free_port()
        self.start()  # the last try: its failure is the error
        return self

    def log_text(self) -> str:
        """The server's log so far ("" before it wrote one)."""
        try:
            return (self.root / "log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def default_tablespace(self, path: Path) -> None:
        """Keep the tables created from now on (a new ledger's) in a tablespace at ``path`` (e.g. a
        small tmpfs, so that the server's disk fills up while its WAL, in the data folder, has room)."""
        if self._run_as:
            os.chown(path, self._run_as["user"], self._run_as["group"])
        for sql in (f"CREATE TABLESPACE small LOCATION '{path}'",
                    "ALTER DATABASE postgres SET default_tablespace = small"):
            self._pg("psql", "-h", str(self.root), "-p", str(self.port), "-U", "megadocs", "-d", "postgres",
                     "-v", "ON_ERROR_STOP=1", "-c", sql)

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def running(self) -> bool:
        return self._pg("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (its clients' connections are cut), stay down ``down_s``, start again."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def __exit__(self, *exc) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
