"""Data efficiency: how much real data a method's loss is worth (paper.md, "Results").

The reference real-data law of the standard recipe is L(D) = E + A * D^(-alpha). Inverting it
gives the *effective data* of a loss, D_eff(L) = (A / (L - E))^(1/alpha), and a method's data
efficiency is D_eff(L_method) / D_eff(L_baseline) = ((L_baseline - E) / (L_method - E))^(1/alpha):
only alpha and E matter. The shipped law (``reference_law.yaml``: alpha 0.235, E 1.92)
reproduces the paper's 1.48x (3.41 vs 3.5544) and about 1.80x (3.344).

A law fitted to a user's own baseline runs (``--fit-baseline``) follows the fits' policy
(:mod:`analysis.scaling`): a loss within the range of those runs is read off the fitted curve
between its points, which the points pin down whatever E and alpha are on their own (a curve
whose E is not determined still passes through them); a loss beyond them (effective data
beyond the largest D fitted, the usual case for a method that beats the baseline) is an
extrapolation that rests on E and alpha, and is "not determined" where the fit does not
determine them. :class:`Basis` says which case a result is.

Whose law a number comes from is a second fact beside it (:func:`law_source`, :class:`Source`): a
law given as constants (the shipped one is the paper's, calibrated on the paper's 300M losses) was
not fitted to the user's runs, so its efficiencies are illustrative, and at a loss outside the
losses it was calibrated on (another model size, tokenizer or corpus: a tiny model's 4-5 nats) they
are arithmetic on someone else's law. Every output prints that caveat with the number.

Example:
    >>> round(efficiency_ratio(3.41, 3.5544, alpha=0.235, E=1.92), 2)
    1.48
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from pydantic import Field, FiniteFloat, model_validator

from analysis.scaling import PowerLawFit, fit_power_law, percentile_interval
from megadocs.config import StrictModel, load_config
from megadocs.errors import UserError
from megadocs.formats import finite_or_none

__all__ = [
    "DEFAULT_REFERENCE_LAW",
    "ReferenceLaw",
    "Basis",
    "Source",
    "Efficiency",
    "efficiency_basis",
    "law_source",
    "source_caveat",
    "undetermined",
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
    A: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="amplitude; only needed for absolute D_eff")
    baseline_tokens: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="real tokens of the baseline, to express D_eff in tokens without A"
    )
    provenance: str = Field(default="", description="where the constants come from")
    name: str = Field(default="a stated law", min_length=1,
                      description="how outputs name the law beside a number it gave (the shipped: the paper's)")
    loss_range: tuple[FiniteFloat, FiniteFloat] | None = Field(
        default=None, description="lowest and highest i.i.d. loss the constants were calibrated on; an "
        "efficiency at a loss outside it is an extrapolation of the law (null: not stated, not checked)")

    @model_validator(mode="after")
    def _describe_provenance(self):
        if not self.provenance.strip():
            raise ValueError("provenance: say where alpha and E come from (a paper, a fit of your runs)")
        if self.loss_range is not None and not self.E < self.loss_range[0] < self.loss_range[1]:
            raise ValueError(f"loss_range: expected [low, high] with E={self.E} < low < high, got "
                             f"{list(self.loss_range)}")
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


class Basis(str, Enum):
    """How a data efficiency was read from its law (``Efficiency.basis``)."""

    REFERENCE = "reference law"  # the constants of a given law (shipped, a file, the command line)
    INTERPOLATED = "interpolated"  # both losses within the fitted baseline runs: the curve between its points
    EXTRAPOLATED = "extrapolated"  # beyond the runs, on a fitted law whose E and alpha the points determine
    NOT_DETERMINED = "not determined"  # beyond the runs, on a fitted law whose E or alpha they do not
    BELOW_E = "below E"  # a loss at or below the law's asymptote: no finite amount of real data reaches it

    @property
    def determined(self) -> bool:
        """Whether a ratio comes with this basis."""
        return self in (Basis.REFERENCE, Basis.INTERPOLATED, Basis.EXTRAPOLATED)


class Source(str, Enum):
    """Whose law a data efficiency comes from, and whether its losses are the law's (:func:`law_source`;
    ``Efficiency.source``, the ``source`` field of ``efficiency --json``, the report's rows)."""

    FITTED = "fitted"  # fitted to the user's own real-only runs (--fit-baseline): ``Basis`` says how it was read
    STATED = "stated"  # constants given (the shipped paper's law, a file, --alpha/--asymptote), losses in its range
    OUT_OF_RANGE = "out of range"  # such a law at a loss outside the losses it was calibrated on

    @property
    def illustrative(self) -> bool:
        """Not a measurement of the user's setup: the law was not fitted to their runs."""
        return self is not Source.FITTED


def law_source(loss: float, baseline_loss: float, law: ReferenceLaw | PowerLawFit) -> Source:
    """The rule for quoting an efficiency (paper.md, "Results"): a law fitted to the user's own
    baseline runs is theirs (:class:`Basis` then says whether the losses lie among those runs); a
    law given as constants was not fitted to them, and is an extrapolation beyond its evidence where
    the method's or the baseline's loss lies outside ``law.loss_range`` (closed: the calibration
    points themselves are inside). Loss level is where another model size, tokenizer or corpus
    shows: the shipped range is the paper's 300M losses, 3.344-3.5544.

    Example:
        >>> law = ReferenceLaw(alpha=0.235, E=1.92, provenance="paper.md", loss_range=(3.344, 3.5544))
        >>> law_source(3.41, 3.5544, law).value, law_source(4.44, 4.99, law).value
        ('stated', 'out of range')
    """
    if isinstance(law, PowerLawFit):
        return Source.FITTED
    if law.loss_range is None:
        return Source.STATED
    low, high = law.loss_range
    inside = low <= loss <= high and low <= baseline_loss <= high
    return Source.STATED if inside else Source.OUT_OF_RANGE


def source_caveat(source: Source, law: ReferenceLaw | PowerLawFit) -> str:
    """The words printed with a number of this ``source`` ("" for a fitted law): the CLI's line,
    the report's row. Which loss is outside the range the same line shows."""
    if not source.illustrative:
        return ""
    text = f"illustrative: from {law.name}, not fitted to your own runs"
    if source is Source.OUT_OF_RANGE:
        low, high = law.loss_range
        text += f"; a loss outside its calibration losses {low:g}-{high:g}: an extrapolation, not an estimate"
    return text


@dataclass
class Efficiency:
    """A method's data efficiency against a baseline, with an interval when the law was fitted."""

    ratio: float
    """NaN where ``basis`` gives none (``note`` says why)."""
    loss: float
    baseline_loss: float
    alpha: float
    E: float
    basis: Basis = Basis.REFERENCE
    note: str = ""
    """Why there is no ratio, or what an extrapolated one rests on."""
    interval: tuple[float, float] | None = None
    effective_tokens: float | None = None
    """D_eff of the method (from the law's A, or the baseline's real tokens times the ratio)."""
    effective_basis: str = ""
    """How ``effective_tokens`` was obtained, for printing next to it."""
    source: Source = Source.STATED
    caveat: str = ""
    """What :func:`law_source` says of the number, in words ("" for a fitted law): print it beside it."""

    def format(self) -> str:
        if not self.basis.determined:
            return self.basis.value
        text = f"{self.ratio:.2f}x"
        if self.interval:
            text += f" [{self.interval[0]:.2f}, {self.interval[1]:.2f}]"
        return text

    def to_json(self) -> dict:
        """Standard JSON: the ratio and its interval (null where there is none), basis and note."""
        interval = self.interval or (None, None)
        return finite_or_none({
            "ratio": self.ratio, "low": interval[0], "high": interval[1], "basis": self.basis.value,
            "determined": self.basis.determined, "note": self.note, "loss": self.loss,
            "baseline_loss": self.baseline_loss, "effective_data": self.effective_tokens,
            "effective_basis": self.effective_basis or None, "source": self.source.value,
            "illustrative": self.source.illustrative, "caveat": self.caveat or None,
        })


def fit_reference_law(data_sizes, losses, **fit_options) -> PowerLawFit:
    """Fit the law to a user's own real-only runs at several data sizes (see ``fit_power_law``)."""
    return fit_power_law(data_sizes, losses, **fit_options)


def undetermined(law: ReferenceLaw | PowerLawFit) -> list[str]:
    """Those of E and alpha (the ratio's parameters) that a fitted law does not determine; none
    for a given law, whose constants are taken as stated."""
    if isinstance(law, ReferenceLaw):
        return []
    return [name for name in ("E", "alpha") if not law.determined[name]]


def _points_range(fit: PowerLawFit) -> tuple[float, float]:
    """Losses the baseline runs span: measured, or on the fitted curve between the smallest and
    largest D (a run's noise may put its loss just outside the curve's range)."""
    low = min(float(np.min(fit.y)), float(fit.predict(np.max(fit.x))))
    high = max(float(np.max(fit.y)), float(fit.predict(np.min(fit.x))))
    return low, high


def efficiency_basis(loss: float, baseline_loss: float, law: ReferenceLaw | PowerLawFit) -> tuple[Basis, str]:
    """How the efficiency of ``loss`` against ``baseline_loss`` can be read from ``law``, and a note.

    A given law is taken as stated. For a fitted law, losses within the baseline runs' range need
    no asymptote (the curve there is pinned by the points); beyond it the ratio rests on E and
    alpha, so it is not determined where the fit does not determine them. A loss at or below E
    (where E is known) has no finite effective data.
    """
    for what, value in (("method", loss), ("baseline", baseline_loss)):
        if not math.isfinite(value):
            raise UserError(f"efficiency: {what} loss must be finite, got {value}")
    kind = "reference" if isinstance(law, ReferenceLaw) else "fitted baseline"
    if isinstance(law, PowerLawFit):
        low, high = _points_range(law)
        outside = [f"{what} loss {value:.4f}" for what, value in (("method", loss), ("baseline", baseline_loss))
                   if not low <= value <= high]
        if not outside and min(loss, baseline_loss) > law.E:
            return Basis.INTERPOLATED, ""
        where = (f"{' and '.join(outside)} outside the baseline runs' losses {low:.4f}-{high:.4f} "
                 f"(D {np.min(law.x):.3g}-{np.max(law.x):.3g})" if outside else
                 f"loss {min(loss, baseline_loss):.4f} at the fit's E, which ended at the lowest baseline loss")
        loose = undetermined(law)
        if loose:
            return Basis.NOT_DETERMINED, (f"{where}: its effective data is an extrapolation that rests on "
                                          f"{' and '.join(loose)}, which the points do not determine")
        if min(loss, baseline_loss) > law.E:
            return Basis.EXTRAPOLATED, f"{where}: extrapolated on the fitted law"
    elif min(loss, baseline_loss) > law.E:
        return Basis.REFERENCE, ""
    return Basis.BELOW_E, f"loss {min(loss, baseline_loss):.4f} is not above the {kind} law's E={law.E:.4g}"


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
    Where :func:`efficiency_basis` gives no ratio (not determined, below E), ``ratio`` is NaN and
    ``note`` says why. ``source`` and ``caveat`` say whose law it is (:func:`law_source`).

    Raises:
        UserError: a non-finite loss.
    """
    basis, note = efficiency_basis(loss, baseline_loss, law)
    source = law_source(loss, baseline_loss, law)
    result = Efficiency(ratio=math.nan, loss=float(loss), baseline_loss=float(baseline_loss), alpha=float(law.alpha),
                        E=float(law.E), basis=basis, note=note, source=source,
                        caveat=source_caveat(source, law))
    if not basis.determined:
        return result
    result.ratio = efficiency_ratio(loss, baseline_loss, alpha=law.alpha, E=law.E)
    if isinstance(law, PowerLawFit) and law.samples is not None:
        E_draws, alpha_draws = law.samples[:, 0], law.samples[:, 2]
        ok = (E_draws < min(loss, baseline_loss)) & (alpha_draws > 0)
        if ok.sum() >= 20:
            draws = ((baseline_loss - E_draws[ok]) / (loss - E_draws[ok])) ** (1.0 / alpha_draws[ok])
            result.interval = percentile_interval(draws, level)
    if law.A is not None:
        result.effective_tokens = effective_data(loss, alpha=law.alpha, E=law.E, A=law.A)
        result.effective_basis = "inverting the law (units of its D)"
    elif isinstance(law, ReferenceLaw) and law.baseline_tokens is not None:
        result.effective_tokens = result.ratio * law.baseline_tokens
        result.effective_basis = f"ratio x the baseline's {law.baseline_tokens:,.0f} real tokens"
    return result
