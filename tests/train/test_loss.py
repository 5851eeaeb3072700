"""`train.loss`: the chunked head + cross-entropy equals the full one, values and gradients."""

from __future__ import annotations

import pytest
import torch

import train.loss
from megadocs.errors import UserError
from train.evaluate import model_logits, token_losses
from train.loss import (
    LOSS_KERNELS,
    linear_cross_entropy_sum,
    next_token_loss,
    next_token_losses,
    resolve_loss_implementation,
)
from train.model import build_model


@pytest.mark.parametrize("chunk_tokens", [1, 7, 64, 1000])
def test_chunked_linear_cross_entropy_equals_the_full_loss_and_its_gradients(chunk_tokens):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(64, 32, generator=generator, requires_grad=True)
    weight = torch.randn(97, 32, generator=generator, requires_grad=True)
    targets = torch.randint(0, 97, (64,), generator=generator)
    full = linear_cross_entropy_sum(hidden, weight, targets, implementation="full")
    full_grads = torch.autograd.grad(full * 0.37, (hidden, weight))  # a non-unit upstream gradient
    chunked = linear_cross_entropy_sum(hidden, weight, targets, implementation="chunked", chunk_tokens=chunk_tokens)
    chunked_grads = torch.autograd.grad(chunked * 0.37, (hidden, weight))
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-5)
    for got, want in zip(chunked_grads, full_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # fp32 tolerance


def _loss_and_grads(implementation: str, scale: float = 0.37, **kwargs):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(64, 32, generator=generator, requires_grad=True)
    weight = torch.randn(97, 32, generator=generator, requires_grad=True)
    targets = torch.randint(0, 97, (64,), generator=generator)
    loss = linear_cross_entropy_sum(hidden, weight, targets, implementation=implementation, **kwargs)
    return loss, torch.autograd.grad(loss * scale, (hidden, weight))


def test_compiled_chunks_equal_the_full_loss_and_its_gradients():
    # 64 rows in chunks of 24: two compiled graphs, the full chunks and the shorter last one
    full, full_grads = _loss_and_grads("full")
    compiled, compiled_grads = _loss_and_grads("chunked_compiled", chunk_tokens=24)
    torch.testing.assert_close(compiled, full, rtol=1e-6, atol=1e-5)
    for got, want in zip(compiled_grads, full_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_under_autocast_the_chunks_multiply_in_bf16_and_the_gradients_stay_fp32(monkeypatch):
    seen = []
    real = train.loss.chunk_loss_and_grads

    def spy(chunk, head, targets, want_grad):
        seen.append((chunk.dtype, head.dtype))
        return real(chunk, head, targets, want_grad)

    monkeypatch.setattr(train.loss, "chunk_loss_and_grads", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, (grad_hidden, grad_weight) = _loss_and_grads("chunked", chunk_tokens=16)
        full, _ = _loss_and_grads("full")  # the head's Linear under autocast: bf16 logits, fp32 CE
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)}  # the fp32 hidden states are cast, as a Linear would
    assert loss.dtype == grad_hidden.dtype == grad_weight.dtype == torch.float32
    torch.testing.assert_close(loss, full, rtol=1e-4, atol=1e-3)


def _saved_bytes(function) -> int:
    """The largest storage autograd keeps for the backward pass of `function()`."""
    largest = 0

    def pack(tensor):
        nonlocal largest
        largest = max(largest, tensor.untyped_storage().nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return largest


def test_chunked_loss_never_keeps_the_whole_logits_for_backward():
    tokens, hidden_size, vocab = 512, 16, 1024
    hidden = torch.randn(tokens, hidden_size, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,))
    logits_bytes = tokens * vocab * 4
    full = _saved_bytes(lambda: linear_cross_entropy_sum(hidden, weight, targets, implementation="full"))
    chunked = _saved_bytes(lambda: linear_cross_entropy_sum(hidden, weight, targets, implementation="chunked",
                                                            chunk_tokens=64))
    assert full >= logits_bytes  # the reference keeps [N, V]
    assert chunked <= vocab * hidden_size * 4  # at most the head's gradient [V, H]


def test_model_loss_and_parameter_gradients_match_the_logits_path():
    model = build_model("tiny-1m", vocab_size=256, context=32, seed=0)
    ids = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(1))
    documents = torch.cat([torch.zeros(3, 12), torch.ones(3, 20)], dim=1).long()
    for mode in ("off", "document"):
        model.zero_grad()
        reference = token_losses(model_logits(model, ids, documents, document_mask=mode), ids).mean()
        reference.backward()
        want = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        loss = next_token_loss(model, ids, documents, document_mask=mode, implementation="chunked", chunk_tokens=10)
        loss.backward()
        torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
        for param, grad in zip(model.parameters(), want):
            torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-6)


def test_evaluation_losses_per_token_match_the_logits_path():
    model = build_model("tiny-1m", vocab_size=256, context=32, seed=0)
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(2))
    want = token_losses(model_logits(model, ids), ids)
    got = next_token_losses(model, ids, chunk_tokens=5)
    assert got.shape == want.shape == (2, 31)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)


def test_loss_implementation_auto_is_chunked_on_cpu_and_liger_needs_cuda():
    assert resolve_loss_implementation("auto", torch.device("cpu")) == "chunked"
    assert resolve_loss_implementation("auto", torch.device("cpu"), compiled=True) == "chunked_compiled"
    assert resolve_loss_implementation("full", torch.device("cpu"), compiled=True) == "full"
    with pytest.raises(UserError, match="loss: liger needs CUDA"):
        resolve_loss_implementation("liger", torch.device("cpu"))


@pytest.mark.parametrize("compiled", [False, True])
def test_every_configurable_loss_resolves_to_a_kernel_that_runs(compiled):
    from train.config import RunConfig

    choices = RunConfig.model_fields["loss"].annotation.__args__
    for name in choices:
        if name == "liger":
            continue  # CUDA only (above)
        assert resolve_loss_implementation(name, torch.device("cpu"), compiled=compiled) in LOSS_KERNELS
