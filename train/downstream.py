"""Downstream accuracy (PIQA, SciQ, ARC-Easy) through EleutherAI's lm-evaluation-harness.

The paper reports zero-shot accuracy on PIQA, SciQ and ARC-Easy and their average. We run the
harness's *official* task definitions (prompt, choices, target and metrics from lm-eval's own
task YAMLs) with one change: where the data comes from. A model is scored by `EnsembleLM`, an
``lm_eval.api.model.LM`` that serves one model or a logit-averaged ensemble of several (the same
`train.ensemble.LogitEnsemble` code path as the ensemble loss; one model is an ensemble of one).

Pointing at your copies of the datasets (nothing is downloaded when ``data_dir`` is given):
put one JSON Lines file per task in a directory, one example per line, with the fields of the
Hugging Face dataset the official task reads. These are the split lm-eval scores:

============  ========================  ===================================================
task          file                      fields (source dataset and split)
============  ========================  ===================================================
piqa          ``DIR/piqa.jsonl``        goal, sol1, sol2, label (0/1)
                                        (``baber/piqa`` validation split)
sciq          ``DIR/sciq.jsonl``        support, question, distractor1, distractor2,
                                        distractor3, correct_answer (``allenai/sciq`` test)
arc_easy      ``DIR/arc_easy.jsonl``    question, choices {text: [...], label: [...]},
                                        answerKey (``allenai/ai2_arc`` ARC-Easy test)
============  ========================  ===================================================

For example, on a machine with the Hub: ``datasets.load_dataset("allenai/sciq",
split="test").to_json("DIR/sciq.jsonl")``. With ``data_dir=None`` the harness loads the official
Hub datasets itself (needs the Hub or a filled Hugging Face cache).

Example:
    >>> evaluate_benchmarks([Path("runs/a/model")], ["piqa", "sciq", "arc_easy"],
    ...                     data_dir=Path("benchmark-data"))  # doctest: +SKIP
    {'piqa': {'acc': 0.61, 'acc_norm': 0.6, 'items': 1838}, ..., 'average': {...}}
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from megadocs.errors import FieldError
from train.benchmarks import METRICS, BenchmarkData, benchmark, check_data_file, check_tasks
from train.device import resolve_device
from train.ensemble import (
    LogitEnsemble,
    check_same_vocabulary,
    resident_members_for_budget,
    resolve_model_dir,
)

__all__ = ["task_config", "load_tasks", "check_benchmarks", "require_lm_eval", "EnsembleLM", "evaluate_benchmarks"]

# Request length assumed by the memory budget (PIQA/SciQ/ARC prompts + answers are shorter).
TYPICAL_REQUEST_TOKENS = 1024


def _task_manager(tasks: Sequence[str]):
    """An lm-eval TaskManager that indexes only our tasks' official YAMLs (fast)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.tasks.__file__).parent
    dirs = sorted({str(root / benchmark(t).yaml_dir) for t in tasks})
    return TaskManager(include_defaults=False, include_path=dirs)


def task_config(task: str, data_dir: Path | None, task_manager=None, cache_dir: Path | None = None) -> dict | str:
    """The official task config, reading ``data_dir/<task>.jsonl`` instead of the Hub (through the
    datasets library's cache in ``cache_dir``; None: its default cache).

    Returns the plain task name when ``data_dir`` is None (the harness then uses the Hub).

    Raises:
        UserError: unknown task, or the data file is missing or lacks the expected fields.
    """
    entry = benchmark(task)
    if data_dir is None:
        return task
    path = check_data_file(entry, Path(data_dir))
    task_manager = task_manager or _task_manager([task])
    config = dict(task_manager.task_index[task].cfg)
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {entry.split: str(path.resolve())},
                        **({} if cache_dir is None else {"cache_dir": str(cache_dir)})},
        training_split=None,
        validation_split=entry.split if entry.split == "validation" else None,
        test_split=entry.split if entry.split == "test" else None,
        fewshot_split=None,
    )
    return config


def load_tasks(tasks: Sequence[str], data_dir: Path | None, *, cache_dir: Path | None = None,
               source: Path | None = None, field: str = "benchmark_data") -> tuple[Any, list]:  # fmt: skip
    """lm-eval's task manager and the ``Task`` objects of ``tasks`` on the official configs
    (`task_config`), their datasets read as lm-eval reads them (the files of ``data_dir``, or the
    Hub's through the Hugging Face cache when None). What `evaluate_benchmarks` scores, and all a
    train run that will score them loads when it starts (`check_benchmarks`): no model.

    ``source``: the directory to name in errors (``data_dir`` is a private copy of it); ``field``:
    the record's name for the data directory (``benchmark_data``: train ensemble's request and the
    commands' option, which name it by the flag typed through `megadocs.cli.flags_named`; a train
    config's ``eval.benchmark_data``).

    Raises:
        FieldError: of ``benchmarks``: lm-eval is not installed (`require_lm_eval`).
        UserError: an unknown task, a data file missing or lacking the task's fields.
        FieldError: of ``field``: a data file that is not JSON Lines, or no local data and no Hub
            (nor cache) to read it from.
    """
    require_lm_eval()
    from datasets.exceptions import DatasetGenerationError

    task_manager = _task_manager(tasks)
    configs = [task_config(t, data_dir, task_manager, cache_dir) for t in tasks]
    try:
        loaded = task_manager.load(configs)
    except DatasetGenerationError as exc:  # a local file the datasets library cannot parse
        reason = str(exc.__cause__ or exc).strip().splitlines()[0]
        raise FieldError(field, f"{source or data_dir}: a file of {', '.join(tasks)} is not JSON Lines as the "
                                f"datasets library reads it ({reason[:200]})") from None
    except OSError as exc:  # the datasets library's ConnectionError: no Hub from this machine
        if data_dir is not None:
            raise
        files = ", ".join(f"{task}.jsonl" for task in tasks)
        raise FieldError(field, f"none given, and the Hugging Face Hub cannot be reached ({type(exc).__name__}) nor "
                                f"does its cache hold the data of {', '.join(tasks)}; give a local directory holding "
                                f"{files} (formats in train/downstream.py), or fill the Hugging Face cache on a "
                                "machine with the Hub") from None
    return task_manager, [loaded["tasks"][task] for task in tasks]


@contextlib.contextmanager
def _scored_files(data: Path | BenchmarkData | None) -> Iterator[tuple[Path | None, Path | None]]:
    """(data directory, datasets cache) to score ``data`` from: a `BenchmarkData`'s files written to a
    private temporary directory with a cache of its own (both removed on leaving), else ``data``
    itself (None: the Hub) and the default cache."""
    if not isinstance(data, BenchmarkData):
        yield data, None
        return
    with tempfile.TemporaryDirectory(prefix="megadocs-benchmarks-") as scratch:
        yield data.write(Path(scratch) / "data"), Path(scratch) / "cache"


def check_benchmarks(tasks: Sequence[str], data: BenchmarkData | None) -> None:
    """Load ``tasks``' data as a train run's final `evaluate_benchmarks` will (``data``: its
    eval.benchmark_data as read; None: the Hub or the Hugging Face cache), with no model: a run
    that could not score them is refused when it starts, not after training.

    Raises:
        UserError: as `load_tasks`, naming eval.benchmarks or eval.benchmark_data and what to do.
    """
    require_lm_eval("eval.benchmarks")
    with _scored_files(data) as (data_dir, cache_dir):
        load_tasks(tasks, data_dir, cache_dir=cache_dir, source=None if data is None else data.directory,
                   field="eval.benchmark_data")


try:  # lm-eval is the optional `eval` extra; only this module needs it
    from lm_eval.api.model import TemplateLM

    _LM_EVAL_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the installation
    TemplateLM = object
    _LM_EVAL_ERROR = exc


def require_lm_eval(field: str = "benchmarks") -> None:
    """A FieldError of ``field`` (the tasks asked for: a command's ``benchmarks``, named by the flag
    typed through `megadocs.cli.flags_named`; a train config's ``eval.benchmarks``) when lm-eval,
    which scores them, is not installed."""
    if _LM_EVAL_ERROR is not None:
        raise FieldError(field, f"scoring them needs lm-evaluation-harness ({_LM_EVAL_ERROR}); install it with "
                                "`pip install 'megadocs[eval]'`")


class EnsembleLM(TemplateLM):
    """An lm-eval model over one or more causal LMs whose logits are averaged per token.

    Only log-likelihood scoring is implemented (all that multiple-choice tasks use); the rolling
    and generation requests raise ``NotImplementedError``.

    Args:
        model_dirs: HF model directories (or run directories) sharing one tokenizer.
        device: ``auto`` | ``cpu`` | ``cuda``.
        batch_size: requests per forward pass.
        max_resident_members: see `train.ensemble` (None: from the memory budget).
    """

    def __init__(
        self,
        model_dirs: Sequence[str | Path],
        *,
        device: str = "auto",
        batch_size: int = 16,
        max_resident_members: int | None = None,
    ) -> None:
        require_lm_eval()
        super().__init__()
        from transformers import AutoConfig, AutoTokenizer

        dirs = [resolve_model_dir(d) for d in model_dirs]
        check_same_vocabulary(dirs)
        self.tokenizer = AutoTokenizer.from_pretrained(dirs[0])
        configs = [AutoConfig.from_pretrained(d) for d in dirs]
        self.max_length = min(c.max_position_embeddings for c in configs)
        self.batch_size = batch_size
        self._device = resolve_device(device)
        if max_resident_members is None:
            # benchmark requests are a few hundred tokens, far below the models' context
            max_resident_members = resident_members_for_budget(
                dirs, self._device, batch_size=batch_size, context=min(self.max_length, TYPICAL_REQUEST_TOKENS),
                vocab_size=configs[0].vocab_size,
            )
        self.ensemble = LogitEnsemble(dirs, self._device, max_resident_members)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def device(self):
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # Our models are trained on EOS-joined documents without BOS: never add special tokens.
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """Sum of log p(continuation | context) under the mean logits, and whether it is greedy."""
        import torch
        from tqdm import tqdm

        # longest first so each padded batch wastes little; results are put back in order
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1] + requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        pad_id = self.eot_token_id
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="lm-eval loglikelihood", disable=disable_tqdm, file=sys.stderr):
            chunk = order[start : start + self.batch_size]
            inputs, spans = [], []
            for i in chunk:
                _, context_enc, continuation_enc = requests[i]
                whole = (context_enc + continuation_enc)[-(self.max_length + 1) :]
                inputs.append(whole[:-1])
                spans.append((len(whole) - 1 - len(continuation_enc), continuation_enc))
            width = max(len(x) for x in inputs)
            # right padding: causal attention keeps the padded tail from touching real positions
            batch = torch.full((len(inputs), width), pad_id, dtype=torch.long)
            for row, ids in enumerate(inputs):
                batch[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mean_logits = self.ensemble.mean_logits(batch)  # [B, T, V]
            for row, (i, (begin, continuation)) in enumerate(zip(chunk, spans)):
                # normalise only the positions that predict the continuation
                positions = mean_logits[row, begin : begin + len(continuation)].log_softmax(-1)  # [n, V]
                target = torch.tensor(continuation, dtype=torch.long, device=positions.device)
                total = float(positions.gather(1, target[:, None]).sum())
                greedy = bool((positions.argmax(dim=-1) == target).all())
                results[i] = (total, greedy)
                self.cache_hook.add_partial("loglikelihood", requests[i][0], (total, greedy))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "EnsembleLM scores multiple-choice tasks only (loglikelihood); perplexity tasks are "
            "not supported: use `megadocs train ensemble` for validation loss"
        )

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "EnsembleLM scores multiple-choice tasks only (loglikelihood); generation tasks are "
            "not supported"
        )

    def close(self) -> None:
        self.ensemble.close()


def evaluate_benchmarks(
    model_dirs: list[Path],
    tasks: list[str],
    *,
    data_dir: Path | BenchmarkData | None,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 16,
    max_resident_members: int | None = None,
) -> dict:
    """Zero-shot ``acc`` and ``acc_norm`` of one model (one dir) or their logit-averaged ensemble.

    ``data_dir``: the local data directory (module docstring), the files a train run read when it
    started (`BenchmarkData`: these bytes are scored, from a private temporary copy read through
    a cache of its own, both removed after), or None (the Hub).

    Returns:
        ``{task: {"acc", "acc_norm", "items"}, "average": {"acc", "acc_norm"}}``; the average is
        the unweighted mean over the tasks (as the paper averages PIQA, SciQ and ARC-Easy).

    Raises:
        UserError: unknown task, missing data file, or members that do not share a tokenizer.
        FieldError: of ``benchmarks``: none given, or lm-eval not installed (`require_lm_eval`);
            of ``benchmark_data`` (`load_tasks`): a data file that is not JSON Lines, or no
            local data and no Hub to fetch it from.
    """
    if not tasks:
        raise FieldError("benchmarks", "no tasks given (expected e.g. piqa,sciq,arc_easy)")
    tasks = check_tasks(tasks)
    require_lm_eval()
    settings = dict(limit=limit, device=device, batch_size=batch_size, max_resident_members=max_resident_members)
    with _scored_files(data_dir) as (directory, cache_dir):
        return _evaluate(model_dirs, tasks, data_dir=directory, cache_dir=cache_dir,
                         source=data_dir.directory if isinstance(data_dir, BenchmarkData) else None, **settings)


def _evaluate(model_dirs: list[Path], tasks: list[str], *, data_dir: Path | None, cache_dir: Path | None,
              source: Path | None, limit: int | None, device: str, batch_size: int,
              max_resident_members: int | None) -> dict:  # fmt: skip
    """`evaluate_benchmarks` on a data directory (or the Hub), its datasets cached in ``cache_dir``."""
    from lm_eval import simple_evaluate

    task_manager, loaded = load_tasks(tasks, data_dir, cache_dir=cache_dir, source=source)  # data before models
    lm = EnsembleLM(model_dirs, device=device, batch_size=batch_size, max_resident_members=max_resident_members)
    try:
        output = simple_evaluate(
            model=lm,
            tasks=loaded,
            num_fewshot=0,
            limit=limit,
            task_manager=task_manager,
            bootstrap_iters=0,
            log_samples=False,
        )
    finally:
        lm.close()
    scores: dict = {}
    for task in tasks:
        row = output["results"][task]
        scores[task] = {metric: float(row[f"{metric},none"]) for metric in METRICS}
        scores[task]["items"] = int(output["n-samples"][task]["effective"])
    scores["average"] = {m: sum(scores[t][m] for t in tasks) / len(tasks) for m in METRICS}
    return scores
