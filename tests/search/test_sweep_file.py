"""Sweep files: the issue's example loads; each kind of mistake is one clear line (exit 2)."""

from __future__ import annotations

import pytest
import yaml

from megadocs.cli import main
from megadocs.errors import UserError
from search.sweep import Sweep, load_sweep

from .conftest import REPO


def test_the_issue_example_is_accepted_verbatim():
    sweep = load_sweep(REPO / "search/examples/issue-example.yaml")
    assert [c.name for c in sweep.certifications] == ["simple-g4", "stitched-g4"]
    assert sweep.executor.kind == "local" and sweep.executor.max_parallel == 2
    assert sweep.ledger_url.startswith("sqlite:///") and sweep.ledger_url.endswith("runs/example/ledger.db")
    assert sweep.start_for(sweep.certifications[0]) == {"lr": 0.003, "wd": 0.8, "epochs": 8, "mix": 0.75}


@pytest.mark.parametrize("example", ["analytic.yaml", "paper-300m.yaml", "extend.yaml"])
def test_shipped_examples_load(example):
    assert load_sweep(REPO / "search/examples" / example).certifications


def test_storage_urls(make_sweep, workdir):
    assert load_sweep(make_sweep()).ledger_url == f"sqlite:///{workdir}/runs/t/ledger.db"
    assert load_sweep(make_sweep(ledger="ledger.journal")).ledger_url == str(workdir / "ledger.journal")
    url = "postgresql://me@127.0.0.1:5432/db"
    assert load_sweep(make_sweep(ledger=url)).ledger_url == url


BAD = [
    ({"start": {"lr": 0.003, "wd": 0.8, "epochs": 8, "momentum": 0.9}}, "start.momentum: unknown axis"),
    ({"start": {"lr": 0.005, "wd": 0.8, "epochs": 8}}, "start.lr: 0.005 is not on the grid"),
    ({"grid": {}}, "grid: empty grid"),
    ({"grid": {"lr": [], "wd": [0.1], "epochs": [8]}}, "grid.lr: empty list"),
    ({"grid": {"lr": [0.003], "wd": [0.8], "epochs": [8], "mix": [0.5, 1.5]},
      "start": {"lr": 0.003, "wd": 0.8, "epochs": 8, "mix": 0.5}}, "grid.mix: [0.5, 1.5] has values outside [0, 1]"),
    ({"certifications": [{"name": "a"}, {"name": "a"}]}, "certifications[1].name: duplicate certification name 'a'"),
    ({"grid": {"lr": [0.01, 0.003], "wd": [0.8], "epochs": [8]}}, "grid.lr: values must be strictly increasing"),
    ({"certifications": [{"name": "a", "warm_start": "zzz"}]}, "certifications[0].warm_start: 'zzz' is not an earlier"),
    ({"executor": {"kind": "cloud"}}, "executor.kind: Input should be 'local', 'debug' or 'slurm'"),
    ({"ensembles": [{"name": "e", "from": "nope", "members": 2}]}, "ensembles[0].from: 'nope' is not a certification"),
    ({"objective": None, "train": {"data": {"store": "x"}}, "certifications": [{"name": "a", "fixed": {"method": "real"}}],
      "grid": {"lr": [0.003], "momentum": [0.9]}, "start": {"lr": 0.003, "momentum": 0.9}},
     "unknown axis 'momentum' for the default objective"),
    ({"objective": None, "train": {"data": {"store": "x"}}, "grid": {**{"lr": [0.003], "mix": [0.5]}},
      "start": {"lr": 0.003, "mix": 0.5}, "certifications": [{"name": "s", "fixed": {"method": "simple", "g": 4}}]},
     "pools.simple: no synthetic pool"),
    ({"objective": None, "train": {"data": {"store": "x"}}, "pools": {"simple": "p"}, "grid": {"lr": [0.003], "mix": [0.5, 0.75]},
      "start": {"lr": 0.003, "mix": 0.5}, "extend": {"mix": {"above": [1.0]}},
      "certifications": [{"name": "s", "fixed": {"method": "simple", "g": 4}}]},
     "extend.mix: 1.0 is not a mixing fraction in [0, 1) (mix 1.0 trains on synthetic data only"),
    *[({"objective": None, "train": {"data": {"store": "x"}}, "pools": {"stitched": "p{g}"}, "grid": grid,
        "start": {axis: values[0] for axis, values in grid.items()},
        "certifications": [{"name": "so", "fixed": {"method": "stitched", "g": 32}}]}, expected)
      for grid, expected in [
          ({"lr": [0.003], "mix": [1.0]}, "certifications[0].grid.synthetic_epochs: required with mix 1.0"),
          ({"lr": [0.003], "mix": [0.75], "synthetic_epochs": [1, 2]},
           "certifications[0].grid.synthetic_epochs: only with mix 1.0"),
          ({"lr": [0.003], "mix": [0.75, 1.0], "synthetic_epochs": [1, 2]},
           "certifications[0].grid.mix: [0.75, 1.0] mixes 1.0 (synthetic only"),
          ({"lr": [0.003], "epochs": [4, 8], "mix": [1.0], "synthetic_epochs": [1, 2]},
           "certifications[0].grid.epochs: real epochs are ignored at mix 1.0"),
      ]],
    ({"grid": {"lr": [0.001, True], "wd": [0.8], "epochs": [8]}}, "grid.lr.1: expected a number, got true"),
    *[({"grid": {"lr": [0.001, value], "wd": [0.8], "epochs": [8]}}, f"grid.lr.1: expected a number{detail}, got {value!r}")
      for value, detail in (("abc", ""), ([0.003], ", not a list"), ({"a": 1}, ", not a dict"))],
    ({"start": {"lr": "x", "wd": 0.8, "epochs": 8}}, "start.lr: expected a number, got 'x'"),
    ({"grid": {"lr": [0.001, float("inf")], "wd": [0.8], "epochs": [8]}, "start": {"lr": 0.001, "wd": 0.8, "epochs": 8}},
     "grid.lr: inf is not a finite number"),
    ({"grid": {"lr": [0.001, 0.0010000000001], "wd": [0.8], "epochs": [8]},
      "start": {"lr": 0.001, "wd": 0.8, "epochs": 8}}, "grid.lr: 0.001 and 0.0010000000001 are the same grid value"),
    *[({"objective": None, "train": {"data": {"store": "x"}}, "pools": {"simple": "p"}, "grid": {"lr": [0.003]},
        "start": {"lr": 0.003}, "certifications": [{"name": "s", "fixed": {"method": "simple", "g": g}}]},
       f"certifications[0].fixed.g: expected a whole number of generations per document (1, 2, 4, ...), got {g!r}")
      for g in ("one", 0, 2.5, True)],
    *[({"objective": None, "train": {"data": {"store": "x", field: value}}, "pools": {"simple": "p"},
        "grid": {"lr": [0.003]}, "start": {"lr": 0.003}, "certifications": [{"name": "s", "fixed": {"method": "simple",
                                                                                                    "g": 1}}]},
       f"train.data.{field}: Input should be a valid {kind}")
      for field, value, kind in (("mixing_fraction", "lots", "number"), ("synthetic_epochs", "two", "integer"))],
    ({"objective": None, "train": {"data": {"store": ["x"]}}, "certifications": [{"name": "a", "fixed": {"method": "real"}}]},
     "train.data.store: Input should be a valid string"),
    ({"noise": {"repeats": 0}}, "noise.repeats: Input should be greater than or equal to 1"),
    # an infinite threshold made every neighbour a tie after every repeat (old code: accepted)
    ({"noise": {"repeats": 2, "sds": float("inf")}}, "noise.sds: Input should be a finite number"),
    ({"noise": {"repeats": 3}, "certifications": [{"name": "a", "fixed": {"seed": 1}}]},
     "certifications[0]: noise repeats set the 'seed' param"),
    ({"certifications": [{"name": "a", "fixed": {"seed": 1}}], "ensembles": [{"name": "e", "from": "a", "members": 3}]},
     "ensembles[0].from: 'a' fixes 'seed', which each member sets"),
    # a member's epochs would be infinite (old code: OverflowError at dispatch and in `search plan`)
    ({"ensembles": [{"name": "e", "from": "a", "members": 2, "epochs_multiplier": float("inf")}]},
     "ensembles.0.epochs_multiplier: Input should be a finite number"),
    # an epochs value train cannot run as written (old code: 1.5 ran as 2, a member's 0.4 epochs as 1)
    *[({"objective": None, "train": {"data": {"store": "x"}}, "grid": {"lr": [0.003], "epochs": epochs},
        "start": {"lr": 0.003, "epochs": 2}, "certifications": [{"name": "r", "fixed": {"method": "real"}}], **more},
       expected) for epochs, more, expected in [
          ([1.5, 2], {}, "grid.epochs: 1.5 is not a whole number of passes >= 1"),
          ([1, 2], {"extend": {"epochs": {"above": [4, 6.5]}}}, "extend.epochs.above: 6.5 is not a whole number"),
          ([0, 2], {}, "grid.epochs: 0 is not a whole number of passes >= 1")]],
    ({"grid": {"lr": [0.003], "epochs": [1, 2]}, "start": {"lr": 0.003, "epochs": 2},
      "ensembles": [{"name": "e", "from": "a", "members": 2, "epochs_multiplier": 0.4}]},
     "ensembles[0].epochs_multiplier: 0.4 times epochs 1 (on 'a''s grid) rounds to 0 epochs; expected a multiplier "
     "that leaves every member at least 1 epoch (e.g. 1 or more)"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD, ids=[e for _, e in BAD])
def test_invalid_sweep_files_fail_with_one_clear_line(make_sweep, capsys, overrides, expected):
    path = make_sweep(**overrides)
    with pytest.raises(UserError) as error:
        load_sweep(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and expected in message, message
    assert main(["search", "certify", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and expected in err


def test_missing_file_and_bad_yaml(workdir, capsys):
    assert main(["search", "status", "nope.yaml"]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err
    (workdir / "bad.yaml").write_text("name: [unclosed\n")
    assert main(["search", "status", "bad.yaml"]) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_objective_that_cannot_be_imported(make_sweep, capsys):
    path = make_sweep(objective="mypackage.landscapes:bowl")
    assert main(["search", "certify", str(path), "--no-progress"]) == 2
    assert "objective: cannot import 'mypackage.landscapes:bowl'" in capsys.readouterr().err


def test_a_misspelt_field_is_named_before_the_field_it_leaves_missing(make_sweep):
    """``strat:`` for ``start:`` is two errors; the line names the misspelling (it named only the
    missing ``start``)."""
    path = make_sweep()
    data = yaml.safe_load(path.read_text())
    data["strat"] = data.pop("start")
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=r": strat: unknown field, got .* \(and 1 more error\)$"):
        load_sweep(path)


def test_a_numeric_string_is_a_grid_number():
    """YAML reads ``1e-3`` (no dot) as a string; the grid takes it as the number it spells."""
    sweep = Sweep.model_validate({"name": "s", "objective": "m:f", "grid": {"lr": ["1e-3", 0.01]},
                                  "start": {"lr": "1e-3"}, "certifications": [{"name": "a"}]})
    assert sweep.grid["lr"] == [0.001, 0.01] and sweep.start_for(sweep.certifications[0]) == {"lr": 0.001}


def test_unknown_field_is_refused(make_sweep):
    path = make_sweep()
    data = yaml.safe_load(path.read_text())
    data["certifications"][0]["fixd"] = {}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=r"certifications.0.fixd: unknown field"):
        load_sweep(path)


def test_cross_field_checks_hold_for_a_sweep_built_in_code():
    from pydantic import ValidationError

    from search.sweep import Sweep

    good = {"name": "t", "objective": "m:f", "grid": {"lr": [0.001, 0.003]}, "start": {"lr": 0.003},
            "certifications": [{"name": "a", "noise": {"repeats": 4}}], "noise": {"repeats": 2}}
    sweep = Sweep.model_validate(good)
    assert sweep.noise_for(sweep.certifications[0]).repeats == 4
    with pytest.raises(ValidationError, match="start.lr: 0.005 is not on the grid"):
        Sweep.model_validate({**good, "start": {"lr": 0.005}})


def test_the_default_objective_passes_epochs_to_train_unrounded(make_sweep):
    """A whole float (YAML ``8.0``) is the run it always was; a fractional one reaching the objective
    by another way than a sweep file (a point built in code) is refused by train, naming the field
    (old code: rounded, 1.5 ran as 2)."""
    from search.objective import TrainObjective

    sweep = load_sweep(make_sweep(objective=None, train={"data": {"store": "x"}}, grid={"lr": [0.003], "epochs": [2]},
                                  start={"lr": 0.003, "epochs": 2}, certifications=[{"name": "r", "fixed": {"method": "real"}}]))
    objective = TrainObjective(sweep)
    assert objective.config({"lr": 0.003, "epochs": 2.0}).data.real_epochs == 2
    with pytest.raises(UserError, match=r"data\.real_epochs.*fractional part"):
        objective.config({"lr": 0.003, "epochs": 1.5})
