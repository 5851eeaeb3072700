"""The paper's remaining experiments from one ledger: stitch order (Figure 4), transfers (Figure 6),
student scaling, generation diversity and the prediction for the next doubling of G."""

from __future__ import annotations

import json
import math
import re
import textwrap

import numpy as np
import pandas as pd
import pytest

from analysis.experiments import (
    NEXT_DOUBLING,
    diversity_table,
    next_generations,
    student_scaling_table,
    transfer_table,
)
from analysis.ledger import load_tables
from analysis.report import build_report
from analysis.scaling import fit_power_law
from megadocs.pools import DiversityMeasures, read_manifest
from search.sweep import load_sweep
from tests.analysis import synthetic
from tests.analysis.synthetic import GENERATION_CURVES

SWEEP = """\
name: experiments
executor: {{kind: debug, max_parallel: 4, poll_s: 0.01}}
out: {out}
objective: tests.analysis.objectives:students
pools: {{simple: {pool}}}
grid: {{lr: [0.001, 0.003, 0.01], epochs: [4, 8, 16]}}
start: {{lr: 0.003, epochs: 8}}
certifications:
  - {{name: real, fixed: {{method: real}}}}
  - {{name: real-large, fixed: {{method: real, model: large}}}}
{synthetic}
transfers:
  - {{name: stitched-g1-at-simple, from: simple-g1, fixed: {{method: stitched, g: 1}}}}
  - {{name: stitched-g4-at-simple, from: simple-g4, fixed: {{method: stitched, g: 4}}}}
"""


POOL_G = 4


def _measured_pool(root):
    """A complete rephrase pool whose diversity `megadocs gen diversity` measured (gen's own code)."""
    from gen.diversity import write_pool_diversity
    from tests.pools import write_rephrase_pool

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    documents = [(f"d{i}", " ".join(words[(i + j) % len(words)] for j in range(30))) for i in range(6)]
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    pool = write_rephrase_pool(root / "pool", source, g=POOL_G, documents=documents, tokenize=False)
    write_pool_diversity(pool)
    return pool


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    from search.controller import run_sweep
    from search.sweep import load_sweep

    root = tmp_path_factory.mktemp("experiments")
    pool = _measured_pool(root)
    lines = []
    for method in ("simple", "stitched", "stitched-first", "stitched-none"):
        for g in ((1, 2, 4) if method in ("simple", "stitched") else (1, 2)):
            lines.append(f"  - {{{{name: {method}-g{g}, fixed: {{{{method: {method}, g: {g}}}}}}}}}")
    lines += [f"  - {{{{name: simple-g{g}-large, fixed: {{{{method: simple, g: {g}, model: large}}}}}}}}" for g in (1, 2)]
    text = textwrap.dedent(SWEEP).replace("{synthetic}", "\n".join(lines))
    path = root / "sweep.yaml"
    path.write_text(text.format(out=root / "out", pool=pool))
    run_sweep(load_sweep(path))
    return path


def test_transfer_table_compares_own_and_borrowed_hyperparameters(experiments):
    tables = load_tables(load_sweep(experiments))
    table = transfer_table(tables.runs, tables.certifications, tables.transfer_sources)
    assert list(table["transfer"]) == ["stitched-g1-at-simple", "stitched-g4-at-simple"]
    certs = tables.certifications.set_index("certification")
    for row in table.itertuples():
        assert row.own_loss == pytest.approx(certs.loc[f"stitched-g{int(row.g)}", "val_loss.iid"])
        assert row.source_loss == pytest.approx(certs.loc[row.source, "val_loss.iid"])
        assert row.cost >= -1e-12  # a certified optimum is locally at least as good as another method's
        assert row.cost == pytest.approx(row.transfer_loss - row.own_loss)


def test_a_transfer_run_at_an_earlier_certified_point_is_no_row(experiments):
    """The tables keep search's verdict (summarize_transfers): a transfer's result is its run at the
    source's current certified point. A run at another point (the source's grid widened since) is
    left out of the table, as `search status` leaves it out; it had been a row, Figure 6's cost."""
    import dataclasses

    tables = load_tables(load_sweep(experiments))
    assert set(tables.transfers) == set(tables.transfer_sources)
    current = transfer_table(tables.runs, tables.certifications, tables.transfer_sources, current=tables.transfers)
    assert list(current["transfer"]) == ["stitched-g1-at-simple", "stitched-g4-at-simple"]
    moved = dict(tables.transfers)  # as if simple-g1 had since certified elsewhere: no run there yet
    summary = moved["stitched-g1-at-simple"]
    moved["stitched-g1-at-simple"] = dataclasses.replace(summary, point={**summary.point, "lr": -1.0}, trial=None,
                                                         run_id=None)
    table = transfer_table(tables.runs, tables.certifications, tables.transfer_sources, current=moved)
    assert list(table["transfer"]) == ["stitched-g4-at-simple"]


def test_a_transfer_result_is_its_run_not_every_run_at_its_point(experiments):
    """Search names the transfer's run (``TransferSummary.trial``); analysis takes that run. Two
    trials at the same point (the source's point moved away and back, the run adopted again) are
    one result: matched by point, both had been rows of Figure 6."""
    tables = load_tables(load_sweep(experiments))
    summary = tables.transfers["stitched-g1-at-simple"]
    assert summary.trial is not None and summary.run_id
    runs = tables.runs
    [index] = runs.index[(runs["certification"] == "transfer/stitched-g1-at-simple") & (runs["trial"] == summary.trial)]
    assert runs.loc[index, "run_id"] == summary.run_id
    earlier = runs.loc[[index]].assign(trial=summary.trial + 1, loss=runs.loc[index, "loss"] + 1.0)
    table = transfer_table(pd.concat([runs, earlier], ignore_index=True), tables.certifications,
                           tables.transfer_sources, current=tables.transfers)
    [row] = table[table["transfer"] == "stitched-g1-at-simple"].itertuples()
    assert row.transfer_loss == pytest.approx(summary.loss)


def test_student_scaling_is_the_gain_over_the_same_size_baseline(experiments):
    tables = load_tables(load_sweep(experiments))
    table = student_scaling_table(tables.certifications).set_index(["method", "g"])
    certs = tables.certifications.set_index("certification")
    small = certs.loc["real", "val_loss.iid"] - certs.loc["simple-g2", "val_loss.iid"]
    large = certs.loc["real-large", "val_loss.iid"] - certs.loc["simple-g2-large", "val_loss.iid"]
    row = table.loc[("simple", 2)]
    assert [c for c in table.columns if c.startswith("gain.")] == ["gain.base", "gain.large"]
    assert row["gain.base"] == pytest.approx(small)
    assert row["gain.large"] == pytest.approx(large) and row["growth"] == pytest.approx(large - small)
    assert row["growth"] > 0  # the larger student gains more, as the objective is built to


def test_student_scaling_orders_the_models_by_size_not_by_their_baseline():
    """The models were ordered by their real-only baselines' loss (worst first), as a stand-in for
    size: where a larger student's baseline is worse (undertrained, another recipe) the table put it
    first and ``growth`` (largest's gain - smallest's) came out with the sign turned. Presets are now
    ordered by parameter count (train.presets); a model no preset names keeps its place."""
    from train.presets import LLAMA3_VOCAB, PRESETS, parameter_count

    by_size = sorted(PRESETS, key=lambda name: parameter_count(PRESETS[name], LLAMA3_VOCAB))
    worst_first = [*reversed(by_size)]  # the larger, the worse baseline
    worst_first.insert(2, "custom")
    baselines = {model: 3.0 + 0.1 * (len(worst_first) - i) for i, model in enumerate(worst_first)}
    gains = {model: 0.1 + 0.01 * i for i, model in enumerate(by_size)} | {"custom": 0.5}
    certs = pd.DataFrame({
        "certification": [f"real-{m}" for m in baselines] + [f"s-{m}" for m in baselines],
        "method": ["real"] * len(baselines) + ["s"] * len(baselines), "g": [0] * len(baselines) + [2] * len(baselines),
        "model": [*baselines, *baselines], "setting": "", "certified": True,
        "loss": [*baselines.values(), *(baselines[m] - gains[m] for m in baselines)]})
    [row] = student_scaling_table(certs, "objective").to_dict("records")
    expected = [*by_size[:2], "custom", *by_size[2:]]  # the presets by size around custom, in its place
    assert [column.removeprefix("gain.") for column in row if column.startswith("gain.")] == expected
    assert row["growth"] == pytest.approx(gains[by_size[-1]] - gains[by_size[0]])


def test_a_model_fixed_to_the_base_preset_is_the_base_model_in_every_table(tmp_path):
    """``real`` (no model) and ``real-large`` (``model: large``, the base train config's preset)
    train one model (``search.sweep.Sweep.base_model``): one model name in the frame, so one
    configuration and one baseline model. A certification not run yet (``simple-g2``, added to the
    file after certify) had been model None, a second model ('base') beside 'large' in the
    student-scaling table and off the main model's curves, until its first run was read."""
    from analysis.configurations import configuration_groups
    from analysis.experiments import main_model_mask
    from search.controller import run_sweep

    text = textwrap.dedent("""\
        name: one-model
        executor: {kind: debug, max_parallel: 4, poll_s: 0.01}
        out: OUT
        objective: tests.analysis.objectives:paper_like
        train: {model: {preset: large}}
        grid: {lr: [0.001, 0.003, 0.01]}
        start: {lr: 0.003}
        certifications:
          - {name: real, fixed: {method: real}}
          - {name: real-large, fixed: {method: real, model: large}}
        """).replace("OUT", str(tmp_path / "out"))
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    run_sweep(load_sweep(path))
    path.write_text(text + "  - {name: simple-g2, fixed: {method: simple, g: 2}}\n")  # not run yet
    tables = load_tables(load_sweep(path))
    certs = tables.certifications.set_index("certification")
    assert list(certs["model"]) == ["large"] * 3 and set(tables.runs["model"]) == {"large"}
    assert sorted(map(sorted, configuration_groups(certs.loc[["real", "real-large"]]))) == [["real", "real-large"]]
    assert main_model_mask(tables.certifications).all()
    assert student_scaling_table(tables.certifications).empty  # one model: nothing to compare across sizes


def test_the_generation_curves_are_the_main_models_and_students_only_in_their_table(experiments, tmp_path):
    """The rehearsal of the paper's sweep (benchmarks/rehearsal.py) drew the 1.5b student's
    certifications on the 300m curves of Figure 1 and measured its baseline against them."""
    tables = load_tables(load_sweep(experiments))
    certs = tables.certifications.set_index("certification")
    text = build_report(load_sweep(experiments), tmp_path / "report", findings=True).read_text()
    findings = text.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert f"{certs.loc['real', 'val_loss.iid']:.4f}" in findings
    assert f"{certs.loc['real-large', 'val_loss.iid']:.4f}" not in findings
    assert "gain.large" in text  # the student is still compared, in its own table

    from analysis.experiments import generation_curves
    from analysis.generation import generation_table

    table = generation_table(generation_curves(tables.certifications), sets=["iid"])
    assert not table.duplicated(["method", "g"]).any()  # one point per (method, G): no second model size
    assert set(table["baseline_loss"]) == {certs.loc["real", "val_loss.iid"]}  # the main model's baseline


def test_next_generations_predicts_2g_inside_its_interval():
    g = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    noise = np.random.default_rng(0).normal(0.0, 2e-4, len(g))  # noise-free points give no interval (below)
    loss = [(3.6 + 0.3 * x ** -0.5) * math.exp(e) for x, e in zip(g, noise)]
    fit = fit_power_law(g, loss, n_boot=200, seed=0)
    [row] = next_generations({"simple": fit}).to_dict("records")
    assert row["g_max"] == 32 and row["predicted_2g"] == pytest.approx(3.6 + 0.3 * 64 ** -0.5, abs=2e-3)
    assert row["predicted_low"] <= row["predicted_2g"] <= row["predicted_high"]
    assert row["gain_2g"] > 0 and row["asymptote"] == pytest.approx(3.6, abs=0.05)
    noisy = [value + (0.01 if x == 32.0 else 0.0) for x, value in zip(g, loss)]  # the last point off the law
    [off] = next_generations({"noisy": fit_power_law(g, noisy, n_boot=0, seed=0)}).to_dict("records")
    assert off["measured_at_g_max"] == pytest.approx(noisy[-1])  # the certified loss, not the fit's value
    assert off["fitted_at_g_max"] < off["measured_at_g_max"] - 1e-3
    [bad] = next_generations({"latent": "not fitted: too few points"}).to_dict("records")
    assert "too few points" in bad["note"]


def test_report_draws_the_experiments(experiments, tmp_path):
    text = build_report(load_sweep(experiments), tmp_path / "report").read_text()
    for heading in ("## Where to spend the next generations", "## Stitch order and long-context loss (Figure 4)",
                    "## Transferred hyperparameters (Figure 6)", "## Student scaling", "## Generation diversity vs G"):
        assert heading in text, heading
    assert text.index("## Where to spend the next generations") < text.index("## Certified points")
    images = set(re.findall(r"\(figures/([^)]+)\.png\)", text))
    assert {"fig6-transfers", "fig-diversity-vs-g", "fig4-stitch-order-iid", "fig4-stitch-order-arxiv"} <= images


def test_diversity_table_reads_what_gen_diversity_wrote(experiments):
    """Every measure gen stored (the record's fields, not a copy of their names) comes back as a
    column, per G' the pool serves, None as NaN."""
    pool = experiments.parent / "pool"
    stored = read_manifest(pool).diversity
    table = diversity_table({"simple": str(pool)}, {"simple": [1, 2, POOL_G], "stitched": [1]})
    assert list(table.columns) == ["method", "pool", "kind", "g", *DiversityMeasures.model_fields]
    assert table["g"].tolist() == list(stored.by_g) == [1, 2, POOL_G]
    assert set(table["method"]) == {"simple"} and set(table["kind"]) == {"rephrase"}
    for row in table.itertuples():
        for name in DiversityMeasures.model_fields:
            value = getattr(stored.by_g[row.g], name)
            assert getattr(row, name) == pytest.approx(math.nan if value is None else value, nan_ok=True)


def test_diversity_table_reads_every_g_a_thoughts_pool_serves_and_older_manifests(tmp_path):
    """A G=3 thoughts pool is measured at G'=1 and 3 (both rows, next to the G=1 pool's own); a
    manifest written before that (its own G only) still reads, as its one row."""
    from gen.diversity import write_pool_diversity
    from megadocs.pools import write_manifest
    from tests.pools import write_pool

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    documents = [(f"d{i}", " ".join(words[(i + j) % len(words)] for j in range(30))) for i in range(4)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in documents))
    pools = {}
    for g in (1, 3):
        pools[g] = write_pool(tmp_path / f"thoughts-g{g}", source, "thoughts", g,
                              lambda k, doc_id, text, i: {"text": f"thought {i} of {doc_id}: {text[5 * i:]}"},
                              documents=documents, tokenize=False)
        write_pool_diversity(pools[g])
    sweep_pools, gs = {"latent": {g: str(pool) for g, pool in pools.items()}}, {"latent": [1, 3]}
    table = diversity_table(sweep_pools, gs)
    assert [(row.pool.rsplit("/", 1)[-1], row.g) for row in table.itertuples()] == [
        ("thoughts-g1", 1), ("thoughts-g3", 1), ("thoughts-g3", 3)]
    assert set(table["kind"]) == {"thoughts"} and set(table["method"]) == {"latent"}
    older = read_manifest(pools[3])
    own = older.diversity.model_copy(update={"by_g": {3: older.diversity.by_g[3]}})
    write_manifest(pools[3], older.model_copy(update={"diversity": own}))
    assert [(row.pool.rsplit("/", 1)[-1], row.g) for row in diversity_table(sweep_pools, gs).itertuples()] == [
        ("thoughts-g1", 1), ("thoughts-g3", 3)]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """Mixed and synthetic-only (mix 1, over synthetic epochs and weight decay) stitched
    certifications per G, simple mixed only, and a real-only baseline, on an analytic objective."""
    import yaml

    from search.controller import run_sweep
    from search.sweep import load_sweep

    root = tmp_path_factory.mktemp("ablation")
    lrs = [0.001, 0.003, 0.01]
    certifications = [{"name": "real", "fixed": {"method": "real"}, "grid": {"lr": lrs}},
                      {"name": "simple-g4", "fixed": {"method": "simple", "g": 4}}]
    for g in (1, 4, 16):
        certifications += [
            {"name": f"stitched-g{g}", "fixed": {"method": "stitched", "g": g}},
            {"name": f"stitched-g{g}-synthetic-only", "fixed": {"method": "stitched", "g": g},
             "grid": {"lr": lrs, "wd": [0.2, 0.8, 3.2], "synthetic_epochs": [1, 4, 16], "mix": [1.0]},
             "start": {"lr": 0.003, "wd": 0.2, "synthetic_epochs": 1, "mix": 1.0}},
        ]
    sweep = {"name": "ablation", "executor": {"kind": "debug", "max_parallel": 4, "poll_s": 0.01},
             "out": str(root / "out"), "objective": "tests.analysis.objectives:ablation",
             "grid": {"lr": lrs, "mix": [0.5, 0.75, 0.9]}, "start": {"lr": 0.003, "mix": 0.75},
             "certifications": certifications}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    run_sweep(load_sweep(path))
    return path


def test_synthetic_only_share_of_the_gain_from_mixing_real_data(ablation):
    """On the analytic bowl: the mixed optimum is mix 0.75 (cost 0.005), synthetic only costs 0.08 at
    the certified synthetic epochs (4) and weight decay (0.8); the share follows from those."""
    from analysis.experiments import synthetic_only_table, without_synthetic_only
    from analysis.generation import generation_table
    from search.landscapes import bowl

    tables = load_tables(load_sweep(ablation))
    table = synthetic_only_table(tables.certifications).set_index(["method", "g"])
    assert list(table.index) == [("stitched", 1), ("stitched", 4), ("stitched", 16)]  # simple: no ablation
    baseline = bowl({"method": "real", "lr": 0.003})
    certs = tables.certifications.set_index("certification")
    for g in (1, 4, 16):
        row = table.loc[("stitched", g)]
        point = {k[len("point."):]: v for k, v in certs.loc[f"stitched-g{g}-synthetic-only"].items()
                 if k.startswith("point.") and pd.notna(v)}
        assert point["synthetic_epochs"] == 4 and point["wd"] == 0.8 and point["mix"] == 1.0
        mixed = bowl({"method": "stitched", "g": g, "lr": 0.003, "mix": 0.75})
        only = bowl({"method": "stitched", "g": g, "lr": 0.003, "wd": 0.8, "mix": 1.0})
        assert row["baseline_loss"] == pytest.approx(baseline) and row["mixed_mix"] == 0.75
        assert row["gain_mixed"] == pytest.approx(baseline - mixed)
        assert row["gain_synthetic_only"] == pytest.approx(baseline - only)
        assert row["share_from_real"] == pytest.approx(1 - (baseline - only) / (baseline - mixed))
        assert 0 < row["share_from_real"] < 1
    # more generations make synthetic text alone worth more: the share from real data falls with G
    assert table["share_from_real"].is_monotonic_decreasing
    # the generation curves keep one point per (method, G): the ablation is not a second L(G) point
    curves = generation_table(without_synthetic_only(tables.certifications))
    stitched = curves[(curves["set"] == "iid") & (curves["method"] == "stitched")]
    assert sorted(stitched["g"]) == [1, 4, 16]
    assert stitched["loss"].tolist() == pytest.approx([certs.loc[f"stitched-g{g}", "val_loss.iid"] for g in (1, 4, 16)])


def test_report_draws_the_synthetic_only_ablation(ablation, tmp_path):
    text = build_report(load_sweep(ablation), tmp_path / "report").read_text()
    assert "## Synthetic-only ablation (Figure 13)" in text and "share_from_real" in text
    assert "fig13-synthetic-only" in set(re.findall(r"\(figures/([^)]+)\.png\)", text))
    assert (tmp_path / "report" / "figures" / "fig13-synthetic-only.png").stat().st_size > 0


def test_next_generations_quotes_a_doubling_only_where_the_points_determine_it():
    """One doubling past the points rests on the local slope, which losses falling linearly in log G
    pin down while leaving E NOT determined: quoted with the bootstrap interval, which holds the
    generating curve's value. Blank with the reason where the points do not determine it: three G
    for three parameters (no interval; the old table printed the interpolating law's 2G value) and
    E at its bound (the lowest loss) under a fixed alpha. No asymptote is quoted where E is loose."""
    fits = {name: fit_power_law(g, loss, n_boot=200, seed=0, fix_alpha=1.0 if name == "steady" else None)
            for name, (g, loss, _) in GENERATION_CURVES.items()}
    rows = {row["method"]: row for row in next_generations(fits).to_dict("records")}
    assert set(rows) == set(GENERATION_CURVES)
    for name, row in rows.items():
        assert not fits[name].determined["E"] and math.isnan(row["asymptote"])
        assert "asymptote E NOT determined" in row["note"]
    g, _, truth = GENERATION_CURVES["log_linear"]
    quoted = rows["log_linear"]
    assert quoted["g_max"] == g.max() and quoted["predicted_low"] <= truth <= quoted["predicted_high"]
    # The gain is fitted(G) - predicted(2G): 0.03 on the generating curve; a power law always bends a
    # little (alpha > 0), so its draws end just short of it (0.02994 here).
    assert quoted["gain_low"] <= 0.03 <= quoted["gain_high"] + 1e-3 and quoted["gain_high"] - quoted["gain_low"] < 0.02
    assert "no 2G prediction" not in quoted["note"]
    for name, reason in (("interpolated", "no interval"), ("steady", "E ended at the lowest loss")):
        assert all(math.isnan(rows[name][column]) for column in NEXT_DOUBLING), name
        assert f"no 2G prediction: {reason}" in rows[name]["note"]
        assert math.isfinite(rows[name]["measured_at_g_max"])  # what was measured stays


def test_fit_of_a_sweep_fits_the_reports_points_with_the_same_verdicts(ablation, tmp_path, capsys):
    """`megadocs analysis fit SWEEP.yaml` pooled the synthetic-only (mix 1) certifications into the
    stitched L(G) (6 points where the report fits 3) and fitted with another bootstrap count than the
    report's: the same ledger could get two verdicts. Both now fit `generation_points`."""
    from megadocs.cli import main

    assert main(["analysis", "fit", str(ablation), "--json"]) == 1  # simple: one G, not fitted
    groups = {row["group"]: row for row in json.loads(capsys.readouterr().out)}
    assert groups["stitched"]["n_points"] == 3 and "1 distinct x value" in groups["simple"]["error"]
    assert groups["simple"]["failed"]  # a method's own curve too short is a failed fit
    text = build_report(load_sweep(ablation), tmp_path / "report").read_text()
    fits = text.split("### Fits of L(G)", 1)[1].split("\n## ", 1)[0]
    assert f"not fitted: {groups['simple']['error']}" in fits
    for name, param in groups["stitched"]["params"].items():
        [line] = [line for line in fits.splitlines() if line.startswith(f"  {name:5s} = ")]
        assert line.startswith(f"  {name:5s} = {param['estimate']:.4g}  (")
        assert ("NOT determined" in line) == (not param["determined"])


def test_points_exactly_on_a_power_law_give_no_interval_not_a_zero_width_one():
    """Noise-free points (residuals 0 to rounding, no noise_sigma): the bootstrap drew the fitted curve
    with noise of level 0, and every interval, the next doubling's included, came out zero-width, read
    as certainty. Now no interval, with the reason, as for as many points as parameters; a given
    noise level still gives one."""
    g = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    loss = [3.6 + 0.3 * x ** -0.5 for x in g]
    fit = fit_power_law(g, loss, n_boot=100, seed=0)
    assert fit.ci is None and fit.samples is None
    [note] = [note for note in fit.notes if note.startswith("no interval")]
    assert "no residual" in note and "--noise-sigma" in note
    [row] = next_generations({"exact": fit}).to_dict("records")
    assert all(math.isnan(row[column]) for column in NEXT_DOUBLING)
    assert f"no 2G prediction: {note}" in row["note"]
    assert row["asymptote"] == pytest.approx(3.6) and math.isnan(row["asymptote_low"])
    given = fit_power_law(g, loss, n_boot=100, seed=0, noise_sigma=0.003)
    [quoted] = next_generations({"exact": given}).to_dict("records")
    assert quoted["predicted_low"] < quoted["predicted_2g"] < quoted["predicted_high"]


def _with_second_setting(pinned=None, **fixed):
    """A toy sweep (simple at G = 1, 2, 4, 8) and a second certification at G=2, ``simple-g2-other``,
    whose summary fixes ``fixed`` besides method and G (and whose grid gives the axes ``pinned`` one
    value), 0.05 worse on every set: (summaries, runs)."""
    import dataclasses

    from analysis.frame import runs_frame
    from tests.analysis import synthetic

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2, 4, 8))
    other, summary = synthetic.certification("simple", 2)
    other = [dataclasses.replace(
        r, certification="simple-g2-other", loss=r.loss + 0.05, fixed={**r.fixed, **fixed},
        metrics=r.metrics.model_copy(update={"val_losses": {k: v + 0.05 for k, v in r.metrics.val_losses.items()}}))
        for r in other]
    summary = dataclasses.replace(summary, name="simple-g2-other", fixed={**summary.fixed, **fixed}, pinned=pinned or {})
    return [*summaries, summary], runs_frame(records + other)


@pytest.mark.parametrize("how", ["fixed param", "one-value grid axis"])
def test_two_certifications_at_one_g_under_different_settings_are_not_fitted_as_repeats(how):
    """simple-g2 and simple-g2-other share (method, G) but not a fixed setting (a callable objective's
    fixed param, or a grid axis given one value): they were both points of simple's L(G), fitted as
    two seeds of G=2, and the generation table rose 'from G=2 to G=2'. Then simple-g2-other was left
    out of every curve, named only in a note. It is now the one point of its setting's own curve,
    ``simple [SETTING]``, with the fit's too-few-points reason; simple's curve keeps its four."""
    from analysis.experiments import curve_notes, generation_curves, generation_points
    from analysis.fits import fit_groups
    from analysis.frame import certifications_frame, curve_label
    from analysis.generation import generation_table, monotonicity

    fixed, pinned = ({"temperature": 0.5}, None) if how == "fixed param" else ({}, {"epochs": 4})
    summaries, runs = _with_second_setting(pinned, **fixed)
    certs = certifications_frame(summaries, runs)
    setting = "temperature=0.5" if fixed else "epochs=4"
    assert certs.set_index("certification")["setting"].to_dict() == {
        **dict.fromkeys(certs["certification"], ""), "simple-g2-other": setting}
    other = curve_label("simple", setting)
    assert other == f"simple [{setting}]"
    _main, points = generation_points(certs)
    assert points.groupby("method")["certification"].apply(sorted).to_dict() == {
        "simple": ["simple-g1", "simple-g2", "simple-g4", "simple-g8"], other: ["simple-g2-other"]}
    assert generation_curves(certs).set_index("certification").loc["simple-g2-other", "method"] == other
    assert not monotonicity(generation_table(generation_curves(certs)))
    assert list(curve_notes(certs)) == [other]
    [note] = curve_notes(certs)[other]
    assert note == (f"simple's certifications under the fixed setting {setting}, certified at a G of simple's curve "
                    "under another (the default setting, the one most of simple's certifications have): a curve of "
                    "its own, not seed repeats of that one's points")
    fits = fit_groups(points, x="g", y="loss", group="method", n_boot=0, notes=curve_notes(certs))
    assert fits["simple"].n_points == 4 and not fits["simple"].notes
    assert isinstance(fits[other], str) and "distinct" in fits[other] and fits[other].endswith(note)


@pytest.mark.parametrize("own_baseline", [True, False])
def test_each_setting_of_a_method_is_a_fitted_curve_with_its_settings_baseline(own_baseline):
    """s certified across G at temperature 0.5 beside its main curve (nothing fixed): the curves kept
    the main setting and left the other out, named in a note; a researcher who certified both wants
    both L(G). Each setting is now its own fitted curve, the other named ``s [temperature=0.5]``, and
    each compared with the real-only baseline of its setting where there is one."""
    from analysis.experiments import curve_notes, generation_curves, generation_points
    from analysis.fits import fit_groups
    from analysis.generation import baseline_notes, generation_table, monotonicity

    certs = synthetic.two_settings(own_baseline=own_baseline)
    other = "s [temperature=0.5]"
    _main, points = generation_points(certs)
    assert points.groupby("method")["g"].apply(sorted).to_dict() == {"s": [1, 2, 4, 8], other: [1, 2, 4]}
    fits = fit_groups(points, x="g", y="loss", group="method", n_boot=0, notes=curve_notes(certs))
    assert fits["s"].n_points == 4 and fits[other].n_points == 3
    assert not any("left out" in note for fit in fits.values() for note in fit.notes)
    table = generation_table(generation_curves(certs))
    baselines = table.drop_duplicates("method").set_index("method")[["baseline", "baseline_loss"]]
    assert baselines.loc["s"].tolist() == ["real", 3.60]
    assert baselines.loc[other].tolist() == (["real-t05", 3.58] if own_baseline else ["real", 3.60])
    assert not monotonicity(table)
    assert len(baseline_notes(table)) == (2 if own_baseline else 0)


def test_the_empty_setting_as_another_settings_curve_has_a_short_label():
    """s certified mostly at temperature 0.5 and once with nothing fixed: the curve of the empty
    setting was labelled `s [none beyond method, G and model]` in every table, fit and legend. It is
    `s [default]` (``search.tuned.curve_label``, one place), read back as s's curve. Its note read
    "s's certifications under the fixed setting none beyond method, G and model"; it now says "under
    the default setting" (``analysis.frame.setting_words``, the one wording of a setting)."""
    from analysis.experiments import curve_notes, generation_points, setting_curves
    from analysis.frame import curve_label, curve_method

    certs = synthetic.two_settings(own_baseline=False)
    certs["setting"] = certs["setting"].map({"": "temperature=0.5", "temperature=0.5": ""})
    certs = certs[~certs["certification"].isin(["s-g2-t05", "s-g4-t05"])]  # the empty setting: s at G=1
    label = curve_label("s", "")
    assert label == "s [default]" and curve_method(label, "") == "s"
    _main, points = generation_points(certs)
    assert points.groupby("method")["g"].apply(sorted).to_dict() == {"s": [1, 2, 4, 8], label: [1]}
    assert setting_curves(points) == {label}
    assert curve_notes(certs)[label] == [
        "s's certifications under the default setting, certified at a G of s's curve under another (the fixed "
        "setting temperature=0.5, the one most of s's certifications have): a curve of its own, not seed repeats "
        "of that one's points"]


@pytest.mark.parametrize("tried", [False, True])
def test_a_setting_changed_between_g_is_a_point_of_the_methods_curve_with_a_note(tried):
    """s certified at G = 1, 2, 4 with nothing fixed and at G=8 at temperature 0.5 (the sweep file
    changed between G), and, with ``tried``, temperature 1 tried beside G=2: that second setting at a
    G of s's curve split every other setting off, so G=8 became a one-point curve `s [temperature=0.5]`
    and s's L(G) lost its largest G (without it, one curve and no word of the change). G=8 is s's
    point now, with a note naming the G and the setting; temperature 1 at G=2 is still its own curve."""
    from analysis.experiments import curve_notes, generation_points, setting_curves

    rows = [("s-g1", 1, "", 3.50), ("s-g2", 2, "", 3.45), ("s-g4", 4, "", 3.42), ("s-g8", 8, "temperature=0.5", 3.41)]
    rows += [("s-g2-hot", 2, "temperature=1", 3.47)] if tried else []
    rows.append(("real", 0, "", 3.60))
    certs = pd.DataFrame({"certification": [r[0] for r in rows], "method": ["s"] * (len(rows) - 1) + ["real"],
                          "g": [r[1] for r in rows], "setting": [r[2] for r in rows], "seed": 0, "certified": True,
                          "loss": [r[3] for r in rows], "point.lr": 3e-3})
    _main, points = generation_points(certs)
    curves = points.groupby("method")["certification"].apply(sorted).to_dict()
    assert curves.pop("s") == ["s-g1", "s-g2", "s-g4", "s-g8"]
    assert curves == ({"s [temperature=1]": ["s-g2-hot"]} if tried else {})
    assert setting_curves(points) == set(curves)
    notes = curve_notes(certs)
    assert notes["s"] == ["s at G=8 was certified under the fixed setting temperature=0.5, its other G under the "
                          "default setting: one curve, as the sweep wrote it (no G has both), so what changes "
                          "between those G may be the setting's, not G's"]
    assert set(notes) == {"s", *curves}


def test_certifications_that_differ_only_in_their_fixed_seed_are_repeats_of_one_point():
    """A fixed seed is no setting: two certifications of one point under two seeds are seed repeats."""
    from analysis.experiments import curve_notes, generation_points
    from analysis.frame import certifications_frame

    summaries, runs = _with_second_setting(seed=7)
    certs = certifications_frame(summaries, runs)
    assert set(certs["setting"]) == {""} and curve_notes(certs) == {}
    assert "simple-g2-other" in set(generation_points(certs)[1]["certification"])


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    """simple at G = 1, 2, 4, 8 searching lr and epochs, simple-g2-short at G=2 with epochs pinned to 4
    (one grid value) and simple-g2-again, simple-g2 searched again from another start with a seed
    repeat (it adopts simple-g2's runs), beside a real-only baseline, on the analytic bowl."""
    import yaml

    from search.controller import run_sweep

    root = tmp_path_factory.mktemp("pinned")
    grid = {"lr": [0.001, 0.003, 0.01], "epochs": [4, 8, 16]}
    certifications = [{"name": "real", "fixed": {"method": "real"}}]
    certifications += [{"name": f"simple-g{g}", "fixed": {"method": "simple", "g": g}} for g in (1, 2, 4, 8)]
    certifications.append({"name": "simple-g2-short", "fixed": {"method": "simple", "g": 2},
                           "grid": {"lr": grid["lr"], "epochs": [4]}, "start": {"lr": 0.003, "epochs": 4}})
    certifications.append({"name": "simple-g2-again", "fixed": {"method": "simple", "g": 2},
                           "start": {"lr": 0.01, "epochs": 16}, "noise": {"repeats": 2}})
    sweep = {"name": "pinned", "executor": {"kind": "debug", "max_parallel": 4, "poll_s": 0.01},
             "out": str(root / "out"), "objective": "tests.analysis.objectives:paper_like",
             "grid": grid, "start": {"lr": 0.003, "epochs": 8}, "certifications": certifications}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    run_sweep(load_sweep(path))
    return path


@pytest.fixture(scope="module")
def pinned_outputs(pinned, tmp_path_factory):
    """`megadocs analysis fit PINNED --json`'s groups and the report's text: each bootstraps the
    fits of the sweep's curves (most of these tests' time), so the tests below share one of each."""
    import contextlib
    import io

    from megadocs.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["analysis", "fit", str(pinned), "--json"])
    report = build_report(load_sweep(pinned), tmp_path_factory.mktemp("pinned-report") / "report").read_text()
    return json.loads(out.getvalue()), report


def test_report_and_fit_of_a_sweep_give_a_certification_of_another_setting_its_own_curve(pinned_outputs):
    """The report and `megadocs analysis fit SWEEP.yaml` fit the same four points of simple's L(G)
    (simple-g2-short, certified with epochs pinned to 4, had been a fifth, a 'repeat' of G=2, then
    was left out); simple-g2-short is the one point of `simple [epochs=4]`, in the tables with the
    fit's too-few-points reason and a note that says why it is a curve of its own."""
    (simple, short), text = pinned_outputs
    assert simple["group"] == "simple" and simple["n_points"] == 4
    assert short["group"] == "simple [epochs=4]" and short["n_points"] is None and "distinct" in short["error"]
    note = short["error"].split("; ")[-1]
    assert "setting epochs=4" in note and "left out" not in note
    section = text.split("## Generation scaling", 1)[1].split("\n## ", 1)[0]
    assert f"One setting per curve, one point per configuration and G. simple [epochs=4]: {note}." in section
    assert section.count("| simple | 2 | True |") == 4  # one row at G=2 per validation set (4), not two
    assert section.count("| simple [epochs=4] | 2 | True |") == 4
    assert "left out" not in section


def test_fit_of_a_sweep_exits_0_where_only_another_settings_curve_is_too_short(pinned, capsys):
    """simple-g2-short (epochs pinned to 4, certified at one G) is the curve `simple [epochs=4]`: one
    extra setting tried at one G made `megadocs analysis fit SWEEP.yaml` exit 1 as if a fit had
    failed. That curve keeps its point and is reported not fitted with the reason, as the report does,
    and the command exits 0: every curve with enough G (simple's) was fitted."""
    from megadocs.cli import main

    assert main(["analysis", "fit", str(pinned), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "[simple [epochs=4]]\n  not fitted: power-law fit: 1 distinct x value(s)" in out
    assert "with too few G: no failed fit" in out
    assert "[simple]\nL(g) = E + A * g^(-alpha), 4 points" in out
    assert main(["analysis", "fit", str(pinned), "--bootstrap", "0", "--json"]) == 0
    simple, short = json.loads(capsys.readouterr().out)
    assert short["group"] == "simple [epochs=4]" and "distinct" in short["error"]
    assert short["failed"] is False and simple["failed"] is False  # a script reads what the exit counts


def test_a_failed_fit_is_a_curve_not_fitted_but_a_too_short_curve_of_another_setting():
    """What makes `analysis fit SWEEP.yaml` exit 1 (``failed_curves``): a method's own curve that
    cannot be fitted (too few G, or losses that rise) and a curve of another setting whose points no
    law describes; not a curve of another setting with too few G for the free parameters (with alpha
    fixed, two G are enough and a rise at two G is a failed fit). Under another `--group` alike: the
    exemption held only by method, so grouped by setting t=3's two points were a failed fit; a group
    whose points all lie on curves of another setting is exempt, not one with a point of a method's
    own curve (u at t=1) nor one whose losses rise (t=2)."""
    from analysis.experiments import failed_curves
    from analysis.fits import fit_groups

    points = pd.DataFrame({
        "method": ["s"] * 4 + ["s [t=1]"] + ["s [t=2]"] * 3 + ["s [t=3]"] * 2 + ["u"],
        "setting": [""] * 4 + ["t=1"] + ["t=2"] * 3 + ["t=3"] * 2 + ["t=1"],
        "g": [1, 2, 4, 8, 2, 1, 2, 4, 1, 2, 4],
        "loss": [3.5, 3.45, 3.42, 3.41, 3.44, 3.5, 3.55, 3.6, 3.4, 3.45, 3.4]})
    fits = fit_groups(points, x="g", y="loss", group="method", n_boot=0)
    assert failed_curves(fits, points) == ["s [t=2]", "u"]
    fixed = fit_groups(points, x="g", y="loss", group="method", n_boot=0, fix_alpha=0.5)
    assert failed_curves(fixed, points) == ["s [t=2]", "s [t=3]", "u"]
    by_setting = fit_groups(points, x="g", y="loss", group="setting", n_boot=0)
    assert failed_curves(by_setting, points, "setting") == ["t=1", "t=2"]
    by_g = fit_groups(points, x="loss", y="g", group="g", n_boot=0)  # a grouping of numbers: names as fitted
    assert failed_curves(by_g, points, "g") == [1, 2, 4, 8]


def test_fit_of_a_sweep_grouped_by_setting_exits_0_where_only_another_settings_points_are_too_few(pinned, capsys):
    """`megadocs analysis fit SWEEP.yaml --group setting`: epochs=4's one point (simple-g2-short, the
    curve `simple [epochs=4]`) made the command exit 1; it exits 0 as with the default grouping."""
    from megadocs.cli import main

    assert main(["analysis", "fit", str(pinned), "--bootstrap", "0", "--group", "setting"]) == 0
    out = capsys.readouterr().out
    assert "[epochs=4]\n  not fitted" in out and "another setting than their method's only, with too few G" in out


def _searched_again(*, extra_loss: float | None):
    """The toy sweep (simple at G = 1, 2, 4, 8) and simple-g2-again, a second certification of simple at
    G=2 that differs only in how its search ran: it adopted every run of simple-g2 (same run
    identities) and, with ``extra_loss``, ran one more seed at the certified point with that loss
    (``noise: {repeats: 2}``): (certifications frame, the loss of simple-g2)."""
    from analysis.frame import certifications_frame, runs_frame

    records, summaries, loss = _searched_again_ledger(extra_loss=extra_loss)
    return certifications_frame(summaries, runs_frame(records)), loss


def _searched_again_ledger(*, extra_loss: float | None):
    """:func:`_searched_again`'s ledger records, the summaries ``search status`` makes of them
    (simple-g2-again's point runs read from its records, :func:`search.tuned.runs_at_point`), and
    the loss of simple-g2."""
    import dataclasses

    from search.tuned import runs_at_point
    from tests.analysis import synthetic

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2, 4, 8))
    first = next(s for s in summaries if s.name == "simple-g2")
    again = [dataclasses.replace(r, certification="simple-g2-again", adopted_from="simple-g2")
             for r in records if r.certification == "simple-g2"]
    loss = first.loss
    if extra_loss is not None:
        at_point = next(r for r in again if r.point == first.point)
        again.append(dataclasses.replace(
            at_point, run_id="simple-g2-seed1", adopted_from=None, loss=extra_loss, trial=len(again),
            metrics=at_point.metrics.model_copy(update={"val_loss": extra_loss, "val_losses": {
                k: v + extra_loss - at_point.loss for k, v in at_point.metrics.val_losses.items()}})))
        loss = (first.loss + extra_loss) / 2
    summary = dataclasses.replace(first, name="simple-g2-again", point_runs=runs_at_point(again, first.point),
                                  certificate=dataclasses.replace(first.certificate, loss=loss))
    return records + again, [*summaries, summary], first.loss


def test_search_status_and_the_analysis_merge_a_configuration_certified_twice_alike():
    """simple-g2-again certified simple-g2's point again, on the run they share and one more seed
    there (a noise repeat, 0.1 worse): `search status`'s G trend took the lower of the two certified
    losses (the shared run's alone, simple-g2's) where the analysis took the mean of the two distinct
    runs, so `status` read G=2 0.05 lower than the report and saw no rise from G=1 where the report
    did. One rule now (search.tuned.configuration_loss): both read the mean and both flag the rise."""
    from analysis.experiments import generation_points
    from analysis.frame import certifications_frame, runs_frame
    from analysis.generation import monotonicity
    from search.status import g_trend, g_trend_warnings

    records, summaries, loss = _searched_again_ledger(extra_loss=loss_plus(0.1))
    _main, points = generation_points(certifications_frame(summaries, runs_frame(records)))
    analysis = points.set_index("g")["loss"].to_dict()
    status = {g: tuned.loss for g, tuned in g_trend(summaries)["simple"]}
    assert analysis[2] == pytest.approx(loss + 0.05) and status == pytest.approx(analysis)
    table = points.assign(set="iid", warm_start=None)
    [rise] = monotonicity(table, tolerance=0.0)
    [warning] = g_trend_warnings(summaries)
    assert (rise.g_from, rise.g_to) == (1, 2)
    assert f"g=1: {rise.loss_from:.4f} -> simple-g2-again g=2: {rise.loss_to:.4f}" in warning


@pytest.mark.parametrize("case", ["setting changed between G", "one-value grid axis"])
def test_search_status_and_the_analysis_form_the_same_curves(case):
    """Which certifications form which curve had two rules. simple-g8 certified at temperature 0.5
    (the sweep file changed after G=4), 0.05 above G=4: the analysis put it on simple's curve (with a
    note) and flagged the rise G=4->8, `search status` made it a curve of its own, `simple
    [temperature=0.5]`, and flagged nothing. simple-g4-short, certified with epochs pinned to 4 (one
    grid value) at a point 0.2 lower: the analysis made it `simple [epochs=4]`, `status` did not see
    the pinned axis and took it as simple-g4 searched again (its lower optimum counts), and flagged a
    rise G=4->8 the report did not. One rule now (search.tuned.method_curves): the same curves, names
    and rises; the real-only baseline (G=0), a line beside the curves in the analysis, was a curve
    `real` of status's too."""
    import dataclasses

    from analysis.experiments import generation_points
    from analysis.frame import certifications_frame, runs_frame
    from analysis.generation import monotonicity
    from search.certificate import Certificate
    from search.params import pinned_axes
    from search.status import g_trend, g_trend_warnings
    from search.tuned import runs_at_point

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2, 4, 8))
    by_name = {summary.name: summary for summary in summaries}

    def shifted(source, name, delta, **facts):
        """``source``'s certification as ``name``, its runs (those at epochs 4 with ``pinned``) ``delta`` worse."""
        runs = [dataclasses.replace(r, certification=name, run_id=f"{name}-{r.trial}", loss=r.loss + delta,
                                    metrics=r.metrics.model_copy(update={"val_loss": r.loss + delta, "val_losses": {
                                        k: v + delta for k, v in r.metrics.val_losses.items()}}))
                for r in records if r.certification == source and (r.point["epochs"] == 4 or "pinned" not in facts)]
        best = min(runs, key=lambda r: r.loss)
        records[:] = [r for r in records if r.certification != name] + runs
        by_name[name] = dataclasses.replace(by_name[source], name=name, **facts,
                                            certificate=Certificate(best.point, best.loss, (), ()),
                                            point_runs=runs_at_point(runs, best.point))

    if case == "setting changed between G":
        shifted("simple-g8", "simple-g8", 0.07, fixed={"method": "simple", "g": 8, "temperature": 0.5})
        expected = {"simple": [1, 2, 4, 8]}, {("simple", 4, 8)}
    else:
        shifted("simple-g4", "simple-g4-short", -0.2, pinned=pinned_axes({**synthetic.GRID, "epochs": [4]}))
        expected = {"simple": [1, 2, 4, 8], "simple [epochs=4]": [4]}, set()
    summaries = list(by_name.values())

    _main, points = generation_points(certifications_frame(summaries, runs_frame(records)))
    analysis = {str(method): sorted(set(gs)) for method, gs in points.groupby("method")["g"]}
    rises = {(rise.method, rise.g_from, rise.g_to)
             for rise in monotonicity(points.assign(set="iid", warm_start=None), tolerance=0.0)}
    status = {label: [g for g, _ in curve] for label, curve in g_trend(summaries).items()}
    warned = {(warning.split(": certified loss rises")[0], *map(float, re.findall(r" g=([\d.]+): ", warning)))
              for warning in g_trend_warnings(summaries)}
    assert (analysis, rises) == expected
    assert (status, warned) == expected


@pytest.mark.parametrize("base_certified", [True, False])
def test_search_status_and_the_analysis_name_a_model_s_curve_alike(base_certified):
    """The sweep's base model is 300m; simple is certified at G = 1, 2, 4, 8 on 1.5b (``model: 1.5b``,
    most certifications) and, with ``base_certified``, at G = 1, 2 on the base model (no ``model:``).
    `search status` names a curve by its method alone where it trains the base model, `simple (1.5b)`
    otherwise; the analysis drew the model most certifications train and named it `simple`: its
    `simple` was status's `simple (1.5b)` (G 1-8, status's `simple` G 1-2), or a name status has
    not. Now both name the curve the analysis draws alike: the base model's where one is certified."""
    import dataclasses

    from analysis.experiments import generation_points
    from analysis.frame import certifications_frame, runs_frame
    from search.status import g_trend

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2, 4, 8))
    on_base = {"real-g0", "simple-g1", "simple-g2"} if base_certified else set()
    big = [summary.name for summary in summaries]  # all of them on 1.5b too
    records += [dataclasses.replace(r, certification=f"{r.certification}-1.5b", run_id=f"{r.run_id}-1.5b",
                                    fixed={**r.fixed, "model": "1.5b"}) for r in records if r.certification in big]
    summaries = [*[summary for summary in summaries if summary.name in on_base],
                 *[dataclasses.replace(summary, name=f"{summary.name}-1.5b", fixed={**summary.fixed, "model": "1.5b"})
                   for summary in summaries if summary.name in big]]
    records = [r for r in records if r.certification in {summary.name for summary in summaries}]
    assert len(summaries) == 5 + len(on_base)

    certs = certifications_frame(summaries, runs_frame(records, base_model="300m"), base_model="300m")
    _main, points = generation_points(certs)
    analysis = {str(method): sorted(set(gs)) for method, gs in points.groupby("method")["g"]}
    status = {label: [g for g, _ in curve] for label, curve in g_trend(summaries, "300m").items()}
    expected = {"simple": [1, 2]} if base_certified else {"simple (1.5b)": [1, 2, 4, 8]}
    assert analysis == expected
    assert {label: status[label] for label in analysis if label in status} == expected


@pytest.mark.parametrize("extra", [None, 0.004])
def test_two_certifications_of_one_configuration_are_one_point_of_their_distinct_runs(extra):
    """simple-g2 and simple-g2-again search one configuration (same method, G, model, seed and setting;
    another start or noise) and rest on the same adopted runs: fitted as two seeds of G=2 they counted
    one run twice and narrowed the intervals. They are one point now, whose losses are the mean of
    the distinct runs at the certified point (the shared run once), named in the fit's notes."""
    from analysis.experiments import curve_notes, generation_curves, generation_points
    from analysis.fits import fit_groups

    certs, loss = _searched_again(extra_loss=None if extra is None else loss_plus(extra))
    expected = loss if extra is None else loss + extra / 2
    _main, points = generation_points(certs)
    assert sorted(points["g"]) == [1, 2, 4, 8]
    [at_2] = points[points["g"] == 2].to_dict("records")
    assert at_2["loss"] == pytest.approx(expected)
    curves = generation_curves(certs).set_index("certification")
    assert curves.loc[at_2["certification"], "val_loss.iid_short"] == pytest.approx(expected - 0.1)
    [note] = curve_notes(certs)["simple"]
    runs = "1 distinct run(s) (1 shared)" if extra is None else "2 distinct run(s) (1 shared)"
    assert "one point at G=2 from simple-g2 and simple-g2-again" in note and runs in note
    assert f"loss {expected:.4f} their mean" in note
    fit = fit_groups(points, x="g", y="loss", group="method", n_boot=0, notes=curve_notes(certs))["simple"]
    assert fit.n_points == 4 and note in fit.notes


def loss_plus(extra: float) -> float:
    """simple-g2's certified loss (the toy bowl's minimum at G=2) plus ``extra``."""
    from tests.analysis import synthetic

    return synthetic.tuned_loss("simple", 2) + extra


def test_certifications_of_one_configuration_at_two_points_keep_the_lower_and_leave_out_a_search():
    """A frame built by hand (no run identities): of two certified points of one configuration the
    curve takes the lower loss, the better-tuned local optimum; a certification still searching
    beside a certified one is left out; each is named in the notes."""
    from analysis.experiments import curve_notes, generation_points

    certs = pd.DataFrame({
        "certification": ["real", "s-g1", "s-g2", "s-g2-b", "s-g2-c", "s-g4"],
        "method": ["real", "s", "s", "s", "s", "s"], "g": [0, 1, 2, 2, 2, 4],
        "certified": [True, True, True, True, False, True], "loss": [3.6, 3.5, 3.45, 3.43, 3.30, 3.42],
        "point.lr": [3e-3, 3e-3, 3e-3, 1e-2, 1e-2, 3e-3]})
    _main, points = generation_points(certs)
    assert points.set_index("g")["loss"].to_dict() == {1: 3.5, 2: 3.43, 4: 3.42}
    assert points.set_index("g").loc[2, "certification"] == "s-g2-b"
    [note] = curve_notes(certs)["s"]
    assert "s-g2-c not certified yet: left out" in note
    assert "(lr=0.003): 3.4500 (s-g2); (lr=0.01): 3.4300 (s-g2-b)" in note and "the lowest, s-g2-b's" in note


def test_report_and_fit_of_a_sweep_make_one_point_of_a_configuration_searched_twice(pinned, pinned_outputs):
    """simple-g2-again searched simple at G=2 again (another start, a seed repeat) and adopted
    simple-g2's runs: the report, the notebook's points and `megadocs analysis fit SWEEP.yaml` fit one
    point there, the mean of the distinct runs at the certified point, and say so."""
    from analysis.experiments import generation_points

    tables = load_tables(load_sweep(pinned))
    runs = tables.runs[(tables.runs["certification"].isin(["simple-g2", "simple-g2-again"]))
                       & (tables.runs["point.lr"] == 0.003) & (tables.runs["point.epochs"] == 16)]
    assert runs["run_id"].nunique() == 2 and len(runs) == 3  # the seedless run is shared, the repeat is new
    distinct = runs.drop_duplicates("run_id")["loss"].mean()
    _main, points = generation_points(tables.certifications)
    points = points[points["method"] == "simple"]  # simple-g2-short is the curve of epochs=4
    assert sorted(points["g"]) == [1, 2, 4, 8]
    assert points.set_index("g").loc[2, "loss"] == pytest.approx(distinct)
    (simple, _short), text = pinned_outputs
    assert simple["n_points"] == 4
    [note] = [note for note in simple["notes"] if note.startswith("one point at G=2")]
    assert "simple-g2 and simple-g2-again" in note and "2 distinct run(s) (1 shared)" in note
    section = text.split("## Generation scaling", 1)[1].split("\n## ", 1)[0]
    assert f"simple: {note}." in section and f"note: {note}" in section.split("### Fits of L(G)", 1)[1]


def _with_second_baseline(shift: float, pinned=None, **fixed):
    """The toy sweep (real-g0, simple at G = 1, 2, 4, 8) and real-short, a second real-only baseline whose
    summary fixes ``fixed`` (or whose grid gives the axes ``pinned`` one value), ``shift`` nats off real on every
    set: its certifications frame."""
    import dataclasses

    from analysis.frame import certifications_frame, runs_frame
    from search.tuned import runs_at_point
    from tests.analysis import synthetic

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2, 4, 8))
    other, summary = synthetic.certification("real", 0)
    other = [dataclasses.replace(
        r, certification="real-short", run_id=f"short-{r.run_id}", loss=r.loss + shift, fixed={**r.fixed, **fixed},
        metrics=r.metrics.model_copy(update={"val_losses": {k: v + shift for k, v in r.metrics.val_losses.items()}}))
        for r in other]
    summary = dataclasses.replace(summary, name="real-short", fixed={**summary.fixed, **fixed}, pinned=pinned or {},
                                  certificate=dataclasses.replace(summary.certificate,
                                                                  loss=summary.certificate.loss + shift),
                                  point_runs=runs_at_point(other, summary.point))  # as summarize reads them
    return certifications_frame([*summaries, summary], runs_frame(records + other))


def test_a_curve_is_compared_with_the_baseline_of_its_setting_not_the_lowest():
    """real-short pins epochs to 4 and comes out 0.05 lower than real-g0: simple's curve (nothing pinned)
    was compared with it, the lowest baseline, though it measures another recipe. Now every output
    that reads the baseline (the generation table's gain, the findings' verdicts, the figure's line,
    the student and synthetic-only tables through the same baseline_for) compares simple with real-g0, the
    baseline of its setting, and says which where baselines differ in setting."""
    from analysis.experiments import generation_curves
    from analysis.findings import findings
    from analysis.generation import baseline_notes, generation_table

    certs = _with_second_baseline(-0.05, pinned={"epochs": 4})
    real = certs.set_index("certification").loc["real-g0", "val_loss.iid"]
    table = generation_table(generation_curves(certs))
    simple = table[(table["method"] == "simple") & (table["set"] == "iid")]
    assert set(simple["baseline"]) == {"real-g0"} and list(simple["baseline_loss"]) == [pytest.approx(real)] * 4
    assert list(simple["gain"]) == pytest.approx(list(real - simple["loss"]))
    assert baseline_notes(table) == [
        "simple under the default setting is compared with real-g0, the real-only baseline of its setting"]
    headline = findings(generation_curves(certs))[0]
    assert "Real-only baseline (real-g0, the one simple is compared with" in headline and f"loss {real:.4f}" in headline


def test_a_curve_without_a_baseline_of_its_setting_is_compared_with_the_lowest_and_says_so():
    """simple fixes temperature 0.5 throughout; no baseline does: it is compared with the lowest
    baseline, as before, and the note names it."""
    from analysis.experiments import generation_curves
    from analysis.generation import baseline_notes, generation_table

    certs = _with_second_baseline(-0.05, pinned={"epochs": 4})
    certs.loc[certs["method"] == "simple", "setting"] = "temperature=0.5"
    table = generation_table(generation_curves(certs))
    assert set(table.loc[table["method"] == "simple", "baseline"]) == {"real-short"}
    assert baseline_notes(table) == [
        "simple under the fixed setting temperature=0.5 has no real-only baseline of its setting: it is compared "
        "with the lowest, real-short, under the fixed setting epochs=4"]


def test_student_and_synthetic_only_tables_use_the_baseline_of_the_certifications_setting():
    """The student-scaling and synthetic-only tables read the same baseline as the curves: the one of
    the certification's setting (a lower baseline of another setting is not it)."""
    from analysis.experiments import student_scaling_table, synthetic_only_table

    certs = pd.DataFrame({
        "certification": ["real", "real-short", "real-large", "s-g2", "s-g2-large", "s-g2-only"],
        "method": ["real", "real", "real", "s", "s", "s"], "g": [0, 0, 0, 2, 2, 2],
        "model": [None, None, "large", None, "large", None],
        "setting": ["", "epochs=4", "", "", "", ""], "certified": [True] * 6,
        "loss": [3.60, 3.50, 3.40, 3.45, 3.20, 3.55], "point.mix": [math.nan] * 3 + [0.75, 0.75, 1.0]})
    students = student_scaling_table(certs, "objective").set_index("g")
    assert students.loc[2, "gain.base"] == pytest.approx(3.60 - 3.45)
    assert students.loc[2, "gain.large"] == pytest.approx(3.40 - 3.20)
    [ablation] = synthetic_only_table(certs, "objective").to_dict("records")
    assert ablation["baseline_loss"] == pytest.approx(3.60)
    assert ablation["gain_synthetic_only"] == pytest.approx(0.05)


def _seed_repeated_baselines() -> pd.DataFrame:
    """A frame built by hand: real-s0 and real-s1 differ only in their fixed seed (repeats of one
    baseline); real-s1-b searches real-s1's configuration again and certified another, worse point;
    real-short pins epochs; s has no setting, t one no baseline has."""
    return pd.DataFrame({
        "certification": ["real-s0", "real-s1", "real-s1-b", "real-short", "s-g2", "t-g2"],
        "method": ["real", "real", "real", "real", "s", "t"], "g": [0, 0, 0, 0, 2, 2],
        "model": [None] * 6, "seed": [0, 1, 1, 0, 0, 0],
        "setting": ["", "", "", "epochs=4", "", "temperature=0.5"], "certified": [True] * 6,
        "loss": [3.60, 3.50, 3.56, 3.58, 3.45, 3.47], "point.lr": [3e-3, 3e-3, 1e-2, 3e-3, 3e-3, 3e-3],
        "point.mix": [math.nan] * 4 + [0.75, 0.75]})


def test_fixed_seed_repeats_of_a_baseline_are_their_mean_not_the_lowest():
    """real-s0 and real-s1 differ only in their seed: the lowest of them is biased low (the luckier
    seed), so a curve is compared with their mean; real-s1 and real-s1-b are one configuration, one
    point by the curves' rule (the lower certified point). Every reader names the mean."""
    from analysis.experiments import generation_curves
    from analysis.generation import baseline_for, baseline_notes, generation_table

    certs = _seed_repeated_baselines()
    mean = (3.60 + 3.50) / 2
    loss, name = baseline_for(certs[certs["method"] == "real"], "", "loss")
    assert loss == pytest.approx(mean) and name == "mean of real-s0 and real-s1"
    for frame in (certs, generation_curves(certs)):
        table = generation_table(frame).set_index("method")
        assert table.loc["s", "baseline_loss"] == pytest.approx(mean)
        assert table.loc["s", "baseline"] == "mean of real-s0 and real-s1"
        assert table.loc["t", "baseline"] == "mean of real-s0 and real-s1"  # the lower of the two settings
    assert baseline_notes(generation_table(generation_curves(certs))) == [
        "s under the default setting is compared with mean of real-s0 and real-s1, the real-only baseline of its "
        "setting",
        "t under the fixed setting temperature=0.5 has no real-only baseline of its setting: it is compared with the "
        "lowest, mean of real-s0 and real-s1, under the default setting"]


def test_student_and_synthetic_only_tables_read_each_g_as_the_curves_do():
    """s-g2 and s-g2-b search one configuration and certified one point: the curves take the mean of
    their runs there (3.44), not the lowest (3.43); s-g2-s1 repeats it with another fixed seed, and a
    G's point is the seeds' mean (3.465). The student-scaling and synthetic-only tables took the lowest
    certification; now they read the same loss at (method, G) as the curves (the synthetic-only
    certifications likewise, one point of s-g2-only and s-g2-only-b)."""
    from analysis.experiments import generation_curves, synthetic_only_table
    from analysis.generation import generation_table, monotonicity

    certs = pd.DataFrame({
        "certification": ["real", "real-large", "s-g1", "s-g2", "s-g2-b", "s-g2-s1", "s-g2-large", "s-g2-only",
                          "s-g2-only-b"],
        "method": ["real", "real", "s", "s", "s", "s", "s", "s", "s"], "g": [0, 0, 1, 2, 2, 2, 2, 2, 2],
        "model": [None, "large", None, None, None, None, "large", None, None], "seed": [0, 0, 0, 0, 0, 1, 0, 0, 0],
        "setting": [""] * 9, "certified": [True] * 9,
        "loss": [3.60, 3.40, 3.30, 3.45, 3.43, 3.49, 3.20, 3.55, 3.57], "point.lr": [3e-3] * 9,
        "point.mix": [math.nan, math.nan, 0.75, 0.75, 0.75, 0.75, 0.75, 1.0, 1.0]})
    curves = generation_curves(certs)
    [rise] = monotonicity(generation_table(curves, sets=["objective"]))
    assert rise.loss_to == pytest.approx(3.465)  # the curves' point at G=2
    students = student_scaling_table(certs, "objective").set_index("g")
    assert students.loc[2, "gain.base"] == pytest.approx(3.60 - 3.465)
    assert students.loc[2, "gain.large"] == pytest.approx(3.40 - 3.20)
    [ablation] = synthetic_only_table(certs, "objective").to_dict("records")
    assert ablation["mixed_loss"] == pytest.approx(3.465) and ablation["synthetic_only_loss"] == pytest.approx(3.56)
    assert ablation["baseline_loss"] == pytest.approx(3.60) and ablation["mixed_mix"] == pytest.approx(0.75)


def test_a_transfers_own_loss_is_the_curves_loss_at_its_g_and_setting():
    """A transfer's ``own_loss`` was the lowest certified loss of (method, G, model): the luckier of two
    fixed seeds, a synthetic-only ablation or another setting's curve. It is now the loss the curves
    read there: st-g2 and st-g2-b are one point (their mean, 3.44), st-g2-s1 a seed repeat (the
    recipe's mean, 3.465), in the transfer's setting (temperature=0.5: st-g2-temp's 3.30); NaN where
    the method has no certified point at that G. The report reads the transfers from the curves,
    where st-g2-temp is the curve ``st [temperature=0.5]``: still st's own loss in its setting."""
    from analysis.experiments import generation_curves
    from analysis.frame import FIXED

    certs = pd.DataFrame({
        "certification": ["st-g2", "st-g2-b", "st-g2-s1", "st-g2-temp", "st-g2-only", "st-g2-large"],
        "method": "st", "g": 2, "model": [None] * 5 + ["large"], "seed": [0, 0, 1, 0, 0, 0],
        "setting": ["", "", "", "temperature=0.5", "", ""], "certified": True,
        "loss": [3.45, 3.43, 3.49, 3.30, 3.20, 3.10], "point.lr": 3e-3,
        "point.mix": [0.75] * 4 + [1.0, 0.75]})
    runs = pd.DataFrame({
        "certification": ["transfer/at-s", "transfer/at-s-temp", "transfer/at-s-g4"], "kind": "transfer",
        "trial": 0, "method": "st", "g": [2, 2, 4], "model": None, "loss": [3.50, 3.40, 3.30],
        FIXED + "temperature": [math.nan, 0.5, math.nan]})
    table = transfer_table(runs, certs, {}, "objective").set_index("transfer")
    assert table.loc["at-s", "own_loss"] == pytest.approx((3.44 + 3.49) / 2)
    assert table.loc["at-s", "cost"] == pytest.approx(3.50 - (3.44 + 3.49) / 2)
    assert table.loc["at-s-temp", "own_loss"] == pytest.approx(3.30)
    curves = generation_curves(certs)
    assert curves.set_index("certification").loc["st-g2-temp", "method"] == "st [temperature=0.5]"
    assert transfer_table(runs, curves, {}, "objective").set_index("transfer").loc["at-s-temp", "own_loss"] == \
        pytest.approx(3.30)
    assert math.isnan(table.loc["at-s-g4", "own_loss"]) and math.isnan(table.loc["at-s-g4", "cost"])
