"""A certification against a real PostgreSQL server (a throwaway one started in a temp dir)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import time

import pytest

from megadocs.cli import main
from megadocs.exits import Exit
from search import storage
from search.ledger import read_runs, read_snapshot
from search.params import RunParams
from search.status import summarize
from search.strategies import Stop, StopReason
from search.sweep import load_sweep
from tests.postgres import REQUIRE_ENV, PostgresUnavailable, ThrowawayPostgres, free_port

from .conftest import READ_ONLY_COMMANDS

pytestmark = pytest.mark.postgres


@contextlib.contextmanager
def _server(password: str | None = None):
    """A throwaway server (tests/postgres.py). Skips where PostgreSQL is not installed, except in
    CI (MEGADOCS_REQUIRE_POSTGRES), where that is a failure."""
    try:
        server = ThrowawayPostgres(password)
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_ENV} is set but {exc}")
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture(params=storage.POSTGRES_DRIVERS)
def driver(request, monkeypatch) -> str:
    """Each PostgreSQL driver a ledger works with, alone (where several are installed the first
    is chosen). Skips one not installed, except in CI (MEGADOCS_REQUIRE_POSTGRES): a failure."""
    if importlib.util.find_spec(request.param) is None:
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_ENV} is set but the PostgreSQL driver {request.param} is not installed")
        pytest.skip(f"PostgreSQL driver {request.param} not installed")
    monkeypatch.setattr(storage, "POSTGRES_DRIVERS", (request.param,))
    return request.param


@pytest.fixture
def postgres_server():
    with _server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server):
    return postgres_server.url


SECRET = "S3cr3t-pw-7f1c"


@pytest.fixture
def password_server(monkeypatch, tmp_path):
    """A server that wants SECRET; no password reaches libpq from the environment by accident."""
    for name in ("PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.pgpass of the machine's user
    with _server(SECRET) as server:
        yield server.port


def test_certification_on_postgresql(make_sweep, postgres_url, driver):
    path = make_sweep(ledger=postgres_url, certifications=[
        {"name": "a", "fixed": {"method": "simple", "g": 4}},
        {"name": "b", "fixed": {"method": "stitched", "g": 4}, "warm_start": "a"},
    ])
    assert main(["search", "certify", str(path), "--no-progress"]) == 0
    summaries = {s.name: s for s in summarize(load_sweep(path))}
    assert summaries["a"].state.value == summaries["b"].state.value == "certified"
    assert summaries["b"].start == summaries["a"].certificate.point
    runs = read_runs(load_sweep(path))
    assert runs and all(r.status == "completed" for r in runs)
    # the controller lock lives in the same server
    from search.ledger import ControllerBusy, Ledger

    # a baseline's stop (search.strategies.Stop) round-trips through the server's study attributes
    stop = Stop(StopReason.CONVERGED, 23, None, 72, "its last 200 proposals were points already run")
    Ledger(postgres_url, "t").record_stop("t/a", stop)  # the study is what counts here
    assert read_snapshot(load_sweep(path)).stop("t/a") == stop
    Ledger(postgres_url, "t").clear_stop("t/a")  # a search that goes on: null, read as none
    assert read_snapshot(load_sweep(path)).stop("t/a") is None

    with Ledger(postgres_url, "t").controller_lock():
        assert main(["search", "certify", str(path), "--no-progress"]) == 2
        with pytest.raises(ControllerBusy, match="held by another controller"):
            Ledger(postgres_url, "t")._acquire()


def _outputs(capfd, argv) -> tuple[int, str, str]:
    """Exit status, stdout and stderr (file-descriptor level: also logging and warnings)."""
    status = main(argv)
    captured = capfd.readouterr()
    return status, captured.out, captured.err


def test_password_never_appears_in_any_output(make_sweep, workdir, password_server, capfd):
    url = f"postgresql://megadocs:{SECRET}@127.0.0.1:{password_server}/postgres"
    path = make_sweep(ledger=url)
    seen = []

    def run(command):
        argv = [word.format(sweep=path, tmp=workdir) for word in command]
        status, out, err = _outputs(capfd, argv)
        seen.append((argv, out + err))
        return status, err

    # working commands
    assert run(["search", "certify", "{sweep}", "--no-progress"])[0] == 0
    for command in READ_ONLY_COMMANDS:
        assert run(command)[0] in (0, 1), seen[-1]  # fit may find too few points: exit 1, still no secret
    # the "held by another controller" refusal names the ledger
    from search.ledger import Ledger

    ledger = Ledger(url, "t")
    assert SECRET not in ledger.url and "***" in ledger.url  # the ledger's own attribute
    with ledger.controller_lock():
        status, err = run(["search", "certify", "{sweep}", "--no-progress"])
        assert status == 2 and "held by another controller" in err and "megadocs:***@127.0.0.1" in err, err

    # failing commands: a wrong password, and a server that is not there (the secret stays in the URL)
    for bad in (f"postgresql://megadocs:{SECRET}x@127.0.0.1:{password_server}/postgres",
                f"postgresql://megadocs:{SECRET}@127.0.0.1:{free_port()}/postgres"):
        path = make_sweep(name="t", ledger=bad)
        for command in [["search", "certify", "{sweep}", "--no-progress"], *READ_ONLY_COMMANDS]:
            status, err = run(command)
            assert status == 2, seen[-1]
            assert err.count("\n") == 1 and "cannot open postgresql://megadocs:***@127.0.0.1" in err, err
    leaks = [argv for argv, text in seen if SECRET in text]
    assert not leaks, leaks
    written = [workdir / "table.csv", *(workdir / "report").rglob("*.md")]  # what export and report wrote
    assert written[1:] and all(SECRET not in path.read_text() for path in written)
    assert len(seen) == 1 + len(READ_ONLY_COMMANDS) + 1 + 2 * (1 + len(READ_ONLY_COMMANDS))


def test_the_dashboard_does_not_print_the_ledger_password(make_sweep, workdir, password_server, capfd, monkeypatch):
    """The startup line names the ledger with its password masked, on a real server and ledger.
    mock: the dashboard's server is a stand-in (it blocks until Ctrl-C); tests/search/test_dashboard.py
    runs the real one."""
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    url = f"postgresql://megadocs:{SECRET}@127.0.0.1:{password_server}/postgres"
    path = make_sweep(ledger=url)
    assert main(["search", "certify", str(path), "--no-progress"]) == 0
    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, host, port: served.append(storage))
    capfd.readouterr()
    assert main(["search", "dashboard", str(path), "--port", str(free_port())]) == 0
    out, err = capfd.readouterr()
    assert SECRET not in out + err and "postgresql://megadocs:***@127.0.0.1" in err, err
    assert len(served) == 1 and served[0].get_all_studies()  # the sweep's real ledger, as it is


@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE", "none"])
def test_password_from_the_environment_or_a_pgpass_file(make_sweep, workdir, password_server, capfd,
                                                        monkeypatch, source):
    """The sweep file names no password; libpq takes it from PGPASSWORD or a ~/.pgpass-style file."""
    if source == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", SECRET)
    elif source == "PGPASSFILE":
        pgpass = workdir / "pgpass"
        pgpass.write_text(f"127.0.0.1:{password_server}:*:megadocs:{SECRET}\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
    path = make_sweep(ledger=f"postgresql://megadocs@127.0.0.1:{password_server}/postgres")
    status, out, err = _outputs(capfd, ["search", "certify", str(path), "--no-progress"])
    if source == "none":
        assert status == 2 and err.count("\n") == 1 and "cannot open postgresql://megadocs@127.0.0.1" in err, err
    else:
        assert status == 0, err
        assert [r.status for r in read_runs(load_sweep(path))] and all(r.status == "completed" for r in read_runs(load_sweep(path)))
    assert SECRET not in out + err


def test_the_ledger_waits_out_a_server_restart_and_goes_on(postgres_server, caplog, driver):
    """The server restarts under a controller (found by benchmarks/rehearsal.py: the controller
    died with "server closed the connection unexpectedly"): the next ledger call waits until the
    server is back and goes on in the same ledger."""
    from megadocs.formats import RunMetrics, RunStatus
    from search.ledger import Ledger

    ledger = Ledger(postgres_server.url, "t")
    trial = ledger.new_run("t/a", params=RunParams(point={"lr": 0.003}), run_id="r1", run_dir="/runs/r1")
    postgres_server.stop()

    def back_once_missed() -> None:  # (a fixed delay could end before a slow machine's ledger call)
        deadline = time.monotonic() + 120
        while "unreachable" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        postgres_server.start()

    back = threading.Thread(target=back_once_missed)
    back.start()
    try:
        ledger.complete(trial, metrics=RunMetrics(status=RunStatus.COMPLETED, val_loss=1.25))  # waits meanwhile
    finally:
        back.join()
    [record] = ledger.runs("t/a")
    assert record.status is RunStatus.COMPLETED and record.loss == 1.25
    assert ledger.study_names() == ["t/a"]  # the same ledger, nothing forked
    assert "unreachable" in caplog.text and "reachable again" in caplog.text


def test_a_ledger_gone_for_good_is_one_line_without_the_password(monkeypatch):
    from megadocs.errors import UserError
    from search import ledger as ledger_module

    monkeypatch.setattr(storage, "LEDGER_OUTAGE_S", 1.0)
    monkeypatch.setattr(storage, "RECONNECT_EVERY_S", 0.2)
    with _server(SECRET) as server:
        ledger = ledger_module.Ledger(f"postgresql://megadocs:{SECRET}@127.0.0.1:{server.port}/postgres", "t")
        trial = ledger.new_run("t/a", params=RunParams(point={"lr": 0.003}), run_id="r1", run_dir="/runs/r1")
        server.stop()
        with pytest.raises(UserError) as refused:
            ledger.update(trial, reason="x")
    message = str(refused.value)
    assert "unreachable" in message and "megadocs:***@127.0.0.1" in message and SECRET not in message
    assert "\n" not in message


def test_a_trial_whose_creation_was_committed_unheard_is_no_run(make_sweep, workdir, postgres_url, monkeypatch,
                                                                capsys, caplog):
    """The connection is cut after the server committed a new trial and before the controller
    heard. fake_lost_ack: the real server commits, then the call fails as a cut connection makes
    it fail (cutting it at exactly that moment cannot be arranged). The ledger retries and the
    trial is created again: the first names no point. The sweep goes on and no point runs
    twice; ``status`` and ``analysis`` say it in one line and count it nowhere; the next
    ``certify`` closes it (Optuna state FAIL, with a reason)."""
    import json

    import optuna
    import sqlalchemy

    from search import ledger as ledger_module

    from .conftest import calls

    monkeypatch.setattr(storage, "RECONNECT_EVERY_S", 0.05)
    original = optuna.storages.RDBStorage.create_new_trial
    created, lost = [], []

    def fake_lost_ack(self, study_id, template_trial=None):
        trial_id = original(self, study_id, template_trial)
        created.append(trial_id)
        if len(created) == 3:
            lost.append(trial_id)
            cut = sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from cut
        return trial_id

    monkeypatch.setattr(optuna.storages.RDBStorage, "create_new_trial", fake_lost_ack)
    path = make_sweep(ledger=postgres_url)
    assert main(["search", "certify", str(path), "--no-progress"]) == 0
    [trial_id] = lost
    ledger = ledger_module.Ledger(postgres_url, "t")
    unheard = ledger.storage.get_trial(trial_id)
    assert unheard.state is optuna.trial.TrialState.RUNNING and unheard.user_attrs == {}
    evaluated = [tuple(sorted(c.items())) for c in calls(workdir)]
    runs = read_runs(load_sweep(path))
    assert len(evaluated) == len(set(evaluated)) == len(runs)  # each point once; the lost trial is no run

    capsys.readouterr()
    assert main(["search", "status", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["undescribed"] == [{"study": "t/a", "trials": 1}] and report["jobs"] == []
    assert report["certifications"][0]["compute"]["runs"] == len(runs)
    assert main(["search", "status", str(path)]) == 0
    assert capsys.readouterr().out.count("name no point") == 1
    assert main(["analysis", "export", str(path), "--out", str(workdir / "runs.csv")]) == 0
    assert len((workdir / "runs.csv").read_text().splitlines()) == 1 + len(runs)
    assert "name no point" in caplog.text

    assert main(["search", "certify", str(path), "--no-progress"]) == 0  # closes it, runs nothing
    assert ledger.storage.get_trial(trial_id).state is optuna.trial.TrialState.FAIL
    assert len(calls(workdir)) == len(evaluated)
    capsys.readouterr()
    assert main(["search", "status", str(path)]) == 0
    assert "name no point" not in capsys.readouterr().out


def test_a_full_disk_on_the_ledgers_server_is_one_line_and_the_same_command_resumes(make_sweep, workdir, capfd,
                                                                                      monkeypatch, driver):
    """The server's disk fills up (its tables sit on a REAL 4 MiB tmpfs; it answers SQLSTATE 53100
    disk_full and stays up): `search certify` says so in one line naming the ledger, exit 4 as for
    a local full disk, at once rather than after waiting out an "outage"; the committed runs are
    kept, and the same command finishes once there is space."""
    from tests.filesystems import tmpfs

    monkeypatch.setattr(storage, "LEDGER_OUTAGE_S", 300.0)  # the old code's wait, shortened: fails
    with _server(SECRET) as server, tmpfs(server.root / "small", 4) as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs is not permitted here (needs root)")
        server.default_tablespace(server.root / "small")
        url = f"postgresql://megadocs:{SECRET}@127.0.0.1:{server.port}/postgres"
        path = make_sweep(ledger=url, certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}}])
        assert main(["search", "certify", str(path), "--no-progress"]) == 0
        before = {r.run_id for r in read_runs(load_sweep(path))}
        path = make_sweep(ledger=url, certifications=[{"name": "a", "fixed": {"method": "simple", "g": 4}},
                                                      {"name": "b", "fixed": {"method": "stitched", "g": 4}}])
        filler = server.root / "small" / "filler"
        with open(filler, "wb", buffering=0) as handle:  # 24 KiB left: some of b's runs fit, not all
            stats = os.statvfs(filler.parent)  # (measured: 16-32 KiB fail part-way, 8 at once, 40 never)
            os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize - 24 * 1024)
        capfd.readouterr()

        started = time.monotonic()
        assert main(["search", "certify", str(path), "--no-progress"]) == Exit.WORK_FAILED
        assert time.monotonic() - started < storage.LEDGER_OUTAGE_S  # not waited out (however slow the machine)
        err = capfd.readouterr().err
        assert "Traceback" not in err and SECRET not in err, err[-3000:]
        assert "unreachable" not in err, err[-3000:]  # never taken for an outage, not even for a while
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: no space left on device on the database server of "
                               f"postgresql://megadocs:***@127.0.0.1:{server.port}/postgres"), line
        assert line.endswith("; re-run the same command once there is space"), line
        assert server.running()  # a full table space: the server refused the write and stays up
        kept = {r.run_id for r in read_runs(load_sweep(path)) if r.status == "completed"}
        assert kept > before  # those of a, and what b committed before the disk filled

        filler.unlink()
        assert main(["search", "certify", str(path), "--no-progress"]) == 0
        assert kept <= {r.run_id for r in read_runs(load_sweep(path)) if r.status == "completed"}
        summaries = {s.name: s for s in summarize(load_sweep(path))}
        assert summaries["a"].state.value == summaries["b"].state.value == "certified"


def test_a_kill_mid_update_leaves_all_attributes_or_none_on_postgres(postgres_url):
    from .test_storage import ATTRS, killed_mid_update

    assert killed_mid_update(postgres_url) in ({}, ATTRS)
