"""Older formats (megadocs/compat.py): every record of the table, every older version.

For each record: its current example is what today's reader accepts and passes through untouched;
each older example is recognised as that version, and either upgrades to the current shape (today's
reader then reads the old document and its upgrade alike), or is refused in one line (a declared
format break), or is kept as recorded by a reader that still accepts it.
"""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path

import pytest
from optuna.distributions import json_to_distribution

from megadocs import compat
from megadocs.corpus import STORE_FORMAT
from megadocs.fingerprint import FINGERPRINT_PREFIX, LEGACY_PREFIX
from megadocs.formats import BenchmarkScore, RunMetrics
from megadocs.pools import POOL_FORMAT
from search.grid import Bound, Side
from search.ledger import _holder_alive
from search.objective import FailureKind, JobFailure
from train import checkpoint, pool_tokens
from train.ensemble_report import EnsembleReport
from train.run_dir import earlier_synthetic_identity, recorded_revision


def _identity_file(tmp_path: Path, data: dict) -> Path:
    run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    run.mkdir()
    (run / "identity.json").write_text(json.dumps(data))
    return run


def _format_of(current: str):
    def accept(data):
        if data["format"] != current:
            raise ValueError(f"format {data['format']!r} is not {current!r}")
        return data["format"]

    return accept


def _fingerprint(value: str) -> str:
    if not value.startswith((FINGERPRINT_PREFIX, LEGACY_PREFIX)):
        raise ValueError(value)
    return value


def _run_record(tmp_path: Path, data: dict) -> list[dict]:
    from megadocs.run_record import SUBMISSIONS, _read_submissions

    folder = tmp_path / f"jobs{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / SUBMISSIONS).write_text(json.dumps(data))
    return [entry.model_dump() for entry in _read_submissions(folder)]


def readers(tmp_path: Path) -> dict:
    """Today's reader of each record (what reads it in the project), on the record's raw data."""
    return {
        compat.RUN_METRICS: lambda data: RunMetrics.parse(data, source="metrics.json"),
        compat.BENCHMARK_SCORE: BenchmarkScore.model_validate,
        compat.ENSEMBLE_REPORT: lambda data: EnsembleReport.parse(data, source="report.json"),
        compat.JOB_RESULT: lambda data: JobFailure.of(data) or JobFailure(FailureKind(data["kind"]), data["reason"]),
        compat.BOUND: Bound.parse,
        compat.RUN_REVISION: lambda data: recorded_revision(_identity_file(tmp_path, data)),
        compat.SYNTHETIC_IDENTITY: lambda data: earlier_synthetic_identity(
            _identity_file(tmp_path, {"identity": "0123456789abcdef", "data": {"synthetic": data}})),
        compat.POOL_TOKENS: _format_of(pool_tokens.TOKENS_FORMAT),
        compat.CHECKPOINT: _format_of(checkpoint.FORMAT),
        compat.TOKEN_STORE: _format_of(STORE_FORMAT),
        compat.POOL_MANIFEST: _format_of(POOL_FORMAT),
        compat.POOL_FINGERPRINT: _fingerprint,
        compat.LEDGER_GRID_PARAMS: json_to_distribution,
        compat.RUN_RECORD: lambda data: _run_record(tmp_path, data),
        compat.CONTROLLER_HOLDER: _holder_alive,
    }


def test_every_record_has_a_reader_here_and_names_one_that_exists():
    assert set(readers(Path("."))) == set(compat.RECORDS)
    for record in compat.RECORDS.values():
        module, _, qualname = record.reader.partition(":")
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        assert callable(found), record.reader


@pytest.mark.parametrize("name", sorted(compat.RECORDS))
def test_current_data_passes_through_unchanged_and_is_read(name, tmp_path):
    record = compat.RECORDS[name]
    assert compat.version(name, record.example) == record.current and not compat.is_older(name, record.example)
    before = copy.deepcopy(record.example)
    assert compat.upgrade(name, record.example) is record.example and record.example == before
    read = readers(tmp_path)[name](record.example)
    if name == compat.SYNTHETIC_IDENTITY:
        assert read is None  # today's identity: nothing earlier to name
    if name == compat.RUN_REVISION:
        assert read == record.example["training_revision"]


CASES = [(name, entry.version) for name, record in sorted(compat.RECORDS.items()) for entry in record.older]


@pytest.mark.parametrize(("name", "number"), CASES)
def test_each_older_version_is_recognised_and_upgraded_refused_or_kept(name, number, tmp_path):
    record, entry = compat.RECORDS[name], compat.older(name, number)
    read = readers(tmp_path)[name]
    assert 0 < number < record.current
    assert compat.version(name, entry.example) == (number if entry.dated else record.current)
    before = copy.deepcopy(entry.example)
    if entry.upgrade is not None:
        upgraded = compat.upgrade(name, entry.example)
        assert entry.example == before  # the argument is not changed
        assert upgraded != entry.example and compat.version(name, upgraded) == record.current
        assert read(upgraded) == read(entry.example)  # today's reader reads the old form as its upgrade
    elif entry.refuse is not None:
        with pytest.raises(compat.FormatBreak) as refused:
            compat.upgrade(name, entry.example, source="FILE")
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"FILE: {record.where}: ") and entry.refuse in message
    else:  # kept as recorded: no upgrade, and today's reader still accepts it
        assert entry.how and compat.upgrade(name, entry.example) is entry.example
        read(entry.example)


def test_the_readers_keep_their_behaviour_on_older_data(tmp_path):
    """The wiring, one record at a time: each reader gives older data the meaning it always had."""
    metrics = RunMetrics.parse({"status": "completed", "val_loss": float("nan"), "params": {"lr": 0.1}})
    assert metrics.status.value == "diverged" and metrics.point == {"lr": 0.1} and metrics.params is None
    assert JobFailure.of({"status": "failed"}) == JobFailure(FailureKind.FAILED, "failed")
    assert JobFailure.of({"status": "completed", "val_loss": 1.0}) is None  # metrics, not a failure
    assert Bound.parse({"axis": "lr", "side": "lower", "value": 0.1}) == Bound("lr", Side.LOWER, 0.1, False)
    assert recorded_revision(_identity_file(tmp_path, {"identity": "x"})) == 1
    adoptable, what = earlier_synthetic_identity(_identity_file(tmp_path, {"data": {"synthetic": {"assembled": {}}}}))
    assert adoptable and "--reidentify" in what and "{out}" not in what
    adoptable, what = earlier_synthetic_identity(_identity_file(
        tmp_path, {"data": {"synthetic": {"assembled": {}, "tokenization": "pieces/1"}}}))
    assert not adoptable and "train it again" in what


def test_a_version_the_code_never_wrote_is_refused_in_one_line():
    with pytest.raises(compat.FormatBreak, match=r"^x\.json: TOKENS/manifest.json: format: format version 0 is unknown"):
        compat.upgrade(compat.POOL_TOKENS, {"format": "something-else/3"}, source="x.json")


def test_the_architecture_doc_lists_every_record():
    from tests.tree import ROOT

    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc.split("## Older formats", 1)[1].split("\n## ", 1)[0]
    assert {name for name in compat.RECORDS if f"| `{name}` |" not in section} == set()
    for name, record in compat.RECORDS.items():  # the row states the table's current version
        assert f"| `{name}` | " in section and f" | {record.current} | " in section.split(f"| `{name}` |")[1].split("\n")[0]
