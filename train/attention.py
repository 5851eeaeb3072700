"""Which tokens of a training window may attend to each other (`data.document_mask`).

Three modes:

- ``off``: plain causal attention over the whole window, across document boundaries (the paper).
- ``document``: a new attention unit for every document of the stream (``document_ids``); a
  stitched megadoc, whose segments are joined by EOS, stays one unit.
- ``segment``: a new unit after every EOS token, as levanter does (marin-community/levanter
  ``src/levanter/models/lm_model.py``, ``LmExample.causal``: ``segment_ids = cumsum(roll(tokens,
  1) == eos)`` with the window's first token in segment 0; the loss weights are unchanged, so the
  token after an EOS is still predicted, from the EOS). A stitched megadoc becomes one unit per
  segment: the paper's masked-stitching ablation.

No dense [C, C] mask is built for training. The units become *packed position ids* (positions
that restart at 0 at each unit start); Hugging Face's Llama detects packed sequences from
position ids when no attention mask is given (``transformers.masking_utils.
find_packed_sequence_indices``) and turns them into flash-attention varlen calls
(``flash_attention_2``), a FlexAttention block mask (``flex_attention``), or, for ``sdpa`` (the
CPU path), a dense boolean mask. RoPE scores depend only on the distance between a query and a
key, and keys of other units are masked out, so restarting positions at a unit start computes the
same attention as the dense same-unit mask with window positions: `dense_unit_mask` is that
reference, and the tests check the two agree.
"""

from __future__ import annotations

import torch

from train.config import DocumentMask

__all__ = ["attention_units", "position_ids_for", "packed_position_ids", "dense_unit_mask", "masked_attention_backend"]


def attention_units(
    input_ids: torch.Tensor, document_ids: torch.Tensor | None, mode: DocumentMask, *, eos_id: int | None
) -> torch.Tensor | None:
    """Int64 [B, C] ids, equal within an attention unit and increasing along a row; None for ``off``."""
    mode = DocumentMask.parse(mode)
    if mode is DocumentMask.OFF:
        return None
    if mode is DocumentMask.DOCUMENT:
        if document_ids is None:
            raise ValueError("document_mask: document needs the window's document_ids")
        starts = torch.zeros_like(document_ids, dtype=torch.bool)
        starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    else:
        if eos_id is None:
            raise ValueError("document_mask: segment needs the tokenizer's EOS id")
        starts = torch.zeros_like(input_ids, dtype=torch.bool)
        starts[:, 1:] = input_ids[:, :-1] == eos_id  # the token after an EOS opens a new segment
    return starts.long().cumsum(dim=1)


def packed_position_ids(units: torch.Tensor) -> torch.Tensor:
    """Positions [B, C] that restart at 0 where the unit id changes (packed-sequence format)."""
    length = units.shape[1]
    index = torch.arange(length, device=units.device).expand_as(units)
    starts = torch.ones_like(units, dtype=torch.bool)
    starts[:, 1:] = units[:, 1:] != units[:, :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - start_index


def position_ids_for(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor | None,
    document_mask: DocumentMask | bool | str,
    eos_id: int | None = None,
) -> torch.Tensor | None:
    """What to pass a Llama as ``position_ids`` for this mode: packed positions, or None for ``off``.

    `eos_id` defaults to the model config's (`train.model.build_model` sets it from the store).
    """
    eos_id = model.config.eos_token_id if eos_id is None else eos_id
    units = attention_units(input_ids, document_ids, DocumentMask.parse(document_mask), eos_id=eos_id)
    return None if units is None else packed_position_ids(units)


def dense_unit_mask(units: torch.Tensor) -> torch.Tensor:
    """The reference: bool [B, 1, C, C], True where a query may attend (causal, same unit)."""
    length = units.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=units.device).tril()
    same = units[:, :, None] == units[:, None, :]  # [B, C, C]
    return (same & causal)[:, None, :, :]


def masked_attention_backend(device: torch.device) -> str:
    """The Hugging Face attention implementation that reads packed position ids without a dense mask.

    On CUDA: ``flash_attention_2`` when the flash-attn package is installed (varlen kernels), else
    ``flex_attention`` (a block-sparse mask, torch >= 2.5). Elsewhere ``sdpa`` (a dense mask; the
    CPU reference). Never run on a GPU in this repository's tests.
    """
    if device.type != "cuda":
        return "sdpa"
    import importlib.util

    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "flex_attention"
