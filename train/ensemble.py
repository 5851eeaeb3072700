"""The logit-averaging ensemble engine: K causal LMs whose per-token logits are averaged.

The paper ensembles K models trained with different seeds / data orders by averaging their
*logits* (not their probabilities) at every position. This module is the engine only: members,
the vocabulary check, the memory budget and the running logit sums. Scoring lives elsewhere:
`train.ensemble_eval` (validation loss L(K)), `train.downstream` (lm-eval benchmarks) and
`train.ensemble_cli` (``megadocs train ensemble`` / ``benchmarks`` and their JSON reports).

Members are run directories (``RUN/model`` is used) or Hugging Face model directories. All must
share one vocabulary and tokenizer; otherwise averaging logits is meaningless and we refuse.

Memory policy (`LogitEnsemble`): at most ``max_resident_members`` members are held on the
device. When all N fit, every member is loaded once and kept ("cached"). Otherwise the first
``max_resident_members - 1`` stay resident and the others are *streamed*: for every batch of
windows each streamed member is loaded from disk, run, and freed, so one slot is reused
(``max_resident_members=1`` streams every member). Streaming costs one load per member per
batch, so use large batches there. The running logit sum is kept in float32 on the device; it
is one ``[batch, context, vocab]`` tensor plus one member's logits at a time. With
``max_resident_members=None`` the number is chosen from a memory budget: half of the free device
memory (CUDA) or of the available host memory (CPU), minus the two logits buffers, divided by a
member's weight size (`resident_members_for_budget`). Cached and streamed runs do the same
arithmetic in the same order, so their losses are identical.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from megadocs.errors import FieldError, UserError
from megadocs.formats import RunDir, read_json_object
from train.config import DocumentMask
from train.device import available_memory_bytes
from train.evaluate import autocast_for, model_logits

__all__ = [
    "MEMORY_FRACTION",
    "resolve_model_dir",
    "resolve_members",
    "model_vocab_size",
    "check_same_vocabulary",
    "resident_members_for_budget",
    "LogitEnsemble",
]

# Share of free memory the resident members and the logits buffers may use.
MEMORY_FRACTION = 0.5


def resolve_model_dir(path: str | Path) -> Path:
    """A run directory (its ``model/``) or a Hugging Face model directory, as the model directory.

    Raises:
        UserError: the path holds neither ``config.json`` nor ``model/config.json``.
    """
    path = Path(path)
    if RunDir(path).has_model():
        return RunDir(path).model
    if (path / "config.json").is_file():
        return path
    raise UserError(
        f"{path}: not a model directory (expected RUN/model/config.json from `megadocs train` "
        "or a Hugging Face directory with config.json)"
    )


def resolve_members(members: Sequence[str | Path], *, field: str = "members") -> list[Path]:
    """The model directories of an ensemble's ``members`` (run or HF directories, in order), each
    model once: a model listed twice (also as RUN and RUN/model) would count twice in the average
    and in K.

    Raises:
        FieldError: of ``field`` (the record's field the members fill: a command's flags name
            it, `megadocs.cli.flags_named`): a member that is not a model directory, or the positions
            (from 1) of two members that are one model.
    """
    first_at: dict[Path, int] = {}
    model_dirs = []
    for position, member in enumerate(members, 1):
        try:
            model_dir = resolve_model_dir(member)
        except UserError as exc:
            raise FieldError(field, str(exc)) from None
        earlier = first_at.setdefault(model_dir.resolve(), position)
        if earlier != position:
            raise FieldError(field, f"members {earlier} and {position} are one model ({members[earlier - 1]} and "
                                    f"{member}); an ensemble's members are distinct models")
        model_dirs.append(model_dir)
    return model_dirs


def model_vocab_size(model_dir: Path) -> int:
    """``vocab_size`` of a model directory's ``config.json`` (-1 when it does not say).

    Raises:
        UserError: a config.json that is not a JSON object (cut short, overwritten), named.
    """
    config = read_json_object(model_dir / "config.json", "a model config",
                              "expected the JSON object a model directory holds")
    vocab_size = config.get("vocab_size", -1)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise UserError(f"{model_dir / 'config.json'}: vocab_size: expected an integer, got {vocab_size!r}")
    return vocab_size


def _vocabulary_signature(model_dir: Path) -> tuple[int, str | None]:
    """(model vocab_size, sha256 of the tokenizer's token->id map, or None without a tokenizer)."""
    vocab_size = model_vocab_size(model_dir)
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return vocab_size, None
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(model_dir).get_vocab()
    canonical = json.dumps(sorted(vocab.items()), separators=(",", ":"))
    return vocab_size, hashlib.sha256(canonical.encode()).hexdigest()


def check_same_vocabulary(model_dirs: Sequence[Path]) -> None:
    """Refuse members whose vocabulary size or tokenizer differs from the first member's.

    Raises:
        UserError: one line naming the first differing member and the reference member.
    """
    reference_dir = model_dirs[0]
    reference_size, reference_hash = _vocabulary_signature(reference_dir)
    for model_dir in model_dirs[1:]:
        size, token_hash = _vocabulary_signature(model_dir)
        if size != reference_size:
            raise UserError(
                f"ensemble member {model_dir}: vocab_size {size} differs from {reference_size} of "
                f"{reference_dir}; members must share one tokenizer"
            )
        if None not in (token_hash, reference_hash) and token_hash != reference_hash:
            raise UserError(
                f"ensemble member {model_dir}: tokenizer differs from that of {reference_dir}; "
                "members must share one tokenizer"
            )


def _weights_bytes(model_dir: Path) -> int:
    """Bytes of a member's weights once loaded in float32 (4 bytes per parameter)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:  # legacy pytorch_model.bin: its size is the best cheap estimate
        return max(1, sum(f.stat().st_size for f in model_dir.glob("*.bin")))
    parameters = 0
    for file in files:
        try:
            with safe_open(file, framework="pt") as weights:  # reads the header only
                for name in weights.keys():
                    parameters += math.prod(weights.get_slice(name).get_shape())
        except SafetensorError as exc:  # a damaged file (cut short, overwritten), named
            raise UserError(f"{file}: not readable safetensors weights ({exc}); the member's model is damaged "
                            "(copy it again, or train the run again)") from None
    return max(1, 4 * parameters)


def resident_members_for_budget(
    model_dirs: Sequence[Path], device, *, batch_size: int, context: int, vocab_size: int
) -> int:
    """How many members to keep on ``device``: the module's memory policy (at least 1)."""
    logits_bytes = 2 * batch_size * context * vocab_size * 4  # running sum + one member's logits
    budget = MEMORY_FRACTION * available_memory_bytes(device) - logits_bytes
    per_member = max(_weights_bytes(d) for d in model_dirs)
    return max(1, min(len(model_dirs), int(budget // per_member)))


@dataclass
class LogitEnsemble:
    """K causal LMs whose logits are summed position by position (see the module's memory policy).

    Args:
        model_dirs: Hugging Face model directories (use `resolve_model_dir` for run dirs).
        device: a torch device.
        max_resident_members: members kept on the device; the rest are streamed per batch.
    """

    model_dirs: list[Path]
    device: object
    max_resident_members: int

    def __post_init__(self) -> None:
        if not self.model_dirs:
            raise UserError("ensemble: no members given (expected at least one model directory)")
        if self.max_resident_members < 1:
            raise UserError(
                f"max_resident_members: expected >= 1, got {self.max_resident_members}"
            )
        self._resident: dict[int, object] = {}

    @property
    def streaming(self) -> bool:
        return len(self.model_dirs) > self.max_resident_members

    def _load(self, index: int):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        # streaming loads a member per batch: keep transformers' loading bars off stderr
        bars_were_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = AutoModelForCausalLM.from_pretrained(self.model_dirs[index], dtype=torch.float32)
        finally:
            if bars_were_on:
                hf_logging.enable_progress_bar()
        return model.to(self.device).eval()

    def _member(self, index: int):
        """A member on the device: resident ones are loaded once, streamed ones every call."""
        keep = len(self.model_dirs) if not self.streaming else self.max_resident_members - 1
        if index < keep:
            if index not in self._resident:
                self._resident[index] = self._load(index)
            return self._resident[index], False
        return self._load(index), True

    def running_logit_sums(self, input_ids, document_ids=None, *, document_mask: DocumentMask | bool = False) -> Iterator:
        """Yield the float32 sum of the first k members' logits, k = 1..K, for ``input_ids``.

        Each member's forward pass is `train.evaluate.model_logits` under the training
        precision (`autocast_for`), exactly as a single model is evaluated. The yielded tensor
        ``[batch, length, vocab]`` is updated in place by the next step: consume it (e.g.
        divide by k and score it) before advancing the iterator.
        """
        import torch

        input_ids = input_ids.to(self.device)
        if document_ids is not None:
            document_ids = document_ids.to(self.device)
        total = None
        for index in range(len(self.model_dirs)):
            model, streamed = self._member(index)
            with torch.no_grad(), autocast_for(self.device):
                logits = model_logits(model, input_ids, document_ids, document_mask=document_mask)
            logits = logits.float()  # [B, T, V]
            if streamed:
                del model
                _release(self.device)
            if total is None:
                total = logits
            else:
                total += logits
                del logits
            yield total

    def mean_logits(self, input_ids, document_ids=None, *, document_mask: DocumentMask | bool = False):
        """The ensemble's averaged logits ``[batch, length, vocab]`` (float32)."""
        total = None
        for total in self.running_logit_sums(input_ids, document_ids, document_mask=document_mask):  # noqa: B007
            pass
        return total / len(self.model_dirs)

    def close(self) -> None:
        self._resident.clear()
        _release(self.device)


def _release(device) -> None:
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
