"""The records of a certification and their wording; the rule that fills them is :mod:`search.certify`.

What goes in: a run's :class:`Outcome` (:class:`RunState`) per :data:`Draw` (a grid point and its
repeat index), and the sweep's :class:`Noise` setting. What comes out: a :class:`Decision` (the
:class:`CertState`, the runs wanted next) and, once certified, a :class:`Certificate`: its
:class:`NeighbourEvidence`, the bounds it hit, the :class:`NoiseEstimate` it was decided with.
:class:`Extension` records an extension value the search reached (the ledger keeps it).

What a certificate rests on is a typed :class:`Basis`: per axis, :class:`Support` INTERIOR (a
no-better neighbour evaluated on both sides), BOUND (the grid ends there) or NOT_SEARCHED (a
single value); as a whole the weakest of its searched axes, NOT_SEARCHED when no axis was
searched (one run, no comparison); with the draws behind it (noise-aware or one run per point).
:meth:`Basis.describe` is its one line for the status line, ``status --json`` and the report;
:class:`CertifyExit` is ``megadocs search certify``'s exit status read from it.

Plain records (stdlib and :mod:`search.grid` only): the CLI imports :class:`CertifyExit` for its
``--help`` without loading the rule, and their JSON forms (``to_dict``) are what ``status --json``
and the ledger write.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from megadocs.exits import Exit
from search.grid import Bound, Direction, Key, Side

__all__ = [
    "Draw",
    "RunState",
    "Outcome",
    "CertState",
    "Noise",
    "NoiseEstimate",
    "NeighbourEvidence",
    "Extension",
    "Support",
    "AxisBasis",
    "Basis",
    "CertifyExit",
    "Certificate",
    "Decision",
    "point_key",
]

Draw = tuple[Key, int]
"""One run of a grid point: its key and its repeat index (0 = the run without a seed)."""


class RunState(str, Enum):
    """What the certifier knows about one run."""

    RUNNING = "running"
    FINISHED = "finished"  # evaluated; a diverged run is FINISHED with loss +inf
    FAILED = "failed"  # infrastructure failure after all retries, or no usable loss: no evidence


@dataclass(frozen=True)
class Outcome:
    state: RunState
    loss: float | None = None
    reason: str | None = None

    @classmethod
    def running(cls) -> Outcome:
        return cls(RunState.RUNNING)

    @classmethod
    def finished(cls, loss: float) -> Outcome:
        """An evaluated run. NaN and +inf are a diverged run (loss +inf, as train records it);
        -inf is no loss at all: a FAILED outcome with the reason (never a certificate)."""
        loss = float(loss)
        if loss == -math.inf:
            return cls.failed("the objective returned loss -inf (not a loss; check the objective)")
        return cls(RunState.FINISHED, math.inf if math.isnan(loss) else loss)

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(RunState.FAILED, None, reason)


class CertState(str, Enum):
    SEEDING = "seeding"  # nothing complete yet
    SEARCHING = "searching"  # a centre exists, some runs still to do or in flight
    CERTIFIED = "certified"  # all existing neighbours evaluated, none lower (on the evidence)
    FAILED = "failed"  # blocked by failed runs, no finite loss anywhere, or a failed warm-start source


@dataclass(frozen=True)
class Noise:
    """How a certification treats seed noise (``noise: {repeats, sds}`` in a sweep file).

    Attributes:
        repeats: at most this many draws per point (1 = noise-free: one run decides).
        sds: a neighbour within this many noise standard errors of the centre is not decided
            by its draws so far (it gets another draw, up to ``repeats``; then it is a tie).
    """

    repeats: int = 1
    sds: float = 2.0

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"noise.repeats: expected >= 1, got {self.repeats}")
        if not (self.sds > 0 and math.isfinite(self.sds)):
            raise ValueError(f"noise.sds: expected a finite number > 0, got {self.sds}")


@dataclass(frozen=True)
class NoiseEstimate:
    """The pooled seed-noise estimate a certificate was decided with (sigma None: not estimable)."""

    repeats: int
    sigma: float | None
    df: int  # degrees of freedom: sum over points of (finite draws - 1)
    sds: float

    def to_dict(self) -> dict[str, Any]:
        return {"repeats": self.repeats, "sigma": self.sigma, "df": self.df, "sds": self.sds}


@dataclass(frozen=True)
class NeighbourEvidence:
    point: dict[str, Any]
    loss: float  # mean over draws (+inf: diverged)
    axis: str
    direction: Direction
    draws: int = 1
    gap_sd: float | None = None  # (loss - centre loss) / sigma; None without a noise estimate
    tie: bool = False  # not lower, but within noise of the centre (or exactly equal)

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.point, "loss": self.loss, "axis": self.axis, "direction": self.direction.value,
                "draws": self.draws, "gap_sd": self.gap_sd, "tie": self.tie}


@dataclass(frozen=True)
class Extension:
    """A value appended beyond an end of the listed grid: ``value`` on ``axis``'s ``side``, next to
    ``after`` (the edge before it). ``centre`` is the best point, on that edge, whose neighbour
    it was (None: the start itself lies there, e.g. a warm start from a moved bound; or not
    known); ``runs``: the draws recorded before it (None: not known)."""

    axis: str
    side: Side
    value: Any
    after: Any
    centre: dict[str, Any] | None = None
    runs: int | None = None

    @property
    def step(self) -> tuple[str, Side, Any]:
        return (self.axis, self.side, self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "side": self.side.value, "value": self.value, "after": self.after,
                "centre": self.centre, "runs": self.runs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Extension:
        return cls(data["axis"], Side(data["side"]), data["value"], data["after"], data.get("centre"),
                   data.get("runs"))

    def describe(self) -> str:
        return f"{self.axis} {'above' if self.side is Side.UPPER else 'below'} {self.after:g} to {self.value:g}"


class Support(str, Enum):
    """What a certificate rests on, per axis and as a whole (the weakest of its searched axes)."""

    INTERIOR = "interior"  # a neighbour evaluated on both sides, none lower
    BOUND = "bound"  # the grid ends on a side: a compute limit, not evidence
    NOT_SEARCHED = "not searched"  # a single value: fixed by the sweep, never compared


@dataclass(frozen=True)
class AxisBasis:
    """One axis of a certificate: its support, the bounds it leans on, and the extension values
    among its evidence (the point's value and its two neighbours on this axis)."""

    axis: str
    support: Support
    bounds: tuple[Bound, ...] = ()
    extended: tuple[Any, ...] = ()
    on_extension: bool = False  # the certified point's own value is an extension value

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "support": self.support.value, "bounds": [b.to_dict() for b in self.bounds],
                "extended": list(self.extended), "on_extension": self.on_extension}


@dataclass(frozen=True)
class Basis:
    """What a certificate rests on (issue 34): the status line, ``status --json`` and the report
    print :meth:`describe`; ``search certify``'s exit status reads :attr:`support`."""

    support: Support
    axes: tuple[AxisBasis, ...]
    draws: int  # runs at the certified point
    noise: NoiseEstimate
    ties: int
    soft_bounds: tuple[Bound, ...] = ()

    def axes_with(self, support: Support) -> list[str]:
        return [a.axis for a in self.axes if a.support is support]

    @property
    def extended(self) -> tuple[AxisBasis, ...]:
        """Axes whose evidence used extension values (the certified point or a neighbour)."""
        return tuple(a for a in self.axes if a.extended)

    def describe(self) -> str:
        """One line, e.g. ``interior on every searched axis (lr, wd, epochs); mix not searched;
        1 run per point (seed noise not measured)``."""
        searched = [a.axis for a in self.axes if a.support is not Support.NOT_SEARCHED]
        fixed = self.axes_with(Support.NOT_SEARCHED)
        if self.support is Support.NOT_SEARCHED:
            parts = [f"nothing searched: every axis has a single value ({', '.join(fixed)}), so one point was "
                     f"run and compared with nothing; not evidence of an optimum"]
        else:
            if self.support is Support.INTERIOR:
                parts = [f"interior on every searched axis ({', '.join(searched)})"]
            else:
                bounds = [f"{b.axis} {b.side.value} {b.value:g}" + (" (last extension value)" if b.extended else "")
                          for a in self.axes for b in a.bounds]
                parts = [f"leans on bound(s) {', '.join(bounds)}: a compute limit, not evidence"]
                interior = self.axes_with(Support.INTERIOR)
                if interior:
                    parts.append(f"interior on {', '.join(interior)}")
            if fixed:
                parts.append(f"{', '.join(fixed)} not searched (single value)")
        for axis in self.extended:
            values = ", ".join(f"{v:g}" for v in axis.extended)
            parts.append(f"{axis.axis} moved beyond the listed grid: the point and its evidence at {values}"
                         if axis.on_extension else f"{axis.axis} evidence beyond the listed grid: a neighbour at {values}")
        if self.soft_bounds:
            parts.append("diverged neighbour(s) " + ", ".join(b.label for b in self.soft_bounds)
                         + " (soft bound)")
        if self.noise.repeats > 1:
            sd = "seed sd not estimated" if self.noise.sigma is None else f"seed sd {self.noise.sigma:.4g}"
            parts.append(f"noise-aware: {self.draws} runs at the point, up to {self.noise.repeats} per point, "
                         f"{sd}, {self.ties} tie(s) within noise")
        else:
            parts.append("1 run per point (seed noise not measured)"
                         + (f", {self.ties} exact tie(s)" if self.ties else ""))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"support": self.support.value, "axes": [a.to_dict() for a in self.axes], "draws": self.draws,
                "repeats": self.noise.repeats, "ties": self.ties, "summary": self.describe()}


class CertifyExit(IntEnum):
    """The exit status of ``megadocs search certify``, from what its certificates rest on (its
    ``--help`` and the README print :meth:`help`): the members of :class:`megadocs.exits.Exit`
    that certify uses, with their numbers. ``search status`` exits 0 whenever it read the ledger:
    each certificate's basis is in its output and ``--json``."""

    CERTIFIED = Exit.OK.value  # every certification certified, each interior on every searched axis
    NOT_CERTIFIED = Exit.NEGATIVE.value  # not certified on its evidence (no finite loss, budget spent)
    CERTIFIED_ON_BOUND = Exit.CERTIFIED_ON_BOUND.value  # all certified, one on a search bound or no axis
    WORK_FAILED = Exit.WORK_FAILED.value  # a run failed, was cancelled or killed (re-run, --retry-failed)

    @classmethod
    def of(cls, certifications: Iterable[tuple[CertState, Support | None, bool]]) -> CertifyExit:
        """The status for (state, the certificate's :attr:`Basis.support`, whether a run of it
        failed) of every certification: a failed run outranks every answer (the answer rests on
        work that did not finish)."""
        certifications = list(certifications)
        if any(failed_runs for _, _, failed_runs in certifications):
            return cls.WORK_FAILED
        if any(state is not CertState.CERTIFIED for state, _, _ in certifications):
            return cls.NOT_CERTIFIED
        if any(support is not Support.INTERIOR for _, support, _ in certifications):
            return cls.CERTIFIED_ON_BOUND
        return cls.CERTIFIED

    @classmethod
    def help(cls) -> str:
        """One paragraph for help screens."""
        return (f"exit status: {cls.CERTIFIED.value} every certification certified, interior on every searched "
                f"axis; {cls.NOT_CERTIFIED.value} a certification is not certified on its evidence (no finite "
                f"loss, or it spent its run budget); {cls.CERTIFIED_ON_BOUND.value} every certification "
                "certified, but a certificate leans on a search bound (a compute limit, not evidence: widen the "
                "grid or list values under extend:) or searched no axis (every axis has one value: one run, "
                f"compared with nothing); {cls.WORK_FAILED.value} a run failed, was cancelled or killed, or the "
                f"disk is full (re-run; --retry-failed re-runs failed points); {Exit.BAD_INPUT.value} bad input; "
                f"{Exit.INTERRUPTED.value} interrupted.")


@dataclass(frozen=True)
class Certificate:
    """The evidence behind a certified point. ``bounds_hit`` lists where there was no neighbour,
    ``diverged`` the neighbours that diverged (soft bounds: the loss may fall again beyond),
    ``extended`` the extension values among the point's and its neighbours' values, per axis."""

    point: dict[str, Any]
    loss: float
    neighbours: tuple[NeighbourEvidence, ...]
    bounds_hit: tuple[Bound, ...]
    diverged: tuple[Bound, ...] = ()
    noise: NoiseEstimate = NoiseEstimate(1, None, 0, 2.0)
    draws: int = 1
    extended: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def ties(self) -> tuple[NeighbourEvidence, ...]:
        return tuple(n for n in self.neighbours if n.tie)

    @property
    def basis(self) -> Basis:
        """What this certificate rests on, axis by axis (see :class:`Basis`)."""
        extended = dict(self.extended)
        axes = []
        for axis, value in self.point.items():
            bounds = tuple(b for b in self.bounds_hit if b.axis == axis)
            sides = {n.direction for n in self.neighbours if n.axis == axis}
            support = (Support.BOUND if bounds else Support.INTERIOR if len(sides) == 2 else Support.NOT_SEARCHED)
            values = extended.get(axis, ())
            axes.append(AxisBasis(axis, support, bounds, values, any(v == value for v in values)))
        searched = [a.support for a in axes if a.support is not Support.NOT_SEARCHED]
        support = (Support.NOT_SEARCHED if not searched
                   else Support.BOUND if Support.BOUND in searched else Support.INTERIOR)
        return Basis(support, tuple(axes), self.draws, self.noise, len(self.ties), self.diverged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "loss": self.loss,
            "draws": self.draws,
            "neighbours": [n.to_dict() for n in self.neighbours],
            "bounds_hit": [b.to_dict() for b in self.bounds_hit],
            "soft_bounds": [b.to_dict() for b in self.diverged],
            "ties": [n.point for n in self.ties],
            "noise": self.noise.to_dict(),
            "basis": self.basis.to_dict(),
        }


@dataclass(frozen=True)
class Decision:
    """What the evidence implies now. ``wanted`` is in dispatch priority order; its points carry
    ``seed`` for repeats."""

    state: CertState
    centre: dict[str, Any] | None
    centre_loss: float | None
    wanted: tuple[dict[str, Any], ...]
    running: tuple[dict[str, Any], ...]  # points whose draws the state waits for
    blocked_by: tuple[tuple[dict[str, Any], str], ...]  # failed points the state depends on, with reason
    certificate: Certificate | None
    path: tuple[dict[str, Any], ...]  # successive centres, oldest first
    bounds_hit: tuple[Bound, ...]
    noise: NoiseEstimate = NoiseEstimate(1, None, 0, 2.0)
    reason: str | None = None  # why a FAILED decision cannot certify (beyond blocked_by), or why SEEDING waits



def point_key(point: Mapping[str, Any]) -> tuple:
    """A hashable identity for any point dict (for points that are not on a grid)."""
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in point.items()))
