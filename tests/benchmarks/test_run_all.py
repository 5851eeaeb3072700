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
