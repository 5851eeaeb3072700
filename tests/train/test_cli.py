"""`megadocs train`: template, overrides, one-line errors, ensemble dispatch, a full run."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from megadocs.cli import main
from megadocs.exits import Exit
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
    assert err.startswith(f"error: {path}: data.mixing_fraction: ") and "data.synthetic is null" in err


def test_missing_store_names_the_field(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(f"data: {{store: {tmp_path / 'nowhere'}}}\n")
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: data.store: {tmp_path / 'nowhere'}: token store not found")
    assert not (tmp_path / "run").exists()  # nothing written for a config that cannot run


def test_a_store_without_its_tokenizer_is_refused_by_the_dry_run_as_by_the_run(tiny_store, tmp_path, capsys):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    shutil.rmtree(store / "tokenizer")
    path = tmp_path / "run.yaml"
    path.write_text(f"data: {{store: {store}, context: 32}}\n")
    expected = f"error: {store / 'tokenizer'}: not in the token store opened at {store} "
    assert main(["train", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().startswith(expected)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2  # at its start, not after training
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("world_size", ["four", "0", ""])
def test_a_dry_run_under_a_world_size_that_is_no_count_names_world_size(world_size, tiny_store, tmp_path, monkeypatch,
                                                                      capsys):  # fmt: skip
    """WORLD_SIZE (the default of --processes) that is not an integer was a traceback, and 0 was
    refused as '--processes: ...', a flag nobody typed."""
    path = tmp_path / "run.yaml"
    path.write_text(f"data: {{store: {tiny_store}, context: 32}}\n")
    monkeypatch.setenv("WORLD_SIZE", world_size)
    assert main(["train", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err == (f"error: WORLD_SIZE is {world_size!r}: expected an integer >= 1, the number of "
                                       "processes the launcher started (torchrun and srun set it)\n")
    assert main(["train", str(path), "--dry-run", "--processes", "2"]) == 0  # --processes is WORLD_SIZE's stand-in


def test_ensemble_word_dispatches_to_the_ensemble_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "ensemble", "--help"])
    assert info.value.code == 0
    assert "--members" in capsys.readouterr().out


def test_train_help_lists_the_ensemble_and_benchmarks_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "CONFIG.yaml" in out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()}
    assert {"ensemble", "benchmarks"} <= listed and "run" not in listed
    with pytest.raises(SystemExit):
        main(["train", "benchmarks", "--help"])
    assert "--models" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["CONFIG", "--out", "OUT", "--set", "seed=3"],
    ["--out", "OUT", "--set", "seed=3", "CONFIG"],
    ["--set", "seed=3", "CONFIG", "--out", "OUT"],
])  # fmt: skip
def test_options_before_or_after_the_config_reach_the_run(argv, tiny_store, tmp_path, monkeypatch):
    import train.loop
    from megadocs.formats import RunMetrics

    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{store: {tiny_store}}}\n")
    seen = {}

    def fake_run(run_config, out, stores=None):  # the loop itself is tested elsewhere: record what it gets
        seen.update(seed=run_config.seed, out=out)
        return RunMetrics(status="completed", val_loss=1.0, val_losses={"iid": 1.0}, steps=0)

    monkeypatch.setattr(train.loop, "run", fake_run)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored after the test
    words = [{"CONFIG": str(config), "OUT": str(tmp_path / "out")}.get(word, word) for word in argv]
    assert main(["train", *words]) == 0
    assert seen == {"seed": 3, "out": tmp_path / "out"}
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # the entry point's, not the loop's


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


def test_a_full_disk_during_training_is_one_line_and_keeps_the_run(small_store, small_filesystem, tmp_path, capsys,
                                                                    one_thread):
    """A checkpoint that does not fit (a tiny-1m state is ~11 MB, the file system 4 MiB): one line
    naming the file, exit 4 (work failed: re-run resumes), and the run directory stays for the resume
    once there is room."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"store": str(small_store), "context": 64, "real_epochs": 1},
                                      "optim": {"batch_size": 8, "micro_batch_size": 8}, "checkpoint_every": 2,
                                      "eval": {"val_windows": 4}, "device": "cpu", "tracking": {"tensorboard": False}}))
    out = small_filesystem / "run"
    assert main(["train", str(config), "--out", str(out)]) == Exit.WORK_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: no space left on device writing ") and "state.pt" in line, err[-2000:]
    assert (out / "config.yaml").is_file()


@pytest.mark.parametrize("world", [1, 2])
def test_a_file_system_fault_opening_the_stores_is_one_line_to_retry_or_left_to_the_ranks_agreement(
        world, tiny_store, tmp_path, monkeypatch, capsys):  # fmt: skip
    """`megadocs train` opens the stores to name RUN. An OSError there (an NFS server's EIO) is no
    bad input and no bug: one process says so in one line and exits 4 (re-run the same command),
    with nothing written; one of several goes on to `run`, which stops every rank with the same
    line once they have joined (a rank that exited here would leave the others in the rendezvous)."""
    import errno

    import train.data
    import train.loop
    from megadocs.formats import RunMetrics

    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{store: {tiny_store}}}\n")

    def failing_open(cls, run_config):  # MOCK: a file system that fails the open (no NFS server here)
        raise OSError(errno.EIO, "Input/output error", f"{tiny_store}/manifest.json")

    seen = []

    def fake_run(run_config, out, stores=None):  # the ranks' agreement is tested in test_distributed.py
        seen.append((out, stores))
        return RunMetrics(status="completed", val_loss=1.0, val_losses={"iid": 1.0}, steps=0)

    monkeypatch.setattr(train.data.RunStores, "open", classmethod(failing_open))
    monkeypatch.setattr(train.loop, "run", fake_run)
    if world > 1:
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", str(world))
    status = main(["train", str(config), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    if world > 1:
        assert status == 0 and seen == [(tmp_path / "run", None)], err
        return
    assert status == Exit.WORK_FAILED and not seen and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Input/output error" in line and f"{tiny_store}/manifest.json" in line
    assert "re-run the same command" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("caller", ["megadocs train", "sweep job"])
def test_a_file_system_fault_reading_the_checkpoint_is_work_to_retry_not_a_user_error(
        caller, small_store, tmp_path, monkeypatch, capsys, one_thread):  # fmt: skip
    """ESTALE reading RUN's checkpoint: `megadocs train` says so in one line and exits 4 (re-run
    resumes); a sweep's job raises it (the controller retries the run) rather than reporting a user
    error, which would mark the point invalid and stop the sweep. The run directory is kept."""
    import errno

    from megadocs.errors import WorkFailed
    from search.objective import RunTask
    from tests.train.test_checkpoint import faulty_path
    from train import checkpoint

    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "checkpoint_path",
                        lambda run_dir: faulty_path(out / "checkpoint" / checkpoint.STATE_FILE, errno.ESTALE))
    settings = {"data": {"store": str(small_store), "context": 64, "real_epochs": 1},
                "optim": {"batch_size": 8, "micro_batch_size": 8}, "eval": {"val_windows": 4}, "device": "cpu",
                "tracking": {"tensorboard": False}}
    if caller == "sweep job":
        with pytest.raises(WorkFailed, match=r"could not read the checkpoint \(.*Stale file handle"):
            RunTask(str(out), {}, train_config=settings)()
    else:
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump(settings))
        assert main(["train", str(config), "--out", str(out)]) == Exit.WORK_FAILED
        err = capsys.readouterr().err
        line = err.strip().splitlines()[-1]
        assert "Traceback" not in err and line.startswith(f"error: {out / 'checkpoint' / 'state.pt'}: could not read"), err
        assert "delete" not in line
    assert (out / "config.yaml").is_file()
