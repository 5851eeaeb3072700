"""`megadocs train`: template, overrides, one-line errors, ensemble dispatch, a full run."""

from __future__ import annotations

import json

import pytest
import yaml

from megadocs.cli import main
from train.config import RunConfig


def test_template_prints_a_config_that_validates(capsys):
    assert main(["train", "--template"]) == 0
    text = capsys.readouterr().out
    RunConfig.model_validate(yaml.safe_load(text))


def test_invalid_config_is_one_error_line_naming_the_field(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("data: {store: s, mixing_fraction: 0.5}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"error: {path}: data: ") and "data.synthetic is null" in err


def test_missing_store_names_the_field(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(f"data: {{store: {tmp_path / 'nowhere'}}}\n")
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: data.store: {tmp_path / 'nowhere'}: token store not found")
    assert not (tmp_path / "run").exists()  # nothing written for a config that cannot run


def test_ensemble_word_dispatches_to_the_ensemble_parser(capsys):
    pytest.importorskip("train.ensemble")
    with pytest.raises(SystemExit) as info:
        main(["train", "ensemble", "--help"])
    assert info.value.code == 0
    assert "--members" in capsys.readouterr().out


@pytest.mark.usefixtures("one_thread")
def test_train_with_overrides_and_default_out(small_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"store": str(small_store), "real_epochs": 1, "context": 64},
        "optim": {"batch_size": 64, "micro_batch_size": 32},
        "eval": {"val_windows": 64},
        "device": "cpu",
    }))
    # options after the config path and before it are both understood
    assert main(["train", "--set", "optim.lr=0.002", str(config), "--set", "seed=5"]) == 0
    runs = list((tmp_path / "runs" / "train").iterdir())
    assert len(runs) == 1
    saved = RunConfig.model_validate(yaml.safe_load((runs[0] / "config.yaml").read_text()))
    assert saved.optim.lr == 0.002 and saved.seed == 5
    assert runs[0].name == saved.identity()
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert "completed" in capsys.readouterr().out


def test_ensemble_with_a_missing_member_names_members(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["train", "ensemble", "--members", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --members: {missing}: not a model directory") and "--context" not in err
