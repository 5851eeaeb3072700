"""Objectives for the search tests: the analytic bowl plus call logging and injected failures.

They run inside jobs (also separate processes under the local executor), so they communicate
through files named by environment variables the test sets.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

from search.landscapes import SeedNoise, bowl


def _log_call(params) -> None:
    path = os.environ.get("SEARCH_TEST_CALLS")
    if path:
        with open(path, "a") as handle:  # O_APPEND: lines from concurrent jobs do not interleave
            handle.write(json.dumps(params, sort_keys=True) + "\n")


def _once(params, tag: str) -> bool:
    """True the first time this point is seen with this tag (a marker file per point)."""
    folder = Path(os.environ["SEARCH_TEST_MARKERS"])
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / (tag + "-" + "-".join(f"{k}={params[k]}" for k in sorted(params)))
    if marker.exists():
        return False
    marker.touch()
    return True


def logged(params):
    """The bowl, logging every evaluation; sleeps SEARCH_TEST_SLEEP seconds (default 0)."""
    _log_call(params)
    time.sleep(float(os.environ.get("SEARCH_TEST_SLEEP", "0")))
    return {"loss": bowl(params), "tokens_seen": 1000}


def flaky(params):
    """Every point raises once (a crashed node), then succeeds."""
    if _once(params, "flaky"):
        raise RuntimeError("simulated node failure")
    return logged(params)


def killed_once(params):
    """Every point's first job dies by SIGKILL (like the OOM killer), then succeeds."""
    if _once(params, "killed"):
        os.kill(os.getpid(), signal.SIGKILL)
    return logged(params)


def broken_corner(params):
    """Runs at lr=0.01 always fail: a neighbour that never finishes."""
    if params["lr"] == 0.01:
        raise RuntimeError("CUDA out of memory (simulated)")
    return logged(params)


def seed_noisy(params):
    """The bowl seen through seed noise sd 0.01 (each ``seed`` draws anew), logging every call."""
    _log_call(params)
    time.sleep(float(os.environ.get("SEARCH_TEST_SLEEP", "0")))
    return {"loss": SeedNoise(bowl, 0.01)(params), "tokens_seen": 1000}


def minus_inf_corner(params):
    """lr=0.01 returns -inf: no loss at all (a failed run with a reason, never a certificate)."""
    _log_call(params)
    return -math.inf if params["lr"] == 0.01 else bowl(params)


def returns_text(params):
    """An objective with a bug: it returns a string."""
    _log_call(params)
    return "0.5"


NOT_CALLABLE = 3.0


def always_nan(params):
    """Every run diverges."""
    _log_call(params)
    return math.nan


def job_process(params):
    """The bowl, and what the job process was started with: its thread variables and whether the
    terminal's Ctrl-C (SIGINT) is ignored there."""
    return {"loss": bowl(params), "omp": os.environ.get("OMP_NUM_THREADS"),
            "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN}


def _wait_for_go(name: str, limit_s: float = 600.0) -> None:
    """Wait until the test creates the marker ``name`` (in SEARCH_TEST_MARKERS): the test, not a
    sleep's length, decides when the job goes on (at most ``limit_s``, so that none is left behind)."""
    marker, deadline = Path(os.environ["SEARCH_TEST_MARKERS"]) / name, time.monotonic() + limit_s
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _gate() -> int | None:
    """Wait for the marker ``go``, except in the first SEARCH_TEST_FREE_RUNS jobs (default 0) to
    get here: each job takes the next numbered ticket (a file made with O_EXCL: two jobs never hold
    the same), so that a sweep finishes that many runs and then keeps the next ones in flight.
    Returns the job's ticket (None without SEARCH_TEST_FREE_RUNS)."""
    free, ticket = int(os.environ.get("SEARCH_TEST_FREE_RUNS", "0")), None
    if free:
        folder = Path(os.environ["SEARCH_TEST_MARKERS"])
        folder.mkdir(parents=True, exist_ok=True)
        ticket = 0
        while True:
            try:
                os.close(os.open(folder / f"ticket-{ticket}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                ticket += 1
        if ticket < free:
            return ticket
    _wait_for_go("go")
    return ticket


def gated(params):
    """The bowl, once the test has created the marker ``go``: a job that runs until it is let go
    (the first SEARCH_TEST_FREE_RUNS jobs run at once, see :func:`_gate`)."""
    _gate()
    return logged(params)


def gated_seed_noisy(params):
    """:func:`seed_noisy`, gated as :func:`gated`."""
    _gate()
    return seed_noisy(params)


def lingers_at_exit(params):
    """The bowl; the job process then does not exit, after submitit wrote its result, until the
    test creates the marker ``exit`` (a slow interpreter teardown, as long as the test needs)."""
    import atexit

    atexit.register(_wait_for_go, "exit")
    return logged(params)


def timed(params):
    """The bowl, recording when each evaluation ran (SEARCH_TEST_SLEEP seconds long), so that a
    test can count the runs that overlapped."""
    start = time.time()
    result = logged(params)
    with open(os.environ["SEARCH_TEST_CALLS"] + ".times", "a") as handle:
        handle.write(json.dumps({"start": start, "end": time.time()}) + "\n")
    return result


def user_error(params):
    """A deterministic user error inside the job (a store that is not there)."""
    from megadocs.errors import UserError

    _log_call(params)
    raise UserError(f"data.store: {os.environ.get('SEARCH_TEST_MARKERS')}/store not found")


def gated_user_error_until_fixed(params):
    """:func:`user_error` everywhere (the data is away) until the test creates the marker ``fixed``,
    the bowl once fixed; gated as :func:`gated` (the first SEARCH_TEST_FREE_RUNS jobs go at once)."""
    _gate()
    if not (Path(os.environ["SEARCH_TEST_MARKERS"]) / "fixed").exists():
        user_error(params)
    return logged(params)


def user_error_until_fixed(params):
    """:func:`user_error` at lr=0.01 until the test creates the marker ``fixed`` (the user fixed
    the cause); the bowl elsewhere, and there once fixed."""
    if params["lr"] == 0.01 and not (Path(os.environ["SEARCH_TEST_MARKERS"]) / "fixed").exists():
        user_error(params)
    return logged(params)


def gpus_seen() -> str | None:
    """The GPUs the job process was started with (its CUDA_VISIBLE_DEVICES), once the test has
    created the marker ``gpus``: a job that holds its GPU until it is let go."""
    _wait_for_go("gpus")
    return os.environ.get("CUDA_VISIBLE_DEVICES")
