"""`benchmarks/gpu_check.py`: the device check's CPU rehearsal, and what a hung section leaves.

The rehearsal runs every section of both parts at toy size on the CPU (`torch.compile`'s eager
backend), so that what fails on the GPU can only be CUDA-specific; its ``gpu.json`` has the schema
plans read (`train.gpu_results`) and never gives them an MFU.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.gpu_results import GpuResults, measured_utilisation

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _gpu_check():
    if "gpu_check" not in sys.modules:  # a script, not a package module: loaded once by path
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_section_and_writes_gpu_json(tmp_path):
    gpu_check = _gpu_check()
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--preset", "tiny-1m", "--context", "256",
                             "--part", "all", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    raw = json.loads((tmp_path / "gpu.json").read_text())
    results = GpuResults.model_validate(raw)
    assert results.device == "cpu" and raw["parts"] == ["all"]
    assert [section["name"] for section in raw["sections"]] == list(gpu_check.PARTS["all"])
    assert {section["status"] for section in raw["sections"]} == {"ok"}
    assert {(row.compile, row.determinism, row.shipped) for row in results.train} == {
        ("regional", "strict", True), ("regional", "off", False), ("whole", "warn_only", False)}
    for row in results.train:
        assert row.mfu == pytest.approx(row.tokens_per_s * row.flops_per_token / (row.peak_tflops * 1e12))
    failed = [check for check in results.checks if not check.passed and not check.skipped]
    assert not failed, failed
    names = " | ".join(check.name for check in results.checks)
    for expected in ("masked forward", "determinism strict", "resume: interrupted + resumed", "parallel fsdp",
                     "loss chunked_compiled equals full"):  # fmt: skip
        assert expected in names
    assert any(row["attention"] for row in raw["kernels"])  # which attention kernel ran is recorded
    assert measured_utilisation(tmp_path / "gpu.json") is None  # a CPU rehearsal never sets a plan's MFU
    lines = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert {line["section"] for line in lines} == set(gpu_check.PARTS["all"])
    print(f"rehearsal: {time.monotonic() - started:.0f} s wall")


def _emit_then_hang(ctx) -> None:
    ctx.emit("ceilings", device="cpu", matmul_tflops=1.0, copy_gbs=1.0, peak_tflops=1.0)
    time.sleep(600)


def test_a_hung_section_is_killed_at_its_limit_and_keeps_what_it_measured(tmp_path, monkeypatch):
    gpu_check = _gpu_check()
    monkeypatch.setitem(gpu_check.SECTIONS, "hangs", gpu_check.Section(_emit_then_hang, timeout_s=60, minimum_s=1))
    args = gpu_check.parse_args(["--device", "cpu", "--out", str(tmp_path)])
    ctx = gpu_check.Context(args=args, section="hangs", log=tmp_path / "log.jsonl", run_id="r")
    started = time.monotonic()
    # 10 s for the forked section to write its row on a loaded machine; killed far before its 600 s hang ends
    status, _ = gpu_check._run_section(ctx, limit_s=10)
    assert status == "timeout" and time.monotonic() - started < 300
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["kind"] for row in rows] == ["ceilings", "check"]  # the row written before the hang is kept
    assert rows[1]["passed"] is False and "timed out after 10 s" in rows[1]["detail"]


def test_a_non_finite_measurement_is_written_as_null(tmp_path):
    """A diverged loss or a zero-time division on a future GPU must not write ``NaN`` (not JSON)."""
    gpu_check = _gpu_check()
    args = gpu_check.parse_args(["--device", "cpu", "--out", str(tmp_path)])
    ctx = gpu_check.Context(args=args, section="train", log=tmp_path / "log.jsonl", run_id="r")
    ctx.emit("train", loss=float("nan"), mfu=float("inf"), steps=[1.0, float("-inf")])
    [row] = [json.loads(line, parse_constant=pytest.fail) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert (row["loss"], row["mfu"], row["steps"]) == (None, None, [1.0, None])


def _row(**fields) -> dict:
    base = {"preset": "300m", "context": 4096, "vocab": 128_256, "batch": 64, "micro_batch": 32, "compile": "regional",
            "tokens_per_s": 250_000.0, "flops_per_token": 1.66e9, "peak_tflops": 989.0, "mfu": 0.42,
            "peak_mem_gb": 55.0, "shipped": True}  # fmt: skip
    return {**base, **fields}


def test_assemble_judges_every_row_against_the_defaults_now_and_keeps_each_rows_device(tmp_path):
    """A merged file keeps rows measured under earlier defaults (Liger, SDPA: once `shipped`), each
    with its own GPU; plans read the row that matches what a run does now, and name its GPU."""
    gpu_check = _gpu_check()
    earlier = {"device": "NVIDIA H200", "torch": "2.11", "cuda": "13.0", "date": "2026-12-04", "parts": ["all"],
               "train": [_row(loss="liger", mfu=0.42)], "checks": [], "sections": []}  # fmt: skip
    meta = {"run": "r", "section": "ceilings", "kind": "meta", "device": "NVIDIA H100 80GB HBM3"}
    now = [_row(loss=loss, attention=attention, determinism=determinism, mfu=mfu, shipped=False,
                device="NVIDIA H100 80GB HBM3", run="r", section="train", kind="train")
           for loss, attention, determinism, mfu in (("liger", "sdpa", "strict", 0.391),
                                                     ("chunked_compiled", "flex", "strict", 0.441),
                                                     ("chunked_compiled", "sdpa", "off", 0.473))]  # fmt: skip
    results = gpu_check.assemble([meta, *now], part="all", sections=[], merge=earlier)
    flags = {(row.get("device"), row["loss"], row["attention"], row.get("determinism")): row["shipped"]
             for row in results["train"]}  # fmt: skip
    assert flags == {("NVIDIA H200", "liger", "sdpa", None): False,
                     ("NVIDIA H100 80GB HBM3", "liger", "sdpa", "strict"): False,
                     ("NVIDIA H100 80GB HBM3", "chunked_compiled", "flex", "strict"): True,
                     ("NVIDIA H100 80GB HBM3", "chunked_compiled", "sdpa", "off"): False}  # fmt: skip
    dates = {row["device"]: row["date"] for row in results["train"]}  # each row keeps when it was measured
    assert dates["NVIDIA H200"] == "2026-12-04" and dates["NVIDIA H100 80GB HBM3"] == results["date"] != "2026-12-04"
    (tmp_path / "gpu.json").write_text(json.dumps(results))
    utilisation = measured_utilisation(tmp_path / "gpu.json")
    assert utilisation.mfu == 0.441 and "measured on NVIDIA H100 80GB HBM3" in utilisation.source
