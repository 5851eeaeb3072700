"""The run contract (megadocs/formats.py): the metrics record, standard JSON, atomic writes."""

from __future__ import annotations

import json
import math
import os

import pytest

from megadocs.errors import UserError
from megadocs.formats import (
    ALGORITHMS,
    IID_SETS,
    METHODS,
    POOL_KIND,
    REAL,
    BenchmarkScore,
    PoolKind,
    RunDir,
    RunMetrics,
    RunStatus,
    atomic_file,
    dumps_json,
    half_names,
    write_atomic,
    write_json,
)


def _strict_loads(text: str):
    """A parser that refuses NaN/Infinity, as JSON.parse and strict parsers do."""

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_run_metrics_round_trip_through_metrics_json(tmp_path):
    metrics = RunMetrics(
        status=RunStatus.COMPLETED, val_loss=3.25, val_losses={"iid": 3.25, "iid_short": 3.0, "iid_long": 3.5},
        steps=120, tokens_seen=7680, wall_time_s=12.5, tokens_per_s=614.4, config_hash="abc", params=1000,
        benchmarks={"piqa": {"acc": 0.5}},
    )
    path = RunDir(tmp_path).metrics
    metrics.save(path)
    written = _strict_loads(path.read_text())
    assert written["status"] == "completed" and written["val_losses"]["iid_long"] == 3.5
    assert "point" not in written  # optional fields at their default are not written
    again = RunMetrics.load(path)
    assert again == metrics and again.objective == 3.25 and RunDir(tmp_path).read_metrics() == metrics


def test_a_diverged_run_writes_null_losses_and_its_objective_is_infinite(tmp_path):
    metrics = RunMetrics(status=RunStatus.DIVERGED, val_loss=math.inf,
                         val_losses={name: math.nan for name in IID_SETS}, steps=10)
    assert metrics.val_loss is None and set(metrics.val_losses.values()) == {None}
    assert metrics.objective == math.inf
    metrics.save(tmp_path / "metrics.json")
    written = _strict_loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "diverged" and written["val_loss"] is None
    assert written["val_losses"] == {"iid": None, "iid_short": None, "iid_long": None}


def test_old_metrics_files_with_nan_and_infinity_are_migrated_on_read(tmp_path):
    old = tmp_path / "metrics.json"
    # what train wrote before: Infinity for a diverged run, NaN for an empty validation half
    old.write_text('{"status": "diverged", "val_loss": Infinity, "val_losses": {"iid": Infinity, '
                   '"iid_long": NaN}, "steps": 7, "params": 5}')
    metrics = RunMetrics.load(old)
    assert metrics.status is RunStatus.DIVERGED and metrics.val_loss is None
    assert metrics.val_losses == {"iid": None, "iid_long": None} and metrics.params == 5
    # a ledger of before stored "inf" strings; a callable objective stored its point as "params"
    ledger = RunMetrics.parse({"status": "diverged", "val_loss": "inf", "params": {"lr": 0.1}, "mine": 2.0})
    assert ledger.val_loss is None and ledger.point == {"lr": 0.1} and ledger.params is None
    assert ledger.extra == {"mine": 2.0}


def test_benchmark_scores_are_typed_and_their_json_is_kept_byte_for_byte(tmp_path):
    path = tmp_path / "metrics.json"
    # what train writes (train.downstream.evaluate_benchmarks' shape), in its key order
    written = {"status": "completed", "val_loss": 3.0,
               "benchmarks": {"piqa": {"acc": 0.5, "acc_norm": 0.25, "items": 4},
                              "average": {"acc": 0.5, "acc_norm": 0.25}}}
    write_json(path, written)
    metrics = RunMetrics.load(path)
    assert metrics.benchmarks["piqa"] == BenchmarkScore(acc=0.5, acc_norm=0.25, items=4)
    assert metrics.benchmarks["average"].items is None
    metrics.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()
    # forms analysis accepted before the record: a bare accuracy, an "accuracy" key; other metrics kept
    old = RunMetrics.parse({"status": "completed", "val_loss": 3.0,
                            "benchmarks": {"sciq": 0.7, "arc_easy": {"accuracy": 0.4, "acc_stderr": 0.1}}})
    assert old.benchmarks["sciq"].acc == 0.7 and old.benchmarks["arc_easy"].acc == 0.4
    assert old.to_json()["benchmarks"]["arc_easy"] == {"acc": 0.4, "acc_stderr": 0.1}
    with pytest.raises(UserError, match=r"^metrics: benchmarks.piqa.acc: "):
        RunMetrics.parse({"status": "completed", "val_loss": 3.0, "benchmarks": {"piqa": {"acc": "high"}}})


def test_bad_metrics_are_refused_with_the_file_and_field(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"status": "running", "val_loss": 1.0}')
    with pytest.raises(UserError, match=r"metrics.json: .*completed or diverged"):
        RunMetrics.load(path)
    path.write_text('{"status": "completed", "val_loss": 1.0, "steps": "many"}')
    with pytest.raises(UserError, match=r"metrics.json: steps: "):
        RunMetrics.load(path)
    with pytest.raises(UserError, match="file not found"):
        RunMetrics.load(tmp_path / "absent.json")


def test_strict_json_refuses_nan_and_infinity_and_writes_nothing(tmp_path):
    assert _strict_loads(dumps_json({"a": [1.5, None]})) == {"a": [1.5, None]}
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="Out of range float"):
            dumps_json({"loss": bad})
        with pytest.raises(ValueError, match="out.json"):
            write_json(tmp_path / "out.json", {"nested": [bad]})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_files_and_leaves_no_partial_one(tmp_path):
    path = tmp_path / "state.txt"
    write_atomic(path, "old\n")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write("half of the new cont")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"  # untouched
    assert os.listdir(tmp_path) == ["state.txt"]  # and no temporary file left behind
    write_atomic(path, b"new bytes")
    assert path.read_bytes() == b"new bytes" and os.listdir(tmp_path) == ["state.txt"]


def test_vocabulary_is_consistent():
    assert set(POOL_KIND) == set(ALGORITHMS) and METHODS == (REAL, *ALGORITHMS)
    assert POOL_KIND["latent"] is PoolKind.THOUGHTS and POOL_KIND["self-distill"] is PoolKind.SAMPLE
    assert f"{PoolKind.SAMPLE}" == "sample" and f"{RunStatus.DIVERGED}" == "diverged"
    assert half_names("iid") == IID_SETS[1:]
    assert [s for s in RunStatus if s.finished] == [RunStatus.COMPLETED, RunStatus.DIVERGED]
