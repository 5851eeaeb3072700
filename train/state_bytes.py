"""Bytes per parameter of the training state: what a run keeps for every parameter between steps.

The weights are fp32 master weights on every device (bf16 autocast casts them per operation, it
does not store bf16 copies: `train.loop`), their gradients are fp32 (autocast's backward writes
the parameters' dtype), and `torch.optim.AdamW` keeps two fp32 moments per parameter
(``exp_avg`` and ``exp_avg_sq``)::

    weights 4 + gradients 4 + AdamW moments 2 x 4 = 16 bytes per parameter

DDP replicates these 16 bytes on every device; FSDP shards them (``16 / N``). The memory model
(`train.plan.memory_estimate`) counts them by part, and the choice of parallelism
(`train.parallel.choose_parallelism`) by their sum. Torch-free, so the plan imports it without torch.

Example:
    >>> WEIGHT_BYTES + GRADIENT_BYTES + ADAMW_STATE_BYTES == TRAINING_STATE_BYTES_PER_PARAMETER == 16
    True
"""

from __future__ import annotations

__all__ = ["FP32", "BF16", "WEIGHT_BYTES", "GRADIENT_BYTES", "ADAMW_STATE_BYTES", "TRAINING_STATE_BYTES_PER_PARAMETER"]

FP32 = 4
BF16 = 2

WEIGHT_BYTES = FP32
"""fp32 master weights, also under bf16 autocast."""
GRADIENT_BYTES = FP32
"""A gradient has its parameter's dtype."""
ADAMW_STATE_BYTES = 2 * FP32
"""AdamW's two fp32 moments (``exp_avg``, ``exp_avg_sq``)."""
TRAINING_STATE_BYTES_PER_PARAMETER = WEIGHT_BYTES + GRADIENT_BYTES + ADAMW_STATE_BYTES
"""16: weights, gradients and AdamW state (the module docstring)."""
