"""Logit-averaged ensembles: the validation loss of K models whose per-token logits are averaged.

The paper ensembles K models trained with different seeds / data orders by averaging their
*logits* (not their probabilities) at every position, then reads the loss of that mean. The loss
of every prefix of the member list (K = 1..N) gives the curve L(K) = E + A * K^(-alpha) whose
asymptote E compares data recipes (`analysis` fits it).

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

CLI: ``megadocs train ensemble --members RUN1 RUN2 ... [--val [NAME=]STORE ...] [--json OUT]``
prints L(K) per validation set. ``--json OUT`` holds (and, re-run, resumes from)::

    {"members": [dir, ...], "context": C, "windows": N,
     "sets": {name: {"source": {"store": dir, "split": "val"},
                     "by_k": [{"k": 1, "members": [...], "loss": .., "loss_short": .., "loss_long": ..}, ...]}},
     "benchmarks": {"request": {...}, "scores": <train.downstream.evaluate_benchmarks result>}}

(``loss_short``/``loss_long`` only for the ``iid`` set; ``benchmarks`` only with ``--benchmarks``.)
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from megadocs.errors import UserError
from megadocs.formats import IID, RunDir, finite_or_none, write_json
from train.config import DocumentMask

__all__ = [
    "resolve_model_dir",
    "check_same_vocabulary",
    "resident_members_for_budget",
    "LogitEnsemble",
    "ensemble_losses",
    "add_arguments",
    "main",
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


def _vocabulary_signature(model_dir: Path) -> tuple[int, str | None]:
    """(model vocab_size, sha256 of the tokenizer's token->id map, or None without a tokenizer)."""
    config = json.loads((model_dir / "config.json").read_text())
    vocab_size = int(config.get("vocab_size", -1))
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
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:  # legacy pytorch_model.bin: its size is the best cheap estimate
        return max(1, sum(f.stat().st_size for f in model_dir.glob("*.bin")))
    parameters = 0
    for file in files:
        with safe_open(file, framework="pt") as weights:  # reads the header only
            for name in weights.keys():
                parameters += math.prod(weights.get_slice(name).get_shape())
    return max(1, 4 * parameters)


def _free_memory_bytes(device) -> int:
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resident_members_for_budget(
    model_dirs: Sequence[Path], device, *, batch_size: int, context: int, vocab_size: int
) -> int:
    """How many members to keep on ``device``: the module's memory policy (at least 1)."""
    logits_bytes = 2 * batch_size * context * vocab_size * 4  # running sum + one member's logits
    budget = MEMORY_FRACTION * _free_memory_bytes(device) - logits_bytes
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

        from train.evaluate import autocast_for, model_logits

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


def ensemble_losses(
    member_dirs: Sequence[str | Path],
    validation_set,
    *,
    device="auto",
    batch_size: int = 8,
    max_resident_members: int | None = None,
    halves: bool = True,
    document_mask: DocumentMask | bool = False,
) -> list[dict]:
    """Validation loss of the logit-averaged ensemble of every prefix of ``member_dirs``.

    Args:
        member_dirs: run directories or HF model directories, in ensemble order.
        validation_set: a `train.data.ValidationSet` (``input_ids``, ``document_ids`` and
            ``is_long_document``; the last only read when ``halves``).
        device: ``auto``, ``cpu``, ``cuda`` or a torch.device.
        batch_size: windows per forward pass.
        max_resident_members: members kept on the device (None: from the memory budget).
        halves: also report the short/long-document halves (for the i.i.d. set).
        document_mask: attend only within documents (as members trained with it).

    Returns:
        One dict per K = 1..N: ``{"k", "members", "loss"}`` plus ``"loss_short"`` and
        ``"loss_long"`` when ``halves``. Losses are mean next-token cross-entropy over all
        predicted tokens (nats), computed by `train.evaluate` exactly as for one model.

    Raises:
        UserError: a member is not a model directory, or members do not share a vocabulary.
    """
    import torch
    from tqdm import tqdm

    from train.evaluate import LossTotals, target_is_long, token_losses
    from train.loop import resolve_device

    model_dirs = [resolve_model_dir(d) for d in member_dirs]
    check_same_vocabulary(model_dirs)
    device = resolve_device(device) if isinstance(device, str) else device
    input_ids = torch.as_tensor(validation_set.input_ids, dtype=torch.long)  # [N, C]
    document_ids = torch.as_tensor(validation_set.document_ids, dtype=torch.long)  # [N, C]
    n_windows, context = input_ids.shape
    if max_resident_members is None:
        vocab_size = json.loads((model_dirs[0] / "config.json").read_text())["vocab_size"]
        max_resident_members = resident_members_for_budget(
            model_dirs, device, batch_size=batch_size, context=context, vocab_size=vocab_size
        )
    ensemble = LogitEnsemble(model_dirs, device, max_resident_members)

    totals = [LossTotals() for _ in model_dirs]  # totals[k-1]: the first k members
    mode = "streaming" if ensemble.streaming else "cached"
    batches = range(0, n_windows, batch_size)
    for start in tqdm(batches, desc=f"ensemble of {len(model_dirs)} ({mode})", file=sys.stderr):
        stop = min(start + batch_size, n_windows)
        batch = input_ids[start:stop].to(device)
        is_long = target_is_long(validation_set, start, stop) if halves else None  # [b, C-1]
        sums = ensemble.running_logit_sums(batch, document_ids[start:stop], document_mask=document_mask)
        for k, logit_sum in enumerate(sums, start=1):
            totals[k - 1].add(token_losses(logit_sum / k, batch), is_long)
    ensemble.close()
    return [
        {"k": k, "members": [str(d) for d in model_dirs[:k]], **totals[k - 1].summary("loss", halves=halves)}
        for k in range(1, len(model_dirs) + 1)
    ]


# ---------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``megadocs train ensemble``."""
    parser.add_argument(
        "--members", nargs="+", required=True, metavar="DIR",
        help="run directories (RUN/model is used) or HF model directories, in ensemble order",
    )
    parser.add_argument(
        "--val", nargs="+", metavar="[NAME=]STORE", default=None,
        help="token stores whose val split to score (NAME=STORE names a set; the set named iid also "
        "gets its short/long halves); default: the members' data.store (iid) and eval.extra sets",
    )
    parser.add_argument("--context", type=int, default=None, help="window length (default: the run's)")
    parser.add_argument("--windows", type=int, default=None, help="validation windows (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument(
        "--max-resident", type=int, default=None,
        help="members held on the device at once; more are streamed (default: from free memory)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--benchmarks", default=None, metavar="TASKS",
        help="also score the full ensemble on lm-eval tasks, e.g. piqa,sciq,arc_easy",
    )
    parser.add_argument("--benchmark-data", default=None, metavar="DIR", help="local benchmark files")
    parser.add_argument("--benchmark-limit", type=int, default=None, help="items per task (default: all)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON here")


def _run_config(member: Path) -> dict:
    path = RunDir(member).config
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


@dataclass
class _ValidationSpec:
    name: str
    store: Path
    split: str = "val"


def _validation_specs(args, run_config: dict) -> list[_ValidationSpec]:
    """The sets to score: ``--val`` if given, else the members' iid store and eval.extra sets.

    An unnamed ``--val STORE`` is the ``iid`` set (which gets the short/long halves) when it is
    the members' data.store, or when the members have no run config and it comes first;
    otherwise it is named after its directory. ``NAME=STORE`` names it explicitly.
    """
    iid_store = (run_config.get("data") or {}).get("store")
    if args.val:
        specs = []
        for position, item in enumerate(args.val):
            name, _, store = item.rpartition("=")
            store_path = Path(store)
            if not name:
                if iid_store is not None:
                    is_iid = store_path.resolve() == Path(iid_store).resolve()
                else:
                    is_iid = position == 0
                name = IID if is_iid else store_path.name
            specs.append(_ValidationSpec(name, store_path))
        names = [spec.name for spec in specs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UserError(f"--val: two sets are named {repeated[0]!r}; name them with NAME=STORE")
        return specs
    if iid_store is None:
        raise UserError(
            "--val: no validation store given and the first member has no RUN/config.yaml "
            "naming data.store; pass --val STORE_DIR"
        )
    specs = [_ValidationSpec(IID, Path(iid_store))]
    for name, extra in ((run_config.get("eval") or {}).get("extra") or {}).items():
        specs.append(_ValidationSpec(name, Path(extra["store"]), extra.get("split", "val")))
    return specs


def main(args: argparse.Namespace) -> int:
    """``megadocs train ensemble``: print (and optionally save) L(K) for K = 1..N.

    With ``--json OUT`` the report is rewritten after every validation set, and a re-run with
    the same members, context and windows reuses the sets (and benchmarks) already in OUT.
    """
    from train.data import ValidationSet

    members = [Path(m) for m in args.members]
    run_config = _run_config(members[0])
    context = args.context or (run_config.get("data") or {}).get("context")
    windows = args.windows or (run_config.get("eval") or {}).get("val_windows") or 1024
    if context is None:
        raise UserError("--context: the first member has no RUN/config.yaml to read it from; pass --context")

    identity = {"members": [str(m) for m in members], "context": context, "windows": windows}
    out = Path(args.json) if args.json else None
    report = _previous_report(out, identity) or {**identity, "sets": {}}
    for spec in _validation_specs(args, run_config):
        where = {"store": str(spec.store), "split": spec.split}
        done = report["sets"].get(spec.name)
        if done and done.get("source") == where:
            print(f"{spec.name}: reusing the losses in {out}", file=sys.stderr)
        else:
            validation = ValidationSet.build(spec.store, split=spec.split, context=context, max_windows=windows)
            rows = ensemble_losses(
                members, validation, device=args.device, batch_size=args.batch_size,
                max_resident_members=args.max_resident, halves=spec.name == IID,
                document_mask=DocumentMask.parse((run_config.get("data") or {}).get("document_mask", False)),
            )
            report["sets"][spec.name] = {"source": where, "by_k": rows}
            _write_report(out, report)
        _print_table(spec.name, report["sets"][spec.name]["by_k"])
    if args.benchmarks:
        from train.downstream import evaluate_benchmarks, print_scores

        tasks = [t.strip() for t in args.benchmarks.split(",") if t.strip()]
        request = {"tasks": tasks, "data": args.benchmark_data, "limit": args.benchmark_limit}
        if (report.get("benchmarks") or {}).get("request") != request:
            scores = evaluate_benchmarks(
                [resolve_model_dir(m) for m in members], tasks,
                data_dir=Path(args.benchmark_data) if args.benchmark_data else None,
                limit=args.benchmark_limit, device=args.device,
            )
            report["benchmarks"] = {"request": request, "scores": scores}
            _write_report(out, report)
        print(f"benchmarks of the {len(members)}-member ensemble:")
        print_scores(report["benchmarks"]["scores"], tasks)
    return 0


def _previous_report(out: Path | None, identity: dict) -> dict | None:
    if out is None or not out.is_file():
        return None
    try:
        report = json.loads(out.read_text())
    except json.JSONDecodeError:
        return None
    same = all(report.get(key) == value for key, value in identity.items())
    return report if same else None


def _write_report(out: Path | None, report: dict) -> None:
    """Atomic write, so an interrupted run leaves the previous complete report. A half with no
    tokens (NaN) is written as null, as `_print_table` shows it."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, finite_or_none(report))


def _print_table(name: str, rows: list[dict]) -> None:
    halves = "loss_short" in rows[0]
    header = f"{'K':>3}  {name + ' loss':>12}" + (f"  {'short':>8}  {'long':>8}" if halves else "")
    print(header)
    for row in rows:
        line = f"{row['k']:>3}  {row['loss']:>12.4f}"
        if halves:
            line += "".join(
                f"  {row[key]:>8.4f}" if row[key] is not None else f"  {'-':>8}"
                for key in ("loss_short", "loss_long")
            )
        print(line)
