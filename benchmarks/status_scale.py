"""``megadocs search status`` and a controller's start (its restore) at thousands of runs.

The paper's sweep is thousands of runs; a researcher runs ``search status`` many times a day, and
every ``certify`` starts by reading the whole ledger back. Both are measured on finished sweeps
of about 1,000, 3,000 and 10,000 trials, in an SQLite ledger and in a throwaway PostgreSQL
server (``tests.postgres.ThrowawayPostgres``), with this checkout's code and with a baseline
checkout's (``--baseline``, default :data:`BASELINE`: main before the ledger snapshot), so the
before/after ratio comes from one run on one machine:

- ``status`` / ``status_json``: ``megadocs search status SWEEP`` (and ``--json``) as a
  subprocess: CPU seconds of the process (children included) and wall seconds. Both code
  versions' outputs are compared (``identical``, :func:`_agree`): the text view byte for byte, the
  certifications of ``--json`` field by field.
- ``restore``: a controller's start without its jobs: open the ledger, build the strategies
  (``search.controller.build_strategies``) and ``LedgerEvaluator.restore`` them, in a subprocess
  of this script (CPU and wall seconds of the process, Python start and imports included).

The PostgreSQL server's own CPU is not counted (it is another process, as in the rehearsal).

How the ledgers are built (fast, and as the controller writes them): the paper's sweep
(``search/examples/paper-300m.yaml``: 28 certifications, 4 ensembles of 8, 4 transfers) with the
rehearsal's surrogate objective (``search.rehearsal``) is certified by the real strategies
(``search.controller.build_strategies`` and ``search.strategies.drive``) and every run is written
through the real ``Ledger`` API (``new_run``, ``update`` with job id/folder/attempts,
``complete`` with metrics shaped like train's and a provenance record), into a scratch SQLite
ledger: about 340 finished trials and the studies' start/extension attributes. A sweep of N trials
is that sweep replicated (certifications ``NAME-rK`` with ``fixed.replica: K``, their own run
identities), each replica's trials copied into the target ledger one transaction per trial
(Optuna's ``create_new_trial`` with the scratch trial as template).

Usage: ``python benchmarks/status_scale.py [--sizes 1000,3000,10000] [--baseline REF]
[--backends sqlite,postgres]``. Takes several minutes (mostly building the ledgers). The last
stdout line is a JSON summary for ``benchmarks/run_all.py``; the figures also go to
``benchmarks/results/status_scale.json``, with a ``run`` record (:func:`run_context`: commit, date,
machine, load average at the start and the end: on a shared machine other work inflates every
figure, the ratios least).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from megadocs.formats import dumps_json  # standard JSON (no NaN/Infinity) for every figure written

REPO = Path(__file__).resolve().parents[1]

BASELINE = "1d977344a8126184304f7c6d7a80b16afc44e8ca"
"""main before one ``search status`` read each study once (the baseline of the ratio)."""
PAPER = REPO / "search" / "examples" / "paper-300m.yaml"
SIZES = (1000, 3000, 10000)
TARGET_STATUS_CPU_S = 5.0
"""The goal at 10,000 trials on PostgreSQL (CPU seconds of one ``search status``)."""
PACKAGES = ("megadocs", "search", "train", "gen", "analysis")
RESULTS = REPO / "benchmarks" / "results" / "status_scale.json"


# --- building the ledgers ------------------------------------------------------------------------


def base_sweep(out: Path, ledger: str, name: str = "bench") -> dict[str, Any]:
    """The paper's sweep as plain data with the rehearsal's surrogate objective, the in-process
    executor and this ledger."""
    from search.objective import module_source_hash
    from search.rehearsal import OBJECTIVE
    from search.sweep import load_sweep

    data = load_sweep(PAPER).model_dump(mode="json", by_alias=True, exclude_none=True)
    data.update(name=name, objective=OBJECTIVE, objective_version=module_source_hash(OBJECTIVE), ledger=ledger,
                out=str(out), executor={"kind": "debug", "max_parallel": 32, "max_retries": 2, "poll_s": 0.05})
    return data


def replica_name(name: str, replica: int) -> str:
    return name if replica == 0 else f"{name}-r{replica}"


def replicate(data: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """The sweep ``replicas`` times over: replica K's certifications, ensembles and transfers are
    named ``NAME-rK`` (K > 0), point at their own replica and fix ``replica: K``."""
    def fixed(values: Mapping[str, Any], k: int) -> dict[str, Any]:
        return dict(values) if k == 0 else {**values, "replica": k}

    certs, ensembles, transfers = [], [], []
    for k in range(replicas):
        for cert in data["certifications"]:
            certs.append({**cert, "name": replica_name(cert["name"], k), "fixed": fixed(cert.get("fixed", {}), k),
                          **({"warm_start": replica_name(cert["warm_start"], k)} if cert.get("warm_start") else {})})
        ensembles += [{**e, "name": replica_name(e["name"], k), "from": replica_name(e["from"], k)}
                      for e in data.get("ensembles", [])]
        transfers += [{**t, "name": replica_name(t["name"], k), "from": replica_name(t["from"], k),
                       "fixed": fixed(t["fixed"], k)} for t in data.get("transfers", [])]
    return {**data, "certifications": certs, "ensembles": ensembles, "transfers": transfers}


def train_like_metrics(surrogate: Mapping[str, Any], params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The surrogate's losses with the other fields a train run's ``metrics.json`` carries."""
    epochs = float(params.get("epochs", params.get("synthetic_epochs", 1)))
    steps = int(400 * epochs)
    return {**surrogate, "val_windows": {"iid": 1024, "iid_short": 1024, "iid_long": 1024},
            "val_windows_requested": 1024, "steps": steps,
            "windows": {"real_per_epoch": 48_828, "real_seen": int(48_828 * epochs), "synthetic_seen": 3 * steps},
            "mixing_fraction_realised": float(params.get("mix", 0.0)), "tokens_seen": steps * 64 * 4096,
            "wall_time_s": 3600.0 * epochs, "tokens_per_s": 72_817.0, "config_hash": run_id, "params": 302_000_000}


class RecordingEvaluator:
    """The strategies' requests as ledger trials, written as the controller writes them (one run
    per request, finished in the order submitted, ``max_parallel`` in flight)."""

    def __init__(self, sweep, ledger, tasks, objective, provenance: Mapping[str, Any]) -> None:
        from search.strategies import Evaluator

        Evaluator.register(type(self))
        self.sweep, self.ledger, self.tasks, self.objective = sweep, ledger, tasks, objective
        self.provenance = dict(provenance)
        self.flight: list[tuple[Any, int, Any]] = []
        self.jobs = 0

    def free_slots(self) -> int:
        return self.sweep.executor.max_parallel - len(self.flight)

    def tick(self, strategies) -> None:
        pass

    def finished(self, strategy) -> None:
        """The controller's own record of a strategy's stop (a virtual subclass inherits no hook:
        its method is called on this evaluator, which has the same ``ledger`` and ``tasks``)."""
        from search.controller import LedgerEvaluator

        LedgerEvaluator.finished(self, strategy)

    def submit(self, requests) -> None:
        from search.ledger import ATTR_ATTEMPTS, ATTR_JOB_FOLDER, ATTR_JOB_ID, ATTR_MEMBER

        for request in requests:
            info = self.tasks[request.task]
            params = info.params(request.point)
            run_id = self.objective.identity(params.merged())
            extra = {ATTR_MEMBER: params.repeat - info.seed_offset} if info.seed_offset is not None else {}
            trial_id = self.ledger.new_run(info.study, params=params, run_id=run_id,
                                           run_dir=str(self.sweep.out_dir / "runs" / run_id), grid=info.grid,
                                           extra=extra)
            self.jobs += 1
            job = {ATTR_JOB_ID: f"{4000 + self.jobs // 32}_{self.jobs % 32}",
                   ATTR_JOB_FOLDER: str(self.sweep.out_dir / "jobs"), ATTR_ATTEMPTS: 1}
            self.ledger.update(trial_id, **job)
            self.flight.append((request, trial_id, (params, run_id, job)))

    def wait(self):
        from megadocs.formats import RunMetrics
        from search.certificate import Outcome
        from search.ledger import ATTR_PROVENANCE
        from search.rehearsal import SURROGATE
        from search.strategies import Result

        request, trial_id, (params, run_id, job) = self.flight.pop(0)
        merged = params.merged()
        metrics = RunMetrics.parse(train_like_metrics(SURROGATE.metrics(merged), merged, run_id))
        self.ledger.complete(trial_id, metrics=metrics, **job, **{ATTR_PROVENANCE: self.provenance})
        return [Result(request.task, request.point, Outcome.finished(metrics.objective))]


def build_scratch(work: Path) -> tuple[str, dict[str, Any]]:
    """One replica of the sweep certified by the real strategies into a scratch SQLite ledger;
    returns its URL and the sweep's data."""
    from megadocs.provenance import collect
    from search.controller import build_strategies
    from search.ledger import Ledger
    from search.objective import make_objective
    from search.strategies import drive
    from search.sweep import Sweep

    url = f"sqlite:///{work / 'scratch.db'}"
    data = base_sweep(work / "scratch", url)
    sweep = Sweep.model_validate(data)
    ledger = Ledger(url, sweep.name)
    strategies, tasks = build_strategies(sweep, ledger)
    evaluator = RecordingEvaluator(sweep, ledger, tasks, make_objective(sweep), collect())
    drive(strategies, evaluator)
    return url, data


def copy_replicas(scratch_url: str, scratch_name: str, data: Mapping[str, Any], target_url: str,
                  replicas: int, *, as_repeats: bool = False) -> int:
    """Copy the scratch ledger's studies (sweep ``scratch_name``) into ``target_url`` as replicas
    0..``replicas``-1 of the sweep ``data`` (:func:`replicate`: names, ``fixed`` and run
    identities); returns the trials copied. ``as_repeats``: the same studies instead, every
    certification's trial run ``replicas`` times (repeat r > 0 with ``seed: r``, as
    ``noise: {repeats: N}`` records them): fewer, larger studies."""
    import copy

    import optuna

    from search.ledger import ATTR_FIXED, ATTR_POINT, ATTR_RUN_DIR, ATTR_RUN_ID, STUDY_FIXED
    from search.objective import make_objective
    from search.params import RunParams
    from search.storage import open_storage
    from search.sweep import Sweep

    source = open_storage(scratch_url, create=False)
    target = open_storage(target_url)
    sweep = Sweep.model_validate(data)
    objective = make_objective(sweep)
    copied = 0
    studies = [s for s in source.get_all_studies() if s.study_name.startswith(f"{scratch_name}/")]
    for k in range(1 if as_repeats else replicas):
        extra = {} if k == 0 else {"replica": k}
        for study in studies:
            repeats = replicas if as_repeats and study.user_attrs.get("kind") == "certify" else 1
            *kind, task = study.study_name[len(scratch_name) + 1:].split("/")
            study_id = target.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                               "/".join([sweep.name, *kind, replica_name(task, k)]))
            for key, value in study.user_attrs.items():
                if key == STUDY_FIXED:
                    value = {**value, **extra}
                elif key == "source":
                    value = replica_name(value, k)
                target.set_study_user_attr(study_id, key, value)
            trials = [t for t in source.get_all_trials(study._study_id, deepcopy=False) for _ in range(repeats)]
            for i, trial in enumerate(trials):
                template = copy.deepcopy(trial)
                attrs = template.user_attrs
                params = RunParams.split({**attrs[ATTR_POINT], **attrs[ATTR_FIXED]}, axes=attrs[ATTR_POINT])
                seed = {"seed": i % repeats} if i % repeats else {}
                merged = RunParams(point=params.point, fixed={**params.fixed, **extra}, seed=params.seed).merged()
                merged.update(seed)
                attrs[ATTR_FIXED] = {**attrs[ATTR_FIXED], **extra, **seed}
                attrs[ATTR_RUN_ID] = objective.identity(merged)
                attrs[ATTR_RUN_DIR] = str(sweep.out_dir / "runs" / attrs[ATTR_RUN_ID])
                target.create_new_trial(study_id, template_trial=template)
                copied += 1
    return copied


# --- measuring -----------------------------------------------------------------------------------


def baseline_tree(ref: str, work: Path) -> Path:
    """The packages at git ``ref`` in a folder (put first on PYTHONPATH to run that code)."""
    folder = work / f"baseline-{ref[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, *PACKAGES], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def timed(argv: list[str], *, code: Path, cwd: Path, stdout: Path | None = None) -> dict[str, float]:
    """CPU seconds (the process and its children) and wall seconds of one command run with the
    packages of ``code`` first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
    sink = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL
    try:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    finally:
        if stdout is not None:
            sink.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {process.stderr.read().decode()[-2000:]}")
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "wall_s": round(wall, 2)}


def restore_once(sweep_file: str) -> None:
    """A controller's start on ``sweep_file`` without its jobs (runs in a subprocess of this script)."""
    from megadocs.executors import make_executor
    from search.controller import LedgerEvaluator, build_strategies
    from search.ledger import Ledger
    from search.objective import make_objective
    from search.sweep import load_sweep

    sweep = load_sweep(sweep_file)
    ledger = Ledger(sweep.ledger_url, sweep.name)
    strategies, tasks = build_strategies(sweep, ledger)
    executor = make_executor(sweep.executor, sweep.out_dir / "jobs", name=f"megadocs-{sweep.name}")
    evaluator = LedgerEvaluator(sweep, ledger, executor, make_objective(sweep), tasks)
    evaluator.restore(strategies)
    assert not evaluator._inflight, "a finished sweep has nothing in flight"


def reads_once(sweep_file: str) -> None:
    """Where one read of the ledger goes (printed as JSON; this checkout's code only): CPU
    seconds of Optuna's own read of every study (``get_all_trials``, no copies, the garbage
    collector paused as the snapshot pauses it), then of
    :meth:`search.ledger.Ledger.snapshot` (that read and our records: ``RunRecord``,
    ``RunMetrics``), then of ``summarize`` on that snapshot."""
    from search.ledger import Ledger, _gc_paused
    from search.status import summarize
    from search.sweep import load_sweep

    sweep = load_sweep(sweep_file)
    ledger = Ledger(sweep.ledger_url, sweep.name, create=False)
    ids = [ledger.study_id(name) for name in ledger.study_names()]
    with _gc_paused():  # as the snapshot reads
        started = time.process_time()
        for study_id in ids:
            ledger.storage.get_all_trials(study_id, deepcopy=False)
        optuna_s = time.process_time() - started
    started = time.process_time()
    snapshot = ledger.snapshot()
    snapshot_s = time.process_time() - started
    started = time.process_time()
    summarize(sweep, snapshot=snapshot)
    summarize_s = time.process_time() - started
    print(dumps_json({"optuna_read_cpu_s": round(optuna_s, 2), "snapshot_cpu_s": round(snapshot_s, 2),
                      "summarize_cpu_s": round(summarize_s, 2), "studies": len(ids)}, indent=None))


def _agree(name: str, before: bytes, after: bytes) -> bool:
    """Whether the two versions say the same: the text view byte for byte; of ``--json``, the
    certifications (before 5f591e0 the whole output was their list; since, one object holding them
    beside ensembles, transfers and jobs, which older versions did not print), each with every
    field the older version printed equal (fields added since, such as a baseline's ``stop``, are
    additions, not changes)."""
    if name != "status_json":
        return before == after

    def certifications(output: bytes) -> list[dict[str, Any]]:
        document = json.loads(output)
        return document if isinstance(document, list) else document["certifications"]

    old, new = certifications(before), certifications(after)
    return len(old) == len(new) and all(o == {key: n.get(key) for key in o} and set(o) <= set(n)
                                        for o, n in zip(old, new))


def measure(sweep_file: Path, *, codes: Mapping[str, Path], work: Path, warm_up: bool = False) -> dict[str, Any]:
    """Every measurement on one ledger, for each code version; outputs compared (:func:`_agree`).
    ``warm_up``: run each version once untimed first (a fresh checkout compiles its bytecode)."""
    python = sys.executable
    for code in codes.values() if warm_up else ():
        timed([python, "-m", "megadocs.cli", "search", "status", str(sweep_file), "--json"], code=code, cwd=work)
    figures: dict[str, Any] = {}
    outputs: dict[str, dict[str, bytes]] = {}
    for version, code in codes.items():
        row: dict[str, Any] = {}
        outputs[version] = {}
        for name, extra in (("status", []), ("status_json", ["--json"])):
            out = work / f"{sweep_file.stem}-{version}-{name}.txt"
            row[name] = timed([python, "-m", "megadocs.cli", "search", "status", str(sweep_file), *extra],
                              code=code, cwd=work, stdout=out)
            outputs[version][name] = out.read_bytes()
        row["restore"] = timed([python, str(Path(__file__).resolve()), "--restore-once", str(sweep_file)],
                               code=code, cwd=work)
        figures[version] = row
    reads = subprocess.run([python, str(Path(__file__).resolve()), "--reads-once", str(sweep_file)], cwd=work,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True, text=True)
    figures["after"]["reads"] = json.loads(reads.stdout.strip().splitlines()[-1])
    versions = list(codes)
    if len(versions) == 2:
        before, after = versions
        figures["identical"] = all(_agree(name, outputs[before][name], outputs[after][name])
                                   for name in outputs[before])
        figures["ratio_cpu"] = {name: round(figures[after][name]["cpu_s"] / figures[before][name]["cpu_s"], 3)
                                for name in ("status", "status_json", "restore")}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="approximate trials per ledger")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the code to compare with ('' for none)")
    parser.add_argument("--as-repeats", action="store_true",
                        help="grow the paper's 36 studies (every certification point run N times, noise: "
                        "{repeats: N}) instead of replicating the sweep")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON")
    parser.add_argument("--work", default=None, help="keep the ledgers here (default: a temp folder)")
    parser.add_argument("--restore-once", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reads-once", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.restore_once:
        restore_once(args.restore_once)
        return 0
    if args.reads_once:
        reads_once(args.reads_once)
        return 0
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()
    run = run_context()
    sizes = [int(s) for s in args.sizes.split(",")]
    with ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        codes = {"after": REPO}
        if args.baseline:
            codes = {"before": baseline_tree(args.baseline, work), **codes}
        t0 = time.time()
        scratch_url, data = build_scratch(work)
        per_replica = sum(1 for _ in _trials(scratch_url, data["name"]))
        print(f"scratch: {per_replica} trials per replica in {time.time() - t0:.0f} s", flush=True)
        rows = []
        for backend in args.backends.split(","):
            for size in sizes:
                with ExitStack() as server:
                    url = f"sqlite:///{work / f'ledger-{size}.db'}"
                    if backend == "postgres":  # a server of its own per ledger, as a lab's would hold one sweep
                        url = server.enter_context(_postgres()).url
                    rows.append(_one_ledger(backend, size, url, scratch_url, data, per_replica,
                                            codes=codes, work=work, warm_up=not rows, as_repeats=args.as_repeats))
    summary = _summary(rows, time.time() - started)
    run["load_average_end"] = round(os.getloadavg()[0], 1)
    summary = {"commit": run["commit"], "load_average": f"{run['load_average_start']} -> {run['load_average_end']}",
               **summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(dumps_json({"run": run, "rows": rows, **summary}, indent=1) + "\n")
    print(dumps_json(summary, indent=None))
    return 0


def run_context() -> dict[str, Any]:
    """Where and when the figures were taken: the commit (``-dirty`` with uncommitted changes),
    the UTC start, the machine (``run_all.machine_description``) and the 1-minute load average
    (other work on a shared machine inflates CPU seconds too: caches and frequency are shared)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_all import machine_description

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()

    dirty = "-dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    return {"commit": git("rev-parse", "--short=7", "HEAD") + dirty,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_description(),
            "load_average_start": round(os.getloadavg()[0], 1)}


def _postgres():
    """A throwaway PostgreSQL server (tests/postgres.py; imported from the checkout when run as a
    script: the measured subprocesses never see this path)."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    from tests.postgres import ThrowawayPostgres

    return ThrowawayPostgres()


def _one_ledger(backend: str, size: int, url: str, scratch_url: str, data: Mapping[str, Any],
                per_replica: int, *, codes: Mapping[str, Path], work: Path, warm_up: bool,
                as_repeats: bool = False) -> dict[str, Any]:
    """Build the ledger of about ``size`` trials in ``url`` and measure on it."""
    replicas = max(1, round(size / per_replica))
    grown = {**data, "noise": {"repeats": replicas}} if as_repeats else replicate(data, replicas)
    sweep_data = {**grown, "ledger": url, "out": str(work / f"{backend}-{size}")}
    started = time.time()
    trials = copy_replicas(scratch_url, data["name"], sweep_data, url, replicas, as_repeats=as_repeats)
    build_s = time.time() - started
    sweep_file = work / f"{backend}-{size}.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep_data, sort_keys=False))
    row = {"backend": backend, "shape": "repeats" if as_repeats else "replicas", "trials": trials,
           "studies": len(sweep_data["certifications"]) + len(sweep_data["ensembles"]) + len(sweep_data["transfers"]),
           "certifications": len(sweep_data["certifications"]), "build_s": round(build_s, 1),
           **measure(sweep_file, codes=codes, work=work, warm_up=warm_up)}
    print(dumps_json(row, indent=None), flush=True)
    return row


def _trials(url: str, sweep: str):
    from search.storage import open_storage

    storage = open_storage(url, create=False)
    for study in storage.get_all_studies():
        if study.study_name.startswith(f"{sweep}/"):
            yield from storage.get_all_trials(study._study_id, deepcopy=False)


def _summary(rows: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    """The summary line: the largest PostgreSQL ledger's figures, and two tables (every command
    before/after; where one read of the ledger goes)."""
    commands, reads = [], []
    for row in rows:
        where = {"backend": row["backend"], "trials": row["trials"], "studies": row["studies"]}
        for name in ("status", "status_json", "restore"):
            entry = {**where, "command": name}
            for version in ("before", "after"):
                if version in row:
                    entry[f"cpu_s_{version}"] = row[version][name]["cpu_s"]
                    entry[f"wall_s_{version}"] = row[version][name]["wall_s"]
            if "ratio_cpu" in row:
                entry["cpu_ratio"] = row["ratio_cpu"][name]
            commands.append(entry)
        read = row["after"]["reads"]
        reads.append({**where, "optuna_read_cpu_s": read["optuna_read_cpu_s"], "snapshot_cpu_s": read["snapshot_cpu_s"],
                      "summarize_cpu_s": read["summarize_cpu_s"], "status_cpu_s": row["after"]["status"]["cpu_s"],
                      "optuna_share_of_status": round(read["optuna_read_cpu_s"] / row["after"]["status"]["cpu_s"], 2)})
    pick = [r for r in rows if r["backend"] == "postgres"] or rows
    top = max(pick, key=lambda r: r["trials"])
    figures = {f"{name}_cpu_s{suffix}": top[version][name]["cpu_s"]
               for name in ("status", "restore") for version, suffix in (("before", "_before"), ("after", ""))
               if version in top}
    status = top["after"]["status"]["cpu_s"]
    return {"name": "status_scale", "backend": top["backend"], "trials": top["trials"], "studies": top["studies"],
            **figures, "optuna_read_cpu_s": top["after"]["reads"]["optuna_read_cpu_s"],
            "ratio": top.get("ratio_cpu", {}).get("status"), "target": TARGET_STATUS_CPU_S,
            "meets_target": status <= TARGET_STATUS_CPU_S,
            "identical": all(r.get("identical", True) for r in rows), "seconds": round(elapsed, 1),
            "tables": {"search status and a controller's restore, CPU and wall seconds": commands,
                       "where one read goes (this checkout, CPU seconds)": reads}}


if __name__ == "__main__":
    sys.exit(main())
