"""Fixtures for the search tests: sweep files in a temp dir, call logs, an importable objective."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

GRID = {"lr": [0.001, 0.003, 0.01], "wd": [0.1, 0.4, 0.8, 1.6], "epochs": [1, 2, 4, 8, 16, 32]}
START = {"lr": 0.003, "wd": 0.8, "epochs": 8}

READ_ONLY_COMMANDS = [
    ["search", "status", "{sweep}"],
    ["search", "status", "{sweep}", "--json"],
    ["analysis", "export", "{sweep}", "--out", "{tmp}/table.csv"],
    ["analysis", "report", "{sweep}", "--out", "{tmp}/report"],
    ["analysis", "fit", "{sweep}", "--bootstrap", "0"],
]
"""Every command that only reads a ledger (``{sweep}``: the sweep file, ``{tmp}``: a scratch folder)."""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temp working directory; jobs (also subprocesses) can import the repo's packages."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SEARCH_TEST_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("SEARCH_TEST_MARKERS", str(tmp_path / "markers"))
    return tmp_path


@pytest.fixture
def make_sweep(workdir):
    """Write a sweep file (analytic objective, debug executor unless overridden); returns its path."""

    def make(name="t", **overrides) -> Path:
        data = {
            "name": name,
            "executor": {"kind": "debug", "max_parallel": 4, "poll_s": 0.05, "max_retries": 1},
            "objective": "tests.search.objectives:logged",
            "grid": GRID,
            "start": START,
            "certifications": [{"name": "a", "fixed": {"method": "simple", "g": 4}}],
        }
        data.update(overrides)
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def calls(workdir: Path) -> list[dict]:
    path = workdir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def let_go(workdir: Path, name: str = "go") -> None:
    """Create the marker ``name``: the jobs of tests.search.objectives waiting for it (``gated``:
    "go", ``lingers_at_exit``: "exit") go on."""
    (workdir / "markers").mkdir(exist_ok=True)
    (workdir / "markers" / name).touch()
