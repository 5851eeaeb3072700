"""`train.parallel`: what each strategy answers without a process group (the runs themselves, on
2 gloo processes, are in test_distributed.py), and `train.run_dir`'s rank gating: a rank that
does not write RUN leaves it untouched."""

from __future__ import annotations

import os

import pytest
import torch

from megadocs.formats import RunDir, RunMetrics, RunStatus
from train.distributed import DistributedContext
from train.parallel import STRATEGIES, choose_parallelism
from train.run_dir import RunLifecycle


@pytest.mark.parametrize("name", STRATEGIES)
def test_who_evaluates_and_what_is_assembled_follows_whether_the_state_is_sharded(name):
    strategy = STRATEGIES[name]
    main, other = (strategy(DistributedContext(rank=rank, world_size=2)) for rank in (0, 1))
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if strategy.shards_state:  # forwards gather parameters collectively: every rank evaluates, its share
        assert main.curve_ranks is main.dist and other.curve_ranks is other.dist
    else:  # rank 0 alone evaluates the curve, as one process; the live state is the full state
        assert main.curve_ranks.world_size == 1 and other.curve_ranks is None
        assert main.full_state(model, optimizer) is None and main.full_model_state(model) is None
        assert main.eval_root is None
    share = other.step_share(15, 7)
    assert (share.rows, share.micro_batches) == (slice(7, 15), 2)  # the same rows under every strategy


def test_choose_names_a_strategy_for_every_setting():
    for setting in ("auto", "ddp", "fsdp"):
        for world_size, parameters in ((1, 10**6), (2, 10**6), (2, 2 * 10**9)):
            assert choose_parallelism(setting, world_size=world_size, parameters=parameters) in STRATEGIES


def test_a_rank_that_does_not_write_leaves_the_run_directory_untouched(tmp_path):
    out = tmp_path / "run"
    other = RunLifecycle(out, "0123456789abcdef", writes=False)
    other.prepare(config=None, device=torch.device("cpu"), stores=None)  # only the identity is checked
    other.truncate_log(3)
    with other.open_log() as log:
        log.write("{}\n")
        assert log.name == os.devnull
    other.open_tracker(config=None, start_step=0).close()
    other.save_model(model=None, store=None)
    metrics = RunMetrics(status=RunStatus.COMPLETED, val_loss=1.0)
    other.write_model_card(config=None, metrics=metrics)
    other.finish(metrics)
    assert not out.exists()
    assert RunLifecycle.finished(out, "0123456789abcdef") is None
    out.mkdir()
    metrics.save(RunDir(out).metrics)
    (out / RunDir.CONFIG_HASH).write_text("0123456789abcdef\n")
    assert RunLifecycle.finished(out, "0123456789abcdef") == metrics
