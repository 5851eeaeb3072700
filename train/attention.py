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

Two things transformers leaves to the caller, done here:

- **One dtype for q, k and v.** Under bf16 autocast the projections return bf16, but RoPE
  multiplies q and k by fp32 cos/sin (the residual stream is fp32), so q and k reach the kernel in
  fp32 and v in bf16. SDPA's autocast rule recasts them; FlexAttention is not covered on every
  torch version (it then refuses mixed dtypes, or runs fp32 kernels). `FLEX` is FlexAttention
  behind `same_dtype`, which casts q, k and v to the autocast dtype first (what SDPA's autocast
  does). flash-attn's wrapper in transformers casts fp32 inputs itself.
- **Packed units with flash-attn and several rows.** transformers derives varlen boundaries from
  position ids only for a micro-batch of one row; with more it would run plain causal attention,
  silently unmasked. `attention_kwargs` passes the cumulative unit lengths of the whole
  micro-batch (its rows read as one packed sequence), so every micro-batch size is masked.
"""

from __future__ import annotations

import torch

from megadocs.errors import UserError
from train.config import ATTENTION_SETTINGS, DocumentMask

__all__ = [
    "FLEX",
    "VARLEN_IMPLEMENTATIONS",
    "attention_units",
    "position_ids_for",
    "packed_position_ids",
    "dense_unit_mask",
    "masked_attention_backend",
    "attention_backend",
    "set_attention",
    "same_dtype",
    "cumulative_unit_lengths",
    "attention_kwargs",
    "forward_kwargs",
]

FLEX = "megadocs_flex_attention"
"""FlexAttention with q, k, v cast to one dtype first (registered with transformers on first use)."""
VARLEN_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")
"""transformers' flash-attn implementations, which take ``cu_seq_lens_*`` / ``max_length_*``."""


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
    `FLEX` (a block-sparse mask, torch >= 2.5). Elsewhere ``sdpa`` (a dense mask; the CPU
    reference). FlexAttention was measured on an H200 and an H100 against the dense-mask reference
    (benchmarks/RESULTS.md "gpu_check"); the flash-attn path has not run on a GPU.
    """
    if device.type != "cuda":
        return "sdpa"
    import importlib.util

    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else FLEX


def attention_backend(name: str, device: torch.device, document_mask: DocumentMask | bool | str, *,
                      deterministic: bool = True) -> str:  # fmt: skip
    """The Hugging Face attention implementation a run uses for its ``attention:`` setting
    (`train.config.RunConfig.attention`): ``sdpa``, ``flex`` (`FLEX`, CUDA only), or ``auto``:

    - off CUDA: ``sdpa`` (the CPU path; a dense mask when documents are masked);
    - CUDA, documents masked: `masked_attention_backend` (flash-attn when installed, else `FLEX`);
    - CUDA, ``deterministic: true``: `FLEX`. Its backward computes dQ and dK/dV in separate
      programs, without atomics, so it is deterministic as it stands, where SDPA's flash attention
      must fall back to its slower deterministic backward. Measured on an H100 (300m, context
      4096, micro-batch 32, benchmarks/RESULTS.md "gpu_check"): MFU 0.441 against 0.419, bitwise
      equal runs and a bit-identical resume;
    - CUDA, ``deterministic: false``: ``sdpa`` (PyTorch picked cuDNN's attention there: MFU 0.473).

    >>> attention_backend("auto", torch.device("cpu"), "document")
    'sdpa'
    """
    if name not in ATTENTION_SETTINGS:
        raise UserError(f"attention: unknown {name!r}; expected one of {', '.join(ATTENTION_SETTINGS)}")
    if name == "flex":
        if device.type != "cuda":
            raise UserError("attention: flex needs CUDA (FlexAttention trains on CUDA only); use auto or sdpa")
        return FLEX
    if name == "sdpa" or device.type != "cuda":
        return "sdpa"
    if DocumentMask.parse(document_mask) is not DocumentMask.OFF:
        return masked_attention_backend(device)
    return FLEX if deterministic else "sdpa"


def same_dtype(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """q, k, v in autocast's dtype where autocast is on (as SDPA's autocast rule casts them), else
    as they are."""
    device_type = query.device.type
    if not torch.is_autocast_enabled(device_type):
        return query, key, value
    dtype = torch.get_autocast_dtype(device_type)
    return query.to(dtype), key.to(dtype), value.to(dtype)


def _same_dtype_flex_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.flex_attention import flex_attention_forward

    query, key, value = same_dtype(query, key, value)
    return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register_flex() -> None:
    """Make `FLEX` a transformers attention implementation, with FlexAttention's block masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(FLEX, _same_dtype_flex_attention)
    AttentionMaskInterface.register(FLEX, ALL_MASK_ATTENTION_FUNCTIONS["flex_attention"])


def set_attention(model: torch.nn.Module, name: str) -> None:
    """Switch `model` to the attention implementation `name` (registering `FLEX` when it is that)."""
    if name == FLEX:
        _register_flex()
    model.set_attn_implementation(name)


def cumulative_unit_lengths(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(cumulative lengths int32 [units + 1], longest unit) of packed position ids [B, C], the
    rows read one after the other as one packed sequence (a row's first position is 0, so a row
    always starts a unit). One device sync (the unit count is data-dependent).

    >>> cumulative_unit_lengths(torch.tensor([[0, 1, 2, 0, 1], [0, 1, 2, 3, 4]]))
    (tensor([ 0,  3,  5, 10], dtype=torch.int32), 5)
    """
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).reshape(-1)
    total = torch.tensor([flat.numel()], device=flat.device)
    cumulative = torch.cat([starts, total]).to(torch.int32)
    return cumulative, int(cumulative.diff().max())


def attention_kwargs(model: torch.nn.Module, position_ids: torch.Tensor | None) -> dict:
    """Extra keyword arguments of the backbone's forward for its attention implementation: the
    varlen boundaries of packed units for flash-attn (any micro-batch size, see the module
    docstring) and its deterministic backward when deterministic algorithms are on; else none."""
    if position_ids is None or model.config._attn_implementation not in VARLEN_IMPLEMENTATIONS:
        return {}
    cumulative, longest = cumulative_unit_lengths(position_ids)
    return {"cu_seq_lens_q": cumulative, "cu_seq_lens_k": cumulative, "max_length_q": longest,
            "max_length_k": longest, "deterministic": torch.are_deterministic_algorithms_enabled()}  # fmt: skip


def forward_kwargs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor | None,
    document_mask: DocumentMask | bool | str,
    eos_id: int | None = None,
) -> dict:
    """The keyword arguments of a forward of ids [b, C] in this `document_mask` mode, for the
    causal LM (logits) or its backbone (hidden states) alike: the ids, the packed position ids
    (`position_ids_for`, None for ``off``), no KV cache, and the attention implementation's extras
    (`attention_kwargs`: flash-attn's varlen boundaries of every row)."""
    position_ids = position_ids_for(model, input_ids, document_ids, document_mask, eos_id)
    extra = attention_kwargs(model, position_ids)
    return {"input_ids": input_ids, "position_ids": position_ids, "use_cache": False, **extra}
