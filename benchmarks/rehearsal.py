"""A dress rehearsal of the paper's whole sweep, at its size, with faults: nothing lost, nothing run twice.

    python benchmarks/rehearsal.py            # search/examples/paper-300m.yaml, every certification
    python benchmarks/rehearsal.py --small    # the CI variant (tests/slurm/test_rehearsal.py)

The paper's sweep file runs through the real controller (``megadocs search certify``, a
subprocess), the real executor (submitit job arrays on the local SLURM cluster,
``slurm/local-cluster.sh``) and a real ledger (a throwaway PostgreSQL server); only the training
job is replaced: each job evaluates the surrogate of ``search.rehearsal`` (seconds instead of GPU
hours; see :func:`search.rehearsal.rehearsal_sweep` for the few settings that change). The run
directories live on a small tmpfs of their own. While it runs, faults are injected, each recorded
as ``{kind, injected, survived, detail}``:

- ``controller_sigkill``: the controller is SIGKILLed (several times) and started again;
- ``postgres_restart``: the ledger's server stops for a few seconds and starts again (the
  controller must wait and reconnect, not die, not start a second ledger);
- ``oom_kill``: a running job's process is SIGKILLed, as the OOM killer does (exit 137);
- ``scancel``: a running and a queued job are cancelled with ``scancel``;
- ``node_down``: the node is set DOWN with jobs on it, then resumed (only while no other
  user's job runs on it; resumed in a ``finally``);
- ``disk_full``: the run directories' file system fills up while jobs checkpoint, then frees;
- ``hang``: a job hangs with its signals blocked, past its time limit (SLURM kills it);
- ``user_error``: the user's data (a file every job reads first: ``search.rehearsal.DATA_ENV``)
  goes missing under the running sweep: a job meets it as a user error and returns ``invalid``,
  the controller stops the sweep in one line (exit 2); the data comes back and ``certify`` runs
  again, once, as a user would (no ``--retry-failed``): it re-attaches the other jobs that met the
  missing data and runs their points again without stopping, and so the invalid point (if the
  search still asks for it: one its centre has moved away from is not needed any more).

At the end: SLURM's accounting and the ledger are audited (``search.rehearsal.audit``: nothing run
twice), the certificates are compared with a fault-free rehearsal of the same surrogate (the same
controller with the in-process executor and an SQLite ledger), ``search status`` is timed, and
``megadocs analysis report`` writes the report with every figure. Prints one JSON line and writes
``benchmarks/results/rehearsal.json`` (``--small``: ``rehearsal-small.json``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import errno
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.postgres` when run as a script

from megadocs.exits import Exit  # noqa: E402
from megadocs.formats import RunStatus, dumps_json  # noqa: E402
from megadocs.procs import pid_alive  # noqa: E402
from search.controller import SweepStopped  # noqa: E402
from search.params import RunParams  # noqa: E402
from search.rehearsal import (  # noqa: E402
    CONTROL_ENV,
    DATA_ENV,
    HANG_MARKER,
    JOURNAL,
    SCALE_ENV,
    STEP_S,
    SURROGATE,
    Dispatch,
    audit,
    epoch_seconds,
    read_journal,
    rehearsal_sweep,
)
from search.sweep import Sweep, load_sweep  # noqa: E402
from tests.filesystems import tmpfs  # noqa: E402
from tests.postgres import ThrowawayPostgres  # noqa: E402

PAPER_SWEEP = REPO / "search" / "examples" / "paper-300m.yaml"
LOCAL_PROFILE = REPO / "slurm" / "profiles" / "local.yaml"
RESULTS = REPO / "benchmarks" / "results"
FAULT_KINDS = ("controller_sigkill", "postgres_restart", "oom_kill", "scancel", "node_down", "disk_full", "hang",
               "user_error")
TEN_THOUSAND = 10_000
FINISHED, NOT_CERTIFIED = (Exit.OK, Exit.CERTIFIED_ON_BOUND, Exit.WORK_FAILED), Exit.NEGATIVE
"""``search certify`` exits 0 (every certificate interior) or 3 (one leans on a bound, as the
paper's mix 0.9 does at G=32) when the sweep is done, 4 when it is done but a run failed (its
retries spent: the audit below says which); 1 when one did not certify, also the exit of a Python
traceback (a crash: restarted and recorded). The statuses: :class:`megadocs.exits.Exit`."""
DISK_FULL_S = 5.0
"""How long the file system stays full after the first checkpoint it refused."""
STALL_S = 300.0
"""No evaluation finished for this long (the hung job's time limit and kill take 90-120 s): the
sweep is stuck, and the rehearsal fails saying so."""


@dataclass(frozen=True)
class Variant:
    """Which part of the paper's sweep to rehearse, and when each fault strikes (as a share of the
    expected evaluations finished). The node goes down first and the hang is armed right after:
    a node failure would kill the hung job before its time limit, and that limit is the longest
    wait of all."""

    name: str
    certifications: tuple[str, ...] | None = None  # None: all
    transfers: tuple[str, ...] | None = None
    ensembles: tuple[str, ...] | None = None
    members: int | None = None  # ensemble members (None: the sweep's)
    expected_runs: int = 330  # the full sweep took 320-350 runs
    fs_mb: int = 256
    faults: tuple[tuple[str, float], ...] = (
        ("node_down", 0.03), ("hang", 0.03), ("controller_sigkill", 0.08), ("oom_kill", 0.14), ("scancel", 0.2),
        ("postgres_restart", 0.28), ("controller_sigkill", 0.36), ("disk_full", 0.44), ("user_error", 0.52),
        ("controller_sigkill", 0.6), ("postgres_restart", 0.75),
    )


FULL = Variant("full")
SMALL = Variant("small", certifications=("real", "simple-g1", "simple-g2", "simple-g4"),
                transfers=("stitched-g4-at-simple",), ensembles=("real-ens",), members=3, expected_runs=43,
                fs_mb=64, faults=(("node_down", 0.05), ("hang", 0.05), ("controller_sigkill", 0.15),
                                  ("oom_kill", 0.25), ("scancel", 0.35), ("postgres_restart", 0.45),
                                  ("disk_full", 0.55), ("user_error", 0.62), ("controller_sigkill", 0.7)))


@dataclass
class Fault:
    kind: str
    at: float
    injected: bool = False
    survived: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "injected": self.injected, "survived": self.survived, "detail": self.detail}


# --- the cluster and the file system ------------------------------------------------------------


def _run(*args: str, check: bool = True) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=check).stdout


def squeue(workdir: Path, states: str = "RUNNING,PENDING") -> dict[str, str]:
    """This rehearsal's jobs (by their working directory) -> state."""
    out = _run("squeue", "-h", "-r", "-t", states, "-o", "%i|%T|%Z", check=False)
    jobs = {}
    for line in out.splitlines():
        job_id, state, where = (line.split("|") + ["", ""])[:3]
        if where == str(workdir):
            jobs[job_id] = state
    return jobs


def foreign_running_jobs(workdir: Path) -> list[str]:
    out = _run("squeue", "-h", "-r", "-t", "RUNNING", "-o", "%i|%Z", check=False)
    return [line.split("|")[0] for line in out.splitlines() if line and line.split("|")[1] != str(workdir)]


def node_name() -> str:
    return _run("sinfo", "-h", "-N", "-o", "%N").split()[0]


def resume(node: str) -> None:
    """Return the node to service (idle or busy again), retrying while SLURM refuses the change."""
    for _ in range(20):
        _run("scontrol", "update", f"nodename={node}", "state=resume", check=False)
        state = _run("sinfo", "-h", "-N", "-n", node, "-o", "%T", check=False).strip()
        if state and not any(word in state for word in ("drain", "down", "fail")):
            return
        time.sleep(0.5)


def sacct_allocations(workdir: Path, since: float) -> list[dict[str, str]]:
    """Every allocation (``-D``: requeues included) of this rehearsal's jobs since ``since``."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 60))
    out = _run("sacct", "-n", "-P", "-X", "-D", "-S", start, "-o", "JobID,State,Submit,ExitCode,WorkDir")
    rows = []
    for line in out.splitlines():
        job_id, state, submit, exit_code, where = line.split("|")[:5]
        if where == str(workdir) and "[" not in job_id:
            rows.append({"job_id": job_id, "state": state.split()[0], "submit": submit, "exit_code": exit_code})
    return rows


def submitted_runs(jobs_folder: Path) -> dict[str, str]:
    """Job id -> the run its submitted payload trains (submitit's ``{job}_submitted.pkl``: what
    SLURM started, whatever the controller remembers). Our own files, in our own folder."""
    from submitit.core.utils import pickle_load

    runs = {}
    for path in jobs_folder.glob("*_submitted.pkl"):
        try:
            delayed = pickle_load(path)
        except (OSError, EOFError):
            continue
        runs[path.name[: -len("_submitted.pkl")]] = Path(delayed.function.run_dir).name
    return runs


def fill(path: Path, name: str, leave: int = 0) -> Path:
    """Take all but ``leave`` free bytes of ``path``'s file system with the file ``name``."""
    filler = path / name
    stats = os.statvfs(path)
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: nothing left to flush on close
        with contextlib.suppress(OSError):
            os.posix_fallocate(handle.fileno(), 0, max(1, stats.f_bavail * stats.f_frsize - leave))
        if not leave:
            with contextlib.suppress(OSError):  # what fallocate left, page by page
                while handle.write(b"\0" * 4096):
                    pass
    return filler


# --- the rehearsal ------------------------------------------------------------------------------


def select(sweep: Sweep, variant: Variant) -> Sweep:
    """The variant's part of the sweep (the full variant: all of it, unchanged)."""
    data = sweep.model_dump(mode="json", by_alias=True, exclude_none=True)
    if variant.certifications is not None:
        data["certifications"] = [c for c in data["certifications"] if c["name"] in variant.certifications]
    if variant.transfers is not None:
        data["transfers"] = [t for t in data["transfers"] if t["name"] in variant.transfers]
    if variant.ensembles is not None:
        data["ensembles"] = [e for e in data["ensembles"] if e["name"] in variant.ensembles]
    if variant.members is not None:
        for ensemble in data["ensembles"]:
            ensemble["members"] = variant.members
    return Sweep.model_validate(data)


def write_sweep(sweep: Sweep, path: Path) -> Path:
    path.write_text(yaml.safe_dump(sweep.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False))
    return path


def rehearsal_profile(work: Path) -> Path:
    """The local profile with a 1-minute time limit (a hung job is killed at 60-90 s plus
    KillWait) and the timeout signal 5 s before it (no job of seconds ever sees it)."""
    profile = yaml.safe_load(LOCAL_PROFILE.read_text())
    profile.update(time_min=1, additional_parameters={"signal": "USR2@5"})
    path = work / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def certificates(sweep: Sweep) -> dict[str, Any]:
    """Each certification's certificate (point, loss, bounds, soft bounds), transfer and ensemble
    losses: what two rehearsals with the same seeds must agree on."""
    from search.status import summarize, summarize_ensembles, summarize_transfers

    found: dict[str, Any] = {}
    for summary in summarize(sweep):
        cert = summary.to_dict()["certificate"]
        found[summary.name] = None if cert is None else {key: cert[key] for key in
                                                          ("point", "loss", "bounds_hit", "soft_bounds")}
    for transfer in summarize_transfers(sweep):
        found[f"transfer/{transfer.name}"] = transfer.loss
    for ensemble in summarize_ensembles(sweep):
        found[f"ensemble/{ensemble.name}"] = sum(m.status.finished for m in ensemble.members)
    return found


def fault_free(sweep: Sweep, work: Path) -> tuple[dict[str, Any], float]:
    """The same sweep, same surrogate, no faults: the real controller in this process with the
    in-process executor and an SQLite ledger, jobs not sleeping. Returns its certificates and
    the seconds it took."""
    from search.controller import run_sweep

    started = time.time()
    data = sweep.model_dump(mode="json", by_alias=True, exclude_none=True)
    data.update(ledger=None, out=str(work / "fault-free"),
                executor={**data["executor"], "kind": "debug", "profile": None})
    reference = Sweep.model_validate(data)
    previous = os.environ.get(SCALE_ENV)
    os.environ[SCALE_ENV] = "0"
    try:
        run_sweep(reference)
    finally:
        os.environ.pop(SCALE_ENV) if previous is None else os.environ.__setitem__(SCALE_ENV, previous)
    return certificates(reference), time.time() - started


class Rehearsal:
    """One rehearsal: the controller as a subprocess, faults injected between its polls."""

    def __init__(self, variant: Variant, work: Path, *, log: Callable[[str], None] = print,
                 measure_costs: bool = True) -> None:
        """``measure_costs=False`` leaves out what :meth:`_costs_at_scale` measures (five more
        ``megadocs`` commands on the finished sweep, ~20 s; nothing a fault decides)."""
        self.variant = variant
        self.measure_costs = measure_costs
        self.work = work
        self.control = work / "control"
        self.out = work / "out"
        self.data = work / "data" / "documents.txt"  # the user's data: every job reads it first
        self.log = log
        self.faults = [Fault(kind, at) for kind, at in variant.faults]
        self.controller: subprocess.Popen | None = None
        self.controllers = 0
        self.controller_cpu_s = 0.0
        self.crashes: list[dict[str, Any]] = []  # controllers that exited on their own with an error
        self.killed_by_us: set[int] = set()
        self._journal_offset = 0
        self.events: list[dict[str, Any]] = []

    # -- processes ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, CONTROL_ENV: str(self.control), SCALE_ENV: "1", DATA_ENV: str(self.data),
                "PYTHONUNBUFFERED": "1"}

    def start_controller(self) -> None:
        self.controllers += 1
        log = open(self.work / f"controller-{self.controllers}.log", "w")
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "megadocs.cli", "search", "certify", str(self.sweep_path), "--no-progress"],
            cwd=self.work, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.log(f"controller {self.controllers} started (pid {self.controller.pid})")

    def reap(self, block: bool = False) -> int | None:
        """The controller's exit status once it ended (its CPU time, children included, counted)."""
        pid, status, usage = os.wait4(self.controller.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        self.controller_cpu_s += usage.ru_utime + usage.ru_stime
        code = os.waitstatus_to_exitcode(status)
        self.controller.returncode = code
        return code

    def kill_controller(self) -> int:
        pid = self.controller.pid
        self.killed_by_us.add(pid)
        self.controller.send_signal(signal.SIGKILL)
        self.reap(block=True)
        return pid

    # -- progress ----------------------------------------------------------------------------

    def journal(self) -> list[dict[str, Any]]:
        """Every journal event so far (read incrementally)."""
        path = self.control / JOURNAL
        if path.is_file():
            with open(path) as handle:
                handle.seek(self._journal_offset)
                text = handle.read()
            complete = text[: text.rfind("\n") + 1]
            self._journal_offset += len(complete)
            self.events += [json.loads(line) for line in complete.splitlines() if line.strip()]
        return self.events

    def evaluations_done(self) -> int:
        return sum(event["event"] == "done" for event in self.journal())

    def running_evaluations(self) -> list[dict[str, Any]]:
        """Start events of jobs RUNNING now whose evaluation has not ended (latest first)."""
        running = squeue(self.work, "RUNNING")
        starts, ended = [], set()
        for event in self.journal():  # one scan: the starts of running jobs, and what ended
            if event["event"] == "start" and event["job"] in running:
                starts.append(event)
            elif event["event"] in ("done", "error", "hang"):
                ended.add((event["job"], event["run"]))
        return sorted((e for e in starts if (e["job"], e["run"]) not in ended), key=lambda e: -e["t"])

    def _touched(self) -> set[str]:
        """Runs an earlier fault hit (the hung one included)."""
        hung = {e["run"] for e in self.journal() if e["event"] == "hang"}
        return hung | {run for fault in self.faults for run in fault.detail.get("runs", [])}

    def _untouched(self, starts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Evaluations of runs no earlier fault touched (a run hit twice could spend its retries)."""
        touched = self._touched()
        return [s for s in starts if s["run"] not in touched]

    # -- faults ------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> bool:
        """Try to inject ``fault`` now; False when the moment is wrong (e.g. no job running)."""
        return getattr(self, f"_inject_{fault.kind}")(fault)

    def _inject_hang(self, fault: Fault) -> bool:
        """Arm the hang for the next ensemble member to start (no other run waits for one, so the
        minutes until its time limit delay nothing else)."""
        (self.control / HANG_MARKER).write_text(json.dumps(["seed"]))
        fault.injected = True
        fault.detail["armed_at"] = time.time()
        return True

    def _inject_controller_sigkill(self, fault: Fault) -> bool:
        in_flight = self._untouched(self.running_evaluations())
        if not in_flight:
            return False
        pid = self.kill_controller()
        fault.injected = True
        fault.detail.update(pid=pid, at=time.time(), runs=sorted({e["run"] for e in in_flight}),
                            jobs={e["run"]: e["job"] for e in in_flight})
        self.start_controller()
        return True

    def _inject_oom_kill(self, fault: Fault) -> bool:
        for start in self._untouched(self.running_evaluations()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(start["pid"], signal.SIGKILL)
                fault.injected = True
                fault.detail.update(job=start["job"], runs=[start["run"]], pid=start["pid"], at=time.time())
                return True
        return False

    def _inject_scancel(self, fault: Fault) -> bool:
        running = self._untouched(self.running_evaluations())
        pending = [job for job, state in squeue(self.work, "PENDING").items()]
        if not running or not pending:
            return False
        runs = submitted_runs(self.out / "jobs")
        touched = self._touched() | {running[0]["run"]}
        queued = next((job for job in pending if runs.get(job) and runs[job] not in touched), None)
        if queued is None:
            return False
        _run("scancel", running[0]["job"], queued)
        fault.injected = True
        fault.detail.update(jobs=[running[0]["job"], queued], runs=[running[0]["run"], runs[queued]], at=time.time())
        return True

    def _inject_postgres_restart(self, fault: Fault) -> bool:
        pid = self.controller.pid
        self.postgres.restart(down_s=5.0)
        fault.injected = True
        fault.detail.update(controller_pid=pid, down_s=5.0, at=time.time())
        return True

    def _inject_disk_full(self, fault: Fault) -> bool:
        if not self.mounted:
            fault.detail["reason"] = "mounting a tmpfs is not permitted here"
            return True  # recorded, not injected
        # filling hundreds of MB takes seconds, longer than a job's checkpoints: all but 1 MiB
        # first, then the rest at once while a job with a checkpoint is between two of them
        ballast = self.out / ".rehearsal-ballast"
        if not ballast.exists():
            fill(self.out, ballast.name, leave=1 << 20)
        checkpointed = [e for e in self._untouched(self.running_evaluations()) if time.time() - e["t"] > 3 * STEP_S]
        if not checkpointed:
            return False  # strike while a job has a checkpoint to lose
        seen = len(self.journal())
        filler = fill(self.out, ".rehearsal-filler")
        errors: list[dict[str, Any]] = []
        try:  # full until a job's checkpoint failed, and DISK_FULL_S more (submissions fail meanwhile)
            deadline = time.time() + 20
            while time.time() < deadline and not errors:
                time.sleep(0.25)
                errors = [e for e in self.journal()[seen:] if e["event"] == "error" and e.get("errno") == errno.ENOSPC]
            time.sleep(DISK_FULL_S)
            errors = [e for e in self.journal()[seen:] if e["event"] == "error" and e.get("errno") == errno.ENOSPC]
        finally:
            filler.unlink()
            ballast.unlink()
        fault.injected = True
        fault.detail.update(enospc=[{"job": e["job"], "run": e["run"], "step": e["step"]} for e in errors],
                            runs=sorted({e["run"] for e in errors}), at=time.time())
        return True

    def stop_line(self, log: str) -> str | None:
        """The controller's user-error stop in ``log`` (:class:`search.controller.SweepStopped`'s
        line, naming the command to re-run), or None."""
        again = SweepStopped("").message(f"megadocs search certify {self.sweep_path}")[1:]
        return next((line for line in reversed(log.splitlines()) if line.endswith(again)), None)

    def _inject_user_error(self, fault: Fault) -> bool:
        """Move the data away while jobs are in flight; once the controller stopped (a job that
        started meanwhile returned ``invalid``), move it back and run ``certify`` again."""
        if not self._untouched(self.running_evaluations()):
            return False  # strike while jobs are in flight
        away = self.data.with_name(f"{self.data.name}.away")
        pid = self.controller.pid
        os.rename(self.data, away)
        fault.injected = True
        fault.detail.update(data=str(self.data), controller_pid=pid, at=time.time())
        try:
            code, deadline = None, time.time() + STALL_S
            while code is None and time.time() < deadline:
                time.sleep(0.1)
                code = self.reap()
        finally:
            os.rename(away, self.data)
        if code is None:  # it never stopped: ended here, recorded below
            self.kill_controller()
        log = (self.work / f"controller-{self.controllers}.log").read_text()
        fault.detail.update(back_at=time.time(), exit=code, stop_line=self.stop_line(log), stops=1)
        if code not in FINISHED and fault.detail["stop_line"] is None:  # no stop: it died otherwise (or never ended)
            self.crashes.append({"pid": pid, "exit": code, "log_tail": log[-2000:]})
        self.start_controller()  # as a user would: the data is back, the same command again
        return True

    def _rerun_after_stop(self, code: int, log: str) -> bool:
        """A restarted controller stopped in the user error's line again: counted (the fault's
        ``stops``; a job that met the missing data while it was away must not stop the controller
        that re-attaches it, so ``_judge`` fails a second stop), and ``certify`` is run again, as a
        user would, so that the rehearsal goes on. More stops than jobs that met it are no user
        error's."""
        fault = next((f for f in self.faults if f.kind == "user_error" and f.injected), None)
        met = sum(event["event"] == "invalid" for event in self.journal())
        if fault is None or code != Exit.BAD_INPUT or self.stop_line(log) is None or fault.detail["stops"] >= met:
            return False
        fault.detail["stops"] += 1
        self.log(f"controller {self.controllers} stopped again on the missing data (once is expected); re-running certify")
        self.start_controller()
        return True

    def _inject_node_down(self, fault: Fault) -> bool:
        """DOWN kills the node's jobs and SLURM requeues them. This cluster returns the node to
        service at once (ReturnToService=2), and a requeued job started while a process of its
        killed instance lives on (submitit ignores SIGTERM; SIGKILL comes KillWait later: 30 s, CI 10 s)
        drains the node ("Duplicate jobid"): so the node is drained until those processes are
        gone, then resumed, in a ``finally``.

        Only while no other user's job runs on it (otherwise False: the fault is tried again at the
        next poll, and the faults after it wait in their order): DOWN kills every job on the node,
        not only the rehearsal's, and the local cluster is shared (other tests' and colleagues'
        jobs run there at the same time: one of theirs would fail, or be requeued and run again,
        for a fault that is ours). A node never free of them leaves the fault not injected
        (recorded so at the end), never someone else's job killed."""
        mine = self._untouched(self.running_evaluations())
        if not mine or foreign_running_jobs(self.work):
            return False  # nothing of ours to hit, or another user's job would die with it
        node, pids = node_name(), [e["pid"] for e in mine]
        try:
            down = subprocess.run(["scontrol", "update", f"nodename={node}", "state=down",
                                   "reason=megadocs rehearsal: node failure"], capture_output=True, text=True)
            if down.returncode:  # not the cluster's administrator (SlurmUser or root)
                fault.detail["reason"] = f"scontrol update state=down refused: {down.stderr.strip()}"
                return True  # recorded, not injected
            fault.injected = True
            fault.detail.update(node=node, jobs=sorted({e["job"] for e in mine}), runs=sorted({e["run"] for e in mine}),
                                at=time.time())
            _run("scontrol", "update", f"nodename={node}", "state=drain", "reason=megadocs rehearsal: draining",
                 check=False)
            deadline = time.time() + 60
            while time.time() < deadline and any(pid_alive(pid) for pid in pids):
                time.sleep(0.5)
        finally:
            resume(node)
        fault.detail["node_state_after"] = _run("sinfo", "-h", "-N", "-n", node, "-o", "%T", check=False).strip()
        return True

    # -- the whole -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.time()
        self.work.mkdir(parents=True, exist_ok=True)
        self.control.mkdir(exist_ok=True)
        self.data.parent.mkdir(exist_ok=True)
        self.data.write_text("the rehearsal's training data\n")
        paper = select(load_sweep(PAPER_SWEEP), self.variant)
        with ThrowawayPostgres() as postgres, tmpfs(self.out, self.variant.fs_mb) as mounted:
            self.postgres, self.mounted = postgres, mounted
            sweep = rehearsal_sweep(paper, out=self.out, ledger=postgres.url, profile=rehearsal_profile(self.work))
            self.sweep_path = write_sweep(sweep, self.work / "sweep.yaml")
            self.log("rehearsal on SLURM + PostgreSQL; the fault-free reference beside it (in-process, SQLite)")
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                reference_job = pool.submit(fault_free, sweep, self.work)
                wall_started = time.time()
                try:
                    self._drive()
                finally:
                    for job in squeue(self.work):
                        _run("scancel", job, check=False)
                wall_s = time.time() - wall_started
                reference, reference_s = reference_job.result()
            result = self._results(sweep, reference, wall_s)
            shutil.copytree(self.out, self.work / "out-final", symlinks=True)  # the tmpfs goes: keep a copy
            result["fault_free_reference_s"] = round(reference_s, 1)
            result["rehearsal_total_s"] = round(time.time() - started, 1)
        return result

    def _drive(self) -> None:
        self.started_at = time.time()
        self.start_controller()
        pending = list(self.faults)
        progress, progress_at = 0, time.time()
        while True:
            code = self.reap()
            if code is not None:
                tail = (self.work / f"controller-{self.controllers}.log").read_text()[-2000:]
                if code in FINISHED or (code == NOT_CERTIFIED and "Traceback" not in tail):
                    self.log(f"controller finished (exit {code})")  # a fault still pending: not injected
                    return
                if self._rerun_after_stop(code, tail):
                    continue
                self.crashes.append({"pid": self.controller.pid, "exit": code, "log_tail": tail})
                self.log(f"controller {self.controllers} exited {code} on its own; restarting")
                if len(self.crashes) > 5:
                    raise RuntimeError(f"the controller keeps dying: {self.crashes}")
                self.start_controller()
                continue
            done = self.evaluations_done()
            if done != progress:
                progress, progress_at = done, time.time()
            elif time.time() - progress_at > STALL_S:
                raise RuntimeError(f"the sweep is stuck: no evaluation finished for {STALL_S:.0f} s "
                                   f"(see {self.work}/controller-{self.controllers}.log)")
            if pending and done >= pending[0].at * self.variant.expected_runs and self.inject(pending[0]):
                self.log(f"fault {pending[0].kind} at {done} evaluations: {pending[0].detail}")
                pending.pop(0)  # in order: the hang only after the node failure, ...
            time.sleep(0.5)

    # -- results -------------------------------------------------------------------------------

    def _results(self, sweep: Sweep, reference: dict[str, Any], wall_s: float) -> dict[str, Any]:
        from search.ledger import Ledger

        ledger = Ledger(sweep.ledger_url, sweep.name, create=False)
        records = [r for name in ledger.study_names() for r in ledger.runs(name)]
        journal = read_journal(self.control)
        runs_of_jobs = submitted_runs(self.out / "jobs")
        allocations = sacct_allocations(self.work, self.started_at)
        dispatches = [Dispatch(row["job_id"], runs_of_jobs.get(row["job_id"], f"?{row['job_id']}"), row["state"],
                               epoch_seconds(row["submit"])) for row in allocations]
        recorded: dict[str, tuple[float, str | None]] = {}
        for record in records:
            if record.status.finished and record.completed and record.run_id:
                when = epoch_seconds(record.completed)
                if record.run_id not in recorded or when < recorded[record.run_id][0]:
                    recorded[record.run_id] = (when, None if record.adopted_from else record.job_id)
        returned_failure: dict[str, set[str]] = {}  # run -> its jobs that returned a failure (invalid: re-run)
        for record in records:
            if record.failure is not None and record.run_id and record.job_id:
                returned_failure.setdefault(record.run_id, set()).add(record.job_id)
        for event in journal:  # a re-attached job's invalid result is no trial's failure: its run was submitted again
            if event["event"] == "invalid" and event.get("job"):
                returned_failure.setdefault(event["run"], set()).add(event["job"])
        checked = audit(dispatches, recorded, journal, returned_failure)
        lost = [f"{r.certification}#{r.trial}: {r.status.value}" for r in records  # an invalid trial has no result:
                if r.status is RunStatus.RUNNING or (r.status is RunStatus.FAILED and not r.to_rerun)]  # run when asked
        wrong = [f"{r.certification}#{r.trial}" for r in records if r.status is RunStatus.COMPLETED  # every loss
                 and (r.loss is None or abs(r.loss - SURROGATE.loss(r.params().merged())) > 1e-12)]  # is the job's
        mine = certificates(sweep)
        scale = self._costs_at_scale(sweep, len(records)) if self.measure_costs else {}
        report_dir = self.work / "report"
        figures, sections = self._report(sweep, report_dir)
        for fault in self.faults:  # one never injected (e.g. another user's job on the node) stays unsurvived
            if fault.injected:
                self._judge(fault, records, allocations, runs_of_jobs, journal)
        trials = len(records)
        return {
            "name": "rehearsal",
            "variant": self.variant.name,
            "certifications": sum(value is not None and "point" in value for value in mine.values()
                                  if isinstance(value, dict)),
            "certifications_total": len(sweep.certifications),
            "trials": trials,
            "jobs": checked.jobs,
            "allocations": checked.allocations,
            "retries": checked.retries,
            "requeues": checked.requeues,
            "trials_run_twice": sum(r.run_id in checked.run_twice for r in records),
            "runs_run_twice": len(checked.run_twice),
            "run_twice_detail": checked.run_twice,  # run -> why
            "lost": lost,
            "wrong_losses": wrong,
            "certificates_equal_fault_free": mine == reference,
            "certificate_differences": {k: [mine.get(k), reference.get(k)] for k in set(mine) | set(reference)
                                        if mine.get(k) != reference.get(k)},
            "wall_s": round(wall_s, 1),
            "wall_s_per_trial": round(wall_s / max(1, trials), 3),
            "controller_cpu_s": round(self.controller_cpu_s, 1),
            "controller_cpu_s_per_trial": round(self.controller_cpu_s / max(1, trials), 4),
            "controllers_started": self.controllers,
            "controller_crashes": self.crashes,
            **self._at_10k_trials(scale, trials),
            "ledger_bytes": self._ledger_bytes(),
            "figures": figures,
            "report_sections": sections,
            "faults": [fault.to_dict() for fault in self.faults],
            "all_faults_survived": all(f.injected and f.survived for f in self.faults),
        }

    def _judge(self, fault: Fault, records, allocations, runs_of_jobs, journal) -> None:
        """Survived: every run the fault hit ended finished in the ledger (none failed or left
        running; or its trial is the ``invalid`` one of a job that met the missing data, its point
        not asked for again, as a search whose centre moved on no longer needs it: ``user_error``'s
        runs, and a run another fault hit whose retry then met it, which ``user_error`` judges), plus
        the evidence its kind calls for (below, also kept in ``detail``)."""
        by_run: dict[str, Any] = {}  # run -> its finished trial (an invalid one run again: the later)
        for r in records:
            if r.run_id and not r.adopted_from and not (r.run_id in by_run and by_run[r.run_id].status.finished):
                by_run[r.run_id] = r
        slurm: dict[str, list[str]] = {}
        for row in allocations:
            slurm.setdefault(runs_of_jobs.get(row["job_id"], "?"), []).append(
                f"{row['job_id']} {row['state']} {row['exit_code']}")
        if fault.kind == "hang":
            claimed = [e for e in journal if e["event"] == "hang"]
            fault.detail.update(runs=[e["run"] for e in claimed], jobs=[e["job"] for e in claimed])
        if fault.kind == "user_error":  # the jobs that met the missing data
            invalid = [e for e in journal if e["event"] == "invalid"]
            fault.detail.update(runs=sorted({e["run"] for e in invalid}), jobs=sorted({e["job"] for e in invalid}))
        runs = fault.detail.get("runs", [])
        fault.detail["outcome"] = {run: {"ledger": by_run[run].status.value if run in by_run else "missing",
                                         "attempts": by_run[run].attempts if run in by_run else None,
                                         "slurm": slurm.get(run, [])} for run in runs}
        met_missing_data = {e["run"] for e in journal if e["event"] == "invalid"}  # judged by user_error
        evidence = bool(runs) and all(run in by_run and (by_run[run].status.finished or (
            run in met_missing_data and by_run[run].to_rerun)) for run in runs)
        if fault.kind == "user_error":  # its points run again when the search asks for them again
            fault.detail["ran_again"] = [run for run in runs if run in by_run and by_run[run].status.finished]
            fault.detail["not_asked_again"] = [run for run in runs if run in by_run and by_run[run].to_rerun]
            evidence = bool(runs) and set(runs) == {*fault.detail["ran_again"], *fault.detail["not_asked_again"]}
        states = " ".join(state for run in runs for state in slurm.get(run, []))
        if fault.kind == "hang":  # SLURM ended it at its time limit; a retry finished the run
            evidence = evidence and "TIMEOUT" in states
        elif fault.kind == "node_down":  # SLURM requeued the node's jobs itself
            evidence = evidence and "NODE_FAIL" in states
        elif fault.kind == "oom_kill":
            evidence = evidence and "FAILED" in states
        elif fault.kind == "disk_full":  # the retries resumed from the checkpoint written before
            resumed = {e["run"]: e["resumed_from"] for e in journal if e["event"] == "start"}
            fault.detail["resumed_from"] = {run: resumed.get(run) for run in runs}
            fault.detail["submissions_refused"] = sum(path.read_text().count("cannot submit")
                                                      for path in self.work.glob("controller-*.log"))
            evidence = evidence and any(resumed.get(run) for run in runs)
        elif fault.kind == "controller_sigkill":  # the job in flight finished the run: re-attached, not resubmitted
            evidence = evidence and all(by_run[run].job_id == job for run, job in fault.detail["jobs"].items())
        elif fault.kind == "user_error":  # it stopped the sweep once (exit 2, one line), on one run that failed
            # invalid; the others that met it were re-attached by the re-run and submitted again (finished above)
            failed = {r.run_id for r in records if r.to_rerun}
            fault.detail["invalid_trials"] = sorted(f"{r.certification}#{r.trial}" for r in records if r.to_rerun)
            line = fault.detail["stop_line"] or ""
            evidence = (evidence and fault.detail["exit"] == Exit.BAD_INPUT and fault.detail["data"] in line
                        and fault.detail["stops"] == 1 and len(failed & set(runs)) == 1)
        elif fault.kind == "postgres_restart":  # the same controller went on: it did not die
            pid = fault.detail["controller_pid"]
            died = [crash for crash in self.crashes if crash["pid"] == pid]
            fault.detail["controller_died"] = bool(died)
            evidence = not died
        fault.survived = fault.injected and evidence

    def _timed(self, *argv: str) -> tuple[float, float]:
        """(wall s, CPU s with its children) of one ``megadocs`` command on the finished sweep."""
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "megadocs.cli", *argv], cwd=self.work, env=self.env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        return time.perf_counter() - started, usage.ru_utime + usage.ru_stime

    def _at_10k_trials(self, scale: dict[str, Any], trials: int) -> dict[str, Any]:
        """The measured costs (none when not measured) and every controller's CPU (children
        included) over the trials, its starts included, at 10,000 trials: the same rate, plus each
        start's restore grown to 10,000 trials."""
        if not scale:
            return {}
        return {"controller_cpu_s_at_10k_trials": round(
            self.controller_cpu_s / max(1, trials) * TEN_THOUSAND
            + self.controllers * (scale["controller_start_cpu_s_at_10k_trials"] - scale["controller_start_cpu_s"])),
            **scale}

    def _costs_at_scale(self, sweep: Sweep, trials: int) -> dict[str, Any]:
        """What grows with the ledger: ``search status`` and a controller's start (its restore
        reads every trial), in CPU seconds (children included; the wall clock of a shared machine
        says little), measured on the finished sweep and on a one-trial sweep in the same server
        (the fixed part: imports, connections), and extrapolated along that line to 10,000 trials.
        The controller's start is a ``certify`` of a finished sweep: restore, nothing to run."""
        probe = sweep.model_copy(update={
            "name": "probe", "out": str(self.work / "probe"), "grid": {"lr": [0.003]}, "start": {"lr": 0.003},
            "certifications": [sweep.certifications[0].model_copy(update={"grid": None, "start": None})],
            "ensembles": [], "transfers": [], "executor": sweep.executor.model_copy(update={"kind": "debug"})})
        probe_path = write_sweep(probe, self.work / "probe.yaml")
        self._timed("search", "certify", str(probe_path), "--no-progress")  # its one trial
        costs: dict[str, Any] = {}
        for name, argv in (("status", ("search", "status")), ("controller_start", ("search", "certify"))):
            extra = ("--no-progress",) if name == "controller_start" else ()
            one_wall, one_cpu = self._timed(*argv, str(probe_path), *extra)
            wall, cpu = self._timed(*argv, str(self.sweep_path), *extra)
            per_trial = max(0.0, cpu - one_cpu) / max(1, trials - 1)
            costs.update({f"{name}_wall_s": round(wall, 2), f"{name}_cpu_s": round(cpu, 2),
                          f"{name}_cpu_s_one_trial": round(one_cpu, 2), f"{name}_cpu_ms_per_trial": round(1e3 * per_trial, 2),
                          f"{name}_cpu_s_at_10k_trials": round(one_cpu + per_trial * (TEN_THOUSAND - 1), 1)})
        costs["status_latency_s"] = costs.pop("status_wall_s")
        return costs

    def _ledger_bytes(self) -> int:
        from sqlalchemy import create_engine, text

        from search.storage import _postgres_driver

        engine = create_engine(_postgres_driver(self.postgres.url))
        try:
            with engine.connect() as connection:
                return int(connection.execute(text(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON "
                    "n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'")).scalar())
        finally:
            engine.dispose()

    def _report(self, sweep: Sweep, out: Path) -> tuple[list[str], list[str]]:
        """The full report (``megadocs analysis report``) with the ensembles' L(K) answered by the
        surrogate; returns (figure files, section titles)."""
        import pandas as pd

        from analysis.report import build_report
        from search.ledger import read_runs

        rows = []
        runs = read_runs(sweep)
        for ensemble in sweep.ensembles:
            members = sorted((r for r in runs if r.certification == f"ensemble/{ensemble.name}"
                              and r.status is RunStatus.COMPLETED), key=lambda r: r.member or 0)
            method = RunParams(fixed=sweep.certification(ensemble.source).fixed).method
            for k, loss in enumerate(SURROGATE.ensemble_losses([r.loss for r in members]), start=1):
                rows.append({"algorithm": method, "k": k, "loss": loss, "set": "iid"})
        path = build_report(sweep, out, ensembles=pd.DataFrame(rows) if rows else None, findings=True)
        text = path.read_text()
        sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
        return sorted(p.name for p in (out / "figures").glob("*.png")), sections


def summary_line(result: dict[str, Any]) -> str:
    """The last stdout line, one line of JSON (benchmarks/run_all.py reads the last JSON-object
    line and renders it into RESULTS.md): the figures, and one table row per fault."""
    rows = [{"fault": f["kind"], "injected": f["injected"], "survived": f["survived"],
             "evidence": "; ".join(f"{run[:8]}: {o['ledger']}, attempts {o['attempts']}, slurm {', '.join(o['slurm'])}"
                                   for run, o in f["detail"].get("outcome", {}).items())}
            for f in result["faults"]]
    shown = {k: v for k, v in result.items() if k not in ("faults", "run_twice_detail", "certificate_differences")}
    return dumps_json({**shown, "tables": {"faults": rows}}, indent=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the CI variant (a few certifications)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temp dir, kept)")
    parser.add_argument("--no-faults", action="store_true", help="inject nothing (a baseline)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (server, mount, jobs) when stopped
    variant = SMALL if args.small else FULL
    if args.no_faults:
        variant = dataclasses.replace(variant, faults=())
    work = args.work or Path(tempfile.mkdtemp(prefix="megadocs-rehearsal-"))
    result = Rehearsal(variant, work, log=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}",
                                                             file=sys.stderr, flush=True)).run()
    result["work"] = str(work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "rehearsal.json" if variant is FULL else "rehearsal-small.json"
    (RESULTS / name).write_text(dumps_json(result, indent=1) + "\n")
    print(summary_line(result))
    return 0 if result["all_faults_survived"] and not result["trials_run_twice"] and not result["lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
