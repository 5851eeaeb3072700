"""A real (tiny) ledger: a sweep with an analytic objective certified by search's own engine.

The sweep runs in-process (``executor: debug``) with ``tests.analysis.objectives:paper_like``
(search's convex bowl plus the extra validation sets), so the analysis tests read exactly what
``megadocs search certify`` writes: an Optuna SQLite ledger and real run directories.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

TOY_SWEEP = """\
name: toy
executor: {{kind: debug, max_parallel: 4, poll_s: 0.01}}
out: {out}
objective: tests.analysis.objectives:paper_like
grid:
  lr: [0.001, 0.003, 0.01]
  wd: [0.4, 0.8, 1.6]
  epochs: [4, 8, 16]
start: {{lr: 0.001, wd: 0.8, epochs: 8}}
certifications:
  - {{name: real, fixed: {{method: real}}}}
  - {{name: simple-g1, fixed: {{method: simple, g: 1}}}}
  - {{name: simple-g2, fixed: {{method: simple, g: 2}}, warm_start: simple-g1}}
  - {{name: simple-g4, fixed: {{method: simple, g: 4}}, warm_start: simple-g2}}
  - {{name: stitched-g1, fixed: {{method: stitched, g: 1}}}}
  - {{name: stitched-g2, fixed: {{method: stitched, g: 2}}}}
  - {{name: stitched-g4, fixed: {{method: stitched, g: 4}}}}
ensembles:
  - {{name: real-ens, from: real, members: 3}}
"""


def write_sweep(directory: Path, text: str = TOY_SWEEP) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sweep.yaml"
    path.write_text(textwrap.dedent(text).format(out=directory / "out"))
    return path


@pytest.fixture(scope="session")
def toy_sweep(tmp_path_factory) -> Path:
    """Path of a certified toy sweep file whose ledger holds every run."""
    from search.controller import run_sweep
    from search.sweep import load_sweep

    path = write_sweep(tmp_path_factory.mktemp("toy-sweep"))
    run_sweep(load_sweep(path))
    return path


@pytest.fixture
def empty_sweep(tmp_path) -> Path:
    """A valid sweep file whose ledger exists (a controller created its studies) but holds no run
    yet. (A ledger that was never created is refused: tests/search/test_trust.py.)"""
    from search.controller import build_strategies
    from search.ledger import Ledger
    from search.sweep import load_sweep

    path = write_sweep(tmp_path / "empty")
    sweep = load_sweep(path)
    build_strategies(sweep, Ledger(sweep.ledger_url, sweep.name))
    return path
