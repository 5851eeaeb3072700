"""Data-parallel training on CPU (gloo), DDP and FSDP2 (`parallelism: fsdp`, sharded; it runs on
gloo in this torch): real processes, launched by torchrun or with the environment SLURM/torchrun
give (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from megadocs.exits import Exit
from megadocs.formats import RunDir
from train.distributed import DistributedContext, world_from_env

EXIT_PREEMPTED = Exit.PREEMPTED
# Not bitwise: the 2-rank run's logged float32 losses differ from one process's in the last bits
# (summation order of the gradient all-reduce and of the per-rank micro-batches); measured here the
# validation losses agree to ~1e-9 relative after 18 steps (FSDP). The tolerance leaves room for other BLAS.
REL_TOL = 1e-5


def test_world_from_env_reads_torchrun_then_slurm():
    assert world_from_env({}) == (0, 1, 0)
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert world_from_env(slurm) == (5, 8, 1)
    assert world_from_env({**slurm, "SLURM_NTASKS": "1"}) == (0, 1, 0)  # one task: a plain run
    assert world_from_env({**slurm, "RANK": "0", "WORLD_SIZE": "2"}) == (0, 2, 0)  # srun torchrun


def test_a_rank_or_local_rank_not_below_the_world_size_is_refused_in_one_line_naming_both():
    """A hand-written environment (RANK=2 WORLD_SIZE=2) is refused before any rendezvous, naming
    the variables and what was expected; that rank waited in the rendezvous until its timeout."""
    from megadocs.errors import UserError
    from megadocs.procs import LAUNCHER_VARIABLES, LAUNCHERS

    for rank_name, world_name, local_name in LAUNCHERS:
        for name, env in ((rank_name, {rank_name: "2", world_name: "2", local_name: "0"}),
                          (local_name, {rank_name: "1", world_name: "2", local_name: "2"})):  # fmt: skip
            with pytest.raises(UserError) as refused:
                world_from_env(env)
            assert str(refused.value).startswith(f"{name} is 2 but {world_name} is 2: expected {name} from 0 to 1, "
                                                 f"{LAUNCHER_VARIABLES[name][1]} ("), str(refused.value)


@pytest.mark.parametrize("batch", [32, 30, 3])
def test_rows_partition_the_global_batch(batch):
    shares = [list(range(batch))[DistributedContext(rank=r, world_size=4).rows(batch)] for r in range(4)]
    assert sum(shares, []) == list(range(batch))  # every row once, in order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("world", [2, 3, 8])
@pytest.mark.parametrize("batch", [64, 15, 9, 3])
@pytest.mark.parametrize("micro", [1, 2, 7])
def test_every_rank_runs_as_many_micro_batches_and_the_weights_give_the_global_mean(world, batch, micro):
    shares = [DistributedContext(rank=r, world_size=world).step_share(batch, micro) for r in range(world)]
    assert len({share.micro_batches for share in shares}) == 1  # FSDP's collectives match
    rows = [share.rows.stop - share.rows.start for share in shares]
    assert all(count <= share.micro_batches * micro for count, share in zip(rows, shares, strict=True))
    assert shares[0].micro_batches == -(-max(rows) // micro)  # no more than the largest share needs
    # averaged over ranks (DDP, FSDP), the row weights sum to one: the global batch's mean
    assert math.isclose(sum(count * share.row_weight for count, share in zip(rows, shares, strict=True)), world)


def test_a_short_step_split_unevenly_finishes_and_matches_one_process():
    """2 gloo ranks, a step of 15 rows at micro-batch 7 (7 and 8 rows: one and two micro-batches
    on their own), and 15 validation windows at batch 7: under DDP and FSDP the step finishes and
    its loss, gradient and evaluation equal one process's. Before every rank ran as many
    micro-batches, the FSDP step hung in the extra micro-batch's all-gather."""
    returncode, out, err = _torchrun("tests.train.lockstep_worker", hung="2 ranks with unequal micro-batch counts hung")
    assert returncode == 0, err[-3000:]
    results = {result["parallelism"]: result for result in map(json.loads, out.strip().splitlines())}
    assert sorted(results) == ["ddp", "fsdp"]
    for result in results.values():
        assert result["micro_batches"] == 2
        assert math.isclose(result["loss"], result["reference_loss"], rel_tol=REL_TOL), result
        assert math.isclose(result["norm"], result["reference_norm"], rel_tol=REL_TOL), result
        assert result["max_weight_difference"] < 1e-6, result  # SGD at lr 1: the gradients differ by that
        for name, value in result["reference_losses"].items():
            assert math.isclose(result["losses"][name], value, rel_tol=REL_TOL), (name, result)


TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2")
"""torchrun on 2 processes of this node (its own entry point: an environment may have no `torchrun`
script). ``--standalone``: its agent serves the rendezvous on a port it binds itself (port 0), where
a port picked free here and released could be taken before torchrun bound it."""


def _torchrun(module: str, *args: str, hung: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`module` run by torchrun on 2 processes (`env`: more environment): its exit status, stdout
    and stderr once it ended; killed, and the test failed with `hung`, if it still runs after 240 s."""
    process = subprocess.Popen(
        [*TORCHRUN, "-m", module, *args],
        env=_env(**(env or {})), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its two workers: their own session
        process.communicate()
        pytest.fail(f"{hung} (killed after 240 s)")
    return process.returncode, out, err


def test_a_worker_writes_its_result_line_in_one_write_so_ranks_sharing_stdout_never_interleave(monkeypatch):
    """torchrun's ranks share one stdout pipe: a worker's result line goes out in one write(2),
    which a pipe never interleaves with another's (at most PIPE_BUF bytes). With print() under
    PYTHONUNBUFFERED (two writes: the line, then its newline) the W&B test's two ranks, printing
    the same refusal at the same moment, now and then left ``{...}{...}`` and an empty line."""
    import select

    from tests.train import worker_output

    writes: list[tuple[int, bytes]] = []
    # MOCK: os.write, to count the writes: two ranks' writes at the same instant cannot be staged here
    monkeypatch.setattr(worker_output.os, "write", lambda fd, data: writes.append((fd, data)) or len(data))
    worker_output.print_result({"rank": 1, "error": "tracking.wandb: ..."})
    assert writes == [(sys.stdout.fileno(), b'{"rank": 1, "error": "tracking.wandb: ..."}\n')]
    with pytest.raises(ValueError, match=f"at most {select.PIPE_BUF} are written whole"):
        worker_output.print_result({"error": "x" * select.PIPE_BUF})


def _megadocs(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("megadocs")), *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


FSDP = ("--set", "parallelism=fsdp")  # execution only: the same run identity as the others


def _ranks(config: Path, out: Path, world_size: int = 2, extra: tuple[str, ...] = ()) -> list[subprocess.Popen]:
    """`world_size` processes of `megadocs train`, each told its rank as torchrun or srun would."""
    port = str(_free_port())
    return [
        subprocess.Popen(_megadocs("train", str(config), "--out", str(out), *extra), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=_env(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port))  # fmt: skip
        for rank in range(world_size)
    ]


def _close(first: dict, second: dict) -> None:
    assert first["status"] == second["status"] == "completed"
    assert first["steps"] == second["steps"] and first["tokens_seen"] == second["tokens_seen"]
    assert first["params"] == second["params"]  # the whole model's count, also when sharded
    for name, value in first["val_losses"].items():
        assert math.isclose(value, second["val_losses"][name], rel_tol=REL_TOL), (name, value, second)


@pytest.fixture(scope="module")
def config(small_store, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dp") / "run.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"store": str(small_store), "real_epochs": 1, "context": 64},
        # 2 micro-batches per rank (no_sync composes); the last step's 21 rows (701 windows) split
        # 11 + 10, one micro-batch short on rank 1: every rank still runs two (`step_share`)
        "optim": {"batch_size": 40, "micro_batch_size": 10},
        "eval": {"val_windows": 96},
        "checkpoint_every": 1000,  # the only mid-run checkpoint is the one a signal triggers
        "device": "cpu",
    }))
    return path


@pytest.fixture(scope="module")
def single_run(config, tmp_path_factory) -> Path:
    """RUN of the single-process run every data-parallel run is compared with."""
    out = tmp_path_factory.mktemp("dp") / "single"
    done = subprocess.run(_megadocs("train", str(config), "--out", str(out)), env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def single(single_run) -> dict:
    return json.loads((single_run / "metrics.json").read_text())


@pytest.mark.slow
def test_torchrun_two_processes_match_one(config, single, tmp_path):
    out = tmp_path / "two"
    done = subprocess.run([*TORCHRUN, "-m", "megadocs", "train", str(config), "--out", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    _close(metrics, single)
    assert metrics["steps"] >= 10
    # rank 0 alone wrote RUN: one log line per logged step, the model, no leftover checkpoint
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == metrics["steps"]
    assert (out / "model").is_dir() and not (out / "checkpoint").exists()


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_fsdp_two_processes_match_one(config, single_run, single, tmp_path):
    """Sharded weights, gradients and AdamW state over 2 gloo ranks: the same steps, losses,
    global gradient norms (clipped over the shards) and saved weights as one process."""
    out = tmp_path / "fsdp"
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in _ranks(config, out, extra=FSDP)]
    assert [status for status, _ in results] == [0, 0], results
    assert "parallelism: fsdp -> fsdp on 2 processes" in results[0][1]
    _close(json.loads((out / "metrics.json").read_text()), single)
    sharded, whole = _log(out), _log(single_run)
    assert [line["step"] for line in sharded] == [line["step"] for line in whole]
    for mine, theirs in zip(sharded, whole, strict=True):
        assert math.isclose(mine["grad_norm"], theirs["grad_norm"], rel_tol=REL_TOL), (mine, theirs)
        assert math.isclose(mine["loss"], theirs["loss"], rel_tol=REL_TOL), (mine, theirs)
        for name, value in (theirs.get("val_losses") or {}).items():  # the curve, sharded over the ranks
            assert math.isclose(mine["val_losses"][name], value, rel_tol=REL_TOL), (mine, theirs)
    assert any(line.get("val_losses") for line in sharded)
    from safetensors.torch import load_file

    saved, reference = load_file(out / "model" / "model.safetensors"), load_file(single_run / "model" / "model.safetensors")
    assert sorted(saved) == sorted(reference)  # gathered to full tensors, the single-process names
    for name, tensor in reference.items():
        assert torch.allclose(saved[name], tensor, rtol=1e-4, atol=1e-5), name


def _finish_on_one_process(config: Path, out: Path, single: dict) -> None:
    """Resume RUN with one process; it ends with the single-process run's metrics."""
    resumed = subprocess.run(_megadocs("train", str(config), "--out", str(out)), env=_env(),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    _close(json.loads((out / "metrics.json").read_text()), single)


def _interrupt(processes: list[subprocess.Popen], log: Path, victim: int) -> list[tuple[int, str]]:
    """SIGTERM one process once a step is logged; every process's (exit status, stderr)."""
    deadline = time.monotonic() + 180
    while not (log.is_file() and log.read_text().strip()):
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        assert time.monotonic() < deadline, "no training step logged in 180 s"
        time.sleep(0.05)
    processes[victim].send_signal(signal.SIGTERM)
    return [(p.wait(timeout=180), p.communicate()[1]) for p in processes]


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_both_and_resumes_on_one_process(config, single, tmp_path):
    out = tmp_path / "interrupted"
    results = _interrupt(_ranks(config, out), out / "log.jsonl", victim=1)  # rank 1 sees the signal
    assert [status for status, _ in results] == [EXIT_PREEMPTED] * 2, results
    stopped = {int(err.split("preempted at step ")[1].split(";")[0]) for _, err in results}
    assert len(stopped) == 1, results  # the same step boundary on both ranks
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "metrics.json").exists()

    _finish_on_one_process(config, out, single)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), FSDP], ids=["auto-ddp", "fsdp"])
def test_one_process_interrupted_resumes_on_two(config, single, tmp_path, extra):
    out = tmp_path / "grown"
    first = subprocess.Popen(_megadocs("train", str(config), "--out", str(out)), env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    [(status, err)] = _interrupt([first], out / "log.jsonl", victim=0)
    assert status == EXIT_PREEMPTED, err
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in _ranks(config, out, extra=extra)]
    assert [status for status, _ in results] == [0, 0], results
    _close(json.loads((out / "metrics.json").read_text()), single)


@pytest.mark.slow
def test_fsdp_run_interrupted_resumes_on_one_process(config, single, tmp_path):
    """An FSDP checkpoint is one full file in the single-process format (gathered to rank 0)."""
    out = tmp_path / "sharded"
    results = _interrupt(_ranks(config, out, extra=FSDP), out / "log.jsonl", victim=0)
    assert [status for status, _ in results] == [EXIT_PREEMPTED] * 2, results
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    assert isinstance(state["optimizer"]["state"][0]["exp_avg"], torch.Tensor)  # torch's index keys, full tensors
    assert not (out / "metrics.json").exists()
    _finish_on_one_process(config, out, single)


@pytest.mark.slow
def test_ddp_run_interrupted_resumes_under_fsdp(config, single, tmp_path):
    """DDP and FSDP checkpoints are interchangeable (both are the single-process format)."""
    out = tmp_path / "replicated-then-sharded"
    results = _interrupt(_ranks(config, out, extra=("--set", "parallelism=ddp")), out / "log.jsonl", victim=1)
    assert [status for status, _ in results] == [EXIT_PREEMPTED] * 2, results
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in _ranks(config, out, extra=FSDP)]
    assert [status for status, _ in results] == [0, 0], results
    _close(json.loads((out / "metrics.json").read_text()), single)


def test_cuda_device_of_a_task_bound_to_one_gpu_is_its_only_device():
    from megadocs.errors import UserError
    from train.distributed import cuda_device_index

    assert [cuda_device_index(rank, 8) for rank in range(8)] == list(range(8))  # torchrun: all GPUs visible
    assert [cuda_device_index(rank, 1) for rank in range(8)] == [0] * 8  # SLURM --gpus-per-task=1
    with pytest.raises(UserError, match="local rank 5 but this process sees only 2 devices"):
        cuda_device_index(5, 2)


def _outputs(processes: list[subprocess.Popen], hung: str) -> list[tuple[str, str]]:
    """Each process's (stdout, stderr) once all have exited; killed, and the test failed with
    `hung`, if they are still running after 240 s (ranks waiting for one another)."""
    try:
        return [p.communicate(timeout=240) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
            p.communicate()
        pytest.fail(hung)


@pytest.fixture(scope="module")
def disagreement(config, micro_store, single_run, tmp_path_factory) -> tuple[Path, dict[str, list[str | None]],
                                                                             dict[str, list[str | None]]]:
    """2 gloo ranks of `tests.train.agreement_worker` (one launch for all its scenarios), rank 1
    seeing `micro_store`'s data where rank 0 sees `small_store`'s, and a finished run (a copy of
    `single_run`'s identity and metrics): its output folder, each scenario's error line per rank, and
    the type of each one's cause per rank (None: none)."""
    from tests.train.agreement_worker import SCENARIOS

    out = tmp_path_factory.mktemp("agree")
    done = out / "done"
    done.mkdir()
    for name in (RunDir.CONFIG_HASH, RunDir.METRICS):
        shutil.copy(single_run / name, done / name)
    args = [str(config), str(micro_store), str(done), str(out), *(str(_free_port()) for _ in SCENARIOS)]
    processes = [
        subprocess.Popen([sys.executable, "-m", "tests.train.agreement_worker", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
                         env=_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1"))
        for rank in range(2)
    ]  # fmt: skip
    outputs = _outputs(processes, "2 ranks that opened different data hung (killed after 240 s) instead of refusing at once")
    assert [p.returncode for p in processes] == [0, 0], [err[-3000:] for _, err in outputs]
    errors: dict[str, list[str | None]] = {scenario: [None, None] for scenario in SCENARIOS}
    causes: dict[str, list[str | None]] = {scenario: [None, None] for scenario in SCENARIOS}
    for line in "".join(stdout for stdout, _ in outputs).splitlines():
        result = json.loads(line)
        errors[result["scenario"]][result["rank"]] = result["error"]
        causes[result["scenario"]][result["rank"]] = result["cause"]
    return out, errors, causes


def _views(line: str) -> dict[str, str]:
    """Which identity prefix each group of ranks opened, as the disagreement line names them."""
    views = line.split("opened different data: ")[1].split(": data.store")[0]
    return {ranks.split(" (")[0]: prefix for prefix, ranks in (view.split(" on ") for view in views.split("; "))}


def test_ranks_that_opened_different_stores_all_refuse_in_one_line_and_write_nothing(disagreement, config):
    from train.config import RunConfig
    from train.data import RunStores

    out, errors, _ = disagreement
    first, second = errors["loop"]
    assert first == second and first is not None and "\n" not in first  # every rank: the same line
    run_config = RunConfig.model_validate(yaml.safe_load(config.read_text()))
    ours = RunStores.open(run_config).identity(run_config)
    views = _views(first)
    assert sorted(views) == ["rank 0", "rank 1"] and views["rank 0"] == ours[:8] != views["rank 1"], first
    assert f"rank 1 ({socket.gethostname()})" in first and "must hold the same data on every node" in first
    assert not (out / "loop").exists()  # refused before RUN was read or written


def test_a_rank_whose_file_system_fails_stops_every_rank_with_its_line_as_a_failure_to_retry(disagreement):
    """An OSError (NFS's ESTALE) on one rank as it opens its stores: every rank raises the same
    line naming that rank, its host and the error, and it is a WorkFailed (`megadocs train`: that
    one line and exit 4 on every rank), not a UserError (which a sweep would record as an invalid
    run and never retry)."""
    out, errors, _ = disagreement
    first, second = errors["loop-fault"]
    assert first == second, errors["loop-fault"]
    assert first == (f"WorkFailed: rank 1 ({socket.gethostname()}) of this run could not open its data: "
                     f"OSError: [Errno {errno.ESTALE}] {os.strerror(errno.ESTALE)}: 'store/tokens.bin'"), first
    assert not (out / "loop-fault").exists()  # stopped before RUN was read or written


@pytest.mark.parametrize(("scenario", "what"), [
    ("loop-read-fault", "could not read RUN"),  # rank 1, as it reads RUN before the ranks agree on it
    ("loop-prepare-fault", "could not prepare RUN"),  # rank 0, which alone writes RUN, as it prepares it
], ids=["reading-run-on-rank-1", "preparing-run-on-rank-0"])  # fmt: skip
def test_a_file_system_fault_one_rank_meets_in_run_stops_every_rank_with_its_line_as_a_failure_to_retry(
        disagreement, scenario, what):  # fmt: skip
    """An OSError on one rank alone (NFS's ESTALE as rank 1 reads what RUN holds; EIO, a full disk or
    a permission refused as rank 0 prepares it; MOCK: the worker's `INJECTED`): every rank raises the
    same WorkFailed line naming that rank, its host and the error, and nothing is written in RUN.
    Before, that rank stopped alone with the OSError's traceback and the other failed in its next
    collective, the agreement's all-gather or the broadcast of rank 0's refusal, where only a
    UserError was shared ("Connection closed by peer"; NCCL: its timeout, unless the launcher
    ended it)."""
    from tests.train.agreement_worker import INJECTED

    out, errors, _ = disagreement
    first, second = errors[scenario]
    rank, _, fault = INJECTED[scenario]
    assert first == second, errors[scenario]
    assert first == f"WorkFailed: rank {rank} ({socket.gethostname()}) of this run {what}: OSError: {fault}", first
    assert not (out / scenario).exists()  # rank 0 did not prepare RUN


def test_a_bug_rank_0_meets_as_it_prepares_run_ends_every_rank_as_in_one_process_not_as_a_failure_to_retry(
        disagreement):  # fmt: skip
    """Rank 0 meets a bug (a TypeError; MOCK: the worker's `INJECTED`) as it prepares RUN, which it
    alone writes: every rank raises the same `RankError` line naming rank 0, its host and the
    exception (on rank 0 its TypeError is the cause: a traceback, exit 1, as in one process), and
    nothing is written in RUN. Before, every rank raised a WorkFailed, whose line (exit 4) says a
    re-run is the fix, for a failure that a re-run meets again."""
    from tests.train.agreement_worker import INJECTED

    out, errors, causes = disagreement
    rank, _, bug = INJECTED["loop-prepare-bug"]
    expected = f"RankError: rank {rank} ({socket.gethostname()}) of this run could not prepare RUN: TypeError: {bug}"
    assert errors["loop-prepare-bug"] == [expected] * 2, errors["loop-prepare-bug"]
    assert causes["loop-prepare-bug"] == ["TypeError", None]
    assert not (out / "loop-prepare-bug").exists()


def test_a_full_disk_rank_0_meets_as_it_prepares_run_reads_on_every_rank_as_in_one_process(disagreement):
    """Rank 0's disk is full as it prepares RUN (MOCK: the worker's `INJECTED`): every rank raises
    a DiskFull with the line a full disk reads in one process (`megadocs train` prints it as one
    line, exit 4: `megadocs.errors.disk_full_message`), on rank 0 its OSError the cause. Before,
    every rank read ``rank 0 (host) of this run could not prepare RUN: OSError: [Errno 28] ...``."""
    from megadocs.errors import disk_full_message
    from tests.train.agreement_worker import INJECTED

    out, errors, causes = disagreement
    assert errors["loop-prepare-full"] == [f"DiskFull: {disk_full_message(INJECTED['loop-prepare-full'][2])}"] * 2, \
        errors["loop-prepare-full"]
    assert causes["loop-prepare-full"] == ["OSError", None]
    assert not (out / "loop-prepare-full").exists()


def test_a_sweep_job_whose_rank_opened_other_data_fails_on_every_rank(disagreement):
    out, errors, _ = disagreement
    for scenario in ("job", "job-missing"):
        first, second = errors[scenario]
        assert first == second and first is not None, (scenario, errors[scenario])
    assert sorted(_views(errors["job"][0])) == ["rank 0", "rank 1"], errors["job"]
    assert errors["job-missing"][0].startswith(f"rank 1 ({socket.gethostname()}) of this run could not open its data: data.store: ")
    # both ranks opened the same other data: the controller's identity is not theirs, on both
    renamed = errors["job-renamed"]
    assert renamed[0] == renamed[1] and "the sweep named this run " in renamed[0] and "nothing was trained" in renamed[0]
    for scenario in ("job", "job-renamed", "job-missing"):
        written = sorted(path.name for path in (out / scenario).iterdir())
        assert written == sorted([RunDir.JOB, RunDir.LOCK]), (scenario, written)  # rank 0's, before it trains


def test_a_sweep_job_of_a_finished_run_returns_its_metrics_on_every_rank(disagreement):
    """Rank 0 finds metrics.json under the run's lock; it joins the other ranks in `run` (which
    returns the metrics once they agree) instead of returning alone and leaving them waiting."""
    assert disagreement[1]["job-done"] == [None, None]


@pytest.mark.parametrize(("scenario", "views", "kept"), [
    ("loop-folder", ("not finished, no checkpoint", "finished"), None),
    ("loop-checkpoint", ("not finished, checkpoint at step {step} (save {0})", "not finished, no checkpoint"),
     ["checkpoint"]),
    ("loop-checkpoints", ("not finished, checkpoint at step {step} (save {0})",
                          "not finished, checkpoint at step {step} (save {1})"), ["checkpoint"]),
], ids=["finished-on-rank-1", "checkpoint-on-rank-0", "other-saves-at-one-step"])  # fmt: skip
def test_ranks_that_see_different_run_folders_all_refuse_in_one_line_naming_both(disagreement, scenario, views, kept):
    """RUN is relative (or node-local): rank 1 sees a finished run there, rank 0 an empty folder;
    or, only rank 0 writing, a preempted run's checkpoint is in rank 0's RUN alone; or each rank's
    RUN holds a checkpoint of the run at the same step, of another save (other states). Every rank
    refuses with the same line naming both ranks, their hosts, the folders they see and what they
    see there (the checkpoint's step), and rank 0 writes nothing. Before, rank 1 returned the
    finished run's metrics and left rank 0 training alone (its next collective failed: "Connection
    closed by peer"); and rank 0 resumed from the checkpoint while rank 1 started at step 0, so
    that they ran different numbers of steps (or, here, failed in their next collective); and ranks
    whose checkpoints held other states at the same step resumed each from its own."""
    from tests.train.agreement_worker import CHECKPOINT_STEP
    from train.checkpoint import saved_checkpoint

    out, errors, _ = disagreement
    first, second = errors[scenario]
    assert first == second and first is not None, errors[scenario]
    host = socket.gethostname()
    folders = [(out / "ranks" / f"{scenario}-{rank}" / "run").resolve() for rank in range(2)]
    saves = [getattr(saved_checkpoint(folder), "save_id", None) for folder in folders]
    seen = [view.format(*saves, step=CHECKPOINT_STEP) for view in views]
    assert first == (f"the ranks of this run see different RUN folders: rank 0 ({host}) sees {folders[0]} ({seen[0]}), "
                     f"rank 1 ({host}) sees {folders[1]} ({seen[1]}): RUN must be one folder that every node sees "
                     "alike (a shared file system, an absolute --out); nothing was trained"), first
    written = sorted(path.name for path in folders[0].iterdir()) if folders[0].exists() else None
    assert written == kept  # rank 0 wrote nothing in RUN (None: not even the folder)


def test_megadocs_train_rank_that_cannot_open_its_store_stops_every_rank_in_one_line(config, tmp_path):
    """`megadocs train` opens the stores to name RUN before it joins the others; a rank whose
    ``data.store`` is not there (a node-local path) goes on to the rendezvous, where every rank
    stops with its line, instead of exiting alone and leaving the others there for 30 minutes."""
    store = yaml.safe_load(config.read_text())["data"]["store"]
    port = str(_free_port())
    processes = []
    for rank in range(2):
        node = tmp_path / f"node{rank}"
        node.mkdir()
        if rank == 0:
            (node / "store").symlink_to(store)
        processes.append(subprocess.Popen(
            _megadocs("train", str(config), "--set", "data.store=store", "--out", str(tmp_path / "run")),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=node,
            env=_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=port)))  # fmt: skip
    outputs = _outputs(processes, "a rank that could not open its store left the other waiting (killed after 240 s)")
    assert [p.returncode for p in processes] == [Exit.BAD_INPUT] * 2, [err[-2000:] for _, err in outputs]
    lines = [err.strip().splitlines()[-1] for _, err in outputs]
    assert lines[0] == lines[1] and f"rank 1 ({socket.gethostname()}) of this run could not open its data: " \
        "data.store" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_run_folder_rank_0_refuses_as_it_prepares_it_stops_every_rank_with_its_line(config, tmp_path):
    """RUN is under a file: rank 0, which alone creates it, refuses it as it prepares RUN; the others,
    which only read it, find nothing there to refuse. Every rank stops with rank 0's line (exit 2),
    where rank 0 stopped alone and rank 1 went on to its first collective (gloo: "Connection closed
    by peer"; NCCL: its timeout, unless the launcher ended it). RUN is the default one, under
    ./runs (a file here): an --out typed is refused as it is read, by every rank alike
    (megadocs.cli.Destination, tests/megadocs/test_cli.py)."""
    (tmp_path / "runs").write_text("not a folder")
    port = str(_free_port())
    processes = [subprocess.Popen(_megadocs("train", str(config)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=tmp_path,
                                  env=_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port))  # fmt: skip
                 for rank in range(2)]
    outputs = _outputs(processes, "a rank 0 that refused RUN left the other waiting (killed after 240 s)")
    lines = [err.strip().splitlines()[-1] for _, err in outputs]
    assert lines[0] == lines[1], [err[-2000:] for _, err in outputs]
    assert re.fullmatch(r"error: runs/train/\w+: not a directory \(it or a folder above it is a file\), so it cannot "
                        r"hold the run; use another --out", lines[0]), lines


def test_a_sweep_job_whose_rank_fails_alone_after_the_agreement_ends_with_that_rank_named(config, tmp_path):
    """Rank 1 of a 2-task sweep job meets a UserError alone once the ranks agreed on their data
    (MOCK: `tests.train.one_rank_error_worker`). It exits with the error instead of returning an
    invalid result and exiting 0, so the launcher (here torchrun; srun's --kill-on-bad-exit on
    SLURM) ends the job and names rank 1 as its first failure, with the error's line; before,
    rank 1 exited 0 and rank 0 was left in its next collective (gloo: "Connection closed by
    peer", the failure torchrun then named; NCCL: its timeout)."""
    from tests.train.one_rank_error_worker import MOCK_LINE

    returncode, out, err = _torchrun("tests.train.one_rank_error_worker", "rank1", str(config), str(tmp_path / "run"),
                                     hung="a rank that failed alone left the other waiting")
    assert returncode != 0, (out, err[-3000:])
    assert f"UserError: {MOCK_LINE}" in err, err[-3000:]
    root_cause = err.split("Root Cause (first observed failure):")[1]
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)", root_cause), err[-3000:]
    assert '"rank": 1' not in out  # it returned no result


def test_a_w_and_b_setting_rank_0_refuses_is_every_ranks_invalid_run(config, tmp_path, monkeypatch):
    """Only rank 0 opens the trackers: W&B online with no credentials is refused there, and its line
    is every rank's invalid result (exit 0), as with one task, instead of rank 0's alone."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    env = {"NETRC": str(tmp_path / "no-netrc"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    returncode, out, err = _torchrun("tests.train.one_rank_error_worker", "wandb", str(config), str(tmp_path / "run"),
                                     hung="a rank 0 that refused W&B left the other waiting", env=env)
    assert returncode == 0, err[-3000:]
    errors = {result["rank"]: result["error"] for result in map(json.loads, out.strip().splitlines())}
    assert sorted(errors) == [0, 1] and errors[0] == errors[1], errors
    assert errors[0].startswith("tracking.wandb: ") and "wandb login" in errors[0], errors


@pytest.mark.skipif(torch.cuda.is_available(), reason="rank 1's `device: cuda` must be refused: no CUDA here")
def test_a_rank_whose_device_is_refused_before_the_rendezvous_stops_every_rank_at_once():
    """Rank 1 cannot set up its device (`device: cuda` where it sees none) before the rendezvous:
    every rank stops at once with the same line naming rank 1 and its host, where rank 0 had waited
    in the rendezvous for it (torch's default: 30 minutes) until the launcher ended it."""
    port = str(_free_port())
    processes = [
        subprocess.Popen([sys.executable, "-m", "tests.train.rendezvous_worker", device], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
                         env=_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                                  MASTER_PORT=port))
        for rank, device in enumerate(["cpu", "cuda"])
    ]  # fmt: skip
    try:  # a guard against the hang, not a timing: each rank needs only its imports
        outputs = [p.communicate(timeout=90) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
            p.communicate()
        pytest.fail("a rank whose device was refused left the other waiting in the rendezvous (killed after 90 s)")
    assert [p.returncode for p in processes] == [0, 0], [err[-3000:] for _, err in outputs]
    results = [json.loads(out) for out, _ in outputs]
    assert results[0]["line"] == results[1]["line"], results
    assert [result["error"] for result in results] == ["EveryRankError"] * 2, results
    assert results[0]["line"] == (f"rank 1 ({socket.gethostname()}) of this run could not set up its device: device: "
                                  "'cuda' requested but torch sees no CUDA device (use auto or cpu)"), results


@pytest.mark.parametrize(("rank", "agent"), [(0, False), (1, False), (0, True)], ids=["rank0", "rank1", "rank0-agent"])
def test_a_rank_that_never_joins_the_rendezvous_stops_the_others_after_its_timeout(rank, agent, monkeypatch):
    """The other rank never starts (its node died): this one (rank 0 serving the rendezvous, or
    rank 1 trying to reach it) stops after `RENDEZVOUS_TIMEOUT_S` with a line saying so, a failure
    to retry, instead of torch's default 30 minutes (here shortened to 1 s). Where the store is
    served as torchrun's agent serves it (`agent`: the test's, on a port it bound), rank 0 reaches
    it and its line names rank 1 as the one that never joined."""
    import train.distributed
    from megadocs.errors import WorkFailed

    server = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False) if agent else None
    monkeypatch.setattr(train.distributed, "RENDEZVOUS_TIMEOUT_S", 1.0)
    for name, value in {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(server.port if agent else _free_port()),
                        **({"TORCHELASTIC_USE_AGENT_STORE": "True"} if agent else {})}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    late = ("rank 1 of this run's 2 never joined" if agent else "not every rank of this run's 2 joined")
    with pytest.raises(WorkFailed, match=rf"^rank {rank} \(.*\): {late} its rendezvous at 127\.0\.0\.1:\d+ within 1 s"):
        train.distributed.init_distributed("cpu")
    assert not torch.distributed.is_initialized()


def test_a_rank_that_dies_after_joining_the_rendezvous_is_named_as_such_by_rank_0(monkeypatch):
    """Rank 1 says it joined, then dies as it waits for rank 0 (MOCK: `tests.train.rendezvous_worker`'s
    ``die-after-join``). Rank 0, which waits until every rank read the others' device setup, stops
    after `RENDEZVOUS_TIMEOUT_S` (here 1 s) with a line naming rank 1 as joined and not read, where
    it said "not every rank joined". The store is served as torchrun's agent serves it (the test's,
    on a port it bound), so rank 1 can join and die before rank 0 starts waiting."""
    import train.distributed
    from megadocs.errors import WorkFailed
    from tests.train.rendezvous_worker import DIED

    server = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(server.port),
           "TORCHELASTIC_USE_AGENT_STORE": "True"}
    dying = subprocess.run([sys.executable, "-m", "tests.train.rendezvous_worker", "cpu", "die-after-join"],
                           env=_env(RANK="1", LOCAL_RANK="1", **env), capture_output=True, text=True, timeout=90,
                           cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert (dying.returncode, dying.stdout) == (DIED, ""), dying.stderr[-3000:]
    monkeypatch.setattr(train.distributed, "RENDEZVOUS_TIMEOUT_S", 1.0)
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(WorkFailed, match=rf"^rank 0 \({re.escape(socket.gethostname())}\): rank 1 of this run's 2 joined "
                                         rf"its rendezvous at 127\.0\.0\.1:{server.port} but did not read the others' "
                                         r"device setup within 1 s \(died since, probably: see the logs\): "):
        train.distributed.init_distributed("cpu")
    assert not torch.distributed.is_initialized()


def test_each_rank_reads_every_ranks_device_setup_in_one_request_to_the_rendezvous_store(monkeypatch):
    """Rank 0 of 3 joins a rendezvous where ranks 1 and 2 already said they joined and read (the
    store served as torchrun's agent serves it, by the test): it reads the three ranks' device
    setups in one request (``multi_get``), where it sent one ``get`` a rank (N² requests at the
    store for N ranks: 262,144 at 512)."""
    import dataclasses

    import train.distributed
    from train.distributed import _JOINED, _Opened

    server = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    for rank in (1, 2):
        server.set(f"{_JOINED}/0/{rank}", json.dumps(dataclasses.asdict(_Opened.of(None))))
        server.set(f"{_JOINED}/0/{rank}/read", "")
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(server.port),
                        "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)

    class CountingStore:  # MOCK: the rendezvous's store as it is, counting the reads it is asked for
        def __init__(self, store):
            self.store, self.reads = store, []

        def get(self, key):
            self.reads.append("get")
            return self.store.get(key)

        def multi_get(self, keys):
            self.reads.append("multi_get")
            return self.store.multi_get(keys)

        def __getattr__(self, name):
            return getattr(self.store, name)

    rendezvous, counting = torch.distributed.rendezvous, []

    def counted(*args, **kwargs):
        for store, rank, world_size in rendezvous(*args, **kwargs):
            counting.append(CountingStore(store))
            yield counting[-1], rank, world_size

    monkeypatch.setattr(torch.distributed, "rendezvous", counted)
    train.distributed._join(0, 3, None, "gloo")
    assert counting[0].reads == ["multi_get"]


@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_past_the_rendezvous_the_store_keeps_the_timeout_torch_gives_the_backend(backend, monkeypatch):
    """The store `_join` returns for the process group keeps the timeout `init_process_group` gives
    the backend (NCCL's 10 minutes, gloo's 30), as when torch's rendezvous made it; since `_join`
    made it, every store had 30 minutes past the rendezvous, also NCCL runs'. One rank: its own store."""
    from datetime import timedelta

    from torch.distributed import distributed_c10d

    import train.distributed

    if distributed_c10d.default_pg_nccl_timeout is None:  # MOCK: NCCL's default, which a torch without NCCL lacks
        monkeypatch.setattr(distributed_c10d, "default_pg_nccl_timeout", timedelta(minutes=10))
    expected = {"gloo": distributed_c10d.default_pg_timeout, "nccl": distributed_c10d.default_pg_nccl_timeout}[backend]
    assert train.distributed._collective_timeout(backend) == distributed_c10d._get_default_timeout(backend) == expected
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(name, value)
    store = train.distributed._join(0, 1, None, backend)
    assert store.timeout == expected


@pytest.mark.parametrize(("address", "port"), [*(("127.0.0.1", port) for port in ("http", "29500.0", "70000", "0", "-1", None)),
                                               (None, "http")])  # fmt: skip
def test_a_master_port_that_is_no_port_is_refused_in_one_line_naming_it(address, port, monkeypatch):
    """Refused before the rendezvous, in one line: torch's ValueError traceback before (submitit's,
    without MASTER_ADDR). Unset, it is refused where MASTER_ADDR is set (else submitit sets both)."""
    import train.distributed
    from megadocs.errors import UserError

    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": address,
                        "MASTER_PORT": port}.items():  # fmt: skip
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    shown = "is not set" if port is None else f"is {port!r}"
    with pytest.raises(UserError, match=rf"^distributed run: MASTER_PORT {re.escape(shown)}: expected the TCP port "
                                        "of the run's rendezvous, an integer from 1 to 65535"):
        train.distributed.init_distributed("cpu")
    assert not torch.distributed.is_initialized()
