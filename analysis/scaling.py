"""Power-law fits L(x) = E + A * x^(-alpha), with honest uncertainty: the maths alone.

paper.md, "Results": the real-data scaling law of the standard recipe is L(D) = E + A * D^(-alpha)
(data efficiency inverts it at two losses, :mod:`analysis.efficiency`); loss vs ensemble size
follows L(K) = E + A * K^(-alpha), compared by the asymptotes E; the same law is fitted to loss vs
generation count G. Fitting a table per group and the JSON records of a fit are
:mod:`analysis.fits`; the input checks, with the messages users see, :mod:`analysis.fit_checks`.
Sweeps often give three or four points, which can at
best just determine three parameters, so the fit reports what the points determine and what
they do not instead of returning a number that only looks precise:

* fewer distinct x than free parameters -> :class:`~megadocs.errors.UserError` (fix ``alpha``
  or ``E``, or add points);
* losses that do not fall as x grows -> ``UserError`` (no decreasing power law describes them);
* exactly as many distinct x as free parameters -> the curve interpolates the points: there is
  no residual to judge the law or estimate noise, so intervals need an external noise level;
* a parameter that ends at a search bound (E at the lowest loss: the losses have not flattened;
  alpha at its limit) is reported as not determined.

The fit minimises (optionally Huber-robust) squared *log* residuals log(L_hat) - log(L) with
bounded multi-start ``scipy.optimize.least_squares``; x is scaled by its geometric mean so the
amplitude is well conditioned. Intervals come from a parametric bootstrap at the same x (the
design is the experimenter's): the noise level is either given (``noise_sigma``) or estimated
from the residuals and drawn anew for every refit from its chi-square sampling distribution, so
that a level resting on three spare points does not make the intervals too narrow.

Example:
    >>> import numpy as np
    >>> x = np.array([1, 2, 4, 8, 16, 32.0])
    >>> fit = fit_power_law(x, 2.0 + 3.0 * x**-0.5, n_boot=0)
    >>> round(fit.E, 3), round(fit.A, 3), round(fit.alpha, 3)
    (2.0, 3.0, 0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
from scipy.optimize import least_squares

from analysis.fit_checks import NOISE_ADVICE, check_fit_inputs, losses_fall

__all__ = ["PARAMS", "N_BOOT", "MIN_BOOT", "PowerLawFit", "power_law", "fit_power_law", "percentile_interval"]

PARAMS = ("E", "A", "alpha")
DEFAULT_ALPHA_BOUNDS = (1e-3, 4.0)
SCREEN_NFEV, POLISH_NFEV = 40, 400
"""Function evaluations per start while screening starts, and for the final polish."""
N_BOOT = 500
"""Bootstrap refits of every fit by default: the report, the notebook, ``fit`` and ``--fit-baseline``
use this one count, so that the same points get the same interval and the same determined verdict
(E_AT_ZERO reads the interval) wherever they are fitted."""
MIN_BOOT = 20
"""Fewest bootstrap refits a percentile interval is read from (fewer: refused, not a silent "no interval")."""
E_AT_ZERO = 0.05
"""An E interval whose low end is below this share of the lowest loss reaches toward the search bound 0."""
NOISE_FREE = 1e-8
"""A log residual level (about a relative error) below which the points lie on the law to rounding: no
seed noise is that small, and refits at that level would give zero-width intervals (none is given)."""
VALLEY_GRID = np.arange(64) / 64
"""E's of the valley floor scored before a polish, as shares of the lowest loss (``_Problem.valley_floor``)."""
MIN_DECAY_COVERED = 0.15
"""E counts as determined only if the points span this share of the fitted decay toward it."""


def percentile_interval(values, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``values`` (a parameter's draws, or a
    quantity computed from them): one rule for every interval the fits report."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(low), float(high)


def power_law(x, E: float, A: float, alpha: float):
    """L(x) = E + A * x^(-alpha)."""
    return E + A * np.power(np.asarray(x, dtype=float), -alpha)


@dataclass
class PowerLawFit:
    """A fitted law and what the data say about each parameter."""

    E: float
    A: float
    alpha: float
    x: np.ndarray
    y: np.ndarray
    loss: str
    fixed: dict[str, float]
    determined: dict[str, bool]
    """False for a parameter the points do not pin down (at a bound, or no spare points)."""
    notes: list[str]
    """Plain-language warnings: too few points, bounds hit, rises in the losses."""
    rmse_log: float
    """Root mean square log residual (0 when the curve interpolates the points)."""
    ci: dict[str, tuple[float, float]] | None = None
    """Bootstrap interval per parameter at ``level``; None when none can be given (see notes)."""
    level: float = 0.95
    samples: np.ndarray | None = field(default=None, repr=False)
    """Bootstrap draws, shape (n, 3), columns E, A, alpha (for derived intervals)."""

    @property
    def n_points(self) -> int:
        return int(len(self.x))

    @property
    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "alpha": self.alpha}

    def predict(self, x):
        return power_law(x, self.E, self.A, self.alpha)

    @property
    def E_at_lowest_loss(self) -> bool:
        """E ended at its upper search bound, the lowest loss: the losses have not started to
        flatten, so beyond the largest x the law is held up by that bound, not by the points."""
        return "E" not in self.fixed and _at_bound(self.E, *_e_bounds(self.y)) == "high"

    def interval(self, name: str) -> tuple[float, float] | None:
        return None if self.ci is None else self.ci.get(name)


def _e_bounds(y: np.ndarray) -> tuple[float, float]:
    """E's search range, [0, lowest loss]: a loss that falls toward E from above never reaches it.
    The solver searches it (``_Problem.bounds``) and a fit is judged by where in it E ended
    (``_judge``, ``PowerLawFit.E_at_lowest_loss``)."""
    return 0.0, float(np.min(y))


@dataclass(frozen=True, eq=False)
class _Problem:
    """Checked inputs of one fit, in the coordinates the solver works in.

    theta = (E, log B, alpha) with x scaled by its geometric mean ``x0`` (A = B * x0^alpha), which
    keeps the amplitude well conditioned; ``free`` marks the parameters that are fitted.
    """

    x: np.ndarray
    y: np.ndarray
    free: np.ndarray
    theta_fixed: np.ndarray
    fixed: dict[str, float]
    loss: str
    huber_delta: float
    alpha_bounds: tuple[float, float]
    notes: list[str]

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, *, fix_E: float | None, fix_alpha: float | None, loss: str,
           huber_delta: float, alpha_bounds, notes: list[str]) -> _Problem:
        """The problem of checked inputs (:func:`analysis.fit_checks.check_fit_inputs`)."""
        fixed = {name: value for name, value in (("E", fix_E), ("alpha", fix_alpha)) if value is not None}
        return cls(x=x, y=y, free=np.array([fix_E is None, True, fix_alpha is None]),
                   theta_fixed=np.array([np.nan if fix_E is None else fix_E, np.nan,
                                         np.nan if fix_alpha is None else fix_alpha]),
                   fixed=fixed, loss=loss, huber_delta=huber_delta, alpha_bounds=tuple(alpha_bounds), notes=notes)

    @cached_property  # read in every evaluation of the curve
    def x0(self) -> float:
        return float(np.exp(np.mean(np.log(self.x))))

    @cached_property
    def x_scaled(self) -> np.ndarray:
        return self.x / self.x0

    @property
    def n_free(self) -> int:
        return int(self.free.sum())

    @property
    def dof(self) -> int:
        return len(self.x) - self.n_free

    def bounds(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """E in :func:`_e_bounds`, log B free, alpha in ``alpha_bounds``."""
        e_low, e_high = _e_bounds(y)
        return (np.array([e_low, -np.inf, self.alpha_bounds[0]]),
                np.array([e_high, np.inf, self.alpha_bounds[1]]))

    def curve(self, theta: np.ndarray) -> np.ndarray:
        """The fitted losses at the problem's x."""
        E, log_b, alpha = theta
        return E + np.exp(log_b) * np.power(self.x_scaled, -alpha)

    def natural(self, theta: np.ndarray) -> tuple[float, float, float]:
        """(E, A, alpha) of a solver theta."""
        return float(theta[0]), float(math.exp(theta[1]) * self.x0 ** theta[2]), float(theta[2])

    def solve(self, y: np.ndarray, starts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Best of several bounded starts on losses ``y``; returns (theta, log residuals)."""
        free, x_scaled, log_y = self.free, self.x_scaled, np.log(y)
        log_x = np.log(x_scaled)

        def full(theta_free):
            theta = self.theta_fixed.copy()
            theta[free] = theta_free
            return theta

        def residuals(theta_free):
            prediction = self.curve(full(theta_free))
            return np.log(np.maximum(prediction, 1e-300)) - log_y

        def jacobian(theta_free):
            E, log_b, alpha = full(theta_free)
            term = np.exp(log_b) * np.power(x_scaled, -alpha)
            prediction = np.maximum(E + term, 1e-300)
            columns = np.stack([1.0 / prediction, term / prediction, -term * log_x / prediction], axis=1)
            return columns[:, free]

        lower, upper = (bound[free] for bound in self.bounds(y))

        def run(start_free, max_nfev):
            return least_squares(
                residuals, np.clip(start_free, lower, upper), jac=jacobian, bounds=(lower, upper),
                loss=self.loss, f_scale=self.huber_delta, method="trf", max_nfev=max_nfev,
            )

        # Short runs from every start, then one long polish of the best: flat valleys (a loose E)
        # make trf crawl, and only the winner deserves the iterations. The polish starts lower down
        # the valley floor where that is lower than where the screen stopped (``valley_floor``),
        # and runs where the screen had not converged (status 0: stopped by max_nfev).
        best = min((run(start[free], SCREEN_NFEV) for start in starts), key=lambda result: result.cost)
        floor = self.valley_floor(y, full(best.x))
        if floor is not None or best.status == 0:
            best = run(best.x if floor is None else floor[free], POLISH_NFEV)
        return full(best.x), residuals(best.x)

    def valley_floor(self, y: np.ndarray, theta: np.ndarray) -> np.ndarray | None:
        """The law on the valley floor downhill from ``theta``'s E, found without iterating, where it
        fits losses ``y`` better than ``theta``; None where it does not, or E is fixed.

        Losses that fall about linearly in log x leave a curved valley of about equally good laws,
        (E, B, alpha) ~ (E, c0 - E, c1 / (c0 - E)) (the level c0 and slope c1 at the geometric mean
        of x are pinned, E is not): trf follows its curve in hundreds of short steps (~300
        evaluations per refit), and where the lowest law has E at its bound 0 it stops short of it
        (E ~ 0.01-0.05: its gradient is scaled by the distance to the bound). For a fixed E the law
        is a straight line in log-log, log(L - E) = log B - alpha log x, so the valley floor at E is
        a weighted linear regression of log(y - E) on log x (weights ((y - E) / y)^2 make its
        residuals those of log L to first order, exactly at E = 0; alpha clipped to its bounds, log B
        refitted, is the bounded optimum). The floor is scored on a grid of E over [0, lowest loss)
        at once and descended from ``theta``'s grid point, as the crawl descends it: a run from there
        converges to the minimum the crawl heads for in a few steps, at E = 0 where that is lowest.
        """
        if not self.free[0]:
            return None
        grid = VALLEY_GRID * float(np.min(y))
        log_x = np.log(self.x_scaled)
        above = y[None, :] - grid[:, None]
        z, weight = np.log(above), (above / y[None, :]) ** 2
        total = weight.sum(axis=1)
        x_mean, z_mean = (weight @ log_x) / total, (weight * z).sum(axis=1) / total
        if self.free[2]:
            centred = log_x[None, :] - x_mean[:, None]
            slope = (weight * centred * (z - z_mean[:, None])).sum(axis=1) / (weight * centred**2).sum(axis=1)
            alpha = np.clip(-slope, *self.alpha_bounds)
        else:
            alpha = np.full(len(grid), self.theta_fixed[2])
        log_b = z_mean + alpha * x_mean
        prediction = grid[:, None] + np.exp(log_b[:, None] - alpha[:, None] * log_x[None, :])
        costs = _cost(np.log(prediction) - np.log(y)[None, :], self.loss, self.huber_delta)
        index = int(np.argmin(np.abs(grid - theta[0])))
        while True:  # downhill along the grid, to the nearest local minimum of the floor
            step = min((index - 1, index + 1), key=lambda i: costs[i] if 0 <= i < len(grid) else np.inf)
            if not 0 <= step < len(grid) or costs[step] >= costs[index]:
                break
            index = step
        lower = costs[index] < _cost(np.log(self.curve(theta)) - np.log(y), self.loss, self.huber_delta)
        return np.array([grid[index], log_b[index], alpha[index]]) if lower else None


def _cost(residuals: np.ndarray, loss: str, huber_delta: float) -> np.ndarray:
    """``least_squares``'s cost of log residuals (last axis): 0.5 sum r^2, or its Huber rho with
    ``f_scale`` = ``huber_delta`` (scipy's definition), so that a start is compared with a run's ``cost``."""
    if loss == "linear":
        return 0.5 * np.sum(residuals**2, axis=-1)
    z = (residuals / huber_delta) ** 2
    return 0.5 * huber_delta**2 * np.sum(np.where(z <= 1, z, 2 * np.sqrt(z) - 1), axis=-1)


def _starts(y: np.ndarray, theta_fixed: np.ndarray, alpha_bounds) -> list[np.ndarray]:
    y_min, y_mean = float(y.min()), float(y.mean())
    starts = []
    for e_frac in (0.0, 0.5, 0.9, 0.99):
        for alpha in (0.1, 0.3, 1.0, 2.5):
            E = e_frac * y_min if math.isnan(theta_fixed[0]) else theta_fixed[0]
            alpha = float(np.clip(alpha, *alpha_bounds))
            starts.append(np.array([E, math.log(max(y_mean - E, 1e-6)), alpha]))
    return starts


def fit_power_law(
    x,
    y,
    *,
    loss: Literal["linear", "huber"] = "linear",
    huber_delta: float = 0.01,
    fix_alpha: float | None = None,
    fix_E: float | None = None,
    alpha_bounds: tuple[float, float] = DEFAULT_ALPHA_BOUNDS,
    n_boot: int = N_BOOT,
    noise_sigma: float | None = None,
    level: float = 0.95,
    seed: int = 0,
) -> PowerLawFit:
    """Fit L(x) = E + A * x^(-alpha) to points (x_i, L_i): validate, compute, present.

    Args:
        x, y: positive sizes and losses (repeated x, e.g. several seeds, are fine).
        loss: ``"linear"`` (least squares) or ``"huber"`` on log residuals; ``huber_delta`` is
            the log residual (about a relative error) beyond which a point counts as an outlier.
        fix_alpha, fix_E: hold a parameter fixed (needed with two points).
        alpha_bounds: search range of alpha; E is searched in [0, lowest loss].
        n_boot: bootstrap refits for intervals (0: none).
        noise_sigma: known noise of a loss (e.g. seed-to-seed std); the bootstrap then draws
            losses with that noise, which also gives intervals when the points leave no residual.
        level: two-sided interval level.

    Raises:
        UserError: too few distinct points for the free parameters, or losses that do not
            decrease with x, or invalid values.
    """
    x, y, notes = check_fit_inputs(x, y, fix_alpha=fix_alpha, fix_E=fix_E, loss=loss, huber_delta=huber_delta,
                                   level=level, alpha_bounds=alpha_bounds, n_boot=n_boot, noise_sigma=noise_sigma,
                                   min_boot=MIN_BOOT)
    problem = _Problem.of(x, y, fix_E=fix_E, fix_alpha=fix_alpha, loss=loss, huber_delta=huber_delta,
                          alpha_bounds=alpha_bounds, notes=notes)
    theta, residuals = problem.solve(problem.y, _starts(problem.y, problem.theta_fixed, alpha_bounds))
    determined, notes = _judge(problem, theta)
    samples, ci, uncertainty_notes = _uncertainty(problem, theta, residuals, n_boot=n_boot,
                                                  noise_sigma=noise_sigma, level=level, seed=seed)
    if ci is not None and problem.free[0] and determined["E"] and ci["E"][0] <= E_AT_ZERO * float(problem.y.min()):
        # The estimate sits inside the search range, but refits of equally likely losses drive E
        # to 0 (a power law with a tiny alpha, i.e. loss linear in log x): only "E < lowest loss"
        # is known, and an asymptote quoted with an interval [0, L_min] reads as a finding.
        determined["E"] = determined["A"] = False
        notes.append(f"E's {int(level * 100)}% interval reaches 0, the search bound: the points do not "
                     "determine the asymptote (only that it lies below the lowest loss)")
    E, A, alpha = problem.natural(theta)
    return PowerLawFit(
        E=E, A=A, alpha=alpha, x=problem.x, y=problem.y, loss=loss, fixed=problem.fixed,
        determined=determined, notes=problem.notes + notes + uncertainty_notes,
        rmse_log=float(np.sqrt(np.mean(residuals**2))), ci=ci, level=level, samples=samples,
    )


def _judge(problem: _Problem, theta: np.ndarray) -> tuple[dict[str, bool], list[str]]:
    """Which parameters the points pin down: not at a search bound, and E not a long extrapolation."""
    determined = {name: True for name in PARAMS}
    notes: list[str] = []
    lower, upper = problem.bounds(problem.y)
    for name, index in (("E", 0), ("alpha", 2)):
        if not problem.free[index]:
            continue
        end = _at_bound(theta[index], lower[index], upper[index])
        if end:
            determined[name] = False
            if name == "E" and end == "high":
                notes.append(
                    "E ended at the lowest observed loss: the losses have not flattened, so the asymptote "
                    "is not determined (only an upper bound)"
                )
            elif name == "E":
                notes.append("E ended at 0: the points cannot separate the asymptote from the power-law term")
            else:
                notes.append(
                    f"alpha ended at its search bound {theta[index]:.3g}: the decay rate is not determined "
                    f"(bounds {problem.alpha_bounds})"
                )
    if not all(determined.values()) and determined["A"]:
        # A trades off against whichever parameter is loose, so it is not pinned down either.
        determined["A"] = False
    # How much of the fitted decay toward E the points span: a law that is still far from its
    # asymptote at the largest x (losses falling about linearly in log x) leaves E to extrapolation.
    x = problem.x
    covered = 1.0 - (x.max() / x.min()) ** (-theta[2])
    if problem.free[0] and determined["E"] and covered < MIN_DECAY_COVERED:
        determined["E"] = determined["A"] = False
        notes.append(
            f"the points span only {covered:.0%} of the fitted decay toward E (losses fall about linearly "
            "in log x): the asymptote is a long extrapolation and is not determined"
        )
    elif problem.free[0] and determined["E"] and covered < 0.5:
        notes.append(f"E is an extrapolation: the points span {covered:.0%} of the fitted decay toward it")
    return determined, notes


def _at_bound(value: float, low: float, high: float) -> Literal["low", "high"] | None:
    """Which end of its search range a fitted value ended at (within 1e-4 of the range's width: losses
    of any unit, an error rate as much as nats, get the same verdict)."""
    tolerance = 1e-4 * (high - low)
    return "low" if value <= low + tolerance else "high" if value >= high - tolerance else None


def _uncertainty(problem: _Problem, theta, residuals, *, n_boot, noise_sigma, level, seed):
    """Bootstrap draws, percentile intervals and notes; (None, None, notes) when none can be given."""
    if n_boot == 0:
        return None, None, []
    if noise_sigma is None and problem.dof <= 0:
        return None, None, [
            "no interval: with no spare points there is no residual to estimate the noise; for a parametric "
            f"interval give the loss noise: {NOISE_ADVICE}"
        ]
    log_noise = None if noise_sigma is not None else math.sqrt(float(np.sum(residuals**2)) / problem.dof)
    if log_noise is not None and log_noise < NOISE_FREE:
        # Refits of the curve itself, noise level 0: every interval would be zero-width, read as certainty.
        return None, None, [
            f"no interval: the points lie on the law to rounding (log residual level {log_noise:.1g}), so there "
            f"is no residual to estimate the noise; for a parametric interval give the loss noise: {NOISE_ADVICE}"
        ]
    samples, failed = _bootstrap(problem, theta, noise_sigma=noise_sigma, log_noise=log_noise, n_boot=n_boot,
                                 seed=seed)
    if len(samples) < max(MIN_BOOT, n_boot // 2):
        return None, None, [f"no interval: {failed} of {n_boot} bootstrap refits failed"]
    notes = [f"{failed} of {n_boot} bootstrap refits had non-decreasing losses and were dropped"] if failed else []
    ci = {name: percentile_interval(samples[:, i], level) for i, name in enumerate(PARAMS)}
    return samples, ci, notes


def _bootstrap(problem: _Problem, theta, *, noise_sigma, log_noise, n_boot, seed):
    """Refit on simulated losses at the same x; returns draws (n, 3) of (E, A, alpha) and failures.

    Parametric: losses are the fitted curve plus noise. With ``noise_sigma`` the noise is that
    (absolute) level. Otherwise it is multiplicative with the level estimated from the fit's
    log residuals, ``log_noise`` s with s^2 = RSS / dof, and every draw first draws its own level
    ``s * sqrt(dof / chi2(dof))``: with 6 points and 3 parameters s rests on 3 degrees of
    freedom, and treating it as known (or resampling 6 residuals) gave 69-86% coverage for
    nominal 95% intervals; drawing the level restores about 95% (tests/analysis/test_scaling.py
    simulates it).
    """
    rng = np.random.default_rng(seed)
    fitted = problem.curve(theta)
    draws, failed = [], 0
    for _ in range(n_boot):
        if noise_sigma is None:
            level = log_noise * math.sqrt(problem.dof / rng.chisquare(problem.dof))
            y_star = fitted * np.exp(rng.normal(0.0, level, size=len(fitted)))
        else:
            y_star = fitted + rng.normal(0.0, noise_sigma, size=len(fitted))
        # The input check's rule (mean losses at the two ends of x), not one replicate per end: with
        # repeated seeds at each x that dropped many refits the fit itself would have accepted.
        if np.any(y_star <= 0) or not losses_fall(problem.x, y_star):
            failed += 1
            continue
        if not math.isnan(problem.theta_fixed[0]) and problem.theta_fixed[0] >= y_star.min():
            failed += 1
            continue
        # Simulated losses stay close to the fit: its optimum is the natural start, or the valley floor
        # below it (a refit heading for E = 0 would crawl its screen there).
        floor = problem.valley_floor(y_star, theta)
        refit, _ = problem.solve(y_star, [theta if floor is None else floor])
        draws.append(problem.natural(refit))
    return np.array(draws).reshape(-1, 3), failed
