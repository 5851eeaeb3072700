"""Figures: one style readable in grayscale, and the certification map shows what it claims."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from analysis.figures import (
    map_axes,
    method_style,
    plot_certification_map,
    plot_certified_hparams,
    plot_generation_scaling,
    save_figure,
)
from analysis.frame import certifications_frame, runs_frame
from analysis.generation import generation_table
from tests.analysis import synthetic


def test_every_known_method_differs_in_marker_and_line_style():
    methods = ["real", "simple", "stitched", "latent", "stitched-first", "stitched-none"]
    styles = [method_style(m) for m in methods]
    assert len({s["marker"] for s in styles[1:]}) == len(methods) - 1  # the baseline is a line, not points
    assert len({str(s["linestyle"]) for s in styles[1:]}) == len(methods) - 1
    assert method_style("unknown-x") == method_style("unknown-x")


def test_generation_figure_needs_synthetic_points():
    records, summaries = synthetic.sweep(methods=(), gs=())
    runs = runs_frame(records)
    table = generation_table(certifications_frame(summaries, runs))
    with pytest.raises(ValueError, match="no synthetic-data certification"):
        plot_generation_scaling(table)


def test_certification_map_marks_runs_path_certificate_and_divergence(tmp_path):
    records, summary = synthetic.certification("stitched", 2)
    records.append({**records[0], "point": {"lr": 1e-2, "epochs": 2, "wd": 0.1}, "status": "diverged",
                    "loss": math.inf, "run_id": "div"})
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


def test_certified_hparams_ring_marks_bound_hits():
    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    cert.loc[cert["certification"] == "simple-g2", "bounds_hit"] = "epochs upper"
    fig = plot_certified_hparams(cert, grid=synthetic.GRID)
    panels = {ax.get_title(): ax for ax in fig.axes}
    rings = lambda ax: [line for line in ax.lines if line.get_markersize() == 13 and len(line.get_xdata())]  # noqa: E731
    assert len(rings(panels["epochs"])) == 1 and rings(panels["lr"]) == []
    assert [t.get_text() for t in panels["epochs"].get_yticklabels()] == ["2", "4", "8", "16"]


def test_uncertified_points_are_drawn_open():
    records, summaries = synthetic.sweep(methods=("latent",), gs=(1, 2))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    cert.loc[cert["certification"] == "latent-g2", "certified"] = False
    fig = plot_generation_scaling(generation_table(cert))
    open_markers = [line for line in fig.axes[0].lines
                    if line.get_markerfacecolor() == "white" and len(line.get_xdata())]
    assert len(open_markers) == 1 and list(open_markers[0].get_xdata()) == [2]
    assert isinstance(cert, pd.DataFrame)


def test_iid_figure_reads_losses_as_data_efficiency_on_the_right():
    from analysis.efficiency import efficiency_ratio, load_reference_law

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    cert = certifications_frame(summaries, runs_frame(records))
    law = load_reference_law()
    fig = plot_generation_scaling(generation_table(cert, law=law), law=law)
    right = [ax for ax in fig.axes[0].child_axes if "data efficiency" in ax.get_ylabel()]
    assert len(right) == 1
    forward, _inverse = right[0]._functions
    assert float(forward(3.41)) == pytest.approx(efficiency_ratio(3.41, synthetic.BASELINE, alpha=0.235, E=1.92))
    arxiv = plot_generation_scaling(generation_table(cert, law=law), val_set="arxiv", law=law)
    assert arxiv.axes[0].child_axes == []  # the law is a law of i.i.d. loss only
