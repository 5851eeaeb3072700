"""`train.gpu_results`: which GPU's measured MFU a plan assumes when the device check's file holds
several (``--gpu``, else the slowest), on small synthetic files."""

from __future__ import annotations

import json

import pytest

from megadocs.errors import UserError
from train.gpu_results import PAPER_SHAPE, measured_utilisation
from train.plan import default_utilisation

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def write_gpu_results(path, shipped: dict[str | None, float], *, device: str = H100, shape=PAPER_SHAPE):
    """A device check's file measured on `device` whose shipped row on each GPU (None: the file's
    own, rows written before they named theirs) has the MFU given, next to a faster row that is
    not shipped (what plans must never take)."""
    preset, context = shape
    base = {"preset": preset, "context": context, "micro_batch": 32, "compile": "regional", "loss": "chunked_compiled",
            "tokens_per_s": 1.0, "flops_per_token": 1.0, "peak_tflops": 989.0, "peak_mem_gb": 1.0}  # fmt: skip
    rows = [row for gpu, mfu in shipped.items()
            for row in ({**base, "device": gpu, "mfu": mfu, "shipped": True},
                        {**base, "device": gpu, "mfu": mfu + 0.2, "shipped": False})]  # fmt: skip
    path.write_text(json.dumps({"device": device, "torch": "2.11.0", "cuda": "13.0", "date": "2026-12-05",
                                "train": rows, "checks": []}))  # fmt: skip
    return path


def test_one_gpu_measured_gives_the_source_it_always_gave(tmp_path):
    path = write_gpu_results(tmp_path / "gpu.json", {None: 0.441})
    utilisation = measured_utilisation(path)
    assert (utilisation.mfu, utilisation.peak_tflops, utilisation.device) == (0.441, 989.0, H100)
    assert utilisation.source == f"measured on {H100} (300m, context 4096, micro-batch 32; {path}, 2026-12-05)"


def test_the_source_names_when_its_row_was_measured_not_when_the_file_was_last_written(tmp_path):
    """A file merged from several device checks has the date of its last part: a plan resting on an
    older part's row quotes that row's date."""
    path = write_gpu_results(tmp_path / "gpu.json", {H200: 0.40, None: 0.45})
    results = json.loads(path.read_text())
    for row in results["train"]:
        row["date"] = "2026-12-04 18:53 UTC" if row["device"] == H200 else "2026-12-05 19:51 UTC"
    path.write_text(json.dumps(results))
    assert measured_utilisation(path).source.startswith(
        f"measured on {H200} (300m, context 4096, micro-batch 32; {path}, 2026-12-04 18:53 UTC)")
    assert "2026-12-05 19:51 UTC" in measured_utilisation(path, gpu="H100").source


@pytest.mark.parametrize(("h100", "h200"), [(0.441, 0.52), (0.48, 0.43)])
def test_without_gpu_the_slowest_measured_is_planned_and_the_others_named(tmp_path, h100, h200):
    path = write_gpu_results(tmp_path / "gpu.json", {H200: h200, None: h100})
    utilisation = measured_utilisation(path)
    lowest, other, other_mfu = (H100, H200, h200) if h100 < h200 else (H200, H100, h100)
    assert (utilisation.mfu, utilisation.device) == (min(h100, h200), lowest)
    assert utilisation.source.startswith(f"measured on {lowest} (300m, context 4096")
    assert f"also {other} MFU {other_mfu:.3f}" in utilisation.source and "--gpu picks one" in utilisation.source


def test_without_gpu_the_slowest_is_mfu_times_peak_not_mfu_alone(tmp_path):
    """A GPU of lower MFU but a higher peak can be the faster: the plan takes the fewer TFLOP/s
    achieved (the more GPU-hours)."""
    path = write_gpu_results(tmp_path / "gpu.json", {H200: 0.40, None: 0.45})
    rows = json.loads(path.read_text())
    for row in rows["train"]:
        row["peak_tflops"] = 1979.0 if row["device"] == H200 else 989.0
    path.write_text(json.dumps(rows))
    utilisation = measured_utilisation(path)
    assert (utilisation.mfu, utilisation.peak_tflops, utilisation.device) == (0.45, 989.0, H100)


def test_gpu_picks_each_measured_gpu_by_a_part_of_its_name(tmp_path):
    path = write_gpu_results(tmp_path / "gpu.json", {H200: 0.52, None: 0.441})
    for text, device, mfu in (("h100", H100, 0.441), ("H200", H200, 0.52), ("nvidia h200", H200, 0.52)):
        utilisation = measured_utilisation(path, gpu=text)
        assert (utilisation.mfu, utilisation.device) == (mfu, device)
        assert utilisation.source == f"measured on {device} (300m, context 4096, micro-batch 32; {path}, 2026-12-05)"


def test_a_gpu_named_in_full_is_picked_when_another_name_contains_it(tmp_path):
    path = write_gpu_results(tmp_path / "gpu.json", {"NVIDIA H100": 0.40, None: 0.441})
    assert measured_utilisation(path, gpu="nvidia h100").device == "NVIDIA H100"
    assert measured_utilisation(path, gpu="hbm3").device == H100


def test_a_gpu_measured_only_at_another_shape_is_not_compared(tmp_path):
    """The slowest GPU is taken among those measured at the paper's shape: a toy shape's MFU is no
    GPU's at 300m."""
    path = write_gpu_results(tmp_path / "gpu.json", {None: 0.441})
    toy = write_gpu_results(tmp_path / "toy.json", {H200: 0.05}, shape=("tiny-1m", 256))
    rows = json.loads(path.read_text())
    rows["train"] += json.loads(toy.read_text())["train"]
    path.write_text(json.dumps(rows))
    utilisation = measured_utilisation(path)
    assert (utilisation.mfu, utilisation.device) == (0.441, H100) and "also" not in utilisation.source
    assert measured_utilisation(path, gpu="h200").mfu == 0.05  # asked for: that GPU's only shipped shape


@pytest.mark.parametrize(("text", "expected"), [
    ("a100", f"--gpu a100: no GPU measured in {{path}} matches (measured: {H200}, {H100})"),
    ("NVIDIA", f"--gpu NVIDIA: matches several GPUs measured in {{path}} ({H200}, {H100}); give more of one's name"),
    ("h200", f"--gpu h200: {H200} has no measurement of what runs now (no shipped row in {{path}}); "
             "run benchmarks/gpu_check.py on it, or give --mfu and --peak-tflops"),
])  # fmt: skip
def test_an_unknown_or_ambiguous_gpu_is_refused_in_one_line(tmp_path, text, expected):
    path = write_gpu_results(tmp_path / "gpu.json", {H200: 0.52, None: 0.441})
    if text == "h200":  # measured, but not what runs now
        raw = json.loads(path.read_text())
        raw["train"] = [{**row, "shipped": False} if row["device"] == H200 else row for row in raw["train"]]
        path.write_text(json.dumps(raw))
    with pytest.raises(UserError) as caught:
        measured_utilisation(path, gpu=text)
    assert str(caught.value) == expected.format(path=path)


def test_gpu_without_results_is_refused_and_the_given_figures_keep_their_source(tmp_path):
    with pytest.raises(UserError, match=r"^--gpu h100: no device check results \(.*absent\); give --mfu"):
        default_utilisation(0.5, 100.0, tmp_path / "absent.json", gpu="h100")
    path = write_gpu_results(tmp_path / "gpu.json", {H200: 0.52, None: 0.441})
    peak_only = default_utilisation(0.3, None, path, gpu="h200")  # the peak is the H200's
    assert (peak_only.mfu, peak_only.source, peak_only.device) == (0.3, f"given (--mfu); peak of {H200}", H200)
    given = default_utilisation(0.3, 312.0, path, gpu="h200")  # nothing measured is used
    assert (given.mfu, given.peak_tflops, given.device) == (0.3, 312.0, None)
    assert default_utilisation(None, None, tmp_path / "absent.json").device is None  # assumed
