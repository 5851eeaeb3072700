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

import sys

from megadocs.errors import UserError

__all__ = ["serve"]


def serve(sweep_path: str, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the dashboard of the sweep in `sweep_path` until interrupted (blocks).

    Raises:
        UserError: optuna-dashboard is not installed, or the sweep file is invalid.
    """
    try:
        from optuna_dashboard import run_server
    except ModuleNotFoundError:
        raise UserError(
            "search dashboard: optuna-dashboard is not installed; pip install 'megadocs[dashboard]'"
        ) from None
    from search.ledger import open_storage
    from search.sweep import load_sweep

    sweep = load_sweep(sweep_path)
    storage = open_storage(sweep.ledger_url)
    print(f"optuna-dashboard for sweep {sweep.name!r} (ledger {sweep.ledger_url}) on http://{host}:{port}/ "
          "- Ctrl-C stops it", file=sys.stderr, flush=True)  # fmt: skip
    run_server(storage, host=host, port=port)
