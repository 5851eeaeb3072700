"""Held-out loss of a model over fixed windows of real text (never synthetic).

The loss of a window is the mean next-token cross-entropy over its positions 1..C-1. The i.i.d.
set is also split by the length of the document each *target* token belongs to
(`ValidationSet.is_long_document`): `iid_short` and `iid_long`. Ensembles reuse
`token_losses` and `LossTotals` on averaged logits, so every loss in the project is computed by
the same code.

Example:
    >>> losses = evaluate_model(model, validation_set, batch_size=8, device="cpu")  # doctest: +SKIP
    >>> losses["iid"], losses["iid_short"], losses["iid_long"]                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from megadocs.formats import IID, half_names
from train.attention import forward_kwargs
from train.config import DocumentMask
from train.distributed import SINGLE, DistributedContext
from train.loss import next_token_losses

__all__ = ["token_losses", "LossTotals", "model_logits", "evaluate_model", "autocast_for", "target_is_long"]


def token_losses(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token next-token cross-entropy in fp32: logits [B, C, V], ids [B, C] -> [B, C-1]."""
    batch, length, vocab = logits.shape
    predictions = logits[:, :-1].float().reshape(-1, vocab)  # [B*(C-1), V]
    targets = input_ids[:, 1:].reshape(-1)  # [B*(C-1)]
    return F.cross_entropy(predictions, targets, reduction="none").view(batch, length - 1)


@dataclass
class LossTotals:
    """Running sums of token losses, overall and by the target token's document half."""

    total: float = 0.0
    count: int = 0
    short_total: float = 0.0
    short_count: int = 0
    long_total: float = 0.0
    long_count: int = 0

    def add(self, losses: torch.Tensor, is_long: torch.Tensor | None = None) -> None:
        """Add [B, C-1] losses; `is_long` [B, C-1] marks targets from long documents."""
        losses = losses.double()
        self.total += losses.sum().item()
        self.count += losses.numel()
        if is_long is not None:
            is_long = is_long.to(losses.device, torch.bool)
            self.long_total += losses[is_long].sum().item()
            self.long_count += int(is_long.sum().item())
            self.short_total += losses[~is_long].sum().item()
            self.short_count += int((~is_long).sum().item())

    @staticmethod
    def _mean(total: float, count: int) -> float | None:
        return total / count if count else None

    def reduced(self, dist: DistributedContext) -> LossTotals:
        """The totals summed over ranks (each rank evaluated its share of the windows)."""
        if not dist.distributed:
            return self
        fields = ("total", "count", "short_total", "short_count", "long_total", "long_count")
        summed = dist.sum_floats([float(getattr(self, name)) for name in fields])
        return LossTotals(**{name: int(value) if name.endswith("count") else value
                             for name, value in zip(fields, summed, strict=True)})  # fmt: skip

    def summary(self, name: str, *, halves: bool = True) -> dict[str, float | None]:
        """{name: mean} plus {name_short, name_long} when `halves`; a half with no scored token
        (all scored windows from one document) is None, never NaN."""
        result = {name: self._mean(self.total, self.count)}
        if halves:
            short, long_ = half_names(name)
            result[short] = self._mean(self.short_total, self.short_count)
            result[long_] = self._mean(self.long_total, self.long_count)
        return result


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (fp32 master weights stay fp32); plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor | None = None,
    *,
    document_mask: DocumentMask | bool | str = DocumentMask.OFF,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Logits [B, C, V]; with a `document_mask` mode, attention stays inside each unit (`train.attention`)."""
    return model(**forward_kwargs(model, input_ids, document_ids, document_mask, eos_id)).logits


def target_is_long(validation_set, start: int, stop: int) -> torch.Tensor:
    """Bool [b, C-1] for windows start..stop: is each *target* token's document in the long half."""
    return validation_set.is_long_token[start:stop, 1:]


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    validation_set,
    *,
    batch_size: int,
    device: str | torch.device,
    document_mask: DocumentMask | bool | str = DocumentMask.OFF,
    eos_id: int | None = None,
    name: str = IID,
    halves: bool = True,
    dist: DistributedContext = SINGLE,
    fsdp_root: torch.nn.Module | None = None,
) -> dict[str, float]:
    """Mean token loss of `model` on `validation_set` (a `train.data.ValidationSet`: `input_ids`,
    `document_ids` [N, C] and, for the halves, `is_long_token` [N, C]).

    Returns ``{name: loss, name_short: .., name_long: ..}`` (the halves only when `halves`).
    The model is put in eval mode and left there. Data parallel (`dist`), each rank evaluates a
    contiguous share of the windows and the token-loss sums and counts are reduced, so every rank
    returns the whole set's losses (equal to one process's up to float64 summation order).

    A sharded model (`fsdp_root`: the FSDP root over `model`, `train.loss.MicroBatchLoss`) scores
    through its root, whose forwards gather parameters collectively: every rank runs as many
    batches as the rank with the most (a rank with fewer scores its first window again and drops
    the result), and the root is resharded at the end.
    """
    device = torch.device(device)
    model.eval()
    totals = LossTotals()
    windows = len(validation_set.input_ids)

    def share(rank: int) -> range:
        first, last = windows * rank // dist.world_size, windows * (rank + 1) // dist.world_size
        return range(first, last, batch_size)

    starts = list(share(dist.rank))
    batches = max(len(share(rank)) for rank in range(dist.world_size)) if fsdp_root is not None else len(starts)
    last = windows * (dist.rank + 1) // dist.world_size
    for index in range(batches):
        placeholder = index >= len(starts)  # lockstep only: a batch whose losses are dropped
        start = 0 if placeholder else starts[index]
        stop = 1 if placeholder else min(start + batch_size, last)
        input_ids = validation_set.input_ids[start:stop].to(device)  # [b, C]
        document_ids = validation_set.document_ids[start:stop].to(device)
        with autocast_for(device):  # the head and loss run one chunk of tokens at a time
            if fsdp_root is None:
                losses = next_token_losses(model, input_ids, document_ids, document_mask=document_mask,
                                           eos_id=eos_id)  # [b, C-1]
            else:  # the root was built with the run's document_mask and eos_id
                losses = fsdp_root(input_ids, document_ids, per_token=True)  # [b, C-1]
        if not placeholder:
            totals.add(losses, target_is_long(validation_set, start, stop) if halves else None)
    if fsdp_root is not None:
        fsdp_root.reshard()  # FSDP2 keeps the root gathered after a forward with no backward
    return totals.reduced(dist).summary(name, halves=halves)
