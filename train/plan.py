"""What a run will cost before it starts: FLOPs, memory per micro-batch, GPU-hours, the micro-batch.

**FLOPs per token** (PaLM appendix B, as nanoGPT and llm-foundry count MFU): ``6 N + 12 L d C``,
with N the parameters that do matmuls per token (every parameter except the input embedding, so
the untied head is in), L layers, d = heads * head_dim, C the context. The attention term counts
the full C x C score matrix (the convention); causal and document-masked kernels do less, so MFU
by this count is comparable with the published figures, not an exact count of kernel FLOPs.

**Memory per micro-batch** of ``b`` sequences (bytes):

- parameters, gradients, AdamW's two moments: ``4 + 4 + 8`` bytes per parameter (fp32 master
  weights, also under bf16 autocast: `train.state_bytes`);
- activations saved for the backward pass, per token per layer, counted from Hugging Face's
  Llama layer: two RMSNorms keep their fp32 input and normalised output (``4 h`` floats, fp32
  because the residual stream is fp32), and ``6 h + 4 i`` elements in the compute dtype (the
  bf16 copy the q/k/v projections read, q, k, v and the attention output, the o-projection's
  input; the MLP's gate, up, activation and product), h = hidden, i = intermediate. Plus ``4 h``
  fp32 per token outside the layers (final norm, the loss's hidden-state gradient);
- the loss (`train.loss`, chunked or Liger): the head gradient it accumulates (``4 V h``) and two
  chunks of fp32 logits (``8 * chunk_tokens * V``).

**Per device, data parallel** over N processes (`train.sharding`): the micro-batch is the
per-rank one. DDP replicates the 16 bytes per parameter on every device. FSDP keeps ``16 / N``
bytes per parameter (the shards, rounded up) plus what it gathers: the parameters and unsharded
gradients of the root unit (embedding, head, final norm: ``2 V h + h``, fp32, held for the whole
forward and backward) and of two decoder layers in the compute dtype (the one computing and the
one prefetched): ``2 x (4 root + dtype x 2 layer)`` bytes.

`tests/train/test_plan.py` checks the activation count against the bytes torch actually saves
for backward (``saved_tensors_hooks``) on CPU at two model sizes, within 10%. With the layers
compiled (`train.compile`, the default on CUDA) Inductor saves less (it recomputes the norms and
the MLP's activation in the backward and keeps bf16 where eager keeps fp32): the activations are
then counted at `COMPILED_ACTIVATION_RATIO` of the eager count, measured on an H200
(`benchmarks/results/gpu.json`, 300m at context 4096, vocabulary 128,256: 1.54 GB per sequence
measured against 2.16 counted). The whole estimate then lands 7% (micro-batch 32: 58.7 GB against
55.0 measured) and 12% (micro-batch 16: 34.1 against 30.4) above the measured peaks; the eager
count overestimated them by 43% and 45%. On an H100 (2026-12-05) with the shipped loss (the
compiled chunked loss, 1.6 GB more than Liger's) the estimate is 3.5% above the measured peak
(58.6 against 56.6 GB at micro-batch 32). On CUDA `auto_micro_batch` still confirms the choice with
a probe (a forward and backward at the chosen size) and steps down on out-of-memory.
"""

from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass
from typing import Any

from megadocs.errors import FieldError, UserError
from megadocs.formats import WindowCounts
from train.config import AUTO
from train.gpu_results import Utilisation, measured_utilisation
from train.presets import PRESETS, ModelPreset, parameter_count
from train.state_bytes import ADAMW_STATE_BYTES, BF16, FP32, GRADIENT_BYTES, WEIGHT_BYTES
from train.streams import StreamMixture, stream_mixture

__all__ = [
    "H100_BF16_PEAK_TFLOPS",
    "DEFAULT_MFU",
    "default_utilisation",
    "is_out_of_memory",
    "DEFAULT_DEVICE_MEMORY_GIB",
    "MEMORY_HEADROOM",
    "ModelCost",
    "model_cost",
    "MemoryEstimate",
    "memory_estimate",
    "largest_fitting_micro_batch",
    "gpu_hours",
    "check_utilisation",
    "DEFAULT_SCALING_EFFICIENCY",
    "data_parallel_hours",
    "RunCost",
    "run_cost",
    "RunPlan",
    "run_plan",
    "format_run_plan",
]

H100_BF16_PEAK_TFLOPS = 989.0
"""Dense bf16 peak of an H100 SXM (NVIDIA datasheet; 1979 is with 2:4 sparsity)."""
DEFAULT_MFU = 0.4
"""Assumed model FLOPs utilisation until the device check has measured one (`default_utilisation`)."""
DEFAULT_SCALING_EFFICIENCY = 0.9
"""Assumed data-parallel efficiency (throughput of N processes / N x one's) for N > 1: the issue's
8-GPU target for the 300m preset at context 4096; unmeasured on GPUs (benchmarks/RESULTS.md)."""
DEFAULT_DEVICE_MEMORY_GIB = 80.0
"""Device memory a plan assumes for ``micro_batch_size: auto`` when it is not run on the GPU (H100 80GB)."""
MEMORY_HEADROOM = 0.9
"""Share of the device memory the estimate may fill (allocator fragmentation, CUDA context, workspaces)."""

NORM_FP32_PER_LAYER = 4  # x h floats: two RMSNorms x (input, normalised output)
COMPUTE_PER_LAYER_H = 6  # x h elements in the compute dtype
COMPUTE_PER_LAYER_I = 4  # x i elements in the compute dtype
FP32_OUTSIDE_LAYERS = 4  # x h floats per token outside the layers
COMPILED_ACTIVATION_RATIO = 0.71
"""Activations saved with the layers compiled, as a share of the eager count (module docstring):
(55.0 - 30.4) GB measured over 16 sequences of 4096 tokens, against 16 x 4096 x 528 KB counted
(300m on an H200, `benchmarks/results/gpu.json`, 2026-12-04). Unmeasured for other presets."""


@dataclass(frozen=True)
class ModelCost:
    parameters: int
    """All parameters (embedding, layers, norms, head)."""
    flops_parameters: int
    """N of ``6N``: all but the input embedding (the head is included)."""
    flops_per_token: float
    """``6 N + 12 L d C`` (forward and backward)."""


def _preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise UserError(f"model.preset: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def model_cost(preset_name: str, *, vocab_size: int, context: int) -> ModelCost:
    """FLOPs per trained token of a preset (see the module docstring)."""
    preset = _preset(preset_name)
    parameters = parameter_count(preset, vocab_size)
    flops_parameters = parameters - vocab_size * preset.hidden
    attention = 12 * preset.layers * preset.heads * preset.head_dim * context
    return ModelCost(parameters, flops_parameters, 6 * flops_parameters + attention)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one micro-batch's training step, by what holds them."""

    micro_batch_size: int
    parameters: int
    gradients: int
    optimizer: int
    activations: int
    loss: int
    gathered: int = 0
    """FSDP: the all-gathered parameters and unsharded gradients of the units in use (module docstring)."""
    shards: int = 1
    """Devices the parameters, gradients and optimizer state are sharded over (1: not sharded)."""

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations + self.loss + self.gathered

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def activation_bytes_per_token(preset: ModelPreset, *, mixed_precision: bool, compiled: bool = False) -> int:
    """Bytes saved for backward per token (all layers and the rest), bf16 autocast or fp32; with
    the layers compiled, `COMPILED_ACTIVATION_RATIO` of the eager count."""
    compute = BF16 if mixed_precision else FP32
    h, i = preset.hidden, preset.intermediate
    per_layer = NORM_FP32_PER_LAYER * h * FP32 + (COMPUTE_PER_LAYER_H * h + COMPUTE_PER_LAYER_I * i) * compute
    eager = preset.layers * per_layer + FP32_OUTSIDE_LAYERS * h * FP32
    return math.ceil(eager * COMPILED_ACTIVATION_RATIO) if compiled else eager


def memory_estimate(
    preset_name: str,
    *,
    vocab_size: int,
    context: int,
    micro_batch_size: int,
    mixed_precision: bool,
    chunk_tokens: int = 4096,
    shards: int = 1,
    compiled: bool = False,
) -> MemoryEstimate:
    """The memory model of the module docstring for ``micro_batch_size`` sequences of ``context``
    on one device, the training state sharded over `shards` devices (FSDP; 1: whole), the layers
    compiled or eager."""
    preset = _preset(preset_name)
    parameters = parameter_count(preset, vocab_size)
    shard = -(-parameters // shards)  # ceil: FSDP pads the last rank's shard
    tokens = micro_batch_size * context
    loss = FP32 * vocab_size * preset.hidden + 2 * FP32 * min(chunk_tokens, tokens) * vocab_size
    gathered = 0
    if shards > 1:
        root = 2 * vocab_size * preset.hidden + preset.hidden  # embedding, head, final norm
        layer = (parameters - root) // preset.layers
        gathered = 2 * (FP32 * root + (BF16 if mixed_precision else FP32) * 2 * layer)
    return MemoryEstimate(
        micro_batch_size=micro_batch_size,
        parameters=WEIGHT_BYTES * shard,
        gradients=GRADIENT_BYTES * shard,
        optimizer=ADAMW_STATE_BYTES * shard,
        activations=tokens * activation_bytes_per_token(preset, mixed_precision=mixed_precision, compiled=compiled),
        loss=loss,
        gathered=gathered,
        shards=shards,
    )


def divisors_descending(batch_size: int) -> list[int]:
    return [d for d in range(batch_size, 0, -1) if batch_size % d == 0]


def largest_fitting_micro_batch(
    preset_name: str,
    *,
    vocab_size: int,
    context: int,
    batch_size: int,
    memory_bytes: float,
    mixed_precision: bool,
    headroom: float = MEMORY_HEADROOM,
    shards: int = 1,
    compiled: bool = False,
) -> MemoryEstimate:
    """The estimate of the largest divisor of `batch_size` whose step fits ``headroom * memory_bytes``
    (the training state sharded over `shards` devices).

    Raises:
        UserError: not even one sequence fits (naming the memory it needs and has).
    """
    for micro in divisors_descending(batch_size):
        estimate = memory_estimate(preset_name, vocab_size=vocab_size, context=context, micro_batch_size=micro,
                                   mixed_precision=mixed_precision, shards=shards, compiled=compiled)  # fmt: skip
        if estimate.total <= headroom * memory_bytes:
            return estimate
    raise UserError(
        f"optim.micro_batch_size: auto found no micro-batch that fits: one sequence of {context} tokens "
        f"needs about {estimate.total / 2**30:.1f} GiB, the device has {memory_bytes / 2**30:.1f} GiB "
        f"(x{headroom} headroom); use a smaller model.preset or data.context"
        + ("" if shards > 1 else ", or several processes with parallelism: fsdp")
    )


def default_utilisation(mfu: float | None = None, peak_tflops: float | None = None,
                        path=None, *, gpu: str | None = None) -> Utilisation:  # fmt: skip
    """The utilisation a plan assumes: `mfu` / `peak_tflops` when given (``--mfu``,
    ``--peak-tflops``), the rest from the device check's measurement of the shipped configuration
    (`train.gpu_results.measured_utilisation`: on the GPU `gpu` names, ``--gpu``, else on the
    slowest measured GPU, lowest MFU x peak) when there is one, else `DEFAULT_MFU` of an H100's dense
    bf16 peak.

    Raises:
        UserError: `gpu` names no GPU measured in the file, or several (also when both figures are given);
            a measured figure it uses that no device has, naming the measurement.
        FieldError: a given `mfu` or `peak_tflops` no device has (`check_utilisation`), also where no
            plan reads them (a sweep of an analytic objective): a command names its flag.
    """
    check_utilisation(1.0 if mfu is None else mfu, 1.0 if peak_tflops is None else peak_tflops)
    given = mfu is not None and peak_tflops is not None
    measured = measured_utilisation(path, gpu=gpu) if gpu is not None or not given else None
    if measured is None:
        measured = Utilisation(mfu=DEFAULT_MFU, peak_tflops=H100_BF16_PEAK_TFLOPS,
                               source="assumed: no GPU measurement in benchmarks/results/gpu.json")
    if mfu is None:
        source = measured.source
    elif given or measured.device is None:
        source = "given (--mfu)"
    else:  # the peak is still the measured GPU's: say so, as the MFU's source would
        source = f"given (--mfu); peak of {measured.device}"
    utilisation = Utilisation(mfu=measured.mfu if mfu is None else mfu,
                              peak_tflops=measured.peak_tflops if peak_tflops is None else peak_tflops,
                              source=source, device=None if given else measured.device)
    try:  # the given figures are checked above: one that fails here was measured (a damaged file)
        check_utilisation(utilisation.mfu, utilisation.peak_tflops)
    except FieldError as exc:
        raise FieldError(exc.field, exc.problem, where=measured.source) from None
    return utilisation


def check_utilisation(mfu: float, peak_tflops: float) -> None:
    """A FieldError of ``mfu`` or ``peak_tflops`` unless both can be a device's (``--mfu``,
    ``--peak-tflops`` where the command's flags gave them: `megadocs.cli.flags_named`).

    >>> check_utilisation(1.5, 989.0)
    Traceback (most recent call last):
    megadocs.errors.FieldError: mfu: expected a utilisation in (0, 1], got 1.5
    """
    if not 0 < mfu <= 1:
        raise FieldError("mfu", f"expected a utilisation in (0, 1], got {mfu}")
    if not peak_tflops > 0 or not math.isfinite(peak_tflops):
        raise FieldError("peak_tflops", f"expected a positive number of TFLOP/s, got {peak_tflops}")


def gpu_hours(tokens: float, flops_per_token: float, *, mfu: float, peak_tflops: float) -> float:
    """Device-hours of `tokens` trained tokens at utilisation `mfu` of a `peak_tflops` device."""
    check_utilisation(mfu, peak_tflops)
    return tokens * flops_per_token / (mfu * peak_tflops * 1e12) / 3600.0


def data_parallel_hours(single_hours: float, processes: int, scaling_efficiency: float) -> dict[str, float]:
    """Wall and GPU-hours of a run on `processes` devices at `scaling_efficiency` of linear scaling.

    Wall time is the one-device time divided by ``processes x scaling_efficiency``; GPU-hours are
    ``processes x wall hours`` (so ``single / scaling_efficiency`` for more than one process).

    Example:
        >>> data_parallel_hours(8.0, 4, 0.8)
        {'processes': 4, 'scaling_efficiency': 0.8, 'wall_hours': 2.5, 'gpu_hours': 10.0}
        >>> data_parallel_hours(8.0, 0, 0.8)
        Traceback (most recent call last):
        megadocs.errors.FieldError: processes: expected a positive number of processes per run, got 0

    Raises:
        FieldError: of the parameter (`megadocs train --dry-run` names its option: `flags_named`).
    """
    if processes < 1:
        raise FieldError("processes", f"expected a positive number of processes per run, got {processes}")
    if not 0 < scaling_efficiency <= 1:
        raise FieldError("scaling_efficiency", f"expected a share of linear scaling in (0, 1], got {scaling_efficiency}")
    efficiency = 1.0 if processes == 1 else scaling_efficiency
    wall = single_hours / (processes * efficiency)
    return {"processes": processes, "scaling_efficiency": efficiency, "wall_hours": wall, "gpu_hours": processes * wall}


OUT_OF_MEMORY_MESSAGES = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDA_ERROR_OUT_OF_MEMORY")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it wraps, is the device running out of memory.

    torch.compile wraps what fails inside it (Inductor's ``InductorError``, dynamo's
    ``BackendCompilerFailed``, a Triton launch's RuntimeError), so the cause chain and the messages
    are read, not only the type.

    >>> is_out_of_memory(RuntimeError("compile failed: CUDA out of memory. Tried to allocate 2 GiB"))
    True
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ == "OutOfMemoryError" or any(text in str(exc) for text in OUT_OF_MEMORY_MESSAGES):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def auto_micro_batch(model, *, preset_name: str, vocab_size: int, context: int, batch_size: int, device,
                     step_probe=None, shards: int = 1, compiled: bool = False) -> int:  # fmt: skip
    """The micro-batch for ``micro_batch_size: auto``: the memory model's largest fitting divisor,
    then, on CUDA, a probe: `step_probe(micro)` (a forward and backward of that many sequences)
    runs, and on out-of-memory the next smaller divisor is tried. The probe is never run in this
    repository's tests (no GPU here); on CPU the memory model alone decides.
    """
    import torch

    from train.device import available_memory_bytes

    mixed = device.type == "cuda"
    memory = available_memory_bytes(device)
    estimate = largest_fitting_micro_batch(preset_name, vocab_size=vocab_size, context=context,
                                           batch_size=batch_size, memory_bytes=memory, mixed_precision=mixed,
                                           shards=shards, compiled=compiled)  # fmt: skip
    if device.type != "cuda" or step_probe is None:
        return estimate.micro_batch_size
    optimizer_bytes = 2 * FP32 * sum(p.numel() for p in model.parameters()) // shards  # AdamW state is lazy
    for micro in [d for d in divisors_descending(batch_size) if d <= estimate.micro_batch_size]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        fitted = _probe_fits(step_probe, micro)
        model.zero_grad(set_to_none=True)
        if not fitted:
            gc.collect()  # the failed attempt's tensors, held by its traceback until now
            torch.cuda.empty_cache()
            continue
        peak = torch.cuda.max_memory_allocated(device) + optimizer_bytes
        if peak <= MEMORY_HEADROOM * torch.cuda.get_device_properties(device).total_memory:
            return micro
    raise UserError(f"optim.micro_batch_size: auto: not even 1 sequence of {context} tokens fits on {device}")


def _probe_fits(step_probe, micro: int) -> bool:
    """Run the probe; False on out-of-memory (also wrapped by torch.compile), anything else raises."""
    try:
        step_probe(micro)
    except Exception as exc:  # noqa: BLE001 - wrapped OOMs have many types; the rest is re-raised
        if not is_out_of_memory(exc):
            raise
        return False
    return True


def device_memory_plan(config, *, vocab_size: int, memory_bytes: float, processes: int) -> tuple[str, MemoryEstimate]:
    """(parallelism, per-device memory estimate) of `config` (a `train.config.RunConfig`) run by
    `processes` processes on devices of `memory_bytes`: the run's own choice
    (`train.parallel.choose_parallelism`) and its micro-batch (``auto``: the largest that fits)."""
    import torch

    from train.compile import compile_wanted
    from train.parallel import STRATEGIES, choose_parallelism

    data, optim = config.data, config.optim
    mixed = config.device != "cpu"
    compiled = mixed and compile_wanted(config.compile, torch.device("cuda"))  # the CUDA device it plans for
    parameters = parameter_count(_preset(config.model.preset), vocab_size)
    parallelism = choose_parallelism(config.parallelism, world_size=processes, parameters=parameters,
                                     device_memory_bytes=memory_bytes if mixed else None)  # fmt: skip
    shards = STRATEGIES[parallelism].state_shards(processes)
    if optim.micro_batch_size == AUTO:
        estimate = largest_fitting_micro_batch(config.model.preset, vocab_size=vocab_size, context=data.context,
                                               batch_size=optim.batch_size, memory_bytes=memory_bytes,
                                               mixed_precision=mixed, shards=shards, compiled=compiled)  # fmt: skip
    else:
        estimate = memory_estimate(config.model.preset, vocab_size=vocab_size, context=data.context,
                                   micro_batch_size=optim.micro_batch_size, mixed_precision=mixed,
                                   shards=shards, compiled=compiled)  # fmt: skip
    return parallelism, estimate


def window_counts(mixture) -> tuple[int, int]:
    """(real, synthetic) windows a `train.streams.StreamMixture` reads over the whole run: the sum of
    every step's ``batch_counts``, which telescopes to the windows before the last step's end
    (O(1), not O(steps): a paper-size sweep plans thousands of runs of ~10^5 steps each)."""
    return mixture.windows_before(mixture.total_steps)


@dataclass(frozen=True)
class RunCost:
    """What one training run costs, from its config and the sizes of its streams (`run_cost`).

    The one computation behind ``megadocs train --dry-run`` (`run_plan`, streams measured) and
    ``megadocs search plan`` (`search.plan`, streams measured or assumed): the same config and
    stream sizes give the same cost in both.
    """

    mixture: StreamMixture
    """Which windows each step reads (steps, windows per epoch)."""
    real_seen: int
    synthetic_seen: int
    tokens: int
    """Trained tokens: windows read x context."""
    model: ModelCost
    parallelism: str
    """The run's strategy on its processes (`train.parallel.choose_parallelism`)."""
    memory: MemoryEstimate
    """Per device and micro-batch (``auto``: the largest micro-batch that fits)."""
    gpu_hours: float
    """Device-hours over every process."""
    wall_hours: float
    processes: int
    scaling_efficiency: float
    """Share of linear scaling assumed (1 for one process)."""

    @property
    def steps(self) -> int:
        return self.mixture.total_steps

    @property
    def windows(self) -> WindowCounts:
        """The real stream's windows per epoch and the windows the run reads (as `RunMetrics` counts them)."""
        return WindowCounts(real_per_epoch=self.mixture.real_windows, real_seen=self.real_seen,
                            synthetic_seen=self.synthetic_seen)

    @property
    def flops_total(self) -> float:
        return self.model.flops_per_token * self.tokens


def run_cost(config, *, real_windows: int, synthetic_windows: int, vocab_size: int, mfu: float,
             peak_tflops: float, memory_bytes: float = DEFAULT_DEVICE_MEMORY_GIB * 2**30, processes: int = 1,
             scaling_efficiency: float = DEFAULT_SCALING_EFFICIENCY) -> RunCost:  # fmt: skip
    """The cost of `config` (a `train.config.RunConfig`) over streams of `real_windows` and
    `synthetic_windows` (windows -> stream mixture -> FLOPs -> GPU-hours -> memory; see the module docstring).

    Memory and GPU-hours are for a CUDA device (bf16 autocast) unless ``config.device`` is cpu;
    ``micro_batch_size: auto`` is resolved against `memory_bytes` by the memory model alone. Data
    parallel over `processes` devices: wall hours = one device's / (processes x
    `scaling_efficiency`), GPU-hours = processes x wall hours (`data_parallel_hours`).

    Raises:
        UserError: a setting that cannot work (naming its config field or option).
    """
    data = config.data
    mixture = stream_mixture(real_windows=real_windows, synthetic_windows=synthetic_windows,
                             batch_size=config.optim.batch_size, mixing_fraction=data.mixing_fraction,
                             real_epochs=data.real_epochs, seed=data.seed, synthetic_epochs=data.synthetic_epochs)  # fmt: skip
    real_seen, synthetic_seen = window_counts(mixture)
    tokens = (real_seen + synthetic_seen) * data.context
    model = model_cost(config.model.preset, vocab_size=vocab_size, context=data.context)
    # hours first: it checks `processes` (memory planning divides by it)
    hours = data_parallel_hours(gpu_hours(tokens, model.flops_per_token, mfu=mfu, peak_tflops=peak_tflops),
                                processes, scaling_efficiency)  # fmt: skip
    parallelism, memory = device_memory_plan(config, vocab_size=vocab_size, memory_bytes=memory_bytes,
                                             processes=processes)  # fmt: skip
    return RunCost(mixture=mixture, real_seen=real_seen, synthetic_seen=synthetic_seen, tokens=tokens, model=model,
                   parallelism=parallelism, memory=memory, gpu_hours=hours["gpu_hours"],
                   wall_hours=hours["wall_hours"], processes=hours["processes"],
                   scaling_efficiency=hours["scaling_efficiency"])  # fmt: skip


@dataclass(frozen=True)
class RunPlan:
    """The plan of ``megadocs train CONFIG --dry-run`` (`run_plan`): one run's `RunCost` with the
    config facts and the utilisation it rests on. :meth:`to_dict` is the ``--json`` object."""

    config_hash: str
    """The run's identity (`train.config.RunConfig.identity`)."""
    preset: str
    vocab_size: int
    context: int
    batch_size: int
    micro_batch_size_auto: bool
    """``optim.micro_batch_size: auto``: the memory model chose ``cost.memory.micro_batch_size``."""
    device_memory_bytes: float
    """The device memory ``auto`` fits the micro-batch into."""
    mixed_precision: bool
    """bf16 autocast (any device but cpu), which the memory count assumes."""
    cost: RunCost
    utilisation: Utilisation
    """The MFU and peak behind the GPU-hours, and where they come from."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``--dry-run --json`` (keys in this order; standard JSON values)."""
        cost, model = self.cost, self.cost.model
        return {
            "config_hash": self.config_hash,
            "preset": self.preset,
            "vocab_size": self.vocab_size,
            "context": self.context,
            "batch_size": self.batch_size,
            "micro_batch_size": cost.memory.micro_batch_size,
            "micro_batch_size_auto": self.micro_batch_size_auto,
            "steps": cost.steps,
            "tokens": cost.tokens,
            "windows": cost.windows.model_dump(),
            "parameters": model.parameters,
            "flops_parameters": model.flops_parameters,
            "flops_per_token": model.flops_per_token,
            "flops_total": cost.flops_total,
            "parallelism": cost.parallelism,
            "memory_per_micro_batch": cost.memory.to_dict(),
            "device_memory_bytes": self.device_memory_bytes,
            "mixed_precision": self.mixed_precision,
            "mfu": self.utilisation.mfu,
            "mfu_source": self.utilisation.source,
            "mfu_device": self.utilisation.device,
            "peak_tflops": self.utilisation.peak_tflops,
            "processes": cost.processes,
            "scaling_efficiency": cost.scaling_efficiency,
            "wall_hours": cost.wall_hours,
            "gpu_hours": cost.gpu_hours,
        }


def run_plan(
    config,
    *,
    utilisation: Utilisation | None = None,
    device_memory_gib: float = DEFAULT_DEVICE_MEMORY_GIB,
    processes: int = 1,
    scaling_efficiency: float = DEFAULT_SCALING_EFFICIENCY,
) -> RunPlan:
    """The plan of `megadocs train CONFIG --dry-run`; reads the store, trains nothing.

    The cost is `run_cost`'s over the streams as they are (measured from the store and pool).
    Evaluation is not counted in the GPU-hours (it is forward-only over ``eval.val_windows``).
    MFU and peak are `utilisation`'s (default: `default_utilisation`).
    """
    from train.data import RunData

    opened = RunData.open(config)  # as the run opens it: a plan for a run refused at its start is no plan
    streams = opened.streams
    utilisation = utilisation or default_utilisation()
    data, optim = config.data, config.optim
    memory_bytes = device_memory_gib * 2**30
    cost = run_cost(config, real_windows=streams.mixture.real_windows,
                    synthetic_windows=streams.mixture.synthetic_windows,
                    vocab_size=streams.vocab_size, mfu=utilisation.mfu, peak_tflops=utilisation.peak_tflops,
                    memory_bytes=memory_bytes, processes=processes, scaling_efficiency=scaling_efficiency)  # fmt: skip
    return RunPlan(config_hash=opened.identity(config), preset=config.model.preset, vocab_size=streams.vocab_size,
                   context=data.context, batch_size=optim.batch_size,
                   micro_batch_size_auto=optim.micro_batch_size == AUTO, device_memory_bytes=memory_bytes,
                   mixed_precision=config.device != "cpu", cost=cost, utilisation=utilisation)  # fmt: skip


def format_run_plan(plan: RunPlan) -> str:
    """The human-readable form of `run_plan`."""
    cost, model, memory, windows = plan.cost, plan.cost.model, plan.cost.memory, plan.cost.windows
    utilisation = plan.utilisation
    gib = 2**30
    micro = f"{memory.micro_batch_size}" + (" (auto)" if plan.micro_batch_size_auto else "")
    lines = [
        f"run {plan.config_hash}: {plan.preset}, vocabulary {plan.vocab_size:,}, context {plan.context}",
        f"steps            {cost.steps:,} x batch {plan.batch_size} (micro-batch {micro})",
        f"tokens           {cost.tokens:,}",
        f"windows          real {windows.real_seen:,} ({windows.real_per_epoch:,} per epoch), "
        f"synthetic {windows.synthetic_seen:,}",
        f"parameters       {model.parameters:,} (N for 6N: {model.flops_parameters:,})",
        f"FLOPs per token  {model.flops_per_token:.4g} (6N + attention); total {cost.flops_total:.4g}",
        f"memory           {memory.total / gib:.2f} GiB per device and micro-batch (activations "
        f"{memory.activations / gib:.2f}, weights+grads+AdamW "
        f"{(memory.parameters + memory.gradients + memory.optimizer) / gib:.2f}"
        + (f" (1/{memory.shards} shard), gathered {memory.gathered / gib:.2f}" if memory.shards > 1 else "")
        + f", loss {memory.loss / gib:.2f})",
        f"parallelism      {cost.parallelism}",
        f"GPU-hours        {cost.gpu_hours:.4g} at MFU {utilisation.mfu} of {utilisation.peak_tflops} TFLOP/s "
        f"({utilisation.source})",
        f"wall hours       {cost.wall_hours:.4g} on {cost.processes} process(es)"
        + (f" at {cost.scaling_efficiency:.0%} scaling efficiency" if cost.processes > 1 else ""),
    ]
    return "\n".join(lines) + "\n"
