"""Device policy: which torch device a run uses and the torch settings that make it reproducible.

Process-wide *environment* is not set here (library code leaves the process alone): entry points
(`megadocs train`, `megadocs search run`) apply :data:`ENVIRONMENT_DEFAULTS` before CUDA starts,
through `megadocs.procs.apply_environment_defaults`.
"""

from __future__ import annotations

import torch

from megadocs.errors import UserError

__all__ = ["DEVICES", "ENVIRONMENT_DEFAULTS", "resolve_device", "set_determinism"]

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


def set_determinism(device: torch.device) -> None:
    """Deterministic kernels on CUDA, so a resumed run matches an uninterrupted one (CPU already is)."""
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        # TF32 for the fp32 matmuls left outside bf16 autocast (deterministic, 10-bit mantissa inputs).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
