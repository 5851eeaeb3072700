"""A ``search certify`` refused for bad input (a missing SLURM profile, a missing pool) says one
line and leaves the directory as it was: no ledger, no jobs folder (a profile refused only after
the ledger and ``out/jobs`` were created)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from megadocs.cli import main
from megadocs.exits import Exit

ANALYTIC = Path(__file__).parents[2] / "search" / "examples" / "analytic.yaml"


def _tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def _missing_profile(tmp_path: Path, tiny_store: Path) -> dict:
    sweep = yaml.safe_load(ANALYTIC.read_text())
    sweep["executor"] = {"kind": "slurm", "profile": "nowhere/profile.yaml"}
    return sweep


def _missing_pool(tmp_path: Path, tiny_store: Path) -> dict:
    return {"name": "tiny", "executor": {"kind": "local"},
            "train": {"data": {"store": str(tiny_store), "context": 64}, "model": {"preset": "tiny-1m"}},
            "pools": {"simple": "nowhere/pool"},
            "grid": {"lr": [0.003, 0.01], "wd": [0.1], "epochs": [1, 2], "mix": [0.5, 0.75]},
            "start": {"lr": 0.003, "wd": 0.1, "epochs": 1, "mix": 0.5},
            "certifications": [{"name": "simple-g1", "fixed": {"method": "simple", "g": 1}}]}


@pytest.mark.parametrize(("make", "named"), [(_missing_profile, "nowhere/profile.yaml"),
                                             (_missing_pool, "nowhere/pool")])
def test_a_refused_certify_creates_nothing(make, named, tmp_path, tiny_store, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(make(tmp_path, tiny_store), sort_keys=False))
    before = _tree(tmp_path)
    assert main(["search", "certify", "sweep.yaml", "--no-progress"]) == Exit.BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and named in err and "\n" not in err, err
    assert _tree(tmp_path) == before, os.listdir(tmp_path)
