"""``benchmarks/results/gpu.json``: what the device check (`benchmarks/gpu_check.py`) measured on a
GPU, and the utilisation that plans assume from it.

The file is written by the device check only (its ``--out``); `measured_utilisation` reads it for
`train.plan` (``megadocs train --dry-run``) and `search.plan` (``megadocs search plan``), which
then take their default MFU and peak from it and say so. Without the file (no GPU has run the
check yet, or an installed package without the repository's ``benchmarks/``) they assume
`train.plan.DEFAULT_MFU` and say that instead.

The file can hold rows of several GPUs. A plan takes the GPU its ``--gpu`` names (a part of the
device name, e.g. ``h100``); without it, the GPU whose shipped row is the slowest (lowest MFU x
peak TFLOP/s: the most conservative plan), and its source line names the others.

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
    date: str | None = None
    """When the row was measured (``YYYY-MM-DD HH:MM UTC``); None: the file's ``date`` (rows written
    before the check recorded theirs)."""


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

    def device_of(self, row: TrainRow) -> str:
        """The GPU that measured `row` (its own ``device``, else the file's)."""
        return row.device or self.device

    def date_of(self, row: TrainRow) -> str:
        """When `row` was measured (its own ``date``, else the file's: a merged file's date is its
        last part's)."""
        return row.date or self.date

    @property
    def gpus(self) -> list[str]:
        """The GPUs that measured training rows, in file order (a CPU rehearsal's rows are none)."""
        return list(dict.fromkeys(device for device in map(self.device_of, self.train) if device != "cpu"))

    def shipped_row(self, preset: str, context: int, device: str | None = None) -> TrainRow | None:
        """The fastest shipped configuration of `preset` at `context` (the micro-batch ``auto``
        picks is the largest that fits, usually the fastest), else of any shape, measured on
        `device` (default: on any); None if none."""
        shipped = [row for row in self.train if row.shipped and device in (None, self.device_of(row))]
        exact = [row for row in shipped if (row.preset, row.context) == (preset, context)]
        candidates = exact or shipped
        return max(candidates, key=lambda row: row.mfu) if candidates else None

    def shipped_rows(self, preset: str, context: int) -> dict[str, TrainRow]:
        """Each GPU's `shipped_row`, GPU -> row: of those at `preset` and `context` when any GPU has
        one there, else of those at any shape; {} when no GPU has a shipped row."""
        rows = {gpu: row for gpu in self.gpus if (row := self.shipped_row(preset, context, gpu)) is not None}
        exact = {gpu: row for gpu, row in rows.items() if (row.preset, row.context) == (preset, context)}
        return exact or rows


@dataclass(frozen=True)
class Utilisation:
    """The MFU and peak a plan assumes, and where they come from (printed with the plan)."""

    mfu: float
    peak_tflops: float
    source: str
    device: str | None = None
    """The GPU whose measurement gave the MFU or the peak; None when neither was measured."""


def measured_utilisation(path: Path | None = None, *, gpu: str | None = None) -> Utilisation | None:
    """The shipped configuration's measured MFU at the paper's shape from `path` (default
    `GPU_RESULTS`) on the GPU whose name contains `gpu` (case-insensitive; ``--gpu``), or, without
    `gpu`, on the slowest such GPU (lowest MFU x peak; the source then names the others). None, without
    `gpu`, when the file is absent or holds no GPU's shipped row (a CPU rehearsal's file never
    counts).

    Raises:
        UserError: the file exists but is not a device check's results; or `gpu` matches no GPU
            measured in it, several, or one without a shipped row.
    """
    path = GPU_RESULTS if path is None else path
    where = "benchmarks/results/gpu.json" if path == GPU_RESULTS else str(path)
    results = _read(path) if path.is_file() else None
    if gpu is None:
        rows = results.shipped_rows(*PAPER_SHAPE) if results else {}
        if not rows:
            return None
        # the slowest (MFU x peak: the most GPU-hours), so that no plan is optimistic for the GPU it runs on
        device, row = min(rows.items(), key=lambda item: item[1].mfu * item[1].peak_tflops)
        others = ", ".join(f"{other} MFU {rows[other].mfu:.3f}" for other in rows if other != device)
        note = f"; the slowest of the GPUs measured (also {others}; --gpu picks one)" if others else ""
    else:
        device = _gpu_named(gpu, results, where)
        row = results.shipped_row(*PAPER_SHAPE, device)
        if row is None:
            raise UserError(f"--gpu {gpu}: {device} has no measurement of what runs now (no shipped row in {where}); "
                            "run benchmarks/gpu_check.py on it, or give --mfu and --peak-tflops")
        note = ""
    shape = f"{row.preset}, context {row.context}, micro-batch {row.micro_batch}"
    return Utilisation(mfu=round(row.mfu, 3), peak_tflops=row.peak_tflops, device=device,
                       source=f"measured on {device} ({shape}; {where}, {results.date_of(row)}){note}")


def _read(path: Path) -> GpuResults:
    try:
        return GpuResults.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path}: not a device check's results ({first}); re-run benchmarks/gpu_check.py "
                        "or delete it") from None


def _gpu_named(gpu: str, results: GpuResults | None, where: str) -> str:
    """The one GPU measured in `results` whose name contains `gpu` (or is it), case-insensitive."""
    measured = results.gpus if results else []
    matches = [device for device in measured if device.lower() == gpu.lower()]
    matches = matches or [device for device in measured if gpu.lower() in device.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"--gpu {gpu}: matches several GPUs measured in {where} ({', '.join(matches)}); "
                        "give more of one's name")
    if results is None:
        raise UserError(f"--gpu {gpu}: no device check results ({where} is absent); give --mfu and --peak-tflops")
    raise UserError(f"--gpu {gpu}: no GPU measured in {where} matches (measured: {', '.join(measured) or 'none'})")
