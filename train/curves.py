"""Periodic validation during training: the curve of the held-out loss.

Every `eval.every` steps (or `K` times per run with ``every: "K/run"``) the loop evaluates the
model on the first `eval.curve_windows` of the fixed i.i.d. validation windows (the same windows
the final `val_loss` starts with; `eval.curve_extra` adds the extra sets, same count) and writes
``{"step", "val_losses", "eval_s"}`` to ``log.jsonl``. The last step is not evaluated here: the
final evaluation (all `val_windows`) covers it. Evaluation is read-only (no_grad, no RNG draws),
so a run with curves learns exactly what the same run without them learns.

Cost: one forward pass per window, i.e. ``curve_windows / (3 * batch_size)`` optimizer steps'
worth of compute per evaluation (a forward is about a third of forward+backward); with the
defaults (128 windows, 10 per run, batch 64) about 7 steps in a whole run: under 5 % of runs
longer than ~150 steps (`benchmarks/eval_overhead.py` measures it; every evaluation's `eval_s`
is in `log.jsonl`).

Example:
    >>> curve = PeriodicValidation.build(config, store, {}, total_steps=500, device=torch.device("cpu"))  # doctest: +SKIP
    >>> curve.due(50), curve.due(500)                                                        # doctest: +SKIP
    (True, False)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from megadocs.formats import IID
from train.config import DocumentMask, RunConfig
from train.data import ValidationSet
from train.distributed import SINGLE, DistributedContext
from train.evaluate import evaluate_model
from train.store import TokenStore

__all__ = ["PeriodicValidation"]


@dataclass
class PeriodicValidation:
    """The periodic evaluation of one run: which steps, which windows, how."""

    every: int  # steps between evaluations (0 = none)
    total_steps: int
    sets: dict[str, ValidationSet]  # by name, the iid one first
    batch_size: int
    device: torch.device
    document_mask: DocumentMask
    eos_id: int

    @classmethod
    def build(cls, config: RunConfig, store: TokenStore, extra: Mapping[str, TokenStore], *, total_steps: int,
              device: torch.device, align: int = 1) -> PeriodicValidation:  # fmt: skip
        """Load the curve's windows once (they stay in memory for the whole run) from the run's
        open stores (`store`: data.store; `extra`: the eval.extra stores by name); ``'K/run'``
        evaluations fall on multiples of `align` steps (see `EvalConfig.every_steps`)."""
        every = config.eval.every_steps(total_steps, align)
        sets = {}
        if every:
            windows = min(config.eval.curve_windows, config.eval.val_windows)
            context = config.data.context
            sets[IID] = ValidationSet.build(store, split="val", context=context, max_windows=windows,
                                           field="eval.curve_windows")
            if config.eval.curve_extra:
                for name, spec in config.eval.extra.items():
                    sets[name] = ValidationSet.build(extra[name], split=spec.split, context=context,
                                                     max_windows=windows, field=f"eval.extra.{name} (eval.curve_windows)")
        return cls(every=every, total_steps=total_steps, sets=sets, batch_size=config.optim.micro_batch_size,
                   device=device, document_mask=config.data.document_mask, eos_id=store.eos_id)  # fmt: skip

    def due(self, step: int) -> bool:
        """Evaluate after optimizer step `step`? (never the last: the final evaluation covers it)"""
        return bool(self.every) and step % self.every == 0 and step < self.total_steps

    def evaluate(self, model: torch.nn.Module, *, dist: DistributedContext = SINGLE,
                 fsdp_root: torch.nn.Module | None = None) -> tuple[dict[str, float | None], float]:  # fmt: skip
        """({set: loss, None where not finite: log.jsonl stays standard JSON}, seconds).

        One process evaluates, unless the model is sharded (`fsdp_root`): then every rank of
        `dist` evaluates its share (`evaluate_model`). Leaves the model in train mode, as the loop
        expects."""
        start = time.perf_counter()
        losses: dict[str, float] = {}
        for name, validation in self.sets.items():
            losses.update(evaluate_model(model, validation, name=name, halves=False,
                                         batch_size=self.batch_size, device=self.device,
                                         document_mask=self.document_mask, eos_id=self.eos_id,
                                         dist=dist, fsdp_root=fsdp_root))  # fmt: skip
        model.train()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {k: v if math.isfinite(v) else None for k, v in losses.items()}, time.perf_counter() - start
