"""Where every certification of a sweep stands, recomputed from the ledger by the same pure core
the controller uses (so ``status`` and ``certify`` can never disagree).

Public API (used by analysis; keep stable): :func:`summarize`, :func:`g_trend_warnings`.
``megadocs search status --json`` prints :func:`to_json` of the summaries (standard JSON).
"""

from __future__ import annotations

import io
import math
import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from megadocs.formats import RunStatus, dumps_json
from search.certify import CertifySearch, Outcome
from search.ledger import STUDY_START, Ledger, StudyKind, study_name

__all__ = ["summarize", "summarize_ensembles", "g_trend_warnings", "format_table", "to_json"]


def summarize(sweep, strategy: str = "certify") -> list[dict[str, Any]]:
    """One dict per certification (the ``megadocs search status --json`` objects).

    Args:
        sweep: a :class:`search.sweep.Sweep` or the path of a sweep file.
        strategy: ``certify`` (default) or a baseline (``grid``/``tpe``) run on the same sweep;
            for a baseline, ``certificate`` is set when its best point happens to be certifiable
            from its evidence.

    Returns:
        dicts with ``name``, ``study``, ``fixed``, ``state`` (seeding|searching|certified|
        failed), ``best`` ({params, loss} or None), ``runs`` ({finished, running, failed}: grid
        points by their latest state),
        ``outstanding`` (neighbours still to run or running), ``bounds_hit`` (of the best point:
        [{axis, side, value}]), ``certificate`` ({point, loss, neighbours[{params, loss, axis,
        direction}], bounds_hit} or None), ``path`` (successive best points, oldest first),
        ``blocked_by`` ([{params, reason}]), ``start``, ``warm_start``, ``compute`` ({wall_time_s,
        tokens_seen, runs}: runs this certification computed itself, not adopted ones).
    """
    from search.sweep import load_sweep

    if isinstance(sweep, (str, os.PathLike)):
        sweep = load_sweep(sweep)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    kind = StudyKind(strategy)
    summaries = []
    searches: dict[str, CertifySearch] = {}
    for cert in sweep.certifications:
        study = study_name(sweep.name, cert.name, kind)
        grid = sweep.grid_for(cert)
        start = ledger.study_attrs(study).get(STUDY_START)
        if start is None and not cert.warm_start:
            start = sweep.start_for(cert)
        search = CertifySearch(cert.name, grid, start, seed_neighbours=sweep.seeds_neighbours(cert),
                               waits_for=cert.warm_start if start is None else None, fallback=sweep.start_for(cert))
        if search.waits_for is not None:  # sources come earlier in the file, so they are here already
            search.resolve(searches)
        searches[cert.name] = search
        wall, tokens = 0.0, 0
        records = ledger.runs(study)
        for record in records:
            if record.status is RunStatus.SUPERSEDED:
                continue  # evidence about other data or code (see search.controller)
            if record.status.finished:
                outcome = Outcome.finished(math.inf if record.loss is None else record.loss)
                if record.adopted_from is None:  # compute spent by this certification, not reused
                    wall += float(record.wall_time_s or 0.0)
                    tokens += (record.metrics.tokens_seen or 0) if record.metrics else 0
            elif record.status is RunStatus.FAILED:
                outcome = Outcome.failed(record.reason or "failed")
            else:
                outcome = Outcome.running()
            if grid.contains(record.point):
                search.record(record.point, outcome)
        # per point, its latest state (a point that failed and then succeeded on --retry-failed is finished)
        counts = {state: sum(o.state.value == state for o in search.outcomes.values())
                  for state in ("finished", "running", "failed")}
        plan = search.plan()
        best = None if plan.centre is None else {"params": plan.centre, "loss": plan.centre_loss}
        state = plan.state.value
        summaries.append({
            "name": cert.name,
            "study": study,
            "fixed": dict(cert.fixed),
            "state": state,
            "best": best,
            "runs": counts,
            "outstanding": [*plan.wanted, *plan.running] if plan.centre is not None else [*plan.running],
            "bounds_hit": [b.to_dict() for b in plan.bounds_hit],
            "certificate": plan.certificate.to_dict() if plan.certificate else None,
            "path": list(plan.path),
            "blocked_by": [{"params": p, "reason": r} for p, r in plan.blocked_by],
            "start": start,
            "warm_start": cert.warm_start,
            "compute": {"wall_time_s": wall, "tokens_seen": tokens, "runs": len(records)},
        })
    return summaries


def summarize_ensembles(sweep) -> list[dict[str, Any]]:
    """One dict per ensemble: ``name``, ``source``, ``members`` (wanted), ``runs`` ({finished,
    running, failed}), ``run_dirs`` (finished members' run directories, by member index)."""
    from search.sweep import load_sweep

    if isinstance(sweep, (str, os.PathLike)):
        sweep = load_sweep(sweep)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    summaries = []
    for ens in sweep.ensembles:
        records = ledger.runs(study_name(sweep.name, ens.name, StudyKind.ENSEMBLE))
        finished = [r for r in records if r.status.finished]
        summaries.append({
            "name": ens.name, "source": ens.source, "members": ens.members,
            "runs": {"finished": len(finished), "running": sum(r.status is RunStatus.RUNNING for r in records),
                     "failed": sum(r.status is RunStatus.FAILED for r in records)},
            "run_dirs": {r.member: r.run_dir for r in finished},
        })
    return summaries


def _standard(value: Any) -> Any:
    """A diverged run's loss (+inf) becomes ``"loss": null`` beside ``"diverged": true``."""
    if isinstance(value, Mapping):
        out = {str(key): _standard(item) for key, item in value.items()}
        loss = value.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            out["diverged"] = True
        return out
    if isinstance(value, (list, tuple)):
        return [_standard(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(summaries: list[dict[str, Any]]) -> str:
    """The ``status --json`` text: standard JSON (no Infinity; see :func:`_standard`)."""
    return dumps_json(_standard(summaries), indent=1)


def summarize_transfers(sweep) -> list[dict[str, Any]]:
    """One dict per transfer: ``name``, ``source``, ``fixed`` (the target), ``state`` (waiting |
    running | finished | failed), ``point`` and ``loss`` of its run once finished."""
    from search.sweep import load_sweep

    if isinstance(sweep, (str, os.PathLike)):
        sweep = load_sweep(sweep)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    summaries = []
    for transfer in sweep.transfers:
        records = [r for r in ledger.runs(study_name(sweep.name, transfer.name, StudyKind.TRANSFER))
                   if r.status is not RunStatus.SUPERSEDED]
        latest = records[-1] if records else None
        state = ("waiting" if latest is None else "finished" if latest.status.finished
                 else "failed" if latest.status is RunStatus.FAILED else "running")
        summaries.append({
            "name": transfer.name, "source": transfer.source, "fixed": dict(transfer.fixed), "state": state,
            "point": latest.point if latest else None,
            "loss": latest.loss if latest and state == "finished" else None,
        })
    return summaries


def g_trend_warnings(summaries: list[dict[str, Any]]) -> list[str]:
    """Algorithms whose certified loss rises with G: a sign a search did not converge (a larger G
    can always reuse a smaller G's hyperparameters, so the tuned loss should not rise)."""
    by_method: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for summary in summaries:
        fixed, certificate = summary["fixed"], summary.get("certificate")
        if certificate and "g" in fixed and "method" in fixed:
            method = str(fixed["method"]) + (f" ({fixed['model']})" if "model" in fixed else "")
            by_method[method].append((float(fixed["g"]), certificate["loss"], summary["name"]))
    warnings = []
    for method, entries in sorted(by_method.items()):
        entries.sort()
        for (g_a, loss_a, name_a), (g_b, loss_b, name_b) in zip(entries, entries[1:]):
            if loss_b > loss_a:
                warnings.append(
                    f"{method}: certified loss rises with G ({name_a} g={g_a:g}: {loss_a:.4f} -> {name_b} "
                    f"g={g_b:g}: {loss_b:.4f}); the larger G's search may not have converged: "
                    f"set warm_start: {name_a} on {name_b}"
                )
    return warnings


def _fmt_point(point: dict[str, Any] | None) -> str:
    return "-" if not point else " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def format_table(summaries: list[dict[str, Any]]) -> str:
    """The human table of ``megadocs search status``."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=None)
    for column in ("certification", "state", "best point", "loss", "runs f/r/x", "outstanding", "bounds hit",
                   "compute"):
        table.add_column(column)
    for s in summaries:
        best = s["best"] or {}
        loss = best.get("loss")
        bounds = ", ".join(f"{b['axis']} {b['side']}" for b in s["bounds_hit"]) or "-"
        state = s["state"] + (f" ({len(s['blocked_by'])} failed)" if s["blocked_by"] else "")
        runs = s["runs"]
        table.add_row(
            s["name"], state, _fmt_point(best.get("params")), "-" if loss is None else f"{loss:.4f}",
            f"{runs['finished']}/{runs['running']}/{runs['failed']}", str(len(s["outstanding"])), bounds,
            f"{s['compute']['wall_time_s']:.0f}s",
        )
    buffer = io.StringIO()
    Console(file=buffer, width=160, color_system=None).print(table)
    return buffer.getvalue()
