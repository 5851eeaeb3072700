"""The record of the runs in a sharded step's folder (``FOLDER/submitit/submissions.json``) for runs
in their own process (``megadocs.run_record.ProcessRun``): held while the run goes, its heartbeat
refreshed, gone when it ends however it ends, and what a replacement of the settings makes of an
entry it cannot check (another host, another boot of a machine of this name, another pid namespace
on this host: counted while its heartbeat is fresh, presumed ended and said so once it is old;
recorded before heartbeats: counted, to be removed by hand) or that names a process that is gone
(killed outright, or its pid reused). A two-shard step with one setting; real processes for the
pids, and a real pid namespace (``unshare``) for the container. The refusal of a live process on
this host, with a real ``megadocs gen``: tests/gen/test_replaced_settings.py."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megadocs import run_record
from megadocs.errors import UserError
from megadocs.procs import process_start
from megadocs.run_record import STALE_S, SUBMISSIONS, ProcessRun, live_runs, recorded_process
from megadocs.shards import JOBS, ShardedStep
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Seeded(ShardedStep):
    """Two shards; ``seed`` is the one setting. ``fail``: its first shard raises."""

    def __init__(self, folder: Path, seed: int, fail: bool = False) -> None:
        super().__init__(folder, 2, name="seeded")
        self.seed, self.fail, self.seen_recorded = seed, fail, []

    def prepare(self) -> dict:
        return self.init_manifest({"format": "demo/1", "seed": self.seed}, same=lambda old: old["seed"] == self.seed)

    def _run_shard(self, index: int) -> dict:
        self.seen_recorded.append(_entries(self.folder))
        if self.fail:
            raise RuntimeError("the shard failed")
        return {}


def _entries(folder: Path) -> list[dict]:
    record = folder / JOBS / SUBMISSIONS
    return json.loads(record.read_text())["submissions"] if record.is_file() else []


def _record(folder: Path, *entries: ProcessRun | dict) -> None:
    (folder / JOBS).mkdir(parents=True, exist_ok=True)
    dumped = [entry if isinstance(entry, dict) else entry.model_dump() for entry in entries]
    (folder / JOBS / SUBMISSIONS).write_text(json.dumps({"submissions": dumped}))


def _without_heartbeat(entries: list[dict]) -> list[dict]:
    return [{key: value for key, value in entry.items() if key != "heartbeat"} for entry in entries]


def test_a_run_is_recorded_while_it_runs_and_not_after_it_failed(tmp_path):
    me = _without_heartbeat([ProcessRun.this().model_dump()])
    with pytest.raises(RuntimeError):
        Seeded(tmp_path, seed=1, fail=True).run()
    step = Seeded(tmp_path, seed=1)
    step.run()
    assert [_without_heartbeat(seen) for seen in step.seen_recorded] == [me, me] and _entries(tmp_path) == []


def test_a_process_recorded_before_heartbeats_on_another_host_is_named_not_guessed(tmp_path):
    """An entry in the record's older format (no boot, namespace or heartbeat): counted, as when written."""
    Seeded(tmp_path, seed=1).prepare()
    _record(tmp_path, {"kind": "process", "host": "node7.elsewhere.example", "pid": 4242, "started": 7})
    with pytest.raises(UserError) as refused:
        Seeded(tmp_path, seed=2).run()
    line = str(refused.value)
    assert ("(process 4242 on host node7.elsewhere.example (recorded without a heartbeat; not checked from here))"
            in line), line
    assert "(on host node7.elsewhere.example: kill -INT 4242)" in line and "\n" not in line
    assert line.endswith(f"remove its entry from {tmp_path / JOBS / SUBMISSIONS}")
    assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 1  # nothing changed


def _as_of_recording(line: str, age_s: int, recorded: float) -> str:
    """``line`` with the heartbeat age it says put back to ``age_s``, the age written at Unix time
    ``recorded``, once checked to be that age plus at most the seconds since (a loaded machine may
    take more than the half second that turns "60 s" into "61 s" to say it)."""
    said = re.search(r"its last heartbeat (\d+) s ago", line)
    assert said and age_s <= int(said[1]) <= age_s + math.ceil(time.time() - recorded), line
    return line.replace(said[0], f"its last heartbeat {age_s} s ago")


def _elsewhere(place: str, heartbeat: float) -> ProcessRun:
    """An entry this process cannot ask through /proc. Another boot: a machine of this hostname
    (or this one before a reboot); its pid and start time are a live process's here (this test's
    parent), which the entry must not be taken for."""
    if place == "another host":
        return ProcessRun(host="node7.elsewhere.example", pid=4242, started=7, boot="b", pidns=1, heartbeat=heartbeat)
    parent = os.getppid()
    return ProcessRun.this().model_copy(update={"boot": "another-boot", "pid": parent, "heartbeat": heartbeat,
                                                "started": process_start(parent)})


@pytest.mark.parametrize("place", ["another host", "another boot"])
def test_a_process_elsewhere_counts_while_it_beats_and_is_presumed_ended_once_silent(tmp_path, capfd, place):
    """Fresh heartbeat (a minute old): refused, the line naming where it runs and its heartbeat's
    age. Older than STALE_S: presumed ended, said on stderr, dropped, and the settings replaced."""
    Seeded(tmp_path, seed=1).prepare()
    started = time.time()
    entry = _elsewhere(place, heartbeat=started - 60)
    _record(tmp_path, entry)
    with pytest.raises(UserError) as refused:
        Seeded(tmp_path, seed=2).run()
    line = _as_of_recording(str(refused.value), 60, started)
    assert f"(process {entry.pid} {entry.where()} (its last heartbeat 60 s ago; not checked from here))" in line, line
    assert f"({entry.where()}: kill -INT {entry.pid})" in line and "\n" not in line
    assert line.endswith("; one not checked from here counts as ended once its heartbeat is 10 min old"), line
    assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 1  # nothing changed

    capfd.readouterr()
    _record(tmp_path, entry.model_copy(update={"heartbeat": time.time() - STALE_S - 60}))
    Seeded(tmp_path, seed=2).run()
    err = capfd.readouterr().err.splitlines()
    said = [line for line in err if "presumed ended" in line]
    assert said == [f"{tmp_path / JOBS / SUBMISSIONS}: process {entry.pid} {entry.where()} (its last heartbeat 11 min "
                    "ago; not checked from here): presumed ended, its heartbeat being over 10 min old; its entry is "
                    "dropped"], err
    assert any("replaced the settings of an earlier seeded run: seed: 1 -> 2" in line for line in err)
    assert _entries(tmp_path) == []


def test_a_running_process_refreshes_its_heartbeat_and_puts_back_its_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(run_record, "HEARTBEAT_S", 0.02)
    with recorded_process(tmp_path):
        (first,) = json.loads((tmp_path / SUBMISSIONS).read_text())["submissions"]
        wait_for(lambda: _heartbeats(tmp_path) and _heartbeats(tmp_path)[0] > first["heartbeat"], 60,
                 "a heartbeat", interval_s=0.01)
        (tmp_path / SUBMISSIONS).write_text(json.dumps({"submissions": []}))  # dropped by a check elsewhere
        wait_for(lambda: _heartbeats(tmp_path), 60, "the entry to come back", interval_s=0.01)
    assert _heartbeats(tmp_path) == []


def _heartbeats(folder: Path) -> list[float]:
    return [entry["heartbeat"] for entry in json.loads((folder / SUBMISSIONS).read_text())["submissions"]]


CONTAINED = """
import sys
from megadocs.run_record import recorded_process
with recorded_process(sys.argv[1]):
    print("recorded", flush=True)
    sys.stdin.read()
"""


def test_a_process_in_another_pid_namespace_of_this_host_is_not_taken_for_a_pid_here(tmp_path):
    """A real container's view: a process in its own pid namespace (``unshare --pid``, this host's
    name and kernel) records itself as pid 1 there; pid 1 here is another process. It counts by
    its heartbeat, and the line says where it runs."""
    Seeded(tmp_path, seed=1).prepare()
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", CONTAINED, str(tmp_path / JOBS)]
    contained = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        said = contained.stdout.readline()
        if said != "recorded\n":
            pytest.skip(f"no pid namespace can be made here (needs root): {contained.stderr.read()[-300:]}")
        (entry,) = (ProcessRun.model_validate(e) for e in _entries(tmp_path))
        assert not entry.here() and entry.host == ProcessRun.this().host
        with pytest.raises(UserError) as refused:
            Seeded(tmp_path, seed=2).run()
        line = str(refused.value)
        assert f"(process {entry.pid} in another pid namespace on this host (a container) (its last heartbeat" in line
        assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 1  # nothing changed
    finally:
        contained.communicate("", timeout=60)
    assert contained.returncode == 0 and _entries(tmp_path) == []


def test_a_process_that_is_gone_or_whose_pid_was_reused_does_not_refuse(tmp_path, capfd):
    """Both entries name no live process: one killed outright (SIGKILL: no cleanup), one whose pid
    now belongs to another process (this test's parent, its start time other than recorded)."""
    sleeper = subprocess.Popen(["sleep", "60"])
    killed = ProcessRun.this().model_copy(update={"pid": sleeper.pid, "started": process_start(sleeper.pid)})
    sleeper.kill()
    sleeper.wait()
    parent = os.getppid()
    reused = ProcessRun.this().model_copy(update={"pid": parent, "started": process_start(parent) + 1})
    Seeded(tmp_path, seed=1).prepare()
    _record(tmp_path, killed, reused)
    assert live_runs(tmp_path / JOBS) == []
    Seeded(tmp_path, seed=2).run()
    assert "replaced the settings of an earlier seeded run: seed: 1 -> 2" in capfd.readouterr().err
    assert _entries(tmp_path) == []  # dropped by the run's own edits of the record


@pytest.mark.parametrize("text, names", [('{"submissions": [', "not JSON"),
                                         ('{"submissions": [{"kind": "process", "host": "h"}]}', "submissions.0")])
def test_a_record_broken_by_hand_is_one_line_naming_it(tmp_path, text, names):
    """The refusal of a run on another host tells the user to edit the record: a broken edit is one
    line naming the file and what is wrong, and the folder is left as it was."""
    Seeded(tmp_path, seed=1).prepare()
    (tmp_path / JOBS).mkdir()
    (tmp_path / JOBS / SUBMISSIONS).write_text(text)
    with pytest.raises(UserError) as refused:
        Seeded(tmp_path, seed=2).run()
    line = str(refused.value)
    assert line.startswith(f"{tmp_path / JOBS / SUBMISSIONS}: ") and names in line and "\n" not in line, line
    assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 1
    assert (tmp_path / JOBS / SUBMISSIONS).read_text() == text


SUBMITS_IN_A_CONTAINER = """
import functools, subprocess, sys
from pathlib import Path
from megadocs.job_arrays import run_job_array
task = functools.partial(subprocess.run, ["sh", "-c", f"while [ ! -e {sys.argv[2]} ]; do sleep 0.1; done"])
run_job_array([task], ["shard 0"], kind="local", profile=None, folder=Path(sys.argv[1]))
"""


def test_a_local_array_submitted_in_another_pid_namespace_of_this_host_is_not_taken_for_pids_here(tmp_path):
    """A local job array's ids are its tasks' pids as its submitter saw them: submitted in a
    container of this host (a real pid namespace, ``unshare --pid``), they name nothing here, or
    another process. The array is not counted as ended (which would let a run with other settings
    replace them while the task still writes): it counts by its heartbeat, and the line says
    where it runs. Once its task wrote its result, it is dropped."""
    folder, go = tmp_path / JOBS, tmp_path / "go"
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", SUBMITS_IN_A_CONTAINER, str(folder),
               str(go)]
    contained = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: contained.poll() is not None or [e for e in _entries(tmp_path) if e["kind"] == "local"], 120,
                 "the contained submitter's array", interval_s=0.1)
        if contained.poll() is not None:
            pytest.skip(f"no pid namespace can be made here (needs root): {contained.stderr.read()[-300:]}")
        (array,) = live_runs(folder)
        assert array.kind == "local" and "in another pid namespace on this host (a container)" in array.describe()
    finally:
        go.touch()
        contained.communicate(timeout=120)
    assert contained.returncode == 0, contained.stderr
    assert live_runs(folder) == []


def test_a_local_array_on_another_host_counts_while_its_tasks_beat(tmp_path, capfd):
    """Fresh heartbeat: counted, named with its host and how to stop it there. Older than
    STALE_S: presumed ended, said on stderr, dropped."""
    array = {"kind": "local", "job_ids": ["4242"], "host": "node7.elsewhere.example", "boot": "b", "pidns": 1}
    started = time.time()
    _record(tmp_path, {**array, "heartbeat": started - 60})
    (live,) = live_runs(tmp_path / JOBS)
    said = _as_of_recording(live.describe(), 60, started)
    assert said == "local task(s) 4242 on host node7.elsewhere.example (its last heartbeat 60 s ago; not checked from here)"
    assert live.cancel_command() == "on host node7.elsewhere.example: kill -INT 4242"
    _record(tmp_path, {**array, "heartbeat": time.time() - STALE_S - 60})
    assert live_runs(tmp_path / JOBS) == [] and _entries(tmp_path) == []
    assert "local task(s) 4242 on host node7.elsewhere.example (its last heartbeat 11 min ago" in capfd.readouterr().err


def _local_array(folder: Path) -> dict | None:
    return next((entry for entry in _entries(folder) if entry["kind"] == "local"), None)


def test_a_local_arrays_task_beats_for_it_while_it_runs(tmp_path, monkeypatch):
    """The array's entry (its place and heartbeat) replaces the submitter's, and its heartbeat is
    refreshed while its task runs (by the task: its period as the submitter has it); afterwards
    the entry is dropped (its task wrote its result)."""
    import functools
    import threading

    from megadocs.job_arrays import run_job_array

    monkeypatch.setattr(run_record, "HEARTBEAT_S", 0.05)
    go = tmp_path / "go"
    task = functools.partial(subprocess.run, ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done"])
    waiting = threading.Thread(target=run_job_array, args=([task], ["shard 0"]),
                               kwargs={"kind": "local", "profile": None, "folder": tmp_path / JOBS})
    waiting.start()
    try:
        first = wait_for(lambda: _local_array(tmp_path), 120, "the array's entry", interval_s=0.05)
        assert first["host"] == ProcessRun.this().host and first["pidns"] == ProcessRun.this().pidns
        wait_for(lambda: _local_array(tmp_path)["heartbeat"] > first["heartbeat"], 60, "a heartbeat", interval_s=0.05)
    finally:
        go.touch()
        waiting.join(120)
    assert live_runs(tmp_path / JOBS) == []


SUBMITS_AND_WAITS = """
import functools, subprocess, sys
from pathlib import Path
from megadocs import run_record
from megadocs.job_arrays import run_job_array
run_record.HEARTBEAT_S = 0.05
task = functools.partial(subprocess.run, ["sh", "-c", f"while [ ! -e {sys.argv[2]} ]; do sleep 0.1; done"])
run_job_array([task], ["shard 0"], kind="local", profile=None, folder=Path(sys.argv[1]))
"""


def test_a_local_array_whose_submitter_was_killed_outright_counts_elsewhere_while_its_task_runs(tmp_path,
                                                                                                 monkeypatch):
    """The submitter SIGKILLed, its task runs on (a local task outlives it) and keeps beating for
    the array: seen from another host once STALE_S (here shortened, as the clocks of this test
    would otherwise need ten minutes) has passed since the kill, the array still counts, not
    checked from here; once the task wrote its result, the entry is dropped."""
    folder, go = tmp_path / JOBS, tmp_path / "go"
    submitter = subprocess.Popen([sys.executable, "-c", SUBMITS_AND_WAITS, str(folder), str(go)],
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: _local_array(tmp_path), 120, "the array's entry", interval_s=0.05)
        submitter.kill()
        submitter.wait(60)
        # (STALE_S is how long the task's beat may stall, writes and scheduling included: 5 s, not 2,
        # for a loaded machine)
        killed_at, stale_s = time.time(), 5.0
        wait_for(lambda: _local_array(tmp_path)["heartbeat"] > killed_at + stale_s, 120,
                 "a heartbeat STALE_S after the submitter was killed", interval_s=0.05)
        with monkeypatch.context() as elsewhere:
            elsewhere.setattr(run_record, "STALE_S", stale_s)
            elsewhere.setattr("socket.gethostname", lambda: "observer.elsewhere.example")
            (array,) = live_runs(folder)
            said = array.describe()
        assert said.startswith(f"local task(s) {array.job_ids[0]} on host {socket.gethostname()} (its last heartbeat "), said
        assert said.endswith("; not checked from here)"), said
    finally:
        go.touch()
        if submitter.poll() is None:
            submitter.kill()
    wait_for(lambda: live_runs(folder) == [], 120, "the task's result to drop its entry", interval_s=0.1)


def test_a_local_arrays_task_is_requeued_as_itself_only_where_its_task_can_be(tmp_path):
    """submitit requeues a timed-out task that has ``checkpoint``: the beating wrapper has one
    exactly where its task has, and the requeued task beats for its array too."""
    import functools

    from megadocs.run_record import ArrayTask
    from megadocs.shards import ShardTask

    assert not hasattr(ArrayTask(functools.partial(print, "x"), tmp_path), "checkpoint")
    shard = ShardTask(Seeded(tmp_path, seed=1), 0)
    again = ArrayTask(shard, tmp_path).checkpoint()
    assert isinstance(again.function, ArrayTask) and again.function.task is shard and again.function.folder == tmp_path
