"""How long a checkpoint stops training: the background writer against a synchronous save.

Training pauses only for the snapshot (a copy of model, optimizer and scheduler state to host
memory); the disk write (torch.save, fsync, rename) runs on a thread while the next steps train.
The figure is the writer's pause as a share of a plain host-memory copy of the same state (target:
at most 1.25, i.e. nothing beyond the copy), with the synchronous save's pause for scale. The
model is a tiny-8m preset with a 32k vocabulary (~23M parameters, ~280 MB of state with AdamW).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from train.checkpoint import CheckpointWriter, _to_host, save_checkpoint
from train.model import build_model

REPEATS = 5
TARGET = 1.25


def _state(model, optimizer, scheduler, step):
    return dict(model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                counters={"tokens_seen": step, "wall_time_s": 0.0}, identity="bench")


def main() -> None:
    torch.manual_seed(0)
    model = build_model("tiny-8m", vocab_size=32_000, context=256, seed=0, eos_id=0, device=torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ids = torch.randint(0, 32_000, (2, 256))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()  # AdamW moments exist, as in a real checkpoint
    params = sum(p.numel() for p in model.parameters())

    copy_s, async_s, sync_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(REPEATS):
            start = time.perf_counter()
            _to_host({"m": model.state_dict(), "o": optimizer.state_dict()})
            copy_s.append(time.perf_counter() - start)

            start = time.perf_counter()
            save_checkpoint(Path(tmp) / "sync", **_state(model, optimizer, scheduler, i))
            sync_s.append(time.perf_counter() - start)

            with CheckpointWriter(Path(tmp) / "async") as writer:
                start = time.perf_counter()
                writer.save(**_state(model, optimizer, scheduler, i))
                async_s.append(time.perf_counter() - start)
    copy, paused, sync = (statistics.median(x) for x in (copy_s, async_s, sync_s))
    print(json.dumps({
        "name": "checkpoint_stall",
        "ratio": paused / copy,
        "target": TARGET,
        "ok": paused / copy <= TARGET,
        "params": params,
        "host_copy_s": copy,
        "background_writer_pause_s": paused,
        "synchronous_save_pause_s": sync,
        "sync_over_background": sync / paused,
    }))


if __name__ == "__main__":
    main()
