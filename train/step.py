"""One optimizer update and what it is made of: the learning-rate schedule, AdamW's parameter
groups, and `train_step` (gradient accumulation over micro-batches, clip, update).

Recipe (paper.md "Training recipe"): AdamW with decoupled weight decay on the parameter kinds of
`optim.weight_decay_on` (default: the linear projections and the head, as levanter's default mask;
input embeddings and norm scales do not decay), global grad-norm clip, linear warmup over
`warmup_fraction` of the steps then cosine decay reaching 0 at the end, gradient accumulation
from `micro_batch_size` up to `batch_size`. Pure pieces: `train.loop` runs them, benchmarks and
tests call them directly.

Example:
    >>> [round(lr_factor(step, total_steps=10, warmup_steps=2), 3) for step in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.038]
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from megadocs.errors import UserError
from train.config import DEFAULT_DECAY_GROUPS
from train.evaluate import autocast_for

__all__ = ["lr_factor", "warmup_steps_for", "decay_group_of", "param_groups", "train_step"]


def lr_factor(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak LR for optimizer update `step` (0-based).

    Linear warmup ``(step+1)/warmup_steps`` for the first `warmup_steps` updates, then a cosine
    from 1 that would reach 0 at ``step == total_steps`` (just after the last update).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_steps_for(total_steps: int, warmup_fraction: float) -> int:
    """``round(warmup_fraction * total_steps)``, but at least one step when warmup is asked for:
    with the default 1%, a run shorter than 50 steps would otherwise start at the peak LR."""
    if warmup_fraction <= 0 or total_steps < 1:
        return 0
    return min(total_steps, max(1, round(warmup_fraction * total_steps)))


def decay_group_of(module: torch.nn.Module, name: str, head: torch.nn.Module | None) -> str:
    """The weight-decay kind (train.config.DECAY_GROUPS) of parameter ``name`` owned by ``module``."""
    if module is head:
        return "head"
    if isinstance(module, torch.nn.Embedding):
        return "embeddings"
    if "norm" in type(module).__name__.lower():
        return "norms"
    if isinstance(module, torch.nn.Linear) and name == "weight":
        return "linear"
    raise UserError(f"optim.weight_decay_on: cannot tell the kind of parameter {name!r} of a "
                    f"{type(module).__name__} (expected Linear, Embedding, a norm or the head)")


def param_groups(model: torch.nn.Module, weight_decay: float,
                 decay_on: tuple[str, ...] | list[str] = DEFAULT_DECAY_GROUPS) -> list[dict[str, Any]]:
    """AdamW groups: ``weight_decay`` on the kinds in ``decay_on``, 0 on the rest.

    Each group also carries ``names`` (the parameters' qualified names), so what decays can be
    checked and logged.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decayed: dict[str, torch.nn.Parameter] = {}
    kept: dict[str, torch.nn.Parameter] = {}
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            qualified = f"{module_name}.{name}" if module_name else name
            if qualified in decayed or qualified in kept:
                continue
            target = decayed if decay_group_of(module, name, head) in decay_on else kept
            target[qualified] = parameter
    return [{"params": list(decayed.values()), "names": list(decayed), "weight_decay": weight_decay},
            {"params": list(kept.values()), "names": list(kept), "weight_decay": 0.0}]


def train_step(
    loss_module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor,
    *,
    micro_batch_size: int,
    grad_clip: float,
    row_weight: float | None = None,
    micro_batches: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer update on a batch [B, C], accumulated over micro-batches.

    `loss_module` gives a micro-batch's mean token loss: a `train.loss.MicroBatchLoss` over the
    model (which fixes the loss implementation, document masking and eos), or, data parallel,
    what `train.parallel` made of it (`Parallelism.loss_module`: DDP's wrapper, or the FSDP
    root). The gradient norm is clipped over its parameters (the model's, or their shards).

    Data parallel: [B, C] is this rank's rows of the global batch, and `row_weight` and
    `micro_batches` come from `DistributedContext.step_share`. DDP averages gradients over ranks
    once, on the last micro-batch (`no_sync` before it); FSDP reduce-scatters after every
    micro-batch into the sharded gradients (`train.sharding`). `row_weight` (default ``1 / B``)
    weighs each row's mean loss: ``ranks / global rows`` makes the average over ranks the global
    batch's mean even when ranks hold unequal rows (0 for a rank that holds a placeholder row
    because the batch is shorter than the world). `micro_batches` (default: as many as B needs)
    is the count every rank runs, so that FSDP's collectives match: the micro-batches past B are
    placeholders, this rank's first row again with weight 0, whose gradient is exactly zero.

    Returns the batch's mean token loss and the pre-clip gradient norm, as device tensors (no
    sync). Each micro-batch's mean loss is weighted by its share of the batch's rows, so the
    gradient is that of the whole batch's mean even when the last (short) batch splits unevenly.
    The head and the loss never hold a micro-batch's whole logits (`train.loss`).
    """
    device = input_ids.device
    rows = input_ids.shape[0]
    row_weight = 1.0 / rows if row_weight is None else row_weight
    needed = -(-rows // micro_batch_size)
    micro_batches = needed if micro_batches is None else micro_batches
    if micro_batches < needed:
        raise ValueError(f"micro_batches={micro_batches}: {rows} rows at micro_batch_size={micro_batch_size} "
                         f"need {needed}")  # fmt: skip
    total_loss = torch.zeros((), device=device)
    for index in range(micro_batches):
        start = index * micro_batch_size
        placeholder = start >= rows  # lockstep with a rank that has more micro-batches: no weight
        window = slice(0, 1) if placeholder else slice(start, start + micro_batch_size)
        ids, docs = input_ids[window], document_ids[window]  # [b, C]
        weight = 0.0 if placeholder else ids.shape[0] * row_weight
        last = index == micro_batches - 1
        accumulate_locally = isinstance(loss_module, torch.nn.parallel.DistributedDataParallel) and not last
        sync = loss_module.no_sync() if accumulate_locally else contextlib.nullcontext()
        with sync:
            with autocast_for(device):
                loss = loss_module(ids, docs) * weight
            loss.backward()
        total_loss += loss.detach()
    # the global norm, also over shards; the model's parameters in their order (a MicroBatchLoss
    # holds the model alone, DDP and the FSDP root hold the MicroBatchLoss)
    grad_norm = torch.nn.utils.clip_grad_norm_(list(loss_module.parameters()), grad_clip)
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a Replicate DTensor, the same value on every rank
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss, grad_norm
