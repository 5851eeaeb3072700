"""``search status`` of a baseline: a grid's outstanding runs are its unrun grid points (up to its
run budget), not the certifier's wanted neighbours (0 before anything ran); TPE's cannot be known
from the ledger, and status says so instead of 0."""

from __future__ import annotations

import json

from megadocs.cli import main
from search.baselines import BASELINES

SMALL = {"lr": [0.001, 0.003], "wd": [0.4, 0.8], "epochs": [4, 8]}  # 8 points
START = {"lr": 0.003, "wd": 0.8, "epochs": 8}


def _status(path, strategy, capsys) -> dict:
    assert main(["search", "status", str(path), "--strategy", strategy, "--json"]) == 0
    [cert] = json.loads(capsys.readouterr().out)["certifications"]
    return cert


def test_a_grid_baseline_outstanding_is_its_unrun_points_and_tpe_says_it_cannot_know(make_sweep, capsys):
    path = make_sweep(grid=SMALL, start=START)
    main(["search", "certify", str(path), "--no-progress", "--strategy", "certify", "--max-runs", "1"])
    capsys.readouterr()  # a ledger with the certifier's start run; no baseline has run
    for strategy in BASELINES:
        cert = _status(path, strategy, capsys)
        if strategy == "grid":
            assert len(cert["outstanding"]) == 8, cert["outstanding"]  # every point (was 0)
        else:
            assert cert["outstanding"] is None, cert
    main(["search", "certify", str(path), "--no-progress", "--strategy", "grid", "--max-runs", "3"])
    capsys.readouterr()
    cert = _status(path, "grid", capsys)
    assert cert["runs"]["finished"] == 3
    assert len(cert["outstanding"]) == 5 and len({json.dumps(p, sort_keys=True) for p in cert["outstanding"]}) == 5
    assert main(["search", "status", str(path), "--strategy", "tpe"]) == 0
    assert "unknown (tpe samples them)" in capsys.readouterr().out
