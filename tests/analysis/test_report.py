"""The report and the CLI against a ledger produced by a real (tiny) certification sweep."""

from __future__ import annotations

import dataclasses
import json
import re

import pandas as pd
import pytest

from analysis.frame import certifications_frame, runs_frame
from analysis.ledger import load_tables
from analysis.report import build_report, render_report
from megadocs.cli import main
from search.certificate import CertState
from search.ledger import read_runs
from search.status import summarize
from search.sweep import load_sweep
from tests.analysis import synthetic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_ledger_tables_match_search_api(toy_sweep):
    sweep = load_sweep(toy_sweep)
    tables = load_tables(sweep)
    records = read_runs(sweep)
    assert len(tables.runs) == len(records) > 0
    certify = tables.runs[tables.runs["kind"] == "certify"]
    assert set(certify["certification"]) == {s.name for s in summarize(sweep)}
    # ensemble members are rows too, with their seeds
    members = tables.runs[tables.runs["kind"] == "ensemble"]
    assert len(members) == 3 and members["seed"].notna().all()
    assert tables.ensembles["real-ens"].completed == members.sort_values("member")["run_dir"].tolist()
    cert = tables.certifications.set_index("certification")
    for summary in summarize(sweep):
        assert cert.loc[summary.name, "loss"] == pytest.approx(summary.certificate.loss)
        assert bool(cert.loc[summary.name, "certified"])
    assert cert.loc["stitched-g4", "bounds_hit"] == "epochs upper"  # the bowl's optimum is epochs 16
    assert tables.grids["real"]["epochs"] == [4, 8, 16]


def test_report_renders_every_figure_it_can(toy_sweep, tmp_path):
    from analysis.efficiency import ReferenceLaw

    # The paper's constants without its calibration range: the toy's losses (2.8-3.0) lie below it,
    # where the shipped law gives no number.
    law = ReferenceLaw(alpha=0.235, E=1.92, provenance="the paper's constants, stated without their range")
    path = build_report(load_sweep(toy_sweep), tmp_path / "report", notes=["demo note: tiny sweep"], ensembles="auto",
                        reference_law=law)
    text = path.read_text()
    assert "demo note: tiny sweep" in text
    for heading in ("## Certified points", "## Generation scaling", "## Certification maps", "## Ensembles",
                    "### iid_long", "### arxiv"):
        assert heading in text, heading
    images = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    names = {image.split("/")[1].split("-")[0] for image in images}
    assert {"fig1", "fig2", "fig5", "fig10", "fig11"} <= names
    for image in images:
        png = path.parent / image
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    # efficiencies and bounds in the tables, a note for what could not be drawn
    assert re.search(r"\| simple \| 4 \| True \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 1\.\d+", text)
    assert "lean on a search bound" in text
    assert "Figure 7 (ensembles): no ensemble study could be scored" in text  # `auto` tried them all
    assert "not scored: member" in text and "has no model/" in text  # analytic members have no model


def test_report_on_an_empty_ledger_says_so(empty_sweep, tmp_path):
    text = build_report(load_sweep(empty_sweep), tmp_path / "report").read_text()
    assert "The ledger holds no runs yet" in text
    assert "every table and figure: the ledger is empty" in text


def test_partial_ledger_draws_what_it_can(tmp_path):
    records, summaries = synthetic.sweep(methods=("simple",), gs=(1,))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    summaries[1] = dataclasses.replace(summaries[1], certificate=None, state=CertState.SEARCHING)
    cert.loc[cert["certification"] == "simple-g1", "certified"] = False
    grids = {s.name: synthetic.GRID for s in summaries}
    text = render_report(runs, cert, summaries, tmp_path, grids=grids).read_text()
    assert "fig1-loss-vs-g-iid.png" in text and (tmp_path / "figures/fig10-map-simple-g1.png").is_file()
    # one G per method: the fit is refused with its reason, no number is invented
    assert "not fitted: power-law fit: 1 distinct x value" in text


def test_a_certifications_table_without_its_record_columns_still_gets_a_report(tmp_path):
    """A certifications table read back from `analysis export --table certifications` has no
    ``bounds`` records (the export drops them); a hand-built one may lack ``support`` too: the
    Findings raised KeyError 'bounds' and the certified-points notes an IndexingError."""
    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2, 4))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs).drop(columns=["bounds", "support"])
    text = render_report(runs, cert, summaries, tmp_path).read_text()
    assert "Best synthetic: simple at G=4" in text and "fig1-loss-vs-g-iid.png" in text


def test_an_efficiency_without_a_finite_upper_bound_says_why_its_interval_is_blank(tmp_path):
    """A fitted baseline law whose bootstrap refits put E above a method's loss more often than the
    interval's tail gives that row's ratio no interval (analysis.efficiency.NO_UPPER_BOUND): the
    report says why beside the blank, as it does for a row without a ratio."""
    import numpy as np

    from analysis.efficiency import NO_UPPER_BOUND
    from analysis.generation import generation_table
    from analysis.scaling import fit_power_law, power_law

    D = np.array([25e6, 50e6, 100e6, 200e6, 400e6, 800e6])
    losses = power_law(D, 3.0, 150.0, 0.3) * np.exp(np.random.default_rng(2).normal(0, 0.002, len(D)))
    law = fit_power_law(D, losses, n_boot=300, seed=2)
    near_E = float(power_law(8 * D[-1], 3.0, 150.0, 0.3))
    cert = pd.DataFrame({"certification": ["real", "latent-g8"], "method": ["real", "latent"], "g": [0, 8],
                         "val_loss.iid": [float(losses[0]), near_E]})
    table = generation_table(cert, law=law)
    [row] = table[table["method"] == "latent"].itertuples()
    assert row.efficiency > 1 and np.isnan(row.efficiency_high) and NO_UPPER_BOUND in row.efficiency_note
    runs = pd.DataFrame({"certification": ["real", "latent-g8"], "status": ["completed"] * 2,
                         "loss": cert["val_loss.iid"]})
    text = render_report(runs, cert, [], tmp_path, law=law).read_text()
    assert f"latent-g8 ({row.efficiency_note})" in text


def test_a_missing_efficiency_is_explained_and_every_report_has_findings(tmp_path):
    """Losses at or below the reference law's asymptote get no efficiency: the report says why
    instead of dropping the column silently; the validation sets are defined where they appear;
    the Findings section is not the demo's alone (issue 34)."""
    from analysis.efficiency import ReferenceLaw

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    law = ReferenceLaw(alpha=0.235, E=3.5, provenance="a law whose E is above the synthetic losses")
    text = render_report(runs, cert, summaries, tmp_path, law=law).read_text()
    assert "## Findings" in text
    assert "No data efficiency for simple-g2 (loss 3.4692 is not above the reference law's E=3.5)" in text
    assert "`--fit-baseline`" in text and "simple-g1 (" not in text.split("No data efficiency", 1)[1].split("\n")[0]
    assert "*iid_short: the iid loss on the tokens of the shorter half of those held-out documents" in text
    assert "## Findings" not in render_report(runs, cert, summaries, tmp_path / "plain", findings=False).read_text()


def test_cli_export_csv_and_parquet(toy_sweep, tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    assert main(["analysis", "export", str(toy_sweep), "--out", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert len(frame) == len(read_runs(load_sweep(toy_sweep)))
    assert {"certification", "point.lr", "val_loss.iid_long", "method", "g", "status", "wall_time_s"} <= set(frame)
    parquet = tmp_path / "cert.parquet"
    assert main(["analysis", "export", str(toy_sweep), "--out", str(parquet), "--table", "certifications"]) == 0
    assert len(pd.read_parquet(parquet)) == 7
    assert main(["analysis", "export", str(toy_sweep), "--out", str(tmp_path / "x.txt")]) == 2
    assert "--out" in capsys.readouterr().err


def test_cli_export_of_an_empty_ledger_warns(empty_sweep, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["analysis", "export", str(empty_sweep), "--out", str(out)]) == 0
    assert "no runs yet" in capsys.readouterr().err
    assert len(pd.read_csv(out)) == 0


def test_cli_fit_on_a_sweep_and_on_a_table(toy_sweep, tmp_path, capsys):
    assert main(["analysis", "fit", str(toy_sweep), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "[simple]" in out and "[stitched]" in out and "3 points" in out
    table = tmp_path / "points.json"
    table.write_text(json.dumps([{"D": d, "loss": 2.0 + 3.0 * d**-0.3} for d in (1, 2, 4, 8, 16)]))
    assert main(["analysis", "fit", str(table), "--x", "D", "--bootstrap", "0"]) == 0
    assert "alpha = 0.3" in capsys.readouterr().out
    assert main(["analysis", "fit", str(table), "--x", "size"]) == 2
    assert "column 'size' not in" in capsys.readouterr().err


def test_cli_report_with_ensembles_draws_figure_7(toy_sweep, tmp_path, capsys):
    """Each file is read whether it names its algorithm (ALGORITHM=FILE) or not, though its path holds
    '=' (a sweep's run folder): ALGORITHM is the plain name before the first '='."""
    folder = tmp_path / "lr=0.01"
    folder.mkdir()
    for label, E in (("real", 3.31), ("unlabelled", 3.15)):
        rows = [{"algorithm": label, "k": k, "loss": E + 0.3 * k**-0.8} for k in (1, 2, 3, 4, 6, 8)]
        pd.DataFrame(rows).to_csv(folder / f"{label}.csv", index=False)
    out = tmp_path / "r"
    assert main(["analysis", "report", str(toy_sweep), "--out", str(out),
                 "--ensembles", str(folder / "real.csv"), f"latent={folder / 'unlabelled.csv'}"]) == 0
    assert "wrote" in capsys.readouterr().out
    text = (out / "report.md").read_text()
    assert "figures/fig7-ensembles-iid.png" in text and (out / "figures/fig7-ensembles-iid.png").is_file()
    assert "| latent | 3.15" in text and "Figure 7 (ensembles)" not in text
    assert "losses per K: `megadocs train ensemble --members" in text  # how to score the sweep's own study


def test_report_opens_with_findings_computed_from_the_ledger(toy_sweep, tmp_path):
    text = build_report(load_sweep(toy_sweep), tmp_path / "report", notes=["a note"], findings=["only illustrative"]).read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Findings", "## Notes", "## Summary"]
    findings = text.split("## Findings", 1)[1].split("## Notes", 1)[0]
    assert "Real-only baseline" in findings and "Best synthetic" in findings
    assert findings.rstrip().endswith("only illustrative")


def test_a_transfer_without_its_own_certification_and_unscored_ensembles_are_explained(tmp_path):
    """A transfer to a (method, G) the sweep never certifies has no cost: the report says why
    instead of an empty cell; `--ensembles auto` that scores nothing does not claim "no losses given";
    pools without a diversity block are named under "Not drawn", not left out silently."""
    from search.controller import run_sweep
    from tests.analysis.conftest import write_sweep

    path = write_sweep(tmp_path / "sweep", """\
        name: transfer-only
        executor: {{kind: debug, max_parallel: 4, poll_s: 0.01}}
        out: {out}
        objective: tests.analysis.objectives:paper_like
        grid: {{lr: [0.001, 0.003, 0.01], wd: [0.4, 0.8], epochs: [8, 16, 32]}}
        start: {{lr: 0.003, wd: 0.8, epochs: 16}}
        certifications: [{{name: simple-g4, fixed: {{method: simple, g: 4}}}}]
        transfers: [{{name: stitched-at-simple, from: simple-g4, fixed: {{method: stitched, g: 4}}}}]
        pools: {{simple: "{out}/pools/simple-g{{g}}"}}
        ensembles: [{{name: one, from: simple-g4, members: 1}}]
        """)
    sweep = load_sweep(path)
    run_sweep(sweep)
    text = build_report(sweep, tmp_path / "report", ensembles="auto").read_text()
    assert "No cost for `stitched-at-simple`: the sweep has no certified stitched at G=4" in text
    assert "Figure 7 (ensembles): no ensemble study could be scored" in text
    assert "generation diversity vs G: no pool of the sweep has a diversity block yet" in text


def test_cli_bad_tables_and_unwritable_out_are_one_line(toy_sweep, tmp_path, capsys):
    # A word in a number column and an --out under a file used to end in tracebacks
    # (ValueError: could not convert string to float; FileExistsError/NotADirectoryError).
    table = tmp_path / "points.csv"
    table.write_text("D,loss\n1e7,4.0\n2e7,3.8 nats\n4e7,3.7\n8e7,3.6\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for argv in (["analysis", "fit", str(table), "--x", "D"],
                 ["analysis", "efficiency", "--loss", "3.5", "--baseline-loss", "3.6", "--fit-baseline", str(table)]):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == f"error: {table}: column 'loss' must hold numbers, got '3.8 nats' " \
            "(row 2; 1 such value(s))"
    for argv in (["analysis", "report", str(toy_sweep), "--out", str(blocker / "report")],
                 ["analysis", "export", str(toy_sweep), "--out", str(blocker / "runs.csv")]):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"error: --out: cannot write {argv[-1]}: {blocker} is a file, not a directory\n"


@pytest.mark.parametrize("place", ["/proc", "/sys"])
def test_an_out_the_file_system_refuses_when_written_is_one_line_naming_the_flag(place, toy_sweep, capsys):
    """`analysis export SWEEP --out /proc/runs.csv` ended in a traceback (FileNotFoundError of its
    temporary file; /sys: PermissionError). Root may write in /proc and /sys as far as a check before
    the work can tell (it is then the file system that refuses, met by megadocs.cli.main), another
    user may not (refused as --out is read): one line naming --out either way."""
    for command, out in (("export", f"{place}/runs.csv"), ("report", f"{place}/report")):
        assert main(["analysis", command, str(toy_sweep), "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out: cannot write {out}: ") and err.count("\n") == 1, err


def test_a_report_of_a_ledger_never_created_leaves_no_out_folder(tmp_path, capsys):
    """The ledger is read after --out is checked: a ledger that does not exist is one line, and the
    --out folder made for the report is not left behind empty."""
    from tests.analysis.conftest import write_sweep

    sweep = write_sweep(tmp_path / "never-certified")
    out = tmp_path / "report"
    assert main(["analysis", "report", str(sweep), "--out", str(out)]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
    assert not out.exists()



def _table_rows(section: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in ``section``, as {header: cell}."""
    table = section[section.index("\n|") + 1:]
    lines = table[:table.find("\n\n")].splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def test_report_quotes_no_efficiency_a_fitted_law_does_not_determine(tmp_path):
    """Under a baseline law whose E is NOT determined (losses linear in log D), an efficiency beyond
    the baseline runs was printed with an interval; now the report says "not determined" with the
    reason, keeps the one read off the curve between the runs, and the figure draws no efficiency
    axis. Each row carries the basis `efficiency()` gives it."""
    from analysis.efficiency import Basis, efficiency
    from analysis.scaling import fit_power_law

    law = fit_power_law(*synthetic.BASELINE_RUNS["loose"], n_boot=100)
    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 8))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    text = render_report(runs, cert, summaries, tmp_path, law=law, noise_sd=0.003).read_text()
    assert "E     = " in text and "NOT determined" in text.split("## Generation scaling", 1)[1]  # the law as fitted
    iid = text.split("### iid\n", 1)[1]
    rows = {row["g"]: row for row in _table_rows(iid)}
    for g in ("1", "8"):
        row = rows[g]
        expected = efficiency(float(row["loss"]), synthetic.BASELINE, law, noise_sd=0.003)
        assert row["efficiency_basis"] == expected.basis.value
        assert (row["efficiency"] != "") == expected.basis.determined
    assert rows["1"]["efficiency_basis"] == Basis.INTERPOLATED.value
    assert rows["8"]["efficiency_basis"] == Basis.NOT_DETERMINED.value
    assert ("Data efficiency NOT determined for simple-g8 (method loss 3.4245 lies 0.0359 below the baseline runs' "
            "losses 3.4603-3.7012") in text  # beyond the seed-noise margin, which the paragraph states
    assert ("outside it by less than 0.0085 nats (2 sds of the difference of two single runs at seed-noise sd "
            "0.0030 given with --noise-sigma), which seed noise cannot tell from it, at its edge (`at the edge`") in text
    assert "no efficiency axis" not in text  # a caption of the figure, not of the report
    assert "No data efficiency for" not in text  # nothing is below an asymptote here


SMALL_LEDGERS = {  # (methods, G values, keep the real-only baseline)
    "one G": (("simple", "stitched"), (1,), True),
    "two Gs": (("simple",), (1, 2), True),
    "no baseline": (("simple",), (1, 2, 4, 8), False),
    "baseline only": ((), (), True),
}


@pytest.mark.parametrize("ledger", SMALL_LEDGERS)
def test_a_small_ledgers_report_says_nothing_its_points_do_not_support(ledger, tmp_path):
    """Reports of one-G, two-G, baseline-less and baseline-only ledgers said "Tuned loss does not
    rise with G" with nothing to compare, announced a reference law for efficiencies none of their
    rows has, printed a next-doubling paragraph over a table of refusals, or dropped that section
    without a word."""
    methods, gs, baseline = SMALL_LEDGERS[ledger]
    records, summaries = synthetic.sweep(methods=methods, gs=gs)
    if not baseline:
        records = [r for r in records if r.fixed["method"] != "real"]
        summaries = [s for s in summaries if s.fixed["method"] != "real"]
    runs = runs_frame(records)
    text = render_report(runs, certifications_frame(summaries, runs), summaries, tmp_path).read_text()
    doubling = text.split("## Where to spend the next generations\n\n", 1)[1].split("\n", 1)[0]
    generation = text.split("## Generation scaling", 1)[1].split("\n### ", 1)[0]
    fitted = len(gs) >= 3
    assert doubling.startswith("From the fitted L(G)") == fitted
    if methods and not fitted:
        assert doubling.startswith("No algorithm's L(G) could be fitted")
    if not methods:
        assert doubling.startswith("No synthetic-data certification has a loss yet")
    assert ("Tuned loss does not rise with G." in generation) == (len(gs) >= 2)
    efficiency = methods and baseline
    assert ("Data efficiency uses the paper's reference law" in generation) == bool(efficiency)
    if not efficiency:
        lacks = "a real-only baseline" if methods else "a synthetic-data certification"
        assert f"No data efficiency: it compares a synthetic-data certification's i.i.d. loss with the real-only " \
               f"baseline's, and the ledger lacks {lacks} with an i.i.d. loss." in generation


def _iid_rows(text: str) -> list[dict[str, str]]:
    """The synthetic rows of the report's iid generation table, by column."""
    section = text.split("### iid\n", 1)[1].split("\n### ", 1)[0]
    return [row for row in _table_rows(section) if row["method"] != "real"]


def _generation_text(text: str) -> str:
    return text.split("## Generation scaling", 1)[1].split("\n### ", 1)[0]


# name -> (shift of every loss, seed-noise sd of the baseline, the basis every synthetic row reads)
STATED_LEDGERS = {
    "the paper's losses": (0.0, None, "stated"),
    "a reproduction 0.0056 above, noise measured": (0.0056, 0.003, "at the edge"),
    "a reproduction 0.0056 above, no noise estimate": (0.0056, None, "out of range"),
    "a tiny model's, one nat up": (1.0, 0.01, "out of range"),
}


@pytest.mark.parametrize("ledger", STATED_LEDGERS)
def test_efficiencies_of_the_papers_law_carry_a_short_basis_explained_once(ledger, tmp_path):
    """Each row said the whole stated-law caveat (10 times in the demo's report) below a paragraph
    that said it too; and a reproduction whose baseline sat 0.0056 above the paper's read "out of
    range" whatever the seed noise. Now each row carries its basis (`stated`, `at the edge`, `out of
    range`: no number), the paragraph explains the values present once, with the margin the sweep's
    measured noise gives; a preface opens the report before the Findings."""
    from analysis.frame import VAL

    shift, noise_sd, basis = STATED_LEDGERS[ledger]
    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    cert = cert.assign(loss=cert["loss"] + shift, **{VAL + "iid": cert[VAL + "iid"] + shift},
                       noise_sd=[noise_sd if method == "real" else None for method in cert["method"]])
    text = render_report(runs, cert, summaries, tmp_path, preface="**A rehearsal.**").read_text()
    assert text.index("**A rehearsal.**") < text.index("## Findings")
    rows = _iid_rows(text)
    assert [row["efficiency_basis"] for row in rows] == [basis, basis]
    assert all(("efficiency" in row) == (basis != "out of range") for row in rows)  # no number out of range
    generation = _generation_text(text)
    from analysis.efficiency import STATED_CAVEAT

    assert generation.count("illustrative") == 1 and STATED_CAVEAT in generation
    assert f"`{basis}`: " in generation and generation.count("`: ") == 1  # only the value its rows carry
    if noise_sd:
        assert f"by less than {2 * noise_sd * 2 ** 0.5:.4f} nats" in generation and f"sd {noise_sd:.4f}" in generation
    else:
        assert "no seed-noise estimate widens them" in generation


def test_a_given_noise_sigma_is_the_reports_seed_noise(tmp_path):
    """`analysis efficiency` took `--noise-sigma` but `analysis report` did not, so a reproduction
    0.0056 above the paper's losses without repeats read `out of range` in the report and `at the edge`
    from the CLI. The report now takes the same option: its margin, Findings and paragraph use it."""
    from analysis.frame import VAL

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))
    runs = runs_frame(records)
    cert = certifications_frame(summaries, runs)
    cert = cert.assign(loss=cert["loss"] + 0.0056, **{VAL + "iid": cert[VAL + "iid"] + 0.0056}, noise_sd=None)
    text = render_report(runs, cert, summaries, tmp_path, noise_sd=0.003).read_text()
    assert [row["efficiency_basis"] for row in _iid_rows(text)] == ["at the edge", "at the edge"]
    assert "sd 0.0030 given with --noise-sigma" in _generation_text(text)
    assert "seed noise sd 0.0030 nats (given with --noise-sigma)" in text.split("## Findings", 1)[1]


def test_cli_report_takes_noise_sigma_as_efficiency_does(toy_sweep, tmp_path, capsys, monkeypatch):
    import functools

    from analysis import report
    from analysis.scaling import MIN_BOOT

    # a given sigma gives the toy's 3-point L(G) fits a parametric bootstrap: 2 * MIN_BOOT draws each
    # instead of the report's N_BOOT (~40 s of refits on 2 loaded cores), the same path
    monkeypatch.setattr(report, "fit_groups", functools.partial(report.fit_groups, n_boot=2 * MIN_BOOT))
    out = tmp_path / "report"
    assert main(["analysis", "report", str(toy_sweep), "--out", str(out), "--noise-sigma", "0.003"]) == 0
    assert "given with --noise-sigma" in (out / "report.md").read_text()
    assert main(["analysis", "report", str(toy_sweep), "--out", str(tmp_path / "bad"), "--noise-sigma", "nan"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --noise-sigma: need a finite seed-noise sd > 0")
    assert not (tmp_path / "bad").exists()


def test_a_row_below_a_stated_laws_asymptote_says_below_e_not_out_of_range(tmp_path):
    """A loss at or below E under a law with a calibration range got the out-of-range cell; it now
    reads `below E`, named in its own paragraph, while a loss in the range reads `stated`."""
    from analysis.efficiency import ReferenceLaw

    records, summaries = synthetic.sweep(methods=("simple",), gs=(1, 2))  # simple: 3.51 (G=1), 3.4692 (G=2)
    runs = runs_frame(records)
    law = ReferenceLaw(alpha=0.235, E=3.5, provenance="a law whose E is above one loss", loss_range=(3.505, 3.6))
    text = render_report(runs, certifications_frame(summaries, runs), summaries, tmp_path, law=law).read_text()
    assert [row["efficiency_basis"] for row in _iid_rows(text)] == ["stated", "below E"]
    assert "No data efficiency for simple-g2 (loss 3.4692 is not above the reference law's E=3.5)" in text
    assert "out of range" not in _generation_text(text)
