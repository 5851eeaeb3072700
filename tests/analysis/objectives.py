"""An analytic sweep objective with every validation set, for ledgers the analysis tests build.

It wraps ``search.landscapes.bowl`` (the search package's convex surface, which already lowers
the loss with G and by method) and adds the extra validation losses train reports
(``iid_short``/``iid_long`` halves and a long-context set on which megadocs gain more), so a
tiny real sweep yields the same metrics shape as a trained one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from search.landscapes import bowl

MEGADOCS = ("stitched", "latent")


def paper_like(params: Mapping[str, Any]) -> dict[str, Any]:
    loss = bowl(params)
    g = float(params.get("g", 0) or 0)
    method = str(params.get("method", "real"))
    long_gain = 0.02 * math.log2(g + 1) if method in MEGADOCS else 0.0
    return {
        "val_loss": loss,
        "val_losses": {
            "iid": loss,
            "iid_short": loss - 0.08,
            "iid_long": loss + 0.08 - long_gain / 2,
            "arxiv": loss + 0.4 - long_gain,
        },
        "steps": 100,
        "tokens_seen": 25_600,
    }


def students(params: Mapping[str, Any]) -> dict[str, Any]:
    """``paper_like`` where a larger model (``model: large``) is better and gains more from synthetic
    data (the paper's student scaling), for the experiments report."""
    metrics = paper_like(params)
    if params.get("model") == "large":
        win = 0.3 + (0.04 * math.log2(float(params.get("g", 1)) + 1) if params.get("method", "real") != "real" else 0)
        metrics["val_loss"] -= win
        metrics["val_losses"] = {name: loss - win for name, loss in metrics["val_losses"].items()}
    return metrics


def ablation(params: Mapping[str, Any]) -> dict[str, Any]:
    """``paper_like`` for the synthetic-only ablation (Figure 13): the bowl's mix optimum (0.8)
    makes mix 1 cost 0.08, and synthetic epochs have their own optimum at 4 passes."""
    metrics = paper_like(params)
    if "synthetic_epochs" in params:
        penalty = 0.01 * (math.log2(float(params["synthetic_epochs"])) - 2) ** 2
        metrics["val_loss"] += penalty
        metrics["val_losses"] = {name: loss + penalty for name, loss in metrics["val_losses"].items()}
    return metrics


def diverges(params: Mapping[str, Any]) -> float:
    """Every run diverges (NaN loss, recorded as +inf): a sweep with nothing to tabulate."""
    return math.nan
