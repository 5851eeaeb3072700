"""`megadocs search plan SWEEP`: how many runs and GPU-hours a sweep will take, before it starts.

Per certification, from its grid and the certification rule (`search.certify`):

- ``best``: the start point is already optimal: the start and all its neighbours (the fewest runs
  that can certify); capped at ``max_runs``.
- ``expected``: the mean number of runs of the real certifier (`CertifySearch` driven by
  `SimulatedEvaluator`, with the sweep's ``executor.max_parallel`` slots) over `SIMULATIONS`
  seeded random convex landscapes (`search.landscapes.random_landscape(seed, "bowl", grid)`:
  an optimum anywhere inside the grid). Smooth surfaces are the paper's assumption; rugged ones
  cost more, up to the worst case.
- ``worst``: every grid point (or ``max_runs``).

With ``noise: {repeats: N}`` every count includes the repeats the certifier asks for on these
noise-free landscapes (each centre's N draws); the extra draws a neighbour gets when it lies within
the seed noise of the centre depend on that noise, unknown before the sweep, and are not counted
(``worst`` counts N runs for every point: the ceiling).

A warm-started certification is planned from its configured start (its real start is the
source's certified point, unknown before the run).

GPU-hours (default objective only: the sweep's ``train:`` base): each point becomes its train
``RunConfig`` (as `search.objective.TrainObjective` builds it, except that pools need not exist
yet) and is costed by `train.plan` (its steps from the store's real windows, epochs and mix; a
synthetic-only point (mix 1) from ``synthetic_epochs`` passes over an estimated synthetic stream of
G rephrasings per real document, each about as long as its source: ``G * real windows``;
FLOPs per token; GPU-hours at the assumed MFU and peak). The expected GPU-hours are the mean
over the simulations of the cost of the points each one ran; the worst case is the costliest
``worst`` points. Ensembles (``members`` runs at ``epochs * epochs_multiplier``) are costed at
the source certification's start point, and so is each transfer (one run of its method at the
source's certified point). Sweeps with a callable objective get run counts only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from megadocs.errors import UserError
from search.certify import SEED, CertifySearch, drive
from search.grid import Grid
from search.landscapes import random_landscape
from search.objective import TrainObjective
from search.simulate import SimulatedEvaluator
from search.sweep import CertificationConfig, Sweep

__all__ = ["SIMULATIONS", "run_counts", "processes_per_run", "sweep_plan", "format_sweep_plan"]

SIMULATIONS = 64


def run_counts(sweep: Sweep, cert: CertificationConfig, *, simulations: int = SIMULATIONS) -> dict[str, Any]:
    """``{best, expected, worst, simulated}``: run counts of one certification (see the module doc);
    ``simulated`` is the list of point lists the simulations ran (for costing)."""
    grid, start, noise = sweep.grid_for(cert), sweep.start_for(cert), sweep.noise_for(cert)
    cap = math.inf if cert.max_runs is None else cert.max_runs
    best = min(noise.repeats + len(grid.neighbours(start)), cap)  # the centre with all its draws
    worst = min(grid.size * noise.repeats, cap)
    simulated = []
    for seed in range(simulations):
        landscape = random_landscape(seed, "bowl", grid.as_mapping())
        evaluator = SimulatedEvaluator(landscape, slots=max(1, sweep.executor.max_parallel))
        search = CertifySearch(cert.name, grid, start, seed_neighbours=sweep.seeds_neighbours(cert),
                               max_runs=cert.max_runs, noise=noise)  # fmt: skip
        drive([search], evaluator)
        simulated.append([dict(request.point) for request in evaluator.calls])
    expected = sum(len(points) for points in simulated) / simulations
    return {"best": int(best), "expected": expected, "worst": int(worst), "simulated": simulated}


class _PlanningObjective(TrainObjective):
    """TrainObjective whose synthetic pools need not exist yet (costing reads no pool)."""

    def pool(self, method: str, g: int) -> str:
        try:
            return super().pool(method, g)
        except UserError:
            return f"<pool of {method} g={g}, not generated yet>"


class _RunCoster:
    """GPU-hours of one point's train run, with the store's real windows read once per context/seed."""

    def __init__(self, sweep: Sweep, *, mfu: float, peak_tflops: float, processes: int = 1,
                 scaling_efficiency: float = 1.0) -> None:  # fmt: skip
        self.objective = _PlanningObjective(sweep)
        self.mfu, self.peak_tflops = mfu, peak_tflops
        self.processes, self.scaling_efficiency = processes, scaling_efficiency
        self._real_windows: dict[tuple[int, int], tuple[int, int]] = {}
        self._cache: dict[tuple, dict[str, float]] = {}

    def _store_windows(self, config) -> tuple[int, int]:
        """(real windows per epoch, vocabulary) of the store at the config's context and seed."""
        from train.data import TokenStream
        from train.store import TokenStore
        from train.streams import REAL

        key = (config.data.context, config.data.seed)
        if key not in self._real_windows:
            try:
                store = TokenStore.open(config.data.store)
            except UserError as exc:
                raise UserError(f"train.data.store: {exc}") from None
            stream = TokenStream.build(store.split("train"), eos_id=store.eos_id, context=config.data.context,
                                       seed=config.data.seed, stream=REAL)  # fmt: skip
            self._real_windows[key] = (stream.num_windows, store.vocab_size)
        return self._real_windows[key]

    def cost(self, params: Mapping[str, Any]) -> dict[str, float]:
        """``{steps, tokens, gpu_hours, wall_hours, parallelism, memory_per_device_gib}`` of the
        point's run on the profile's processes (memory: `train.plan.device_memory_plan` on an
        80 GiB device, FSDP's shards counted)."""
        from train.plan import (
            DEFAULT_DEVICE_MEMORY_GIB,
            data_parallel_hours,
            device_memory_plan,
            gpu_hours,
            model_cost,
            window_counts,
        )
        from train.streams import MixingPlan

        key = tuple(sorted((k, str(v)) for k, v in params.items()))
        if key in self._cache:
            return self._cache[key]
        config = self.objective.config(params)
        real_windows, vocab = self._store_windows(config)
        data = config.data
        try:
            plan = MixingPlan(real_windows=real_windows, synthetic_windows=_synthetic_windows_estimate(config, real_windows),
                              batch_size=config.optim.batch_size, mixing_fraction=data.mixing_fraction,
                              real_epochs=data.real_epochs, seed=data.seed,
                              synthetic_epochs=data.synthetic_epochs)  # fmt: skip
        except ValueError as exc:
            raise UserError(f"{self.objective.source}: point {dict(params)}: {exc}") from None
        real, synthetic = window_counts(plan)
        tokens = (real + synthetic) * data.context
        flops = model_cost(config.model.preset, vocab_size=vocab, context=data.context).flops_per_token
        single = gpu_hours(tokens, flops, mfu=self.mfu, peak_tflops=self.peak_tflops)
        hours = data_parallel_hours(single, self.processes, self.scaling_efficiency)
        parallelism, memory = device_memory_plan(config, vocab_size=vocab, processes=self.processes,
                                                 memory_bytes=DEFAULT_DEVICE_MEMORY_GIB * 2**30)  # fmt: skip
        result = {"steps": plan.total_steps, "tokens": tokens, "gpu_hours": hours["gpu_hours"],
                  "wall_hours": hours["wall_hours"], "parallelism": parallelism,
                  "memory_per_device_gib": memory.total / 2**30}  # fmt: skip
        self._cache[key] = result
        return result


def _point(cert: CertificationConfig, grid_point: Mapping[str, Any]) -> dict[str, Any]:
    return {**cert.fixed, **grid_point}


def processes_per_run(sweep: Sweep) -> int:
    """Data-parallel processes of one run: the SLURM profile's nodes x tasks_per_node, else 1."""
    if sweep.executor.kind != "slurm" or not sweep.executor.profile:
        return 1
    from megadocs.executors import load_profile

    profile = load_profile(sweep.executor.profile)
    return profile.nodes * profile.tasks_per_node


def sweep_plan(sweep: Sweep, *, mfu: float, peak_tflops: float, simulations: int = SIMULATIONS,
               scaling_efficiency: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The plan of `megadocs search plan` (a JSON-ready dict; see the module docstring). GPU-hours
    count every process of a data-parallel run (`train.plan.data_parallel_hours`)."""
    from train.plan import DEFAULT_SCALING_EFFICIENCY

    processes = processes_per_run(sweep)
    efficiency = DEFAULT_SCALING_EFFICIENCY if scaling_efficiency is None else scaling_efficiency
    coster = (_RunCoster(sweep, mfu=mfu, peak_tflops=peak_tflops, processes=processes, scaling_efficiency=efficiency)
              if sweep.objective is None else None)  # fmt: skip
    certifications = []
    for cert in sweep.certifications:
        counts = run_counts(sweep, cert, simulations=simulations)
        entry: dict[str, Any] = {"name": cert.name, "grid_size": sweep.grid_for(cert).size,
                                 **{k: counts[k] for k in ("best", "expected", "worst")}}  # fmt: skip
        if coster is not None:
            grid: Grid = sweep.grid_for(cert)
            start = _point(cert, sweep.start_for(cert))
            all_costs = sorted((coster.cost(_point(cert, p))["gpu_hours"] for p in grid.points()), reverse=True)
            runs = [sum(coster.cost(_point(cert, p))["gpu_hours"] for p in points) for points in counts["simulated"]]
            entry.update({
                "start_run": coster.cost(start),
                "gpu_hours_expected": sum(runs) / len(runs),
                "gpu_hours_worst": sum(all_costs[: counts["worst"]]),
            })  # fmt: skip
        certifications.append(entry)
    ensembles = []
    for ens in sweep.ensembles:
        entry = {"name": ens.name, "from": ens.source, "runs": ens.members}
        if coster is not None:
            source = sweep.certification(ens.source)
            first = ens.member_points(_point(source, sweep.start_for(source)), sweep.grid_for(source).as_mapping())[0]
            entry["gpu_hours"] = ens.members * coster.cost({k: v for k, v in first.items() if k != SEED})["gpu_hours"]
        ensembles.append(entry)
    transfers = []
    for transfer in sweep.transfers:  # one run of another method at the source's certified point
        entry = {"name": transfer.name, "from": transfer.source, "runs": 1}
        if coster is not None:
            source = sweep.certification(transfer.source)
            entry["gpu_hours"] = coster.cost({**transfer.fixed, **sweep.start_for(source)})["gpu_hours"]
        transfers.append(entry)
    extras = ensembles + transfers  # fixed run counts, known before the search
    totals: dict[str, Any] = {
        "runs_expected": sum(c["expected"] for c in certifications) + sum(e["runs"] for e in extras),
        "runs_worst": sum(c["worst"] for c in certifications) + sum(e["runs"] for e in extras),
    }
    if coster is not None:
        extra_hours = sum(e["gpu_hours"] for e in extras)
        totals["gpu_hours_expected"] = sum(c["gpu_hours_expected"] for c in certifications) + extra_hours
        totals["gpu_hours_worst"] = sum(c["gpu_hours_worst"] for c in certifications) + extra_hours
    return {"sweep": sweep.name, "mfu": mfu if coster else None, "peak_tflops": peak_tflops if coster else None,
            "processes_per_run": processes, "scaling_efficiency": efficiency if processes > 1 else 1.0,
            "simulations": simulations, "certifications": certifications,
            "ensembles": ensembles, "transfers": transfers,
            "total": totals}  # fmt: skip


def format_sweep_plan(plan: dict[str, Any]) -> str:
    """A table: one row per certification and ensemble, then the totals."""
    costed = plan["mfu"] is not None
    header = f"{'certification':<20} {'grid':>5} {'best':>5} {'expected':>9} {'worst':>6}"
    header += f" {'GPU-h expected':>15} {'GPU-h worst':>12}" if costed else ""
    lines = [header]
    for c in plan["certifications"]:
        row = f"{c['name']:<20} {c['grid_size']:>5} {c['best']:>5} {c['expected']:>9.1f} {c['worst']:>6}"
        row += f" {c['gpu_hours_expected']:>15.4g} {c['gpu_hours_worst']:>12.4g}" if costed else ""
        lines.append(row)
    for kind, e in [("ensemble", e) for e in plan["ensembles"]] + [("transfer", e) for e in plan["transfers"]]:
        row = f"{e['name'] + f' ({kind})':<20} {'':>5} {e['runs']:>5} {e['runs']:>9} {e['runs']:>6}"
        row += f" {e['gpu_hours']:>15.4g} {e['gpu_hours']:>12.4g}" if costed else ""
        lines.append(row)
    total = plan["total"]
    row = f"{'total':<20} {'':>5} {'':>5} {total['runs_expected']:>9.1f} {total['runs_worst']:>6}"
    row += f" {total['gpu_hours_expected']:>15.4g} {total['gpu_hours_worst']:>12.4g}" if costed else ""
    lines.append(row)
    if costed:
        lines.append(f"(GPU-hours at MFU {plan['mfu']} of {plan['peak_tflops']} TFLOP/s; expected = mean of "
                     f"{plan['simulations']} simulated certifications on smooth landscapes)")
        if plan.get("processes_per_run", 1) > 1:
            lines.append(f"(each run on {plan['processes_per_run']} processes at {plan['scaling_efficiency']:.0%} "
                         "scaling efficiency: GPU-hours = processes x wall hours)")
    return "\n".join(lines) + "\n"


def _synthetic_windows_estimate(config, real_windows: int) -> int:
    """Windows of the synthetic stream before it exists. Mixed runs take their length from the real
    stream (any non-zero count gives the same steps); a synthetic-only run (mix 1) reads its
    stream ``synthetic_epochs`` times, estimated as G rephrasings per real document of about the
    real document's length."""
    data = config.data
    if not data.mixing_fraction:
        return 0
    if data.mixing_fraction < 1.0 or data.synthetic is None:
        return 1
    return max(1, real_windows * data.synthetic.g)
