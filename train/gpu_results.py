"""``benchmarks/results/gpu.json``: what the device check (`benchmarks/gpu_check.py`) measured on a
GPU, and the utilisation that plans assume from it.

The file is written by the device check only (its ``--out``); `measured_utilisation` reads it for
`train.plan` (``megadocs train --dry-run``) and `search.plan` (``megadocs search plan``), which
then take their default MFU and peak from it and say so. Without the file (no GPU has run the
check yet, or an installed package without the repository's ``benchmarks/``) they assume
`train.plan.DEFAULT_MFU` and say that instead.

MFU is ``tokens_per_s x flops_per_token / (peak_tflops x 1e12)`` with ``flops_per_token`` from
`train.plan.model_cost` (``6N + 12 L d C``) and ``peak_tflops`` the device's dense bf16 datasheet
peak, so it compares with published figures; the measured matmul ceiling is a check row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from megadocs.errors import UserError

__all__ = ["GPU_RESULTS", "TrainRow", "CheckRow", "GpuResults", "Utilisation", "measured_utilisation"]

GPU_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu.json"
PAPER_SHAPE = ("300m", 4096)
"""The shape whose measured MFU plans use when the file has it: the paper's student at its context."""


class TrainRow(BaseModel):
    """One measured training configuration (more fields allowed: estimates, notes)."""

    model_config = ConfigDict(extra="allow")

    preset: str
    context: int
    micro_batch: int
    compile: str
    """``regional`` (each layer and the loss chunk, `train.compile`), ``whole`` (the backbone as
    shipped before issue 26) or ``off``."""
    loss: str
    """A `train.loss.LOSS_KERNELS` entry (the ``whole`` row runs the eager ``chunked`` loss)."""
    tokens_per_s: float
    flops_per_token: float
    peak_tflops: float
    mfu: float
    peak_mem_gb: float
    shipped: bool = False
    """Whether this is what ``megadocs train`` runs by default now (compile auto, loss auto,
    ``deterministic: true``)."""
    determinism: str | None = None
    """``strict`` (``deterministic: true``), ``off`` (``deterministic: false``) or ``warn_only`` (as
    before issue 26); None in rows measured before the check recorded it (all were strict but
    the ``whole`` row)."""
    attention: str = "sdpa"
    """The dense attention kernels (``sdpa`` or ``flex``: `train.config.ATTENTION_SETTINGS`); rows
    measured before the check recorded it ran ``sdpa``."""
    device: str | None = None
    """The GPU that measured the row (a file can hold rows of several); None: the file's ``device``."""


class CheckRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    passed: bool
    detail: str
    skipped: bool = False
    """Not run: the device cannot (e.g. Liger on a CPU), or the global deadline came first."""


class GpuResults(BaseModel):
    model_config = ConfigDict(extra="allow")

    device: str
    torch: str
    cuda: str | None
    date: str
    train: list[TrainRow]
    checks: list[CheckRow]

    def shipped_row(self, preset: str, context: int) -> TrainRow | None:
        """The fastest shipped configuration of `preset` at `context` (the micro-batch ``auto``
        picks is the largest that fits, usually the fastest), else of any shape; None if none."""
        shipped = [row for row in self.train if row.shipped]
        exact = [row for row in shipped if (row.preset, row.context) == (preset, context)]
        candidates = exact or shipped
        return max(candidates, key=lambda row: row.mfu) if candidates else None


@dataclass(frozen=True)
class Utilisation:
    """The MFU and peak a plan assumes, and where they come from (printed with the plan)."""

    mfu: float
    peak_tflops: float
    source: str


def measured_utilisation(path: Path | None = None) -> Utilisation | None:
    """The shipped configuration's measured MFU at the paper's shape from `path` (default
    `GPU_RESULTS`); None when the file is absent or holds no CUDA measurement (a CPU rehearsal's
    file never counts).

    Raises:
        UserError: the file exists but is not a device check's results.
    """
    path = GPU_RESULTS if path is None else path
    if not path.is_file():
        return None
    try:
        results = GpuResults.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path}: not a device check's results ({first}); re-run benchmarks/gpu_check.py "
                        "or delete it") from None
    row = results.shipped_row(*PAPER_SHAPE)
    if results.device == "cpu" or row is None:
        return None
    shape = f"{row.preset}, context {row.context}, micro-batch {row.micro_batch}"
    where = "benchmarks/results/gpu.json" if path == GPU_RESULTS else str(path)
    return Utilisation(mfu=round(row.mfu, 3), peak_tflops=row.peak_tflops,
                       source=f"measured on {row.device or results.device} ({shape}; {where}, {results.date})")
