"""A sweep's run folder is named by the run's identity on the controller, and its job opens the data
later: the job trains only on data of that identity. A store replaced at its path in between fails
the trial in one line and stops the sweep, with nothing trained in the folder (never a folder, or a
ledger trial, named for data A holding a run trained on data B); once the data is put back, a plain
``certify`` trains the point in that folder."""

from __future__ import annotations

import json

import yaml

from megadocs.formats import RunDir, RunStatus
from search.ledger import read_runs
from search.sweep import load_sweep


def _store(tiny_store, corpus, out, first: int) -> None:
    """A small store of 24 of the tiny store's training documents, from the `first`th on."""
    from train.store import prepare

    rows = [json.loads(line) for line in (tiny_store / "train.docs.jsonl").read_text().splitlines()]
    corpus.write_text("".join(json.dumps({"id": r["doc_id"], "text": r["text"][:300]}) + "\n"
                              for r in rows[first:first + 24]))
    prepare(corpus, out, tokenizer=tiny_store / "tokenizer", val_docs=4, seed=0)


def test_a_store_replaced_between_naming_a_run_and_its_job_fails_the_trial(tiny_store, workdir, monkeypatch,
                                                                           capsys):
    import search.objective
    from megadocs.cli import main

    _store(tiny_store, workdir / "a.jsonl", workdir / "store", first=0)
    _store(tiny_store, workdir / "b.jsonl", workdir / "replacement", first=40)
    sweep = {
        "name": "swap", "executor": {"kind": "debug", "max_parallel": 1, "poll_s": 0.05, "max_retries": 1},
        "train": {"data": {"store": "store", "context": 64}, "model": {"preset": "tiny-1m"},
                  "optim": {"batch_size": 8, "micro_batch_size": 8}, "eval": {"val_windows": 4},
                  "device": "cpu"},
        "grid": {"lr": [0.003], "wd": [0.1], "epochs": [1]}, "start": {"lr": 0.003, "wd": 0.1, "epochs": 1},
        "certifications": [{"name": "real", "fixed": {"method": "real"}}],
    }
    path = workdir / "swap.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    task = search.objective.TrainObjective.task

    def replaced_then_task(self, *args, **kwargs):  # after the controller named the run, before its job
        (workdir / "store").rename(workdir / "earlier")
        (workdir / "replacement").rename(workdir / "store")
        return task(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(search.objective.TrainObjective, "task", replaced_then_task)
        assert main(["search", "certify", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    [run] = read_runs(load_sweep(path))
    assert run.status is RunStatus.FAILED and run.to_rerun
    folder = RunDir(workdir / "runs/swap/runs" / run.run_id)
    assert err.startswith("error: objective train: ") and f"the sweep named this run {run.run_id}, but " in err
    assert "replaced at its path" in err and "nothing was trained" in err and run.reason in err
    assert ("put the earlier data (or code) back, or keep the new, and the sweep's next certify names its runs by what "
            "is there (the runs of the earlier data or code are then superseded, not mixed in)") in err  # either way
    assert err.endswith(f"fix it and re-run `megadocs search certify {path}` (it runs this point again)")
    assert not folder.config_hash.exists() and not folder.identity.exists() and not folder.is_done()
    # the user puts the data back and re-runs certify as the line says: the point trains in that folder
    (workdir / "store").rename(workdir / "replacement")
    (workdir / "earlier").rename(workdir / "store")
    assert main(["search", "certify", str(path), "--no-progress"]) == 3  # certified, no axis searched
    failed, trained = read_runs(load_sweep(path))
    assert failed.trial == run.trial and trained.status is RunStatus.COMPLETED and trained.run_id == run.run_id
    assert folder.is_done() and folder.config_hash.read_text().strip() == run.run_id
