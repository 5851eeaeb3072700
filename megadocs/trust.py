"""What megadocs trusts, and the checks that keep it so (docs/architecture.md, "Trust and secrets").

Trusted: the user's own files and folders (configs, the sweep's output directory) and the numbers a
ledger holds. Not trusted: paths a shared ledger names (anyone who can write to the ledger chose
them) and pickles found through them. Secrets (a ledger URL's password) never reach a message, log
line, report or attribute: everything shown goes through :func:`redact_url` / :func:`scrub`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from megadocs.errors import UserError

__all__ = ["UntrustedPath", "require_inside", "redact_url", "scrub", "MASK"]

MASK = "***"
_QUERY_PASSWORD = re.compile(r"(?i)(^|&)(password=)([^&]*)")


class UntrustedPath(UserError):
    """A path taken from shared state (the ledger) that lies outside the folder it must be in."""


def require_inside(path: str | os.PathLike, root: str | os.PathLike, *, what: str) -> Path:
    """``path`` resolved (symlinks followed), refused unless it lies inside ``root`` (resolved).

    Raises:
        UntrustedPath: one line naming ``what``, the path and the folder it must be in.
    """
    resolved, trusted = Path(path).resolve(), Path(root).resolve()
    if resolved != trusted and trusted not in resolved.parents:
        raise UntrustedPath(
            f"{what}: {path} is outside {trusted}; refused (only files inside the sweep's own output "
            "directory are read; see 'Trust and secrets' in docs/architecture.md)"
        )
    return resolved


def _passwords(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += [match.group(3) for match in _QUERY_PASSWORD.finditer(parts.query)]
    return [p for p in found if p and p != MASK]


def redact_url(url: str) -> str:
    """The URL with its password (``user:PASSWORD@`` or ``?password=``) replaced by ``***``.

    Everything else is kept as written: a SQLite URL's empty host and its absolute path's
    slashes too (rebuilding it with ``urlunsplit`` turned ``sqlite:////abs/l.db`` into
    ``sqlite://abs/l.db``, another file).

    >>> redact_url("postgresql://me:secret@db.lab:5432/sweeps")
    'postgresql://me:***@db.lab:5432/sweeps'
    >>> redact_url("sqlite:////runs/sweep/ledger.db")
    'sqlite:////runs/sweep/ledger.db'
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable: hide everything that could be credentials
        return re.sub(r"://[^/]*@", f"://{MASK}@", url)
    user_info, at, host = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in user_info:
        netloc = f"{user_info.split(':', 1)[0]}:{MASK}@{host}"
    query = _QUERY_PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", parts.query)
    scheme, rest = url.split("://", 1)
    if netloc != parts.netloc:
        rest = netloc + rest[len(parts.netloc):]
    if query != parts.query:
        rest = rest.replace(f"?{parts.query}", f"?{query}", 1)
    return f"{scheme}://{rest}"


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with ``url`` redacted and its password masked."""
    text = text.replace(url, redact_url(url))
    for password in _passwords(url):
        for form in {password, unquote(password)}:
            text = text.replace(form, MASK)
    return text
