"""Data efficiency: how much real data a method's loss is worth (paper.md, "Results").

The reference real-data law of the standard recipe is L(D) = E + A * D^(-alpha). Inverting it
gives the *effective data* of a loss, D_eff(L) = (A / (L - E))^(1/alpha), and a method's data
efficiency is D_eff(L_method) / D_eff(L_baseline) = ((L_baseline - E) / (L_method - E))^(1/alpha):
only alpha and E matter. The shipped law (``reference_law.yaml``: alpha 0.235, E 1.92)
reproduces the paper's 1.48x (3.41 vs 3.5544) and about 1.80x (3.344).

Example:
    >>> round(efficiency_ratio(3.41, 3.5544, alpha=0.235, E=1.92), 2)
    1.48
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from analysis.scaling import PowerLawFit, fit_power_law
from megadocs.config import StrictModel, load_config
from megadocs.errors import UserError

__all__ = [
    "DEFAULT_REFERENCE_LAW",
    "ReferenceLaw",
    "Efficiency",
    "load_reference_law",
    "effective_data",
    "efficiency_ratio",
    "fit_reference_law",
    "efficiency",
]

DEFAULT_REFERENCE_LAW = Path(__file__).with_name("reference_law.yaml")


class ReferenceLaw(StrictModel):
    """The real-data law L(D) = E + A * D^(-alpha) that converts losses into effective data."""

    alpha: float = Field(gt=0, allow_inf_nan=False, description="data exponent")
    E: float = Field(ge=0, allow_inf_nan=False, description="irreducible loss (asymptote)")
    A: float | None = Field(default=None, gt=0, description="amplitude; only needed for absolute D_eff")
    baseline_tokens: float | None = Field(
        default=None, gt=0, description="real tokens of the baseline, to express D_eff in tokens without A"
    )
    provenance: str = Field(default="", description="where the constants come from")

    @model_validator(mode="after")
    def _describe_provenance(self):
        if not self.provenance.strip():
            raise ValueError("provenance: say where alpha and E come from (a paper, a fit of your runs)")
        return self


def load_reference_law(path: str | Path | None = None) -> ReferenceLaw:
    """The shipped law, or a user's YAML file with the same fields."""
    return load_config(path or DEFAULT_REFERENCE_LAW, ReferenceLaw)


def _gap(loss: float, E: float, what: str) -> float:
    if not np.isfinite(loss):
        raise UserError(f"efficiency: {what} loss must be finite, got {loss}")
    if loss <= E:
        raise UserError(
            f"efficiency: {what} loss {loss:.4g} is not above the law's asymptote E={E:.4g}; "
            "no finite amount of real data reaches it (check E or the loss)"
        )
    return loss - E


def effective_data(loss: float, *, alpha: float, E: float, A: float) -> float:
    """Real data D at which the reference law reaches ``loss``: (A / (L - E))^(1/alpha)."""
    return float((A / _gap(loss, E, "method")) ** (1.0 / alpha))


def efficiency_ratio(loss: float, baseline_loss: float, *, alpha: float, E: float) -> float:
    """D_eff(loss) / D_eff(baseline_loss) = ((L0 - E) / (L - E))^(1/alpha)."""
    if alpha <= 0:
        raise UserError(f"efficiency: alpha must be > 0, got {alpha}")
    return float((_gap(baseline_loss, E, "baseline") / _gap(loss, E, "method")) ** (1.0 / alpha))


@dataclass
class Efficiency:
    """A method's data efficiency against a baseline, with an interval when the law was fitted."""

    ratio: float
    loss: float
    baseline_loss: float
    alpha: float
    E: float
    interval: tuple[float, float] | None = None
    effective_tokens: float | None = None
    """D_eff of the method (from the law's A, or the baseline's real tokens times the ratio)."""
    effective_basis: str = ""
    """How ``effective_tokens`` was obtained, for printing next to it."""

    def format(self) -> str:
        text = f"{self.ratio:.2f}x"
        if self.interval:
            text += f" [{self.interval[0]:.2f}, {self.interval[1]:.2f}]"
        return text


def fit_reference_law(data_sizes, losses, **fit_options) -> PowerLawFit:
    """Fit the law to a user's own real-only runs at several data sizes (see ``fit_power_law``)."""
    return fit_power_law(data_sizes, losses, **fit_options)


def efficiency(
    loss: float,
    baseline_loss: float,
    law: ReferenceLaw | PowerLawFit,
    *,
    level: float = 0.95,
) -> Efficiency:
    """Efficiency of ``loss`` against ``baseline_loss`` under a shipped or fitted law.

    With a fitted law that has bootstrap draws, the interval is the percentile interval of the
    ratio over the draws of (alpha, E); draws whose E is not below both losses are dropped.
    """
    ratio = efficiency_ratio(loss, baseline_loss, alpha=law.alpha, E=law.E)
    interval = None
    if isinstance(law, PowerLawFit) and law.samples is not None:
        E_draws, alpha_draws = law.samples[:, 0], law.samples[:, 2]
        ok = (E_draws < min(loss, baseline_loss)) & (alpha_draws > 0)
        if ok.sum() >= 20:
            draws = ((baseline_loss - E_draws[ok]) / (loss - E_draws[ok])) ** (1.0 / alpha_draws[ok])
            tail = (1 - level) / 2 * 100
            interval = (float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail)))
    tokens, basis = None, ""
    if law.A is not None:
        tokens = effective_data(loss, alpha=law.alpha, E=law.E, A=law.A)
        basis = "inverting the law (units of its D)"
    elif isinstance(law, ReferenceLaw) and law.baseline_tokens is not None:
        tokens = ratio * law.baseline_tokens
        basis = f"ratio x the baseline's {law.baseline_tokens:,.0f} real tokens"
    return Efficiency(
        ratio=ratio,
        loss=float(loss),
        baseline_loss=float(baseline_loss),
        alpha=float(law.alpha),
        E=float(law.E),
        interval=interval,
        effective_tokens=tokens,
        effective_basis=basis,
    )
