"""The downstream benchmarks train can score: a pure registry (no lm-eval import).

Which lm-eval task each name is, the split lm-eval scores, and the fields of the local JSON Lines
file that replaces its Hub dataset (see `train.downstream` for the scoring itself). Config
validation (`eval.benchmarks`) and the CLI read this module without loading lm-eval.

>>> benchmark("sciq").file_name
'sciq.jsonl'
>>> sorted(BENCHMARKS)
['arc_easy', 'piqa', 'sciq']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from megadocs.data_identity import files_identity, read_directory
from megadocs.errors import FieldError, UserError

__all__ = ["METRICS", "Benchmark", "BENCHMARKS", "BenchmarkData", "benchmark", "check_tasks", "parse_tasks",
           "check_data_file"]

METRICS = ("acc", "acc_norm")


@dataclass(frozen=True)
class Benchmark:
    """One supported lm-eval task and the local file that replaces its Hub dataset."""

    task: str  # lm-eval task name
    yaml_dir: str  # folder of its YAML under lm_eval/tasks/
    split: str  # the split lm-eval scores for this task
    fields: tuple[str, ...]  # fields the official doc_to_text/choice/target read

    @property
    def file_name(self) -> str:
        return f"{self.task}.jsonl"


BENCHMARKS: dict[str, Benchmark] = {
    "piqa": Benchmark("piqa", "piqa", "validation", ("goal", "sol1", "sol2", "label")),
    "sciq": Benchmark(
        "sciq", "sciq", "test",
        ("support", "question", "distractor1", "distractor2", "distractor3", "correct_answer"),
    ),
    "arc_easy": Benchmark("arc_easy", "arc", "test", ("question", "choices", "answerKey")),
}


def benchmark(task: str, *, field: str = "benchmarks") -> Benchmark:
    """The registry entry of ``task``.

    Raises:
        FieldError: of ``field``: an unknown task, and the known tasks.
    """
    if task not in BENCHMARKS:
        raise FieldError(field, f"unknown task {task!r}; expected one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[task]


def check_tasks(tasks: Iterable[str], *, field: str = "benchmarks") -> list[str]:
    """``tasks`` as a list, after checking every one is known (a FieldError of ``field`` if not)."""
    tasks = list(tasks)
    for task in tasks:
        benchmark(task, field=field)
    return tasks


def parse_tasks(text: str, *, field: str = "benchmarks") -> list[str]:
    """Comma-separated task names (``"piqa, sciq"``), each checked against the registry (a
    FieldError of ``field`` if one is not, or none is given: a command's flags name it,
    `megadocs.cli.flags_named`).

    >>> parse_tasks("piqa, sciq,")
    ['piqa', 'sciq']
    """
    tasks = [task.strip() for task in text.split(",") if task.strip()]
    if not tasks:
        raise FieldError(field, "no tasks given (expected e.g. piqa,sciq,arc_easy)")
    return check_tasks(tasks, field=field)


def check_data_file(entry: Benchmark, data_dir: Path) -> Path:
    """The task's local file, after checking it exists and its first example has the fields."""
    path = data_dir / entry.file_name
    if not path.is_file():
        raise UserError(_not_found(entry, path))
    with path.open("rb") as f:
        _check_first_line(entry, path, f.readline())
    return path


def _not_found(entry: Benchmark, path: Path) -> str:
    return (f"benchmark {entry.task}: data file {path} not found (expected JSON Lines with "
            f"fields {', '.join(entry.fields)}; see train/downstream.py)")


def _check_first_line(entry: Benchmark, path: Path, first: bytes) -> None:
    """UserError naming ``path`` unless ``first`` (its first line) is an example with the task's fields."""
    try:
        example = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"benchmark {entry.task}: {path}: line 1 is not a JSON object") from None
    missing = [name for name in entry.fields if not isinstance(example, dict) or name not in example]
    if missing:
        raise UserError(
            f"benchmark {entry.task}: {path}: line 1 lacks field(s) {', '.join(missing)} "
            f"(expected {', '.join(entry.fields)})"
        )


@dataclass(frozen=True, eq=False)
class BenchmarkData:
    """A train run's ``eval.benchmark_data`` as the run read it when it opened its data: every file
    of the directory, read once. The run's identity hashes these bytes (`identity`), and its
    evaluation, hours later, scores these bytes (`write`), whatever the directory holds by then.

    Example:
        >>> data = BenchmarkData.read("benchmark-data")  # doctest: +SKIP
        >>> data.write(Path(scratch)) / "piqa.jsonl"  # doctest: +SKIP
    """

    directory: Path
    files: Mapping[str, bytes]
    """Relative name -> bytes (`megadocs.data_identity.read_directory`)."""

    @classmethod
    def read(cls, directory: str | Path, tasks: Iterable[str] = (), *,
             field: str = "eval.benchmark_data") -> BenchmarkData:  # fmt: skip
        """Read every file of ``directory``, and check the file of each of ``tasks`` as
        `check_data_file` does (now, rather than after training).

        Raises:
            UserError: ``directory`` is no directory (naming ``field``), or a task's file is
                missing or lacks the task's fields (naming the file).
        """
        data = cls(Path(directory), read_directory(directory, field))
        for task in tasks:
            entry = benchmark(task)
            path = data.directory / entry.file_name
            if entry.file_name not in data.files:
                raise UserError(_not_found(entry, path))
            _check_first_line(entry, path, data.files[entry.file_name].split(b"\n", 1)[0])
        return data

    @property
    def identity(self) -> str:
        """`megadocs.data_identity.directory_identity` of the files as read."""
        return files_identity(self.files)

    def write(self, folder: Path) -> Path:
        """The files as read, written under ``folder`` (created); returns ``folder``."""
        for name, data in self.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return folder
