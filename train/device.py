"""Device policy: which torch device a run uses and the torch settings that make it reproducible.

**Determinism** (`set_determinism`; the run's ``deterministic`` setting, an execution field):

- CPU: the kernels a run uses are deterministic; two runs of one config, and a resumed run and
  an uninterrupted one, give bit-identical metrics (measured: `tests/train/test_loop.py`,
  `tests/train/test_resume.py`).
- CUDA, ``deterministic: true`` (the default): ``torch.use_deterministic_algorithms(True)``
  without ``warn_only`` (an op with no deterministic implementation raises instead of warning;
  SDPA's flash and memory-efficient backward switch to their deterministic variants, cuDNN
  attention is left out), ``cudnn.deterministic``, Inductor's deterministic mode (no on-device
  benchmarking that changes a reduction's order), flash-attn's deterministic backward
  (`train.attention.attention_kwargs`), and a fixed cuBLAS workspace (CUBLAS_WORKSPACE_CONFIG,
  which must be set before the first cuBLAS call). A resumed run repeats an uninterrupted one bit
  for bit on the same GPU model, software and process count: measured (torch 2.11, CUDA 13.0) for
  the 300m preset SIGTERMed at step 10 and resumed, and for 3 steps run twice, on an H200 with
  SDPA (it costs x1.18 in step time there) and on an H100 with FlexAttention, which ``attention:
  auto`` now runs (`train.attention.attention_backend`; benchmarks/RESULTS.md "gpu_check").
- CUDA, ``deterministic: false``: the fastest kernels (cuDNN attention, flash attention's
  backward with atomic adds); runs agree to rounding only. Measured: with ``warn_only`` (as before
  issue 26) two runs of 3 steps already differ.

Process-wide *environment* is not set here (library code leaves the process alone): entry points
(`megadocs train`, `megadocs search run`) apply :data:`ENVIRONMENT_DEFAULTS` before CUDA starts,
through `megadocs.procs.apply_environment_defaults`.
"""

from __future__ import annotations

import os

import torch

from megadocs.errors import UserError

__all__ = ["DEVICES", "ENVIRONMENT_DEFAULTS", "available_memory_bytes", "resolve_device", "set_determinism"]

DEVICES = ("auto", "cpu", "cuda")
# cuBLAS needs a fixed workspace for reproducible reductions; it is read when cuBLAS starts.
ENVIRONMENT_DEFAULTS = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when torch sees it, else CPU), ``cpu``, ``cuda``, or a torch.device as is.

    >>> resolve_device("cpu")
    device(type='cpu')

    Raises:
        UserError: ``cuda`` requested where torch sees no CUDA device.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' requested but torch sees no CUDA device (use auto or cpu)")
    return torch.device(name)


def set_determinism(device: torch.device, *, strict: bool = True) -> None:
    """The determinism policy of the module docstring for a run on `device` (CPU: nothing to set).

    Raises:
        UserError: `strict` on CUDA without CUBLAS_WORKSPACE_CONFIG in the environment.
    """
    if device.type != "cuda":
        return
    if strict and not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        raise UserError("deterministic: true needs CUBLAS_WORKSPACE_CONFIG set before CUDA starts (`megadocs train` "
                        "sets it; else export CUBLAS_WORKSPACE_CONFIG=:4096:8), or set deterministic: false")
    torch.use_deterministic_algorithms(strict)
    torch.backends.cudnn.deterministic = strict
    torch.backends.cudnn.benchmark = False
    import torch._inductor.config as inductor_config

    if hasattr(inductor_config, "deterministic"):  # torch >= 2.8
        inductor_config.deterministic = strict
    # TF32 for the fp32 matmuls left outside bf16 autocast (deterministic, 10-bit mantissa inputs).
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def available_memory_bytes(device: torch.device) -> int:
    """Memory `device` has free now: CUDA's free memory, or the host's available memory
    (``MemAvailable``, else the free pages). Not its total: `train.parallel.choose_parallelism`
    and a plan's ``--memory-gib`` take totals. What ``micro_batch_size: auto`` (`train.plan`) and
    an ensemble's resident members (`train.ensemble`) budget against."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # no /proc (not Linux)
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
