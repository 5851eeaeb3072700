"""`train.sharding` pieces that need no process group: the DDP/FSDP choice, the optimizer-state
re-keying between torch's indices and parameter names, and the per-device memory of a sharded
plan (checked by hand). The sharded runs themselves (2 gloo processes) are in test_distributed.py."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from megadocs.cli import main
from train.loop import param_groups
from train.model import PRESETS, build_model, parameter_count
from train.parallel import FSDP_MIN_PARAMETERS, choose_parallelism
from train.plan import memory_estimate
from train.sharding import optimizer_state_by_index, optimizer_state_by_name

GIB = 2**30


def test_auto_shards_large_presets_and_what_does_not_fit_only_with_several_processes():
    large, small = PRESETS["1.5b"].params, PRESETS["300m"].params
    assert large >= FSDP_MIN_PARAMETERS > small
    assert choose_parallelism("auto", world_size=2, parameters=large) == "fsdp"
    assert choose_parallelism("auto", world_size=2, parameters=small) == "ddp"
    assert choose_parallelism("auto", world_size=1, parameters=large) == "single"
    assert choose_parallelism("fsdp", world_size=1, parameters=small) == "single"  # one process: nothing to shard
    assert choose_parallelism("fsdp", world_size=4, parameters=small) == "fsdp"
    assert choose_parallelism("ddp", world_size=4, parameters=large) == "ddp"
    # 300m: 16 bytes x 3e8 = 4.8 GB of state: sharded on a 4 GiB device, replicated on an 80 GiB one
    assert choose_parallelism("auto", world_size=2, parameters=small, device_memory_bytes=4 * GIB) == "fsdp"
    assert choose_parallelism("auto", world_size=2, parameters=small, device_memory_bytes=80 * GIB) == "ddp"


def _stepped_optimizer():
    model = build_model("tiny-1m", vocab_size=64, context=16, seed=0, device=torch.device("cpu"))
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    ids = torch.randint(0, 64, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return model, optimizer


def test_optimizer_state_rekeys_by_name_and_back_to_torchs_own_layout():
    model, optimizer = _stepped_optimizer()
    by_index = optimizer.state_dict()
    by_name = optimizer_state_by_name(by_index)
    names = [name for name, _ in model.named_parameters()]
    assert sorted(by_name["state"]) == sorted(names)  # every parameter's moments, under its own name
    first = by_name["param_groups"][0]["params"][0]
    assert torch.equal(by_name["state"][first]["exp_avg"], by_index["state"][0]["exp_avg"])
    back = optimizer_state_by_index(by_name)
    assert back["param_groups"] == by_index["param_groups"]
    assert list(back["state"]) == list(by_index["state"])
    for number, state in by_index["state"].items():
        assert all(torch.equal(state[key], back["state"][number][key]) for key in state)
    # what torch.distributed.checkpoint's name-keyed form loads into a plain optimizer
    fresh = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    fresh.load_state_dict(back)
    assert torch.equal(fresh.state_dict()["state"][3]["exp_avg_sq"], by_index["state"][3]["exp_avg_sq"])


def test_optimizer_state_without_names_is_refused():
    model, _ = _stepped_optimizer()
    plain = torch.optim.AdamW(model.parameters(), lr=1e-3).state_dict()
    with pytest.raises(ValueError, match="group 0: no parameter names"):
        optimizer_state_by_name(plain)


def test_sharded_memory_estimate_by_hand():
    vocab, context, micro, shards = 128_256, 4096, 2, 8
    preset = PRESETS["1.5b"]
    params = parameter_count(preset, vocab)
    whole = memory_estimate("1.5b", vocab_size=vocab, context=context, micro_batch_size=micro, mixed_precision=True)
    sharded = memory_estimate("1.5b", vocab_size=vocab, context=context, micro_batch_size=micro,
                              mixed_precision=True, shards=shards)
    shard = -(-params // shards)
    assert (sharded.parameters, sharded.gradients, sharded.optimizer) == (4 * shard, 4 * shard, 8 * shard)
    assert whole.parameters + whole.gradients + whole.optimizer == 16 * params  # ~24.7 GB replicated
    root = 2 * vocab * 1536 + 1536
    layer = 2 * 1536 * 1536 + 2 * 1536 * 768 + 3 * 1536 * 5376 + 2 * 1536  # q,o + k,v (8 kv heads) + mlp + norms
    assert sharded.gathered == 2 * (4 * root + 2 * 2 * layer)  # params and grads: the root fp32, 2 layers bf16
    assert (sharded.activations, sharded.loss) == (whole.activations, whole.loss)  # per-rank micro-batch
    assert sharded.total == whole.total - 16 * params + 16 * shard + sharded.gathered
    assert whole.gathered == 0 and whole.shards == 1


def _plan(path, *args, capsys) -> dict:
    assert main(["train", str(path), "--dry-run", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_dry_run_shards_the_state_under_fsdp_and_replicates_it_under_ddp(small_store, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"store": str(small_store), "context": 64},
                                    "model": {"preset": "tiny-1m"}, "device": "cpu",
                                    "optim": {"batch_size": 8, "micro_batch_size": 4}}))
    single = _plan(path, capsys=capsys)
    ddp = _plan(path, "--processes", "4", capsys=capsys)  # auto: a small model is replicated
    assert (single["parallelism"], ddp["parallelism"]) == ("single", "ddp")
    assert ddp["memory_per_micro_batch"] == single["memory_per_micro_batch"]
    path.write_text(path.read_text() + "parallelism: fsdp\n")
    fsdp = _plan(path, "--processes", "4", capsys=capsys)
    assert fsdp["parallelism"] == "fsdp" and fsdp["config_hash"] == single["config_hash"]
    memory, whole = fsdp["memory_per_micro_batch"], single["memory_per_micro_batch"]
    params = single["parameters"]
    assert memory["shards"] == 4 and memory["optimizer"] == 8 * -(-params // 4)
    hidden, layers, vocab = 128, 4, single["vocab_size"]
    root = 2 * vocab * hidden + hidden
    assert memory["gathered"] == 2 * 4 * (root + 2 * (params - root) // layers)  # fp32 on CPU
    assert memory["activations"] == whole["activations"]
    assert main(["train", str(path), "--dry-run", "--processes", "4"]) == 0
    text = capsys.readouterr().out
    assert "(1/4 shard), gathered" in text and "parallelism      fsdp" in text


def test_cuda_mixed_precision_policy_on_cpu_autocast_keeps_fp32_residual_and_matches_one_model(tmp_path):
    """The CUDA policy (bf16 layer gathers, fp32 root and reduce, uncast layer inputs), run with
    gloo under CPU bf16 autocast (CUDA itself is not available here): the residual stream entering
    a layer stays fp32, gradients and master weights stay fp32, and loss and gradient norm equal an
    unsharded model's under the same autocast to bf16 precision."""
    import os
    import subprocess
    from pathlib import Path

    from tests.train.test_distributed import TORCHRUN

    done = subprocess.run(
        [*TORCHRUN, "-m", "tests.train.fsdp_mixed_worker"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["layer_input"] == "torch.float32"
    assert result["grads"] == ["torch.float32"] and result["master"] == "torch.float32"
    assert result["loss"] == pytest.approx(result["reference_loss"], rel=1e-3)
    assert result["norm"] == pytest.approx(result["reference_norm"], rel=1e-3)  # measured ~1e-5


def test_a_full_state_snapshot_shares_no_tensor_with_the_live_optimizer():
    """get_state_dict hands back AdamW's CPU step counters as they are; the checkpoint, written in
    the background, must not change with the next update."""
    from train.sharding import _unshared

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.ones(3)
    optimizer.step()
    live = optimizer.state[weight]
    snapshot = _unshared({"state": {"w": dict(live)}, "param_groups": [{"lr": 0.1}]}, optimizer)
    optimizer.step()
    assert float(snapshot["state"]["w"]["step"]) == 1.0 and float(live["step"]) == 2.0
    assert snapshot["state"]["w"]["exp_avg"] is not live["exp_avg"]
