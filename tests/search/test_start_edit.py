"""A certification's start is recorded in the ledger when its search begins, and every resume keeps
it: an edited ``start:`` or ``warm_start:`` of a started search is said in one line (certify's
stderr, status's text and ``--json`` warnings), never silently ignored; the start used is unchanged."""

from __future__ import annotations

import json

import pytest

from megadocs.cli import main
from search.baselines import BASELINES
from search.ledger import read_runs
from search.params import format_point
from search.sweep import load_sweep

GRID = {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8], "epochs": [2, 4, 8]}
START = {"lr": 0.003, "wd": 0.8, "epochs": 4}
WARM = [{"name": "a", "fixed": {"method": "simple", "g": 4}},
        {"name": "b", "fixed": {"method": "simple", "g": 8}, "warm_start": "a"}]


def _certify(path, caplog, *args) -> list[str]:
    """Run certify; its warning lines about an edited start."""
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["search", "certify", str(path), "--no-progress", *args]) in (0, 3)
    return [r.getMessage() for r in caplog.records if "its search began from" in r.getMessage()]


def _status(path, capsys) -> tuple[list[str], list[str]]:
    """status's warning lines about an edited start: (text, --json)."""
    capsys.readouterr()
    assert main(["search", "status", str(path)]) == 0
    text = [line for line in capsys.readouterr().out.splitlines() if "its search began from" in line]
    assert main(["search", "status", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    warnings = json.loads(out[out.index("{\n"):])["warnings"]
    return text, [w for w in warnings if "its search began from" in w]


def _plan(path, capsys) -> tuple[list[str], list[str]]:
    """plan's warning lines about an edited start: (text, --json)."""
    capsys.readouterr()
    assert main(["search", "plan", str(path)]) == 0
    text = [line for line in capsys.readouterr().out.splitlines() if "its search began from" in line]
    assert main(["search", "plan", str(path), "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    return text, [w for w in warnings if "its search began from" in w]


def test_an_edited_start_of_a_started_search_is_one_line_and_changes_nothing(make_sweep, caplog, capsys):
    path = make_sweep(grid=GRID, start=START)
    assert _certify(path, caplog) == []
    assert _certify(path, caplog) == []  # a plain resume says nothing
    assert _status(path, capsys) == ([], [])
    assert _plan(path, capsys) == ([], [])
    runs = len(read_runs(load_sweep(path)))

    path = make_sweep(grid=GRID, start={**START, "lr": 0.01})
    line = ("a: start in the sweep file (lr=0.01 wd=0.8 epochs=4) differs from the one its search began from "
            "(lr=0.003 wd=0.8 epochs=4); a started search keeps its start: to search from the new one, add a "
            "certification with a's fixed params under a new name")
    assert _certify(path, caplog) == [line]
    assert len(read_runs(load_sweep(path))) == runs  # the search kept its start: certified already, nothing ran
    assert _status(path, capsys) == ([f"warning: {line}"], [line])
    assert _plan(path, capsys) == ([f"warning: {line}"], [line])  # its counts and its search: the old start


def test_a_grid_edit_that_keeps_the_start_warns_nothing(make_sweep, caplog, capsys):
    """A grid whose values changed elsewhere, or that spells the start's value otherwise (3e-3), is
    no edit of the start."""
    path = make_sweep(grid=GRID, start=START)
    assert _certify(path, caplog) == []
    path = make_sweep(grid={**GRID, "lr": [0.0003, 3e-3, 0.03], "epochs": [4, 8]}, start={**START, "lr": 3e-3})
    assert _certify(path, caplog) == []
    assert _status(path, capsys) == ([], [])


def test_an_edited_warm_start_of_a_started_search_is_one_line(make_sweep, caplog, capsys):
    path = make_sweep(grid=GRID, start=START, certifications=WARM)
    assert _certify(path, caplog) == []
    assert _certify(path, caplog) == []  # a plain resume says nothing
    capsys.readouterr()
    assert main(["search", "status", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    (b,) = [c for c in json.loads(out[out.index("{\n"):])["certifications"] if c["name"] == "b"]
    point = format_point(b["start"])  # a's certificate, projected

    path = make_sweep(grid=GRID, start=START, certifications=[WARM[0], {**WARM[1], "warm_start": None}])
    line = (f"b: warm_start in the sweep file (none) differs from the one its search began from (a, at {point}); "
            "a started search keeps its start: to search from the new one, add a certification with b's fixed "
            "params under a new name")
    assert _certify(path, caplog) == [line]  # one line: not also one for its start
    assert _status(path, capsys) == ([f"warning: {line}"], [line])
    assert _plan(path, capsys) == ([f"warning: {line}"], [line])


def test_a_warm_start_added_to_a_started_search_is_one_line(make_sweep, caplog):
    path = make_sweep(grid=GRID, start=START, certifications=[WARM[0], {**WARM[1], "warm_start": None}])
    assert _certify(path, caplog) == []
    path = make_sweep(grid=GRID, start=START, certifications=WARM)
    (line,) = _certify(path, caplog)
    assert line.startswith("b: warm_start in the sweep file (a) differs from the one its search began from (none, at "
                           "lr=0.003 wd=0.8 epochs=4); a started search keeps its start"), line


def test_a_warm_start_edited_before_its_source_finished_warns_nothing(make_sweep, caplog, capsys):
    """A warm start records nothing until its source is certified: an edit before then moves it."""
    path = make_sweep(grid=GRID, start=START, certifications=WARM)
    caplog.clear()
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "2"]) != 0  # a stops: b waits
    path = make_sweep(grid=GRID, start=START, certifications=[WARM[0], {**WARM[1], "warm_start": None}])
    assert _certify(path, caplog) == []
    assert _status(path, capsys) == ([], [])


def test_a_warm_start_removed_before_its_source_finished_records_the_start_the_search_began_from(
        make_sweep, caplog, capsys):
    """b waited for a (stopped by its budget), its warm start was removed and it searched from
    ``start:``: nothing recorded that start, so a later edit of ``start:`` moved the search
    silently (no warning, ``status`` reported the new start)."""
    path = make_sweep(grid=GRID, start=START, certifications=WARM)
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "2"]) != 0  # a stops: b waits
    path = make_sweep(grid=GRID, start=START, certifications=[WARM[0], {**WARM[1], "warm_start": None}])
    assert _certify(path, caplog) == []  # b begins from START

    path = make_sweep(grid=GRID, start={**START, "lr": 0.01},
                      certifications=[WARM[0], {**WARM[1], "warm_start": None}])
    line = ("b: start in the sweep file (lr=0.01 wd=0.8 epochs=4) differs from the one its search began from "
            "(lr=0.003 wd=0.8 epochs=4); a started search keeps its start: to search from the new one, add a "
            "certification with b's fixed params under a new name")
    a_line = line.replace("b: ", "a: ", 1).replace("b's", "a's")
    assert _certify(path, caplog) == [a_line, line]
    assert _status(path, capsys) == ([f"warning: {a_line}", f"warning: {line}"], [a_line, line])


@pytest.mark.parametrize("strategy", BASELINES)
def test_a_baseline_of_a_warm_started_certification_records_its_start(make_sweep, caplog, capsys, strategy):
    """A baseline waits for no source: it reads its runs from ``start:`` whatever ``warm_start:``
    says. Under a warm start it recorded no start, so an edited ``start:`` moved its certificate's
    evidence silently (no warning, ``status`` reported the new start); it records it as any other."""
    path = make_sweep(grid=GRID, start=START, certifications=WARM)
    baseline = ("--strategy", strategy)
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "2", *baseline]) in (0, 1)
    path = make_sweep(grid=GRID, start={**START, "lr": 0.01}, certifications=WARM)
    capsys.readouterr()
    assert main(["search", "status", str(path), "--json", *baseline]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["name"]: c["start"] for c in data["certifications"]} == {"a": START, "b": START}, data
    lines = [w for w in data["warnings"] if "its search began from" in w]
    assert [line.split(":")[0] for line in lines] == ["a", "b"], lines
    assert lines[1] == lines[0].replace("a: ", "b: ", 1).replace("a's", "b's")


def test_plan_counts_a_started_search_from_its_recorded_start(make_sweep, capsys):
    """``plan`` counted a started search from the sweep file's edited ``start:`` (its best case the
    new start's neighbours), though its search goes on from the recorded one: its plan is now the
    one it had before the edit, with the edit's warning line."""
    path = make_sweep(grid=GRID, start=START)
    assert main(["search", "certify", str(path), "--no-progress", "--max-runs", "2"]) == 1  # started, not certified
    capsys.readouterr()
    assert main(["search", "plan", str(path), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    path = make_sweep(grid=GRID, start={**START, "lr": 0.01})
    assert main(["search", "plan", str(path), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert before["warnings"] == [] and len(after.pop("warnings")) == 1, after
    assert after == {k: v for k, v in before.items() if k != "warnings"}
