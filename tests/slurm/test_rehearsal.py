"""The sweep rehearsal's small variant (benchmarks/rehearsal.py --small) on the real cluster and a
real PostgreSQL server: part of the paper's sweep file through the real controller, every fault
injected, nothing lost, nothing run twice, the certificates of a fault-free rehearsal, every
figure its part of the sweep supports. About 3 minutes (the hung job's time limit is one)."""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]


def test_small_rehearsal_survives_every_fault(slurm_cluster, tmp_path):
    from benchmarks.rehearsal import FAULT_KINDS, SMALL, Rehearsal
    from tests.postgres import REQUIRE_ENV, unavailable

    if unavailable():
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_ENV} is set but {unavailable()}")
        pytest.skip(unavailable())
    # the costs at 10,000 trials (five more commands on the finished sweep) are the benchmark's, not asserted here
    result = Rehearsal(SMALL, tmp_path / "rehearsal", log=print, measure_costs=False).run()

    assert {fault["kind"] for fault in result["faults"]} == set(FAULT_KINDS)
    for fault in result["faults"]:
        if "reason" in fault["detail"]:  # not root: no tmpfs (disk_full), no scontrol update (node_down)
            assert fault["kind"] in ("disk_full", "node_down") and os.geteuid() != 0, fault
            continue
        assert fault["injected"] and fault["survived"], fault
    assert result["trials_run_twice"] == 0, result["run_twice_detail"]
    assert result["lost"] == [] and result["wrong_losses"] == [] and result["controller_crashes"] == []
    assert result["certificates_equal_fault_free"], result["certificate_differences"]
    assert result["certifications"] == result["certifications_total"] == len(SMALL.certifications)
    assert result["retries"] >= 3  # OOM kill, scancel of a queued job, hang (disk full: more)
    injected = {fault["kind"] for fault in result["faults"] if fault["injected"]}
    assert result["requeues"] >= ("node_down" in injected)  # SLURM requeues the node's jobs itself
    assert {"fig1-loss-vs-g-iid.png", "fig6-transfers.png", "fig7-ensembles-iid.png",
            "fig11-certified-hparams.png"} <= set(result["figures"])
