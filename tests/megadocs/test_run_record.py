"""The record of the runs in a sharded step's folder (``FOLDER/submitit/submissions.json``) for runs
in their own process (``megadocs.executors.ProcessRun``): held while the run goes, gone when it ends
however it ends, and what a replacement of the settings makes of an entry it cannot check (another
host) or that names a process that is gone (killed outright, or its pid reused). A two-shard step
with one setting; real processes for the pids. The refusal of a live process on this host, with a
real ``megadocs gen``: tests/gen/test_replaced_settings.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from megadocs.errors import UserError
from megadocs.executors import SUBMISSIONS, ProcessRun, live_runs
from megadocs.procs import process_start
from megadocs.shards import JOBS, ShardedStep


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


def _record(folder: Path, *entries: ProcessRun) -> None:
    (folder / JOBS).mkdir(parents=True, exist_ok=True)
    (folder / JOBS / SUBMISSIONS).write_text(json.dumps({"submissions": [e.model_dump() for e in entries]}))


def test_a_run_is_recorded_while_it_runs_and_not_after_it_failed(tmp_path):
    me = ProcessRun.this().model_dump()
    with pytest.raises(RuntimeError):
        Seeded(tmp_path, seed=1, fail=True).run()
    step = Seeded(tmp_path, seed=1)
    step.run()
    assert step.seen_recorded == [[me], [me]] and _entries(tmp_path) == []


def test_a_process_on_another_host_is_named_not_guessed(tmp_path):
    Seeded(tmp_path, seed=1).prepare()
    _record(tmp_path, ProcessRun(host="node7.elsewhere.example", pid=4242, started=7))
    with pytest.raises(UserError) as refused:
        Seeded(tmp_path, seed=2).run()
    line = str(refused.value)
    assert "(process 4242 on host node7.elsewhere.example (another host: not checked from here))" in line, line
    assert "(on node7.elsewhere.example: kill -INT 4242)" in line and "\n" not in line
    assert line.endswith(f"remove its entry from {tmp_path / JOBS / SUBMISSIONS}")
    assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 1  # nothing changed


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
