"""Transfers (the paper's Figure 6) and student scaling as sweep entries: a method trained at another
certification's certified point once that source is certified, and the model preset as a fixed
field, both recorded in the ledger and mapped onto train configs."""

from __future__ import annotations

import pytest
import yaml

from search.ledger import read_runs
from search.params import RunParams
from search.status import g_trend_warnings, summarize, summarize_transfers, warm_start_advice
from search.sweep import load_sweep
from tests.search.conftest import calls


def test_transfer_runs_the_target_at_the_source_certified_point(make_sweep, workdir, capsys):
    from megadocs.cli import main

    path = make_sweep(
        certifications=[{"name": "simple-g4", "fixed": {"method": "simple", "g": 4}},
                        {"name": "stitched-g4", "fixed": {"method": "stitched", "g": 4}}],
        transfers=[{"name": "stitched-g4-at-simple", "from": "simple-g4", "fixed": {"method": "stitched", "g": 4}}],
    )
    from search.storage import LedgerMissing

    with pytest.raises(LedgerMissing):  # before certify there is no ledger to read (issue 14)
        summarize_transfers(load_sweep(path))
    assert main(["search", "certify", str(path), "--no-progress"]) == 0
    simple = {s.name: s for s in summarize(load_sweep(path))}["simple-g4"].certificate.point
    [transfer] = [r for r in read_runs(load_sweep(path)) if r.kind == "transfer"]
    assert transfer.certification == "transfer/stitched-g4-at-simple"
    assert transfer.point == simple and transfer.fixed == {"method": "stitched", "g": 4}
    assert transfer.status == "completed"
    # the same run as the stitched certification's at that point, if it ran there: shared, not recomputed
    params = [c for c in calls(workdir) if c["method"] == "stitched" and all(c[k] == v for k, v in simple.items())]
    assert len(params) == 1
    [summary] = summarize_transfers(load_sweep(path))
    assert summary.state == "finished" and summary.loss == transfer.loss
    assert summary.point == simple and summary.fixed == {"method": "stitched", "g": 4}
    capsys.readouterr()
    assert main(["search", "status", str(path)]) == 0
    assert (f"transfer stitched-g4-at-simple (method=stitched g=4 at simple-g4's optimum): finished: "
            f"loss {transfer.loss:.4f}") in capsys.readouterr().out.splitlines()


def test_a_transfer_run_at_an_earlier_certified_point_is_not_its_result(make_sweep, workdir, capsys):
    """The source's grid is widened after the transfer ran: its certified point is open again, so
    the old run (at the old point) is not the transfer's result (status said 'finished' with the
    old loss); once the source certifies anew, the transfer runs there and reports that run."""
    from megadocs.cli import main

    grid = {"lr": [0.001, 0.003, 0.01], "wd": [0.1, 0.4], "epochs": [8]}  # the bowl's wd optimum is 0.8
    transfers = [{"name": "t", "from": "a", "fixed": {"method": "stitched", "g": 4}}]
    path = make_sweep(grid=grid, start={"lr": 0.003, "wd": 0.1, "epochs": 8}, transfers=transfers)
    assert main(["search", "certify", str(path), "--no-progress"]) == 3  # on the wd upper bound
    [before] = summarize_transfers(load_sweep(path))
    assert before.state == "finished" and before.point["wd"] == 0.4
    path = make_sweep(grid={**grid, "wd": [0.1, 0.4, 0.8, 1.6]}, start={"lr": 0.003, "wd": 0.1, "epochs": 8},
                      transfers=transfers)
    [stale] = summarize_transfers(load_sweep(path))
    assert stale.state == "waiting" and stale.loss is None and stale.point is None
    assert main(["search", "certify", str(path), "--no-progress"]) == 0
    [after] = summarize_transfers(load_sweep(path))
    assert after.state == "finished" and after.point["wd"] == 0.8 and after.loss != before.loss


@pytest.mark.parametrize(("transfer", "message"), [
    ({"name": "t", "from": "nope", "fixed": {"method": "stitched", "g": 4}}, "transfers[0].from: 'nope'"),
    ({"name": "t", "from": "a", "fixed": {"method": "stitched"}}, "transfers[0].fixed.g: required"),
])
def test_transfer_mistakes_are_refused_in_one_line(make_sweep, transfer, message):
    from megadocs.errors import UserError

    path = make_sweep(objective=None, train={"data": {"store": "s"}}, pools={"stitched": "p", "simple": "p"},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}}], transfers=[transfer])
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_sweep(path)


def test_preset_is_a_fixed_field_of_the_default_objective(make_sweep, workdir):
    from search.objective import TrainObjective

    path = make_sweep(objective=None, train={"data": {"store": "s"}, "model": {"preset": "tiny-1m"}},
                      grid={"lr": [0.001, 0.003]}, start={"lr": 0.001},
                      certifications=[{"name": "real-small", "fixed": {"method": "real"}},
                                      {"name": "real-large", "fixed": {"method": "real", "model": "tiny-8m"}}])
    sweep = load_sweep(path)
    objective = TrainObjective(sweep)
    assert objective.config({"lr": 0.001, "method": "real"}).model.preset == "tiny-1m"
    assert objective.config({"lr": 0.001, "method": "real", "model": "tiny-8m"}).model.preset == "tiny-8m"


def test_g_trend_compares_within_one_model_size():
    from search.certificate import Certificate, CertState
    from search.status import CertificationSummary, RunCounts

    def summary(preset, g, loss):
        return CertificationSummary(
            name=f"s-{preset}-{g}", state=CertState.CERTIFIED, best=None, runs=RunCounts(),
            certificate=Certificate({"lr": 0.003}, loss, (), ()), path=(), bounds_hit=(),
            fixed={"method": "simple", "g": g, "model": preset})

    # the larger student is better at every G: no rise within a size
    assert g_trend_warnings([summary("300m", 4, 3.5), summary("1.5b", 8, 3.3), summary("300m", 8, 3.45),
                             summary("1.5b", 4, 3.35)]) == []
    [warning] = g_trend_warnings([summary("300m", 4, 3.5), summary("300m", 8, 3.6)])
    assert warning.startswith("simple (300m): certified loss rises with G")


def test_a_model_fixed_to_the_base_preset_is_the_base_model_s_curve():
    """Which model a certification trains has one answer (:meth:`Sweep.base_model`,
    :meth:`RunParams.trained_model`): ``simple-g4`` (no model) and ``simple-g8`` (``model: 300m``,
    the base preset) train one model, so they are one L(G) curve. They had been two curves,
    ``simple`` and ``simple (300m)``, each of one G, and the rise was never seen."""
    from search.certificate import Certificate, CertState
    from search.status import CertificationSummary, RunCounts
    from search.sweep import Sweep

    def summary(name, g, loss, point=None, **model):
        return CertificationSummary(
            name=name, state=CertState.CERTIFIED, best=None, runs=RunCounts(),
            certificate=Certificate(point or {"lr": 0.003}, loss, (), ()), path=(), bounds_hit=(),
            fixed={"method": "simple", "g": g, **model})

    certifications = [{"name": "simple-g4", "fixed": {"method": "simple", "g": 4}},
                      {"name": "simple-g8", "fixed": {"method": "simple", "g": 8, "model": "300m"}}]
    sweep = Sweep.model_validate({"name": "s", "objective": "m:f", "grid": {"lr": [0.001, 0.003]},
                                  "start": {"lr": 0.001}, "certifications": certifications,
                                  "train": {"model": {"preset": "300m"}}})
    assert sweep.base_model == "300m"
    assert [RunParams(fixed=c.fixed).trained_model(sweep.base_model) for c in sweep.certifications] == ["300m", "300m"]
    rising = [summary("simple-g4", 4, 3.5), summary("simple-g8", 8, 3.6, model="300m")]
    [warning] = g_trend_warnings(rising, sweep.base_model)
    assert warning.startswith("simple: certified loss rises with G (simple-g4 g=4: 3.5000 -> simple-g8 g=8: 3.6000)")
    # at one G, the written and the unwritten base model are one configuration (the better-tuned optimum counts)
    again = summary("simple-g8-base", 8, 3.4, {"lr": 0.001})
    assert g_trend_warnings([*rising, again], sweep.base_model) == []
    # another model is its own curve, named; without a base preset nothing changes
    assert g_trend_warnings([summary("simple-g4", 4, 3.5), summary("simple-g8", 8, 3.6, model="1.5b")], "300m") == []
    [warning] = g_trend_warnings([summary("a", 4, 3.5, model="1.5b"), summary("b", 8, 3.6, model="1.5b")], "300m")
    assert warning.startswith("simple (1.5b): certified loss rises with G")


def test_without_a_base_preset_the_base_model_is_the_one_train_builds(make_sweep, workdir):
    """A train sweep whose base names no preset trains train's default: ``model: tiny-1m`` is that
    model (one name for both) once some certification fixes a model; where none does there is one
    model and it stays unnamed (None: the analysis's ``base``)."""
    from search.objective import TrainObjective

    def sweep(*models):
        certifications = [{"name": f"real-{i}", "fixed": {"method": "real", **model}} for i, model in enumerate(models)]
        return load_sweep(make_sweep(objective=None, train={"data": {"store": "s"}}, grid={"lr": [0.001, 0.003]},
                                     start={"lr": 0.001}, certifications=certifications))

    built = TrainObjective(sweep({})).config({"lr": 0.001, "method": "real"}).model.preset
    fixed = sweep({}, {"model": built})
    assert fixed.base_model == built
    assert {RunParams(fixed=c.fixed).trained_model(fixed.base_model) for c in fixed.certifications} == {built}
    assert sweep({}).base_model is None and RunParams(fixed={"method": "real"}).trained_model(sweep({}).base_model) is None


def test_g_trend_keeps_the_synthetic_only_ablation_apart():
    """The paper's sweep certifies stitched G=32 mixed and synthetic only (mix 1, worse by
    design): the rehearsal (benchmarks/rehearsal.py) saw them compared as one curve."""
    from search.certificate import Certificate, CertState
    from search.status import CertificationSummary, RunCounts

    def summary(name, g, loss, mix):
        return CertificationSummary(
            name=name, state=CertState.CERTIFIED, best=None, runs=RunCounts(),
            certificate=Certificate({"lr": 0.003, "mix": mix}, loss, (), ()), path=(), bounds_hit=(),
            fixed={"method": "stitched", "g": g})

    assert g_trend_warnings([summary("stitched-g16", 16, 3.38, 0.75), summary("stitched-g32", 32, 3.37, 0.9),
                             summary("stitched-g32-synthetic-only", 32, 3.44, 1.0)]) == []


def test_g_trend_ignores_rises_within_noise_and_advises_by_warm_start():
    """A rise smaller than sds x sigma x sqrt(2) of the sweep's best noise estimate is seed noise;
    a search that already warm-starts from the smaller G is told to look at its runs instead."""
    import dataclasses

    from search.certificate import Certificate, CertState, NoiseEstimate
    from search.status import CertificationSummary, RunCounts

    def summary(name, g, loss, noise=NoiseEstimate(1, None, 0, 2.0), warm_start=None):
        return CertificationSummary(
            name=name, state=CertState.CERTIFIED, best=None, runs=RunCounts(),
            certificate=Certificate({"lr": 0.003}, loss, (), ()), path=(), bounds_hit=(),
            fixed={"method": "latent", "g": g}, noise=noise, warm_start=warm_start)

    measured = summary("real", 0, 4.9, noise=NoiseEstimate(2, 0.05, 4, 2.0))  # tolerance 0.1414
    measured = dataclasses.replace(measured, fixed={"method": "real"})
    g2, g4 = summary("latent-g2", 2, 4.60), summary("latent-g4", 4, 4.70, warm_start="latent-g2")
    assert g_trend_warnings([measured, g2, g4]) == []  # +0.10: within noise
    [warning] = g_trend_warnings([measured, g2, dataclasses.replace(g4, certificate=Certificate({}, 4.80, (), ()))])
    assert "(4.0 noise sds)" in warning and "already starts from latent-g2's certificate" in warning
    [warning] = g_trend_warnings([g2, dataclasses.replace(g4, warm_start=None)])  # no noise estimate
    assert warning.endswith(warm_start_advice("latent-g2", "latent-g4", {}))
    assert "add a certification with latent-g4's fixed params under a new name and `warm_start: latent-g2`" in warning


def _trained_sweep(store, transfer: dict, pools: dict) -> dict:
    """A default-objective sweep whose certification (real, one grid point) is fine and whose one
    transfer is ``transfer``: only the transfer can be wrong."""
    return {"name": "tiny", "executor": {"kind": "debug"},
            "train": {"data": {"store": str(store), "context": 64, "mixing_fraction": 0.5},
                      "model": {"preset": "tiny-1m"}, "optim": {"batch_size": 16, "micro_batch_size": 16},
                      "eval": {"val_windows": 32}, "checkpoint_every": 1000, "device": "cpu"},
            "pools": pools, "grid": {"lr": [0.003], "epochs": [1]}, "start": {"lr": 0.003, "epochs": 1},
            "certifications": [{"name": "real", "fixed": {"method": "real"}}], "transfers": [transfer]}


BAD_TRANSFERS = {  # what is wrong -> (transfer, pools, what the one line names)
    "no pool at its g": ({"name": "simple-g1", "from": "real", "fixed": {"method": "simple", "g": 1}},
                         {"simple": {2: "pool-g2"}}, "pools.simple: no pool for g=1"),
    "a pool that is not there": ({"name": "simple-g1", "from": "real", "fixed": {"method": "simple", "g": 1}},
                                 {"simple": "nowhere/pool"}, "nowhere/pool"),
    "an unknown model size": ({"name": "real-big", "from": "real", "fixed": {"method": "real", "model": "tiny-9t"}},
                              {}, "model.preset: unknown preset 'tiny-9t'"),
}


@pytest.mark.parametrize("case", list(BAD_TRANSFERS))
def test_a_bad_transfer_is_refused_before_anything_runs(case, tiny_store, workdir, capsys):
    """A transfer runs only once its source is certified (hours into a sweep): what can be checked
    without that result (its train config, its pool) is checked when certify starts, in one line
    naming the transfer, and nothing is created; `search plan` refuses it the same way."""
    from megadocs.cli import main
    from megadocs.exits import Exit
    from tests.search.test_refused_certify import _tree

    transfer, pools, named = BAD_TRANSFERS[case]
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(_trained_sweep(tiny_store, transfer, pools)))
    capsys.readouterr()
    before = _tree(workdir)
    assert main(["search", "certify", "tiny.yaml", "--no-progress"]) == Exit.BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: transfers[0] ({transfer['name']}): ") and named in err and "\n" not in err, err
    assert _tree(workdir) == before
    if case != "a pool that is not there":  # a plan is made before the pools exist
        assert main(["search", "plan", "tiny.yaml"]) == Exit.BAD_INPUT
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: transfers[0] ({transfer['name']}): ") and named in err and "\n" not in err


def test_a_bad_transfer_added_to_a_sweep_that_ran_leaves_its_ledger_untouched(tiny_store, workdir, capsys):
    """The sweep's certification ran (one real run, on a store of a few short documents: seconds);
    a transfer added since with a model size train does not know is refused before the ledger is
    opened."""
    from megadocs.cli import main
    from megadocs.exits import Exit
    from search.certificate import CertifyExit
    from tests.search.test_train_sweep import write_mini_corpus
    from train.store import prepare

    write_mini_corpus(tiny_store, workdir / "mini.jsonl")
    prepare(workdir / "mini.jsonl", workdir / "store", tokenizer=tiny_store / "tokenizer", val_docs=6, seed=0)
    transfer, pools, named = BAD_TRANSFERS["an unknown model size"]
    sweep = _trained_sweep(workdir / "store", transfer, pools)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump({**sweep, "transfers": []}))
    assert main(["search", "certify", "tiny.yaml", "--no-progress"]) == CertifyExit.CERTIFIED_ON_BOUND
    ledger = workdir / "runs/tiny/ledger.db"
    written = ledger.read_bytes()
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(sweep))
    capsys.readouterr()
    assert main(["search", "certify", "tiny.yaml", "--no-progress"]) == Exit.BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: transfers[0] (real-big): ") and named in err
    assert ledger.read_bytes() == written


def test_a_bad_ensemble_member_is_refused_before_anything_runs(tiny_store, workdir, capsys):
    """An ensemble's members run at their source's certified point (hours into a sweep), with its
    epochs times ``epochs_multiplier`` and their own seeds. A multiplier of 0.25 on an epochs grid
    of [1] gives members 0.25 epochs, which rounds to 0 (train refuses it; before the sweep-file
    check, members were silently raised to 1 epoch): certify and `search plan` refuse the file
    in one line naming the field, before anything runs. (A fractional epochs grid, which this test
    used to reach the members' up-front train check, is now refused when the file loads.)"""
    from megadocs.cli import main
    from megadocs.exits import Exit
    from tests.search.test_refused_certify import _tree

    ensemble = {"name": "real-ens", "from": "real", "members": 2, "epochs_multiplier": 0.25}
    sweep = {**_trained_sweep(tiny_store, {}, {}), "transfers": [], "ensembles": [ensemble],
             "grid": {"lr": [0.003], "epochs": [1]}, "start": {"lr": 0.003, "epochs": 1}}
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(sweep))
    capsys.readouterr()
    before = _tree(workdir)
    for command in ("certify", "plan"):
        assert main(["search", command, "tiny.yaml"]) == Exit.BAD_INPUT
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: tiny.yaml: ensembles[0].epochs_multiplier: 0.25 times epochs 1") \
            and "\n" not in err, err
        assert _tree(workdir) == before


def test_g_trend_takes_one_point_per_g_and_one_curve_per_setting():
    """A rising certification searched again under a new name from the smaller G (the advice) no
    longer warns once the new search certifies a lower point: of one configuration's local optima the
    lower certified loss counts (search.tuned.configuration_loss); fixed-seed repeats at one G are
    one point (their mean), never a rise "from G=2 to G=2"; another fixed setting at a G of the curve
    is its own curve, one only at other G a point of it (search.tuned.method_curves: the analysis's
    curves too). That one had been a curve of its own, and its rise never seen."""
    from search.certificate import Certificate, CertState
    from search.status import CertificationSummary, RunCounts

    def summary(name, g, loss, point=None, **fixed):
        return CertificationSummary(
            name=name, state=CertState.CERTIFIED, best=None, runs=RunCounts(),
            certificate=Certificate(point or {"lr": 0.003}, loss, (), ()), path=(), bounds_hit=(),
            fixed={"method": "latent", "g": g, **fixed})

    g2, g4 = summary("latent-g2", 2, 4.60), summary("latent-g4", 4, 4.80)
    [warning] = g_trend_warnings([g2, g4])
    assert warning.endswith(warm_start_advice("latent-g2", "latent-g4", {}))
    assert g_trend_warnings([g2, g4, summary("latent-g4-again", 4, 4.55, {"lr": 0.001})]) == []
    seeds = [summary("latent-g2-s1", 2, 4.60, seed=1), summary("latent-g2-s2", 2, 4.64, seed=2)]
    assert g_trend_warnings(seeds) == []
    [warning] = g_trend_warnings([*seeds, summary("latent-g4-s1", 4, 4.70, seed=1)])
    assert "(seeds of latent-g2-s1, latent-g2-s2 g=2: 4.6200 -> latent-g4-s1 g=4: 4.7000)" in warning
    assert warning.endswith("look at the searches' runs (`megadocs search status`)")
    # another recipe at a G of the curve is its own curve (the analysis's rule, search.tuned.method_curves) ...
    hot = summary("latent-g4-hot", 4, 4.9, temperature=1.0)
    assert g_trend_warnings([g2, summary("latent-g4", 4, 4.55), hot]) == []
    # ... one certified only at a G the curve lacks (the sweep file changed between G) a point of it
    [warning] = g_trend_warnings([g2, hot])
    assert warning.startswith("latent: certified loss rises with G (latent-g2 g=2: 4.6000 -> latent-g4-hot g=4: 4.9000)")


def test_the_g_trend_names_a_setting_curve_as_the_analysis_does():
    """`search status`'s G trend and the analysis's curves name another fixed setting's curve with
    one formatter (search.params.format_setting): the warning printed each value with str(), the
    curves every number with :g (an int 2000000 as 2e+06), so one curve had two names. A setting is a
    curve of its own only beside the main curve at one of its G (search.tuned.method_curves)."""
    import dataclasses

    from analysis.frame import curve_label
    from search.certificate import Certificate, CertState
    from search.params import RunParams
    from search.status import CertificationSummary, RunCounts

    fixed = {"method": "latent", "temperature": 1e-3, "max_new_tokens": 2_000_000}

    def summary(name, g, loss):
        return CertificationSummary(
            name=name, state=CertState.CERTIFIED, best=None, runs=RunCounts(),
            certificate=Certificate({"lr": 0.003}, loss, (), ()), path=(), bounds_hit=(), fixed={**fixed, "g": g})

    # the main curve (most certifications) has nothing fixed; the setting's shares its G: its own curve
    plain = [dataclasses.replace(summary(f"p{g}", g, 4.7 - 0.01 * g), fixed={"method": "latent", "g": g}) for g in (2, 4, 8)]
    [warning] = g_trend_warnings([*plain, summary("a", 2, 4.6), summary("b", 4, 4.8)])
    label = curve_label("latent", RunParams(fixed={**fixed, "g": 2}).setting())
    assert label == "latent [max_new_tokens=2000000, temperature=0.001]"
    assert warning.startswith(f"{label}: certified loss rises with G")
