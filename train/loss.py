"""The training loss without the [tokens, vocab] logits tensor.

At the paper's shape (context 4096, vocabulary 128,256) the fp32 logits of one sequence take
2.1 GB, and the backward pass of a plain ``F.cross_entropy(lm_head(h))`` holds them (and their
gradient) for the whole micro-batch. Here the head and the cross-entropy are one step, done over
chunks of tokens:

- ``chunked`` (portable, CPU and CUDA): `ChunkedLinearCrossEntropy`, an autograd Function that
  for each chunk of ``chunk_tokens`` rows computes the logits, their log-sum-exp and target logit,
  and, when gradients are wanted, the chunk's gradient with respect to the hidden states and its
  contribution to the head's gradient (``softmax - onehot``), then drops the logits. The backward
  pass only scales the stored gradients by the incoming one. FLOPs are those of the plain path
  (three matmuls with the head). The approach is Liger-Kernel's (gradient in the forward pass,
  chunked over tokens), in plain PyTorch.
- ``chunked_compiled``: the same Function with each chunk's arithmetic compiled
  (``compile: on``, or ``auto`` on CUDA, `train.compile`): the cast, log-sum-exp and
  ``softmax - onehot`` become fused kernels that read the compute-dtype logits once or twice
  instead of streaming fp32 copies of them through memory several times.
- ``liger`` (CUDA, optional extra ``cuda-kernels``): Liger-Kernel's Triton
  ``LigerFusedLinearCrossEntropyLoss`` on the fp32 head weight under autocast, with fp32
  accumulation of the head's gradient. Written against liger-kernel 0.8's API;
  `benchmarks/gpu_check.py` compares it with ``full`` and times it in training steps.
- ``full``: the reference, logits materialised (what ``token_losses`` does), for tests and
  benchmarks.

``auto`` is ``chunked``, compiled where the run compiles (on CUDA by default). Measured on an H100
(benchmarks/RESULTS.md "gpu_check": 300m, context 4096, micro-batch 32, strict determinism),
a training step is 7-8% faster with ``chunked_compiled`` than with Liger (MFU 0.441 against
0.409 with FlexAttention, 0.419 against 0.391 with SDPA), for 1.6 GB more peak memory (56.6
against 55.0 GB): Liger splits a micro-batch into about 128 chunks whatever its size, each adding
into the fp32 head gradient. Until 2026-12-05 ``auto`` was Liger on CUDA when installed.

**Precision.** Under autocast the hidden states arrive in fp32 (the residual stream and the final
norm are fp32), so the chunked loss casts them and the head to the autocast dtype itself, as a
Linear under autocast would: the matmuls run in bf16 on CUDA, the log-sum-exp, the loss and the
head's accumulated gradient in fp32. Without autocast (CPU) everything is fp32.

**Memory** at the paper's shape (vocabulary 128,256, hidden 768, a micro-batch of 16 x 4095
predicted tokens): the head's fp32 gradient (394 MB) and the hidden states' gradient (201 MB, fp32)
live for the micro-batch; per chunk of 4096 rows, compiled: the bf16 logits and their bf16
gradient (1.05 GB each); eager: fp32 logits and their fp32 softmax (2.1 GB each) plus the bf16
copies; Liger: chunks of 512 rows (131 MB of bf16 logits, overwritten by their gradient).

The model is a Hugging Face ``LlamaForCausalLM``: its backbone (``model.model``) gives the final
normed hidden states [b, C, H] and its head (``model.lm_head``, untied, no bias) the weight
[V, H]. Document masking goes through packed position ids (`train.attention`).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Literal

import torch
import torch.nn.functional as F

from megadocs.errors import UserError
from train.attention import forward_kwargs
from train.compile import compile_backend
from train.config import DocumentMask

__all__ = [
    "LossImplementation",
    "LOSS_KERNELS",
    "DEFAULT_CHUNK_TOKENS",
    "ChunkedLinearCrossEntropy",
    "linear_cross_entropy_sum",
    "resolve_loss_implementation",
    "hidden_states",
    "next_token_loss",
    "next_token_losses",
    "MicroBatchLoss",
]

LossImplementation = Literal["auto", "chunked", "liger", "full"]
LOSS_KERNELS = ("chunked", "chunked_compiled", "liger", "full")
"""What `resolve_loss_implementation` can return: the code that runs."""
DEFAULT_CHUNK_TOKENS = 4096
"""Rows per chunk: at vocabulary 128,256 one chunk's fp32 logits are 2.1 GB (one sequence of 4096)."""


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype of the head's matmuls: autocast's where it is on (a Linear would cast so), else
    the hidden states'."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def chunk_loss_and_grads(chunk: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, want_grad: bool):
    """One chunk: summed cross-entropy (fp32), and with `want_grad` its gradients with respect to
    the chunk [n, H] and to the logits [n, V] (both in the chunk's dtype; else None).

    chunk [n, H] and head [V, H] in the compute dtype, targets [n]. Written without in-place or
    indexed updates so that, compiled, the softmax and the one-hot subtraction fuse into one kernel
    that writes the logits' gradient directly in the compute dtype.
    """
    logits = (chunk @ head.T).float()  # [n, V]
    lse = torch.logsumexp(logits, dim=-1)  # [n]
    loss = (lse - logits.gather(1, targets[:, None]).squeeze(1)).sum()
    if not want_grad:
        return loss, None, None
    onehot = torch.arange(logits.shape[1], device=logits.device)[None, :] == targets[:, None]  # [n, V]
    dlogits = ((logits - lse[:, None]).exp() - onehot.float()).to(chunk.dtype)  # d(sum CE)/d logits
    return loss, dlogits @ head, dlogits


@functools.cache
def _compiled_chunk(backend: str):
    import torch._dynamo

    # one graph for the full chunks, one for a micro-batch's last (shorter) chunk, per micro-batch size
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    return torch.compile(chunk_loss_and_grads, backend=backend, dynamic=False)


_ADDMM_OUT_DTYPE = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 8)


def _accumulate_head_grad(grad_weight: torch.Tensor, dlogits: torch.Tensor, chunk: torch.Tensor) -> None:
    """``grad_weight += dlogits.T @ chunk`` into the fp32 buffer [V, H]. On CUDA a bf16 product is
    accumulated in fp32 by cuBLAS itself (``out_dtype``, torch >= 2.8, as Liger does); elsewhere it
    is rounded to the compute dtype before the fp32 sum (exact on CPU, where everything is fp32)."""
    if grad_weight.device.type == "cuda" and dlogits.dtype != torch.float32 and _ADDMM_OUT_DTYPE:
        torch.addmm(grad_weight, dlogits.T, chunk, out_dtype=torch.float32, out=grad_weight)
    else:
        grad_weight += (dlogits.T @ chunk).float()


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(hidden[i] @ weight.T, targets[i])`` in fp32, chunked over rows (see module doc).

    Inputs: hidden [N, H] (fp32, also under autocast), weight [V, H] (the fp32 master), targets
    [N] int64. The matmuls run in `compute_dtype` (autocast's, else fp32); log-sum-exp, the loss and
    the head's accumulated gradient are fp32. `compiled` names a ``torch.compile`` backend for the
    per-chunk arithmetic (None: eager).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens: int, want_grad: bool, compiled: str | None = None):
        dtype = compute_dtype(hidden)
        step = chunk_loss_and_grads if compiled is None else _compiled_chunk(compiled)
        rows = hidden.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grad else None
        with torch.autocast(hidden.device.type, enabled=False):  # the casts are explicit
            head = weight.to(dtype)  # [V, H]
            for start in range(0, rows, chunk_tokens):
                stop = min(start + chunk_tokens, rows)
                chunk = hidden[start:stop].to(dtype)  # [n, H]
                loss, grad_chunk, dlogits = step(chunk, head, targets[start:stop], want_grad)
                total += loss
                if want_grad:
                    grad_hidden[start:stop] = grad_chunk
                    _accumulate_head_grad(grad_weight, dlogits, chunk)
                del grad_chunk, dlogits
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
                None, None, None, None)  # fmt: skip


def liger_available() -> bool:
    """Whether Liger-Kernel (the optional extra ``cuda-kernels``) is installed."""
    return importlib.util.find_spec("liger_kernel") is not None


def resolve_loss_implementation(name: LossImplementation, device: torch.device, *, compiled: bool = False) -> str:
    """The `LOSS_KERNELS` entry that runs: ``auto`` -> ``chunked`` (the module docstring says why,
    measured); ``chunked`` -> ``chunked_compiled`` when the run compiles.

    >>> resolve_loss_implementation("auto", torch.device("cpu"), compiled=True)
    'chunked_compiled'
    """
    if name == "auto":
        name = "chunked"
    if name == "liger" and (device.type != "cuda" or not liger_available()):
        raise UserError("loss: liger needs CUDA and `pip install 'megadocs[cuda-kernels]'`; use auto or chunked")
    return "chunked_compiled" if name == "chunked" and compiled else name


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

        # fp32 hidden and head under autocast: Liger's matmuls autocast to bf16 (the head's cast is
        # cached for the micro-batch) and its head gradient is summed in fp32 (accum_dtype)
        loss = LigerFusedLinearCrossEntropyLoss(reduction="sum", accum_dtype=torch.float32)
        return loss(weight, hidden, targets).float()
    if implementation not in ("chunked", "chunked_compiled"):
        raise ValueError(f"loss: unknown implementation {implementation!r}; expected one of {', '.join(LOSS_KERNELS)}")
    want_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    compiled = compile_backend() if implementation == "chunked_compiled" else None
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk_tokens, want_grad, compiled)


def hidden_states(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    document_ids: torch.Tensor | None = None,
    *,
    document_mask: DocumentMask | bool | str = DocumentMask.OFF,
    eos_id: int | None = None,
) -> torch.Tensor:
    """The backbone's final (normed) hidden states [b, C, H]; masked modes pass packed position ids."""
    return model.model(**forward_kwargs(model, input_ids, document_ids, document_mask, eos_id)).last_hidden_state


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


class MicroBatchLoss(torch.nn.Module):
    """A micro-batch's mean token loss as a module, for DDP and FSDP (`train.parallel`): the chunked
    head reads the head weight directly, not through ``model.forward``, so the wrapper (and, for
    FSDP, the root unit that gathers the embedding, final norm and head) covers the whole loss.
    ``per_token=True`` gives evaluation's per-token losses [b, C-1] through the same root."""

    def __init__(self, model: torch.nn.Module, *, implementation: str, **loss_settings: Any) -> None:
        super().__init__()
        self.model = model
        self.implementation = implementation
        self.loss_settings = loss_settings

    def forward(self, input_ids: torch.Tensor, document_ids: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        if per_token:
            return next_token_losses(self.model, input_ids, document_ids, **self.loss_settings)
        return next_token_loss(self.model, input_ids, document_ids, implementation=self.implementation,
                               **self.loss_settings)  # fmt: skip
