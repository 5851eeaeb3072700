"""The rehearsal's pieces (search/rehearsal.py) without a cluster: the surrogate has the paper's
shape and one optimum per certification, the rehearsal sweep is the paper's sweep, the job
resumes from its checkpoint, and the audit's definitions of "run twice" and "retry" hold.
The rehearsal itself, faults and all, is tests/slurm/test_rehearsal.py."""

from __future__ import annotations

import json
import math

import pytest

from megadocs.errors import UserError
from megadocs.formats import REAL
from search.rehearsal import (
    CONTROL_ENV,
    DATA_ENV,
    JOURNAL,
    OBJECTIVE,
    SCALE_ENV,
    SURROGATE,
    Dispatch,
    audit,
    read_journal,
    rehearsal_sweep,
    rehearse,
)
from search.sweep import load_sweep

PAPER = "search/examples/paper-300m.yaml"


def _loss(params) -> float:
    loss = SURROGATE.loss(params)
    return math.inf if math.isnan(loss) else loss


def test_every_certification_of_the_paper_has_one_optimum_near_the_published_ones():
    """One local optimum per certification (so any order of results certifies the same point:
    what lets a faulty rehearsal be compared with a fault-free one), at the published optima."""
    sweep = load_sweep(PAPER)
    for cert in sweep.certifications:
        grid = sweep.grid_for(cert)
        optima = [p for p in grid.points() if math.isfinite(_loss({**p, **cert.fixed}))
                  and all(_loss({**n.point, **cert.fixed}) > _loss({**p, **cert.fixed}) for n in grid.neighbours(p))]
        assert len(optima) == 1, (cert.name, optima)
        [best] = optima
        assert best["lr"] == 0.003 and 0.4 <= best["wd"] <= 1.6, (cert.name, best)
        assert 8 <= best.get("epochs", 8) <= 32 and 0.75 <= best.get("mix", 0.75) <= 1.0, (cert.name, best)


def test_the_surrogate_has_the_papers_results():
    from analysis.efficiency import efficiency_ratio, load_reference_law

    law = load_reference_law()
    assert SURROGATE.tuned(REAL, 1) == 3.5544
    ratios = {method: efficiency_ratio(SURROGATE.tuned(method, 32), 3.5544, alpha=law.alpha, E=law.E)
              for method in ("simple", "stitched", "latent")}
    assert ratios == pytest.approx({"simple": 1.48, "stitched": 1.64, "latent": 1.80}, abs=0.02)
    for method in ("simple", "stitched", "latent"):  # tuned loss falls with G
        losses = [SURROGATE.tuned(method, g) for g in (1, 2, 4, 8, 16, 32)]
        assert losses == sorted(losses, reverse=True)
        gain = {model: SURROGATE.tuned(REAL, 1, model) - SURROGATE.tuned(method, 32, model) for model in ("300m", "1.5b")}
        assert gain["1.5b"] > gain["300m"]  # the student gains more
    assert SURROGATE.tuned("stitched", 4) < SURROGATE.tuned("stitched-first", 4) < SURROGATE.tuned("stitched-none", 4)
    point = {"lr": 0.01, "wd": 0.8, "epochs": 16, "mix": 0.75, "method": "simple", "g": 4}
    assert math.isfinite(SURROGATE.loss(point)) and math.isnan(SURROGATE.loss({**point, "model": "1.5b"}))
    assert SURROGATE.loss({**point, "seed": 1}) != SURROGATE.loss({**point, "seed": 2})  # seed noise
    assert SURROGATE.loss(point) == SURROGATE.loss(dict(point))  # deterministic
    ensemble = SURROGATE.ensemble_losses([3.56, 3.55, 3.57, 3.56])
    assert ensemble == sorted(ensemble, reverse=True) and 3.31 < ensemble[-1] < 3.45


def test_the_rehearsal_sweep_is_the_papers_with_the_surrogate_and_this_machine():
    paper = load_sweep(PAPER)
    sweep = rehearsal_sweep(paper, out="/tmp/out", ledger="postgresql://u@h/db", profile="slurm/profiles/local.yaml")
    for field in ("name", "grid", "start", "certifications", "transfers", "ensembles", "noise", "seed_neighbours"):
        assert getattr(sweep, field) == getattr(paper, field), field
    assert sweep.executor.max_parallel == paper.executor.max_parallel
    assert sweep.executor.max_retries == paper.executor.max_retries
    assert (sweep.objective, sweep.executor.kind, sweep.ledger) == (OBJECTIVE, "slurm", "postgresql://u@h/db")
    assert sweep.objective_version  # pinned: controllers restarted mid-rehearsal agree on identities


def test_the_job_resumes_from_its_checkpoint_and_journals_what_it_did(tmp_path, monkeypatch):
    monkeypatch.setenv(CONTROL_ENV, str(tmp_path))
    monkeypatch.setenv(SCALE_ENV, "0")
    run_dir = tmp_path / "run"
    params = {"lr": 0.003, "wd": 0.8, "epochs": 16, "mix": 0.75, "method": "simple", "g": 4}
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps({"step": 3}))
    metrics = rehearse(params, run_dir=run_dir)
    assert metrics["val_loss"] == SURROGATE.loss(params)
    start, done = read_journal(tmp_path)
    assert start["event"] == "start" and start["resumed_from"] == 3
    assert done["event"] == "done" and done["trained"] == metrics["steps"] - 3
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"] == metrics["steps"]
    (tmp_path / JOURNAL).write_text((tmp_path / JOURNAL).read_text() + '{"cut sh')  # a killed writer's line
    assert len(read_journal(tmp_path)) == 2


def test_the_audit_tells_retries_and_requeues_from_runs_done_twice():
    dispatches = [
        Dispatch("1", "a", "FAILED", 10), Dispatch("2", "a", "COMPLETED", 20),  # OOM-killed, retried
        Dispatch("3", "b", "NODE_FAIL", 10), Dispatch("3", "b", "COMPLETED", 12),  # requeued by SLURM
        Dispatch("4", "c", "COMPLETED", 10), Dispatch("5", "c", "COMPLETED", 40),  # dispatched after its result
        Dispatch("6", "d", "COMPLETED", 10), Dispatch("7", "d", "COMPLETED", 11),  # two jobs both completed
        Dispatch("8", "e", "COMPLETED", 50),  # submitted in the second its result was recorded: its own
    ]
    recorded = {"a": (25.0, "2"), "b": (15.0, "3"), "c": (30.0, "4"), "d": (30.0, "6"), "e": (50.7, "8")}
    journal = [{"run": "f", "event": "done", "t": 1.0, "trained": 5},
               {"run": "f", "event": "done", "t": 2.0, "trained": 0},  # resumed from its last checkpoint
               {"run": "g", "event": "done", "t": 1.0, "trained": 5},
               {"run": "g", "event": "done", "t": 2.0, "trained": 5}]  # trained again
    result = audit(dispatches, recorded, journal)
    assert (result.runs, result.jobs, result.allocations) == (5, 8, 9)
    assert (result.retries, result.requeues) == (3, 1)  # a, c, d have a second job; b a second allocation
    assert sorted(result.run_twice) == ["c", "d", "g"], result.run_twice


def test_a_job_whose_data_is_not_there_raises_a_user_error_naming_it_and_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(CONTROL_ENV, str(tmp_path))
    monkeypatch.setenv(SCALE_ENV, "0")
    data = tmp_path / "data.txt"
    monkeypatch.setenv(DATA_ENV, str(data))
    params = {"lr": 0.003, "wd": 0.8, "epochs": 16, "mix": 0.75, "method": "simple", "g": 4}
    with pytest.raises(UserError, match=str(data)):
        rehearse(params, run_dir=tmp_path / "run")
    [invalid] = read_journal(tmp_path)
    assert invalid["event"] == "invalid" and str(data) in invalid["error"]
    assert not (tmp_path / "run" / "checkpoint").exists()
    data.write_text("documents\n")  # back: the same job trains
    assert rehearse(params, run_dir=tmp_path / "run")["val_loss"] == SURROGATE.loss(params)


def test_the_audit_does_not_count_a_point_run_again_after_its_job_returned_a_failure():
    """An invalid job (a user error) ends COMPLETED in SLURM's accounting; the next certify runs
    the point again in a new job: a retry, not a run twice. Likewise a loss of -inf re-run by
    --retry-failed."""
    dispatches = [Dispatch("1", "a", "COMPLETED", 10), Dispatch("2", "a", "COMPLETED", 40),  # invalid, re-run
                  Dispatch("3", "b", "COMPLETED", 10), Dispatch("4", "b", "COMPLETED", 40)]  # -inf, --retry-failed
    recorded = {"a": (45.0, "2"), "b": (45.0, "4")}
    journal = [{"run": "a", "event": "invalid", "t": 11.0}, {"run": "a", "event": "done", "t": 44.0, "trained": 5},
               {"run": "b", "event": "done", "t": 12.0, "trained": 5, "job": "3"},
               {"run": "b", "event": "done", "t": 44.0, "trained": 5, "job": "4"}]
    result = audit(dispatches, recorded, journal, returned_failure={"a": {"1"}, "b": {"3"}})
    assert result.run_twice == {} and (result.jobs, result.retries) == (4, 2)


def test_the_audit_counts_two_completions_with_a_result_as_run_twice():
    """Two jobs of a run that both returned a result are a run twice, also after an earlier job of it
    returned a failure."""
    dispatches = [Dispatch("1", "a", "COMPLETED", 10), Dispatch("2", "a", "COMPLETED", 11),
                  Dispatch("3", "b", "COMPLETED", 10), Dispatch("4", "b", "COMPLETED", 40), Dispatch("5", "b", "COMPLETED", 41)]
    recorded = {"a": (30.0, "1"), "b": (45.0, "4")}
    result = audit(dispatches, recorded, returned_failure={"b": {"3"}})
    assert result.run_twice == {"a": ["jobs 1, 2 both completed"], "b": ["jobs 4, 5 both completed"]}


def _evaluation(run: str, job: str | None, t: float, *, done: bool = True, resumed_from: int = 0) -> list[dict]:
    """The journal of one evaluation: its ``start``, and its ``done`` unless it was killed."""
    start = {"run": run, "event": "start", "t": t, "job": job, "resumed_from": resumed_from, "steps": 5}
    return [start, {"run": run, "event": "done", "t": t + 1, "job": job, "trained": 5 - resumed_from}][: 1 + done]


def test_the_audit_does_not_count_a_job_that_returned_the_saved_result_as_a_second_computation():
    """A controller killed between sbatch and the ledger recording the job ids: the next one submits
    the run again, and the second job waits on the run directory's lock and returns the saved
    result without evaluating (no ``start`` of its own): a retry, not a run twice. Also when the
    run's evaluation was requeued, or killed once before a retry evaluated it, or its job was
    cancelled after it had saved the result."""
    dispatches = [
        Dispatch("1", "a", "COMPLETED", 10), Dispatch("2", "a", "COMPLETED", 11),  # 1 evaluated, 2 returned it
        Dispatch("3", "b", "COMPLETED", 10), Dispatch("4", "b", "COMPLETED", 11),  # 4 evaluated, 3 returned it
        Dispatch("5", "c", "OUT_OF_MEMORY", 10), Dispatch("6", "c", "COMPLETED", 20),  # killed, retried,
        Dispatch("7", "c", "COMPLETED", 21),  # and submitted again by a restarted controller
        Dispatch("8", "d", "NODE_FAIL", 10), Dispatch("8", "d", "COMPLETED", 12),  # requeued, both allocations started
        Dispatch("9", "d", "COMPLETED", 13),
        Dispatch("10", "e", "CANCELLED", 10), Dispatch("11", "e", "COMPLETED", 11),  # cancelled after it saved
    ]
    recorded = {"a": (30.0, "2"), "b": (30.0, "3"), "c": (30.0, "7"), "d": (30.0, "9"), "e": (30.0, "11")}
    journal = [*_evaluation("a", "1", 12), *_evaluation("b", "4", 12), *_evaluation("c", "5", 11, done=False),
               *_evaluation("c", "6", 22, resumed_from=2), *_evaluation("d", "8", 11, done=False),
               *_evaluation("d", "8", 13, resumed_from=3), *_evaluation("e", "10", 12)]
    result = audit(dispatches, recorded, journal)
    assert result.run_twice == {}
    assert (result.runs, result.jobs, result.retries, result.requeues) == (5, 11, 6, 1)


def test_the_audit_counts_two_jobs_that_each_evaluated_and_completed_as_run_twice():
    """Two completed jobs that each journaled an evaluation are a run twice, also when the second
    trained nothing (it resumed from the last checkpoint: rule (c) alone would not see it) and
    when one of them was requeued. A run none of whose jobs journaled an evaluation (a gap in the
    journal) counts every completed job: the audit does not take a missing line for a witness."""
    dispatches = [
        Dispatch("1", "a", "COMPLETED", 10), Dispatch("2", "a", "COMPLETED", 11),
        Dispatch("3", "b", "NODE_FAIL", 10), Dispatch("3", "b", "COMPLETED", 12), Dispatch("4", "b", "COMPLETED", 13),
        Dispatch("5", "c", "COMPLETED", 10), Dispatch("6", "c", "COMPLETED", 11),  # journaled by no job of its own
    ]
    recorded = {"a": (30.0, "1"), "b": (30.0, "3"), "c": (30.0, "5")}
    journal = [*_evaluation("a", "1", 12), *_evaluation("a", "2", 14, resumed_from=5),
               *_evaluation("b", "3", 11, done=False), *_evaluation("b", "3", 13, resumed_from=2),
               *_evaluation("b", "4", 16), *_evaluation("c", None, 12)]
    result = audit(dispatches, recorded, journal)
    assert sorted(result.run_twice) == ["a", "b", "c"], result.run_twice
    for run, jobs in (("a", "1, 2"), ("b", "3, 4"), ("c", "5, 6")):
        assert f"jobs {jobs} both completed" in result.run_twice[run]
    assert result.run_twice["a"] == ["jobs 1, 2 both completed"]  # trained nothing more: (b) alone sees it
