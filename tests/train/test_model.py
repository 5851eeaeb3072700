"""Model presets, seeded init and the same-document attention mask."""

from __future__ import annotations

import json
import math

import pytest
import torch

from train.evaluate import model_logits
from train.model import PRESETS, build_model, parameter_count

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(PRESETS))
def test_stated_parameter_count_matches_the_shape(name):
    preset = PRESETS[name]
    assert parameter_count(preset, preset.reference_vocab) == preset.params


@pytest.mark.parametrize("name", ["tiny-1m", "150m"])
def test_stated_parameter_count_matches_the_built_model(name):
    preset = PRESETS[name]
    model = build_model(name, vocab_size=preset.reference_vocab, context=4096, device="meta")  # no memory
    assert sum(p.numel() for p in model.parameters()) == preset.params
    assert model.config.tie_word_embeddings is False and model.config.hidden_act == "silu"


def test_paper_presets_state_the_public_code_counts():
    assert PRESETS["150m"].params == 154_147_328 and PRESETS["300m"].params == 299_649_792
    assert PRESETS["1.5b"].reference_vocab == 128_256


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("tiny")])
def test_tiny_presets_have_head_dim_64_for_vllm_cpu(name):
    assert PRESETS[name].head_dim == 64


def test_init_is_seeded_and_scaled_by_one_over_sqrt_hidden():
    first = build_model("tiny-1m", vocab_size=384, context=64, seed=3)
    again = build_model("tiny-1m", vocab_size=384, context=64, seed=3)
    other = build_model("tiny-1m", vocab_size=384, context=64, seed=4)
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.lm_head.weight, other.lm_head.weight)
    hidden = PRESETS["tiny-1m"].hidden
    q = first.model.layers[0].self_attn.q_proj.weight
    assert q.std().item() == pytest.approx(1 / math.sqrt(hidden), rel=0.05)
    down = first.model.layers[0].mlp.down_proj.weight  # fan-in = intermediate
    assert down.std().item() == pytest.approx(1 / math.sqrt(PRESETS["tiny-1m"].intermediate), rel=0.05)
    assert torch.equal(first.model.norm.weight, torch.ones(hidden))


def test_document_mask_hides_other_documents_in_the_window():
    torch.manual_seed(0)
    model = build_model("tiny-1m", vocab_size=384, context=32, seed=0).eval()
    ids = torch.randint(0, 384, (2, 32))
    documents = torch.tensor([[0] * 12 + [1] * 20, [5] * 20 + [6] * 12])
    changed = ids.clone()
    changed[0, :12] = torch.randint(0, 384, (12,))  # another document earlier in the window
    changed[1, :20] = torch.randint(0, 384, (20,))
    with torch.no_grad():  # the training path: packed position ids, no dense mask (train/attention.py)
        masked = model_logits(model, ids, documents, document_mask="document")
        masked_changed = model_logits(model, changed, documents, document_mask="document")
        full = model(input_ids=ids).logits
        full_changed = model(input_ids=changed).logits
    torch.testing.assert_close(masked[0, 12:], masked_changed[0, 12:], rtol=0, atol=1e-5)
    torch.testing.assert_close(masked[1, 20:], masked_changed[1, 20:], rtol=0, atol=1e-5)
    assert not torch.allclose(full[0, 12:], full_changed[0, 12:])  # cross-document attention by default
    # within the first document the mask is plain causal attention
    torch.testing.assert_close(masked[0, :12], full[0, :12])


def test_no_token_is_a_padding_row_so_the_eos_embedding_learns():
    """Packed training has no padding: the EOS input embedding (the document separator) must get
    a gradient like every other token (transformers freezes a `padding_idx` row)."""
    eos = 5
    model = build_model("tiny-1m", vocab_size=64, context=16, seed=0, eos_id=eos)
    assert model.get_input_embeddings().padding_idx is None and model.config.pad_token_id is None
    ids = torch.tensor([[7, 8, eos, 9, 10, eos, 11, 12]])
    model(input_ids=ids, labels=ids).loss.backward()
    grad = model.get_input_embeddings().weight.grad  # [V, H]
    assert grad[eos].abs().sum() > 0 and grad[7].abs().sum() > 0
    assert model.config.eos_token_id == eos  # generation still stops at the separator


def test_models_saved_with_a_pad_token_still_load_and_their_weights_resume(tmp_path):
    """A RUN/model written before (config.json with ``pad_token_id`` = EOS) loads as ensembles and
    lm-eval load it, and its weights (as in a resume checkpoint) load into today's model."""
    from transformers import AutoModelForCausalLM

    eos = 5
    before = build_model("tiny-1m", vocab_size=64, context=16, seed=0, eos_id=eos)
    before.config.pad_token_id = eos  # what llama_config wrote before
    before.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["pad_token_id"] == eos
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32).eval()
    today = build_model("tiny-1m", vocab_size=64, context=16, seed=1, eos_id=eos).eval()
    today.load_state_dict(before.state_dict())  # strict: the same keys, no padding buffer
    ids = torch.tensor([[7, 8, eos, 9, 10, eos, 11, 12]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, today(input_ids=ids).logits, rtol=0, atol=0)
