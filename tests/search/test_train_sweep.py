"""A real (tiny, CPU) training sweep through the default objective: the real-only baseline and
simple rephrasing (from a synthetic pool the test writes) are certified, and an ensemble of the
baseline's certified point is trained, all through train.loop.run.

The runs execute in-process (the ``debug`` executor): on 2 shared cores each local-executor job
spends most of its time importing torch. Dispatch through submitit's local executor is covered
by tests/search/test_resume.py; this test is about the train/ mapping and real losses."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from search.certificate import CertifyExit
from search.ledger import read_runs
from search.status import summarize
from search.sweep import load_sweep

pytestmark = pytest.mark.slow


def write_mini_corpus(tiny_store, path, documents=36, chars=600) -> list[dict]:
    """Short documents cut from the tiny store's own training documents (keeps every run seconds long)."""
    rows = [json.loads(line) for line in (tiny_store / "train.docs.jsonl").read_text().splitlines()][:documents]
    rows = [{"id": row["doc_id"], "text": row["text"][:chars]} for row in rows]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def write_simple_pool(pool, store) -> None:
    """A G=1 rephrase pool of the store (one made-up "rephrase" per real document: its words
    reversed), tokenized, as `megadocs gen rephrase` and `megadocs data tokenize-pool` write them."""
    from tests.pools import write_rephrase_pool

    write_rephrase_pool(pool, store, g=1, rephrase=lambda doc_id, text, k: " ".join(reversed(text.split())),
                        generator="reversed-words", prompt_template={"name": "none", "sha256": "0" * 64})


def test_training_sweep_certifies_real_and_simple(tiny_store, workdir, monkeypatch):
    import torch

    from megadocs.cli import main
    from train.store import prepare

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the cores are shared with other work: one thread is faster
    # 18 training documents (6 held out): every run of the sweep half as many steps as with the default 36
    write_mini_corpus(tiny_store, workdir / "mini.jsonl", documents=24)
    prepare(workdir / "mini.jsonl", workdir / "store", tokenizer=tiny_store / "tokenizer", val_docs=6, seed=0)
    write_simple_pool(workdir / "pool", workdir / "store")  # from the store's train split: no val text
    sweep = {
        "name": "tiny",
        "executor": {"kind": "debug", "max_parallel": 2, "poll_s": 0.1, "max_retries": 1},
        "train": {
            "data": {"store": "store", "context": 64},
            "model": {"preset": "tiny-1m"},
            "optim": {"batch_size": 16, "micro_batch_size": 16, "warmup_fraction": 0.1},
            "eval": {"val_windows": 32},
            "checkpoint_every": 1000,
            "device": "cpu",
        },
        "pools": {"simple": "pool"},
        "grid": {"lr": [0.003, 0.01], "wd": [0.1], "epochs": [1, 2], "mix": [0.5, 0.75]},
        "start": {"lr": 0.003, "wd": 0.1, "epochs": 1, "mix": 0.5},
        "certifications": [
            {"name": "real", "fixed": {"method": "real"},
             "grid": {"lr": [0.003, 0.01], "wd": [0.1], "epochs": [1, 2]}},
            {"name": "simple-g1", "fixed": {"method": "simple", "g": 1}},
        ],
        "ensembles": [{"name": "real-ens", "from": "real", "members": 2, "epochs_multiplier": 2}],
    }
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))

    try:
        # two values per axis: every certificate sits on a grid edge (certified, exit 3)
        assert main(["search", "certify", str(path), "--no-progress"]) == CertifyExit.CERTIFIED_ON_BOUND
    finally:
        torch.set_num_threads(threads)

    summaries = {s.name: s for s in summarize(load_sweep(path))}
    assert summaries["real"].state.value == summaries["simple-g1"].state.value == "certified"
    runs = read_runs(load_sweep(path))
    assert all(r.status == "completed" for r in runs)
    for run in runs:
        config = yaml.safe_load((workdir / "runs/tiny/runs" / run.run_id / "config.yaml").read_text())
        assert run.run_id == run.metrics.config_hash  # identity = RunConfig.identity()
        assert config["optim"]["lr"] == run.point["lr"] and config["optim"]["weight_decay"] == 0.1
        method = run.fixed["method"]
        if method == "real":
            assert config["data"]["synthetic"] is None and config["data"]["mixing_fraction"] == 0
        else:
            assert config["data"]["synthetic"]["algorithm"] == "simple" and config["data"]["synthetic"]["g"] == 1
            assert config["data"]["mixing_fraction"] == run.point["mix"]
        assert math.isfinite(run.loss) and run.loss == run.metrics.val_loss
        # trackers group a run under the (first) certification that asked for it; the ledger
        # holds the run's provenance
        sharing = {r.certification for r in runs if r.run_id == run.run_id}
        assert config["tracking"]["group"] in sharing
        assert run.provenance["torch_version"] == torch.__version__ and run.provenance["git_commit"]
    for name in ("real", "simple-g1"):
        cert = summaries[name].certificate
        assert all(n.loss >= cert.loss for n in cert.neighbours)
    # ensemble members: the certified point with doubled epochs and their own seeds
    real_point = summaries["real"].certificate.point
    members = [r for r in runs if r.certification == "ensemble/real-ens"]
    assert len(members) == 2
    for member in members:
        config = yaml.safe_load((workdir / "runs/tiny/runs" / member.run_id / "config.yaml").read_text())
        assert config["data"]["real_epochs"] == 2 * real_point["epochs"]
        assert config["seed"] == config["data"]["seed"] == member.fixed["seed"]
        assert (workdir / "runs/tiny/runs" / member.run_id / "model").is_dir()
    assert {m.fixed["seed"] for m in members} == {1, 2}
    # TensorBoard sees every run under its certification and point, not under its hash
    links = workdir / "runs/tiny/tensorboard"
    linked = {(p.parent.relative_to(links).as_posix(), p.resolve()) for p in links.rglob("*") if p.is_symlink()}
    assert {(r.certification, (workdir / "runs/tiny/runs" / r.run_id / "tensorboard").resolve())
            for r in runs} <= linked


@pytest.mark.parametrize(("change", "expected"), [
    ({"pools": {"simple": "missing-pool"}}, "pools.simple: "),
    ({"train": {"data": {"store": "store", "context": 64}, "optim": {"batch_size": 10, "micro_batch_size": 4}}},
     "optim.micro_batch_size: 4 must divide batch_size 10"),
])
def test_train_config_mistakes_fail_before_anything_runs(workdir, capsys, change, expected):
    from megadocs.cli import main

    sweep = {
        "name": "bad", "executor": {"kind": "debug"},
        "train": {"data": {"store": "store", "context": 64}},
        "pools": {"simple": "pool"},
        "grid": {"lr": [0.003, 0.01], "mix": [0.5]}, "start": {"lr": 0.003, "mix": 0.5},
        "certifications": [{"name": "s", "fixed": {"method": "simple", "g": 1}}],
        **change,
    }
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main(["search", "certify", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err
    assert not (workdir / "runs/bad/runs").exists()


def test_a_pool_training_could_not_read_is_refused_before_anything_runs(tiny_store, workdir, capsys):
    """search needs what training needs, no more: the tokenized pool (no assembled file), checked
    before the first run is dispatched, with the command that makes it."""
    from megadocs.cli import main
    from tests.pools import write_rephrase_pool

    write_rephrase_pool(workdir / "pool", tiny_store, g=1, tokenize=False)
    sweep = {
        "name": "untokenized", "executor": {"kind": "debug"},
        "train": {"data": {"store": str(tiny_store), "context": 64}},
        "pools": {"simple": "pool"},
        "grid": {"lr": [0.003, 0.01], "mix": [0.5]}, "start": {"lr": 0.003, "mix": 0.5},
        "certifications": [{"name": "s", "fixed": {"method": "simple", "g": 1}}],
    }
    path = workdir / "untokenized.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main(["search", "certify", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: pools.simple: ") and "\n" not in err
    assert f"megadocs data tokenize-pool --pool {workdir / 'pool'} --store {tiny_store}" in err
    assert not (workdir / "runs/untokenized/runs").exists()
