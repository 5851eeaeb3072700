"""A run's params as one typed record: the searched point, the fixed params and the seed.

Every run of a sweep is a grid point (the searched axes' values), the certification's ``fixed``
params as the sweep writes them (``method``, ``g``, ``model`` and whatever else a callable
objective takes) and, for a repeat of a point or an ensemble member, a ``seed``. The objective
and a job (``RunTask.params``, ``job.json``) receive them merged into one mapping
(:meth:`RunParams.merged`); the ledger stores the point and the fixed params with the seed
among them (:meth:`RunParams.trial_fixed`, the trial's ``fixed`` attribute); strategies know a
run by its point and seed (:meth:`RunParams.strategy_point`). This module is the one place
that merges and splits them, so a run's identity (a hash of the merged mapping, or of the train
config built from it) cannot depend on which of those places built it.

>>> run = RunParams(point={"lr": 0.003, "epochs": 8}, fixed={"method": "stitched", "g": 4}, seed=1)
>>> run.merged()
{'lr': 0.003, 'epochs': 8, 'seed': 1, 'method': 'stitched', 'g': 4}
>>> RunParams.split(run.merged(), axes=("lr", "epochs")) == run
True
>>> run.trial_fixed(), run.strategy_point()
({'method': 'stitched', 'g': 4, 'seed': 1}, {'lr': 0.003, 'epochs': 8, 'seed': 1})
>>> RunParams(fixed={"g": 4}).method, RunParams(fixed={"g": 4}).named_method
('real', None)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from megadocs.formats import REAL

__all__ = ["RunParams", "SEED", "METHOD", "G", "MODEL", "FIXED_TRAIN_KEYS", "format_point", "format_setting", "pinned_axes"]

SEED = "seed"
"""The params key of a run's seed: repeat r > 0 of a point carries ``seed: r`` (its first run
none), ensemble member k ``seed: seed_offset + k``. The default objective maps it to
initialisation and data order; a callable objective receives it."""
METHOD, G, MODEL = "method", "g", "model"
"""The fixed keys with typed accessors: the synthetic-data method (``megadocs.formats.METHODS``),
its G (generations per real document) and the model preset."""
FIXED_TRAIN_KEYS = (METHOD, G, MODEL)
"""Keys of ``fixed`` the default objective understands (student scaling: ``model: 1.5b``
certifies the same method on another model size)."""


def format_point(point: Mapping[str, Any] | None) -> str:
    """A point as status and the warnings print it: ``lr=0.003 epochs=4`` (``-`` for none).

    >>> format_point({"lr": 0.003, "epochs": 4})
    'lr=0.003 epochs=4'
    """
    return "-" if not point else " ".join(f"{k}={_shown(v)}" for k, v in point.items())


def format_setting(values: Mapping[str, Any]) -> str:
    """Fixed values that make a recipe of their own (a generation temperature, a pinned grid axis) as
    ``search status``'s G trend and the analysis's curves name them: ``key=value`` sorted by key.

    >>> format_setting({"temperature": 0.5, "epochs": 4})
    'epochs=4, temperature=0.5'
    """
    return ", ".join(f"{key}={_shown(value)}" for key, value in sorted(values.items()))


def pinned_axes(grid: Mapping[str, Sequence[Any]] | None) -> dict[str, Any]:
    """The axes ``grid`` ({axis: values}) gives one value, with that value: part of a certification's
    setting (:meth:`RunParams.setting`).

    >>> pinned_axes({"lr": [1e-3, 3e-3], "epochs": [4]})
    {'epochs': 4}
    """
    return {axis: values[0] for axis, values in (grid or {}).items() if len(values) == 1}


def _shown(value: Any) -> str:
    """A value as :func:`format_point` and :func:`format_setting` print it: a float in ``:g`` (1e-3 as
    0.001), anything else as written."""
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True, kw_only=True)
class RunParams:
    """One run's params: ``point`` (the searched axes' values, in the grid's order), ``fixed``
    (the certification's fixed params as written) and ``seed`` (a repeat's or ensemble member's;
    None for a point's first run). A ``seed`` the certification itself fixes stays in ``fixed``
    where the split is told so (:meth:`split`'s ``fixed``).

    The mappings are copied on construction; treat them as read-only.
    """

    point: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "point", dict(self.point))
        object.__setattr__(self, "fixed", dict(self.fixed))

    # -- merge and split -------------------------------------------------------------------

    def merged(self) -> dict[str, Any]:
        """The mapping the objective and the run's job receive: the point, the seed, then the
        fixed params (a fixed key wins over a point key of the same name; the sweep refuses both)."""
        seed = {} if self.seed is None else {SEED: self.seed}
        return {**self.point, **seed, **self.fixed}

    @classmethod
    def split(cls, params: Mapping[str, Any], axes: Collection[str],
              fixed: Collection[str] = ()) -> RunParams:
        """A merged mapping back into its parts, given the certification's ``axes``: their values
        are the point, ``seed`` the seed (unless it is an axis or one of the keys the
        certification fixes, ``fixed``), every other key a fixed param."""
        point = {k: v for k, v in params.items() if k in axes}
        own_seed = SEED in params and SEED not in axes and SEED not in fixed
        rest = {k: v for k, v in params.items() if k not in axes and not (own_seed and k == SEED)}
        return cls(point=point, fixed=rest, seed=params[SEED] if own_seed else None)

    @classmethod
    def from_strategy_point(cls, point: Mapping[str, Any], axes: Collection[str],
                            fixed: Mapping[str, Any]) -> RunParams:
        """A point a strategy asks for (the ``axes``' values and a seed) as a run under the
        certification's ``fixed`` params; any other key of the point follows them."""
        run = cls.split(point, axes)
        return replace(run, fixed={**fixed, **run.fixed})

    def strategy_point(self) -> dict[str, Any]:
        """The point with its seed: what a strategy asks for and records (``search.certify``)."""
        return {**self.point, **({} if self.seed is None else {SEED: self.seed})}

    def trial_fixed(self) -> dict[str, Any]:
        """The ledger trial's ``fixed`` attribute: the fixed params, then the seed."""
        return {**self.fixed, **({} if self.seed is None else {SEED: self.seed})}

    # -- typed reads -----------------------------------------------------------------------

    @property
    def named_method(self) -> str | None:
        """The method the fixed params name, as written; None when they name none (a callable
        objective's certification may fix nothing)."""
        return self.fixed[METHOD] if METHOD in self.fixed else None

    @property
    def method(self) -> str:
        """The synthetic-data method of the run: :data:`~megadocs.formats.REAL` (real data only)
        unless the fixed params name another."""
        return REAL if self.named_method is None else self.named_method

    @property
    def g(self) -> int | None:
        """Generations per real document (fixed ``g``), None when not fixed."""
        return self.fixed[G] if G in self.fixed else None

    @property
    def model(self) -> str | None:
        """The model preset (fixed ``model``), None for the base train config's."""
        return self.fixed[MODEL] if MODEL in self.fixed else None

    def trained_model(self, base: str | None) -> str | None:
        """The model preset the run trains: the fixed ``model``, else ``base`` (the sweep's
        :attr:`search.sweep.Sweep.base_model`; None: one unnamed base model). The one answer to
        "which model": two certifications that train one preset are one model, whether they write
        ``model:`` or leave it to the base.

        >>> RunParams(fixed={"method": "real"}).trained_model("300m"), RunParams(fixed={"model": "1.5b"}).trained_model("300m")
        ('300m', '1.5b')
        """
        return self.model if self.model is not None else base

    @property
    def repeat(self) -> int:
        """The run's index among the runs of its point: its seed, 0 for the run without one."""
        return 0 if self.seed is None else int(self.seed)

    def other_fixed(self) -> dict[str, Any]:
        """The fixed params beyond :data:`FIXED_TRAIN_KEYS` and the seed (a callable objective's own)."""
        return {k: v for k, v in self.fixed.items() if k not in FIXED_TRAIN_KEYS and k != SEED}

    def setting(self, pinned: Mapping[str, Any] | None = None) -> str:
        """What a certification fixes beyond method, G, model and seed, as :func:`format_setting` writes
        it ("" when nothing): its :meth:`other_fixed` and the grid axes ``pinned`` to one value
        (:func:`pinned_axes`). A fixed seed is left out: certifications that differ only in it are seed
        repeats of one point. What ``search.tuned.method_curves`` splits a method's curves by.

        >>> RunParams(fixed={"method": "simple", "g": 2, "seed": 1, "temperature": 0.5}).setting({"epochs": 4})
        'epochs=4, temperature=0.5'
        """
        return format_setting({**(pinned or {}), **self.other_fixed()})
