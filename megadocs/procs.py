"""Process-level helpers: liveness (every lock and leftover-cleanup; :class:`PidPlace`, where a
recorded pid can be asked), entry points' environment, the one policy for how many threads a job
gets (:func:`job_thread_environment`), which process of a multi-process run this is, and the
reaper that kills an engine's processes when their owner dies (:func:`start_reaper`). Torch-free:
every sweep job asks, most never need torch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from megadocs.errors import UserError

__all__ = ["pid_alive", "process_start", "process_running", "boot_id", "pid_namespace", "PidPlace", "exclusive_lock",
           "child_pids", "start_reaper", "stop_reaper", "apply_environment_defaults", "available_cores",
           "threads_per_job", "job_thread_environment", "child_process_settings", "LAUNCHER_VARIABLES",
           "launcher_int", "LAUNCHERS", "world_from_env", "THREAD_VARIABLES"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""What sets a job's intra-op threads: PyTorch's CPU kernels (OpenMP, MKL) read these at start."""


def pid_alive(pid: int) -> bool:
    """True when a process with this pid runs on this host (zombies count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc), None where unknown: with the pid,
    it names one process (a pid is reused once its process is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """This kernel's boot id (Linux, random per boot), None where unknown: tells apart two machines
    that share a hostname, and this machine before and after a reboot. Containers on one machine
    share it (one kernel): :func:`pid_namespace` tells those apart."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def pid_namespace() -> int | None:
    """The inode of this process's pid namespace (``/proc/self/ns/pid``), None where unknown. Two
    processes see each other's pids only within one namespace: a pid recorded by a process in
    another one (another container with this hostname) names nothing here."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def process_running(pid: int, started: int | None) -> bool:
    """Whether the process recorded as ``pid``, started at ``started`` (:func:`process_start`; None:
    not recorded), still runs on this host: its pid is alive and, where both start times are
    known, it is the process recorded, not another that took the pid since. Meaningful only for a
    pid recorded where :meth:`PidPlace.askable` holds."""
    if not pid_alive(pid):
        return False
    now = process_start(pid)
    return started is None or now is None or now == started


@dataclass(frozen=True)
class PidPlace:
    """Where a recorded pid names a process: its host, kernel boot (:func:`boot_id`) and pid
    namespace (:func:`pid_namespace`). The one rule for whether such a pid can be asked through
    /proc from here (:meth:`askable`); a process anywhere else can only say it runs itself (a
    heartbeat, each recorder with its own periods). Records written before boot and namespace were
    recorded have them None: taken as this boot and namespace, as when they were written.

    Stored as its three fields (:meth:`to_json`, :meth:`from_json`): on their own (a trial's job
    place, ``search.ledger``) or beside the fields of what they place (an entry of a record of
    runs, ``megadocs.run_record``; the controller lock's holder, ``search.ledger``).

    >>> PidPlace("node7.example", "b", 1).askable(), PidPlace.current().askable()
    (False, True)
    """

    host: str
    boot: str | None = None
    pidns: int | None = None

    FIELDS: ClassVar[tuple[str, ...]] = ("host", "boot", "pidns")
    """Its fields' names, as a record stores them."""

    def to_json(self) -> dict[str, Any]:
        """Its fields as a record stores them (JSON values).

        >>> PidPlace("node7.example", "b", 1).to_json()
        {'host': 'node7.example', 'boot': 'b', 'pidns': 1}
        """
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PidPlace:
        """The place stored in ``data`` (:meth:`to_json`'s fields; any others beside them are not read).

        >>> PidPlace.from_json({"pid": 41, **PidPlace("node7.example", None, 1).to_json()})
        PidPlace(host='node7.example', boot=None, pidns=1)
        """
        return cls(*(data[name] for name in cls.FIELDS))

    @classmethod
    def current(cls) -> PidPlace:
        """This process's place."""
        return cls(socket.gethostname(), boot_id(), pid_namespace())

    def askable(self) -> bool:
        """Whether a pid recorded there names a process here: this host, this kernel boot (not
        another machine of the same name, nor this one before a reboot) and this pid namespace
        (not another container of this hostname), the last two where recorded."""
        here = PidPlace.current()
        return self.host == here.host and self.boot in (None, here.boot) and self.pidns in (None, here.pidns)

    @staticmethod
    def asked_here(place: PidPlace | None) -> bool:
        """Whether pids recorded at ``place`` are asked here: None (a place not recorded: a job
        whose ids name it anywhere, as SLURM's, or a record written before places were) is, as when
        it was written; otherwise :meth:`askable`.

        >>> PidPlace.asked_here(None), PidPlace.asked_here(PidPlace("node7.example"))
        (True, False)
        """
        return place is None or place.askable()

    def where(self) -> str:
        """Where it is, seen from here, for a line (of a place that is not :meth:`askable`)."""
        here = PidPlace.current()
        if self.host != here.host:
            return f"on host {self.host}"
        if self.boot not in (None, here.boot):
            return f"on another machine named {self.host}, or before this one's reboot"
        return "in another pid namespace on this host (a container)"


@contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created empty) for the block: processes that share a
    folder serialise their read-modify-writes of its files. Released when the process dies."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` on this host (Linux /proc; empty where unknown or gone)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity: a SLURM allocation or a taskset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_job(parallel: int, cores: int | None = None) -> int:
    """Intra-op threads for each of ``parallel`` jobs sharing ``cores`` (default: :func:`available_cores`).

    PyTorch's OpenMP and MKL otherwise start one thread per core in *every* job: two tiny runs at
    once on two cores then cost 48 CPU-s each instead of 13 (benchmarks/RESULTS.md, "local_threads").

    >>> threads_per_job(2, cores=2), threads_per_job(4, cores=16), threads_per_job(8, cores=2)
    (1, 4, 1)
    """
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, parallel))


def job_thread_environment(parallel: int, cores: int | None = None) -> dict[str, str]:
    """The thread variables (:data:`THREAD_VARIABLES`) for jobs that run ``parallel`` at a time on
    this machine's cores, leaving out any the user's environment already sets (their choice wins).
    The local job executor and ``megadocs demo`` apply it to the processes they start."""
    threads = str(threads_per_job(parallel, cores))
    return {name: threads for name in THREAD_VARIABLES if name not in os.environ}


def apply_environment_defaults(defaults: Mapping[str, str]) -> None:
    """Set each variable that the environment does not already set (for CLI entry points only).

    Library modules declare the variables they need (e.g. ``train.device.ENVIRONMENT_DEFAULTS``)
    and never write ``os.environ`` themselves; the process's entry point applies them, and child
    processes (submitit jobs, SLURM with its default ``--export=ALL``) inherit them.
    """
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


@contextmanager
def child_process_settings(environment: Mapping[str, str], *, ignore_sigint: bool = False) -> Iterator[None]:
    """While active, this process's environment holds ``environment`` and (``ignore_sigint``, main
    thread only) SIGINT is ignored; both are restored on exit. For starting child processes
    through a library that copies the parent's environment and signal dispositions and takes no
    others (submitit's local executor): the children keep both, this process only for the moment
    of the start. A child started with SIGINT ignored keeps ignoring the terminal's Ctrl-C (Python
    installs no KeyboardInterrupt handler then; ``train.loop`` respects it too). A Ctrl-C that
    arrives in that moment is ignored (press it again).
    """
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    ignoring = ignore_sigint and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
    try:
        yield
    finally:
        if ignoring:
            signal.signal(signal.SIGINT, previous)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


LAUNCHER_VARIABLES = {
    "WORLD_SIZE": (1, "the number of processes the launcher started"),
    "RANK": (0, "this process's rank among them"),
    "LOCAL_RANK": (0, "this process's rank on its node"),
    "SLURM_NTASKS": (1, "the number of tasks of the job step"),
    "SLURM_PROCID": (0, "this task's rank among them"),
    "SLURM_LOCALID": (0, "this task's rank on its node"),
}
"""The variables by which torchrun and srun tell a process of a multi-process run where it stands:
name -> (the least value, what it is)."""

LAUNCHERS = (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"))
"""Each launcher's variables (of :data:`LAUNCHER_VARIABLES`) for (rank, world size, local rank):
torchrun's, then srun's (`world_from_env` reads the first that describes several processes)."""


def launcher_int(name: str, env: Mapping[str, str] | None = None, *, default: int = 0) -> int:
    """The launcher's variable ``name`` (one of :data:`LAUNCHER_VARIABLES`) as an integer;
    ``default`` when it is not set.

    >>> launcher_int("WORLD_SIZE", {"WORLD_SIZE": "4"}), launcher_int("WORLD_SIZE", {}, default=1)
    (4, 1)
    >>> launcher_int("WORLD_SIZE", {"WORLD_SIZE": "four"})
    Traceback (most recent call last):
    megadocs.errors.UserError: WORLD_SIZE is 'four': expected an integer >= 1, the number of processes the launcher started (torchrun and srun set it)

    Raises:
        UserError: naming the variable, its value and what was expected: not an integer, or below
            its least value.
    """
    env = os.environ if env is None else env
    if name not in env:
        return default
    least, meaning = LAUNCHER_VARIABLES[name]
    try:
        value = int(env[name])
    except ValueError:
        value = least - 1
    if value < least:
        setter = "srun sets it" if name.startswith("SLURM_") else "torchrun and srun set it"
        raise UserError(f"{name} is {env[name]!r}: expected an integer >= {least}, {meaning} ({setter})")
    return value


def world_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's or SLURM's variables (:data:`LAUNCHERS`);
    (0, 1, 0) when neither describes several processes. torchrun's win: `srun torchrun ...` sets both.

    Raises:
        UserError: a variable read that is not a rank or count (`launcher_int`), or a rank or local
            rank not below the world size (an environment written by hand: that rank would wait in
            the rendezvous for ranks that never come), naming both variables and what was expected.
    """
    env = os.environ if env is None else env
    torchrun, slurm = LAUNCHERS
    if "WORLD_SIZE" in env and "RANK" in env:
        names = torchrun
    elif launcher_int("SLURM_NTASKS", env, default=1) > 1 and "SLURM_PROCID" in env:
        names = slurm
    else:
        return 0, 1, 0
    rank, world_size, local_rank = (launcher_int(name, env) for name in names)
    for name, value in ((names[0], rank), (names[2], local_rank)):
        if value >= world_size:
            setter = "srun sets them" if name.startswith("SLURM_") else "torchrun and srun set them"
            raise UserError(f"{name} is {value} but {names[1]} is {world_size}: expected {name} from 0 to "
                            f"{world_size - 1}, {LAUNCHER_VARIABLES[name][1]} ({setter})")
    return rank, world_size, local_rank


# --- the reaper ---------------------------------------------------------------------------------
# A process that outlives its owner's SIGKILL to kill what the owner started and would have closed
# (gen: vLLM's engine core, which watches nothing of its parent and would live on holding its share
# of GPU memory). It runs `python -m megadocs.procs PID:START ...` in its own session (a Ctrl-C or
# group kill of the owner leaves it running) and blocks on a pipe from the owner: EOF with nothing
# written means the owner is gone without stop_reaper. Each process is killed only if it is still
# the one named (pid and start time: a pid reused since is another process). Cost: one idle
# interpreter per reaper (about 10 MB).


def start_reaper(pids: list[int]) -> subprocess.Popen | None:
    """Start a reaper for ``pids`` (their processes as they are now); None when there are none."""
    starts = {pid: process_start(pid) for pid in pids}
    named = [f"{pid}:{start}" for pid, start in starts.items() if start is not None]
    if not named:
        return None
    return subprocess.Popen([sys.executable, "-m", "megadocs.procs", *named], stdin=subprocess.PIPE,
                            start_new_session=True)


def stop_reaper(reaper: subprocess.Popen | None) -> None:
    """The owner closed what the reaper guards: tell it so (a byte before EOF) and let it exit."""
    if reaper is None:
        return
    try:
        reaper.stdin.write(b"closed")
        reaper.stdin.close()
    except OSError:
        pass
    reaper.wait(timeout=30)


def _reap(named: list[str]) -> None:
    if sys.stdin.buffer.read():  # the owner closed them itself
        return
    for item in named:
        pid, start = (int(part) for part in item.split(":"))
        if process_start(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    _reap(sys.argv[1:])

