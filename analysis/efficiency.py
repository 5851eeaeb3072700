"""Data efficiency: how much real data a method's loss is worth (paper.md, "Results").

The reference real-data law of the standard recipe is L(D) = E + A * D^(-alpha). Inverting it
gives the *effective data* of a loss, D_eff(L) = (A / (L - E))^(1/alpha), and a method's data
efficiency is D_eff(L_method) / D_eff(L_baseline) = ((L_baseline - E) / (L_method - E))^(1/alpha):
only alpha and E matter. The shipped law (``reference_law.yaml``: alpha 0.235, E 1.92)
reproduces the paper's 1.48x (3.41 vs 3.5544) and about 1.80x (3.344).

A law fitted to a user's own baseline runs (``--fit-baseline``; in Python
:func:`analysis.scaling.fit_power_law`, whose result every function here takes) follows the fits' policy
(:mod:`analysis.scaling`): a loss within the range of those runs is read off the fitted curve
between its points, which the points pin down whatever E and alpha are on their own (a curve
whose E is not determined still passes through them); a loss beyond them (effective data
beyond the largest D fitted, the usual case for a method that beats the baseline) is an
extrapolation that rests on E and alpha, and is "not determined" where the fit does not
determine them.

A law given as constants (the shipped one is the paper's, calibrated on the paper's 300M losses)
was not fitted to the user's runs: its efficiencies are illustrative, and given only where both
losses lie among the losses it was calibrated on (``loss_range``); a loss clearly outside (another
model size, tokenizer or corpus: a tiny model's 4-5 nats) gets no number: that would be arithmetic
on someone else's law, not an estimate.

Both laws' evidence (the calibration losses, the baseline runs) are single runs, as the user's
losses are, so under either a loss outside it by less than seed noise can tell (:mod:`analysis.noise`,
:func:`range_margin`) is read at its edge, with a number: one rule (:func:`efficiency_basis` says
why a fitted law's edge needs no determined E). :class:`Basis` says, in one value, which of these
cases a result is.

Example:
    >>> round(efficiency_ratio(3.41, 3.5544, alpha=0.235, E=1.92), 2)
    1.48
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import Field, FiniteFloat, model_validator

from analysis.noise import noise_tolerance
from analysis.scaling import MIN_BOOT, PowerLawFit, percentile_interval
from megadocs.config import StrictModel, load_config
from megadocs.errors import FieldError, UserError
from megadocs.formats import finite_or_none

__all__ = [
    "DEFAULT_REFERENCE_LAW",
    "STATED_CAVEAT",
    "FIT_ADVICE",
    "NO_UPPER_BOUND",
    "ReferenceLaw",
    "Basis",
    "Efficiency",
    "efficiency_basis",
    "range_margin",
    "Evidence",
    "evidence_range",
    "undetermined",
    "load_reference_law",
    "effective_data",
    "efficiency_ratio",
    "ratio_of_losses",
    "loss_of_ratio",
    "efficiency",
]

DEFAULT_REFERENCE_LAW = Path(__file__).with_name("reference_law.yaml")
STATED_CAVEAT = "illustrative: not fitted to your runs"
"""What every output says beside an efficiency of a law given as constants (next to the law's
``name``), in these words only: the CLI's number line, the report's paragraph, the caption of
Figure 1's efficiency axis."""
NO_UPPER_BOUND = "no upper bound"
"""How a fitted law's note begins where too many bootstrap refits put E above the loss for a finite
upper end of the ratio's interval (:func:`efficiency`)."""
FIT_ADVICE = "fit a law to your real-only runs at several data sizes (`--fit-baseline`)"
"""What to do instead of reading someone else's law (the out-of-range note, the report's paragraphs)."""


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
        "efficiency at a loss clearly outside it is an extrapolation of the law (null: not stated, not checked)")
    loss_noise: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="seed-to-seed sd of one loss at the calibration's "
        "scale; with the user's measured noise it sets how far beyond loss_range a loss still reads as at its "
        "edge (range_margin; null: not stated, the user's noise alone sets it)")

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


def ratio_of_losses(loss, baseline_loss, alpha, E):
    """The paper's ratio D_eff(L) / D_eff(L0) = ((L0 - E) / (L - E))^(1/alpha), elementwise over
    numpy arrays (bootstrap draws of E and alpha, a figure axis), unchecked: callers keep L, L0 > E."""
    return ((baseline_loss - E) / (loss - E)) ** (1.0 / alpha)


def loss_of_ratio(ratio, baseline_loss, alpha, E):
    """The inverse of :func:`ratio_of_losses` in L: E + (L0 - E) * ratio^(-alpha), elementwise.

    >>> round(float(loss_of_ratio(ratio_of_losses(3.41, 3.5544, 0.235, 1.92), 3.5544, 0.235, 1.92)), 6)
    3.41
    """
    return E + (baseline_loss - E) * ratio ** (-alpha)


def efficiency_ratio(loss: float, baseline_loss: float, *, alpha: float, E: float) -> float:
    """:func:`ratio_of_losses` of two finite losses above E (else a ``UserError`` naming which)."""
    if alpha <= 0:
        raise UserError(f"efficiency: alpha must be > 0, got {alpha}")
    _gap(baseline_loss, E, "baseline")  # each refuses a loss at or below E, naming which
    _gap(loss, E, "method")
    return float(ratio_of_losses(loss, baseline_loss, alpha, E))


class Basis(str, Enum):
    """How a data efficiency was read from its law (``Efficiency.basis``, ``basis`` in ``efficiency
    --json``, the report's ``efficiency_basis`` column): whose law, and whether the losses lie
    within its evidence. ``stated`` and ``out of range`` are a law given as constants, ``interpolated``,
    ``extrapolated`` and ``not determined`` a law fitted to the user's own baseline runs; ``at the
    edge`` and ``below E`` are either (:func:`efficiency_basis` is the one rule)."""

    STATED = "stated"  # a given law (shipped, a file, the command line), both losses in its calibration range
    AT_EDGE = "at the edge"  # either law: a loss outside its evidence by less than seed noise can tell (range_margin)
    OUT_OF_RANGE = "out of range"  # a given law, a loss clearly outside its range: an extrapolation of it, no number
    INTERPOLATED = "interpolated"  # both losses within the fitted baseline runs: the curve between its points
    EXTRAPOLATED = "extrapolated"  # clearly beyond the runs, on a fitted law whose E and alpha the points determine
    NOT_DETERMINED = "not determined"  # clearly beyond the runs, on a fitted law whose E or alpha they do not
    BELOW_E = "below E"  # a loss at or below the law's asymptote: no finite amount of real data reaches it

    @property
    def determined(self) -> bool:
        """Whether a ratio comes with this basis."""
        return self in (Basis.STATED, Basis.AT_EDGE, Basis.INTERPOLATED, Basis.EXTRAPOLATED)


def range_margin(law: ReferenceLaw | PowerLawFit, noise_sd: float | None = None) -> float:
    """How far (nats) beyond a law's evidence (:func:`evidence_range`) a loss still reads as at its edge.

    The evidence's ends are single runs (a stated law's calibration, a fitted law's baseline runs),
    and the user's loss is a single run too: a loss outside the range by less than their difference
    can be told from seed noise is not clearly outside it. The margin is that difference
    (:func:`analysis.noise.noise_tolerance`: ``CLEAR_SDS`` sds of it) with the user's measured noise
    ``noise_sd`` (a sweep's ``noise: repeats``, ``--noise-sigma``) and the evidence's: a stated law's
    ``loss_noise``; a fitted law's runs are the user's own, at ``noise_sd``. Either known alone stands
    for both. Neither known: 0, the range is read closed (say the noise to widen it).

    Example:
        >>> law = ReferenceLaw(alpha=0.235, E=1.92, provenance="paper.md", loss_range=(3.344, 3.5544))
        >>> round(range_margin(law, noise_sd=0.003), 4), range_margin(law)
        (0.0085, 0.0)
    """
    evidence_noise = law.loss_noise if isinstance(law, ReferenceLaw) else None
    known = [sd for sd in (noise_sd, evidence_noise) if sd is not None and math.isfinite(sd) and sd > 0]
    return noise_tolerance(known[0], known[-1]) if known else 0.0


@dataclass
class Efficiency:
    """A method's data efficiency against a baseline, with an interval when the law was fitted."""

    ratio: float
    """NaN where ``basis`` gives none (``note`` says why)."""
    loss: float
    baseline_loss: float
    alpha: float
    E: float
    basis: Basis = Basis.STATED
    note: str = ""
    """Why there is no ratio, what an extrapolated one rests on, or how far a loss at the edge lies out."""
    interval: tuple[float, float] | None = None
    effective_tokens: float | None = None
    """D_eff of the method (from the law's A, or the baseline's real tokens times the ratio)."""
    effective_basis: str = ""
    """How ``effective_tokens`` was obtained, for printing next to it."""
    illustrative: bool = False
    """The law was given as constants, not fitted to the user's runs: print :data:`STATED_CAVEAT`
    beside the number."""
    margin: float | None = None
    """How far beyond the law's evidence (a stated law's ``loss_range``, a fitted law's runs) a loss
    read as at its edge (:func:`range_margin`; None: a stated law with no range to read)."""

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
            "effective_basis": self.effective_basis or None, "illustrative": self.illustrative,
            "margin": self.margin,
        })


def undetermined(law: ReferenceLaw | PowerLawFit) -> list[str]:
    """Those of E and alpha (the ratio's parameters) that a fitted law does not determine; none
    for a given law, whose constants are taken as stated."""
    if isinstance(law, ReferenceLaw):
        return []
    return [name for name in ("E", "alpha") if not law.determined[name]]


class Evidence(NamedTuple):
    """The losses a law's numbers were read on (:func:`evidence_range`)."""

    low: float
    high: float
    name: str
    """How the notes name them."""


def evidence_range(law: ReferenceLaw | PowerLawFit) -> Evidence | None:
    """The losses ``law`` has evidence for: a stated law's calibration losses (None: it states none),
    or a fitted law's baseline runs: measured, or on the fitted curve between the smallest and
    largest D (a run's noise may put its loss just outside the curve's range)."""
    if isinstance(law, ReferenceLaw):
        if law.loss_range is None:
            return None
        low, high = law.loss_range
        return Evidence(low, high, f"the calibration losses {low:g}-{high:g} of {law.name}")
    low = min(float(np.min(law.y)), float(law.predict(np.max(law.x))))
    high = max(float(np.max(law.y)), float(law.predict(np.min(law.x))))
    return Evidence(low, high, f"the baseline runs' losses {low:.4f}-{high:.4f} "
                               f"(D {np.min(law.x):.3g}-{np.max(law.x):.3g})")


def efficiency_basis(loss: float, baseline_loss: float, law: ReferenceLaw | PowerLawFit, *,
                     noise_sd: float | None = None) -> tuple[Basis, str]:
    """How the efficiency of ``loss`` against ``baseline_loss`` can be read from ``law``, and a note.

    One rule for both kinds of law: both losses within the law's evidence (a given law's calibration
    losses, a fitted law's baseline runs) read ``stated`` / ``interpolated``; a loss outside it by no
    more than :func:`range_margin` (seed noise, from ``noise_sd`` and a given law's ``loss_noise``)
    is ``at the edge``, with a number. Beyond that a given law's number would extrapolate someone
    else's law (``out of range``, none), and a fitted law's rests on E and alpha, so it is not
    determined where the fit does not determine them. A loss at or below E (where E is known) has no
    finite effective data.

    Why a fitted law's edge needs no determined E: a loss ``delta`` below the edge L_e moves log D_eff
    by (1/alpha) log(1 + delta / (L_e - delta - E)) = delta / s + delta^2 / (2 alpha (L_e - E)^2) + ...,
    with s = alpha (L_e - E) the law's slope -dL/dlog D at the edge, which the points pin as they pin
    the curve between them; E enters only at second order, a share delta / (2 (L_e - E)) of a step
    that seed noise already blurs. Not where E ended at the lowest loss (``E_at_lowest_loss``):
    there L_e - E is about 0 and the curve below the runs is held up by that bound, not by the points.

    Example:
        >>> law = load_reference_law()  # calibrated on 3.344-3.5544, no loss_noise stated
        >>> [efficiency_basis(3.41, baseline, law, noise_sd=0.003)[0].value for baseline in (3.5544, 3.56, 3.60)]
        ['stated', 'at the edge', 'out of range']
    """
    values = {"method": loss, "baseline": baseline_loss}
    for (what, value), field in zip(values.items(), ("loss", "baseline_loss")):
        if not math.isfinite(value):  # a FieldError of the argument: `analysis efficiency` names its flag
            raise FieldError(field, f"expected a finite {what} loss, got {value}", where="efficiency")
    stated = isinstance(law, ReferenceLaw)
    lowest = min(loss, baseline_loss)
    if stated and lowest <= law.E:  # first: below E no range could help, and the row says so, not "out of range"
        return Basis.BELOW_E, f"loss {lowest:.4f} is not above the reference law's E={law.E:.4g}"
    evidence = evidence_range(law)
    if evidence is None:
        return Basis.STATED, ""
    low, high, name = evidence
    beyond = {what: value - (high if value > high else low) for what, value in values.items() if not low <= value <= high}
    if not beyond and lowest > law.E:
        return (Basis.STATED if stated else Basis.INTERPOLATED), ""
    margin = range_margin(law, noise_sd)
    where = (" and ".join(f"{what} loss {values[what]:.4f} lies {abs(distance):.4f} "
                          f"{'above' if distance > 0 else 'below'}" for what, distance in beyond.items()) + f" {name}"
             if beyond else f"loss {lowest:.4f} at the fit's E, which ended at the lowest baseline loss")
    held_by_bound = not stated and law.E_at_lowest_loss and min(beyond.values(), default=0.0) < 0
    if beyond and all(abs(distance) <= margin for distance in beyond.values()) and lowest > law.E \
            and not held_by_bound:
        return Basis.AT_EDGE, f"{where}: within seed noise (margin {margin:.4f})"
    if stated:
        noise = (f"beyond seed noise (margin {margin:.4f})" if margin else
                 "with no seed-noise estimate to widen the range (measure it: `noise: {repeats: 2}`, `--noise-sigma`)")
        return Basis.OUT_OF_RANGE, (f"{where}, {noise}: an efficiency there would extrapolate that law, not "
                                    f"estimate yours; {FIT_ADVICE}")
    loose = undetermined(law)
    if loose:
        return Basis.NOT_DETERMINED, (f"{where}: its effective data is an extrapolation that rests on "
                                      f"{' and '.join(loose)}, which the points do not determine")
    if lowest > law.E:
        return Basis.EXTRAPOLATED, f"{where}: extrapolated on the fitted law"
    return Basis.BELOW_E, f"loss {lowest:.4f} is not above the fitted baseline law's E={law.E:.4g}"


def efficiency(
    loss: float,
    baseline_loss: float,
    law: ReferenceLaw | PowerLawFit,
    *,
    level: float = 0.95,
    noise_sd: float | None = None,
) -> Efficiency:
    """Efficiency of ``loss`` against ``baseline_loss`` under a given or fitted law.

    With a fitted law that has bootstrap draws, the interval is the percentile interval of the
    ratio over the draws of (alpha, E); draws whose E is not below both losses are dropped.
    Where :func:`efficiency_basis` gives no ratio (out of range, not determined, below E),
    ``ratio`` is NaN and ``note`` says why. ``noise_sd``: the measured seed noise of one loss, which
    widens the law's evidence (:func:`range_margin`).

    Raises:
        UserError: a non-finite loss.
    """
    basis, note = efficiency_basis(loss, baseline_loss, law, noise_sd=noise_sd)
    stated = isinstance(law, ReferenceLaw)
    result = Efficiency(ratio=math.nan, loss=float(loss), baseline_loss=float(baseline_loss), alpha=float(law.alpha),
                        E=float(law.E), basis=basis, note=note, illustrative=stated,
                        margin=None if evidence_range(law) is None else range_margin(law, noise_sd))
    if not basis.determined:
        return result
    result.ratio = efficiency_ratio(loss, baseline_loss, alpha=law.alpha, E=law.E)
    if isinstance(law, PowerLawFit) and law.samples is not None:
        _bootstrap_interval(result, law, level)
    if law.A is not None:
        result.effective_tokens = effective_data(loss, alpha=law.alpha, E=law.E, A=law.A)
        result.effective_basis = "inverting the law (units of its D)"
    elif stated and law.baseline_tokens is not None:
        result.effective_tokens = result.ratio * law.baseline_tokens
        result.effective_basis = f"ratio x the baseline's {law.baseline_tokens:,.0f} real tokens"
    return result


def _bootstrap_interval(result: Efficiency, law: PowerLawFit, level: float) -> None:
    """The ratio's percentile interval over the fit's bootstrap draws, set on ``result``.

    A draw whose E is at or above a loss says no amount of real data reaches it: an infinite ratio,
    which counts at the top of the draws, not dropped (dropping it quoted a finite upper end from the
    rest). Where more such draws than the interval's upper tail remain, there is no finite upper end:
    no interval, and the note says so with the lower end."""
    E_draws, alpha_draws = law.samples[:, 0], law.samples[:, 2]
    reaches = E_draws < min(result.loss, result.baseline_loss)
    if reaches.sum() < MIN_BOOT:  # the fits' own floor for a percentile interval
        return
    draws = ratio_of_losses(result.loss, result.baseline_loss, alpha_draws[reaches], E_draws[reaches])
    unreachable = int((~reaches).sum())
    low, high = percentile_interval(np.concatenate([draws, np.full(unreachable, np.max(draws))]), level)
    share = unreachable / len(E_draws)
    if share <= (1 - level) / 2:
        result.interval = (low, high)
        return
    result.note = "; ".join(filter(None, [
        result.note, f"{NO_UPPER_BOUND}: E lies at or above the loss in {share:.0%} of the fit's bootstrap refits "
        f"(more than the {(1 - level) / 2:.1%} upper tail), so no real data size may reach it; the "
        f"{int(level * 100)}% interval's lower end is {low:.2f}x"]))
