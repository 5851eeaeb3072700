"""The sweep file: one grid, any number of certifications over it, how to run and where to record.

>>> sweep = load_sweep("search/examples/analytic.yaml")   # doctest: +SKIP
>>> [c.name for c in sweep.certifications]                  # doctest: +SKIP

Every mistake is one :class:`~megadocs.errors.UserError` line naming the file, the field, the
value and what was expected (unknown axis, start off the grid, empty grid, mix outside [0, 1],
duplicate certification names, ...). Paths in the file are relative to the working directory,
like every other megadocs command; they are resolved once, on load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from megadocs.config import StrictModel, load_config
from megadocs.errors import UserError
from megadocs.executors import ExecutorConfig
from megadocs.formats import METHODS, NAME_PATTERN, REAL
from megadocs.pools import PoolEntry, pool_entry
from search.certificate import Noise
from search.grid import AxisExtension, Grid, values_equal
from search.params import FIXED_TRAIN_KEYS, MODEL, SEED, RunParams

__all__ = ["Sweep", "ExecutorConfig", "CertificationConfig", "EnsembleConfig", "NoiseConfig", "TransferConfig",
           "ExtendConfig", "BaseTrain", "BaseTrainData", "BaseTrainModel", "load_sweep", "TRAIN_AXES", "EPOCH_AXES"]

TRAIN_AXES = {
    "lr": "optim.lr",
    "wd": "optim.weight_decay",
    "epochs": "data.real_epochs",
    "mix": "data.mixing_fraction",
    "synthetic_epochs": "data.synthetic_epochs",
}
"""Grid axis -> train RunConfig field, for the default objective (docs/architecture.md).
``synthetic_epochs`` goes with ``mix: [1.0]`` only (synthetic only, the paper's Figure 13): there
the passes over the synthetic stream set the run's length instead of ``epochs``."""

EPOCH_AXES = ("epochs", "synthetic_epochs")
"""The axes that set a run's length: real epochs, and synthetic epochs of a synthetic-only run."""

SYNTHETIC_ONLY_MIX = 1.0
"""The mixing fraction of a synthetic-only run (no real stream)."""

def _a_number(value: Any) -> Any:
    """A grid value as written, or one clear error: the union's own errors name its members
    (``grid.lr.1.int: Input should be a valid integer``). A numeric string passes (YAML reads
    ``1e-3``, without a dot, as one) and the union turns it into a number; a boolean is refused
    by every config (`megadocs.config.StrictModel`)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    elif not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, not a {type(value).__name__}")
    return value


GridNumber = Annotated[int | float, BeforeValidator(_a_number)]
"""A grid value: a number (a boolean, which YAML reads ``true`` as, is refused by the model)."""
GridValues = dict[str, list[GridNumber]]


class NoiseConfig(StrictModel):
    """Seed noise: ``noise: {repeats: 4}``. Repeats of a point are ordinary runs whose params
    carry ``seed: 1, 2, ...`` (the first run carries none); the default objective maps the seed
    to initialisation and data order (as for ensemble members), a callable objective receives it.
    Repeats are spent only where they decide something (search/certify.py)."""

    repeats: int = Field(1, ge=1, le=64)
    """At most this many runs per point (1: noise-free, one run decides)."""
    sds: float = Field(2.0, gt=0, allow_inf_nan=False)
    """A neighbour within this many noise standard errors of the centre gets another run."""

    def rule(self) -> Noise:
        return Noise(self.repeats, self.sds)


class ExtendConfig(StrictModel):
    """Values one axis may be extended by beyond its ends, in the order they are appended:
    ``extend: {epochs: {above: [128, 256]}, lr: {below: [0.0003], above: [0.03]}}``. When the
    best point sits on the edge reached so far and values are left there, the certifier runs
    the next one (search/certify.py); nothing beyond the listed grid runs otherwise."""

    below: list[GridNumber] = []
    """Appended below the axis's first value, outward: decreasing, e.g. [0.0003, 0.0001]."""
    above: list[GridNumber] = []
    """Appended above the axis's last value, outward: increasing, e.g. [128, 256]."""

    def rule(self) -> AxisExtension:
        return AxisExtension(tuple(self.below), tuple(self.above))


class CertificationConfig(StrictModel):
    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    fixed: dict[str, Any] = {}
    """Values merged into every point's params, e.g. {method: stitched, g: 4}."""
    grid: GridValues | None = None
    """Replaces the sweep's grid for this certification (e.g. no mix axis for real-only)."""
    start: dict[str, GridNumber] | None = None
    """Replaces the sweep's start; default: the sweep's start restricted to this grid's axes."""
    warm_start: str | None = None
    """Start from this (earlier) certification's certified point instead, e.g. G=8 from G=4."""
    seed_neighbours: bool | None = None
    max_runs: int | None = Field(None, ge=1)
    noise: NoiseConfig | None = None
    """Replaces the sweep's ``noise`` for this certification."""
    extend: dict[str, ExtendConfig] | None = None
    """Replaces the sweep's ``extend`` for this certification (``{}``: no extension)."""


class EnsembleConfig(StrictModel):
    model_config = ConfigDict(**StrictModel.model_config, populate_by_name=True)

    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    source: str = Field(alias="from")
    """The certification whose certified point the members use."""
    members: int = Field(ge=1)
    epochs_multiplier: float = Field(2.0, gt=0, allow_inf_nan=False)
    """Members train for this many times the certified epochs (paper: doubled), rounded to the
    nearest integer on an integer-valued axis (:meth:`member_epochs`); the value need not be on the
    grid. One that rounds a value of the source's axis below 1 epoch is refused when the sweep loads."""
    seed_offset: int = Field(1, ge=0)
    """Member k gets seed = data.seed = seed_offset + k (offset 1 keeps them apart from the
    certified run, which used the base config's seeds)."""

    def member_params(self, point: Mapping[str, Any], axes: Mapping[str, Sequence[Any]],
                      fixed: Mapping[str, Any] | None = None) -> list[RunParams]:
        """The members' params at the certified ``point`` (with the source's ``fixed`` params):
        every epochs axis (:data:`EPOCH_AXES`: a synthetic-only point's length is its
        ``synthetic_epochs``) times ``epochs_multiplier`` (the nearest integer when the grid's axis,
        ``axes``, is integer-valued; need not be on the grid), and ``seed`` = seed_offset + k for
        member k. The one definition of which runs make up this ensemble: the controller
        dispatches these points, ``status`` and the report count only runs at them (members of an
        earlier certified point are never mixed in).

        >>> ensemble = EnsembleConfig(name="e", source="real", members=2)
        >>> members = ensemble.member_params({"lr": 0.01, "epochs": 4}, {"epochs": [2, 4]})
        >>> [m.strategy_point() for m in members]
        [{'lr': 0.01, 'epochs': 8, 'seed': 1}, {'lr': 0.01, 'epochs': 8, 'seed': 2}]
        """
        base = dict(point)
        for axis in EPOCH_AXES:
            if axis in base and self.epochs_multiplier != 1:
                base[axis] = self.member_epochs(base[axis], axes.get(axis, [1]))
        return [RunParams(point=base, fixed=fixed or {}, seed=self.seed_offset + k)
                for k in range(self.members)]

    def member_epochs(self, epochs: float, values: Sequence[Any]) -> int | float:
        """A member's value of an epochs axis whose values are ``values``, at the certified
        ``epochs``: times ``epochs_multiplier``, the nearest integer when every value is one (half to
        even, Python's ``round``). Never raised to 1: the sweep refuses a multiplier that rounds a
        value of its source's axis below 1 (:func:`_check_member_epochs`).

        >>> EnsembleConfig(name="e", source="a", members=2, epochs_multiplier=1.5).member_epochs(3, [1, 3])
        4
        """
        scaled = epochs * self.epochs_multiplier
        return int(round(scaled)) if all(float(v).is_integer() for v in values) else scaled


class TransferConfig(StrictModel):
    """A method trained at another certification's certified hyperparameters (the paper's
    Figure 6: megadocs at simple rephrasing's optimum), run once that source is certified. Its
    train config and pool are checked before, when the sweep starts (:meth:`Sweep.runs_known_before`)."""

    model_config = ConfigDict(**StrictModel.model_config, populate_by_name=True)

    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    source: str = Field(alias="from")
    """The certification whose certified point (lr, wd, epochs, mix) is used."""
    fixed: dict[str, Any]
    """The target, e.g. {method: stitched, g: 4}."""


class _OpenModel(StrictModel):
    """Types the fields it declares (a boolean is no number here either) and keeps every other
    key as written (for train to check)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class BaseTrainData(_OpenModel):
    """The fields of the base config's ``data:`` that search reads (the rest pass to train)."""

    store: str | None = None
    """The token store; pinned to an absolute path for jobs that run elsewhere."""
    mixing_fraction: float | None = None
    """The mix of a grid without a ``mix`` axis (absent: train's default, 0)."""
    synthetic_epochs: int | None = None
    """The length of a synthetic-only run whose grid has no ``synthetic_epochs`` axis."""


class BaseTrainModel(_OpenModel):
    preset: str | None = None
    """The model preset of every run whose certification does not fix ``model``."""


class BaseTrain(_OpenModel):
    """The sweep's ``train:``: a train ``RunConfig`` (docs/architecture.md) whose searched fields
    (:data:`TRAIN_AXES`, the method's stream, ``model`` and ``seed``) may be absent: the default
    objective fills them from each point and train validates the whole (one line naming the field).
    Here the fields search reads are typed; every other key is kept as written.

    >>> BaseTrain.model_validate({"data": {"store": "s"}, "optim": {"lr": 0.01}}).config()
    {'data': {'store': 's'}, 'optim': {'lr': 0.01}}
    """

    data: BaseTrainData = BaseTrainData()
    model: BaseTrainModel = BaseTrainModel()

    def config(self) -> dict[str, Any]:
        """The mapping as the sweep file wrote it (keys left out stay out): the base of every
        point's train config."""
        return self.model_dump(mode="json", exclude_unset=True)

    @property
    def mixing_fraction(self) -> float:
        """The mix when the grid has no ``mix`` axis (train's default, 0, when absent)."""
        return 0.0 if self.data.mixing_fraction is None else self.data.mixing_fraction


class Sweep(StrictModel):
    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    executor: ExecutorConfig = ExecutorConfig()
    ledger: str | None = None
    """sqlite:///path.db, postgresql://user@host/db, or a journal file path (NFS-safe).
    Default: sqlite under ``{out}/ledger.db``."""
    out: str | None = None
    """Directory for run dirs and job logs; default runs/{name}."""
    objective: str | None = None
    """Import path ``module:callable`` of ``f(params) -> float | {'loss': ...}``; default: train a
    model through train/ (needs ``train``)."""
    objective_version: str | None = None
    """The callable objective's version in run identities; default: a hash of its module's source
    file, so editing the module gives new runs instead of reusing the old ones."""
    grid: GridValues
    start: dict[str, GridNumber]
    certifications: list[CertificationConfig] = Field(min_length=1)
    ensembles: list[EnsembleConfig] = []
    transfers: list[TransferConfig] = []
    seed_neighbours: bool = True
    """Seed with the start point's neighbours in the first batch (saves one round)."""
    train: BaseTrain | None = None
    """Base train RunConfig (:class:`BaseTrain`) the default objective fills from each point."""
    pools: dict[str, PoolEntry] = {}
    """Synthetic pools per method: a directory, a template with {g}, or {g: directory}
    (:func:`megadocs.pools.resolve_pool`; ``stitched-first``/``-none`` fall back to ``stitched``'s)."""
    noise: NoiseConfig | None = None
    """Seed noise for every certification (default: none, one run per point)."""
    extend: dict[str, ExtendConfig] = {}
    """Values each axis may be extended by beyond the grid's ends (:class:`ExtendConfig`), for
    every certification whose grid searches that axis (a certification's ``extend`` replaces it)."""

    @model_validator(mode="after")
    def _cross_field_checks(self) -> Sweep:
        """Every check that involves more than one field (so a ``Sweep`` built in code is checked
        like a loaded file): see :func:`load_sweep`."""
        _check_sweep(self)
        return self

    # -- resolved views -------------------------------------------------------------------

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/{self.name}").absolute()

    @property
    def ledger_url(self) -> str:
        return resolve_storage_url(self.ledger, self.out_dir)

    @property
    def base_model(self) -> str | None:
        """The model preset of a run whose fixed params name none: the base train config's
        ``model.preset``; where it names none and the sweep trains through train (no ``objective``)
        while some certification or transfer fixes a ``model``, train's default preset (so
        ``model: tiny-1m`` and no model are one model); else None (one unnamed base model, named
        ``base`` by the analysis). :meth:`search.params.RunParams.trained_model` resolves a run's."""
        if self.train is not None and self.train.model.preset is not None:
            return self.train.model.preset
        fixes = any(MODEL in entry.fixed for entry in (*self.certifications, *self.transfers))
        if self.objective is None and fixes:
            from train.config import ModelConfig

            return ModelConfig.model_fields["preset"].default
        return None

    def certification(self, name: str) -> CertificationConfig:
        """The certification called ``name``; UserError naming the ones there are when none is."""
        for cert in self.certifications:
            if cert.name == name:
                return cert
        raise UserError(f"{self.name}: no certification named {name!r} (have {[c.name for c in self.certifications]})")

    def grid_for(self, cert: CertificationConfig) -> Grid:
        """The certification's grid with its extension values (:meth:`Grid.listed_grid` is the
        grid as listed)."""
        return Grid.from_mapping(self._listed(cert)).extended(self.extend_for(cert))

    def _listed(self, cert: CertificationConfig) -> dict[str, list[Any]]:
        return cert.grid if cert.grid is not None else self.grid

    def extend_for(self, cert: CertificationConfig) -> dict[str, AxisExtension]:
        """The certification's extensions: its own ``extend``, else the sweep's for the axes its
        grid searches (a sweep-level axis the certification fixes or lacks does not apply)."""
        if cert.extend is not None:
            return {axis: config.rule() for axis, config in cert.extend.items()}
        listed = self._listed(cert)
        return {axis: config.rule() for axis, config in self.extend.items() if len(listed.get(axis, ())) > 1}

    def start_for(self, cert: CertificationConfig) -> dict[str, Any]:
        """The start point snapped to the grid's own values (so 0.003 matches 3e-3 exactly)."""
        grid = self.grid_for(cert)
        start = cert.start if cert.start is not None else {a: v for a, v in self.start.items() if a in grid.names}
        return grid.point(grid.key(start))

    def resumed_start(self, cert: CertificationConfig, recorded: Mapping[str, Any] | None,
                      grid: Grid) -> dict[str, Any] | None:
        """The start ``cert`` resumes from on ``grid`` (its grid now, or the listed one for a
        baseline): the start its ledger ``recorded`` (the sweep's when the study was created, or
        its warm start's projection), snapped onto ``grid`` as a warm start is (:meth:`Grid.nearest`:
        the nearest value per axis, an axis the record lacks from the sweep's start), so a grid
        whose values changed since resumes from the nearest point instead of refusing the record.
        None when nothing was recorded."""
        return None if recorded is None else grid.nearest(recorded, self.start_for(cert))

    def transfer_label(self, index: int) -> str:
        """How a refusal names transfer ``index``: ``transfers[0] (stitched-at-simple)``."""
        return f"transfers[{index}] ({self.transfers[index].name})"

    def ensemble_label(self, index: int) -> str:
        """How a refusal names ensemble ``index``: ``ensembles[0] (real-ens)``."""
        return f"ensembles[{index}] ({self.ensembles[index].name})"

    def runs_known_before(self) -> list[tuple[RunParams, str | None]]:
        """The runs whose configs can be checked before the search has a result, each with the
        entry a refusal names (None for a certification: its line names the field): every
        certification's run at its start and at each extension value (one axis at a time), each
        transfer's run at the same points of its source, and each ensemble's members there
        (:meth:`EnsembleConfig.member_params`). A transfer or an ensemble runs at its source's
        certified point, known only hours into a sweep; a transfer's fixed params (method, g,
        model) and their pool are what can be wrong, and those are the same at every point; a
        member differs from its source's runs in its epochs (times ``epochs_multiplier``) and
        seed only. ``certify`` builds each one's train config
        (:meth:`search.objective.TrainObjective.config`) before it opens the ledger, and
        ``search plan`` before it costs them; dispatch builds them again.

        Costs one train config per run: (1 + extension values) per certification and transfer,
        ``members`` times that per ensemble (the paper's sweep: 32 for its four ensembles).
        """
        runs: list[tuple[RunParams, str | None]] = []
        entries = [(cert, cert.fixed, None) for cert in self.certifications]
        entries += [(self.certification(t.source), t.fixed, self.transfer_label(i)) for i, t in enumerate(self.transfers)]
        for cert, fixed, where in entries:
            runs += [(RunParams(point=point, fixed=fixed), where) for point in self._known_points(cert)]
        for index, ensemble in enumerate(self.ensembles):
            cert = self.certification(ensemble.source)
            axes = self.grid_for(cert).as_mapping()
            runs += [(member, self.ensemble_label(index)) for point in self._known_points(cert)
                     for member in ensemble.member_params(point, axes, cert.fixed)]
        return runs

    def _known_points(self, cert: CertificationConfig) -> list[dict[str, Any]]:
        """The certification's points known before any result: its start, and the start moved to
        each extension value (one axis at a time)."""
        start = self.start_for(cert)
        grid = self.grid_for(cert)
        return [start] + [{**start, axis: value} for axis in grid.names for value in grid.extension_values(axis)]

    def seeds_neighbours(self, cert: CertificationConfig) -> bool:
        """Whether ``cert`` runs its start's neighbours with its start (its own setting, else the sweep's)."""
        return self.seed_neighbours if cert.seed_neighbours is None else cert.seed_neighbours

    def noise_for(self, cert: CertificationConfig) -> Noise:
        """``cert``'s seed-noise rule: its own ``noise``, else the sweep's, else one run per point."""
        chosen = cert.noise if cert.noise is not None else self.noise
        return chosen.rule() if chosen is not None else Noise()


def _check_epochs(values: Sequence[Any], field: str) -> None:
    """The default objective's run lengths: train counts whole passes, at least one
    (``data.real_epochs``, ``data.synthetic_epochs``), so a value such as 1.5 is refused here, not
    rounded to another run than the one written. Raises ValueError naming ``field``."""
    for value in values:
        if not float(value).is_integer() or value < 1:
            raise ValueError(f"{field}: {value!r} is not a whole number of passes >= 1 (train counts whole epochs; "
                             f"expected e.g. [1, 2, 4, 8])")


def _check_epoch_axes(grid: Mapping[str, Sequence[Any]], extend: Mapping[str, ExtendConfig], grid_field: str,
                      extend_field: str) -> None:
    """:func:`_check_epochs` on each epochs axis (:data:`EPOCH_AXES`) of ``grid`` and of ``extend``."""
    for axis in EPOCH_AXES:
        _check_epochs(grid.get(axis, ()), f"{grid_field}.{axis}")
        if axis in extend:
            _check_epochs(extend[axis].below, f"{extend_field}.{axis}.below")
            _check_epochs(extend[axis].above, f"{extend_field}.{axis}.above")


def _check_member_epochs(sweep: Sweep, index: int) -> None:
    """Ensemble ``index``'s members last at least 1 epoch at every point of its source's grid
    (extension values included): a multiplier that rounds a value below 1 is refused, never
    silently raised to 1 (:meth:`EnsembleConfig.member_epochs`). Raises ValueError naming the field."""
    ensemble = sweep.ensembles[index]
    axes = sweep.grid_for(sweep.certification(ensemble.source)).as_mapping()
    for axis in EPOCH_AXES:
        values = axes.get(axis, ())
        for value in values:
            if value > 0 and (epochs := ensemble.member_epochs(value, values)) < 1:  # 0 stays 0: not rounding
                raise ValueError(
                    f"ensembles[{index}].epochs_multiplier: {ensemble.epochs_multiplier!r} times {axis} {value!r} "
                    f"(on {ensemble.source!r}'s grid) rounds to {epochs!r} epochs; expected a multiplier that "
                    f"leaves every member at least 1 epoch (e.g. {1 / value:g} or more)")


def _check_grid(grid: dict, where: str) -> None:
    """A grid's axes (:meth:`Grid.from_mapping`: values, order) and its mixing fractions in [0, 1]."""
    Grid.from_mapping(grid, where)  # raises ValueError naming the axis
    if "mix" in grid and any(not 0 <= v <= 1 for v in grid["mix"]):
        raise ValueError(f"{where}.mix: {grid['mix']} has values outside [0, 1] (a mixing fraction)")


def resolve_storage_url(ledger: str | None, out_dir: Path) -> str:
    """sqlite/postgresql URLs pass through (relative sqlite paths made absolute); anything else is
    a journal file path."""
    if ledger is None:
        return f"sqlite:///{out_dir / 'ledger.db'}"
    if ledger.startswith("sqlite:///"):
        path = ledger[len("sqlite:///") :]
        return f"sqlite:///{Path(path).absolute()}" if path and not path.startswith(":") else ledger
    if "://" in ledger:
        return ledger
    return str(Path(ledger).absolute())


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Load and check a sweep file. Raises UserError (one line) on any mistake.

    The one place a path becomes a :class:`Sweep`: the reading API (``search.ledger.read_runs``,
    ``search.status.summarize*``, ``analysis``) takes the loaded sweep, and the adapters (CLIs, demo,
    notebook, benchmarks) call this.

    Beyond the field types this checks: every certification's start lies on its grid and names
    exactly its axes, fixed values do not collide with axes, certification and ensemble names
    are unique, warm starts and ensemble sources name earlier certifications, every ensemble member
    trains at least 1 epoch, and (default objective) axes are ones train understands, epochs values
    whole numbers >= 1 as train counts them, and methods are known.
    """
    return load_config(path, Sweep)


def _check_extend(sweep: Sweep, cert: CertificationConfig, where: str) -> dict[str, list[Any]]:
    """The certification's grid with its extension values, checked (order, ends, mix range);
    raises ValueError naming the ``extend`` field."""
    field = f"{where}.extend" if cert.extend is not None else "extend"
    listed = cert.grid if cert.grid is not None else sweep.grid
    extensions = sweep.extend_for(cert)
    grid = Grid.from_mapping(listed).extended(extensions, field).as_mapping()
    mix = extensions.get("mix")
    for value in (*mix.below, *mix.above) if mix else ():
        if not 0 <= value <= 1:
            raise ValueError(f"{field}.mix: {value!r} is not a mixing fraction in [0, 1]")
        if sweep.objective is None and values_equal(value, SYNTHETIC_ONLY_MIX):
            raise ValueError(f"{field}.mix: {value!r} is not a mixing fraction in [0, 1) (mix 1.0 trains on synthetic "
                             "data only: certify mix [1.0] separately)")
    return grid


def _check_sweep(sweep: Sweep) -> None:
    """Every cross-field check of :func:`load_sweep`'s docstring, in file order; raises ValueError
    naming the field (pydantic and :func:`megadocs.config.load_config` make it one UserError line)."""
    _check_grid(sweep.grid, "grid")
    for axis in sweep.start:
        if axis not in sweep.grid:
            raise ValueError(f"start.{axis}: unknown axis (grid axes: {sorted(sweep.grid)})")
    Grid.from_mapping(sweep.grid).extended({a: c.rule() for a, c in sweep.extend.items()}, "extend")
    if sweep.objective is None:
        _check_epoch_axes(sweep.grid, sweep.extend, "grid", "extend")
    names: list[str] = []
    for i, cert in enumerate(sweep.certifications):
        where = f"certifications[{i}]"
        if sweep.objective is None:
            _check_epoch_axes(cert.grid or {}, cert.extend or {}, f"{where}.grid", f"{where}.extend")
        if cert.name in names:
            raise ValueError(f"{where}.name: duplicate certification name {cert.name!r}")
        names.append(cert.name)
        if cert.grid is not None:
            _check_grid(cert.grid, f"{where}.grid")
        grid = cert.grid if cert.grid is not None else sweep.grid
        if cert.start is not None:
            start, start_where = cert.start, f"{where}.start"
        else:
            start = {a: v for a, v in sweep.start.items() if a in grid}
            start_where = "start"
        for axis in start:
            if axis not in grid:
                raise ValueError(f"{start_where}.{axis}: unknown axis (grid axes: {sorted(grid)})")
        for axis, values in grid.items():
            if axis not in start:
                raise ValueError(f"{start_where}: no value for grid axis {axis!r}")
            if not any(values_equal(v, start[axis]) for v in values):
                raise ValueError(f"{start_where}.{axis}: {start[axis]!r} is not on the grid (expected one of {values})")
        for key in cert.fixed:
            if key in grid:
                raise ValueError(f"{where}.fixed.{key}: is also a grid axis (fix it by giving the axis one value)")
        if cert.warm_start is not None and cert.warm_start not in names[:-1]:
            raise ValueError(
                f"{where}.warm_start: {cert.warm_start!r} is not an earlier certification (have {names[:-1]})"
            )
        noise = cert.noise if cert.noise is not None else sweep.noise
        if noise is not None and noise.repeats > 1 and (SEED in grid or SEED in cert.fixed):
            raise ValueError(f"{where}: noise repeats set the {SEED!r} param; it cannot also be a grid axis or "
                             f"fixed value")
        extended = _check_extend(sweep, cert, where)
        if sweep.objective is None:
            _check_train_mapping(sweep, cert, extended, where)
    _check_sourced(sweep.ensembles, "ensembles", "ensemble", names)
    for i, ensemble in enumerate(sweep.ensembles):  # fixed params win the merge: every member would be one run
        if SEED in sweep.certification(ensemble.source).fixed:
            raise ValueError(f"ensembles[{i}].from: {ensemble.source!r} fixes {SEED!r}, which each member sets "
                             f"(seed_offset + k); remove it from that certification's fixed")
        _check_member_epochs(sweep, i)
    _check_sourced(sweep.transfers, "transfers", "transfer", names)
    for i, transfer in enumerate(sweep.transfers):
        where = f"transfers[{i}]"
        if sweep.objective is None:
            source = sweep.certification(transfer.source)
            target = CertificationConfig(name=transfer.name, fixed=transfer.fixed)
            _check_train_mapping(sweep, target, source.grid if source.grid is not None else sweep.grid, where)
    if sweep.objective is not None and ":" not in sweep.objective:
        raise ValueError(f"objective: {sweep.objective!r} is not an import path (expected 'module:callable')")
    if sweep.executor.kind == "slurm" and not sweep.executor.profile:
        raise ValueError("executor.profile: required for kind slurm (e.g. slurm/profiles/local.yaml)")
    if sweep.objective is None and sweep.train is None:
        raise ValueError("train: required by the default objective (a base train config), or set objective")


def _check_sourced(entries, section: str, kind: str, names: list[str]) -> None:
    """Ensembles and transfers: unique names, each run from a certification of the sweep."""
    seen = set()
    for i, entry in enumerate(entries):
        if entry.name in seen:
            raise ValueError(f"{section}[{i}].name: duplicate {kind} name {entry.name!r}")
        seen.add(entry.name)
        if entry.source not in names:
            raise ValueError(f"{section}[{i}].from: {entry.source!r} is not a certification (have {names})")


def _check_train_mapping(sweep: Sweep, cert: CertificationConfig, grid: dict, where: str) -> None:
    """The default objective can build ``cert``'s runs on ``grid``: axes train knows (:data:`TRAIN_AXES`),
    known fixed keys and method, a synthetic method's ``g`` and pool, and the synthetic-only rules."""
    for axis in grid:
        if axis not in TRAIN_AXES:
            raise ValueError(
                f"{where}: unknown axis {axis!r} for the default objective (expected one of {sorted(TRAIN_AXES)})"
            )
    params = RunParams(fixed=cert.fixed)
    method = params.method
    if method not in METHODS:
        raise ValueError(f"{where}.fixed.method: {method!r} is not a method (expected one of {list(METHODS)})")
    unknown = set(cert.fixed) - set(FIXED_TRAIN_KEYS)
    if unknown:
        raise ValueError(f"{where}.fixed: unknown keys {sorted(unknown)} for the default objective "
                         f"({', '.join(FIXED_TRAIN_KEYS)})")
    if method == REAL:
        if "synthetic_epochs" in grid:
            raise ValueError(f"{where}.grid.synthetic_epochs: method real has no synthetic stream; drop the axis")
        if "mix" in grid and any(v != 0 for v in grid["mix"]):
            raise ValueError(f"{where}: method real has no synthetic stream; drop the mix axis (grid: {{...}})")
        return
    _check_synthetic_only(grid, sweep.train or BaseTrain(), where)
    g = params.g
    if g is None:
        raise ValueError(f"{where}.fixed.g: required for method {method!r}")
    if isinstance(g, bool) or not isinstance(g, int) or g < 1:
        raise ValueError(f"{where}.fixed.g: expected a whole number of generations per document (1, 2, 4, ...), "
                         f"got {g!r}")
    if pool_entry(sweep.pools, method) is None:
        raise ValueError(f"pools.{method}: no synthetic pool for method {method!r} (have {sorted(sweep.pools)})")


def _check_synthetic_only(grid: dict, train: BaseTrain, where: str) -> None:
    """mix 1 (no real stream) takes its length from a ``synthetic_epochs`` axis, and only it does:
    a grid cannot mix synthetic-only and mixed points, and ``epochs`` would be ignored there."""
    mixes = grid.get("mix", [train.mixing_fraction])
    synthetic_epochs = train.data.synthetic_epochs
    synthetic_only = [values_equal(v, SYNTHETIC_ONLY_MIX) for v in mixes]
    if any(synthetic_only) and not all(synthetic_only):
        raise ValueError(f"{where}.grid.mix: {mixes} mixes 1.0 (synthetic only, length from synthetic_epochs) "
                         "with mixed fractions; certify mix [1.0] separately")
    if all(synthetic_only):
        if "synthetic_epochs" not in grid and synthetic_epochs is None:
            raise ValueError(f"{where}.grid.synthetic_epochs: required with mix 1.0 (no real stream: passes over "
                             "the synthetic stream set the run's length), e.g. synthetic_epochs: [1, 2, 4]")
        if "epochs" in grid and len(grid["epochs"]) > 1:
            raise ValueError(f"{where}.grid.epochs: real epochs are ignored at mix 1.0 (no real window is read); "
                             "search synthetic_epochs instead")
    elif "synthetic_epochs" in grid or synthetic_epochs is not None:
        field = f"{where}.grid.synthetic_epochs" if "synthetic_epochs" in grid else "train.data.synthetic_epochs"
        raise ValueError(f"{field}: only with mix 1.0 (synthetic only); at mix {mixes} real epochs set the "
                         "run's length")
