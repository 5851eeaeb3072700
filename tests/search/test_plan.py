"""`megadocs search plan`: run counts from the grid and the certification rule, GPU-hours by hand."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest

from megadocs.cli import main
from search.plan import Assumptions
from tests.commands import command_parser
from train.model import PRESETS
from train.store import TokenStore


@pytest.mark.parametrize(("option", "value"), [("--mfu", "nan"), ("--mfu", "2"), ("--mfu", "0"),
                                               ("--peak-tflops", "-1"), ("--peak-tflops", "inf")])
def test_a_utilisation_no_device_has_is_refused_also_where_no_run_trains(make_sweep, capsys, option, value):
    """`search plan --mfu nan` on a sweep of a callable objective (no GPU-hours to compute) printed
    the plan and exited 0, where `train --dry-run --mfu nan` refused it: the same one line, exit 2."""
    assert main(["search", "plan", str(make_sweep()), option, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith(f"error: {option}: ")


@pytest.mark.parametrize("figure", [figure.name for figure in dataclasses.fields(Assumptions)])
def test_an_assumed_figure_that_is_no_count_is_refused_naming_its_flag(figure, make_sweep, capsys):
    """`search plan --assume-vocab-size 0.5` was accepted as a vocabulary of 0 (and any figure 'nan'
    as nan): each figure is refused in one line naming its flag (Assumptions.parse's FieldError)."""
    from megadocs.cli import option_flags

    flag = option_flags(command_parser("search", "plan"))[figure]
    whole = typing.get_type_hints(Assumptions)[figure] == int | None
    for value, problem in [("nan", "expected a positive number, got 'nan'"), ("-2", "expected a positive number"),
                           *[("0.5", "expected a whole number of tokens, got '0.5'")] * whole]:
        assert main(["search", "plan", str(make_sweep()), flag, value]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith(f"error: {flag}: {problem}"), captured.err
        assert captured.err.count("\n") == 1


def test_run_counts_of_a_callable_sweep(make_sweep, capsys):
    path = make_sweep(certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                      {"name": "capped", "max_runs": 10}])
    assert main(["search", "plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first, capped = plan["certifications"]
    # start lr 0.003, wd 0.8, epochs 8 is inside every axis: 6 neighbours
    assert (first["grid_size"], first["best"], first["worst"]) == (72, 7, 72)
    assert first["best"] <= first["expected"] <= first["worst"]
    assert capped["worst"] == 10 and capped["expected"] <= 10
    assert plan["total"] == {"runs_expected": first["expected"] + capped["expected"], "runs_worst": 82}
    assert plan["mfu"] is None and "gpu_hours_expected" not in first  # no train runs, no GPU-hours
    assert main(["search", "plan", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:5] == ["a", "72", "7", f"{first['expected']:.1f}", "72"]


def test_run_counts_include_the_repeats_of_noise_aware_certification(make_sweep, capsys):
    """noise.repeats = 3: the centre takes three draws; the ceiling is three runs per point."""
    path = make_sweep(noise={"repeats": 3},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                      {"name": "quiet", "fixed": {"method": "simple", "g": 8}, "noise": {"repeats": 1}}])
    assert main(["search", "plan", str(path), "--json"]) == 0
    noisy, quiet = json.loads(capsys.readouterr().out)["certifications"]
    assert (noisy["best"], noisy["worst"]) == (3 + 6, 3 * 72)
    assert (quiet["best"], quiet["worst"]) == (7, 72)
    # every simulated certification ends on a centre with all three draws, and visits at least one
    assert noisy["expected"] >= quiet["expected"] + 2


def test_gpu_hours_of_a_train_sweep_match_hand_computation(make_sweep, tiny_store, capsys):
    context, batch, mfu, peak = 32, 4, 0.5, 200.0
    path = make_sweep(
        objective=None,
        grid={"lr": [0.001, 0.003], "epochs": [1, 2], "mix": [0.5]},
        start={"lr": 0.003, "epochs": 1, "mix": 0.5},
        train={"data": {"store": str(tiny_store), "context": context}, "model": {"preset": "tiny-1m"},
               "optim": {"batch_size": batch, "micro_batch_size": batch}},
        pools={"simple": "pools/simple-g{g}"},  # not generated yet: planning needs no pool
        certifications=[{"name": "real", "fixed": {"method": "real"}, "grid": {"lr": [0.001, 0.003], "epochs": [1, 2]}},
                        {"name": "simple", "fixed": {"method": "simple", "g": 1}}],
        transfers=[{"name": "again", "from": "simple", "fixed": {"method": "simple", "g": 1}}],
    )
    assert main(["search", "plan", str(path), "--json", "--mfu", str(mfu), "--peak-tflops", str(peak)]) == 0
    plan = json.loads(capsys.readouterr().out)
    store = TokenStore.open(tiny_store)
    lengths = store.split("train").lengths
    windows = int((lengths.sum() + len(lengths)) // context)
    hidden, vocab = 128, store.vocab_size
    params = PRESETS["tiny-1m"].params + 2 * hidden * (vocab - 512)
    flops = 6 * (params - vocab * hidden) + 12 * 4 * 128 * context

    def hours(tokens):
        return tokens * flops / (mfu * peak * 1e12) / 3600

    real = plan["certifications"][0]
    assert (real["best"], real["worst"]) == (3, 4)  # start + its 2 neighbours; the whole grid
    # two lr values x epochs 1 and 2, every real window once per epoch
    assert real["gpu_hours_worst"] == pytest.approx(2 * hours((1 + 2) * windows * context), rel=1e-9)
    assert real["start_run"]["tokens"] == windows * context
    simple = plan["certifications"][1]
    assert simple["start_run"]["tokens"] > 1.9 * windows * context  # half of each batch synthetic
    transfer = plan["transfers"][0]  # one run at the source's (planned: start) point
    assert transfer["runs"] == 1 and transfer["gpu_hours"] == simple["start_run"]["gpu_hours"]
    assert plan["total"]["gpu_hours_worst"] == pytest.approx(
        real["gpu_hours_worst"] + simple["gpu_hours_worst"] + transfer["gpu_hours"])
    assert plan["total"]["runs_worst"] == 4 + 4 + 1  # both grids hold 4 points


def test_plan_json_is_the_dict_sweep_plan_returned_before_it_was_typed(make_sweep, tiny_store, capsys):
    """`search plan --json` prints `SweepPlan.to_dict()`: byte for byte the dict `sweep_plan` built
    until issue 29 typed it (``mfu_source`` added last by the command), rebuilt here the old way
    from the records (totals summed from the entries), with every kind of entry present."""
    from megadocs.formats import dumps_json
    from search.plan import Assumptions, sweep_plan
    from search.sweep import load_sweep
    from train.plan import default_utilisation

    path = make_sweep(
        objective=None, grid={"lr": [0.001, 0.003], "epochs": [1, 2], "mix": [0.5]},
        start={"lr": 0.003, "epochs": 1, "mix": 0.5}, extend={"epochs": {"above": [4]}},
        train={"data": {"store": str(tiny_store), "context": 32}, "model": {"preset": "tiny-1m"},
               "optim": {"batch_size": 4, "micro_batch_size": 4}},
        pools={"simple": "pools/simple-g{g}"},
        certifications=[{"name": "real", "fixed": {"method": "real"}, "grid": {"lr": [0.001, 0.003], "epochs": [1, 2]}},
                        {"name": "simple", "fixed": {"method": "simple", "g": 1}}],
        transfers=[{"name": "again", "from": "simple", "fixed": {"method": "simple", "g": 1}}],
        ensembles=[{"name": "ens", "from": "real", "members": 3, "epochs_multiplier": 2}],
    )  # fmt: skip
    assert main(["search", "plan", str(path), "--json", "--mfu", "0.5", "--peak-tflops", "200",
                 "--assume-real-documents", "300"]) == 0
    printed = capsys.readouterr().out
    plan = sweep_plan(load_sweep(path), default_utilisation(0.5, 200.0), assume=Assumptions(real_documents=300.0))

    def start_run(cost):
        return {"steps": cost.steps, "tokens": cost.tokens, "gpu_hours": cost.gpu_hours,
                "wall_hours": cost.wall_hours, "parallelism": cost.parallelism,
                "memory_per_device_gib": cost.memory.total / 2**30}  # fmt: skip

    certifications = [{
        "name": c.name, "grid_size": c.grid_size, "extended_grid_size": c.extended_grid_size,
        "extend": {axis: {"below": list(e.below), "above": list(e.above)} for axis, e in c.extend.items()},
        "best": c.best, "expected": c.expected, "worst": c.worst, "start_run": start_run(c.cost.start_run),
        "gpu_hours_expected": c.cost.gpu_hours_expected, "gpu_hours_worst": c.cost.gpu_hours_worst,
        "done": None,  # added last (cli-exits): what the ledger says is done; null before anything ran
    } for c in plan.certifications]  # fmt: skip
    ensembles, transfers = ([{"name": e.name, "from": e.source, "runs": e.runs, "gpu_hours": e.gpu_hours,
                              "done": None}  # added last (smallfixes2): as a certification's
                             for e in extra] for extra in (plan.ensembles, plan.transfers))  # fmt: skip
    extras = ensembles + transfers
    hours = sum(e["gpu_hours"] for e in extras)
    before = {
        "sweep": "t", "mfu": 0.5, "peak_tflops": 200.0, "processes_per_run": 1, "scaling_efficiency": 1.0,
        "simulations": 64, "certifications": certifications, "ensembles": ensembles, "transfers": transfers,
        "assumed": {"real_documents": {"value": 300.0, "why": "given on the command line"}},
        "total": {"runs_expected": sum(c["expected"] for c in certifications) + sum(e["runs"] for e in extras),
                  "runs_worst": sum(c["worst"] for c in certifications) + sum(e["runs"] for e in extras),
                  "gpu_hours_expected": sum(c["gpu_hours_expected"] for c in certifications) + hours,
                  "gpu_hours_worst": sum(c["gpu_hours_worst"] for c in certifications) + hours},
        "mfu_source": "given (--mfu)",
        "mfu_device": None,  # added last (gpuplan): the GPU measured, none when both figures are given
        "warnings": [],  # added last (srch): status's start-edit lines, none before anything ran
    }  # fmt: skip
    assert printed == dumps_json(before, indent=1) + "\n"
    assert [c["extended_grid_size"] for c in certifications] == [6, 6] and len(extras) == 2


def test_synthetic_only_points_are_costed_from_synthetic_epochs(make_sweep, tiny_store, capsys):
    """mix 1: steps = ceil(synthetic windows * synthetic_epochs / batch), the stream's size from the
    megadoc rule before the pool exists: per real document G rephrases of the assumed length, the
    real document, an EOS after each segment; the assumed figure is listed."""
    from search.plan import PAPER, synthetic_tokens_per_document

    context, batch, g = 32, 4, 4
    path = make_sweep(
        objective=None,
        grid={"lr": [0.003], "synthetic_epochs": [1, 2], "mix": [1.0]},
        start={"lr": 0.003, "synthetic_epochs": 1, "mix": 1.0},
        train={"data": {"store": str(tiny_store), "context": context}, "model": {"preset": "tiny-1m"},
               "optim": {"batch_size": batch, "micro_batch_size": batch}},
        pools={"stitched": "pools/stitched-g{g}"},
        certifications=[{"name": "so", "fixed": {"method": "stitched", "g": g}}],
    )
    assert main(["search", "plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    split = TokenStore.open(tiny_store).split("train")
    per_document = synthetic_tokens_per_document("stitched", g, real_tokens_per_document=split.num_tokens /
                                                 split.num_documents, tokens_per_generation=708, tokens_per_thought=0)
    assert per_document == g * 708 + split.num_tokens / split.num_documents + g + 1
    windows = int(split.num_documents * per_document // context)
    start = plan["certifications"][0]["start_run"]
    assert start["steps"] == math.ceil(windows * 1 / batch)
    assert start["tokens"] == windows * context  # every estimated synthetic window once
    assert plan["assumed"] == {"tokens_per_generation": {"value": PAPER.tokens_per_generation,
                                                         "why": f"no generated rephrase pool at "
                                                                f"{path.parent / 'pools' / 'stitched-g4'}"}}


def test_a_sweep_is_planned_before_any_data_exists(make_sweep, workdir, capsys):
    """No store, no pool: GPU-hours from the paper's sizes, each assumed figure named; figures given
    on the command line replace them (and are said to be given)."""
    path = make_sweep(
        objective=None, grid={"lr": [0.003], "mix": [0.5]}, start={"lr": 0.003, "mix": 0.5},
        train={"data": {"store": "runs/nowhere", "context": 4096}, "model": {"preset": "300m"},
               "optim": {"batch_size": 64, "micro_batch_size": 16}},
        pools={"latent": "pools/thoughts-g{g}"},
        certifications=[{"name": "real", "fixed": {"method": "real"}, "grid": {"lr": [0.003]}},
                        {"name": "latent", "fixed": {"method": "latent", "g": 4}}])
    assert main(["search", "plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert set(plan["assumed"]) == {"real_tokens", "real_documents", "vocab_size"}  # mixed runs: no pool size
    assert plan["assumed"]["real_tokens"]["value"] == 200e6 and "no token store" in plan["assumed"]["real_tokens"]["why"]
    real = plan["certifications"][0]["start_run"]
    windows = int((200e6 + 164_000) // 4096)
    assert real["tokens"] == 8 * windows * 4096  # real_epochs 8 (the default) over the assumed stream
    assert main(["search", "plan", str(path), "--json", "--assume-real-tokens", "100M"]) == 0
    half = json.loads(capsys.readouterr().out)
    assert half["assumed"]["real_tokens"] == {"value": 100e6, "why": "given on the command line"}
    assert half["certifications"][0]["start_run"]["tokens"] == 8 * int((100e6 + 164_000) // 4096) * 4096
    assert main(["search", "plan", str(path)]) == 0
    assert "(assumed real tokens = 200,000,000: no token store at" in capsys.readouterr().out
    assert main(["search", "plan", str(path), "--assume-real-tokens", "lots"]) == 2
    assert "--assume-real-tokens: expected a number such as 708" in capsys.readouterr().err


def test_the_paper_sweep_is_planned_on_a_fresh_clone(monkeypatch):
    """search/examples/paper-300m.yaml gives GPU-hours with no data on disk (paths are relative to
    the repository root; one simulation per certification keeps the test short)."""
    from pathlib import Path

    from search.plan import format_sweep_plan, sweep_plan
    from search.sweep import load_sweep
    from train.gpu_results import Utilisation

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    sweep = load_sweep("search/examples/paper-300m.yaml")
    plan = sweep_plan(sweep, Utilisation(0.4, 989.0, "given"), simulations=1)
    assert plan.gpu_hours_expected > 0 and plan.gpu_hours_worst > 0
    # the table's columns line up under names longer than "certification" (ensembles, transfers),
    # and GPU-hours in the thousands are written out
    table = [line for line in format_sweep_plan(plan).splitlines() if not line.startswith("(")]
    assert len(table) == 2 + len(plan.certifications) + len(plan.ensembles) + len(plan.transfers)
    assert len({len(line) for line in table}) == 1
    assert not any("e+" in line for line in table) and "," in table[-1]
    if not (root / "runs/dclm/data").exists():
        assert {"real_tokens", "real_documents", "vocab_size"} <= set(plan.assumed)



def test_the_table_says_a_runs_memory_per_device_and_wall_hours(monkeypatch):
    """Before launching, a user asks whether one run fits a GPU and how long it holds it: the text
    view says the range over the certifications' start runs (README: `search plan` gives the wall
    hours and the memory per GPU), the same figures as `--json`'s `start_run`. The paper's sweep
    fits every preset on the 80 GB GPU it is planned for (at micro-batch 16 the 1.5b student needed
    about 163 GiB; `auto` also gives the 300m the micro-batch the device check measured)."""
    from pathlib import Path

    from search.plan import format_sweep_plan, sweep_plan
    from search.sweep import load_sweep
    from train.gpu_results import Utilisation
    from train.plan import DEFAULT_DEVICE_MEMORY_GIB

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    plan = sweep_plan(load_sweep("search/examples/paper-300m.yaml"), Utilisation(0.4, 989.0, "given"), simulations=1)
    runs = [c.to_dict()["start_run"] for c in plan.certifications]
    memory = sorted(run["memory_per_device_gib"] for run in runs)
    wall = sorted(run["wall_hours"] for run in runs)
    assert memory[0] < memory[-1] and wall[0] < wall[-1]  # the 300m and the 1.5b presets
    assert memory[-1] <= DEFAULT_DEVICE_MEMORY_GIB
    line = next(line for line in format_sweep_plan(plan).splitlines() if "GiB per device" in line)
    assert f"{memory[0]:.1f}-{memory[-1]:.1f} GiB per device" in line, line
    assert f"{wall[0]:.3g}-{wall[-1]:.3g} wall hours" in line, line

def test_gpu_hours_count_every_process_of_a_data_parallel_profile(make_sweep, tiny_store, workdir, capsys):
    import yaml

    train = {"data": {"store": str(tiny_store), "context": 32}, "model": {"preset": "tiny-1m"},
             "optim": {"batch_size": 4, "micro_batch_size": 4}}
    common = dict(objective=None, grid={"lr": [0.001, 0.003]}, start={"lr": 0.003}, train=train,
                  certifications=[{"name": "real", "fixed": {"method": "real"}}])
    profile = workdir / "profile-4-tasks.yaml"
    profile.write_text(yaml.safe_dump({"partition": "debug", "gpus_per_node": 4, "tasks_per_node": 4}))
    plans = []
    for name, executor in [("one", {"kind": "debug"}), ("four", {"kind": "slurm", "profile": str(profile)})]:
        assert main(["search", "plan", str(make_sweep(name, executor=executor, **common)), "--json"]) == 0
        plans.append(json.loads(capsys.readouterr().out))
    one, four = plans
    assert (one["processes_per_run"], four["processes_per_run"]) == (1, 4)
    run_one, run_four = one["certifications"][0]["start_run"], four["certifications"][0]["start_run"]
    assert run_four["gpu_hours"] == pytest.approx(run_one["gpu_hours"] / 0.9, rel=1e-12)  # 90% efficiency
    assert run_four["wall_hours"] == pytest.approx(run_one["wall_hours"] / (4 * 0.9), rel=1e-12)


def test_start_run_memory_per_device_counts_fsdp_shards(make_sweep, tiny_store, workdir, capsys):
    import yaml

    from train.plan import memory_estimate

    profile = workdir / "profile-4-tasks.yaml"
    profile.write_text(yaml.safe_dump({"partition": "debug", "gpus_per_node": 4, "tasks_per_node": 4}))
    runs = {}
    for parallelism in ("ddp", "fsdp"):
        train = {"data": {"store": str(tiny_store), "context": 32}, "model": {"preset": "tiny-1m"},
                 "optim": {"batch_size": 4, "micro_batch_size": 2}, "parallelism": parallelism}
        sweep = make_sweep(parallelism, objective=None, grid={"lr": [0.001, 0.003]}, start={"lr": 0.003},
                           train=train, certifications=[{"name": "real", "fixed": {"method": "real"}}],
                           executor={"kind": "slurm", "profile": str(profile)})  # fmt: skip
        assert main(["search", "plan", str(sweep), "--json"]) == 0
        runs[parallelism] = json.loads(capsys.readouterr().out)["certifications"][0]["start_run"]
    vocab = TokenStore.open(tiny_store).vocab_size
    for parallelism, shards in (("ddp", 1), ("fsdp", 4)):
        expected = memory_estimate("tiny-1m", vocab_size=vocab, context=32, micro_batch_size=2,
                                   mixed_precision=True, shards=shards, compiled=True)  # fmt: skip (compile: auto on CUDA)
        assert runs[parallelism]["parallelism"] == parallelism
        assert runs[parallelism]["memory_per_device_gib"] == pytest.approx(expected.total / 2**30, rel=1e-12)
    assert runs["fsdp"]["memory_per_device_gib"] < runs["ddp"]["memory_per_device_gib"]
    assert runs["fsdp"]["gpu_hours"] == runs["ddp"]["gpu_hours"]  # sharding changes memory, not the FLOPs counted


def _gpu_results(path, *, device="NVIDIA H200", mfu=0.312):
    row = {"preset": "300m", "context": 4096, "micro_batch": 16, "compile": "regional", "loss": "liger",
           "tokens_per_s": 1.0, "flops_per_token": 1.0, "peak_tflops": 989.0, "mfu": mfu, "peak_mem_gb": 1.0,
           "shipped": True}
    path.write_text(json.dumps({"device": device, "torch": "2.11.0", "cuda": "13.0", "date": "2026-12-01",
                                "train": [row, {**row, "compile": "whole", "mfu": 0.9, "shipped": False}],
                                "checks": []}))  # fmt: skip
    return path


@pytest.mark.parametrize("figure", ["mfu", "peak_tflops"])
def test_a_measured_figure_no_device_has_is_named_by_its_measurement_not_a_flag(figure, make_sweep, tmp_path,
                                                                               monkeypatch, capsys):
    """A device check's file whose shipped row has MFU 0 (or peak 0) was planned with (exit 0) or
    refused as '--mfu: ...', a flag nobody typed: now the measurement and its field, one line."""
    import train.gpu_results

    path = _gpu_results(tmp_path / "gpu.json")
    results = json.loads(path.read_text())
    results["train"][0][figure] = 0.0
    path.write_text(json.dumps(results))
    monkeypatch.setattr(train.gpu_results, "GPU_RESULTS", path)
    assert main(["search", "plan", str(make_sweep())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: measured on NVIDIA H200 (") and f"gpu.json, 2026-12-01): {figure}: expected " in err
    assert err.count("\n") == 1


def test_gpu_hours_take_the_mfu_the_device_check_measured(make_sweep, tiny_store, tmp_path, monkeypatch, capsys):
    import train.gpu_results

    path = make_sweep(objective=None, grid={"lr": [0.001, 0.003], "epochs": [1, 2], "mix": [0.5]},
                      start={"lr": 0.003, "epochs": 1, "mix": 0.5},
                      train={"data": {"store": str(tiny_store), "context": 32}, "model": {"preset": "tiny-1m"}},
                      certifications=[{"name": "real", "fixed": {"method": "real"},
                                       "grid": {"lr": [0.001, 0.003], "epochs": [1, 2]}}])  # fmt: skip
    monkeypatch.setattr(train.gpu_results, "GPU_RESULTS", tmp_path / "absent.json")
    assert main(["search", "plan", str(path), "--json"]) == 0
    assumed = json.loads(capsys.readouterr().out)
    assert (assumed["mfu"], assumed["peak_tflops"]) == (0.4, 989.0) and assumed["mfu_source"].startswith("assumed")

    monkeypatch.setattr(train.gpu_results, "GPU_RESULTS", _gpu_results(tmp_path / "gpu.json"))
    assert main(["search", "plan", str(path), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["mfu"] == 0.312 and "measured on NVIDIA H200" in measured["mfu_source"]  # the shipped row
    hours = measured["certifications"][0]["gpu_hours_worst"]
    assert hours == pytest.approx(assumed["certifications"][0]["gpu_hours_worst"] * 0.4 / 0.312)
    assert main(["search", "plan", str(path)]) == 0
    assert "at MFU 0.312 of 989.0 TFLOP/s, measured on NVIDIA H200" in capsys.readouterr().out
    assert main(["search", "plan", str(path), "--json", "--mfu", "0.5"]) == 0
    given = json.loads(capsys.readouterr().out)  # the peak is still the measured GPU's, and says so
    assert (given["mfu_source"], given["peak_tflops"]) == ("given (--mfu); peak of NVIDIA H200", 989.0)

    _gpu_results(tmp_path / "gpu.json", device="cpu")  # a CPU rehearsal's results never count
    assert main(["search", "plan", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mfu"] == 0.4


def test_plan_of_several_gpus_measured_takes_the_lowest_mfu_or_the_one_gpu_names(make_sweep, tiny_store, tmp_path,
                                                                                   monkeypatch, capsys):  # fmt: skip
    import train.gpu_results
    from tests.train.test_gpu_results import H100, H200, write_gpu_results

    path = make_sweep(objective=None, grid={"lr": [0.001], "epochs": [1]}, start={"lr": 0.001, "epochs": 1},
                      train={"data": {"store": str(tiny_store), "context": 32}, "model": {"preset": "tiny-1m"}},
                      certifications=[{"name": "real", "fixed": {"method": "real"}}])  # fmt: skip
    two_gpus = write_gpu_results(tmp_path / "gpu.json", {H200: 0.52, None: 0.441})  # the file's own: the H100
    monkeypatch.setattr(train.gpu_results, "GPU_RESULTS", two_gpus)
    assert main(["search", "plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["mfu"], plan["mfu_device"]) == (0.441, H100) and f"also {H200} MFU 0.520" in plan["mfu_source"]
    assert main(["search", "plan", str(path), "--json", "--gpu", "h200"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["mfu"], plan["mfu_device"]) == (0.52, H200) and "also" not in plan["mfu_source"]
    assert main(["search", "plan", str(path), "--gpu", "a100"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --gpu a100: no GPU measured in benchmarks/results/gpu.json "
                                               f"matches (measured: {H200}, {H100})")  # fmt: skip


def test_train_and_search_plans_cost_a_run_alike(make_sweep, tiny_store):
    """`megadocs train --dry-run` (train.plan.run_plan) and `megadocs search plan` (RunCoster) cost a
    run through one train.plan.run_cost: the same config over the same store gives the same steps,
    tokens, GPU-hours, parallelism and memory for every preset; with no store, search's assumed
    streams give run_cost's cost of the paper's sizes."""
    from search.plan import PAPER, RunCoster
    from search.sweep import load_sweep
    from train.gpu_results import Utilisation
    from train.plan import run_cost, run_plan
    from train.presets import PRESETS as PRESET_TABLE

    mfu, peak = 0.5, 200.0
    params = {"method": "real", "lr": 0.003, "epochs": 2}
    for preset in PRESET_TABLE:
        path = make_sweep(objective=None, grid={"lr": [0.003], "epochs": [2]}, start={"lr": 0.003, "epochs": 2},
                          train={"data": {"store": str(tiny_store), "context": 32}, "model": {"preset": preset},
                                 "optim": {"batch_size": 4, "micro_batch_size": "auto"}},
                          certifications=[{"name": "real", "fixed": {"method": "real"}}])
        coster = RunCoster(load_sweep(path), mfu=mfu, peak_tflops=peak)
        searched = coster.cost(params)
        trained = run_plan(coster.objective.config(params), utilisation=Utilisation(mfu, peak, "given")).cost
        assert {key: getattr(trained, key) for key in ("steps", "tokens", "gpu_hours", "wall_hours", "parallelism")} \
            == {key: getattr(searched, key) for key in ("steps", "tokens", "gpu_hours", "wall_hours", "parallelism")}, preset
        assert trained.memory.total == searched.memory.total, preset
        assert trained == searched, preset  # the one RunCost, field for field
        assert coster.assumed == {}  # every size measured

    path = make_sweep(objective=None, grid={"lr": [0.003], "mix": [0.5]}, start={"lr": 0.003, "mix": 0.5},
                      train={"data": {"store": "runs/nowhere", "context": 4096}, "model": {"preset": "300m"},
                             "optim": {"batch_size": 64, "micro_batch_size": "auto"}},
                      pools={"latent": "pools/thoughts-g{g}"},
                      certifications=[{"name": "latent", "fixed": {"method": "latent", "g": 4}}])
    coster = RunCoster(load_sweep(path), mfu=mfu, peak_tflops=peak)
    params = {"method": "latent", "g": 4, "lr": 0.003, "mix": 0.5}
    assumed_windows = int((PAPER.real_tokens + PAPER.real_documents) // 4096)  # one EOS per document
    assert coster.run_cost(params) == run_cost(coster.objective.config(params), real_windows=assumed_windows,
                                               synthetic_windows=1, vocab_size=PAPER.vocab_size, mfu=mfu,
                                               peak_tflops=peak)
    assert set(coster.assumed) == {"real_tokens", "real_documents", "vocab_size"}


def test_plan_of_a_partly_run_sweep_says_what_is_done_and_what_remains(make_sweep, capsys):
    """`plan` on a sweep that had run counted its runs as if nothing had: the ledger was not read."""
    path = make_sweep(certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                      {"name": "b", "fixed": {"method": "simple", "g": 8}}])
    assert main(["search", "plan", str(path), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert [c["done"] for c in before["certifications"]] == [None, None] and "runs_finished" not in before["total"]

    main(["search", "certify", str(path), "--no-progress", "--max-runs", "2"])  # budget spent: exit 1
    capsys.readouterr()
    assert main(["search", "plan", str(path), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    for plan, planned in zip(after["certifications"], before["certifications"]):
        done = plan["done"]
        assert (done["state"], done["finished"], done["running"], done["failed"]) == ("stopped", 2, 0, 0), done  # its budget: still remaining
        assert done["remaining_worst"] == planned["worst"] - 2
        assert done["remaining_expected"] == max(planned["expected"] - 2, 0)
    assert after["total"]["runs_finished"] == 4
    assert after["total"]["runs_remaining_worst"] == before["total"]["runs_worst"] - 4
    assert main(["search", "plan", str(path)]) == 0
    table = capsys.readouterr().out
    assert "left worst" in table.splitlines()[0] and "(done: finished runs in the ledger" in table


def test_plan_reads_the_ledger_without_importing_torch(make_sweep):
    import subprocess
    import sys

    path = make_sweep()
    main(["search", "certify", str(path), "--no-progress", "--max-runs", "1"])
    code = ("import sys; from megadocs.cli import main; main(['search', 'plan', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'plan imported torch'")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-2000:]


def test_plan_counts_the_finished_ensemble_members_and_transfer_runs_as_done(make_sweep, capsys):
    """`plan` counted every ensemble member and transfer run as still to run, finished or not: the
    ledger was read for the certifications only. A member added to a finished ensemble is what is left."""
    small = {"grid": {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8], "epochs": [4, 8]},
             "start": {"lr": 0.003, "wd": 0.8, "epochs": 8}}
    transfers = [{"name": "t", "from": "a", "fixed": {"method": "stitched", "g": 4}}]
    path = make_sweep(**small, ensembles=[{"name": "e", "from": "a", "members": 2}], transfers=transfers)
    assert main(["search", "plan", str(path), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert [e["done"] for e in before["ensembles"] + before["transfers"]] == [None, None]
    assert main(["search", "certify", str(path), "--no-progress"]) == 3  # certified, on the grid's upper wd
    path = make_sweep(**small, ensembles=[{"name": "e", "from": "a", "members": 3}], transfers=transfers)
    capsys.readouterr()

    assert main(["search", "plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    [certification], [ensemble], [transfer] = plan["certifications"], plan["ensembles"], plan["transfers"]
    assert ensemble["done"] == {"finished": 2, "running": 0, "failed": 0, "remaining": 1}
    assert transfer["done"] == {"finished": 1, "running": 0, "failed": 0, "remaining": 0}
    assert certification["done"]["remaining_worst"] == 0  # certified
    total = plan["total"]
    assert total["runs_finished"] == certification["done"]["finished"] + 2 + 1
    assert (total["runs_remaining_expected"], total["runs_remaining_worst"]) == (1, 1)

    assert main(["search", "plan", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert next(line for line in table if line.startswith("e (ensemble)")).split()[-3:] == ["2", "1", "1"]
    assert next(line for line in table if line.startswith("t (transfer)")).split()[-3:] == ["1", "0", "0"]
    assert next(line for line in table if line.startswith("total")).split()[-2:] == ["1.0", "1"]
    assert "counted as still to run" not in "\n".join(table)


def test_an_ensemble_or_transfer_whose_source_failed_has_no_run_left():
    """As a failed certification: nothing of it runs until its source certifies (a changed sweep)."""
    from search.plan import ExtraProgress, ExtraRuns

    assert ExtraRuns("e", "a", 3, progress=ExtraProgress(1, 0, 1, source_failed=False)).remaining == 1
    assert ExtraRuns("e", "a", 3, progress=ExtraProgress(1, 0, 0, source_failed=True)).remaining == 0
    assert ExtraRuns("e", "a", 3).remaining == 3  # no ledger: all of it


def test_plan_total_counts_a_run_shared_by_a_transfer_and_a_certification_once(make_sweep, workdir, capsys):
    """A transfer to stitched g4 at a's certified point is the run stitched-g4's certification runs
    there too (one run identity, adopted by whichever came second): ``total.runs_finished`` counted
    it once per study that holds it, more runs than were trained."""
    from tests.search.conftest import calls

    small = {"grid": {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8], "epochs": [4, 8]},
             "start": {"lr": 0.003, "wd": 0.8, "epochs": 8}}
    path = make_sweep(**small, certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                               {"name": "b", "fixed": {"method": "stitched", "g": 4}}],
                      transfers=[{"name": "t", "from": "a", "fixed": {"method": "stitched", "g": 4}}])
    assert main(["search", "certify", str(path), "--no-progress"]) == 3
    capsys.readouterr()
    assert main(["search", "plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    [transfer] = plan["transfers"]
    assert transfer["done"]["finished"] == 1  # the transfer's own row still says its run is done
    rows = sum(c["done"]["finished"] for c in plan["certifications"]) + 1
    trained = len(calls(workdir))
    assert trained < rows, "the transfer's point is one b's certification ran: the case this test is about"
    assert plan["total"]["runs_finished"] == trained
    assert main(["search", "plan", str(path)]) == 0
    total = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("total"))
    assert total.split()[-3] == str(trained)


def test_worst_gpu_hours_of_a_noise_aware_certification_count_every_repeat(make_sweep, tiny_store, capsys):
    """``worst`` runs count ``noise.repeats`` draws per point, but ``gpu_hours_worst`` summed one run
    per point: with repeats 3 the worst case came out a third of what the runs it counts cost."""
    real = {"name": "real", "fixed": {"method": "real"}}
    plans = []
    for noise in ({"repeats": 1}, {"repeats": 3}, {"repeats": 3, "max_runs": 5}):
        max_runs = noise.pop("max_runs", None)
        path = make_sweep(objective=None, grid={"lr": [0.001, 0.003], "epochs": [1, 2]},
                          start={"lr": 0.003, "epochs": 1}, noise=noise,
                          train={"data": {"store": str(tiny_store), "context": 32}, "model": {"preset": "tiny-1m"},
                                 "optim": {"batch_size": 4, "micro_batch_size": 4}},
                          certifications=[{**real, **({"max_runs": max_runs} if max_runs else {})}])
        assert main(["search", "plan", str(path), "--json", "--mfu", "0.5", "--peak-tflops", "200"]) == 0
        [cert] = json.loads(capsys.readouterr().out)["certifications"]
        plans.append(cert)
    once, thrice, capped = plans
    assert (once["worst"], thrice["worst"], capped["worst"]) == (4, 12, 5)
    assert thrice["gpu_hours_worst"] == pytest.approx(3 * once["gpu_hours_worst"], rel=1e-9)
    # the costliest 5 of the 12 runs: draws at the epochs-2 points, each twice an epochs-1 run's cost
    epoch = once["gpu_hours_worst"] / 6  # one run per point: 2 lr values x (1 + 2) epochs
    assert capped["gpu_hours_worst"] == pytest.approx(5 * 2 * epoch, rel=1e-9)


def test_left_expected_of_a_search_past_its_estimate_is_what_it_still_asks_for(make_sweep, capsys):
    """A certification certified on its grid's bound, then given ``extend:`` values, searches on
    past the expected runs (those count the listed grid): ``left exp.`` read 0 for a search that
    still had a run to ask for; it is that run, marked as past the estimate, and a certified one 0."""
    small = {"grid": {"lr": [0.001, 0.003, 0.01], "wd": [0.8], "epochs": [1, 2]},
             "start": {"lr": 0.003, "wd": 0.8, "epochs": 1}}
    path = make_sweep(**small)
    assert main(["search", "certify", str(path), "--no-progress"]) == 3  # on the epochs upper bound
    capsys.readouterr()
    assert main(["search", "plan", str(path), "--json"]) == 0
    [certified] = json.loads(capsys.readouterr().out)["certifications"]
    assert certified["done"]["remaining_expected"] == 0

    path = make_sweep(**small, extend={"epochs": {"above": [4, 8]}})
    assert main(["search", "plan", str(path), "--json"]) == 0
    [plan] = json.loads(capsys.readouterr().out)["certifications"]
    done = plan["done"]
    assert done["state"] == "searching" and done["finished"] > plan["expected"], plan  # the case of this test
    assert done["remaining_expected"] == 1  # epochs 4 at its centre; it read 0
    assert (done.get("expected_exceeded"), certified["done"].get("expected_exceeded")) == (True, False)
    assert done["remaining_worst"] == plan["worst"] - done["finished"]
    assert main(["search", "plan", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()
    worst = str(done["remaining_worst"])
    assert next(line for line in table if line.startswith("a ")).split()[-2:] == ["1.0+", worst]
    assert next(line for line in table if line.startswith("total")).split()[-2:] == ["1.0+", worst]
    assert any(line.startswith("(N+ in left exp.: ") for line in table), table


def test_a_started_search_and_its_transfer_are_costed_at_the_start_its_ledger_recorded(make_sweep, tiny_store):
    """Costs as counts: a certification whose search began from another start than the sweep
    file's (``start:`` edited since) is planned from the recorded one, and its transfer too: the
    plan of the sweep file naming that start."""
    from search.certificate import CertState
    from search.plan import CertificationProgress, LedgerProgress, sweep_plan
    from search.sweep import load_sweep
    from train.gpu_results import Utilisation

    def sweep(start):
        return load_sweep(make_sweep(
            objective=None, grid={"lr": [0.001, 0.003], "epochs": [1, 2], "mix": [0.5]}, start=start,
            train={"data": {"store": str(tiny_store), "context": 32}, "model": {"preset": "tiny-1m"},
                   "optim": {"batch_size": 4, "micro_batch_size": 4}},
            pools={"simple": "pools/simple-g{g}"},
            certifications=[{"name": "simple", "fixed": {"method": "simple", "g": 1}}],
            transfers=[{"name": "again", "from": "simple", "fixed": {"method": "simple", "g": 1}}]))

    recorded, edited = {"lr": 0.003, "epochs": 2, "mix": 0.5}, {"lr": 0.001, "epochs": 1, "mix": 0.5}
    utilisation = Utilisation(0.5, 200.0, "given")
    progress = LedgerProgress({"simple": CertificationProgress(CertState.SEARCHING, 1, 0, 0, 3, recorded)}, {}, {})
    planned = sweep_plan(sweep(edited), utilisation, simulations=4, progress=progress)
    wanted = sweep_plan(sweep(recorded), utilisation, simulations=4)
    assert planned.certifications[0].cost == wanted.certifications[0].cost
    assert planned.certifications[0].best == wanted.certifications[0].best
    assert planned.transfers[0].gpu_hours == wanted.transfers[0].gpu_hours
    assert sweep_plan(sweep(edited), utilisation, simulations=4).transfers[0].gpu_hours != wanted.transfers[0].gpu_hours
