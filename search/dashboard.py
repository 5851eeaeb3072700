"""`megadocs search dashboard SWEEP.yaml`: optuna-dashboard on the sweep's ledger.

Each certification is one Optuna study; its trials' params are the grid point with numeric
distributions (``lr``/``wd`` on a log scale) plus the fixed ``method`` and ``g`` (see
`search.ledger.axis_distribution`), so the dashboard's slice, contour and importance plots read
them as numbers. The server is optuna-dashboard's own (`optuna_dashboard.run_server`, the
`dashboard` extra) on the ledger storage the controller uses, so SQLite, PostgreSQL and journal
ledgers all work. It only reads; running it next to a live controller is safe.

Equivalent by hand for a SQLite ledger: ``optuna-dashboard sqlite:///SWEEP_OUT/ledger.db``.
"""

from __future__ import annotations

import errno
import socket
import sys

from megadocs.errors import FieldError, UserError

__all__ = ["serve"]


def serve(sweep_path: str, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the dashboard of the sweep in `sweep_path` until interrupted (blocks).

    Raises:
        UserError: optuna-dashboard is not installed, the sweep file is invalid, or its ledger does
            not exist (nothing is created: the dashboard only reads).
        FieldError: of ``host`` or ``port`` (``search dashboard`` names its flag): ``host:port``
            cannot be listened on (a port outside 0-65535 or one in use; a host that is no address
            of this machine).
    """
    if not 0 <= port <= 65535:
        raise FieldError("port", f"{port} is not a TCP port (expected 0-65535)")
    try:
        from optuna_dashboard import run_server
    except ModuleNotFoundError:
        raise UserError(
            "search dashboard: optuna-dashboard is not installed; pip install 'megadocs[dashboard]'"
        ) from None
    from megadocs.trust import redact_url
    from search.storage import open_storage
    from search.sweep import load_sweep

    sweep = load_sweep(sweep_path)
    storage = open_storage(sweep.ledger_url, create=False)
    print(f"optuna-dashboard for sweep {sweep.name!r} (ledger {redact_url(sweep.ledger_url)}) on "
          f"http://{host}:{port}/ - Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        run_server(storage, host=host, port=port)
    except OSError as exc:  # the bind: address in use, not an address of this host
        host_refused = isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL  # else the port's
        raise FieldError("host" if host_refused else "port",
                         f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
