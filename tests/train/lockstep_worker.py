"""Worker of tests/train/test_lockstep.py, run by torchrun (2 gloo ranks): one optimizer step on a
global batch of 15 rows at micro-batch 7 (rank 0 holds 7 rows, rank 1 holds 8: one and two
micro-batches before `DistributedContext.step_share`), then an evaluation of 15 windows at batch 7
(7 and 8 windows), under DDP and under FSDP, each against one unsharded process doing the same.
Rank 0 prints one JSON line per parallelism. Collectives time out after `TIMEOUT_S` instead of
hanging, so a rank left waiting fails the run."""

from __future__ import annotations

import math
from datetime import timedelta
from types import SimpleNamespace

import torch
import torch.distributed as dist

from tests.train.worker_output import print_result
from train.distributed import DistributedContext
from train.evaluate import evaluate_model
from train.loss import MicroBatchLoss
from train.model import build_model
from train.sharding import full_model_state, shard_model
from train.step import train_step

ROWS, MICRO, VOCAB, CONTEXT = 15, 7, 64, 32
TIMEOUT_S = 60


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch [15, 32] (two documents per row, for the document mask) seen by every rank."""
    ids = torch.randint(0, VOCAB, (ROWS, CONTEXT), generator=torch.Generator().manual_seed(1))
    documents = (torch.arange(CONTEXT) >= CONTEXT // 2).long().expand(ROWS, CONTEXT)
    return ids, documents


def _step(model, loss_module, ids, documents, share=None) -> tuple[float, float]:
    """One `train_step` on `ids`; its loss and gradient norm. Plain SGD at lr 1 without clipping:
    the weights move by minus the gradient, so comparing weights compares the gradients (AdamW's
    first step divides each gradient by its own size, which magnifies rounding near zero)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    rows = share.rows if share else slice(None)
    loss, norm = train_step(
        loss_module, optimizer, scheduler, ids[rows], documents[rows], micro_batch_size=MICRO, grad_clip=math.inf,
        row_weight=share.row_weight if share else None, micro_batches=share.micro_batches if share else None,
    )  # fmt: skip
    return loss.item(), float(norm)


def _validation(ids, documents) -> SimpleNamespace:
    """A `train.data.ValidationSet` stand-in: the same windows, the second half of each 'long'."""
    return SimpleNamespace(input_ids=ids, document_ids=documents, is_long_token=documents.bool())


def _settings() -> dict:
    return dict(implementation="chunked", document_mask="document", eos_id=None)


def run(parallelism: str, context: DistributedContext) -> dict | None:
    ids, documents = _batch()
    model = build_model("tiny-1m", vocab_size=VOCAB, context=CONTEXT, seed=0)
    root = MicroBatchLoss(model, **_settings())
    if parallelism == "fsdp":
        shard_model(root, model.model.layers, device=torch.device("cpu"), mixed_precision=False)
        loss_module, fsdp_root = root, root
    else:
        loss_module, fsdp_root = torch.nn.parallel.DistributedDataParallel(root), None
    share = context.step_share(ROWS, MICRO)
    loss, norm = _step(model, loss_module, ids, documents, share)
    total = torch.tensor([loss], dtype=torch.float64)
    dist.all_reduce(total)  # the global batch's loss: the mean over ranks (train.loop logs the same)
    losses = evaluate_model(model, _validation(ids, documents), batch_size=MICRO, device="cpu",
                            document_mask="document", dist=context, fsdp_root=fsdp_root)  # fmt: skip
    weights = full_model_state(model) if parallelism == "fsdp" else model.state_dict()
    if context.rank != 0:
        return None
    reference = build_model("tiny-1m", vocab_size=VOCAB, context=CONTEXT, seed=0)
    reference_loss, reference_norm = _step(reference, MicroBatchLoss(reference, **_settings()), ids, documents)
    reference_losses = evaluate_model(reference, _validation(ids, documents), batch_size=MICRO, device="cpu",
                                      document_mask="document")  # fmt: skip
    difference = max((weights[name] - value).abs().max().item() for name, value in reference.state_dict().items())
    return {"parallelism": parallelism, "micro_batches": share.micro_batches, "loss": total.item() / context.world_size,
            "reference_loss": reference_loss, "norm": norm, "reference_norm": reference_norm,
            "losses": losses, "reference_losses": reference_losses, "max_weight_difference": difference,
            "finite": math.isfinite(loss)}  # fmt: skip


def main() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    context = DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size())
    for parallelism in ("ddp", "fsdp"):
        result = run(parallelism, context)
        if result is not None:
            print_result(result)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
