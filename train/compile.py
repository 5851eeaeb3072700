"""What `compile:` compiles: each decoder layer and the loss chunk, never the whole backbone.

Regional compilation (torchtitan's ``apply_compile``: one ``torch.compile`` per transformer block,
in place, before FSDP wraps the blocks): the layers share one graph, so the model compiles about
as fast as one layer does, and everything around them stays eager. That matters for correctness
of speed, not only for compile time: compiling ``model.model`` whole traces Hugging Face's mask
construction, which under tracing builds a dense ``[b, 1, C, C]`` causal mask, so SDPA is called
with ``attn_mask=...`` and ``is_causal=False`` and cannot use the flash kernel. Built eagerly (as
here) the mask is ``None`` and SDPA runs causal (`tests/train/test_compile.py` checks both).

The head and the cross-entropy are compiled separately, one chunk of rows at a time
(`train.loss`, ``chunked_compiled``); Liger-Kernel's fused loss is Triton already.

Single-process, DDP and FSDP runs all go through `compile_layers` (FSDP calls it before
sharding, `train.sharding.shard_model`). `compile_wanted` is the one place that decides.
"""

from __future__ import annotations

import os

import torch

__all__ = ["BACKEND_ENV", "compile_backend", "compile_wanted", "compile_layers", "decoder_layers"]

BACKEND_ENV = "MEGADOCS_COMPILE_BACKEND"
"""Overrides the ``torch.compile`` backend (default ``inductor``): the device check's CPU rehearsal
sets ``aot_eager`` to trace every region as on the GPU without generating C++ kernels."""


def compile_backend() -> str:
    """The backend every region is compiled with: $MEGADOCS_COMPILE_BACKEND, else ``inductor``."""
    return os.environ.get(BACKEND_ENV) or "inductor"


def compile_wanted(setting: str, device: torch.device) -> bool:
    """``compile: on`` always, ``auto`` on CUDA only, ``off`` never.

    >>> compile_wanted("auto", torch.device("cpu")), compile_wanted("on", torch.device("cpu"))
    (False, True)
    """
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of a Hugging Face causal LM (``model.model.layers``)."""
    return model.model.layers


def compile_layers(layers: torch.nn.ModuleList, *, backend: str | None = None) -> None:
    """``torch.compile`` each layer in place: parameter names (and so checkpoints) are unchanged.

    Not ``fullgraph``: a graph break in some transformers version costs speed, not the run
    (`benchmarks/gpu_check.py` counts graph breaks and recompiles on the GPU).
    """
    for layer in layers:
        layer.compile(backend=backend or compile_backend())
