"""The analysis tables built from ledger-shaped records (pure: no search engine)."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from analysis.efficiency import efficiency_ratio, load_reference_law
from analysis.frame import (
    axes,
    certifications_frame,
    compute_seconds,
    format_bounds,
    point_of,
    runs_frame,
    val_sets,
)
from analysis.generation import generation_table, monotonicity
from megadocs.errors import UserError
from megadocs.formats import FailureKind, RunMetrics, RunStatus
from search.ledger import RunRecord
from search.status import warm_start_advice
from tests.analysis import synthetic


@pytest.fixture(scope="module")
def toy():
    records, summaries = synthetic.sweep(gs=(1, 2, 4))
    runs = runs_frame(records, sweep="toy")
    return records, summaries, runs, certifications_frame(summaries, runs)


def test_runs_frame_has_one_row_per_run_with_every_field(toy):
    records, _, runs, _ = toy
    assert len(runs) == len(records)
    for column in ("certification", "status", "loss", "method", "g", "model", "seed", "wall_time_s",
                   "point.lr", "point.epochs", "point.wd", "val_loss.iid", "val_loss.iid_short",
                   "val_loss.iid_long", "val_loss.arxiv", "metric.steps", "metric.tokens_seen"):
        assert column in runs, column
    assert axes(runs) == ["epochs", "lr", "wd"]
    assert val_sets(runs)[0] == "iid"
    first = runs.iloc[0]
    assert first["loss"] == records[0].loss and first["method"] == "real" and first["g"] == 0
    assert point_of(first) == records[0].point


def test_statuses_map_to_losses():
    base = {"certification": "c", "point": {"lr": 1e-3}, "fixed": {"method": "simple", "g": 2}}
    runs = runs_frame([
        RunRecord(**base, status=RunStatus.COMPLETED, loss=3.1,
                  metrics=RunMetrics(status=RunStatus.COMPLETED, val_loss=3.1, val_losses={"iid": 3.1})),
        RunRecord(**base, status=RunStatus.DIVERGED, loss=float("inf"),
                  metrics=RunMetrics(status=RunStatus.DIVERGED, val_loss=float("inf"))),
        RunRecord(**base, status=RunStatus.FAILED, loss=None, reason="node died"),
        RunRecord(**base, status=RunStatus.RUNNING, loss=None),
        *(RunRecord(**base, status=RunStatus.FAILED, loss=None, reason=kind.value, failure=kind) for kind in FailureKind),
    ])
    assert runs["loss"].iloc[0] == 3.1
    assert math.isinf(runs["loss"].iloc[1])
    assert runs["loss"].iloc[2:].isna().all()
    assert runs["reason"].iloc[2] == "node died"
    assert runs["failure"].iloc[:4].isna().all()  # none recorded: a lost job, or not failed
    assert list(runs["failure"].iloc[4:]) == [kind.value for kind in FailureKind]


def test_extra_fixed_fields_and_benchmarks_get_prefixed_columns():
    runs = runs_frame([RunRecord(
        certification="c", status=RunStatus.COMPLETED, loss=3.0, point={"lr": 1e-3},
        fixed={"method": "latent", "g": 4, "student": "1.5b"},
        metrics=RunMetrics(status=RunStatus.COMPLETED, val_loss=3.0,
                           benchmarks={"piqa": {"acc": 0.61}, "sciq": 0.7}, tokens_per_s=1000.0),
    )])
    assert runs["fixed.student"].iloc[0] == "1.5b"
    assert runs["bench.piqa"].iloc[0] == 0.61 and runs["bench.sciq"].iloc[0] == 0.7
    assert runs["metric.tokens_per_s"].iloc[0] == 1000.0


def test_nested_metrics_get_one_column_per_number():
    """The windows a run read (issue 12) and its validation windows reach the table."""
    runs = runs_frame([RunRecord(
        certification="c", status=RunStatus.COMPLETED, loss=3.0, point={"mix": 0.9},
        fixed={"method": "stitched", "g": 4},
        metrics=RunMetrics.parse({"status": "completed", "val_loss": 3.0,
                                  "windows": {"real_per_epoch": 10, "real_seen": 40, "synthetic_seen": 360},
                                  "mixing_fraction_realised": 0.9, "val_windows": {"iid": 32}}),
    )])
    row = runs.iloc[0]
    assert (row["metric.windows.real_seen"], row["metric.windows.synthetic_seen"]) == (40, 360)
    assert row["metric.windows.real_per_epoch"] == 10 and row["metric.val_windows.iid"] == 32
    assert row["metric.mixing_fraction_realised"] == 0.9


def test_empty_ledger_gives_an_empty_frame_with_the_schema():
    runs = runs_frame([])
    assert len(runs) == 0 and {"certification", "status", "loss", "method", "g"} <= set(runs.columns)
    assert math.isnan(compute_seconds(runs))


def test_certifications_frame_picks_the_certified_run(toy):
    _, summaries, runs, cert = toy
    assert len(cert) == len(summaries)
    row = cert[cert["certification"] == "latent-g4"].iloc[0]
    assert bool(row["certified"]) and row["state"] == "certified"
    assert row["loss"] == pytest.approx(synthetic.tuned_loss("latent", 4))
    assert (row["point.lr"], row["point.epochs"], row["point.wd"]) == (3e-3, 8, 0.4)
    assert row["val_loss.iid"] == pytest.approx(row["loss"])
    assert row["n_runs"] == len(runs[runs["certification"] == "latent-g4"])
    assert row["wall_time_s"] == pytest.approx(12.0 * row["n_runs"])


def test_bounds_are_formatted_axis_and_side():
    assert format_bounds([{"axis": "epochs", "side": "upper", "value": 64}, {"axis": "mix", "side": "upper"}]) \
        == "epochs upper, mix upper"
    assert format_bounds([]) == ""


def test_adopted_runs_count_their_compute_once():
    runs = pd.DataFrame({"wall_time_s": [10.0, 10.0, 5.0], "adopted_from": [None, "other", None]})
    assert compute_seconds(runs) == 15.0


def test_generation_table_efficiency_and_monotonicity(toy):
    *_, cert = toy
    table = generation_table(cert, law=load_reference_law())
    assert set(table["set"]) == {"iid", "iid_short", "iid_long", "arxiv"}
    iid = table[table["set"] == "iid"].set_index(["method", "g"])
    expected = efficiency_ratio(synthetic.tuned_loss("simple", 4), synthetic.BASELINE, alpha=0.235, E=1.92)
    assert iid.loc[("simple", 4), "efficiency"] == pytest.approx(expected)
    assert iid.loc[("simple", 4), "gain"] == pytest.approx(synthetic.BASELINE - synthetic.tuned_loss("simple", 4))
    # efficiency is a law of i.i.d. loss: not computed for other domains
    assert table[table["set"] == "arxiv"]["efficiency"].isna().all()
    assert monotonicity(table) == []


def test_a_rise_with_g_is_flagged(toy):
    *_, cert = toy
    broken = cert.copy()
    index = broken.index[broken["certification"] == "stitched-g4"][0]
    broken.loc[index, "val_loss.iid"] = broken.loc[index, "val_loss.iid"] + 0.05
    rises = monotonicity(generation_table(broken, sets=["iid"]))
    assert len(rises) == 1 and rises[0].method == "stitched" and rises[0].g_to == 4
    assert "no noise estimate: it may be seed noise" in rises[0].message()  # judged against no noise
    assert rises[0].message().endswith(warm_start_advice("stitched-g2", "stitched-g4", {}))
    broken.loc[index, "warm_start"] = "stitched-g2"  # already set: the advice is to look at its runs
    [rise] = monotonicity(generation_table(broken, sets=["iid"]), sigma=0.01)
    assert "already starts from stitched-g2's certificate" in rise.message() and "noise sds" in rise.message()


def test_generation_table_refuses_an_empty_ledger():
    with pytest.raises(UserError, match="no certifications"):
        generation_table(pd.DataFrame())


def test_generation_table_with_a_fitted_law_gives_efficiency_intervals(toy):
    import numpy as np

    from analysis.scaling import fit_power_law, power_law

    *_, cert = toy
    D = np.array([25e6, 50e6, 100e6, 200e6, 400e6])
    losses = power_law(D, 1.92, 150.0, 0.235) * np.exp(np.random.default_rng(0).normal(0, 0.002, len(D)))
    law = fit_power_law(D, losses, n_boot=200)
    iid = generation_table(cert, law=law, sets=["iid"])
    synthetic_rows = iid[iid["method"] != "real"]
    assert (synthetic_rows["efficiency_low"] < synthetic_rows["efficiency"]).all()
    assert (synthetic_rows["efficiency"] < synthetic_rows["efficiency_high"]).all()


def test_baseline_without_a_mix_axis_still_finds_its_certified_run(toy):
    """The union runs frame gives the real-only runs a NaN `mix` column; that is not an axis of theirs."""
    records, summaries, _, _ = toy
    records = [dataclasses.replace(r, point={**r.point, "mix": 0.75}) if r.certification == "simple-g1" else r
               for r in records]
    runs = runs_frame(records, sweep="toy")
    assert runs.loc[runs["certification"] != "simple-g1", "point.mix"].isna().all()
    cert = certifications_frame(summaries, runs)
    baseline = cert[cert["certification"] == "real-g0"].iloc[0]
    assert baseline["val_loss.iid"] == pytest.approx(baseline["loss"])
    assert point_of({"point.lr": 3e-3, "point.mix": math.nan}) == {"lr": 3e-3}


def test_fixed_seed_repeats_at_one_g_are_one_point_of_the_rise_check(toy):
    """Two rows at one G (certifications of two fixed seeds) are their mean, never a rise "from G=2
    to G=2", and a rise from their G names no single certification to warm-start from."""
    *_, cert = toy
    table = generation_table(cert, sets=["iid"])
    row = table[(table["method"] == "stitched") & (table["g"] == 2)].iloc[0]
    worse = row.copy()
    worse["loss"], worse["certification"] = row["loss"] + 0.04, "stitched-g2-seed2"
    repeated = pd.concat([table, worse.to_frame().T], ignore_index=True)
    assert monotonicity(table) == [] and monotonicity(repeated) == []  # 0.04 above one seed: no rise
    g4 = table.index[(table["method"] == "stitched") & (table["g"] == 4)][0]
    repeated.loc[g4, "loss"] = row["loss"] + 0.03  # above G=2's seed-mean (+0.02), below its worse seed
    [rise] = monotonicity(repeated)
    assert (rise.g_from, rise.g_to, rise.loss_from) == (2, 4, pytest.approx(row["loss"] + 0.02))
    assert rise.certification_from is None and rise.message().endswith("look at the searches' runs (`megadocs search status`)")


def test_search_status_and_the_analysis_count_the_same_runs_at_a_certified_point():
    """simple-g2-again searched simple-g2's configuration again: it adopted simple-g2's runs and ran two
    noise repeats at the certified point, 0.1 and 0.2 worse, recorded without run identities (a ledger
    older than them). `search status` counted each at the point (search.tuned.runs_at_point): G=2 the
    mean of three distinct runs. The analysis's frame chose the point's runs again from its runs table,
    where a missing identity reads NaN: both repeats became one run 'nan' (the first), and G=2 read 0.05
    lower than in status. Now the frame carries status's runs at the point (POINT_RUNS, and the mean of
    their val_loss/bench numbers): one reading."""
    from analysis.experiments import generation_points
    from analysis.frame import POINT_RUNS
    from search.grid import points_equal
    from search.status import g_trend
    from search.tuned import runs_at_point

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    records = [dataclasses.replace(r, fixed={key: value for key, value in r.fixed.items() if key != "seed"})
               for r in records]  # a ledger's first draw at a point has no seed (its repeats 1, 2, ...)
    first = next(summary for summary in summaries if summary.name == "simple-g2")
    again = [dataclasses.replace(r, certification="simple-g2-again", adopted_from="simple-g2")
             for r in records if r.certification == "simple-g2"]
    at = next(r for r in again if points_equal(r.point, first.point))
    for seed in (1, 2):
        worse = {"val_loss": at.loss + 0.1 * seed,
                 "val_losses": {name: value + 0.1 * seed for name, value in at.metrics.val_losses.items()}}
        again.append(dataclasses.replace(at, run_id=None, adopted_from=None, loss=at.loss + 0.1 * seed,
                                         trial=len(again), fixed={**at.fixed, "seed": seed},
                                         metrics=at.metrics.model_copy(update=worse)))
    point_runs = runs_at_point(again, first.point)  # as summarize reads them from the ledger
    summaries.append(dataclasses.replace(first, name="simple-g2-again", point_runs=point_runs,
                                         certificate=dataclasses.replace(first.certificate, loss=first.loss + 0.1)))

    certs = certifications_frame(summaries, runs_frame(records + again)).set_index("certification")
    _main, points = generation_points(certs.reset_index())
    analysis = (list(points["g"]), list(points["loss"]))  # one point per G
    status = tuple(map(list, zip(*[(g, tuned.loss) for g, tuned in g_trend(summaries)["simple"]])))
    assert status[1][1] == pytest.approx(first.loss + 0.1)
    assert analysis[0] == status[0] and analysis[1] == pytest.approx(status[1])
    assert certs.loc["simple-g2-again", POINT_RUNS] == point_runs and len(point_runs) == 3
    assert certs.loc["simple-g2-again", "val_loss.iid_short"] == pytest.approx(first.loss + 0.1 - 0.1)


@pytest.mark.parametrize("written", [True, False])
def test_search_status_and_the_analysis_name_the_curves_of_a_sweep_without_a_base_model_alike(written):
    """A sweep whose objective is the user's own function names no base model (Sweep.base_model None).
    With ``model: 300m`` written in every certification, `search status` named simple's curve
    `simple (300m)` (a model that is not the sweep's base) and the report `simple`: its frame could not
    tell a written model from one its runs said, and named none. Now the frame carries the model status
    names curves by (curve_model) and both say `simple (300m)`. Without ``model:`` (only the function
    knows its model, though its runs say tiny-1m) both say `simple`."""
    from analysis.experiments import generation_points
    from search.status import g_trend

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2, 4))
    if written:
        records = [dataclasses.replace(r, fixed={**r.fixed, "model": "300m"}) for r in records]
        summaries = [dataclasses.replace(s, fixed={**s.fixed, "model": "300m"}) for s in summaries]
    _main, points = generation_points(certifications_frame(summaries, runs_frame(records), base_model=None))
    status = g_trend(summaries, None)
    assert set(points["method"]) == set(status) == {"simple (300m)" if written else "simple"}
