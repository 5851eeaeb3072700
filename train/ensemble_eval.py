"""Validation loss of logit-averaged ensembles: L(K) for every prefix K = 1..N of the members.

The loss of every prefix of the member list gives the curve L(K) = E + A * K^(-alpha) whose
asymptote E compares data recipes (`analysis.ensembles` fits it). The engine (members, memory
budget, logit sums) is `train.ensemble`; per-token losses are `train.evaluate`'s, exactly as for
one model.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from train.config import DocumentMask
from train.device import resolve_device
from train.ensemble import (
    LogitEnsemble,
    check_same_vocabulary,
    model_vocab_size,
    resident_members_for_budget,
    resolve_model_dir,
)
from train.evaluate import LossTotals, target_is_long, token_losses

__all__ = ["ensemble_losses"]


def ensemble_losses(
    member_dirs: Sequence[str | Path],
    validation_set,
    *,
    device="auto",
    batch_size: int = 8,
    max_resident_members: int | None = None,
    halves: bool = True,
    document_mask: DocumentMask | bool = False,
) -> list[dict]:
    """Validation loss of the logit-averaged ensemble of every prefix of ``member_dirs``.

    Args:
        member_dirs: run directories or HF model directories, in ensemble order.
        validation_set: a `train.data.ValidationSet` (``input_ids``, ``document_ids`` and
            ``is_long_document``; the last only read when ``halves``).
        device: ``auto``, ``cpu``, ``cuda`` or a torch.device.
        batch_size: windows per forward pass.
        max_resident_members: members kept on the device (None: from the memory budget).
        halves: also report the short/long-document halves (for the i.i.d. set).
        document_mask: the attention units the members were trained with (``data.document_mask``).

    Returns:
        One dict per K = 1..N: ``{"k", "members", "loss"}`` plus ``"loss_short"`` and
        ``"loss_long"`` when ``halves``. Losses are mean next-token cross-entropy over all
        predicted tokens (nats), computed by `train.evaluate` exactly as for one model.

    Raises:
        UserError: a member is not a model directory, or members do not share a vocabulary.
    """
    import torch
    from tqdm import tqdm

    model_dirs = [resolve_model_dir(d) for d in member_dirs]
    check_same_vocabulary(model_dirs)
    device = resolve_device(device)
    input_ids = torch.as_tensor(validation_set.input_ids, dtype=torch.long)  # [N, C]
    document_ids = torch.as_tensor(validation_set.document_ids, dtype=torch.long)  # [N, C]
    n_windows, context = input_ids.shape
    if max_resident_members is None:
        max_resident_members = resident_members_for_budget(
            model_dirs, device, batch_size=batch_size, context=context, vocab_size=model_vocab_size(model_dirs[0])
        )
    ensemble = LogitEnsemble(model_dirs, device, max_resident_members)
    totals = [LossTotals() for _ in model_dirs]  # totals[k-1]: the first k members
    mode = "streaming" if ensemble.streaming else "cached"
    batches = range(0, n_windows, batch_size)
    try:
        for start in tqdm(batches, desc=f"ensemble of {len(model_dirs)} ({mode})", file=sys.stderr):
            stop = min(start + batch_size, n_windows)
            batch = input_ids[start:stop].to(device)
            is_long = target_is_long(validation_set, start, stop) if halves else None  # [b, C-1]
            sums = ensemble.running_logit_sums(batch, document_ids[start:stop], document_mask=document_mask)
            for k, logit_sum in enumerate(sums, start=1):
                totals[k - 1].add(token_losses(logit_sum / k, batch), is_long)
    finally:
        ensemble.close()
    return [
        {"k": k, "members": [str(d) for d in model_dirs[:k]], **totals[k - 1].summary("loss", halves=halves)}
        for k in range(1, len(model_dirs) + 1)
    ]
