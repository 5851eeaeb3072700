"""`benchmarks/run_all.py` reads each benchmark's result as the last one-line JSON object of its
stdout: the contract every benchmark prints to, the rehearsal's summary included."""

from __future__ import annotations

import json

from benchmarks.rehearsal import summary_line
from benchmarks.run_all import last_json_object


def test_run_all_reads_the_last_one_line_json_object_of_stdout():
    stdout = '{"name": "early"}\nprogress 3/4\n{"name": "bench", "ratio": 0.97}\n[1, 2]\n{"cut": \ndone\n'
    assert last_json_object(stdout) == {"name": "bench", "ratio": 0.97}
    assert last_json_object(json.dumps({"name": "bench", "ratio": 0.97}, indent=2)) is None  # many lines: unread
    assert last_json_object("no result\n") is None


def test_the_rehearsal_prints_its_summary_as_one_json_line_run_all_reads():
    fault = {"kind": "hang", "injected": True, "survived": True,
             "detail": {"outcome": {"0123456789ab": {"ledger": "completed", "attempts": 2,
                                                      "slurm": ["5 TIMEOUT 0:0", "6 COMPLETED 0:0"]}}}}
    result = {"name": "rehearsal", "variant": "small", "trials": 40, "run_twice_detail": {}, "lost": [],
              "certificate_differences": {}, "figures": ["fig1-loss-vs-g-iid.png"], "faults": [fault]}
    line = summary_line(result)
    assert "\n" not in line
    read = last_json_object(f"[02:40:00] controller finished (exit 0)\n{line}\n")
    assert read == json.loads(line)
    assert {k: read[k] for k in ("name", "variant", "trials", "lost", "figures")} == {
        "name": "rehearsal", "variant": "small", "trials": 40, "lost": [], "figures": ["fig1-loss-vs-g-iid.png"]}
    assert not {"faults", "run_twice_detail", "certificate_differences"} & set(read)  # in the results file only
    assert read["tables"]["faults"] == [{"fault": "hang", "injected": True, "survived": True,
                                         "evidence": "01234567: completed, attempts 2, slurm 5 TIMEOUT 0:0, 6 COMPLETED 0:0"}]


def test_a_full_run_keeps_the_sections_it_does_not_run(tmp_path):
    """`make bench` (every benchmark) rewrote RESULTS.md from scratch: the device check's section
    (gpu_check, measured on a GPU and never run by run_all) was lost. Now only the sections run are
    replaced, in a full run as in `run_all.py NAME`."""
    from benchmarks.run_all import render, write_results

    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n- Date: old\n\n## gpu_check\n\nH100 MFU 0.441\n\n## train_throughput\n\nold\n")
    rows = [("train_throughput", {"name": "train_throughput", "ratio": 0.97}, 12.0, ""),
            ("data_scale", None, 3.0, "boom")]
    write_results(render(rows) + "\n", {name for name, *_ in rows}, path)
    text = path.read_text()
    assert "## gpu_check\n\nH100 MFU 0.441" in text  # kept
    assert "| ratio | 0.97 |" in text and "\nold\n" not in text  # replaced by the new run
    assert "## data_scale" in text and "Failed after 3 s: boom" in text
    fresh = tmp_path / "fresh.md"
    write_results(render(rows) + "\n", {name for name, *_ in rows}, fresh)  # no file yet: the run as rendered
    assert fresh.read_text() == render(rows) + "\n"


def test_a_failed_benchmark_keeps_the_figures_of_its_last_successful_run(tmp_path):
    """A benchmark that failed replaced its section with the failure line, and the figures its last
    run measured (on some machine, some date) were gone. Now the failure line sits above them, and a
    second failure keeps the same figures once, not a failure inside a failure."""
    from benchmarks.run_all import KEPT, render, write_results

    path = tmp_path / "RESULTS.md"
    measured = [("data_scale", {"name": "data_scale", "ratio": 1.02}, 40.0, "")]
    write_results(render(measured) + "\n", {"data_scale"}, path)
    failing = [("data_scale", None, 3.0, "boom")]
    for _second in (False, True):
        write_results(render(failing) + "\n", {"data_scale"}, path, failed=frozenset({"data_scale"}))
        section = path.read_text().split("## data_scale", 1)[1]
        assert "Failed after 3 s: boom" in section and section.count(KEPT) == 1
        failure, kept = section.split(KEPT)
        assert "| ratio | 1.02 |" in kept and "| runtime (s) | 40 |" in kept and "boom" not in kept
        assert section.count("- Date:") == 2  # the failure's date and the kept figures' date
    write_results(render(measured) + "\n", {"data_scale"}, path, failed=frozenset())
    assert KEPT not in path.read_text() and "boom" not in path.read_text()  # a success replaces both
    first_failure = tmp_path / "never.md"
    first_failure.write_text("# Benchmark results\n\n## data_scale\n\n- Date: old\n\nFailed after 9 s: x\n")
    write_results(render(failing) + "\n", {"data_scale"}, first_failure, failed=frozenset({"data_scale"}))
    assert KEPT not in first_failure.read_text()  # nothing measured to keep
