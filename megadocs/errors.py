"""User-facing errors: one line, naming the field or file and what was expected.

Three kinds reach the console script (`megadocs.cli.main`) as one line instead of a traceback
(their exit statuses: :class:`megadocs.exits.Exit`): :class:`UserError` (bad input, exit 2),
:class:`WorkFailed` (a job-array task failed, was cancelled or killed: exit 4) and a full file
system (:func:`disk_full_message`, also one a job-array task met: :class:`DiskFull`, or a database
server's: SQLSTATE 53100; exit 4), which is no bug of the code. :func:`names_file`
puts the file's name on an error that names none (a write to an open handle, SQLite's).
:class:`EveryRankError` (:func:`on_every_rank`) marks a UserError that every process of a
data-parallel run raises alike, which a sweep job reports as one process would.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

__all__ = ["UserError", "FieldError", "EveryRankError", "on_every_rank", "WorkFailed", "DiskFull", "DISK_FULL_ERRNOS", "DISK_FULL_ADVICE", "DISK_FULL_SQLSTATE", "disk_full_message",
           "names_file", "REFUSED_ERRNOS", "refused_in"]

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""A file system with no room left for us: no space left, or our disk quota used up."""

DISK_FULL_ADVICE = "; re-run the same command once there is space"
"""How every full-disk line ends (:func:`disk_full_message`): every command keeps what it finished."""

DISK_FULL_SQLSTATE = "53100"
"""PostgreSQL's ``disk_full``: the server could not write a table, index or temporary file (any
file write that met ENOSPC); the server refused the statement, rolled back its transaction and
stays up. (A server that cannot write its WAL stops instead: its clients see a lost connection.)"""


class UserError(Exception):
    """Bad input from the user (a config field, a file, an option).

    The CLI prints ``error: <message>`` on one line and exits with status 2; nothing already
    done is lost. Messages name the offending field or file, the value, and what was expected.
    """


class FieldError(UserError):
    """A UserError about one field of a record (an option, a config key): ``[where: ]field: problem``.

    ``field`` is the record's name for it (dotted inside sections); a command whose flags fill the
    record names the field by the flag the user typed instead (`megadocs.cli.flags_named`); a
    record read from a file keeps the file's key.

    >>> str(FieldError("vocab_size", "expected >= 257, got 3"))
    'vocab_size: expected >= 257, got 3'
    >>> str(FieldError("optim.lr", "expected a number", where="run.yaml"))
    'run.yaml: optim.lr: expected a number'
    >>> import pickle  # as a job array's task returns it
    >>> pickle.loads(pickle.dumps(FieldError("g", "expected >= 1", where="gen.yaml"))).where
    'gen.yaml'
    """

    def __init__(self, field: str, problem: str, where: str | None = None) -> None:
        super().__init__(f"{where + ': ' if where else ''}{field}: {problem}")
        self.field, self.problem, self.where = field, problem, where

    def __reduce__(self):
        return type(self), (self.field, self.problem, self.where)


class EveryRankError(UserError):
    """A UserError that every process of a data-parallel run raises alike, with the same line: the
    ranks' agreement on what they opened (`train.distributed`), or a check whose every input is
    the same on every rank (what they agreed on, the task they were all given), or rank 0's refusal
    of a step it alone takes, broadcast (its RUN folder, its trackers:
    `train.distributed.DistributedContext.share_main_refusal`). No rank is left waiting for
    another, so each reports it as one process would (a sweep job: an invalid run).

    Any other UserError met by one of several processes may be that rank's alone (a node's own
    fault): the others would wait for it in their next collective, so
    a sweep job returns it as that rank's result and exits non-zero (`search.objective.RunTask`),
    and the launcher (srun ``--kill-on-bad-exit``, torchrun) ends the others.
    """


@contextlib.contextmanager
def on_every_rank() -> Iterator[None]:
    """A UserError raised in the block is raised as an :class:`EveryRankError` (the same line):
    for code whose inputs are the same on every rank, so that every rank raises it alike.

    >>> with on_every_rank():
    ...     raise UserError("data.store: not found")
    Traceback (most recent call last):
    megadocs.errors.EveryRankError: data.store: not found
    """
    try:
        yield
    except EveryRankError:
        raise
    except UserError as exc:
        raise EveryRankError(str(exc)) from exc


class WorkFailed(Exception):
    """Work that the input was fine for did not finish: a job-array task failed, was cancelled or
    killed. The CLI prints ``error: <message>`` on one line and exits 4 (``Exit.WORK_FAILED``),
    not 2: the fix is a re-run (which resumes), not a change to the input."""


class DiskFull(Exception):
    """A full file system another process met (a job-array task), as its one line
    (:func:`disk_full_message` of the task's own error): the task's exception does not cross the
    process boundary, its line does. The CLI prints it like a full disk here (exit 4).

    >>> DiskFull("disk quota exceeded writing pool" + DISK_FULL_ADVICE).cause
    'disk quota exceeded writing pool'
    """

    @property
    def cause(self) -> str:
        """Its line without the advice: what was full, and where."""
        return str(self).removesuffix(DISK_FULL_ADVICE)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (each once; a context
    hidden by ``raise ... from None`` is not followed: its raiser said what it means)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def disk_full_message(exc: BaseException) -> str | None:
    """One line for an exception a full file system caused, or None for any other.

    A full file system is an ``OSError`` with ENOSPC or EDQUOT (also under the exceptions a
    library raised from it, e.g. torch's or PIL's), SQLite's "database or disk is full" or a
    PostgreSQL server's ``disk_full`` (:data:`DISK_FULL_SQLSTATE`; both under SQLAlchemy's and
    Optuna's wrappers, the server's own line kept: it names its file). The line names the file where the error carries one and
    says what to do: every command keeps what it finished (docs/architecture.md, "Conventions").

    >>> disk_full_message(OSError(errno.ENOSPC, "No space left on device", "runs/a/state.pt"))
    'no space left on device writing runs/a/state.pt; re-run the same command once there is space'
    >>> disk_full_message(OSError(errno.ENOENT, "No such file or directory", "x")) is None
    True
    """
    for cause in _chain(exc):
        if isinstance(cause, DiskFull):
            return str(cause)
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            what = os.strerror(cause.errno).lower()
            where = f" writing {cause.filename}" if cause.filename else ""
            return f"{what}{where}{DISK_FULL_ADVICE}"
        if getattr(cause, "sqlite_errorname", None) == "SQLITE_FULL":  # named by names_file, or by nobody
            where = getattr(cause, "filename", None) or "a SQLite database"
            return f"no space left on device writing {where}{DISK_FULL_ADVICE}"
        if _sqlstate(cause) == DISK_FULL_SQLSTATE:  # the server's disk: named by names_file (its URL)
            where = getattr(cause, "filename", None) or "a PostgreSQL database"
            said = next((line.strip() for line in str(cause).splitlines() if line.strip()), "disk full")
            return f"no space left on device on the database server of {where} ({said}){DISK_FULL_ADVICE}"
    return None


REFUSED_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT,
                  errno.ENAMETOOLONG, errno.ELOOP)
"""A file system's refusal of a path (no permission, read-only, a file where a folder is needed,
no such place): the path's fault, which another path mends; not a fault of the work."""


def refused_in(exc: BaseException, folder: str | os.PathLike) -> OSError | None:
    """The ``OSError`` (``exc`` or one it was raised from) by which the file system refused a path
    (:data:`REFUSED_ERRNOS`) at or under ``folder``, or above it (a folder on its way that could not be
    made); None for any other error. How the console script tells a destination the user gave that
    cannot be written (`megadocs.cli.Destination`) from a fault of the work; it then keeps a missing
    or existing path (ENOENT, EEXIST) only on the way to the destination (`megadocs.cli._on_the_way`).

    >>> refused_in(PermissionError(errno.EACCES, "Permission denied", "runs/report/fig.png"), "runs/report").filename
    'runs/report/fig.png'
    >>> refused_in(NotADirectoryError(errno.ENOTDIR, "Not a directory", "runs"), "runs/report").filename
    'runs'
    >>> refused_in(PermissionError(errno.EACCES, "Permission denied", "data/x"), "runs/report") is None
    True
    """
    folder = os.path.abspath(folder)
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in REFUSED_ERRNOS and isinstance(cause.filename, (str, bytes)):
            path = os.path.abspath(os.fsdecode(cause.filename))
            if os.path.commonpath([path, folder]) in (path, folder):  # at, under or above ``folder``
                return cause
    return None


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE a PostgreSQL server answered with: psycopg 3's ``sqlstate``, psycopg2's ``pgcode``."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


@contextlib.contextmanager
def names_file(path: str | os.PathLike) -> Iterator[None]:
    """An ``OSError``, SQLite error or PostgreSQL server's error (one with a SQLSTATE) raised in the
    block without a file name gets ``path`` as its name (``filename``), also under the exceptions a
    library raised from it.

    A failed ``write``/``flush``/``fsync`` on an open handle (a full disk) names no file, nor does
    SQLite's "database or disk is full" (under SQLAlchemy's and Optuna's wrappers); the writer
    knows which file it is (a ledger names its database: search.ledger.Ledger).

    >>> with names_file("out/rows.jsonl"):
    ...     raise OSError(errno.ENOSPC, "No space left on device")
    Traceback (most recent call last):
    OSError: [Errno 28] No space left on device: 'out/rows.jsonl'
    """
    try:
        yield
    except Exception as exc:
        for cause in _chain(exc):
            named = isinstance(cause, OSError) or hasattr(cause, "sqlite_errorname") or _sqlstate(cause)
            if named and getattr(cause, "filename", None) is None:
                cause.filename = os.fspath(path)
        raise
