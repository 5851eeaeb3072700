"""`train.plan`: FLOPs, the memory model (checked against torch's saved tensors), micro-batch auto,
and `megadocs train CONFIG --dry-run`, checked against hand computation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import yaml

from megadocs.cli import main
from megadocs.errors import UserError
from tests.train.test_loop import make_config
from train.loss import next_token_loss
from train.model import PRESETS, build_model
from train.plan import (
    activation_bytes_per_token,
    largest_fitting_micro_batch,
    memory_estimate,
    model_cost,
)
from train.store import TokenStore

MEMORY_TOLERANCE = 0.10  # the activation count may be off by this share of what torch saves


def test_flops_per_token_is_6n_plus_attention_with_the_head_in_n():
    preset = PRESETS["tiny-1m"]  # hidden 128, intermediate 384, 4 layers, 2 heads of 64
    vocab, context = 512, 64
    layer = 4 * 128 * 128 + 3 * 128 * 384 + 2 * 128
    total = 4 * layer + 2 * vocab * 128 + 128
    cost = model_cost("tiny-1m", vocab_size=vocab, context=context)
    assert cost.parameters == total == preset.params
    assert cost.flops_parameters == total - vocab * 128  # the head counts, the input embedding does not
    assert cost.flops_per_token == 6 * (total - vocab * 128) + 12 * 4 * 128 * context


def _saved_activation_bytes(preset: str, batch: int, context: int, vocab: int) -> int:
    """Bytes autograd keeps for backward (unique storages, parameters excluded), fp32 on CPU."""
    model = build_model(preset, vocab_size=vocab, context=context, seed=0)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, vocab, (batch, context), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        next_token_loss(model, ids, implementation="chunked", chunk_tokens=4096)
    return sum(storages.values())


@pytest.mark.parametrize(("preset", "batch", "context"), [("tiny-1m", 2, 128), ("tiny-8m", 1, 256)])
def test_activation_memory_model_matches_what_torch_saves_for_backward(preset, batch, context):
    vocab = 512
    measured = _saved_activation_bytes(preset, batch, context, vocab)
    estimate = memory_estimate(preset, vocab_size=vocab, context=context, micro_batch_size=batch,
                               mixed_precision=False)
    head_gradient = 4 * vocab * PRESETS[preset].hidden  # kept by the chunked loss, counted under `loss`
    predicted = estimate.activations + head_gradient
    assert abs(predicted - measured) <= MEMORY_TOLERANCE * measured, (predicted, measured)


def test_memory_estimate_parts_and_scaling():
    small = memory_estimate("300m", vocab_size=128_256, context=4096, micro_batch_size=1, mixed_precision=True)
    large = memory_estimate("300m", vocab_size=128_256, context=4096, micro_batch_size=8, mixed_precision=True)
    assert small.parameters == small.gradients == 4 * PRESETS["300m"].params
    assert small.optimizer == 8 * PRESETS["300m"].params
    assert large.activations == 8 * small.activations  # linear in sequences
    assert large.loss == small.loss  # one chunk of logits whatever the micro-batch
    fp32 = memory_estimate("300m", vocab_size=128_256, context=4096, micro_batch_size=1, mixed_precision=False)
    assert fp32.activations > small.activations


def test_auto_micro_batch_is_the_largest_divisor_that_fits():
    def total(micro):
        return memory_estimate("300m", vocab_size=128_256, context=4096, micro_batch_size=micro,
                               mixed_precision=True).total

    budget = total(16) / 0.9 * 1.001  # 16 fits (with the 0.9 headroom), nothing larger does
    chosen = largest_fitting_micro_batch("300m", vocab_size=128_256, context=4096, batch_size=64,
                                         memory_bytes=budget, mixed_precision=True)
    assert chosen.micro_batch_size == 16
    chosen = largest_fitting_micro_batch("300m", vocab_size=128_256, context=4096, batch_size=48,
                                         memory_bytes=budget, mixed_precision=True)
    assert chosen.micro_batch_size == 16  # 24 would not fit; 16 divides 48
    with pytest.raises(UserError, match="optim.micro_batch_size: auto found no micro-batch"):
        largest_fitting_micro_batch("300m", vocab_size=128_256, context=4096, batch_size=64,
                                    memory_bytes=total(1) / 2, mixed_precision=True)


def test_micro_batch_size_is_execution_only(small_store):
    from megadocs.config import parse_config
    from train.config import RunConfig

    def config(micro):
        return parse_config({"data": {"store": str(small_store)},
                             "optim": {"batch_size": 64, "micro_batch_size": micro}}, RunConfig)

    assert config("auto").identity() == config(16).identity() == config(1).identity()
    with pytest.raises(UserError, match="micro_batch_size"):
        config("most")


def test_auto_micro_batch_trains_on_cpu(small_store, tmp_path, one_thread):
    from train.loop import run

    config = make_config(small_store, optim__micro_batch_size="auto", optim__batch_size=16,
                         eval__val_windows=8)
    metrics = run(config, tmp_path / "run")
    assert metrics.status == "completed"
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["micro_batch_size"] == "auto"  # the saved config keeps what the user wrote


def test_dry_run_matches_hand_computation(small_store, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"store": str(small_store), "context": 64, "real_epochs": 3},
        "model": {"preset": "tiny-1m"}, "optim": {"batch_size": 8, "micro_batch_size": 4},
    }))
    assert main(["train", str(path), "--dry-run", "--json", "--mfu", "0.5", "--peak-tflops", "100"]) == 0
    plan = json.loads(capsys.readouterr().out)
    store = TokenStore.open(small_store)
    lengths = store.split("train").lengths
    windows = int((lengths.sum() + len(lengths)) // 64)  # EOS-joined stream cut into windows
    vocab, hidden = store.vocab_size, 128
    assert plan["windows"] == {"real_per_epoch": windows, "real_seen": 3 * windows, "synthetic_seen": 0}
    assert plan["steps"] == math.ceil(3 * windows / 8)
    assert plan["tokens"] == 3 * windows * 64
    params = PRESETS["tiny-1m"].params + 2 * hidden * (vocab - 512)
    assert plan["parameters"] == params
    flops = 6 * (params - vocab * hidden) + 12 * 4 * 128 * 64
    assert plan["flops_per_token"] == flops
    assert plan["gpu_hours"] == pytest.approx(3 * windows * 64 * flops / (0.5 * 100e12) / 3600, rel=1e-12)
    assert plan["micro_batch_size"] == 4 and plan["memory_per_micro_batch"]["micro_batch_size"] == 4
    assert not (tmp_path / "runs").exists()
    assert main(["train", str(path), "--dry-run"]) == 0  # the text form
    assert f"steps            {plan['steps']:,} x batch 8" in capsys.readouterr().out


def test_dry_run_json_is_the_dict_run_plan_returned_before_it_was_typed(small_store, tmp_path, capsys):
    """`--dry-run --json` prints `RunPlan.to_dict()`: byte for byte the dict `run_plan` built until
    issue 29 typed it, rebuilt here from the record's `RunCost` (FSDP on 4 processes, so that the
    memory's shards and the scaling efficiency are not their defaults)."""
    from train.plan import default_utilisation, run_plan
    from train.train_cli import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"store": str(small_store), "context": 64, "real_epochs": 2},
        "model": {"preset": "tiny-1m"}, "optim": {"batch_size": 8, "micro_batch_size": "auto"},
        "parallelism": "fsdp",
    }))
    assert main(["train", str(path), "--dry-run", "--json", "--mfu", "0.5", "--peak-tflops", "100",
                 "--processes", "4", "--memory-gib", "2"]) == 0
    printed = capsys.readouterr().out
    config = load_run_config(path)
    utilisation = default_utilisation(0.5, 100.0)
    plan = run_plan(config, utilisation=utilisation, device_memory_gib=2.0, processes=4)
    cost, model = plan.cost, plan.cost.model
    before = {
        "config_hash": config.identity(), "preset": "tiny-1m", "vocab_size": TokenStore.open(small_store).vocab_size,
        "context": 64, "batch_size": 8, "micro_batch_size": cost.memory.micro_batch_size,
        "micro_batch_size_auto": True, "steps": cost.steps, "tokens": cost.tokens,
        "windows": {"real_per_epoch": cost.mixture.real_windows, "real_seen": cost.real_seen,
                    "synthetic_seen": cost.synthetic_seen},
        "parameters": model.parameters, "flops_parameters": model.flops_parameters,
        "flops_per_token": model.flops_per_token, "flops_total": model.flops_per_token * cost.tokens,
        "parallelism": cost.parallelism, "memory_per_micro_batch": {**dataclasses.asdict(cost.memory),
                                                                    "total": cost.memory.total},
        "device_memory_bytes": 2.0 * 2**30, "mixed_precision": True, "mfu": 0.5, "mfu_source": utilisation.source,
        "mfu_device": None, "peak_tflops": 100.0, "processes": 4, "scaling_efficiency": cost.scaling_efficiency,
        "wall_hours": cost.wall_hours, "gpu_hours": cost.gpu_hours,
    }  # fmt: skip
    assert printed == json.dumps(before, indent=1, allow_nan=False) + "\n"
    assert (cost.parallelism, cost.memory.shards, cost.scaling_efficiency) == ("fsdp", 4, 0.9)


def test_dry_run_takes_the_mfu_of_the_gpu_named(small_store, tmp_path, monkeypatch, capsys):
    """``--gpu`` (also after CONFIG.yaml) picks the measured GPU; without it the plan takes the lowest
    MFU measured and says which GPU and what the others measured."""
    import train.gpu_results
    from tests.train.test_gpu_results import H100, H200, write_gpu_results

    two_gpus = write_gpu_results(tmp_path / "gpu.json", {H200: 0.52, None: 0.441})  # the file's own: the H100
    monkeypatch.setattr(train.gpu_results, "GPU_RESULTS", two_gpus)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"store": str(small_store), "context": 64}}))
    assert main(["train", str(path), "--dry-run"]) == 0
    assert (f"at MFU 0.441 of 989.0 TFLOP/s (measured on {H100} (300m, context 4096, micro-batch 32; "
            f"benchmarks/results/gpu.json, 2026-12-05); the slowest of the GPUs measured (also {H200} MFU 0.520; "
            "--gpu picks one))") in capsys.readouterr().out  # fmt: skip
    assert main(["train", str(path), "--dry-run", "--json", "--gpu", "H200"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["mfu"], plan["mfu_device"]) == (0.52, H200)
    assert main(["train", "--gpu", "nvidia", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --gpu nvidia: matches several GPUs measured in "
                                               f"benchmarks/results/gpu.json ({H200}, {H100}); give more of one's name")


def test_dry_run_refuses_a_bad_mfu_in_one_line(small_store, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"store": str(small_store), "context": 64}}))
    assert main(["train", str(path), "--dry-run", "--mfu", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --mfu: expected a utilisation in (0, 1], got 1.5"


def test_activation_bytes_halve_only_the_compute_dtype_part():
    preset = PRESETS["tiny-1m"]
    fp32 = activation_bytes_per_token(preset, mixed_precision=False)
    bf16 = activation_bytes_per_token(preset, mixed_precision=True)
    norms = preset.layers * 4 * preset.hidden * 4 + 4 * preset.hidden * 4  # stays fp32
    assert fp32 - bf16 == (fp32 - norms) // 2


def test_dry_run_counts_the_processes_of_a_data_parallel_run(small_store, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"store": str(small_store), "context": 64},
                                    "optim": {"batch_size": 8, "micro_batch_size": 4}}))
    assert main(["train", str(path), "--dry-run", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert (single["processes"], single["scaling_efficiency"]) == (1, 1.0)
    assert single["wall_hours"] == single["gpu_hours"]
    assert main(["train", str(path), "--dry-run", "--json", "--processes", "4", "--scaling-efficiency", "0.8"]) == 0
    four = json.loads(capsys.readouterr().out)
    assert four["wall_hours"] == pytest.approx(single["gpu_hours"] / (4 * 0.8), rel=1e-12)
    assert four["gpu_hours"] == pytest.approx(4 * four["wall_hours"], rel=1e-12)
    assert main(["train", str(path), "--dry-run", "--processes", "4"]) == 0
    assert "on 4 process(es) at 90% scaling efficiency" in capsys.readouterr().out
    assert main(["train", str(path), "--dry-run", "--processes", "2", "--scaling-efficiency", "0"]) == 2
    assert "--scaling-efficiency: expected a share of linear scaling in (0, 1], got 0" in capsys.readouterr().err


@pytest.mark.parametrize("preset", list(PRESETS))
def test_dry_run_refuses_zero_processes_for_every_preset(small_store, tmp_path, capsys, preset):
    """--processes 0 is one line for every preset (an FSDP-sized preset divided by it before the check)."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"store": str(small_store), "context": 64}, "model": {"preset": preset},
                                    "optim": {"batch_size": 8, "micro_batch_size": 4}}))
    assert main(["train", str(path), "--dry-run", "--processes", "0"]) == 2
    assert "--processes: expected a positive number of processes per run, got 0" in capsys.readouterr().err


def test_a_bad_data_parallel_setting_names_the_parameter_in_python_and_the_flag_on_the_command_line(
        small_store, tmp_path, capsys):  # fmt: skip
    """train.plan.data_parallel_hours named --processes (a flag) to a caller without a command line
    (run_cost, search plan's RunCoster); each of its parameters that an option of `megadocs train` sets
    is named as a parameter there, and as the flag typed by `train --dry-run`."""
    import inspect

    from megadocs.cli import option_flags
    from megadocs.errors import FieldError
    from tests.commands import command_parser
    from train.plan import data_parallel_hours

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"store": str(small_store), "context": 64},
                                    "optim": {"batch_size": 8, "micro_batch_size": 4}}))
    flags = option_flags(command_parser("train"))
    named = [name for name in inspect.signature(data_parallel_hours).parameters if name in flags]
    assert named == ["processes", "scaling_efficiency"]
    for name in named:
        settings = {"processes": 2, "scaling_efficiency": 0.9, name: 0}
        with pytest.raises(FieldError, match=rf"^{name}: expected .*, got 0$"):
            data_parallel_hours(1.0, **settings)
        assert main(["train", str(path), "--dry-run", flags[name], "0", *(["--processes", "2"] * (name != "processes"))]) == 2
        assert capsys.readouterr().err.startswith(f"error: {flags[name]}: expected ")


def test_dry_run_refuses_an_extra_store_of_another_tokenizer(small_store, micro_store, tmp_path, capsys):
    """As training does at its start: a plan of a run that would be refused is no plan."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"store": str(small_store), "context": 64},
                                    "eval": {"extra": {"other": {"store": str(micro_store)}}},
                                    "optim": {"batch_size": 8, "micro_batch_size": 4}}))
    assert main(["train", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: eval.extra.other.store: {micro_store} has tokenizer_hash") and err.count("\n") == 1


def test_out_of_memory_is_recognised_through_torch_compile_s_wrappers():
    from train.plan import _probe_fits, is_out_of_memory

    def wrapped_oom(micro):  # what Inductor raises around an allocation failure inside a compiled region
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except torch.OutOfMemoryError as exc:
            raise RuntimeError("backend='inductor' raised: see above") from exc

    def other_error(micro):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert _probe_fits(wrapped_oom, 4) is False
    assert _probe_fits(lambda micro: None, 4) is True
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # not an OOM: not swallowed
        _probe_fits(other_error, 4)


def test_compiled_memory_estimate_brackets_the_peaks_measured_on_a_gpu():
    """The memory model with the layers compiled (the CUDA default) against the peaks the device
    check measured (`benchmarks/results/gpu.json`, read through `train.gpu_results`): never below
    a measured peak (auto must not pick a micro-batch that runs out of memory), at most 15% above
    (else it picks a smaller, slower one: the eager count was 43-45% above)."""
    from train.gpu_results import GPU_RESULTS, GpuResults

    if not GPU_RESULTS.is_file():
        pytest.skip("no device-check results in this checkout")
    rows = [row for row in GpuResults.model_validate(json.loads(GPU_RESULTS.read_text())).train
            if row.compile == "regional"]  # fmt: skip
    assert rows, "the device check measured no compiled training row"
    for row in rows:
        estimate = memory_estimate(row.preset, vocab_size=row.model_extra["vocab"], context=row.context,
                                   micro_batch_size=row.micro_batch, mixed_precision=True, compiled=True)  # fmt: skip
        eager = memory_estimate(row.preset, vocab_size=row.model_extra["vocab"], context=row.context,
                                micro_batch_size=row.micro_batch, mixed_precision=True)  # fmt: skip
        measured = row.peak_mem_gb * 1e9
        assert measured <= estimate.total <= 1.15 * measured, (row.micro_batch, estimate.total / 1e9, row.peak_mem_gb)
        assert estimate.activations < eager.activations


def test_dry_run_opens_the_token_store_once(tiny_store, tmp_path, monkeypatch, capsys):
    """`--dry-run` of a synthetic run opened the store three times (the tokenizer check, the streams,
    the pool's real documents, which the store's train split serves) and read its train offsets
    twice: one open now, passed along, and one read of each split's offsets (spies: the real
    functions run)."""
    import numpy as np

    from tests.pools import write_pool

    pool = write_pool(tmp_path / "pool", tiny_store, "rephrase", 1, lambda k, doc_id, text, i: {"text": f"on {doc_id}"})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"store": str(tiny_store), "context": 64, "mixing_fraction": 0.5,
                 "synthetic": {"pool": str(pool), "algorithm": "stitched", "g": 1}},
        "model": {"preset": "tiny-1m"}, "optim": {"batch_size": 8, "micro_batch_size": 8},
    }))
    opened, loaded = [], []
    open_store, load = TokenStore.open.__func__, np.load
    monkeypatch.setattr(TokenStore, "open", classmethod(lambda cls, where: opened.append(str(where)) or open_store(cls, where)))
    monkeypatch.setattr(np, "load", lambda file, *args, **kwargs: loaded.append(str(file)) or load(file, *args, **kwargs))
    assert main(["train", str(path), "--dry-run"]) == 0
    assert "windows          real" in capsys.readouterr().out
    assert opened == [str(tiny_store)]
    offsets = [name for name in loaded if name.startswith(str(tiny_store))]
    assert sorted(offsets) == sorted(set(offsets)), offsets  # no split read twice
