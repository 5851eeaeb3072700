"""Analytic loss landscapes: objectives for tests, benchmarks and trying a sweep in seconds.

Each is a callable ``f(params) -> float`` usable as a sweep's ``objective`` (for example
``objective: search.landscapes:bowl``). Params are a grid point merged with the
certification's ``fixed`` values; axes a landscape does not know are ignored.

:class:`Landscape` is the seeded family the efficiency benchmark draws from: a convex bowl in
log space (lr, wd, epochs) and linear space (mix), optionally with extra local minima, a
plateau (ties), an optimum beyond a grid bound, and deterministic noise.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from megadocs.formats import REAL
from search.params import RunParams

__all__ = ["Landscape", "SeedNoise", "bowl", "rugged", "plateau", "edge", "noisy", "seed_noisy", "diverging",
           "random_landscape"]

# Where the published optima sit (paper.md): lr 3e-3, wd 0.4-1.6, epochs 8-32, mix 0.75-0.9.
DEFAULT_CENTRE = {"lr": 3e-3, "wd": 0.8, "epochs": 16.0, "mix": 0.8}
LOG_AXES = frozenset({"lr", "wd", "epochs", "synthetic_epochs"})
METHOD_OFFSET = {REAL: 0.0, "simple": -0.10, "stitched": -0.14, "latent": -0.18}


def _coordinate(axis: str, value: float) -> float:
    """Distances are measured in log2 space on scale axes, in units of 0.1 on the mix axis."""
    if axis in LOG_AXES:
        return math.log2(max(float(value), 1e-12))
    return float(value) * 10.0


def _unit_hash(*parts: Any) -> float:
    """A deterministic number in [0, 1) from the parts (stable across processes and runs)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Landscape:
    """A loss surface over named axes. Unknown axes are ignored, so one surface fits any grid.

    Attributes:
        centre: the global optimum (may lie outside a grid, which puts the optimum on a bound).
        curvature: per-axis weight of the squared distance; 0.02 by default.
        minima: extra local minima as (centre, depth, width) triples: Gaussian dips.
        plateau: losses are rounded down to multiples of this (ties between neighbours).
        noise: amplitude of deterministic per-point noise (a hash of the point and ``seed``).
    """

    centre: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CENTRE))
    curvature: Mapping[str, float] = field(default_factory=dict)
    minima: tuple[tuple[Mapping[str, float], float, float], ...] = ()
    plateau: float = 0.0
    noise: float = 0.0
    seed: int = 0
    floor: float = 3.0

    def __call__(self, params: Mapping[str, Any]) -> float:
        run = RunParams.split(params, self.centre)
        loss = self.floor + METHOD_OFFSET.get(str(run.method), 0.0)
        if run.method != REAL and run.g is not None:
            loss -= 0.03 * math.log2(float(run.g))
        for axis, target in self.centre.items():
            if axis in params:
                delta = _coordinate(axis, params[axis]) - _coordinate(axis, target)
                loss += self.curvature.get(axis, 0.02) * delta * delta
        for centre, depth, width in self.minima:
            distance2 = sum(
                (_coordinate(a, params[a]) - _coordinate(a, v)) ** 2 for a, v in centre.items() if a in params
            )
            loss -= depth * math.exp(-distance2 / (2 * width * width))
        if self.plateau > 0:
            loss = math.floor(loss / self.plateau) * self.plateau
        if self.noise > 0:
            point = sorted((k, v) for k, v in params.items() if k not in ("seed", "data_seed"))
            loss += self.noise * (2 * _unit_hash(self.seed, point) - 1)
        if run.seed is not None:  # ensemble members: a little seed-to-seed spread
            loss += 0.005 * (2 * _unit_hash("member", run.seed) - 1)
        return loss


bowl = Landscape()
"""Convex bowl with its optimum at lr 3e-3, wd 0.8, epochs 16, mix 0.8."""

rugged = Landscape(
    minima=(({"lr": 1e-3, "wd": 0.1, "epochs": 2.0}, 0.25, 0.6),),
)
"""The bowl plus a narrow, deep second minimum far from the usual start."""

plateau = Landscape(plateau=0.05)
"""A bowl quantised to steps of 0.05: many neighbours tie."""

edge = Landscape(centre={**DEFAULT_CENTRE, "epochs": 128.0})
"""The optimum lies beyond epochs 64: certificates must report the epochs upper bound."""

noisy = Landscape(noise=0.01)
"""The bowl with +-0.01 deterministic noise per point."""


@dataclass(frozen=True)
class SeedNoise:
    """A landscape seen through seed noise, as real training runs are: each run's loss is
    ``landscape(point) + sigma * N(0, 1)``, the draw fixed by (``seed``, the point, the run's
    ``seed`` param; none for a point's first run). The noise-free truth stays ``landscape``.
    """

    landscape: Callable[[Mapping[str, Any]], float]
    sigma: float
    seed: int = 0

    def __call__(self, params: Mapping[str, Any]) -> float:
        run = RunParams.split(params, ())  # only the seed is read apart: every other key passes on
        point = replace(run, seed=None).merged()
        draw = sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in point.items())
        rng = random.Random(int(_unit_hash("seed-noise", self.seed, draw, run.repeat) * 2**53))
        return self.landscape(point) + self.sigma * rng.gauss(0.0, 1.0)


seed_noisy = SeedNoise(Landscape(), 0.01)
"""The bowl with seed noise sd 0.01 (each repeat of a point draws anew)."""


def diverging(params: Mapping[str, Any]) -> float:
    """The bowl, but every run with lr >= 1e-2 diverges (NaN loss, counted as +inf)."""
    if float(params.get("lr", 0.0)) >= 1e-2:
        return math.nan
    return bowl(params)


def random_landscape(seed: int, kind: str, axes: Mapping[str, list[float]]) -> Landscape:
    """A seeded member of the benchmark family for a grid ``axes``.

    kind: ``bowl`` (convex), ``multimodal`` (several local minima), ``plateau`` (ties),
    ``bound`` (optimum beyond an upper bound), ``noisy`` (per-point noise).
    """
    rng = random.Random(seed)
    centre = {}
    for axis, values in axes.items():
        lo, hi = _coordinate(axis, values[0]), _coordinate(axis, values[-1])
        centre[axis] = _inverse(axis, lo + rng.uniform(0.15, 0.85) * (hi - lo))
    curvature = {axis: rng.uniform(0.01, 0.05) for axis in axes}
    minima: tuple = ()
    plateau_step = noise = 0.0
    if kind == "multimodal":
        minima = tuple(
            (
                {a: _inverse(a, _coordinate(a, v[0]) + rng.uniform(0, 1) * (_coordinate(a, v[-1]) - _coordinate(a, v[0])))
                 for a, v in axes.items()},
                rng.uniform(0.02, 0.08),
                rng.uniform(0.5, 1.2),
            )
            for _ in range(3)
        )
    elif kind == "plateau":
        plateau_step = 0.02
    elif kind == "bound":
        axis = rng.choice(sorted(axes))
        values = axes[axis]
        centre[axis] = _inverse(axis, _coordinate(axis, values[-1]) + rng.uniform(0.5, 2.0))
    elif kind == "noisy":
        noise = 0.005
    elif kind != "bowl":
        raise ValueError(f"kind: {kind!r} is not a landscape kind (bowl|multimodal|plateau|bound|noisy)")
    return Landscape(centre=centre, curvature=curvature, minima=minima, plateau=plateau_step, noise=noise, seed=seed)


def _inverse(axis: str, coordinate: float) -> float:
    return 2.0**coordinate if axis in LOG_AXES else coordinate / 10.0
