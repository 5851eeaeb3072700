"""Issue 32: ``extend:`` moves a search bound instead of leaning on it.

The pure core on analytic landscapes whose optimum lies beyond the listed grid (checked against
brute force on the extended grid and against certifying a grid that listed those values from the
start), the sweep file's refusals, and the controller, ledger, status and plan on a real Optuna
ledger (debug executor: seconds)."""

from __future__ import annotations

import json

import pytest
import yaml

from megadocs.cli import main
from megadocs.errors import UserError
from search.certificate import CertifyExit, Support
from search.grid import AxisExtension, Grid, Side
from search.landscapes import Landscape, bowl, random_landscape
from search.ledger import STUDY_EXTENSIONS, Ledger
from search.params import RunParams
from search.plan import run_counts
from search.simulate import SimulatedEvaluator
from search.status import summarize
from search.strategies import CertifySearch, drive
from search.sweep import load_sweep

from .conftest import calls

AXES = {"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "wd": [0.1, 0.2, 0.4, 0.8, 1.6], "epochs": [1, 2, 4, 8, 16, 32, 64],
        "mix": [0.5, 0.75, 0.9]}
EXTEND = {"lr": AxisExtension(below=(3e-5, 1e-5), above=(3e-2, 1e-1)), "wd": AxisExtension(above=(3.2, 6.4, 12.8)),
          "epochs": AxisExtension(above=(128, 256, 512)), "mix": AxisExtension(above=(0.95,))}
START = {"lr": 1e-3, "wd": 0.4, "epochs": 4, "mix": 0.75}
EXTENDED = Grid.from_mapping(AXES).extended(EXTEND)
LISTED_FROM_THE_START = Grid.from_mapping(EXTENDED.as_mapping())  # the same values, all listed


def certify(fn, grid, start=START, slots=4, **kwargs):
    search = CertifySearch("c", grid, start, **kwargs)
    evaluator = SimulatedEvaluator(fn, slots=slots)
    drive([search], evaluator)
    return search, [request.point for request in evaluator.calls]


def is_local_optimum(grid, fn, point) -> bool:
    return all(fn(n.point) >= fn(point) for n in grid.neighbours(point))


def beyond_listed(point) -> bool:
    return any(point[axis] not in values for axis, values in AXES.items())


@pytest.mark.parametrize("slots", [1, 4, 16])
def test_beyond_the_grid_extension_certifies_the_extended_optimum_in_no_more_runs(slots):
    """On landscapes whose optimum lies beyond a listed bound (``random_landscape(.., "bound")``,
    and one below lr's lower end), the certificate is a brute-force local optimum of the extended
    grid, the same point a grid listing those values from the start certifies, in no more runs."""
    below = Landscape(centre={"lr": 2e-5, "wd": 0.8, "epochs": 16.0, "mix": 0.8})
    landscapes = [random_landscape(seed, "bound", AXES) for seed in range(24)] + [below]
    moved = 0
    for fn in landscapes:
        search, ran = certify(fn, EXTENDED, slots=slots)
        listed, ran_listed = certify(fn, LISTED_FROM_THE_START, slots=slots)
        certificate = search.decide().certificate
        assert certificate is not None and is_local_optimum(LISTED_FROM_THE_START, fn, certificate.point)
        assert certificate.point == listed.decide().certificate.point
        assert len(ran) <= len(ran_listed)
        assert len({json.dumps(p, sort_keys=True) for p in ran}) == len(ran)  # never a point twice
        moved += beyond_listed(certificate.point)
    assert moved >= len(landscapes) // 2  # most of these optima lie beyond the listed grid


def test_an_extension_value_runs_only_next_to_a_best_point_on_the_edge():
    """An optimum inside the listed grid: from an inside start no extension value runs at all
    (seeding does not extend); from a corner start, extension values run only as neighbours of
    the successive best points while they sat on the edge, and the certificate is the same."""
    plain_grid = Grid.from_mapping(AXES)
    search, ran = certify(bowl, EXTENDED, start=START)
    plain, ran_plain = certify(bowl, plain_grid, start=START)
    assert ran == ran_plain and search.decide().certificate == plain.decide().certificate and search.extensions == []
    corner = {"lr": 1e-2, "wd": 1.6, "epochs": 64, "mix": 0.9}
    search, ran = certify(bowl, EXTENDED, start=corner)
    plain, ran_plain = certify(bowl, plain_grid, start=corner)
    assert search.decide().certificate.point == plain.decide().certificate.point
    asked = {json.dumps(n.point, sort_keys=True) for centre in search.decide().path for n in EXTENDED.neighbours(centre)}
    beyond = [p for p in ran if beyond_listed(p)]
    assert beyond and all(json.dumps(p, sort_keys=True) in asked for p in beyond)
    assert len(ran) <= len(certify(bowl, LISTED_FROM_THE_START, start=corner)[1])


def test_values_that_run_out_leave_a_certificate_on_the_new_bound():
    fn = Landscape(centre={"lr": 3e-3, "wd": 0.8, "epochs": 1024.0, "mix": 0.8})
    search, _ = certify(fn, EXTENDED)
    certificate = search.decide().certificate
    assert certificate.point["epochs"] == 512
    [bound] = certificate.bounds_hit
    assert (bound.axis, bound.side, bound.value, bound.extended) == ("epochs", Side.UPPER, 512, True)
    basis = certificate.basis
    assert basis.support is Support.BOUND
    assert "epochs upper 512 (last extension value)" in basis.describe()
    assert [(e.axis, e.after, e.value) for e in search.extensions] == [("epochs", 64, 128), ("epochs", 128, 256),
                                                                       ("epochs", 256, 512)]
    assert all(e.centre is not None and e.centre["epochs"] == e.after for e in search.extensions)


def test_a_warm_start_across_g_starts_from_the_moved_bound():
    fn = Landscape(centre={"lr": 3e-3, "wd": 0.8, "epochs": 256.0, "mix": 0.8})
    small = CertifySearch("g4", EXTENDED, START)
    large = CertifySearch("g8", EXTENDED, None, waits_for="g4", fallback=START)
    drive([small, large], SimulatedEvaluator(fn, slots=4))
    assert small.decide().certificate.point["epochs"] == 256
    assert large.start["epochs"] == 256  # not snapped back to the listed 64
    assert large.decide().certificate.point["epochs"] == 256
    first = large.extensions[0]
    assert (first.axis, first.value, first.centre, first.runs) == ("epochs", 128, None, 0)  # reached by its start
    # a grid that does not list the moved value snaps the start onto its own values
    plain = CertifySearch("g8-plain", Grid.from_mapping(AXES), None, waits_for="g4", fallback=START)
    plain.resolve({"g4": small})
    assert plain.start["epochs"] == 64


# ------------------------------------------------------------------------------- sweep file

SWEEP = {
    "name": "t", "objective": "search.landscapes:bowl",
    "grid": {"lr": [0.001, 0.003, 0.01], "epochs": [4, 8, 16], "mix": [0.5, 0.75]},
    "start": {"lr": 0.003, "epochs": 8, "mix": 0.5},
    "certifications": [{"name": "a"}],
}


@pytest.mark.parametrize(("change", "message"), [
    ({"extend": {"epochs": {"above": [64, 32]}}}, r"extend\.epochs\.above: values must increase outward"),
    ({"extend": {"lr": {"below": [0.0001, 0.0003]}}}, r"extend\.lr\.below: values must decrease outward"),
    ({"extend": {"epochs": {"above": [8]}}}, r"extend\.epochs\.above: 8 is not above the grid's last value 16"),
    ({"extend": {"lr": {"below": [0.01]}}}, r"extend\.lr\.below: 0\.01 is not below the grid's first value 0\.001"),
    ({"extend": {"depth": {"above": [4]}}}, r"extend\.depth: unknown axis"),
    ({"extend": {"mix": {"above": [1.5]}}}, r"extend\.mix: 1\.5 is not a mixing fraction in \[0, 1\]$"),
    ({"extend": {"epochs": {"above": [32, 32.0000000001]}}}, r"extend\.epochs: 32 and 32\.0000000001 are the same"),
    ({"extend": {"epochs": {"after": [32]}}}, r"extend\.epochs\.after: unknown field"),
    ({"certifications": [{"name": "a", "grid": {"lr": [0.003]}, "start": {"lr": 0.003},
                          "extend": {"lr": {"above": [0.01]}}}]},
     r"certifications\[0\]\.extend\.lr: the axis has the single value"),
    ({"certifications": [{"name": "a", "extend": {"wd": {"above": [1.6]}}}]},
     r"certifications\[0\]\.extend\.wd: unknown axis"),
])
def test_refused_extensions_are_one_line_naming_the_field(tmp_path, change, message):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, **change}))
    with pytest.raises(UserError, match=message) as info:
        load_sweep(path)
    assert "\n" not in str(info.value)


def test_a_certification_replaces_the_sweeps_extension_and_one_that_fixes_the_axis_skips_it(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "extend": {"epochs": {"above": [32]}, "mix": {"above": [0.9]}},
                                    "certifications": [{"name": "a"}, {"name": "b", "extend": {}},
                                                       {"name": "c", "grid": {"lr": [0.003], "epochs": [4, 8]},
                                                        "start": {"lr": 0.003, "epochs": 8}}]}))
    sweep = load_sweep(path)
    grids = {c.name: sweep.grid_for(c) for c in sweep.certifications}
    assert grids["a"].as_mapping()["epochs"] == [4, 8, 16, 32] and grids["a"].listed_grid().size == 3 * 3 * 2
    assert grids["b"].as_mapping() == grids["b"].listed_grid().as_mapping()
    assert grids["c"].as_mapping() == {"lr": [0.003], "epochs": [4, 8, 32]}  # mix is not its axis


# ------------------------------------------------------------------- controller, ledger, status

EDGE = {"lr": [0.001, 0.003, 0.01], "wd": [0.4, 0.8, 1.6], "epochs": [2, 4, 8]}  # the bowl's epochs 16 is beyond


def test_the_controller_extends_records_and_resumes(make_sweep, workdir, capsys):
    path = make_sweep(grid=EDGE, start={"lr": 0.003, "wd": 0.8, "epochs": 4},
                      extend={"epochs": {"above": [16, 32]}, "wd": {"below": [0.2]}})
    assert main(["search", "certify", str(path), "--no-progress"]) == CertifyExit.CERTIFIED  # interior at 16
    out = capsys.readouterr().out
    assert "extended epochs above 8 to 16 after" in out and "interior on every searched axis" in out
    [summary] = summarize(load_sweep(path))
    assert summary.certificate.point == {"lr": 0.003, "wd": 0.8, "epochs": 16}
    assert [(e.axis, e.side, e.after, e.value) for e in summary.extensions] == [
        ("epochs", Side.UPPER, 8, 16), ("epochs", Side.UPPER, 16, 32)]
    assert summary.extensions[0].centre == {"lr": 0.003, "wd": 0.8, "epochs": 8}  # recorded at dispatch
    sweep = load_sweep(path)
    ledger = Ledger(sweep.ledger_url, sweep.name, create=False)
    assert [e["value"] for e in ledger.study_attrs("t/a")[STUDY_EXTENSIONS]] == [16, 32]
    assert ledger.study_attrs("t/a")["grid"]["epochs"] == [2, 4, 8]  # the grid as the user listed it
    ran = len(calls(workdir))
    assert main(["search", "certify", str(path), "--no-progress"]) == CertifyExit.CERTIFIED
    assert len(calls(workdir)) == ran  # resumed from the ledger: nothing runs again
    assert len(ledger.study_attrs("t/a")[STUDY_EXTENSIONS]) == 2  # and nothing is recorded twice
    capsys.readouterr()
    assert main(["search", "status", str(path), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["certifications"]
    assert [e["value"] for e in entry["extensions"]] == [16, 32]
    [epochs] = [a for a in entry["certificate"]["basis"]["axes"] if a["axis"] == "epochs"]
    assert epochs == {"axis": "epochs", "support": "interior", "bounds": [], "extended": [16, 32],
                      "on_extension": True}
    assert main(["search", "status", str(path)]) == 0
    assert "epochs above 8: 16, 32" in capsys.readouterr().out


def test_a_ledger_without_extension_records_still_reads(make_sweep, monkeypatch):
    """A ledger written before extensions were recorded (here: a controller that records none)
    reads; status derives the extensions from its trials."""
    monkeypatch.setattr(Ledger, "record_extension", lambda self, name, extension: None)
    path = make_sweep(grid=EDGE, start={"lr": 0.003, "wd": 0.8, "epochs": 8}, extend={"epochs": {"above": [16, 32]}})
    assert main(["search", "certify", str(path), "--no-progress"]) == CertifyExit.CERTIFIED
    [summary] = summarize(load_sweep(path))
    assert [e.value for e in summary.extensions] == [16, 32] and summary.certificate.point["epochs"] == 16


def test_a_legacy_categorical_study_takes_an_extension_value_without_its_param(tmp_path):
    from optuna.distributions import CategoricalDistribution

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "s")
    study = ledger.study_id("s/a", create=True, attrs={"grid": {"epochs": [4, 8]}})
    old = ledger.storage.create_new_trial(study)
    legacy = CategoricalDistribution([4, 8])
    ledger.storage.set_trial_param(old, "epochs", legacy.to_internal_repr(8), legacy)  # as an older version did
    trial = ledger.new_run("s/a", params=RunParams(point={"epochs": 16}), run_id="r", run_dir="d",
                           grid={"epochs": [4, 8, 16]})
    assert ledger.storage.get_trial(trial).params == {}  # the point is in its attributes, not a param
    trial = ledger.new_run("s/a", params=RunParams(point={"epochs": 4}), run_id="q", run_dir="e",
                           grid={"epochs": [4, 8, 16]})
    assert ledger.storage.get_trial(trial).distributions["epochs"] == legacy


def test_plan_counts_the_extension_values_in_the_worst_case(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "start": {"lr": 0.003, "epochs": 16, "mix": 0.5},
                                    "extend": {"epochs": {"above": [32, 64]}, "lr": {"below": [0.0003]}}}))
    sweep = load_sweep(path)
    [cert] = sweep.certifications
    counts = run_counts(sweep, cert, simulations=4)
    assert counts["worst"] == 4 * 5 * 2  # lr 4 values x epochs 5 x mix 2
    assert counts["best"] == 1 + 5  # lr 2, mix 1 and epochs 2: a start on its edge also runs the next value
    assert counts["best"] <= counts["expected"] <= counts["worst"]



def test_baselines_run_the_grid_as_listed(make_sweep, workdir):
    path = make_sweep(grid=EDGE, start={"lr": 0.003, "wd": 0.8, "epochs": 4}, extend={"epochs": {"above": [16]}})
    assert main(["search", "certify", str(path), "--no-progress", "--strategy", "grid"]) == 0
    assert len(calls(workdir)) == 27 and all(call["epochs"] <= 8 for call in calls(workdir))
    [summary] = summarize(load_sweep(path), "grid")
    assert summary.certificate.point["epochs"] == 8 and summary.support is Support.BOUND  # the listed edge
