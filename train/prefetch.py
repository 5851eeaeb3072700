"""A background thread that builds the next training batches while the current step runs.

Batch assembly (gathering windows from memory-mapped tokens) is a pure function of the step
(:meth:`train.data.TrainingStreams.batch`), so building steps ``k+1..k+depth`` ahead changes
nothing about what a step sees: a resumed run starting at step ``k`` gets the same batches as an
uninterrupted one. The queue is bounded (``depth`` batches), so memory stays at a few batches. On
CUDA each batch is copied into pinned host memory on the thread, so the step's host-to-device
copy is asynchronous (``non_blocking=True``).

Example::

    with BatchPrefetcher(streams.batch, range(start, total), pin_memory=True) as batches:
        for step in range(start, total):
            batch = batches.get(step)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the module runs without torch (`train.pool_tokens` reads ahead with it)
    import torch

__all__ = ["BatchPrefetcher", "DEFAULT_DEPTH", "put_unless_stopped"]

DEFAULT_DEPTH = 2
"""Batches built ahead: one being copied, one ready; more only costs memory."""
_PUT_TIMEOUT_S = 0.1


def put_unless_stopped(buffer: queue.Queue, item: Any, stop: threading.Event, *,
                       poll_s: float = _PUT_TIMEOUT_S) -> bool:  # fmt: skip
    """Put `item` on the bounded `buffer` unless the consumer has stopped (`stop` set; False then).

    A producer thread must give up this way on every put, the end marker and an error included,
    or a full queue that nobody reads any more would block the ``join`` that stops it forever.
    It waits at most `poll_s` at a time, so it sees a stop within that.
    """
    while not stop.is_set():
        try:
            buffer.put(item, timeout=poll_s)
            return True
        except queue.Full:
            continue
    return False


class BatchPrefetcher:
    """Builds ``make_batch(step)`` for ``steps`` in order on a daemon thread, ``depth`` ahead.

    Thread-safety: one consumer (the training loop) calls :meth:`get` with consecutive steps.
    An exception raised by ``make_batch`` is re-raised by the :meth:`get` of that step.
    """

    def __init__(self, make_batch: Callable[[int], dict[str, torch.Tensor]], steps: range, *,
                 depth: int = DEFAULT_DEPTH, pin_memory: bool = False):
        if depth < 1:
            raise ValueError(f"depth: expected >= 1, got {depth}")
        self._make_batch, self._steps, self._pin = make_batch, steps, pin_memory
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="batch-prefetch", daemon=True)
        self._next = steps.start

    def __enter__(self) -> BatchPrefetcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _work(self) -> None:
        for step in self._steps:
            try:
                batch = self._make_batch(step)
                if self._pin:
                    batch = {key: value.pin_memory() for key, value in batch.items()}
                item = (step, batch, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                put_unless_stopped(self._queue, (step, None, exc), self._stop)
                return
            if not put_unless_stopped(self._queue, item, self._stop):
                return

    def get(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step`` (the next one in ``steps``)."""
        if step != self._next:
            raise RuntimeError(f"prefetcher: asked for step {step}, the next built is {self._next}")
        built, batch, error = self._queue.get()
        if error is not None:
            raise error
        assert built == step, (built, step)  # internal invariant: the thread builds steps in order
        self._next += 1
        return batch

    def close(self) -> None:
        """Stop the thread (a batch being built is finished and dropped)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
