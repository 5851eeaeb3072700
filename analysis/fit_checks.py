"""What a power-law fit refuses, in the words a user sees: the input checks of
:func:`analysis.scaling.fit_power_law`, kept apart so the maths reads in one go against paper.md.

:func:`check_fit_inputs` refuses, with a :class:`~megadocs.errors.UserError` that names the option or
the points (``power-law fit: ...``; an option's: a :class:`FitOptionError`, which a command names
by its flag), what no fit can answer honestly: a constant that is not a loss or
a decay exponent, too few distinct x for the free parameters, losses that do not fall as x grows,
options outside their ranges. It returns the points as arrays and notes on weaker problems (a local
rise, exactly as many distinct x as free parameters), which the fit reports with its own.
:data:`NOISE_ADVICE` is the command a fit's "no interval" note gives for a known loss noise
(:data:`NOISE_SIGMA_FLAG`, the option the CLI registers under that name).
"""

from __future__ import annotations

import math

import numpy as np

from megadocs.errors import FieldError, UserError

__all__ = ["LOSSES", "NOISE_SIGMA_FLAG", "NOISE_ADVICE", "FIT", "FitOptionError", "TooFewPoints", "check_fit_inputs",
           "mean_losses", "losses_fall"]

LOSSES = ("linear", "huber")
"""The robust losses a fit may minimise on log residuals (``scipy.optimize.least_squares``'s names)."""

NOISE_SIGMA_FLAG = "--noise-sigma"
"""``analysis fit``'s option for a known loss noise (analysis/cli.py registers it under this name:
tests/analysis/test_scaling.py checks that the advice's command parses)."""
NOISE_ADVICE = (f"`megadocs analysis fit INPUT {NOISE_SIGMA_FLAG} SD` (INPUT: the sweep YAML the report "
                "was made from, or a table of losses; SD: the seed-to-seed std of one loss, e.g. the seed sd "
                "a sweep with `noise: {repeats: N}` measured)")
"""The command and flag that follow "give the loss noise" (the report prints the same note: the
command it names fits the same certified losses, as ``analysis report --noise-sigma SD`` does)."""


FIT = "power-law fit"
"""The record a fit's options are (:class:`FitOptionError`'s ``where``): ``analysis fit``'s flags name
its fields (`megadocs.cli.flags_named`), each option's ``dest`` the keyword it fills."""


class FitOptionError(FieldError):
    """An option of a fit outside its range (``field``: its keyword of
    :func:`analysis.scaling.fit_power_law`; ``where``: :data:`FIT`): no fit of any points takes it, so a
    fit of several groups (`analysis.fits.fit_groups`) refuses it once rather than reporting each group
    not fitted.

    >>> str(FitOptionError("huber_delta", "expected > 0, got 0", where=FIT))
    'power-law fit: huber_delta: expected > 0, got 0'
    """


class TooFewPoints(UserError):
    """Fewer distinct x than the fit's free parameters (at least two): the points are too few to fit,
    not points no law describes (a curve measured at one G so far; ``analysis fit SWEEP.yaml`` does not
    count another setting's curve that is too short as a failed fit)."""


def check_fit_inputs(x, y, *, fix_alpha, fix_E, loss, huber_delta, level, alpha_bounds, n_boot, noise_sigma,
                     min_boot: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The points as float arrays and notes on weaker problems, or a ``UserError`` naming the first
    bad input (``min_boot``: the fewest bootstrap refits a percentile interval is read from)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    # Checked before the points: a NaN or negative constant (e.g. `--alpha nan`) made the solver
    # fail with "Residuals are not finite", and alpha <= 0 fitted a law that does not decay. An option
    # is refused whatever the points (FitOptionError), before what they lack.
    if fix_alpha is not None and not (math.isfinite(fix_alpha) and fix_alpha > 0):
        raise FitOptionError("fix_alpha", f"expected a finite decay exponent > 0, got {fix_alpha}", FIT)
    if fix_E is not None and not (math.isfinite(fix_E) and fix_E >= 0):
        raise FitOptionError("fix_E", f"expected a finite loss >= 0, got {fix_E}", FIT)
    if loss not in LOSSES:
        raise FitOptionError("loss", f"expected {' or '.join(map(repr, LOSSES))}, got {loss!r}", FIT)
    if not huber_delta > 0:
        raise FitOptionError("huber_delta", f"expected > 0 (a log residual, e.g. 0.01), got {huber_delta}", FIT)
    if not 0 < level < 1:
        raise FitOptionError("level", f"expected a value in (0, 1), got {level}", FIT)
    if not 0 < alpha_bounds[0] < alpha_bounds[1]:
        raise FitOptionError("alpha_bounds", f"expected 0 < low < high, got {alpha_bounds}", FIT)
    if n_boot < 0 or 0 < n_boot < min_boot:
        raise FitOptionError("n_boot", f"expected 0 (no interval) or >= {min_boot} refits for a percentile interval, "
                             f"got {n_boot}", FIT)
    if noise_sigma is not None and not (math.isfinite(noise_sigma) and noise_sigma > 0):
        raise FitOptionError("noise_sigma", f"expected a loss noise > 0, got {noise_sigma}", FIT)
    notes = _check_points(x, y, n_free=1 + (fix_E is None) + (fix_alpha is None))
    if fix_E is not None and fix_E >= float(y.min()):
        raise UserError(f"power-law fit: fixed E={fix_E} must be below the lowest loss {y.min():.4g}")
    return x, y, notes


def mean_losses(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct x, ascending, and the mean loss at each (repeated x: several seeds of a point)."""
    distinct, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return distinct, np.bincount(inverse, weights=y) / counts


def losses_fall(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether the mean loss at the largest distinct x is below the mean at the smallest: the rule
    every fit's points must pass (else no decreasing power law describes them), and every bootstrap
    refit's simulated losses too (:func:`analysis.scaling.fit_power_law`), so that the refits are
    drawn from the same population of inputs the fit accepts."""
    _distinct, means = mean_losses(x, y)
    return bool(means[-1] < means[0])


def _check_points(x: np.ndarray, y: np.ndarray, n_free: int) -> list[str]:
    """Refuse points no decreasing power law can describe; return notes on weaker problems."""
    if x.ndim != 1 or x.shape != y.shape:
        raise UserError(f"power-law fit: x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise UserError("power-law fit: no points (empty input); nothing to fit")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise UserError(f"power-law fit: x must be finite and > 0, got {x.tolist()}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise UserError(f"power-law fit: losses must be finite and > 0, got {y.tolist()}")
    distinct, means = mean_losses(x, y)
    if len(distinct) < max(n_free, 2):
        names = "E, A, alpha" if n_free == 3 else f"{n_free} free parameters"
        raise TooFewPoints(
            f"power-law fit: {len(distinct)} distinct x value(s) {distinct.tolist()} cannot determine "
            f"{n_free} parameters ({names}); add points, or fix alpha or E (`megadocs analysis fit --alpha/--asymptote`)"
        )
    if not losses_fall(x, y):
        raise UserError(
            f"power-law fit: losses do not decrease as x grows (L={means[0]:.4g} at x={distinct[0]:g}, "
            f"L={means[-1]:.4g} at x={distinct[-1]:g}); a decreasing power law cannot describe them"
        )
    notes = []
    rises = [
        f"x={distinct[i]:g}->{distinct[i + 1]:g} (+{means[i + 1] - means[i]:.3g})"
        for i in range(len(distinct) - 1)
        if means[i + 1] > means[i]
    ]
    if rises:
        notes.append("loss rises between neighbouring points: " + ", ".join(rises))
    if len(distinct) == n_free:
        notes.append(
            f"{len(distinct)} points for {n_free} free parameters: the curve passes through the (mean) loss at "
            "every x, so nothing checks that a power law fits, and the values hold only if it does"
        )
    return notes
