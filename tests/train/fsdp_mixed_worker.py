"""Worker of tests/train/test_sharding.py's mixed-precision test, run by torchrun (2 gloo ranks):
FSDP with the CUDA policy (bf16 layer gathers, fp32 root, fp32 reduce) under CPU bf16 autocast,
against one unsharded model under the same autocast. Rank 0 prints one JSON line."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from tests.train.worker_output import print_result
from train.loss import MicroBatchLoss
from train.model import build_model
from train.sharding import shard_model


def _model():
    return build_model("tiny-1m", vocab_size=64, context=32, seed=0, device=torch.device("cpu"))


def _loss_and_norm(root: torch.nn.Module, parameters, ids: torch.Tensor) -> tuple[float, float]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = root(ids, torch.zeros_like(ids))
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(parameters, math.inf)
    return loss.item(), float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ids = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(1))  # the global batch
    settings = dict(implementation="chunked", document_mask="off", eos_id=None)
    model = _model()
    root = MicroBatchLoss(model, **settings)
    shard_model(root, model.model.layers, device=torch.device("cpu"), mixed_precision=True)
    inputs = {}

    def record_input(module, args, kwargs) -> None:  # the residual stream entering a layer
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        inputs["dtype"] = str(hidden.dtype)

    model.model.layers[1].register_forward_pre_hook(record_input, with_kwargs=True)
    rows = ids[rank * 4 // world:(rank + 1) * 4 // world]
    loss, norm = _loss_and_norm(root, list(model.parameters()), rows)
    total = torch.tensor([loss])
    dist.all_reduce(total)
    grads = {str(p.grad.dtype) for p in model.parameters()}
    gathered = str(model.model.layers[0].mlp.up_proj.weight.dtype)  # sharded master copy
    if rank == 0:
        reference_model = _model()
        reference = MicroBatchLoss(reference_model, **settings)
        ref_loss, ref_norm = _loss_and_norm(reference, list(reference_model.parameters()), ids)
        print_result({"loss": total.item() / world, "norm": norm, "reference_loss": ref_loss,
                      "reference_norm": ref_norm, "layer_input": inputs["dtype"], "grads": sorted(grads),
                      "master": gathered})  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
