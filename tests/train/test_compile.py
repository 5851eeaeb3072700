"""`train.compile` and the attention kernels the compiled model calls (`train.attention`).

What runs on CPU here: torch.compile itself (dynamo, and Inductor's C++ backend where the test
needs real kernels), SDPA, and FlexAttention's CPU lowering (forward only: torch has no CPU
FlexAttention backward). flash-attn cannot run on CPU: its kernel is replaced by a mock named so.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers.integrations import flex_attention as hf_flex

import train.attention
from megadocs.config import parse_config
from megadocs.formats import RunDir
from train.attention import (
    FLEX,
    attention_units,
    dense_unit_mask,
    packed_position_ids,
    set_attention,
)
from train.compile import BACKEND_ENV, compile_layers, decoder_layers
from train.config import DocumentMask, RunConfig
from train.evaluate import model_logits
from train.loop import run
from train.loss import hidden_states
from train.model import build_model

EOS = 0


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Every SDPA call's (mask given?, is_causal), through the module attribute transformers calls.
    Left out of compiled graphs (a graph break at the call): the arguments still come from the
    traced code, and appending inside a graph would make dynamo recompile on every call."""
    calls = []
    real = F.scaled_dot_product_attention

    @torch.compiler.disable
    def spy(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        calls.append((attn_mask is not None, is_causal))
        return real(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                    **kwargs)  # fmt: skip

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


def test_compiled_run_calls_sdpa_causal_without_a_materialised_mask(micro_store, tmp_path, monkeypatch, sdpa_calls):
    # the loop's own compile decision (compile: on), traced by dynamo as on CUDA; the eager backend
    # skips generating C++ kernels, which has no bearing on how the mask is built
    monkeypatch.setenv(BACKEND_ENV, "eager")
    config = parse_config({"data": {"store": str(micro_store), "context": 64, "real_epochs": 1},
                           "optim": {"batch_size": 8, "micro_batch_size": 4}, "eval": {"val_windows": 2},
                           "device": "cpu", "compile": "on"}, RunConfig, source="test")  # fmt: skip
    run(config, tmp_path / "run")
    assert sdpa_calls, "SDPA was never called"
    # a whole-backbone compile traces the mask construction: (True, False) on every call
    assert set(sdpa_calls) == {(False, True)}
    steps = [json.loads(line)["step"] for line in RunDir(tmp_path / "run").log.read_text().splitlines()]
    assert steps  # it trained


def test_regional_compile_keeps_parameter_names_and_outputs():
    model = build_model("tiny-1m", vocab_size=128, context=32, seed=0)
    names = list(model.state_dict())
    ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model_logits(model, ids)
        compile_layers(decoder_layers(model), backend="eager")
        compiled = model_logits(model, ids)
    assert list(model.state_dict()) == names  # checkpoints load across compile settings
    torch.testing.assert_close(compiled, eager)


def _window(batch: int, length: int, vocab: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=generator)
    documents = (torch.rand(batch, length, generator=generator) < 0.04).long().cumsum(dim=1)
    return ids, documents


def test_compiled_flex_attention_under_bf16_autocast_gets_one_dtype_and_masks_like_the_dense_reference(
    monkeypatch,
):
    dtypes = []
    real = hf_flex.flex_attention

    def spy(query, key, value, *args, **kwargs):  # what reaches the FlexAttention kernel
        dtypes.append((query.dtype, key.dtype, value.dtype))
        return real(query, key, value, *args, **kwargs)

    monkeypatch.setattr(hf_flex, "flex_attention", spy)
    model = build_model("tiny-1m", vocab_size=128, context=128, seed=0, eos_id=EOS).eval()
    ids, documents = _window(2, 128, 128)
    units = attention_units(ids, documents, DocumentMask.DOCUMENT, eos_id=EOS)
    assert units[:, -1].min() >= 2  # several documents per row: the mask matters
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        dense = model(input_ids=ids, attention_mask=dense_unit_mask(units), use_cache=False).logits.float()
        unmasked = model(input_ids=ids, use_cache=False).logits.float()
        set_attention(model, FLEX)  # what the loop picks on CUDA without flash-attn
        compile_layers(decoder_layers(model))  # Inductor: FlexAttention's CPU kernel
        flex = model(input_ids=ids, position_ids=packed_position_ids(units), use_cache=False).logits.float()
    assert dtypes and set(dtypes) == {(torch.bfloat16,) * 3}  # q, k (after fp32 RoPE) and v alike

    def error(got):
        return float((got - dense).norm() / dense.norm())

    assert error(flex) < 3e-2  # bf16 attention and logits on both sides, different kernels (1e-2 seen)
    assert error(unmasked) > 0.3  # the mask matters at this tolerance (1.0 seen)


def fake_flash_attention_varlen(module, query, key, value, attention_mask, *, scaling=None, cu_seq_lens_q=None,
                                max_length_q=None, **kwargs):  # fmt: skip
    """mock: flash-attn cannot run on CPU. Computes what transformers' flash_attention_2 path
    computes for a padding-free batch: with ``cu_seq_lens_q`` varlen causal attention over the rows
    flattened into one packed sequence; without it plain causal attention per row (transformers
    infers units from position ids only for one row)."""
    batch, heads, length, dim = query.shape  # [b, h, C, d] in, [b, C, h, d] out
    if cu_seq_lens_q is None:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling)
        return out.transpose(1, 2), None
    assert max_length_q <= length
    flat = [x.transpose(0, 1).reshape(1, heads, batch * length, dim) for x in (query, key, value)]
    token = torch.arange(batch * length)
    unit = torch.searchsorted(cu_seq_lens_q[1:].long(), token, right=True)
    mask = (unit[:, None] == unit[None, :]) & (token[:, None] >= token[None, :])
    out = F.scaled_dot_product_attention(*flat, attn_mask=mask, scale=scaling)  # [1, h, b*C, d]
    return out.reshape(heads, batch, length, dim).permute(1, 2, 0, 3), None


def test_flash_attn_varlen_masks_every_row_of_a_micro_batch(monkeypatch):
    from transformers import AttentionInterface

    monkeypatch.setitem(AttentionInterface._global_mapping, "flash_attention_2", fake_flash_attention_varlen)
    model = build_model("tiny-1m", vocab_size=128, context=96, seed=0, eos_id=EOS)
    ids, documents = _window(3, 96, 128, seed=1)
    units = attention_units(ids, documents, DocumentMask.DOCUMENT, eos_id=EOS)
    assert units[:, -1].min() >= 2
    with torch.no_grad():
        dense = model.model(input_ids=ids, attention_mask=dense_unit_mask(units), use_cache=False).last_hidden_state
        unmasked = model.model(input_ids=ids, use_cache=False).last_hidden_state
        model.config._attn_implementation = "flash_attention_2"  # set_attn_implementation needs the package
        varlen = hidden_states(model, ids, documents, document_mask=DocumentMask.DOCUMENT, eos_id=EOS)
    torch.testing.assert_close(varlen, dense, rtol=1e-4, atol=1e-4)
    assert (unmasked - dense).abs().max() > 1e-2  # so an unmasked call would have failed


def test_varlen_boundaries_read_the_rows_as_one_packed_sequence():
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [0, 1, 0, 1, 2, 3, 4]])
    cumulative, longest = train.attention.cumulative_unit_lengths(positions)
    assert cumulative.tolist() == [0, 3, 7, 9, 14] and cumulative.dtype == torch.int32
    assert longest == 5
