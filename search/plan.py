"""`megadocs search plan SWEEP`: how many runs and GPU-hours a sweep will take, before it starts.

Per certification, from its grid and the certification rule (`search.certify`):

- ``best``: the start point is already optimal: the start and all its neighbours (the fewest runs
  that can certify; a start on a bound that ``extend:`` can move also runs the next value);
  capped at ``max_runs``.
- ``expected``: the mean number of runs of the real certifier (`CertifySearch` driven by
  `SimulatedEvaluator`, with the sweep's ``executor.max_parallel`` slots) over `SIMULATIONS`
  seeded random convex landscapes (`search.landscapes.random_landscape(seed, "bowl", grid)`:
  an optimum anywhere inside the listed grid, so extension values are not run). Smooth surfaces
  are the paper's assumption; rugged ones cost more, up to the worst case.
- ``worst``: every point of the grid with its extension values (or ``max_runs``): the search may
  extend every listed axis to its last value. ``grid_size`` counts the listed grid,
  ``extended_grid_size`` the grid with every extension value.

With ``noise: {repeats: N}`` every count includes the repeats the certifier asks for on these
noise-free landscapes (each centre's N draws); the extra draws a neighbour gets when it lies within
the seed noise of the centre depend on that noise, unknown before the sweep, and are not counted
(``worst`` counts N runs for every point: the ceiling).

A warm-started certification is planned from its configured start (its real start is the
source's certified point, unknown before the run). On a sweep that has run, a certification is
planned from the start its search goes on from (:attr:`CertificationProgress.start`: the start its
ledger recorded, kept when ``start:`` is edited since; a warm start's projection once its source
certified), as are its ensembles and transfers.

GPU-hours (default objective only: the sweep's ``train:`` base): each point becomes its train
``RunConfig`` (as `search.objective.TrainObjective` builds it, except that pools need not exist
yet) and is costed by `train.plan` (its steps from the real stream's windows, epochs and mix; a
synthetic-only point (mix 1) from ``synthetic_epochs`` passes over the synthetic stream, whose
size is estimated by the megadoc rule (`megadocs.megadoc`: per real document, its parts' mean
tokens plus an EOS per segment); FLOPs per token; GPU-hours at the assumed MFU and peak).

Data sizes are measured where the data exists (the store's train split and vocabulary; a pool's
mean generation length) and otherwise assumed (:class:`Assumptions`, the paper's figures by
default: 200M real tokens in 164,000 documents, 708 tokens per rephrase, 424 per thought, a
128,256-token vocabulary), so a sweep can be planned before any data exists. A figure given on
the command line (``--assume-real-tokens 200M`` ...) replaces the measured one. The plan lists
every assumed figure and why (``assumed``). The expected GPU-hours are the mean
over the simulations of the cost of the points each one ran; the worst case is the costliest
``worst`` runs (each point ``noise.repeats`` times). Ensembles (``members`` runs at ``epochs * epochs_multiplier``) are costed at
the source certification's start point, and so is each transfer (one run of its method at the
source's certified point). Sweeps with a callable objective get run counts only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from megadocs import megadoc, pools
from megadocs.errors import FieldError, UserError
from megadocs.formats import POOL_KIND, PoolKind
from search.certificate import CertState
from search.grid import AxisExtension, Grid
from search.landscapes import random_landscape
from search.objective import TrainObjective
from search.params import RunParams
from search.simulate import SimulatedEvaluator
from search.strategies import CertifySearch, StrategyState, drive
from search.sweep import CertificationConfig, Sweep
from train.gpu_results import Utilisation
from train.plan import DEFAULT_SCALING_EFFICIENCY, RunCost, check_utilisation, run_cost

__all__ = ["CertificationProgress", "ExtraProgress", "LedgerProgress", "SIMULATIONS", "Assumptions", "PAPER", "AssumedFigure", "RunCoster", "run_counts", "processes_per_run",
           "CertificationCost", "CertificationPlan", "ExtraRuns", "SweepPlan", "sweep_plan", "format_sweep_plan",
           "synthetic_tokens_per_document", "parse_count"]

SIMULATIONS = 64
THINK_TAG_TOKENS = 4
"""Tokens of ``<think>`` and ``</think>`` around a thought (a Llama 3 tokenizer splits each into 2-3)."""


@dataclass(frozen=True)
class Assumptions:
    """Data sizes a plan uses where it measures none (None: measure it, or use :data:`PAPER`'s)."""

    real_tokens: float | None = None
    """Tokens of the real stream's documents (the store's train split)."""
    real_documents: float | None = None
    """Documents of the real stream (one EOS each)."""
    tokens_per_generation: float | None = None
    """Mean tokens of a rephrase or sample (the training tokenizer's)."""
    tokens_per_thought: float | None = None
    """Mean tokens of a latent thought, without its tags."""
    vocab_size: int | None = None

    @classmethod
    def parse(cls, texts: Mapping[str, str | None]) -> Assumptions:
        """The figures given as text (None: not given), each a count (`parse_count`), the
        vocabulary a whole one.

        >>> Assumptions.parse({"real_tokens": "200M", "vocab_size": "128256", "real_documents": None})
        Assumptions(real_tokens=200000000.0, real_documents=None, tokens_per_generation=None, tokens_per_thought=None, vocab_size=128256)
        >>> Assumptions.parse({"vocab_size": "0.5"})
        Traceback (most recent call last):
        megadocs.errors.FieldError: vocab_size: expected a whole number of tokens, got '0.5'

        Raises:
            FieldError: of the figure (``search plan`` names its flag).
        """
        given = {}
        for name, text in texts.items():
            if text is None:
                continue
            try:
                given[name] = parse_count(text)
            except UserError as exc:
                raise FieldError(name, str(exc)) from None
            if name == "vocab_size":
                if not given[name].is_integer():
                    raise FieldError(name, f"expected a whole number of tokens, got {text!r}")
                given[name] = int(given[name])
        return cls(**given)


PAPER = Assumptions(real_tokens=200e6, real_documents=164_000, tokens_per_generation=708, tokens_per_thought=424,
                    vocab_size=128_256)
"""The paper's figures (paper.md): 200M DCLM tokens in 164k documents, rephrases of 708 tokens and
thoughts of 424 on average, the Llama 3 vocabulary."""


@dataclass(frozen=True)
class AssumedFigure:
    """A data size the plan assumed rather than measured, and why."""

    value: float
    """As given on the command line, or :data:`PAPER`'s."""
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "why": self.why}


def parse_count(text: str) -> float:
    """``200M`` -> 2e8 (suffixes k, M, B/G, case-insensitive; plain numbers as they are).

    >>> parse_count("200M"), parse_count("164k"), parse_count("708")
    (200000000.0, 164000.0, 708.0)
    """
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}.get(text[-1:].lower(), 1.0)
    number = text[:-1] if scale != 1.0 else text
    try:
        value = float(number) * scale
    except ValueError:
        raise UserError(f"expected a number such as 708, 164k or 200M, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise UserError(f"expected a positive number, got {text!r}")
    return value


def synthetic_tokens_per_document(algorithm: str, g: int, *, real_tokens_per_document: float,
                                  tokens_per_generation: float, tokens_per_thought: float) -> float:
    """Mean tokens one real document contributes to the synthetic stream of (algorithm, g), EOS
    included, by the megadoc rule (empty generations are not counted out: an upper estimate).

    >>> synthetic_tokens_per_document("stitched", 2, real_tokens_per_document=1000,
    ...                               tokens_per_generation=700, tokens_per_thought=400)
    2403.0
    """
    sizes = {megadoc.Real: real_tokens_per_document, megadoc.RealPiece: real_tokens_per_document / (g + 1),
             megadoc.Generation: tokens_per_generation, megadoc.Thought: tokens_per_thought + THINK_TAG_TOKENS}
    total = 0.0
    for document in megadoc.layout(algorithm, g):
        total += len(document)  # an EOS after every segment: between them, and closing the document
        total += sum(sizes[type(part)] for segment in document for part in segment)
    return total


def run_counts(sweep: Sweep, cert: CertificationConfig, *, simulations: int = SIMULATIONS,
               start: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{best, expected, worst, simulated}``: run counts of one certification (see the module doc)
    from ``start`` (default: the sweep file's, :meth:`Sweep.start_for`); ``simulated`` is the list
    of point lists the simulations ran (for costing)."""
    grid, noise = sweep.grid_for(cert), sweep.noise_for(cert)
    start = dict(start) if start is not None else sweep.start_for(cert)
    cap = math.inf if cert.max_runs is None else cert.max_runs
    best = min(noise.repeats + len(grid.neighbours(start)), cap)  # the centre with all its draws
    worst = min(grid.size * noise.repeats, cap)  # extension values included
    simulated = []
    for seed in range(simulations):
        landscape = random_landscape(seed, "bowl", grid.listed_grid().as_mapping())
        evaluator = SimulatedEvaluator(landscape, slots=max(1, sweep.executor.max_parallel))
        search = CertifySearch(cert.name, grid, start, seed_neighbours=sweep.seeds_neighbours(cert),
                               max_runs=cert.max_runs, noise=noise)  # fmt: skip
        drive([search], evaluator)
        simulated.append([dict(request.point) for request in evaluator.calls])
    expected = sum(len(points) for points in simulated) / simulations
    return {"best": int(best), "expected": expected, "worst": int(worst), "simulated": simulated}


class _PlanningObjective(TrainObjective):
    """TrainObjective whose synthetic pools need not exist yet (costing reads no tokens)."""

    def check_pool(self, method: str, pool: str, store: str) -> None:
        """Planning reads no pool: it may not exist yet."""


class RunCoster:
    """GPU-hours of one point's train run; the data's sizes measured once (or assumed)."""

    def __init__(self, sweep: Sweep, *, mfu: float, peak_tflops: float, processes: int = 1,
                 scaling_efficiency: float = 1.0, assume: Assumptions = Assumptions()) -> None:  # fmt: skip
        self.objective = _PlanningObjective(sweep)
        self.mfu, self.peak_tflops = mfu, peak_tflops
        self.processes, self.scaling_efficiency = processes, scaling_efficiency
        self.assume = assume
        self.assumed: dict[str, AssumedFigure] = {}
        """Figure (an :class:`Assumptions` field) -> every size the plan assumed rather than measured."""
        self._real: dict[tuple[str, int, int], tuple[int, float, float, int]] = {}
        self._generation_tokens: dict[tuple[str, int], float] = {}
        self._cache: dict[tuple, RunCost] = {}

    def _figure(self, name: str, given: float | None, why: str) -> float:
        """An assumed figure: the command line's, else the paper's; recorded with why."""
        value = given if given is not None else getattr(PAPER, name)
        self.assumed.setdefault(name, AssumedFigure(value, why if given is None else "given on the command line"))
        return value

    def _real_stream(self, config) -> tuple[int, float, float, int]:
        """(real windows per epoch, tokens, documents, vocabulary): measured from the store at the
        config's context and seed, or from the assumed sizes when it does not exist (or they are given)."""
        from train.data import TokenStream
        from train.store import TokenStore
        from train.streams import REAL

        key = (config.data.store, config.data.context, config.data.seed)
        if key in self._real:
            return self._real[key]
        assume = self.assume
        try:
            store = TokenStore.open(config.data.store)
        except UserError:
            store = None
        if store is None or assume.real_tokens is not None or assume.real_documents is not None:
            why = f"no token store at {config.data.store}"
            tokens = store.split("train").num_tokens if store and assume.real_tokens is None else \
                self._figure("real_tokens", assume.real_tokens, why)
            documents = store.split("train").num_documents if store and assume.real_documents is None else \
                self._figure("real_documents", assume.real_documents, why)
            windows = int((tokens + documents) // config.data.context)  # every document closed by an EOS
        else:
            split = store.split("train")
            tokens, documents = split.num_tokens, split.num_documents
            windows = TokenStream.build(split, eos_id=store.eos_id, context=config.data.context,
                                        seed=config.data.seed, stream=REAL).num_windows  # fmt: skip
        vocab = store.vocab_size if store is not None and assume.vocab_size is None else \
            int(self._figure("vocab_size", assume.vocab_size, f"no token store at {config.data.store}"))
        self._real[key] = (windows, tokens, documents, vocab)
        return self._real[key]

    def _mean_generation(self, pool: str, kind: PoolKind) -> float:
        """Mean tokens of a generation: the pool's own figure (its manifest's statistics) when it
        exists and nothing is given, else assumed."""
        name = "tokens_per_thought" if kind == PoolKind.THOUGHTS else "tokens_per_generation"
        given = getattr(self.assume, name)
        if given is None:
            try:
                statistics = pools.read_manifest(pool).statistics
            except UserError:
                statistics = None
            if statistics is not None and statistics.mean_tokens:
                return statistics.mean_tokens
        return self._figure(name, given, f"no generated {kind} pool at {pool}")

    def _synthetic_windows(self, config, real: tuple[int, float, float, int]) -> int:
        """Windows of the synthetic stream before it exists. Mixed runs take their length from the
        real stream (any non-zero count gives the same steps); a synthetic-only run (mix 1) reads
        its stream ``synthetic_epochs`` times: its size by the megadoc rule."""
        data = config.data
        if not data.mixing_fraction:
            return 0
        if data.mixing_fraction < 1.0 or data.synthetic is None:
            return 1
        _, tokens, documents, _ = real
        synthetic = data.synthetic
        kind = POOL_KIND[synthetic.algorithm]
        mean = self._mean_generation(synthetic.pool, kind)
        per_document = synthetic_tokens_per_document(
            synthetic.algorithm, synthetic.g, real_tokens_per_document=tokens / documents,
            tokens_per_generation=mean, tokens_per_thought=mean)
        return max(1, int(documents * per_document // data.context))

    def run_cost(self, params: Mapping[str, Any]) -> RunCost:
        """`train.plan.run_cost` of the point's run on the profile's processes, over its streams
        as measured or assumed (memory on an 80 GiB device, FSDP's shards counted)."""
        config = self.objective.config(params)
        real = self._real_stream(config)
        try:
            return run_cost(config, real_windows=real[0], synthetic_windows=self._synthetic_windows(config, real),
                            vocab_size=real[3], mfu=self.mfu, peak_tflops=self.peak_tflops,
                            processes=self.processes, scaling_efficiency=self.scaling_efficiency)  # fmt: skip
        except UserError as exc:
            raise UserError(f"{self.objective.source}: point {dict(params)}: {exc}") from None

    def cost(self, params: Mapping[str, Any]) -> RunCost:
        """The point's `run_cost`, cached by point (a sweep costs each grid point many times)."""
        key = tuple(sorted((k, str(v)) for k, v in params.items()))
        if key not in self._cache:
            self._cache[key] = self.run_cost(params)
        return self._cache[key]


def _params(cert: CertificationConfig, grid: Grid, point: Mapping[str, Any]) -> dict[str, Any]:
    """The params of ``cert``'s run at a point its search asks for (axes and seed)."""
    return RunParams.from_strategy_point(point, grid.names, cert.fixed).merged()


def processes_per_run(sweep: Sweep) -> int:
    """Data-parallel processes of one run: the SLURM profile's nodes x tasks_per_node, else 1."""
    if sweep.executor.kind != "slurm" or not sweep.executor.profile:
        return 1
    from megadocs.executors import load_profile

    profile = load_profile(sweep.executor.profile)
    return profile.nodes * profile.tasks_per_node


def _run_summary(cost: RunCost) -> dict[str, Any]:
    """A point's run as ``start_run`` shows it (the rest is ``train --dry-run``'s)."""
    return {"steps": cost.steps, "tokens": cost.tokens, "gpu_hours": cost.gpu_hours, "wall_hours": cost.wall_hours,
            "parallelism": cost.parallelism, "memory_per_device_gib": cost.memory.total / 2**30}


@dataclass(frozen=True)
class CertificationCost:
    """GPU-hours of one certification (train objective only)."""

    start_run: RunCost
    """The run at the start point."""
    gpu_hours_expected: float
    """Mean over the simulations of the cost of the points each one ran."""
    gpu_hours_worst: float
    """The costliest ``worst`` runs: every point of the grid (extension values included) once per repeat."""


@dataclass(frozen=True)
class CertificationProgress:
    """What the sweep's ledger says of one certification already (``search plan`` on a sweep that
    has run: the counts above are for the whole search, these say how much of it is done)."""

    state: CertState | StrategyState
    """The certification's state in the ledger (:class:`search.certificate.CertState`, or ``stopped``:
    its run budget spent, :class:`search.strategies.StrategyState`)."""
    finished: int
    running: int
    failed: int
    to_ask: int = 0
    """Runs its search asks for now and has not dispatched (:attr:`search.status.CertificationSummary.to_ask`)."""
    start: Mapping[str, Any] | None = None
    """The start its search goes on from (:attr:`search.status.CertificationSummary.start`: the one
    its ledger recorded, else the sweep file's; a warm start's projection once its source certified);
    None while a warm start waits for its source: the plan then counts from the sweep file's."""

    def _left(self, planned: float) -> float:
        """What the runs so far (finished, running, failed) leave of ``planned``, maybe below 0."""
        return planned - self.finished - self.running - self.failed

    def _floor(self, ceiling: float) -> float:
        """The runs a search that goes on still asks for, at most what ``ceiling`` (the worst case:
        the grid, or the run budget) leaves; 0 for one that is done (certified, failed) or that its
        run budget stopped (what it runs next is its budget's to say)."""
        if self.state in (CertState.CERTIFIED, CertState.FAILED, StrategyState.STOPPED):
            return 0
        return min(self.to_ask, max(self._left(ceiling), 0))

    def remaining(self, planned: float, ceiling: float) -> float:
        """Runs still to start of ``planned`` (a whole-search count): none once certified or
        failed, else what the runs so far have not used up, and at least the runs its search asks
        for now (within ``ceiling``): a grid widened after the search began (``extend:``, a longer
        list) can take it past ``planned``."""
        if self.state in (CertState.CERTIFIED, CertState.FAILED):
            return 0
        return max(self._left(planned), self._floor(ceiling), 0)

    def exceeded(self, planned: float, ceiling: float) -> bool:
        """Whether a search that goes on has used up ``planned``: :meth:`remaining` is then the
        runs it asks for now (a floor, more may follow), not what ``planned`` leaves."""
        left = self._left(planned)
        return self.state not in (CertState.CERTIFIED, CertState.FAILED, StrategyState.STOPPED) and (
            left <= 0 or left < self._floor(ceiling))


@dataclass(frozen=True)
class CertificationPlan:
    """Run counts of one certification (module docstring), and their cost when the sweep trains."""

    name: str
    grid_size: int
    """Points of the listed grid."""
    extended_grid_size: int
    """Points with every extension value."""
    extend: Mapping[str, AxisExtension]
    best: int
    expected: float
    worst: int
    cost: CertificationCost | None = None
    """None for a callable objective: run counts only."""
    progress: CertificationProgress | None = None
    """None when the sweep has no ledger yet (nothing has run)."""

    @property
    def remaining_expected(self) -> float:
        return self.expected if self.progress is None else self.progress.remaining(self.expected, self.worst)

    @property
    def expected_exceeded(self) -> bool:
        """Its search goes on past its expected runs: ``remaining_expected`` is what it asks for now."""
        return self.progress is not None and self.progress.exceeded(self.expected, self.worst)

    @property
    def remaining_worst(self) -> int:
        return self.worst if self.progress is None else int(self.progress.remaining(self.worst, self.worst))

    def to_dict(self) -> dict[str, Any]:
        progress = self.progress
        entry = {"name": self.name, "grid_size": self.grid_size, "extended_grid_size": self.extended_grid_size,
                 "extend": {axis: {"below": list(e.below), "above": list(e.above)} for axis, e in self.extend.items()},
                 "best": self.best, "expected": self.expected, "worst": self.worst}  # fmt: skip
        if self.cost is not None:
            entry.update({"start_run": _run_summary(self.cost.start_run),
                          "gpu_hours_expected": self.cost.gpu_hours_expected,
                          "gpu_hours_worst": self.cost.gpu_hours_worst})  # fmt: skip
        entry["done"] = None if progress is None else {
            "state": progress.state.value, "finished": progress.finished, "running": progress.running,
            "failed": progress.failed, "remaining_expected": self.remaining_expected,
            "expected_exceeded": self.expected_exceeded, "remaining_worst": self.remaining_worst}  # fmt: skip
        return entry


@dataclass(frozen=True)
class ExtraProgress:
    """What the sweep's ledger says of an ensemble's members or a transfer's run: only its runs at
    the source's *current* certified point count (`search.status.EnsembleSummary.members`,
    `search.status.TransferSummary`; a run at an earlier point is run again there)."""

    finished: int
    running: int
    failed: int
    source_failed: bool
    """Its source certification ended failed: nothing of it runs until the source certifies."""

    def remaining(self, planned: int) -> int:
        """Runs still to start of ``planned``: none once the source failed, else what the runs so
        far (finished, running, failed) have not used up."""
        return 0 if self.source_failed else max(planned - self.finished - self.running - self.failed, 0)


@dataclass(frozen=True)
class LedgerProgress:
    """What the sweep's ledger says is done already, by name: each certification, ensemble and
    transfer (``search plan`` on a sweep that has run)."""

    certifications: Mapping[str, CertificationProgress]
    ensembles: Mapping[str, ExtraProgress]
    transfers: Mapping[str, ExtraProgress]
    shared: int = 0
    """Finished runs counted by two of these entries (one run identity in two studies: a transfer
    at a point its target's certification ran, adopted by whichever came second): the total counts
    each run once."""
    warnings: tuple[str, ...] = ()
    """One line per certification whose sweep-file start or warm start its started search does not
    use (:func:`search.status.start_edits`, as ``status`` says them): its counts, like its search,
    are from the recorded one (:meth:`start_for`)."""

    def start_for(self, sweep: Sweep, cert: CertificationConfig) -> dict[str, Any]:
        """The start ``cert`` is planned from: its search's (:attr:`CertificationProgress.start`)
        where the ledger says one, else the sweep file's (:meth:`Sweep.start_for`)."""
        done = self.certifications.get(cert.name)
        return dict(done.start) if done is not None and done.start is not None else sweep.start_for(cert)


@dataclass(frozen=True)
class ExtraRuns:
    """An ensemble's members or a transfer's run: a count known before the search starts."""

    name: str
    source: str
    """The certification it starts from (``from`` in the sweep file and the JSON)."""
    runs: int
    gpu_hours: float | None = None
    """None for a callable objective."""
    progress: ExtraProgress | None = None
    """None when the sweep has no ledger yet (nothing has run)."""

    @property
    def remaining(self) -> int:
        return self.runs if self.progress is None else self.progress.remaining(self.runs)

    def to_dict(self) -> dict[str, Any]:
        """Its entry in ``--json``'s ``ensembles``/``transfers``; ``done`` is null until the sweep has a ledger."""
        progress = self.progress
        entry: dict[str, Any] = {"name": self.name, "from": self.source, "runs": self.runs}
        if self.gpu_hours is not None:
            entry["gpu_hours"] = self.gpu_hours
        entry["done"] = None if progress is None else {
            "finished": progress.finished, "running": progress.running, "failed": progress.failed,
            "remaining": self.remaining}  # fmt: skip
        return entry


@dataclass(frozen=True)
class SweepPlan:
    """The plan of `megadocs search plan` (`sweep_plan`; see the module docstring); the totals are
    derived from the entries. :meth:`to_dict` is the ``--json`` object."""

    sweep: str
    utilisation: Utilisation | None
    """The MFU and peak behind the GPU-hours; None for a callable objective (run counts only)."""
    processes_per_run: int
    scaling_efficiency: float
    """Share of linear scaling assumed (1 for one process per run)."""
    simulations: int
    certifications: tuple[CertificationPlan, ...]
    ensembles: tuple[ExtraRuns, ...]
    transfers: tuple[ExtraRuns, ...]
    assumed: Mapping[str, AssumedFigure]
    """Every data size assumed rather than measured (an :class:`Assumptions` field -> figure)."""
    shared: int = 0
    """Finished runs two entries both count (:attr:`LedgerProgress.shared`): the total counts them once."""
    warnings: tuple[str, ...] = ()
    """The ledger's warnings (:attr:`LedgerProgress.warnings`): ``warning: LINE`` under the table."""

    @property
    def costed(self) -> bool:
        return self.utilisation is not None

    @property
    def extras(self) -> tuple[ExtraRuns, ...]:
        """Ensembles, then transfers: fixed run counts, known before the search."""
        return self.ensembles + self.transfers

    @property
    def runs_expected(self) -> float:
        return sum(c.expected for c in self.certifications) + sum(e.runs for e in self.extras)

    @property
    def runs_worst(self) -> int:
        return sum(c.worst for c in self.certifications) + sum(e.runs for e in self.extras)

    @property
    def gpu_hours_expected(self) -> float | None:
        if not self.costed:
            return None
        return sum(c.cost.gpu_hours_expected for c in self.certifications) + sum(e.gpu_hours for e in self.extras)

    @property
    def gpu_hours_worst(self) -> float | None:
        if not self.costed:
            return None
        return sum(c.cost.gpu_hours_worst for c in self.certifications) + sum(e.gpu_hours for e in self.extras)

    @property
    def has_run(self) -> bool:
        """Whether the sweep's ledger was read (some certification has progress)."""
        return any(c.progress is not None for c in self.certifications)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``search plan --json`` (keys in this order; standard JSON values).
        Each certification's ``done`` is null until the sweep has a ledger."""
        utilisation = self.utilisation
        total: dict[str, Any] = {"runs_expected": self.runs_expected, "runs_worst": self.runs_worst}
        if self.has_run:
            extras = sum(e.remaining for e in self.extras)
            finished = sum(p.finished for p in (*(c.progress for c in self.certifications),
                                                *(e.progress for e in self.extras)) if p is not None)
            total.update({"runs_finished": finished - self.shared,
                          "runs_remaining_expected": sum(c.remaining_expected for c in self.certifications) + extras,
                          "runs_remaining_worst": sum(c.remaining_worst for c in self.certifications) + extras})
        if self.costed:
            total.update({"gpu_hours_expected": self.gpu_hours_expected, "gpu_hours_worst": self.gpu_hours_worst})
        return {"sweep": self.sweep, "mfu": utilisation.mfu if utilisation else None,
                "peak_tflops": utilisation.peak_tflops if utilisation else None,
                "processes_per_run": self.processes_per_run, "scaling_efficiency": self.scaling_efficiency,
                "simulations": self.simulations, "certifications": [c.to_dict() for c in self.certifications],
                "ensembles": [e.to_dict() for e in self.ensembles], "transfers": [e.to_dict() for e in self.transfers],
                "assumed": {name: figure.to_dict() for name, figure in self.assumed.items()},
                "total": total, "mfu_source": utilisation.source if utilisation else None,
                "mfu_device": utilisation.device if utilisation else None,
                "warnings": list(self.warnings)}  # fmt: skip


def sweep_plan(sweep: Sweep, utilisation: Utilisation, *, simulations: int = SIMULATIONS,
               scaling_efficiency: float | None = None, assume: Assumptions = Assumptions(),
               progress: LedgerProgress | None = None) -> SweepPlan:  # fmt: skip
    """The plan of `megadocs search plan` (see the module docstring). GPU-hours at `utilisation`
    count every process of a data-parallel run (`train.plan.data_parallel_hours`); ``assumed``
    lists the data sizes that were assumed, not measured. A callable objective gets run counts only.
    ``progress``: what the ledger says of each certification, ensemble and transfer (none: nothing
    has run)."""
    progress = progress or LedgerProgress({}, {}, {})
    processes = processes_per_run(sweep)
    efficiency = DEFAULT_SCALING_EFFICIENCY if scaling_efficiency is None else scaling_efficiency
    mfu, peak_tflops = utilisation.mfu, utilisation.peak_tflops
    if sweep.objective is None:
        check_utilisation(mfu, peak_tflops)
    coster = (RunCoster(sweep, mfu=mfu, peak_tflops=peak_tflops, processes=processes, scaling_efficiency=efficiency,
                         assume=assume)
              if sweep.objective is None else None)  # fmt: skip
    if coster is not None:  # certify's check of every config known before the search, pools aside
        for params, where in sweep.runs_known_before():
            coster.objective.config(params.merged(), where)
    certifications = []
    for cert in sweep.certifications:
        counts = run_counts(sweep, cert, simulations=simulations, start=progress.start_for(sweep, cert))
        grid: Grid = sweep.grid_for(cert)
        cost = None
        if coster is not None:
            start = _params(cert, grid, progress.start_for(sweep, cert))
            repeats = sweep.noise_for(cert).repeats  # ``worst`` counts every draw of every point
            all_costs = sorted((coster.cost(_params(cert, grid, p)).gpu_hours for p in grid.points()
                                for _ in range(repeats)), reverse=True)
            runs = [sum(coster.cost(_params(cert, grid, p)).gpu_hours for p in points) for points in counts["simulated"]]
            cost = CertificationCost(start_run=coster.cost(start), gpu_hours_expected=sum(runs) / len(runs),
                                     gpu_hours_worst=sum(all_costs[: counts["worst"]]))
        certifications.append(CertificationPlan(
            name=cert.name, grid_size=grid.listed_grid().size, extended_grid_size=grid.size,
            extend=sweep.extend_for(cert), best=counts["best"], expected=counts["expected"], worst=counts["worst"],
            cost=cost, progress=progress.certifications.get(cert.name)))  # fmt: skip
    ensembles = []
    for ens in sweep.ensembles:
        hours = None
        if coster is not None:
            source = sweep.certification(ens.source)
            first = ens.member_params(progress.start_for(sweep, source), sweep.grid_for(source).as_mapping(),
                                      source.fixed)[0]
            # every member costs what the first does, whose seed changes nothing (one cache entry)
            hours = ens.members * coster.cost(replace(first, seed=None).merged()).gpu_hours
        ensembles.append(ExtraRuns(ens.name, ens.source, ens.members, hours, progress.ensembles.get(ens.name)))
    transfers = []
    for transfer in sweep.transfers:  # one run of another method at the source's certified point
        hours = None
        if coster is not None:
            source = sweep.certification(transfer.source)
            hours = coster.cost(RunParams(point=progress.start_for(sweep, source),
                                          fixed=transfer.fixed).merged()).gpu_hours
        transfers.append(ExtraRuns(transfer.name, transfer.source, 1, hours, progress.transfers.get(transfer.name)))
    return SweepPlan(sweep=sweep.name, utilisation=utilisation if coster else None, processes_per_run=processes,
                     scaling_efficiency=efficiency if processes > 1 else 1.0, simulations=simulations,
                     certifications=tuple(certifications), ensembles=tuple(ensembles), transfers=tuple(transfers),
                     assumed=dict(coster.assumed) if coster is not None else {},
                     shared=progress.shared, warnings=progress.warnings)  # fmt: skip


def format_sweep_plan(plan: SweepPlan) -> str:
    """A table: one row per certification, ensemble and transfer, then the totals; the name column
    is as wide as the longest name, GPU-hours are written out (no exponents)."""
    costed = plan.costed
    extras = [(f"{e.name} (ensemble)", e) for e in plan.ensembles] + [(f"{e.name} (transfer)", e)
                                                                      for e in plan.transfers]
    width = max([len("certification"), *(len(c.name) for c in plan.certifications), *(len(n) for n, _ in extras)])

    has_run = plan.has_run

    def row(name: str, grid: str, best: Any, expected: str, worst: Any,
            hours: tuple[float, float] | tuple[str, str] | None, done: tuple[Any, Any, Any] = ("", "", "")) -> str:
        """One line of the table, the header included (``hours`` as titles there, as numbers below;
        ``done``: finished, remaining expected, remaining worst, when the sweep has a ledger)."""
        line = f"{name:<{width}} {grid:>9} {best:>5} {expected:>9} {worst:>6}"
        if has_run:
            line += f" {done[0]:>5} {done[1]:>10} {done[2]:>10}"
        if not costed or hours is None:
            return line
        expected_h, worst_h = (h if isinstance(h, str) else _hours(h) for h in hours)
        return line + f" {expected_h:>15} {worst_h:>12}"

    lines = [row("certification", "grid", "best", "expected", "worst", ("GPU-h expected", "GPU-h worst"),
                 ("done", "left exp.", "left worst"))]
    for c in plan.certifications:
        size = str(c.grid_size) + (f"+{c.extended_grid_size - c.grid_size}"
                                   if c.extended_grid_size > c.grid_size else "")
        hours = (c.cost.gpu_hours_expected, c.cost.gpu_hours_worst) if costed else None
        left = f"{c.remaining_expected:.1f}" + ("+" if c.expected_exceeded else "")
        done = ((c.progress.finished if c.progress else 0), left, c.remaining_worst)
        lines.append(row(c.name, size, c.best, f"{c.expected:.1f}", c.worst, hours, done))
    for name, e in extras:
        done = (e.progress.finished if e.progress else "", e.remaining, e.remaining)
        lines.append(row(name, "", e.runs, str(e.runs), e.runs, (e.gpu_hours, e.gpu_hours) if costed else None, done))
    hours = (plan.gpu_hours_expected, plan.gpu_hours_worst) if costed else None
    exceeded = any(c.expected_exceeded for c in plan.certifications)
    total_done = ("", "", "")
    if has_run:
        total = plan.to_dict()["total"]
        left = f"{total['runs_remaining_expected']:.1f}" + ("+" if exceeded else "")
        total_done = (total["runs_finished"], left, total["runs_remaining_worst"])
    lines.append(row("total", "", "", f"{plan.runs_expected:.1f}", plan.runs_worst, hours, total_done))
    if has_run:
        lines.append("(done: finished runs in the ledger; left: runs still to start of expected/worst, 0 once a "
                     "certification is certified or failed; an ensemble's or a transfer's runs count at its source's current "
                     "certified point, none left once the source failed)")
    if exceeded:
        lines.append("(N+ in left exp.: a search past its expected runs that goes on, e.g. on a grid widened since "
                     "it began; N: the runs it asks for now, more may follow)")
    if any(c.extended_grid_size > c.grid_size for c in plan.certifications):
        lines.append("(grid: listed points + points the search may reach through extend:; worst counts them all)")
    if costed:
        utilisation = plan.utilisation
        source = f", {utilisation.source}" if utilisation.source else ""
        lines.append(f"(GPU-hours at MFU {utilisation.mfu} of {utilisation.peak_tflops} TFLOP/s{source}; expected = "
                     f"mean of {plan.simulations} simulated certifications on smooth landscapes)")
        runs = [c.cost.start_run for c in plan.certifications if c.cost is not None]
        if runs:
            memory = _span([run.memory.total / 2**30 for run in runs], lambda gib: f"{gib:.1f}")
            wall = _span([run.wall_hours for run in runs], _hours)
            lines.append(f"(one run at a certification's start: {memory} GiB per device, {wall} wall hours on "
                         f"{plan.processes_per_run} process(es); --json: each certification's start_run)")
        for name, figure in plan.assumed.items():
            value = f"{figure.value:,.0f}" if float(figure.value).is_integer() else f"{figure.value:,.6g}"
            lines.append(f"(assumed {name.replace('_', ' ')} = {value}: {figure.why})")
        if plan.processes_per_run > 1:
            lines.append(f"(each run on {plan.processes_per_run} processes at {plan.scaling_efficiency:.0%} "
                         "scaling efficiency: GPU-hours = processes x wall hours)")
    lines += [f"warning: {warning}" for warning in plan.warnings]  # as status prints them
    return "\n".join(lines) + "\n"


def _span(values: list[float], show: Callable[[float], str]) -> str:
    """The range of `values` as `show` writes them: ``"3.1-12.4"``, one figure where they agree."""
    low, high = show(min(values)), show(max(values))
    return low if low == high else f"{low}-{high}"


def _hours(hours: float) -> str:
    """GPU-hours for the table: thousands separated from 100 up, three significant figures below."""
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"
