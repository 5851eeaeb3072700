"""The student model: a Hugging Face `LlamaForCausalLM`, so checkpoints load in transformers, vLLM
and lm-eval without conversion.

Architecture as in the paper's public code: SiLU/SwiGLU MLP, RoPE, RMSNorm, untied input and
output embeddings. Initialisation: every weight matrix is drawn from N(0, std^2) with
``std = INIT_SCALE / sqrt(fan_in)`` (fan_in = hidden size for embeddings, attention, the MLP's
gate/up projections and the output head; the intermediate size for the MLP's down projection),
so the variance is proportional to 1/hidden. Norm weights start at 1. Drawn on the CPU from a
seeded generator, so the same seed gives the same model on every device.

The shapes are `train.presets` (a pure table: configs are checked without torch).
"""

from __future__ import annotations

import math

import torch

from train.presets import PRESETS, ModelPreset, parameter_count

__all__ = [
    "INIT_SCALE",
    "ModelPreset",
    "PRESETS",
    "parameter_count",
    "llama_config",
    "build_model",
    "init_weights",
]

INIT_SCALE = 1.0
ROPE_THETA = 10_000.0
MIN_MAX_POSITIONS = 4096
"""RoPE learns no positions: `max_position_embeddings` only caps what inference engines (vLLM,
lm-eval) accept, so a model trained at a short context can still read a long generator prompt."""


def llama_config(preset: ModelPreset, *, vocab_size: int, context: int, eos_id: int | None = None):
    """The `transformers.LlamaConfig` of a preset: EOS is the model's BOS and EOS (documents are
    EOS-joined, no BOS), and no token is a padding row (see below)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden,
        intermediate_size=preset.intermediate,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads,
        head_dim=preset.head_dim,
        hidden_act="silu",
        max_position_embeddings=max(context, MIN_MAX_POSITIONS),
        rms_norm_eps=1e-5,
        rope_theta=ROPE_THETA,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=INIT_SCALE / math.sqrt(preset.hidden),
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        # No pad token: transformers makes `pad_token_id` the embedding's `padding_idx`, a row
        # that never gets a gradient. Packed training has no padding, and EOS (the document
        # separator, in every window) must learn like every other token. Batches padded at
        # inference (lm-eval) are masked by their callers; the tokenizer keeps its pad token.
        pad_token_id=None,
        attn_implementation="sdpa",
    )


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Seeded N(0, (INIT_SCALE/sqrt(fan_in))^2) for matrices, 1 for norm weights (see module doc)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for param in model.parameters():
        if param.ndim == 1:  # RMSNorm scales
            param.fill_(1.0)
            continue
        fan_in = param.shape[1]  # Linear: [out, in]; Embedding: [vocab, hidden]
        std = INIT_SCALE / math.sqrt(fan_in)
        values = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
        param.copy_(values.to(param.device, param.dtype))


def build_model(
    preset_name: str,
    *,
    vocab_size: int,
    context: int,
    seed: int = 0,
    eos_id: int | None = None,
    device: str | torch.device = "cpu",
):
    """A freshly initialised fp32 `LlamaForCausalLM` of the preset on `device`.

    With ``device="meta"`` nothing is allocated and no weights are drawn (for counting).
    """
    from transformers import LlamaForCausalLM
    from transformers.initialization import no_init_weights

    preset = PRESETS[preset_name]
    config = llama_config(preset, vocab_size=vocab_size, context=context, eos_id=eos_id)
    if str(device) == "meta":
        with torch.device("meta"):
            return LlamaForCausalLM(config)
    with no_init_weights():  # skip HF's own init; init_weights below is the seeded one
        model = LlamaForCausalLM(config)
    model.to(torch.float32)
    init_weights(model, seed)
    return model.to(device)
