"""The paper's figures from the analysis tables, in one style that stays readable in grayscale.

Figure numbers follow the paper (paper.md, "Figures users expect"):

* 1/2/5 :func:`plot_generation_scaling` - tuned loss vs G (log2 axis) per algorithm, real-only line;
* 7     :func:`plot_ensembles` - loss vs ensemble size K with fitted asymptotes;
* 10    :func:`plot_certification_map` - one certification on a 2-D slice of the grid: every run a
        cell coloured by loss, the path of best points, the certificate and its neighbours;
* 11    :func:`plot_certified_hparams` - certified hyperparameters vs G per algorithm;
* 13    :func:`plot_synthetic_only` - mixed vs synthetic-only tuned loss vs G, real-only line.

Grayscale readability comes from redundancy: every algorithm has its own marker *and* line
style besides its colour, and loss maps use viridis (monotone lightness). All functions take
and return a matplotlib Figure drawn on the Agg canvas without pyplot (no display, no global
figure state); :func:`save_figure` writes PNG and PDF.
"""

from __future__ import annotations

import io
import itertools
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from analysis.efficiency import (
    STATED_CAVEAT,
    Basis,
    ReferenceLaw,
    loss_of_ratio,
    ratio_of_losses,
    undetermined,
)
from analysis.ensembles import label_parts
from analysis.fits import quote_param
from analysis.frame import BOUNDS, POINT, SETTING, curve_method, point_of
from analysis.generation import BASELINE_METHOD
from analysis.scaling import PowerLawFit
from megadocs.formats import IID, REAL, atomic_file
from megadocs.pools import DiversityMeasures
from search.grid import Bound, values_equal

if TYPE_CHECKING:
    from search.status import CertificationSummary

__all__ = [
    "STYLE",
    "method_style",
    "style",
    "save_figure",
    "png_bytes",
    "map_axes",
    "plot_generation_scaling",
    "plot_ensembles",
    "CertificationSlice",
    "certification_slice",
    "draw_certification_slice",
    "plot_certification_map",
    "plot_certified_hparams",
    "plot_synthetic_only",
    "plot_transfers",
    "plot_diversity",
]

STYLE: dict[str, Any] = {
    "figure.figsize": (5.0, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 160,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.88",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "lines.markersize": 6,
    "image.cmap": "viridis",
}

# Okabe-Ito colours (colour-blind safe) of distinct lightness, plus marker and dash per method.
_METHOD_STYLES = {
    REAL: {"color": "black", "marker": "o", "linestyle": "--", "label": "real data only"},
    "simple": {"color": "#0072B2", "marker": "D", "linestyle": "-", "label": "simple rephrasing"},
    "stitched": {"color": "#D55E00", "marker": "s", "linestyle": "--", "label": "stitched rephrasing"},
    "latent": {"color": "#009E73", "marker": "^", "linestyle": "-.", "label": "latent thoughts"},
    "stitched-first": {"color": "#CC79A7", "marker": "P", "linestyle": ":", "label": "stitched (real first)"},
    "stitched-none": {"color": "#E69F00", "marker": "v", "linestyle": (0, (5, 1, 1, 1)), "label": "stitched (no real)"},
    "self-distill": {"color": "#56B4E9", "marker": "x", "linestyle": (0, (1, 1)), "label": "self-distillation"},
}
_FALLBACK_MARKERS = ("P", "X", "*", "h", "<", ">")
CAPTION_WIDTH = 110
"""Characters per line of an in-figure caption at its 7 pt: a longer one is wrapped, not let widen the figure."""
_FALLBACK_COLOURS = ("#555555", "#999999", "#332288", "#882255")


def method_style(method: str) -> dict[str, Any]:
    """Colour, marker, line style and label of an algorithm (stable for unknown names too)."""
    if method in _METHOD_STYLES:
        return dict(_METHOD_STYLES[method])
    index = sum(map(ord, str(method)))
    return {
        "color": _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)],
        "marker": _FALLBACK_MARKERS[index % len(_FALLBACK_MARKERS)],
        "linestyle": "-",
        "label": str(method),
    }


def _figure(*grid, figsize=None, **options):
    """A Figure on the Agg canvas (no pyplot: no global state, nothing to close, no display needed)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*grid, **options)


@contextmanager
def style():
    """The one style every figure is drawn in."""
    with matplotlib.rc_context(STYLE):
        yield


def save_figure(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with style():  # savefig reads its dpi and bbox settings at save time
        for path in paths:  # atomically: a full disk leaves the previous figure, not a truncated one
            with atomic_file(path, "wb") as handle:
                fig.savefig(handle, format=path.suffix.removeprefix("."))
    return paths


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes in the house style (for notebooks: ``display(Image(png_bytes(fig)))``)."""
    buffer = io.BytesIO()
    with style():
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


def map_axes(runs: pd.DataFrame, summary: CertificationSummary, grid: Mapping[str, Sequence[Any]] | None = None):
    """The two axes Figure 10 should show for a certification, or None when fewer than two varied.

    Preference: the axes the path of best points moved along most, then those the runs explored
    most; grid order breaks ties.
    """
    searched = [a for a, values in grid.items() if len(values) > 1] if grid else [
        c[len(POINT):] for c in runs.columns if isinstance(c, str) and c.startswith(POINT)
    ]
    path = summary.path
    varying = sorted(
        (a for a in searched if POINT + a in runs and runs[POINT + a].nunique() > 1),
        key=lambda a: (-len({p.get(a) for p in path}), -runs[POINT + a].nunique()),
    )
    return (varying[0], varying[1]) if len(varying) >= 2 else None


def _log2_axis(ax, values: Sequence[float], axis: str = "x") -> None:
    """A log2 axis whose ticks are the values themselves, written as plain numbers."""
    values = sorted({float(v) for v in values if v > 0})
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    target = ax.xaxis if axis == "x" else ax.yaxis
    set_scale("log", base=2)
    target.set_major_locator(FixedLocator(values))
    target.set_minor_locator(NullLocator())
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def plot_generation_scaling(table: pd.DataFrame, *, val_set: str = IID, title: str | None = None,
                            law: ReferenceLaw | PowerLawFit | None = None):
    """Figures 1/2/5: tuned loss vs G per algorithm, with the real-only baseline as a line.

    ``table`` is :func:`analysis.generation.generation_table`'s. Filled markers are certified
    points, open markers points whose search has not certified yet; a ring marks a certificate
    that leans on a search bound. With a reference ``law`` (the one ``table`` was built with) and an
    i.i.d. set, a right-hand axis reads the loss as data efficiency vs the baseline (a fitted law:
    only where it determines E and alpha, the caption quoting them as the report does; a law given
    as constants: only where no row of the panel is ``out of range`` of its calibration losses).

    Raises:
        ValueError: the table has no synthetic-data point for ``val_set``.
    """
    part = table[table["set"] == val_set]
    synthetic = part[(part["method"] != BASELINE_METHOD) & (part["g"] > 0)]
    if synthetic.empty:
        raise ValueError(f"no synthetic-data certification has a loss on the {val_set} set")
    notes = ["filled: certified, open: not certified"]
    with style():
        fig, ax = _figure()
        styles = _curve_styles(synthetic)
        for method, group in synthetic.groupby("method", sort=False):
            group = group.sort_values("g")
            spec = dict(styles[method])
            label = spec.pop("label")
            ax.plot(group["g"], group["loss"], label=label, **spec)
            _mark_open_and_bounds(ax, group, "loss", spec["color"], spec["marker"],
                                  group[BOUNDS].map(bool))
        baselines = _baselines_of(part, synthetic)
        for (name, loss), line in zip(baselines, itertools.cycle(("--", ":", "-.", (0, (1, 3))))):
            ax.axhline(loss, color="black", linestyle=line, linewidth=1.2,
                       label=f"real data only{f', {name}' if len(baselines) > 1 else ''} ({loss:.3f})")
        if len(baselines) == 1 and law is not None and val_set in (IID, "objective"):
            notes.extend(_efficiency_axis(ax, baselines[0][1], law, synthetic["efficiency_basis"]))
        elif len(baselines) > 1:
            notes.append("one line per real-only baseline in use (each algorithm's setting's, where there is one)"
                         + ("; no efficiency axis: it reads one baseline" if law is not None else ""))
        if not baselines:  # the caption says why the reader looks for the line and the axis in vain
            notes.append("no real-only baseline on this set: no baseline line, no efficiency axis")
        _log2_axis(ax, synthetic["g"])
        ax.set_xlabel("generations per real document G (log2)")
        ax.set_ylabel(f"tuned {val_set} validation loss")
        ax.set_title(title or f"Tuned loss vs generations ({val_set})")
        if synthetic[BOUNDS].map(bool).any():
            notes.append("ring: certificate at a search bound")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        fig.text(0.01, 0.01, textwrap.fill("; ".join(notes), CAPTION_WIDTH), fontsize=7, ha="left", va="bottom")
    return fig


def plot_ensembles(table: pd.DataFrame, fits: Mapping[str, PowerLawFit | str], *, val_set: str = IID):
    """Figure 7: loss vs ensemble size K per algorithm, fitted L(K) and asymptote E (dotted).

    An algorithm label ``method (source)`` (:func:`analysis.ensembles.ensemble_labels`: a method's
    ensembles of several sources) is drawn in its method's colour and marker, each source in its own
    line style (:func:`_source_styles`) and named in the legend."""
    part = table[table["set"] == val_set]
    if part.empty:
        raise ValueError(f"no ensemble losses for {val_set}")
    with style():
        fig, ax = _figure()
        k_max = float(part["k"].max())
        grid = np.geomspace(1, max(2 * k_max, 2), 100)
        lines = _source_styles(part["algorithm"].unique())
        for algorithm, group in part.groupby("algorithm", sort=False):
            method, source = label_parts(algorithm)
            spec = {**method_style(method), "linestyle": lines[algorithm]}
            label = spec.pop("label") + (f" ({source})" if source is not None else "")
            fit = fits.get(algorithm)
            ax.plot(group["k"], group["loss"], linestyle="none", marker=spec["marker"], color=spec["color"])
            if isinstance(fit, PowerLawFit):
                ax.plot(grid, fit.predict(grid), color=spec["color"], linestyle=spec["linestyle"])
                if fit.determined["E"]:  # an asymptote the points do not determine is not drawn as one
                    ax.axhline(fit.E, color=spec["color"], linestyle=":", linewidth=0.9)
                label = f"{label}: {quote_param(fit, 'E')}"
            else:
                ax.plot(group["k"], group["loss"], color=spec["color"], linestyle=spec["linestyle"])
                label = f"{label} (no fit)"
            # legend entry with both the marker and the line style
            ax.plot([], [], color=spec["color"], linestyle=spec["linestyle"], marker=spec["marker"], label=label)
        _log2_axis(ax, sorted(set(part["k"].tolist())))
        ax.set_xlabel("ensemble members K (log2)")
        ax.set_ylabel(f"{val_set} validation loss")
        ax.set_title("Ensembles: L(K) = E + A K^(-alpha); dotted: asymptote E (where determined)")
        ax.legend()
        fig.tight_layout()
    return fig


def _source_styles(labels: Sequence[str], method_of: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The line style of each ensemble label (or, with ``method_of``, of each label whose method it
    gives): a method's first label its method's (:func:`method_style`), its further labels the next
    of a cycle of others (never dotted: the asymptotes' style)."""
    styles: dict[str, Any] = {}
    used: dict[str, list[Any]] = {}
    for label in labels:
        method = method_of(label) if method_of is not None else label_parts(label)[0]
        own = method_style(method)["linestyle"]
        taken = used.setdefault(method, [])
        free = [line for line in ("-", "--", "-.", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1))) if line not in taken]
        styles[label] = own if not taken else (free or [own])[0]
        taken.append(styles[label])
    return styles


def _curve_styles(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The style of each curve of ``rows`` (a generation table's or the curves' synthetic rows): a
    method's curve of another setting (``method [setting]``, :func:`search.tuned.curve_label`) in
    its method's colour and marker, another line style (:func:`_source_styles`), its legend label
    the method's with the setting; so is a curve of another model than the sweep's base model
    (``method (model)``)."""
    settings = rows[SETTING].fillna("").astype(str) if SETTING in rows else pd.Series("", index=rows.index)
    # the method of a curve of another model, `simple (1.5b)` (search.tuned.curve_labels), is simple
    methods = {str(label): label_parts(curve_method(str(label), setting))[0]
               for label, setting in zip(rows["method"], settings)}
    lines = _source_styles(list(methods), methods.__getitem__)
    styles = {}
    for label, method in methods.items():
        spec = {**method_style(method), "linestyle": lines[label]}
        spec["label"] += label.removeprefix(method)
        styles[label] = spec
    return styles


def _axis_values(runs: pd.DataFrame, axis: str, grid: Mapping[str, Sequence[Any]] | None) -> list[Any]:
    if grid and axis in grid:
        return list(grid[axis])
    return sorted(runs[POINT + axis].dropna().unique().tolist())


def _index(values: Sequence[Any], value: Any) -> int | None:
    for i, candidate in enumerate(values):
        if values_equal(candidate, value):
            return i
    return None


@dataclass(frozen=True)
class CertificationSlice:
    """What Figure 10 shows, computed from the runs and the summary (no drawing).

    Cells are indexed ``[y, x]`` over ``ys`` x ``xs``; positions are ``(x index, y index)``.
    """

    name: str
    x_axis: str
    y_axis: str
    xs: list[Any]
    ys: list[Any]
    others: dict[str, Any]  # the other axes, held at the centre's values
    losses: np.ndarray  # [len(ys), len(xs)] mean finite loss per cell (over repeats), NaN where none
    diverged: np.ndarray  # [len(ys), len(xs)] a run on the cell diverged
    off_slice: int  # runs not on this slice (not shown)
    path: list[tuple[int, int]]  # best points' cells, in order
    centre: tuple[int | None, int | None]  # the certified (else best) point's cell
    certified: bool
    neighbours: list[tuple[int, int]]  # the certificate's neighbours on the slice
    bounds_hit: tuple[Bound, ...]  # the search bounds the certificate leans on
    notes: tuple[str, ...] = ()  # caption notes: diverged neighbours, seed noise and ties


def _on_slice(point: Mapping[str, Any], others: Mapping[str, Any]) -> bool:
    return all(axis in point and values_equal(point[axis], value) for axis, value in others.items())


def certification_slice(
    runs: pd.DataFrame,
    summary: CertificationSummary,
    *,
    x_axis: str,
    y_axis: str,
    grid: Mapping[str, Sequence[Any]] | None = None,
) -> CertificationSlice:
    """The cells, path, centre and neighbours of Figure 10 on the ``x_axis`` x ``y_axis`` slice.
    A cell's loss is the mean over the point's seeded repeats, as the certifier decides on it.

    Raises:
        ValueError: the certification has no finished run yet (nothing to centre the slice on).
    """
    certificate = summary.certificate
    centre = summary.point
    if not centre:
        raise ValueError(f"{summary.name}: no finished run yet, nothing to map")
    xs, ys = _axis_values(runs, x_axis, grid), _axis_values(runs, y_axis, grid)
    others = {axis: value for axis, value in centre.items() if axis not in (x_axis, y_axis)}
    sums = np.zeros((len(ys), len(xs)))
    draws = np.zeros_like(sums)
    diverged = np.zeros_like(sums, dtype=bool)
    off_slice = 0
    for _, run in runs.iterrows():
        point = point_of(run)
        if not _on_slice(point, others):
            off_slice += 1
            continue
        i, j = _index(ys, point[y_axis]), _index(xs, point[x_axis])
        if i is None or j is None or pd.isna(run["loss"]):
            continue
        if math.isinf(run["loss"]):
            diverged[i, j] = True
        else:  # repeats of a point (seeds) are averaged, as the certifier does
            sums[i, j] += run["loss"]
            draws[i, j] += 1
    losses = np.where(draws > 0, sums / np.maximum(draws, 1), np.nan)
    path = [p for p in summary.path if x_axis in p and y_axis in p]
    cells = [(_index(xs, p[x_axis]), _index(ys, p[y_axis])) for p in path]
    neighbours = []
    for neighbour in certificate.neighbours if certificate else ():
        if _on_slice(neighbour.point, others):
            cell = (_index(xs, neighbour.point[x_axis]), _index(ys, neighbour.point[y_axis]))
            if None not in cell:
                neighbours.append(cell)
    notes = []
    if certificate and certificate.diverged:
        notes.append("diverged neighbour(s): " + ", ".join(f"{b.axis} {b.side.value}" for b in certificate.diverged))
    if certificate and certificate.noise.sigma is not None:
        notes.append(f"seed noise sd {certificate.noise.sigma:.4f} over {certificate.draws} repeats"
                     + (f", {len(certificate.ties)} tie(s) within noise" if certificate.ties else ""))
    return CertificationSlice(
        name=summary.name, x_axis=x_axis, y_axis=y_axis, xs=xs, ys=ys, others=others,
        losses=losses, diverged=diverged, off_slice=off_slice, path=[c for c in cells if None not in c],
        centre=(_index(xs, centre[x_axis]), _index(ys, centre[y_axis])), certified=certificate is not None,
        neighbours=neighbours, bounds_hit=certificate.bounds_hit if certificate else (),
        notes=tuple(notes),
    )  # fmt: skip


def plot_certification_map(
    runs: pd.DataFrame,
    summary: CertificationSummary,
    *,
    x_axis: str,
    y_axis: str,
    grid: Mapping[str, Sequence[Any]] | None = None,
):
    """Figure 10: the certification path on a 2-D slice (``x_axis`` x ``y_axis``) of the grid.

    The slice holds the other axes at the certified (else best) point. Each run on the slice is
    a cell coloured by its loss (the mean over a point's seeded repeats; printed in it; "div."
    for a diverged run, blank for not run).
    The path of best points is drawn projected onto the slice; the star is the certified point
    and outlined cells are its neighbours on the slice.

    Args:
        runs: the runs frame of *this* certification.
        summary: its :class:`search.status.CertificationSummary`.
        grid: axis values (the sweep's grid); default: the values the runs used.

    Raises:
        ValueError: the certification has no finished run yet.
    """
    return draw_certification_slice(certification_slice(runs, summary, x_axis=x_axis, y_axis=y_axis, grid=grid))


def draw_certification_slice(cut: CertificationSlice):
    """Figure 10 from a computed `CertificationSlice` (drawing only)."""
    losses, xs, ys = cut.losses, cut.xs, cut.ys
    with style():
        fig, ax = _figure(figsize=(1.2 + 0.9 * len(xs), 1.4 + 0.7 * len(ys)))
        finite = losses[np.isfinite(losses)]
        image = ax.imshow(np.ma.masked_invalid(losses), origin="lower", cmap="viridis_r", aspect="auto",
                          vmin=finite.min() if finite.size else None, vmax=finite.max() if finite.size else None)
        ax.set_facecolor("white")
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(len(ys)):
            for j in range(len(xs)):
                # Values sit top-left in the cell so the path (through cell centres) and the star do not hide them.
                if cut.diverged[i, j]:
                    ax.text(j - 0.06, i + 0.3, "div.", ha="right", va="center", fontsize=7, color="black")
                elif np.isfinite(losses[i, j]):
                    # viridis_r is dark for high losses: light text there, dark text on light cells.
                    colour = "white" if losses[i, j] > mid else "black"
                    ax.text(j - 0.06, i + 0.3, f"{losses[i, j]:.3f}", ha="right", va="center", fontsize=7, color=colour)
        if len(cut.path) > 1:
            px, py = zip(*cut.path)
            ax.plot(px, py, color="white", linewidth=4.0, alpha=0.9, zorder=3)
            ax.plot(px, py, color="black", linewidth=1.5, marker=".", zorder=4, label="path of best points")
            for (x0, y0), (x1, y1) in zip(cut.path, cut.path[1:]):
                if (x0, y0) != (x1, y1):
                    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=5,
                                arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.5})
        star_label = "certified point" if cut.certified else "best so far (not certified)"
        ax.plot(*cut.centre, marker="*", markersize=13, color="white", markeredgecolor="black", linestyle="none",
                zorder=6, label=star_label)
        for j, i in cut.neighbours:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black",
                                   linewidth=2.0, linestyle="--", zorder=5))
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        ax.set_xlabel(cut.x_axis)
        ax.set_ylabel(cut.y_axis)
        ax.grid(False)
        fixed = ", ".join(f"{a}={v:g}" for a, v in cut.others.items())
        ax.set_title(f"{cut.name}\n" + (f"slice at {fixed}" if fixed else "full grid"), fontsize=9)
        fig.colorbar(image, ax=ax, label="loss (lower is better)")
        caption = "dashed cells: certificate's neighbours" if cut.certified else ""
        if cut.bounds_hit:
            caption += "; leans on search bound(s): " + ", ".join(b.label for b in cut.bounds_hit)
        for note in cut.notes:
            caption += ("; " if caption else "") + note
        if cut.off_slice:
            caption += ("; " if caption else "") + f"{cut.off_slice} run(s) off this slice not shown"
        if caption:
            fig.text(0.01, 0.005, caption, fontsize=7, ha="left", va="bottom")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2, fontsize=7)
        fig.tight_layout()
    return fig


def plot_certified_hparams(
    certifications: pd.DataFrame,
    *,
    axes: Sequence[str] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
):
    """Figure 11: certified hyperparameters vs G per algorithm (one panel per grid axis).

    The y axis of a panel lists the axis's grid values evenly spaced (as the search steps
    through them), so the top and bottom rows are the search bounds. Algorithms are dodged
    slightly along G so equal values stay visible. Open markers: not certified (best so far);
    a ring: the certificate leans on that axis's bound. The real-only certificate is a
    horizontal dashed line.

    Raises:
        ValueError: no synthetic-data certification, or no grid axes in the table.
    """
    axes = list(axes or [c[len(POINT):] for c in certifications.columns if c.startswith(POINT)])
    synthetic = certifications[(certifications["method"] != BASELINE_METHOD) & (certifications["g"] > 0)]
    if synthetic.empty or not axes:
        raise ValueError("no synthetic-data certification with a grid point")
    baseline = certifications[certifications["method"] == BASELINE_METHOD]
    methods = list(dict.fromkeys(synthetic["method"]))
    with style():
        fig, panels = _figure(1, len(axes), figsize=(2.6 * len(axes) + 0.6, 3.0), squeeze=False)
        for ax, axis in zip(panels[0], axes):
            column = POINT + axis
            values = _axis_values(certifications, axis, grid)
            styles = _curve_styles(synthetic)
            for n, method in enumerate(methods):
                group = synthetic[synthetic["method"] == method].dropna(subset=[column]).sort_values("g")
                spec = dict(styles[str(method)])
                label = spec.pop("label")
                dodge = 2 ** (0.09 * (n - (len(methods) - 1) / 2))
                placed = group.assign(g=group["g"] * dodge, y=[_index(values, v) for v in group[column]])
                ax.plot(placed["g"], placed["y"], label=label, **spec)
                at_bound = group[BOUNDS].map(lambda bounds, axis=axis: any(b.axis == axis for b in bounds))
                _mark_open_and_bounds(ax, placed, "y", spec["color"], spec["marker"], at_bound)
            if len(baseline) and column in baseline and baseline[column].notna().any():
                ax.axhline(_index(values, baseline[column].dropna().iloc[0]), color="black", linestyle="--",
                           linewidth=1.0, label="real data only")
            _log2_axis(ax, synthetic["g"])
            # half an octave either side of the G values: with one G, autoscaling spread the dodged
            # algorithms over the whole panel, far from the one tick they belong to
            ax.set_xlim(synthetic["g"].min() / 2**0.5, synthetic["g"].max() * 2**0.5)
            ax.set_yticks(range(len(values)), [f"{v:g}" for v in values])
            ax.set_ylim(-0.5, len(values) - 0.5)
            ax.set_xlabel("G (log2)")
            ax.set_title(axis)
        panels[0][0].set_ylabel("certified value (grid)")
        handles, labels = panels[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), bbox_to_anchor=(0.5, -0.02))
        fig.suptitle("Certified hyperparameters vs G (open: not certified; ring: at a search bound)", fontsize=9)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def _baselines_of(part: pd.DataFrame, synthetic: pd.DataFrame) -> list[tuple[str | None, float]]:
    """(certification, loss) of each real-only baseline the ``synthetic`` rows of a generation table
    are compared with (its ``baseline``/``baseline_loss``), lowest first; a table without those
    columns: the lowest real-only row of ``part``."""
    if "baseline_loss" not in synthetic:
        real = part.loc[part["method"] == BASELINE_METHOD, "loss"]
        return [(None, float(real.min()))] if len(real) else []
    names = synthetic["baseline"] if "baseline" in synthetic else pd.Series(None, index=synthetic.index)
    used = {(None if pd.isna(name) else str(name), float(loss))
            for name, loss in zip(names, synthetic["baseline_loss"]) if pd.notna(loss)}
    return sorted(used, key=lambda item: (item[1], item[0] or ""))


def _efficiency_axis(ax, baseline_loss: float, law: ReferenceLaw | PowerLawFit, bases) -> list[str]:
    """Right-hand axis: efficiency ((L0 - E) / (L - E))^(1/alpha) of a loss on the left axis; returns
    notes for the caption. The axis reads every loss of the panel, so it is drawn only where the
    law gives every one: a fitted law that determines E and alpha (the table gives the
    efficiencies a fitted curve determines between its points), or a law given as constants none of
    whose panel rows (``bases``: their ``efficiency_basis``) lies out of its calibration range."""
    loose = undetermined(law)
    if loose:
        return [f"no efficiency axis: the fitted baseline law does not determine {' and '.join(loose)}"]
    if baseline_loss <= law.E:  # no real data reaches the baseline: the report names that
        return []
    bases = set(bases.dropna())
    if isinstance(law, ReferenceLaw) and Basis.OUT_OF_RANGE.value in bases:
        low, high = law.loss_range
        return [f"no efficiency axis: losses outside the calibration losses {low:g}-{high:g} of {law.name} "
                "(an extrapolation of that law, not an estimate)"]

    def to_efficiency(loss):  # nan at or below E, where no amount of real data reaches the loss
        loss = np.asarray(loss, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(loss > law.E, ratio_of_losses(loss, baseline_loss, law.alpha, law.E), np.nan)

    def to_loss(ratio):
        ratio = np.asarray(ratio, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return loss_of_ratio(np.where(ratio > 0, ratio, np.nan), baseline_loss, law.alpha, law.E)

    right = ax.secondary_yaxis("right", functions=(to_efficiency, to_loss))
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}x"))
    if isinstance(law, ReferenceLaw):
        right.set_ylabel(f"data efficiency (alpha={law.alpha:g}, E={law.E:g})")
        return [f"efficiency axis: {law.name}, {STATED_CAVEAT}"  # the report's paragraph says it in full
                + ("; losses at the edge of its calibration" if Basis.AT_EDGE.value in bases else "")]
    right.set_ylabel("data efficiency (fitted baseline law)")
    return [f"fitted baseline law: {quote_param(law, 'E')}, {quote_param(law, 'alpha')}"]


def _mark_open_and_bounds(ax, frame: pd.DataFrame, y: str, colour, marker, at_bound) -> None:
    """Open markers over uncertified points, rings around points whose certificate hits a bound."""
    uncertified = frame[~frame["certified"].astype(bool).to_numpy()]
    ax.plot(uncertified["g"], uncertified[y], marker=marker, color=colour, linestyle="none",
            markerfacecolor="white")
    bounded = frame[np.asarray(at_bound, dtype=bool)]
    ax.plot(bounded["g"], bounded[y], marker="o", markersize=13, markerfacecolor="none",
            markeredgecolor=colour, linestyle="none", markeredgewidth=0.8)


def plot_transfers(table: pd.DataFrame, *, val_set: str = IID):
    """Figure 6: each method at its own certified hyperparameters (solid) and at another
    certification's (dashed), vs G; the source certifications' losses dotted.

    Raises:
        ValueError: the table is empty.
    """
    if table is None or len(table) == 0:
        raise ValueError("no finished transfer run")
    with style():
        fig, ax = _figure()
        for method, group in table.groupby("method", sort=False):
            _solid_and_dashed(ax, group, method, ("own_loss", "own tuned"),
                              ("transfer_loss", f"at {', '.join(sorted(set(map(str, group['source']))))}"))
        sources = table.dropna(subset=["source_loss"]).drop_duplicates(["source"]).sort_values("g")
        if len(sources):
            ax.plot(sources["g"], sources["source_loss"], linestyle=":", color="black", marker=".",
                    label="source certifications")
        _finish_loss_vs_g(fig, ax, table, f"{val_set} validation loss", "Own tuned vs transferred hyperparameters")
    return fig


def _solid_and_dashed(ax, group: pd.DataFrame, method: str, solid: tuple[str, str], dashed: tuple[str, str],
                      suffix: str = "") -> None:
    """Two loss-vs-G lines of one method in its style: ``(column, label)`` solid, then dashed
    with open markers."""
    group = group.sort_values("g")
    spec = method_style(method)
    label = spec.pop("label") + suffix
    spec.pop("linestyle", None)
    ax.plot(group["g"], group[solid[0]], linestyle="-", label=f"{label}, {solid[1]}", **spec)
    ax.plot(group["g"], group[dashed[0]], linestyle="--", mfc="white", label=f"{label}, {dashed[1]}", **spec)


def _finish_loss_vs_g(fig, ax, table: pd.DataFrame, ylabel: str, title: str) -> None:
    _log2_axis(ax, table["g"])
    ax.set_xlabel("generations per real document G (log2)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, fontsize=7)
    fig.tight_layout()


def plot_diversity(table: pd.DataFrame, measures: Sequence[str] = tuple(DiversityMeasures.model_fields)):
    """Generation diversity vs G' per pool: does generating more add new text? One panel per
    measure (default: every :class:`megadocs.pools.DiversityMeasures` field, four).

    Raises:
        ValueError: no pool manifest holds diversity figures.
    """
    if table is None or len(table) == 0:
        raise ValueError("no pool has diversity figures (run `megadocs gen diversity --pool POOL`)")
    with style():
        fig, axes = _figure(2, 2, figsize=(9, 6))
        axes = axes.ravel()
        for ax, measure in zip(axes, measures):
            for (method, pool), group in table.groupby(["method", "pool"], sort=False):
                group = group.sort_values("g")
                spec = method_style(method)
                label = spec.pop("label")
                ax.plot(group["g"], group[measure], label=f"{label} ({Path(pool).name})", **spec)
            _log2_axis(ax, table["g"])
            ax.set_title(measure.replace("_", " "), fontsize=9)
            ax.set_xlabel("G'")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
    return fig


def plot_synthetic_only(table: pd.DataFrame, *, val_set: str = IID):
    """Figure 13: tuned loss vs G per method, mixed with real data (solid) and synthetic only
    (dashed, open markers), with each real-only baseline the table compares with as a line (named
    where a model has several: each method's setting's).

    ``table`` is :func:`analysis.experiments.synthetic_only_table`'s.

    Raises:
        ValueError: the table is empty.
    """
    if table is None or len(table) == 0:
        raise ValueError("no method and G has both a mixed and a synthetic-only certification")
    with style():
        fig, ax = _figure()
        for (method, model), group in table.groupby(["method", "model"], sort=False):
            _solid_and_dashed(ax, group, method, ("mixed_loss", "mixed with real"),
                              ("synthetic_only_loss", "synthetic only"), "" if model == "base" else f" ({model})")
        for model, group in table.groupby("model", sort=False):  # each baseline the table compares with
            baselines = _baselines_of(group, group)
            for name, loss in baselines:
                ax.axhline(loss, color="black", linestyle=":", linewidth=1.2,
                           label=f"real data only{'' if model == 'base' else f' ({model})'}"
                                 f"{f', {name}' if len(baselines) > 1 else ''} ({loss:.3f})")
        _finish_loss_vs_g(fig, ax, table, f"tuned {val_set} validation loss", "Synthetic-only ablation")
    return fig
