"""Fully sharded data parallelism (FSDP2) for the presets whose weights, gradients and AdamW state
do not fit one device: the mechanics behind `train.parallel.Sharded` (which also says when it is
chosen over DDP).

Each decoder layer is one FSDP unit, the root (the loss module: embedding, final norm, head) the
last; parameters, gradients and optimizer moments live as 1/N shards (DTensors) on each of the N
ranks and a unit's full parameters are all-gathered just before its forward and backward. On CUDA
the layers' parameters are gathered in bf16 (what autocast would cast them to anyway) and
gradients are reduce-scattered in fp32 (the fp32 master weights stay sharded); the root's
(embedding, head) are gathered in fp32 and layer inputs are not cast, so the residual stream stays
fp32 as in a single-process autocast run (only the norms' scales are rounded to bf16). On CPU
(gloo) everything stays fp32: a CPU run is one process's arithmetic up to reduction order.

Gradient accumulation: FSDP2's default, a reduce-scatter after every micro-batch into the sharded
fp32 gradients (torchtitan's default too). Skipping it (``set_requires_gradient_sync(False)``)
would keep a whole unsharded fp32 gradient per rank across micro-batches: the memory FSDP is
there to save. `torch.nn.utils.clip_grad_norm_` on the DTensor gradients computes the global norm
across shards (a Replicate DTensor on every rank).

Checkpoints stay one file in the single-process format (`train.checkpoint`): the full model and
optimizer state are gathered to rank 0's host memory (`full_state_dicts`) and the optimizer state
is re-keyed from parameter names to torch's indices (`optimizer_state_by_index`), so a checkpoint
resumes single-process, DDP or FSDP on any number of ranks. Loading, every rank reads the file
(memory-mapped: the ranks of a node share its pages), loads the model before sharding, and hands
the optimizer state to ``set_optimizer_state_dict``, which keeps each rank's shard.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "shard_model",
    "full_state_dicts",
    "full_model_state",
    "load_full_optimizer_state",
    "optimizer_state_by_index",
    "optimizer_state_by_name",
]


def shard_model(root: torch.nn.Module, layers: torch.nn.ModuleList, *, device: torch.device,
                mixed_precision: bool, compile_layers: bool = False) -> None:  # fmt: skip
    """Shard `root` in place over all ranks: one FSDP unit per decoder layer of `layers`, then the
    root for what is left (embedding, final norm, head). Call it before building the optimizer:
    the parameters become DTensors (new Parameter objects, same names).

    The last layer is not resharded after forward (its backward comes first, at once); the root
    never is (FSDP2's rule). `compile_layers` compiles each layer in place before sharding
    (`train.compile`, torchtitan's order: the FSDP hooks stay outside the compiled graphs).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from train.compile import compile_layers as compile_each

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    layer_policy = root_policy = MixedPrecisionPolicy()  # fp32 throughout
    if mixed_precision:  # the residual stream stays fp32: no cast of layer inputs, an fp32 root
        layer_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                            cast_forward_inputs=False)  # fmt: skip
        root_policy = MixedPrecisionPolicy(reduce_dtype=torch.float32)
    if compile_layers:
        compile_each(layers)  # in place, FQNs kept; dynamo leaves FSDP2's hooks eager (skip_fsdp_hooks)
    for index, layer in enumerate(layers):
        fully_shard(layer, mesh=mesh, mp_policy=layer_policy, reshard_after_forward=index < len(layers) - 1)
    fully_shard(root, mesh=mesh, mp_policy=root_policy)


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model state, optimizer state by index) unsharded in rank 0's host memory; empty dicts on
    the other ranks. Collective: every rank calls it at the same point."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer, options=_full_options())
    if not model_state:  # not rank 0
        return {}, {}
    return model_state, optimizer_state_by_index(_unshared(optimizer_state, optimizer))


def _unshared(value: Any, optimizer: torch.optim.Optimizer) -> Any:
    """`value` with copies of the tensors it shares with the live optimizer state.

    ``get_state_dict`` returns host tensors of that state as they are, not copies (AdamW's ``step``
    counters when they live on the CPU: gloo runs, unfused AdamW). The checkpoint is written in the
    background while training goes on, and the next update would change them under it.
    """
    live = {getattr(tensor, "_local_tensor", tensor).untyped_storage().data_ptr()
            for state in optimizer.state.values() for tensor in state.values() if isinstance(tensor, torch.Tensor)}

    def copy(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            return item.clone() if item.untyped_storage().data_ptr() in live else item
        if isinstance(item, dict):
            return {key: copy(entry) for key, entry in item.items()}
        if isinstance(item, list):
            return [copy(entry) for entry in item]
        return item

    return copy(value)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded model state in rank 0's host memory (empty elsewhere); collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                              state_by_index: dict[str, Any]) -> None:  # fmt: skip
    """Give each rank its shard of a checkpoint's (unsharded, index-keyed) optimizer state.
    Every rank passes the full state; collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optimizer_state_by_name(state_by_index),
                             options=StateDictOptions(full_state_dict=True))  # fmt: skip


def optimizer_state_by_index(state_by_name: dict[str, Any]) -> dict[str, Any]:
    """torch's ``Optimizer.state_dict()`` layout (parameters numbered in group order) from the
    name-keyed one of ``torch.distributed.checkpoint.state_dict``.

    Example:
        >>> optimizer_state_by_index({"state": {"b": {"step": 1}},
        ...                           "param_groups": [{"lr": 0.1, "params": ["a", "b"]}]})
        {'state': {1: {'step': 1}}, 'param_groups': [{'lr': 0.1, 'params': [0, 1]}]}
    """
    index: dict[str, int] = {}
    groups = []
    for group in state_by_name["param_groups"]:
        numbers = [index.setdefault(name, len(index)) for name in group["params"]]
        groups.append({**group, "params": numbers})
    state = {index[name]: value for name, value in state_by_name["state"].items()}
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def optimizer_state_by_name(state_by_index: dict[str, Any]) -> dict[str, Any]:
    """The reverse of `optimizer_state_by_index`, naming parameters by the ``names`` each group
    carries (`train.step.param_groups` records them: the model's parameter names)."""
    names: dict[int, str] = {}
    groups = []
    for number, group in enumerate(state_by_index["param_groups"]):
        if len(group.get("names", ())) != len(group["params"]):
            raise ValueError(f"optimizer group {number}: no parameter names recorded; cannot re-key it")
        names.update(zip(group["params"], group["names"], strict=True))
        groups.append({**group, "params": list(group["names"])})
    state = {names[number]: value for number, value in state_by_index["state"].items()}
    return {"state": state, "param_groups": groups}
