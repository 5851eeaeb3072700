"""Seed noise: the one rule for when a difference of losses is clear of it.

A single run's loss varies with its seed (data order, initialisation). A sweep measures that
noise where it repeats runs (``noise: {repeats: N}``; each certification's ``noise_sd``), or the
user gives it (``--noise-sigma``; :func:`seed_noise` says which one an analysis uses), and
every judgement against it uses :func:`noise_tolerance`: the Findings' "better" and "tie", a
tuned loss that rises with G, and how far beyond a law's evidence (a stated law's calibration
losses, a fitted law's baseline runs) a loss still reads as at its edge (:func:`analysis.efficiency.efficiency_basis`).

Example:
    >>> round(noise_tolerance(0.003), 4)  # 2 sds of the difference of two single runs
    0.0085
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.fit_checks import NOISE_SIGMA_FLAG

__all__ = ["CLEAR_SDS", "pooled_noise", "seed_noise", "noise_tolerance"]

CLEAR_SDS = 2.0
"""A gain or rise is clear beyond this many sds of a two-run difference."""


def pooled_noise(certifications: pd.DataFrame) -> float:
    """Root-mean-square of the certifications' seed-noise estimates (nan when none measured it)."""
    if "noise_sd" not in certifications:
        return math.nan
    values = [float(v) for v in certifications["noise_sd"] if v is not None and math.isfinite(float(v))]
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


def seed_noise(certifications: pd.DataFrame, given: float | None = None) -> tuple[float, str]:
    """The seed-noise sd of one loss that a sweep's analysis judges against, and where it comes from
    (for the sentence that quotes it): ``given`` (``--noise-sigma``) where given, else the
    certifications' own, :func:`pooled_noise` (nan: none measured)."""
    if given is not None:
        return float(given), f"given with {NOISE_SIGMA_FLAG}"
    return pooled_noise(certifications), "pooled over the repeats the certifications ran"


def noise_tolerance(sigma: float, other: float | None = None) -> float:
    """Smallest difference of two single-run losses that is clear of seed noise: :data:`CLEAR_SDS`
    sds of their difference, whose sd is hypot(sigma, other) (``other`` not given: the same noise
    as ``sigma``, i.e. sigma * sqrt(2)). 0 if ``sigma`` is unknown (nan)."""
    if not math.isfinite(sigma):
        return 0.0
    return CLEAR_SDS * math.hypot(sigma, sigma if other is None else other)
