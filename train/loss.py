"""The training loss without the [tokens, vocab] logits tensor.

At the paper's shape (context 4096, vocabulary 128,256) the fp32 logits of one sequence take
2.1 GB, and the backward pass of a plain ``F.cross_entropy(lm_head(h))`` holds them (and their
gradient) for the whole micro-batch. Here the head and the cross-entropy are one step, done over
chunks of tokens:

- ``chunked`` (portable, CPU and CUDA): `ChunkedLinearCrossEntropy`, an autograd Function that
  for each chunk of ``chunk_tokens`` rows computes the logits, their log-sum-exp and target logit,
  and, when gradients are wanted, the chunk's gradient with respect to the hidden states and its
  contribution to the head's gradient (``softmax - onehot``), then drops the logits. The backward
  pass only scales the stored gradients by the incoming one. Peak extra memory is one chunk's
  logits (``chunk_tokens * vocab`` floats) plus a gradient the size of the head; FLOPs are those
  of the plain path (three matmuls with the head). The approach is Liger-Kernel's (gradient in the
  forward pass, chunked over tokens), in plain PyTorch.
- ``liger`` (CUDA, optional extra ``cuda-kernels``): Liger-Kernel's Triton
  ``LigerFusedLinearCrossEntropyLoss``. Written against its documented API and never run here.
- ``full``: the reference, logits materialised (what ``token_losses`` does), for tests and
  benchmarks.

``auto`` is ``liger`` on CUDA when the package imports, otherwise ``chunked``.

The model is a Hugging Face ``LlamaForCausalLM``: its backbone (``model.model``) gives the final
normed hidden states [b, C, H] and its head (``model.lm_head``, untied, no bias) the weight
[V, H]. Document masking goes through packed position ids (`train.attention`).
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch
import torch.nn.functional as F

from megadocs.errors import UserError
from train.attention import position_ids_for
from train.config import DocumentMask

__all__ = [
    "LossImplementation",
    "DEFAULT_CHUNK_TOKENS",
    "ChunkedLinearCrossEntropy",
    "linear_cross_entropy_sum",
    "resolve_loss_implementation",
    "hidden_states",
    "next_token_loss",
    "next_token_losses",
]

LossImplementation = Literal["auto", "chunked", "liger", "full"]
DEFAULT_CHUNK_TOKENS = 4096
"""Rows per chunk: at vocabulary 128,256 one chunk's fp32 logits are 2.1 GB (one sequence of 4096)."""


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(hidden[i] @ weight.T, targets[i])`` in fp32, chunked over rows (see module doc).

    Inputs: hidden [N, H] (fp32, or bf16 under autocast), weight [V, H] (the fp32 master), targets
    [N] int64. The matmuls run in ``hidden.dtype`` (the head weight is cast to it, as autocast does
    for a Linear); log-sum-exp, the loss and the head's accumulated gradient are fp32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens: int, want_grad: bool):  # noqa: D401
        compute_dtype = hidden.dtype
        head = weight.to(compute_dtype)  # [V, H]
        rows = hidden.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grad else None
        for start in range(0, rows, chunk_tokens):
            stop = min(start + chunk_tokens, rows)
            chunk, chunk_targets = hidden[start:stop], targets[start:stop]  # [n, H], [n]
            logits = (chunk @ head.T).float()  # [n, V]
            lse = torch.logsumexp(logits, dim=-1)  # [n]
            target_logits = logits.gather(1, chunk_targets[:, None]).squeeze(1)  # [n]
            total += (lse - target_logits).sum()
            if want_grad:
                # d(sum CE)/d logits = softmax - onehot, computed in place in the logits buffer
                dlogits = logits.sub_(lse[:, None]).exp_()
                dlogits[torch.arange(stop - start, device=hidden.device), chunk_targets] -= 1.0
                dlogits = dlogits.to(compute_dtype)
                grad_hidden[start:stop] = dlogits @ head  # [n, H]
                grad_weight += (dlogits.T @ chunk).float()  # [V, H]
            del logits
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is None:
            raise RuntimeError("ChunkedLinearCrossEntropy: called without want_grad, so no gradient was kept")
        scale = grad_output.to(torch.float32)
        return (grad_hidden * scale.to(grad_hidden.dtype), (grad_weight * scale).to(ctx.weight_dtype),
                None, None, None)  # fmt: skip


def liger_available() -> bool:
    """Whether Liger-Kernel (the optional extra ``cuda-kernels``) is installed."""
    return importlib.util.find_spec("liger_kernel") is not None


def resolve_loss_implementation(name: LossImplementation, device: torch.device) -> str:
    """``auto`` -> ``liger`` on CUDA with Liger-Kernel installed, else ``chunked``."""
    if name == "auto":
        return "liger" if device.type == "cuda" and liger_available() else "chunked"
    if name == "liger" and (device.type != "cuda" or not liger_available()):
        raise UserError("loss: liger needs CUDA and `pip install 'megadocs[cuda-kernels]'`; use auto or chunked")
    return name


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    implementation: str = "chunked",
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """Summed next-token cross-entropy (fp32 scalar) of hidden [N, H] through the head weight [V, H]."""
    if implementation == "full":
        logits = hidden @ weight.to(hidden.dtype).T  # [N, V]
        return F.cross_entropy(logits.float(), targets, reduction="sum")
    if implementation == "liger":  # pragma: no cover - CUDA and Liger-Kernel only
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")
        return loss(weight.to(hidden.dtype), hidden, targets).float()
    if implementation != "chunked":
        raise ValueError(f"loss: unknown implementation {implementation!r}; expected auto, chunked, liger or full")
    want_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk_tokens, want_grad)


def hidden_states(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor | None = None,
    *,
    document_mask: DocumentMask | bool | str = DocumentMask.OFF,
    eos_id: int | None = None,
) -> torch.Tensor:
    """The backbone's final (normed) hidden states [b, C, H]; masked modes pass packed position ids."""
    position_ids = position_ids_for(model, input_ids, document_ids, document_mask, eos_id)
    return model.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state


def _predictions_and_targets(model, input_ids, document_ids, document_mask, eos_id):
    """Hidden states of positions 0..C-2 [b*(C-1), H] and the tokens they predict [b*(C-1)]."""
    hidden = hidden_states(model, input_ids, document_ids, document_mask=document_mask, eos_id=eos_id)
    return hidden[:, :-1].reshape(-1, hidden.shape[-1]), input_ids[:, 1:].reshape(-1)


def next_token_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor | None = None,
    *,
    document_mask: DocumentMask | bool | str = DocumentMask.OFF,
    eos_id: int | None = None,
    implementation: str = "chunked",
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """Mean next-token cross-entropy over positions 1..C-1 of ids [b, C] (an fp32 scalar)."""
    hidden, targets = _predictions_and_targets(model, input_ids, document_ids, document_mask, eos_id)
    head = model.get_output_embeddings().weight  # [V, H]
    total = linear_cross_entropy_sum(hidden, head, targets, implementation=implementation, chunk_tokens=chunk_tokens)
    return total / targets.numel()


@torch.no_grad()
def next_token_losses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor | None = None,
    *,
    document_mask: DocumentMask | bool | str = DocumentMask.OFF,
    eos_id: int | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """Per-token next-token cross-entropy [b, C-1] in fp32, without grad, one chunk of logits at a time.

    The evaluation twin of `next_token_loss` (what ``token_losses(model_logits(...))`` gives,
    without the [b, C, V] logits).
    """
    hidden, targets = _predictions_and_targets(model, input_ids, document_ids, document_mask, eos_id)
    batch, length = input_ids.shape
    head = model.get_output_embeddings().weight.to(hidden.dtype)  # [V, H]
    losses = torch.empty(targets.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, targets.shape[0], chunk_tokens):
        stop = start + chunk_tokens
        logits = (hidden[start:stop] @ head.T).float()  # [n, V]
        losses[start:stop] = F.cross_entropy(logits, targets[start:stop], reduction="none")
    return losses.view(batch, length - 1)
