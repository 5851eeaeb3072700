"""Figures: one style readable in grayscale, and the certification map shows what it claims."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from analysis.figures import (
    certification_slice,
    map_axes,
    method_style,
    plot_certification_map,
    plot_certified_hparams,
    plot_generation_scaling,
    save_figure,
)
from analysis.frame import BOUNDS, certifications_frame, runs_frame
from analysis.generation import generation_table
from megadocs.formats import RunStatus
from search.grid import Bound, Side
from tests.analysis import synthetic

GRID_INDEX = {axis: {value: i for i, value in enumerate(values)} for axis, values in synthetic.GRID.items()}


def test_every_known_method_differs_in_marker_and_line_style():
    methods = ["real", "simple", "stitched", "latent", "stitched-first", "stitched-none"]
    styles = [method_style(m) for m in methods]
    assert len({s["marker"] for s in styles[1:]}) == len(methods) - 1  # the baseline is a line, not points
    assert len({str(s["linestyle"]) for s in styles[1:]}) == len(methods) - 1



def test_unknown_methods_get_their_name_and_a_style_that_survives_hash_randomisation():
    names = ["unknown-x", "unknown-y", "mine"]
    styles = [method_style(name) for name in names]
    assert [s["label"] for s in styles] == names
    assert len({(s["color"], s["marker"]) for s in styles}) == len(names)  # told apart in one figure
    # another interpreter (another string-hash seed) draws the same method the same way
    code = f"from analysis.figures import method_style; print([method_style(n) for n in {names!r}])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == str(styles)


def test_generation_figure_needs_synthetic_points():
    records, summaries = synthetic.sweep(methods=(), gs=())
    runs = runs_frame(records)
    table = generation_table(certifications_frame(summaries, runs))
    with pytest.raises(ValueError, match="no synthetic-data certification"):
        plot_generation_scaling(table)


def test_certification_map_marks_runs_path_certificate_and_divergence(tmp_path):
    records, summary = synthetic.certification("stitched", 2)
    records.append(dataclasses.replace(records[0], point={"lr": 1e-2, "epochs": 2, "wd": 0.1},
                                       status=RunStatus.DIVERGED, loss=math.inf, run_id="div"))
    runs = runs_frame(records)
    x_axis, y_axis = map_axes(runs, summary, synthetic.GRID)
    assert {x_axis, y_axis} == {"lr", "epochs"}  # the path moved along these two
    # show the slice at the start's wd so the diverged run (wd 0.1) is on it
    summary = dataclasses.replace(summary, certificate=dataclasses.replace(
        summary.certificate, point={**summary.certificate.point, "wd": 0.1}))
    fig = plot_certification_map(runs, summary, x_axis="lr", y_axis="epochs", grid=synthetic.GRID)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "div." in texts
    on_slice = runs[(runs["point.wd"] == 0.1) & runs["loss"].map(math.isfinite)]
    assert len([t for t in texts if t.replace(".", "").isdigit()]) == len(
        on_slice.drop_duplicates(["point.lr", "point.epochs"]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.003", "0.01"]
    neighbours_on_slice = [n for n in summary.certificate.neighbours if n.point["wd"] == 0.1]
    assert len([p for p in ax.patches if isinstance(p, Rectangle)]) == len(neighbours_on_slice)
    png, pdf = save_figure(fig, tmp_path, "map")
    assert png.stat().st_size > 5000 and pdf.stat().st_size > 1000


def test_certification_slice_is_computed_without_drawing():
    records, summary = synthetic.certification("stitched", 2)
    centre = summary.certificate.point  # lr 3e-3, epochs 8, wd 0.4 (the bowl's minimum)
    records.append(dataclasses.replace(records[0], point={**centre, "lr": 1e-2}, status=RunStatus.DIVERGED,
                                       loss=math.inf))
    records.append(dataclasses.replace(records[0], point=dict(centre), loss=9.0))  # a worse (seeded) repeat of the centre
    cut = certification_slice(runs_frame(records), summary, x_axis="lr", y_axis="epochs", grid=synthetic.GRID)
    assert cut.others == {"wd": centre["wd"]} and cut.certified
    assert cut.centre == (1, 2)  # (lr index, epochs index)
    assert cut.diverged[2, 2] and not cut.diverged.sum() - 1
    # the cell's loss is the mean over the point's repeats, as the certifier decides on it
    assert cut.losses[2, 1] == pytest.approx((synthetic.tuned_loss("stitched", 2) + 9.0) / 2)
    on_slice = [r for r in records if r.point["wd"] == centre["wd"]]
    assert cut.off_slice == len(records) - len(on_slice)
    ran = {(GRID_INDEX["lr"][r.point["lr"]], GRID_INDEX["epochs"][r.point["epochs"]]) for r in on_slice
           if math.isfinite(r.loss)}
    assert {(j, i) for i, j in zip(*np.nonzero(np.isfinite(cut.losses)))} == ran
    assert set(cut.neighbours) == {(0, 2), (2, 2), (1, 1), (1, 3)}  # the wd neighbours are off the slice
    with pytest.raises(ValueError, match="no finished run yet"):
        nothing = dataclasses.replace(summary, certificate=None, best=None)
        certification_slice(runs_frame(records), nothing, x_axis="lr", y_axis="epochs")


def test_certified_hparams_ring_marks_bound_hits():
    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    [row] = cert.index[cert["certification"] == "simple-g2"]
    cert.at[row, BOUNDS] = (Bound("epochs", Side.UPPER, 16),)
    fig = plot_certified_hparams(cert, grid=synthetic.GRID)
    panels = {ax.get_title(): ax for ax in fig.axes}
    rings = lambda ax: [line for line in ax.lines if line.get_markersize() == 13 and len(line.get_xdata())]  # noqa: E731
    assert len(rings(panels["epochs"])) == 1 and rings(panels["lr"]) == []
    assert [t.get_text() for t in panels["epochs"].get_yticklabels()] == ["2", "4", "8", "16"]


def test_certified_hparams_of_one_g_stay_at_that_g():
    """Algorithms are dodged along G; with a single G the panel's range stays around it (it had
    spread the two algorithms to the panel's edges, about an octave either side of the G tick)."""
    records, summaries = synthetic.sweep(methods=("simple", "latent"), gs=(1,))
    cert = certifications_frame(summaries, runs_frame(records))
    fig = plot_certified_hparams(cert, grid=synthetic.GRID)
    for ax in fig.axes:
        low, high = ax.get_xlim()
        assert math.isclose(low, 2**-0.5) and math.isclose(high, 2**0.5)
        drawn = [x for line in ax.lines if line.get_linestyle() != "--" for x in line.get_xdata()]
        assert drawn and all(abs(math.log2(x)) < 0.25 for x in drawn)


def test_uncertified_points_are_drawn_open():
    records, summaries = synthetic.sweep(methods=("latent",), gs=(1, 2))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    cert.loc[cert["certification"] == "latent-g2", "certified"] = False
    fig = plot_generation_scaling(generation_table(cert))
    open_markers = [line for line in fig.axes[0].lines
                    if line.get_markerfacecolor() == "white" and len(line.get_xdata())]
    assert len(open_markers) == 1 and list(open_markers[0].get_xdata()) == [2]


def test_iid_figure_reads_losses_as_data_efficiency_on_the_right():
    from analysis.efficiency import STATED_CAVEAT, efficiency_ratio, load_reference_law

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    cert = certifications_frame(summaries, runs_frame(records))
    law = load_reference_law()
    fig = plot_generation_scaling(generation_table(cert, law=law), law=law)
    right = [ax for ax in fig.axes[0].child_axes if "data efficiency" in ax.get_ylabel()]
    assert len(right) == 1
    forward, _inverse = right[0]._functions
    assert float(forward(3.41)) == pytest.approx(efficiency_ratio(3.41, synthetic.BASELINE, alpha=0.235, E=1.92))
    caption = " ".join(text.get_text().replace("\n", " ") for text in fig.texts)
    assert f"efficiency axis: the paper's reference law, {STATED_CAVEAT}" in caption and "illustrative" not in right[0].get_ylabel()  # said once
    assert "outside" not in caption  # the toy sweep's losses lie in the law's calibrated range
    arxiv = plot_generation_scaling(generation_table(cert, law=law), val_set="arxiv", law=law)
    assert arxiv.axes[0].child_axes == []  # the law is a law of i.i.d. loss only


@pytest.mark.parametrize(("shift", "noise_sd", "axis"), [(0.0056, 0.003, True), (1.0, 0.01, False)])
def test_efficiency_axis_of_a_stated_law_only_where_no_loss_is_out_of_its_range(shift, noise_sd, axis):
    """The axis read a tiny model's losses (one nat above the paper's) as efficiencies of the paper's
    law, labelled illustrative; it is now left out where a row is `out of range` (the table gives no
    number there either), and drawn for losses at the edge of the range, which the caption says."""
    from analysis.efficiency import load_reference_law
    from analysis.frame import VAL

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    cert = certifications_frame(summaries, runs_frame(records))
    cert = cert.assign(loss=cert["loss"] + shift, **{VAL + "iid": cert[VAL + "iid"] + shift}, noise_sd=noise_sd)
    law = load_reference_law()
    fig = plot_generation_scaling(generation_table(cert, law=law), law=law)
    caption = " ".join(text.get_text().replace("\n", " ") for text in fig.texts)
    drawn = [ax for ax in fig.axes[0].child_axes if "data efficiency" in ax.get_ylabel()]
    assert bool(drawn) == axis
    if axis:
        assert "losses at the edge of its calibration" in caption
    else:
        assert "no efficiency axis: losses outside the calibration losses 3.344-3.5544" in caption


def test_figure_7_legend_quotes_each_asymptote_as_the_report_does():
    """The legend wrote "E=3.310" for a 3-point interpolating fit (no interval) and drew an asymptote
    the points do not determine; it now quotes E through `analysis.fits.quote_param`, as the report's fit
    descriptions do, and draws only determined asymptotes."""
    import pandas as pd

    from analysis.ensembles import fit_ensembles
    from analysis.figures import plot_ensembles
    from analysis.fits import param_status, quote_param
    from analysis.scaling import power_law

    k = np.arange(1, 9.0)
    noise = np.random.default_rng(0).normal(0, 0.0005, len(k))
    table = pd.concat([
        pd.DataFrame({"algorithm": "real", "k": [1, 2, 4], "loss": power_law(np.array([1, 2, 4.0]), 3.31, 0.25, 0.9)}),
        pd.DataFrame({"algorithm": "stitched", "k": k, "loss": power_law(k, 3.17, 0.25, 0.9) + noise}),
        pd.DataFrame({"algorithm": "latent", "k": k, "loss": 3.40 - 0.02 * np.log2(k) + noise}),  # linear in log K
    ]).assign(set="iid")
    fits = fit_ensembles(table, n_boot=100)
    statuses = {name: param_status(fit, "E") for name, fit in fits.items()}
    assert statuses["real"] == "no interval" and statuses["stitched"].startswith("95% CI")
    assert statuses["latent"].startswith("NOT determined")
    ax = plot_ensembles(table, fits).axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    for name, fit in fits.items():
        assert f"{method_style(name)['label']}: {quote_param(fit, 'E')}" in labels
    asymptotes = sorted(line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":")
    assert asymptotes == pytest.approx(sorted([fits["real"].E, fits["stitched"].E]))


@pytest.mark.parametrize("runs", ["determined", "loose"])
def test_efficiency_axis_of_a_fitted_law_only_where_it_determines_e_and_alpha(runs):
    """The right-hand axis reads every loss of the panel as an efficiency, most beyond the baseline
    runs: under a fitted law whose E is not determined it is left out and the caption says why;
    under a determined one the caption quotes the law as the report does."""
    from analysis.fits import quote_param
    from analysis.scaling import fit_power_law

    law = fit_power_law(*synthetic.BASELINE_RUNS[runs], n_boot=100)
    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 8))
    cert = certifications_frame(summaries, runs_frame(records))
    fig = plot_generation_scaling(generation_table(cert, law=law), law=law)
    caption = " ".join(text.get_text().replace("\n", " ") for text in fig.texts)  # wrapped at CAPTION_WIDTH
    axes = [ax for ax in fig.axes[0].child_axes if "data efficiency" in ax.get_ylabel()]
    if runs == "loose":
        assert axes == [] and "no efficiency axis: the fitted baseline law does not determine E" in caption
    else:
        assert len(axes) == 1 and f"fitted baseline law: {quote_param(law, 'E')}, {quote_param(law, 'alpha')}" in caption


def test_a_generation_figure_without_a_baseline_says_why_it_has_no_line_or_axis():
    from analysis.efficiency import load_reference_law

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    records = [r for r in records if r.fixed["method"] != "real"]
    summaries = [s for s in summaries if s.fixed["method"] != "real"]
    law = load_reference_law()
    fig = plot_generation_scaling(generation_table(certifications_frame(summaries, runs_frame(records)), law=law),
                                  law=law)
    assert not fig.axes[0].child_axes and not [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert "no real-only baseline on this set" in " ".join(text.get_text() for text in fig.texts)


def test_the_synthetic_only_figure_draws_each_baseline_its_table_compares_with():
    """s and t are compared with the real-only baseline of their own setting (3.60 and 3.50,
    ``synthetic_only_table``); the figure drew one line per model at the lowest of them, so s's gains
    were read against a baseline the table does not use. It now draws each baseline in use, named."""
    from analysis.experiments import synthetic_only_table
    from analysis.figures import plot_synthetic_only

    certs = pd.DataFrame({
        "certification": ["real", "real-t", "s-g2", "s-g2-only", "t-g2", "t-g2-only"],
        "method": ["real", "real", "s", "s", "t", "t"], "g": [0, 0, 2, 2, 2, 2], "model": None,
        "setting": ["", "temperature=0.5", "", "", "temperature=0.5", "temperature=0.5"], "certified": True,
        "loss": [3.60, 3.50, 3.45, 3.55, 3.40, 3.48], "point.mix": [math.nan, math.nan, 0.75, 1.0, 0.75, 1.0]})
    table = synthetic_only_table(certs, "objective")
    assert dict(zip(table["method"], table["baseline"])) == {"s": "real", "t": "real-t"}
    fig = plot_synthetic_only(table, val_set="objective")
    lines = {line.get_label(): line.get_ydata()[0] for line in fig.axes[0].lines
             if line.get_label().startswith("real data only")}
    assert sorted(lines.values()) == pytest.approx(sorted(table["baseline_loss"]))
    assert sorted(lines) == ["real data only, real (3.600)", "real data only, real-t (3.500)"]


def test_figure_7_draws_a_methods_ensembles_of_several_sources_in_its_colour():
    """``real (real-300m)`` and ``real (real-1.5b)`` (a method's ensembles of two sources, ``ensemble_labels``)
    were styled by hashing the whole label: two grey lines, neither in real's black nor named as real's.
    Each is now drawn in its method's colour and marker, the sources told apart by line style and named."""
    from analysis.ensembles import ensemble_label, fit_ensembles
    from analysis.figures import plot_ensembles
    from analysis.scaling import power_law

    k = np.arange(1, 9.0)
    labels = {ensemble_label("real", "real-300m"): 3.40, ensemble_label("real", "real-1.5b"): 3.31, "simple": 3.17}
    table = pd.concat([pd.DataFrame({"algorithm": label, "k": k, "loss": power_law(k, E, 0.25, 0.9)})
                       for label, E in labels.items()]).assign(set="iid")
    ax = plot_ensembles(table, fit_ensembles(table, n_boot=0)).axes[0]
    legend = {text.get_text().split(":")[0]: handle for text, handle in zip(ax.get_legend().get_texts(),
                                                                           ax.get_legend().legend_handles)}
    real = method_style("real")
    first, second = (legend[f"{real['label']} ({source})"] for source in ("real-300m", "real-1.5b"))
    for handle in (first, second):
        assert handle.get_color() == real["color"] and handle.get_marker() == real["marker"]
    assert first.get_linestyle() != second.get_linestyle() and ":" not in (first.get_linestyle(), second.get_linestyle())
    assert legend[method_style("simple")["label"]].get_color() == method_style("simple")["color"]


def test_a_methods_curve_of_another_setting_is_drawn_in_its_colour_and_named_with_the_setting():
    """s at temperature 0.5 was left out of Figure 1; it is now its own curve, ``s [temperature=0.5]``
    (analysis.experiments.generation_curves), drawn in s's colour and marker with another line style,
    its legend entry s's with the setting, beside the real-only line of its setting."""
    from analysis.experiments import generation_curves

    table = generation_table(generation_curves(synthetic.two_settings(own_baseline=True)))
    ax = plot_generation_scaling(table, val_set="objective").axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    own, other = lines["s"], lines["s [temperature=0.5]"]
    assert own.get_color() == other.get_color() == method_style("s")["color"]
    assert own.get_marker() == other.get_marker() and own.get_linestyle() != other.get_linestyle()
    assert sorted(label for label in lines if label.startswith("real data only")) == [
        "real data only, real (3.600)", "real data only, real-t05 (3.580)"]


def test_a_curve_of_another_model_than_the_base_is_drawn_in_its_methods_colour():
    """Where no certification trains the sweep's base model, the curves drawn are another model's,
    named ``simple (1.5b)`` as `search status` names them (search.tuned.curve_labels): they were drawn
    in a fallback grey under that whole name; now in simple's colour and marker, its legend entry
    simple's with the model (and a setting's curve beside it, simple's too, another line style)."""
    from analysis.experiments import generation_curves

    table = generation_table(generation_curves(synthetic.two_settings(own_baseline=True)))
    table["method"] = table["method"].replace({"s": "simple (1.5b)", "s [temperature=0.5]": "simple (1.5b) [temperature=0.5]"})
    ax = plot_generation_scaling(table, val_set="objective").axes[0]
    simple = method_style("simple")
    drawn = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith(("real data only", "_"))}
    assert sorted(drawn) == [f"{simple['label']} (1.5b)", f"{simple['label']} (1.5b) [temperature=0.5]"]
    own, other = drawn.values()
    assert own.get_color() == other.get_color() == simple["color"] and own.get_marker() == simple["marker"]
    assert own.get_linestyle() != other.get_linestyle()
