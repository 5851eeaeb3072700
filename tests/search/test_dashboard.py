"""The ledger as Optuna's own tools see it: numeric params (lr/wd on a log scale), method and G as
params, provenance per run, and the real optuna-dashboard serving it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from megadocs.cli import main
from search.ledger import Ledger, axis_distribution, read_runs
from search.params import RunParams
from search.sweep import load_sweep


def certify(path) -> int:
    return main(["search", "certify", str(path), "--no-progress"])


def test_axis_distributions_are_numeric_with_log_scale_for_lr_and_wd():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    assert axis_distribution("lr", [1e-3, 3e-3, 1e-2]) == FloatDistribution(1e-3, 1e-2, log=True)
    assert axis_distribution("wd", [0.1, 0.8, 1.6]) == FloatDistribution(0.1, 1.6, log=True)
    assert axis_distribution("wd", [0.0, 0.1, 0.8]) == FloatDistribution(0.0, 0.8, log=False)  # 0 has no log
    assert axis_distribution("epochs", [1, 2, 4]) == IntDistribution(1, 4)
    assert axis_distribution("mix", [0.5, 0.75]) == FloatDistribution(0.5, 0.75)
    assert axis_distribution("lr", [1, 3]) == IntDistribution(1, 3, log=True)
    assert isinstance(axis_distribution("optimizer", ["adam", "sgd"]), CategoricalDistribution)


def test_a_ledger_begun_with_categorical_params_keeps_them(tmp_path):
    from optuna.distributions import CategoricalDistribution

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "s")
    study = ledger.study_id("s/a", create=True)
    old = ledger.storage.create_new_trial(study)
    legacy = CategoricalDistribution([0.001, 0.003])
    ledger.storage.set_trial_param(old, "lr", legacy.to_internal_repr(0.003), legacy)  # as before this change
    params = RunParams(point={"lr": 0.001}, fixed={"method": "simple", "g": 2})
    trial = ledger.new_run("s/a", params=params, run_id="r", run_dir="d",
                           grid={"lr": [0.001, 0.003]})  # fmt: skip
    frozen = ledger.storage.get_trial(trial)
    assert frozen.distributions["lr"] == legacy and frozen.params == {"lr": 0.001, "method": "simple", "g": 2}


def test_trials_expose_method_g_and_provenance(make_sweep):
    path = make_sweep()
    assert certify(path) == 0
    runs = read_runs(load_sweep(path))
    assert runs and all(r.provenance["git_commit"] is not None or r.provenance["git_dirty"] is None
                        for r in runs)  # fmt: skip
    record = runs[0].provenance
    assert {"megadocs_version", "torch_version", "host", "command", "slurm_job_id"} <= set(record)
    assert json.loads((Path(runs[0].run_dir) / "provenance.json").read_text()) == record


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - a local test server
        return json.loads(response.read())


def _serve(path, tries: int = 5) -> tuple[subprocess.Popen, int, list]:
    """`search dashboard` on a free port, once it answers: (server, port, its study summaries). A
    port taken between the probe and the server's bind (any outgoing connection may get it) is
    one the server cannot listen on: it exits saying so, and another port is tried."""
    for _ in range(tries):
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "megadocs.cli", "search", "dashboard", str(path), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        )
        deadline = time.monotonic() + 180
        while server.poll() is None:
            try:
                return server, port, _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                if time.monotonic() > deadline:
                    server.kill()
                    pytest.fail("optuna-dashboard did not answer in 180 s")
                time.sleep(0.5)
        err = server.stderr.read()
        assert f"cannot listen on 127.0.0.1:{port}" in err, err
    pytest.fail(f"no free port in {tries} tries")


def test_optuna_dashboard_api_shows_lr_on_a_log_scale_and_method_and_g(make_sweep, workdir):
    pytest.importorskip("optuna_dashboard")
    path = make_sweep()
    assert certify(path) == 0
    server, port, studies = _serve(path)
    base = f"http://127.0.0.1:{port}/api"
    try:
        [study] = [s for s in studies if s["study_name"] == "t/a"]
        detail = _get(f"{base}/studies/{study['study_id']}?after=0")
        space = {p["name"]: p["distribution"] for p in detail["union_search_space"]}
        assert space["lr"]["type"] == "FloatDistribution" and space["lr"]["log"] is True
        assert space["wd"]["type"] == "FloatDistribution" and space["wd"]["log"] is True
        assert space["epochs"]["type"] == "IntDistribution" and space["epochs"]["log"] is False
        assert space["method"]["type"] == "CategoricalDistribution"
        assert space["g"]["type"] == "IntDistribution"
        trial = detail["trials"][0]
        params = {p["name"]: p["param_external_value"] for p in trial["params"]}
        assert params["method"] == "simple" and params["g"] == "4"
        assert float(params["lr"]) in (0.001, 0.003, 0.01)
    finally:
        os.kill(server.pid, signal.SIGTERM)  # stopped by its pid
        server.wait(timeout=30)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_dashboard_of_a_sweep_never_run_creates_no_ledger(make_sweep, workdir, monkeypatch, capsys):
    """It created an empty ledger and served it (a read-only view of a typo'd sweep).
    mock: the server is a stand-in that fails the test instead of blocking it."""
    optuna_dashboard = pytest.importorskip("optuna_dashboard")

    def fake_run_server(*args, **kwargs):
        raise AssertionError("served a ledger that does not exist")

    monkeypatch.setattr(optuna_dashboard, "run_server", fake_run_server)
    assert main(["search", "dashboard", str(make_sweep(name="never-run")), "--port", str(_free_port())]) == 2
    assert "nothing was created" in capsys.readouterr().err and not (workdir / "runs").exists()


def test_dashboard_bad_port_and_port_in_use_are_one_line(make_sweep, workdir, capsys):
    """Each was a traceback (OverflowError, OSError); then 'search dashboard: cannot listen on ...', naming
    neither --host nor --port: now the one refused (a port in use; a host no address of this machine)."""
    pytest.importorskip("optuna_dashboard")
    path = make_sweep()
    assert certify(path) == 0
    capsys.readouterr()
    assert main(["search", "dashboard", str(path), "--port", "99999"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port: 99999 is not a TCP port (expected 0-65535)"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["search", "dashboard", str(path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"error: --port: cannot listen on 127.0.0.1:{port}: "), err
    assert "Traceback" not in err
    assert main(["search", "dashboard", str(path), "--host", "192.0.2.1", "--port", str(port)]) == 2  # TEST-NET-1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"error: --host: cannot listen on 192.0.2.1:{port}: "), err
