"""How one run spreads over its processes: a `Parallelism` strategy, chosen once per run.

torchtitan splits this in two: ``ParallelDims`` decides the layout once and ``parallelize_llama``
applies it (each block compiled, then FSDP). Here `Parallelism.choose` decides and
`Parallelism.parallelize` applies, and the strategy then answers every question the run asks
of the layout, so nothing else in `train` branches on it:

============================  ===============  ==========================  ===========================
question                      `Single`         `Replicated` (DDP)          `Sharded` (FSDP2)
============================  ===============  ==========================  ===========================
the model                     layers compiled  compiled; DDP over the      compiled, then each layer
                                               loss module                 and the root sharded
a micro-batch's loss          the model's      through DDP (all-reduce on  through the FSDP root
                                               the last micro-batch)       (gathers, reduce-scatters)
checkpoint, saved model       the live state   the live state              gathered to rank 0
a checkpoint's optimizer      loaded           loaded                      each rank keeps its shard
periodic validation           rank 0           rank 0                      every rank, its share
final evaluation root         the model        the model                   the FSDP root
============================  ===============  ==========================  ===========================

Every strategy takes the same rows of a step (`DistributedContext.step_share`: every rank runs
as many micro-batches) and rank 0 alone writes RUN (`train.run_dir`). The strategy's `name` is
the word ``parallelism: auto`` resolves to, printed by the run and the planner (`train.plan`).

Example:
    >>> choose_parallelism("auto", world_size=8, parameters=1_540_732_416)
    'fsdp'
    >>> choose_parallelism("auto", world_size=8, parameters=299_649_792)
    'ddp'
    >>> choose_parallelism("auto", world_size=1, parameters=1_540_732_416)
    'single'
    >>> STRATEGIES["fsdp"].shards_state
    True
"""

from __future__ import annotations

import abc
import sys
from typing import Any, ClassVar

import torch

from train.compile import compile_layers, decoder_layers
from train.config import AUTO
from train.distributed import SINGLE, DistributedContext, StepShare
from train.sharding import full_model_state, full_state_dicts, load_full_optimizer_state, shard_model
from train.state_bytes import TRAINING_STATE_BYTES_PER_PARAMETER

__all__ = [
    "FSDP_MIN_PARAMETERS",
    "Parallelism",
    "Single",
    "Replicated",
    "Sharded",
    "STRATEGIES",
    "choose_parallelism",
]

FSDP_MIN_PARAMETERS = 1_000_000_000
"""``parallelism: auto`` shards presets from this size (the 1.5b student) when several ranks run."""


class Parallelism(abc.ABC):
    """The layout of one run over its ranks; built once by `choose`, then asked, in this order:
    `parallelize` (before the optimizer), `load_optimizer_state` (resuming), every step
    `step_share` and `loss_module` (`train.step.train_step`), at checkpoints `full_state`, at the
    end `full_model_state`, and for evaluation `curve_ranks` and `eval_root`.

    The defaults are those of a replicated model (every rank holds all of it); `Sharded`
    overrides what sharding changes. Methods marked collective are called by every rank at the
    same point.
    """

    name: ClassVar[str]
    """``single``, ``ddp`` or ``fsdp``: what `choose_parallelism` returns."""
    shards_state: ClassVar[bool] = False
    """Whether weights, gradients and AdamW state are split over the ranks (`state_shards`)."""

    @classmethod
    def state_shards(cls, world_size: int) -> int:
        """Devices the training state is split over on `world_size` ranks, 1 where every rank holds
        all of it: the memory model's `shards` (`train.plan.memory_estimate`).

        >>> STRATEGIES["fsdp"].state_shards(8), STRATEGIES["ddp"].state_shards(8)
        (8, 1)
        """
        return world_size if cls.shards_state else 1

    def __init__(self, dist: DistributedContext = SINGLE) -> None:
        self.dist = dist
        self.loss_module: torch.nn.Module | None = None
        """What each micro-batch's loss runs through (`train.step.train_step`), set by `parallelize`:
        the `train.loss.MicroBatchLoss` itself (one process; FSDP's root), or DDP's wrapper of it."""

    @staticmethod
    def choose(setting: str, *, dist: DistributedContext, parameters: int, device: torch.device) -> Parallelism:
        """The strategy of `setting` (``auto``, ``ddp``, ``fsdp``) for a model of `parameters` on
        `dist`'s ranks. Rank 0's choice holds on every rank: ``auto`` reads the device's total
        memory (not its free memory, which varies by rank)."""
        memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
        name = dist.broadcast_object(choose_parallelism(setting, world_size=dist.world_size, parameters=parameters,
                                                        device_memory_bytes=memory))  # fmt: skip
        if dist.is_main and dist.distributed:
            print(f"parallelism: {setting} -> {name} on {dist.world_size} processes", file=sys.stderr)
        return STRATEGIES[name](dist)

    @abc.abstractmethod
    def parallelize(self, model: torch.nn.Module, loss: torch.nn.Module, *, device: torch.device,
                    compiled: bool) -> None:  # fmt: skip
        """Compile `model`'s decoder layers in place when `compiled` (`train.compile`) and wrap
        `loss` (a `train.loss.MicroBatchLoss` over `model`) for the ranks, setting `loss_module`.
        Called once, after the checkpoint's weights are loaded and before the optimizer is built
        (sharding replaces the parameters)."""

    def step_share(self, batch_size: int, micro_batch_size: int) -> StepShare:
        """This rank's rows of a step's global batch and the micro-batch count every rank runs."""
        return self.dist.step_share(batch_size, micro_batch_size)

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:  # fmt: skip
        """A checkpoint's full (torch-indexed) optimizer state into this rank's optimizer."""
        optimizer.load_state_dict(state)

    def full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict] | None:
        """(model, optimizer) state for a checkpoint when it must be assembled first; None: the
        checkpoint writer copies the live state (`train.checkpoint.snapshot_state`). Collective."""
        return None

    def full_model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole model's weights for ``save_pretrained`` when they must be assembled first;
        None: the model's own. Collective."""
        return None

    @property
    def curve_ranks(self) -> DistributedContext | None:
        """Who evaluates the periodic validation curve: rank 0 alone (`SINGLE`), while the others
        wait for it in the next step's gradient all-reduce (a small set: no collectives inside);
        None on the other ranks."""
        return SINGLE if self.dist.is_main else None

    @property
    def eval_root(self) -> torch.nn.Module | None:
        """The module evaluation scores through when its forwards are collective; None: the model."""
        return None


class Single(Parallelism):
    """One process: the model as it is, its layers compiled in place."""

    name = "single"

    def parallelize(self, model, loss, *, device, compiled) -> None:
        if compiled:
            compile_layers(decoder_layers(model))  # in place: the state dict keeps its keys (train.compile)
        self.loss_module = loss


class Replicated(Parallelism):
    """DDP: every rank holds the whole model and AdamW state; gradients are averaged over ranks
    once per step, on the last micro-batch (`train.step.train_step` skips the all-reduce before
    it with DDP's ``no_sync``)."""

    name = "ddp"

    def parallelize(self, model, loss, *, device, compiled) -> None:
        if compiled:
            compile_layers(decoder_layers(model))  # before DDP wraps it, as torchtitan does
        self.loss_module = torch.nn.parallel.DistributedDataParallel(
            loss, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )  # fmt: skip


class Sharded(Parallelism):
    """FSDP2 (`train.sharding`): weights, gradients and AdamW state live as 1/N shards; every
    forward and backward gathers a layer's parameters collectively, so every rank runs every
    forward, evaluation included."""

    name = "fsdp"
    shards_state = True

    def parallelize(self, model, loss, *, device, compiled) -> None:
        # compiled before sharding (inside shard_model): FSDP's hooks stay outside the graphs
        shard_model(loss, decoder_layers(model), device=device, mixed_precision=device.type == "cuda",
                    compile_layers=compiled)  # fmt: skip
        self.loss_module = loss

    def load_optimizer_state(self, model, optimizer, state) -> None:
        load_full_optimizer_state(model, optimizer, state)  # collective: each rank keeps its shard

    def full_state(self, model, optimizer) -> tuple[dict, dict]:
        return full_state_dicts(model, optimizer)  # collective: to rank 0's host memory

    def full_model_state(self, model) -> dict[str, torch.Tensor]:
        return full_model_state(model)  # collective: to rank 0's host memory

    @property
    def curve_ranks(self) -> DistributedContext:
        return self.dist  # every rank evaluates its share; the forwards gather parameters collectively

    @property
    def eval_root(self) -> torch.nn.Module:
        return self.loss_module


STRATEGIES: dict[str, type[Parallelism]] = {strategy.name: strategy for strategy in (Single, Replicated, Sharded)}


def choose_parallelism(setting: str, *, world_size: int, parameters: int,
                       device_memory_bytes: float | None = None, headroom: float = 0.9) -> str:  # fmt: skip
    """The `STRATEGIES` name for a run of `parameters` on `world_size` processes.

    ``auto``: fsdp when several ranks run a model of at least `FSDP_MIN_PARAMETERS`, or one whose
    weights, gradients and AdamW state (`TRAINING_STATE_BYTES_PER_PARAMETER`) exceed ``headroom`` x
    `device_memory_bytes` (when given); else ddp. One process is always ``single``.
    """
    if world_size == 1:
        return Single.name
    if setting != AUTO:
        return setting
    state_bytes = TRAINING_STATE_BYTES_PER_PARAMETER * parameters
    too_big = device_memory_bytes is not None and state_bytes > headroom * device_memory_bytes
    return Sharded.name if parameters >= FSDP_MIN_PARAMETERS or too_big else Replicated.name
