"""The pure rules of search.tuned (the runs at a certified point), without a ledger."""

from __future__ import annotations

import math

from megadocs.formats import RunMetrics, RunStatus
from search.ledger import RunRecord
from search.tuned import VAL, runs_at_point

AT = {"lr": 3e-3, "epochs": 8}


def _record(status: RunStatus, run_id: str | None = "r", loss: float | None = 3.5, **kwargs) -> RunRecord:
    return RunRecord(certification="c", point=dict(AT), run_id=run_id, status=status, loss=loss, **kwargs)


def test_a_completed_run_with_a_finite_loss_is_the_only_kind_of_run_at_the_point():
    """Every status the ledger writes: only a completed run with a finite loss is one of the runs whose
    mean is the certified loss (a diverged run is inf, a failed, running or superseded one has none)."""
    for status in RunStatus:
        assert bool(runs_at_point([_record(status)], AT)) is (status is RunStatus.COMPLETED), status
    assert runs_at_point([_record(RunStatus.COMPLETED, loss=math.inf)], AT) == ()
    assert runs_at_point([_record(RunStatus.COMPLETED, loss=None)], AT) == ()
    assert runs_at_point([_record(RunStatus.COMPLETED)], {}) == ()
    assert runs_at_point([_record(RunStatus.COMPLETED)], {**AT, "epochs": 16}) == ()


def test_runs_at_the_point_are_each_identity_once_and_each_run_without_one():
    """A noise repeat (its seed) is a run of the point; a run adopted from another study is the same
    run as the identity it shares; runs without an identity are each a run of their own; each run
    carries its finite scores beside its loss."""
    metrics = RunMetrics(status=RunStatus.COMPLETED, val_loss=3.5, val_losses={"iid": 3.5, "arxiv": None})
    runs = runs_at_point([
        _record(RunStatus.COMPLETED, metrics=metrics),
        _record(RunStatus.COMPLETED, adopted_from="other"),
        _record(RunStatus.COMPLETED, run_id="r1", loss=3.6, fixed={"seed": 1}),
        _record(RunStatus.COMPLETED, run_id=None, loss=3.7, fixed={"seed": 2}),
        _record(RunStatus.COMPLETED, run_id=None, loss=3.8, fixed={"seed": 3}),
    ], AT)
    assert [(run.run_id, run.values["loss"]) for run in runs] == [("r", 3.5), ("r1", 3.6), (None, 3.7), (None, 3.8)]
    assert runs[0].values == {"loss": 3.5, VAL + "iid": 3.5}
