"""Issue 34, item 2: a certificate says what it rests on (interior on every searched axis, a search
bound, an axis not searched, the runs per point) in the status line, ``status --json``, the report
and ``search certify``'s exit status; before, a one-value grid and a grid corner read "certified",
exit 0, the corner only in a column."""

from __future__ import annotations

import json
import re

import pytest

from megadocs.cli import main
from search.certificate import Certificate, CertifyExit, CertState, NeighbourEvidence, NoiseEstimate, Support
from search.grid import Bound, Direction, Side
from search.status import summarize
from search.sweep import load_sweep


def certify(path) -> int:
    return main(["search", "certify", str(path), "--no-progress"])


def _certificate(support: Support) -> Certificate:
    """A certificate over lr (searched) and mix (one value) with the given support."""
    point = {"lr": 3e-3, "mix": 0.5}
    down = NeighbourEvidence({"lr": 1e-3, "mix": 0.5}, 3.1, "lr", Direction.DOWN)
    up = NeighbourEvidence({"lr": 1e-2, "mix": 0.5}, 3.2, "lr", Direction.UP)
    if support is Support.INTERIOR:
        return Certificate(point, 3.0, (down, up), ())
    if support is Support.BOUND:
        return Certificate(point, 3.0, (down,), (Bound("lr", Side.UPPER, 3e-3),))
    return Certificate(point, 3.0, (), ())


@pytest.mark.parametrize("support", list(Support))
def test_every_support_is_derived_and_described(support):
    basis = _certificate(support).basis
    assert basis.support is support
    assert [a.support for a in basis.axes if a.axis == "mix"] == [Support.NOT_SEARCHED]
    text = basis.describe()
    assert {Support.INTERIOR: "interior on every searched axis (lr)", Support.BOUND: "leans on bound(s) lr upper",
            Support.NOT_SEARCHED: "nothing searched"}[support] in text
    assert "1 run per point (seed noise not measured)" in text
    assert _certificate(support).to_dict()["basis"]["support"] == support.value


def test_a_noise_aware_certificate_says_so():
    certificate = Certificate({"lr": 3e-3}, 3.0, (), (), noise=NoiseEstimate(4, 0.01, 9, 2.0), draws=4)
    assert "noise-aware: 4 runs at the point, up to 4 per point, seed sd 0.01" in certificate.basis.describe()


@pytest.mark.parametrize(("states", "code"), [
    ([(CertState.CERTIFIED, Support.INTERIOR)] * 2, CertifyExit.CERTIFIED),
    ([(CertState.CERTIFIED, Support.INTERIOR), (CertState.CERTIFIED, Support.BOUND)], CertifyExit.CERTIFIED_ON_BOUND),
    ([(CertState.CERTIFIED, Support.NOT_SEARCHED)], CertifyExit.CERTIFIED_ON_BOUND),
    ([(CertState.CERTIFIED, Support.BOUND), (CertState.FAILED, None)], CertifyExit.NOT_CERTIFIED),
    ([(CertState.SEARCHING, None)], CertifyExit.NOT_CERTIFIED),
])
def test_exit_policy(states, code):
    assert CertifyExit.of([(*state, False) for state in states]) is code  # no failed run (test_exits.py)


def test_a_one_value_grid_is_certified_without_a_search_and_exits_3(make_sweep, capsys):
    path = make_sweep(grid={"lr": [0.003], "wd": [0.8], "epochs": [8]}, start={"lr": 0.003, "wd": 0.8, "epochs": 8})
    assert certify(path) == CertifyExit.CERTIFIED_ON_BOUND
    captured = capsys.readouterr()
    assert "certified: not searched" in captured.out and "nothing searched" in captured.out
    assert "a: certified without a search: every axis has one value (exit 3)" in captured.err
    assert main(["search", "status", str(path), "--json"]) == 0  # status reports; it exits 0
    [entry] = json.loads(capsys.readouterr().out)["certifications"]
    assert entry["certificate"]["basis"]["support"] == "not searched"


def test_a_corner_certificate_exits_3_and_names_its_bounds(make_sweep, capsys):
    path = make_sweep(grid={"lr": [0.001, 0.003], "wd": [0.8], "epochs": [2, 4]},
                      start={"lr": 0.001, "wd": 0.8, "epochs": 2})
    assert certify(path) == CertifyExit.CERTIFIED_ON_BOUND
    captured = capsys.readouterr()
    assert "certified: bound" in captured.out
    assert "leans on bound(s) lr upper 0.003, epochs upper 4: a compute limit, not evidence" in captured.out
    assert "wd not searched (single value)" in captured.out
    assert "a: certified on a search bound (lr upper 0.003, epochs upper 4)" in captured.err
    [summary] = summarize(load_sweep(path))
    assert summary.support is Support.BOUND
    assert main(["search", "status", str(path)]) == 0
    assert "certified: bound" in capsys.readouterr().out


def test_an_interior_certificate_exits_0(make_sweep, capsys):
    path = make_sweep()  # the bowl's optimum is inside the conftest grid
    assert certify(path) == CertifyExit.CERTIFIED
    out = capsys.readouterr().out
    assert "certified: interior" in out and "interior on every searched axis (lr, wd, epochs)" in out


def test_the_exit_statuses_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["search", "certify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status:" in text
    for code in CertifyExit:
        assert re.search(rf"(exit status:|;) {code.value} [a-z]", text), code


def test_the_report_says_what_each_certificate_rests_on(tmp_path):
    from analysis.frame import certifications_frame, runs_frame
    from analysis.report import render_report
    from search.grid import AxisExtension, Grid
    from tests.analysis import synthetic

    corner = Grid.from_mapping({"lr": [1e-3, 3e-3, 1e-2], "epochs": [2, 4], "wd": [0.1, 0.4, 0.8]})
    moved = corner.extended({"epochs": AxisExtension(above=(8, 16))})
    records, summaries = [], []
    for method, g, grid in [("real", 0, None), ("simple", 1, corner), ("simple", 2, moved)]:
        r, s = synthetic.certification(method, g, grid=grid)
        records += r
        summaries.append(s)
    runs = runs_frame(records)
    certs = certifications_frame(summaries, runs).set_index("certification")
    assert list(certs["support"]) == ["interior", "bound", "interior"]
    assert certs.loc["simple-g2", "extended"] == "epochs 8 16 (point)"  # the bowl's epochs 8, beyond 4
    text = render_report(runs, certs.reset_index(), summaries, tmp_path / "report").read_text()
    assert "| rests on |" in text and "| extended |" in text
    assert "Certificates that lean on a search bound" in text and "simple-g1 (epochs upper)" in text
    assert "Certificates resting on values beyond the listed grid" in text and "simple-g2 (epochs 8 16 (point))" in text
    assert "Search bounds moved through `extend:`" in text and "simple-g2: epochs above 4: 8, 16" in text


def test_a_bound_certificate_beside_a_failed_certification_does_not_claim_the_exit_it_did_not_give(make_sweep,
                                                                                                  capsys):
    """``a`` certifies on a bound (alone: exit 3); ``b`` diverges everywhere (exit 1). certify's line
    for ``a`` said ``(exit 1)``, as if leaning on a bound gave exit 1."""
    path = make_sweep(objective="search.landscapes:diverging", grid={"lr": [0.001, 0.003], "wd": [0.4, 0.8], "epochs": [8]},
                      start={"lr": 0.003, "wd": 0.8, "epochs": 8},
                      certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                      {"name": "b", "fixed": {"method": "simple", "g": 8},
                                       "grid": {"lr": [0.01, 0.03], "wd": [0.8], "epochs": [8]},
                                       "start": {"lr": 0.01, "wd": 0.8, "epochs": 8}}])
    assert certify(path) == CertifyExit.NOT_CERTIFIED
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("a: certified on a search bound")]
    assert "(exit 1)" not in line and "(exit" not in line, line
    assert "b: not certified: no finite loss" in err
