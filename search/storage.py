"""Opening a ledger's database: one Optuna storage per URL, safe for the processes that share it.

A ledger URL is ``sqlite:///PATH``, a server's ``postgresql://...`` or a journal file path
(docs/architecture.md, "Search ledger"). This module owns what opening one involves, so that
:mod:`search.ledger` reads as the ledger's layout alone:

- creating it once when two controllers open a fresh ledger together (:func:`_create_rdb`);
- readers (``create=False``) that create nothing, and refuse a missing or half-created ledger in
  one line (:class:`LedgerMissing`), also on a full disk (:func:`_reader_url`);
- errors that name the ledger (its file, or its URL with the password masked), a full disk
  included (:class:`_Naming`);
- a database server's restart waited out for up to :data:`LEDGER_OUTAGE_S` (:class:`_Reconnecting`);
- a trial's attributes written together or not at all (:func:`set_trial_user_attrs`).

:func:`connect` is what the ledger uses; :func:`open_storage` is the bare storage, for tools that
copy or inspect a ledger (``search dashboard``, benchmarks).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from megadocs.errors import UserError, disk_full_message, names_file
from megadocs.procs import exclusive_lock
from megadocs.trust import redact_url, scrub

log = logging.getLogger(__name__)

__all__ = ["LEDGER_OUTAGE_S", "POSTGRES_DRIVERS", "LedgerMissing", "connect", "ledger_missing", "open_storage", "set_trial_user_attrs"]

LEDGER_OUTAGE_S = 3600.0
"""How long an open ledger may stay unreachable (a database server restarting, a network cut)
before its user gives up with one line; meanwhile every call waits and retries."""
RECONNECT_EVERY_S = 2.0


class LedgerMissing(UserError):
    """A read-only command named a ledger that does not exist, or not completely yet (a controller
    is creating it); nothing was created."""


def ledger_missing(what: str) -> LedgerMissing:
    """The refusal of a read-only command whose ledger is not there (``what`` says how)."""
    return LedgerMissing(
        f"ledger: {what} (check out:, ledger: and name: in the sweep file, or run `megadocs search certify` "
        "first); nothing was created"
    )


def open_storage(url: str, *, create: bool = True):
    """An Optuna storage for a ledger URL: sqlite:///..., postgresql://..., or a journal file path.

    Args:
        create: make the database/file (and its folder) when missing; readers pass False and get
            :class:`LedgerMissing` instead, with nothing created.

    Raises:
        UserError: the server cannot be reached or refuses us (the message shows the URL with its
            password masked).
    """
    import optuna

    if url.startswith("sqlite:///"):
        shown, path = url, _sqlite_path(url)
        if path:
            if not create and not Path(path).is_file():
                raise ledger_missing(f"{path} does not exist")
            if create:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not create:
            url = _reader_url(url, path) if path else url
            _require_schema(url, shown=shown)
        # a reader (status) may hold the file briefly: wait instead of failing
        storage = _create_rdb(url, {"connect_args": {"timeout": 60}}, create=create, shown=shown,
                              lock_path=f"{path}.init-lock" if create and path else None)
        if create:  # a reader changes nothing: the creator set WAL mode, which the file keeps
            _fast_sqlite(storage.engine)
        return storage
    if "://" in url:
        driver_url = _postgres_driver(url) if url.startswith("postgresql://") else url
        if not create:
            _require_schema(driver_url, shown=url)
        return _create_rdb(driver_url, {}, create=create, shown=url)
    from optuna.storages.journal import JournalFileBackend

    if not create and not Path(url).is_file():
        raise ledger_missing(f"{url} does not exist")
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


def _sqlite_path(url: str) -> str | None:
    """The database file of a ``sqlite:///PATH`` URL, as written; None for another URL or an
    in-memory database.

    >>> _sqlite_path("sqlite:////runs/s/ledger.db"), _sqlite_path("sqlite:///:memory:"), _sqlite_path("l.journal")
    ('/runs/s/ledger.db', None, None)
    """
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    return path if path and not path.startswith(":") else None


def _reader_url(url: str, path: str) -> str:
    """The URL a reader opens the SQLite ledger ``path`` with: ``url``, or the file alone
    (immutable) where a full disk leaves no room to open it as usual.

    Reading a WAL-mode database maps its 32 KiB wal-index (``PATH-shm``), which SQLite creates
    and sizes when no connection has the file open; on a full disk that fails
    (SQLITE_IOERR_SHMSIZE, "disk I/O error"). A failure to size it means no connection has the
    file open (an open one has sized it), and with an empty log (``PATH-wal``) every commit is in
    the file itself: reading the file without an index or locks then reads the whole ledger. A
    writer cannot start meanwhile: it needs the same index. Costs one extra open (~1 ms). A file
    that is no database (or one cut short) is refused in one line naming it (UserError).
    """
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
        try:
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # maps the index
        finally:
            connection.close()
    except sqlite3.OperationalError as exc:
        wal = Path(f"{path}-wal")
        if exc.sqlite_errorname == "SQLITE_IOERR_SHMSIZE" and (not wal.exists() or wal.stat().st_size == 0):
            return f"sqlite:///file:{quote(path)}?immutable=1&uri=true"
    except sqlite3.DatabaseError as exc:  # not a database, or one cut short: its one line, the file untouched
        raise _cannot_open(url, exc) from None
    return url


def _create_rdb(url: str, engine_kwargs: dict[str, Any], *, create: bool = True, shown: str | None = None,
                lock_path: str | None = None):
    """An RDBStorage, created once even when two processes open a fresh ledger at the same time.

    Optuna creates its tables and version row on first open; two controllers started together
    on a new ledger race there (``table already exists``, a duplicate version row). A local
    SQLite file is serialised by a file lock beside it; other databases retry, since the loser's
    second attempt finds the tables made. Readers (``create=False``) never create tables. Errors
    that remain are one line naming the URL with its password masked.
    """
    import optuna

    shown = shown or url
    last: Exception | None = None
    for attempt in range(5 if create else 1):
        try:
            if lock_path is None:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
            with exclusive_lock(lock_path):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
        except Exception as exc:  # noqa: BLE001 - driver errors vary; report the URL, never its password
            if disk_full_message(exc) is not None:  # no bug of the URL: the one full-disk line (megadocs.cli)
                raise
            last = exc
            if create:
                time.sleep(0.2 * (attempt + 1))
    raise _cannot_open(shown, last) from None


def _cannot_open(shown: str, exc: BaseException) -> UserError:
    """The one line for a ledger that cannot be opened: its URL (password masked) and the
    driver's first line (scrubbed of the URL's secrets)."""
    return UserError(f"ledger: cannot open {redact_url(shown)}: {_first_line(exc, shown)}")


def _first_line(exc: BaseException, url: str) -> str:
    """The exception's first non-empty line (its type where it has none), with ``url``'s
    secrets removed (:func:`megadocs.trust.scrub`)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return scrub(lines[0] if lines else type(exc).__name__, url)


def _require_schema(url: str, shown: str | None = None) -> None:
    """Refuse (LedgerMissing) a database without Optuna's tables, writing nothing to it: Optuna
    itself would create them, and a reader racing a starting controller would collide with it."""
    from optuna.storages._rdb import models
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    shown = shown or url
    wanted = {*models.BaseModel.metadata.tables, "alembic_version"}
    try:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                present = wanted & set(inspect(connection).get_table_names())
                stamped = present == wanted and bool(
                    connection.execute(text("SELECT COUNT(*) FROM version_info")).scalar()
                    and connection.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar()
                )
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - driver errors vary; report the URL, never its password
        raise _cannot_open(shown, exc) from None
    if not present:
        raise ledger_missing(f"{redact_url(shown)} holds no ledger (no Optuna tables)")
    if not stamped:
        raise LedgerMissing(f"ledger: {redact_url(shown)} is being created by a controller; retry in a moment")


POSTGRES_DRIVERS = ("psycopg", "psycopg2")
"""The PostgreSQL drivers a ledger works with, in the order they are chosen where several are
installed: psycopg 3 (SQLAlchemy's own for ``postgresql://``), then psycopg2. Each is tested
(tests/search/test_postgres.py: a server's restart, its full disk, a certification)."""


def _postgres_driver(url: str) -> str:
    """A ``postgresql://`` URL with the first installed driver of :data:`POSTGRES_DRIVERS` named
    (``postgresql+psycopg://``); as given where none is (SQLAlchemy then names what is missing)."""
    import importlib.util

    for driver in POSTGRES_DRIVERS:
        if importlib.util.find_spec(driver) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://") :]
    return url


def _fast_sqlite(engine) -> None:
    """WAL mode (readers never block the controller) and no fsync per commit: a killed
    controller loses nothing (the OS has the pages); only a power cut could lose the last
    commits, and their runs are then adopted again from their run directories."""
    from sqlalchemy import event

    def on_connect(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened before the listener get the pragmas on reconnect


def _connection_lost(exc: BaseException) -> bool:
    """The database could not be reached (server restarting or gone, connection cut), as opposed
    to a request it refused: SQLAlchemy's OperationalError/InterfaceError or an invalidated
    connection, also when Optuna re-raised it as a StorageInternalError. A full disk on the server
    (SQLSTATE 53100, also an OperationalError) is a refusal: the server stays up, and waiting for
    space would hide it for LEDGER_OUTAGE_S; it is the one full-disk line (megadocs.cli) at once."""
    from sqlalchemy import exc as sa

    if disk_full_message(exc) is not None:
        return False
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sa.OperationalError, sa.InterfaceError)) or (
                isinstance(seen, sa.DBAPIError) and seen.connection_invalidated):
            return True
        seen = seen.__cause__
    return False


def _driver_line(exc: BaseException) -> str:
    """The first line of the driver's own error under Optuna's and SQLAlchemy's wrappers, with
    anything shaped like URL credentials masked (the wrapper holds no password to scrub with)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return re.sub(r"://[^/\s]*@", "://***@", lines[0] if lines else type(cause).__name__)


def set_trial_user_attrs(storage: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Set several user attributes of a running trial in one write: all of them or none.

    Optuna sets one attribute per call, each its own commit; a controller killed between two of
    them left a trial with a job id but not its attempt count or job folder (a re-attached run
    then counted no attempt). Here they go in one transaction of a database (``RDBStorage``), or
    one append to a journal file (``JournalStorage``: one ``write``, one line per attribute, as
    Optuna's journal replays them). Both use Optuna's own private write steps (the code its
    ``set_trial_user_attr`` runs; checked against each backend in tests/search/test_storage.py).
    ``attrs`` are JSON values already.
    """
    from optuna.storages import JournalStorage, RDBStorage

    if not attrs:
        return
    if isinstance(storage, RDBStorage):
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(storage.scoped_session, True) as session:
            for key, value in attrs.items():
                storage._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)
        return
    if isinstance(storage, JournalStorage):
        from optuna.storages.journal._storage import JournalOperation

        worker_id = storage._replay_result.worker_id
        with storage._thread_lock:
            storage._backend.append_logs([
                {"op_code": JournalOperation.SET_TRIAL_USER_ATTR, "worker_id": worker_id, "trial_id": trial_id,
                 "user_attr": {key: value}}
                for key, value in attrs.items()
            ])
            storage._sync_with_backend()
        return
    raise TypeError(f"a ledger's storage is an Optuna RDBStorage or JournalStorage, not {type(storage).__name__}")


class _Naming:
    """An Optuna storage whose calls name the ledger (``shown``: its file, or its URL with the
    password masked) on an error that names no file (:func:`megadocs.errors.names_file`):
    SQLite's "database or disk is full" is then one line naming the ledger. Its
    ``set_trial_user_attrs(trial_id, attrs)`` is :func:`set_trial_user_attrs`."""

    def __init__(self, storage: Any, shown: str) -> None:
        self._storage = storage
        self._shown = shown

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._storage, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with names_file(self._shown):
                return self._call(name, attr, args, kwargs)

        return call

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        with names_file(self._shown):
            self._call("set_trial_user_attrs", set_trial_user_attrs, (self._storage, trial_id, attrs), {})

    def _call(self, name: str, method: Any, args: tuple, kwargs: dict) -> Any:
        return method(*args, **kwargs)


class _Reconnecting(_Naming):
    """An Optuna storage on a database server whose calls wait out a lost connection and go on.

    A server restart cuts every connection: the failing call is retried every RECONNECT_EVERY_S
    (SQLAlchemy replaces the dead pooled connections) for up to LEDGER_OUTAGE_S, with one warning
    when the outage starts and one when it ends; the same storage and database go on (never a
    second ledger). A call whose commit reached the server before the connection was cut is
    not repeated blindly: a repeated state change that finds the trial already in that state
    counts as done. Raises UserError (the URL with its password masked) once the outage outlasts
    LEDGER_OUTAGE_S.
    """

    def _call(self, name: str, method: Any, args: tuple, kwargs: dict) -> Any:
        from optuna.exceptions import UpdateFinishedTrialError

        lost_at: float | None = None
        while True:
            try:
                result = method(*args, **kwargs)
            except UpdateFinishedTrialError:
                if lost_at is not None and name == "set_trial_state_values" and self._already(args, kwargs):
                    result = True  # the first attempt's commit went through before the cut
                else:
                    raise
            except Exception as exc:  # noqa: BLE001 - sorted by _connection_lost, re-raised otherwise
                if not _connection_lost(exc):
                    raise
                now = time.time()
                if lost_at is None:
                    lost_at = now
                    # a server that stopped itself says why only in its own log: one whose WAL disk
                    # filled up PANICs and stays down (its clients see only the cut connection)
                    log.warning("ledger %s unreachable (%s); waiting for it (up to %.0f s; a server that "
                                "stopped itself, e.g. with no space for its WAL, says why in its log)",
                                self._shown, _driver_line(exc), LEDGER_OUTAGE_S)
                elif now - lost_at > LEDGER_OUTAGE_S:
                    raise UserError(f"ledger: {self._shown} unreachable for {now - lost_at:.0f} s: "
                                    f"{_driver_line(exc)}; re-run when it is back") from None
                time.sleep(RECONNECT_EVERY_S)
                continue
            if lost_at is not None:
                log.warning("ledger %s reachable again after %.1f s", self._shown, time.time() - lost_at)
            return result

    def _already(self, args: tuple, kwargs: dict) -> bool:
        """Whether the trial of a ``set_trial_state_values`` call is in the state it asks for."""
        trial_id = kwargs.get("trial_id", args[0] if args else None)
        state = kwargs.get("state", args[1] if len(args) > 1 else None)
        return self._storage.get_trial(trial_id).state == state


def connect(url: str, *, create: bool = True) -> Any:
    """The storage the ledger at ``url`` is used through: errors name the ledger, and on a
    database server a cut connection is waited out (:class:`_Reconnecting`).

    SQLite's "database or disk is full" names no file (nor does a write to a journal file's
    handle): the ledger's own calls name it, as written (a server's URL has no file to name).
    """
    shown = redact_url(url)
    name = _sqlite_path(url) or shown
    with names_file(name):
        storage = open_storage(url, create=create)
    server = "://" in url and not url.startswith("sqlite:")  # its connection may be cut by a restart
    return _Reconnecting(storage, shown) if server else _Naming(storage, name)
