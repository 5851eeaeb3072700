"""search.params.RunParams: the one merge and split of a run's point, fixed params and seed.

The record replaced hand-written dict merges in the controller, the ledger's replay, the plan and
status; these tests pin that it builds exactly the mappings they built (same keys, values and
order), so run identities and every stored or written mapping stay as they were.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from megadocs.config import config_hash
from megadocs.formats import METHODS, REAL, RunStatus
from search.controller import build_strategies
from search.ledger import Ledger, RunRecord, replay
from search.params import FIXED_TRAIN_KEYS, SEED, RunParams
from search.sweep import load_sweep

from .conftest import REPO

EXAMPLES = sorted((REPO / "search" / "examples").glob("*.yaml"))
REPEATS = (0, 1, 2)  # a point's first run (no seed) and two seeded repeats


def _old_submit(point: dict, fixed: dict, axes: tuple[str, ...]) -> tuple[dict, dict, dict]:
    """What the controller built before RunParams: the job's params, the trial's point and fixed."""
    params = {**point, **fixed}
    trial_point = {k: v for k, v in point.items() if k in axes}
    trial_fixed = {**fixed, **{k: v for k, v in point.items() if k not in axes}}
    return params, trial_point, trial_fixed


def _check_run(point: dict, fixed: dict, axes: tuple[str, ...]) -> RunParams:
    """A strategy's point under a task's fixed params merges, records and replays as before."""
    params, trial_point, trial_fixed = _old_submit(point, fixed, axes)
    run = RunParams.from_strategy_point(point, axes, fixed)
    assert list(run.merged().items()) == list(params.items())  # the same mapping, in the same order
    assert config_hash(run.merged()) == config_hash(params)  # so the same identity
    assert (run.point, run.trial_fixed()) == (trial_point, trial_fixed)  # the ledger's attributes
    assert list(run.trial_fixed()) == list(trial_fixed)
    # read back from the ledger's attributes: the controller's restore, identity check and replay
    record = RunRecord(certification="c", point=trial_point, fixed=trial_fixed, status=RunStatus.RUNNING)
    [item] = replay([record], fixed=fixed)
    old_point = {**trial_point, **{k: v for k, v in trial_fixed.items() if k not in fixed}}
    assert item.point == old_point == point
    assert list(item.params.merged().items()) == list({**old_point, **fixed}.items())
    assert record.params(fixed) == run and RunParams.split(params, axes, fixed) == run
    return run


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_merged_params_equal_the_old_merge_for_every_example_run(example: Path, workdir):
    sweep = load_sweep(example)
    _, tasks = build_strategies(sweep, Ledger(sweep.ledger_url, sweep.name))
    checked = 0
    for cert in sweep.certifications:
        info = tasks[cert.name]
        grid = sweep.grid_for(cert)
        for point in grid.points():
            for repeat in REPEATS:
                draw = {**point, SEED: repeat} if repeat else point
                run = _check_run(draw, info.fixed, info.axes)
                assert run.repeat == repeat and run.method == cert.fixed.get("method", REAL)
                checked += 1
                # search plan's cost merge ({**fixed, **point}): the same params, whatever the order
                assert run.merged() == {**cert.fixed, **draw}
    for ens in sweep.ensembles:
        info = tasks[f"ensemble/{ens.name}"]
        source = sweep.certification(ens.source)
        grid = sweep.grid_for(source)
        for point in grid.points():
            members = ens.member_params(point, grid.as_mapping())
            for k, member in enumerate(members):
                draw = member.strategy_point()
                assert list(draw) == [*point, SEED] and draw[SEED] == ens.seed_offset + k
                run = _check_run(draw, info.fixed, info.axes)
                assert run.repeat - info.seed_offset == k  # the ledger's member index
                checked += 1
    for transfer in sweep.transfers:
        info = tasks[f"transfer/{transfer.name}"]
        _check_run(sweep.start_for(sweep.certification(transfer.source)), info.fixed, info.axes)
    assert checked > 0


def test_typed_reads_follow_the_fixed_params_vocabulary():
    """Each of FIXED_TRAIN_KEYS has its typed read; the method is real unless named."""
    values = {"method": METHODS[-1], "g": 4, "model": "1.5b"}
    assert set(values) == set(FIXED_TRAIN_KEYS)
    run = RunParams(point={"lr": 0.003}, fixed={**values, "student": "x"}, seed=3)
    assert {key: getattr(run, key) for key in FIXED_TRAIN_KEYS} == values
    assert (run.named_method, run.seed, run.repeat, run.other_fixed()) == (METHODS[-1], 3, 3, {"student": "x"})
    bare = RunParams(point={"lr": 0.003})
    assert (bare.method, bare.named_method, bare.g, bare.model, bare.seed, bare.repeat) == (REAL, None, None, None,
                                                                                           None, 0)


def test_a_fixed_seed_stays_fixed_and_a_seed_axis_stays_in_the_point():
    fixed = {SEED: 7, "method": REAL}
    run = RunParams.split({"lr": 0.01, **fixed}, axes=("lr",), fixed=fixed)
    assert run.seed is None and run.fixed == fixed and run.merged() == {"lr": 0.01, **fixed}
    on_grid = RunParams.split({SEED: 2, "lr": 0.01}, axes=(SEED, "lr"))
    assert on_grid.point == {SEED: 2, "lr": 0.01} and on_grid.seed is None
    # a ledger record keeps the seed among its fixed values: RunRecord.params reads it back
    record = RunRecord(certification="c", point={"lr": 0.01}, fixed={"method": REAL, SEED: 2}, status=RunStatus.COMPLETED)
    assert record.params().seed == 2 and record.params().fixed == {"method": REAL}
