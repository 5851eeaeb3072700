"""The report's "Findings" paragraphs, from hand-built certifications frames (the analysis contract)."""

from __future__ import annotations

import math

import pandas as pd

from analysis.findings import findings
from analysis.frame import BOUNDS
from analysis.noise import noise_tolerance, pooled_noise
from search.grid import Bound, format_bounds
from search.status import warm_start_advice


def frame(rows, sd=0.01):
    """Certifications: (name, method, g, iid loss, bounds_hit); the bounds as the certifications
    frame holds them (``search.grid.Bound`` records, rendered into ``bounds_hit``)."""
    def bounds(text):
        return tuple(Bound(*label.split(" "), value=None) for label in text.split(", ") if label)

    return pd.DataFrame([
        {"certification": name, "method": method, "g": g, "certified": True, "loss": loss,
         "val_loss.iid": loss, BOUNDS: bounds(hit), "bounds_hit": format_bounds(bounds(hit)), "noise_sd": sd}
        for name, method, g, loss, hit in rows
    ])


BASE = ("real", "real", math.nan, 3.0, "")


def test_a_gain_beyond_noise_is_called_help_and_names_the_best_algorithm():
    cert = frame([BASE, ("simple-g1", "simple", 1, 2.99, ""), ("stitched-g1", "stitched", 1, 2.9, ""),
                  ("stitched-g2", "stitched", 2, 2.85, "mix upper")])
    text = "\n".join(findings(cert))
    assert text.startswith("**Synthetic data helps at this scale.**")
    assert "Best synthetic: stitched at G=2, 2.8500 (+0.1500 nats" in text
    assert "simple 2.9900 at G=1 (a tie within noise (1.0 noise sds))" in text
    assert "Best algorithm: stitched, ahead of simple by 0.1400 nats (clearly better" in text
    assert "No certificate sits on an lr or epochs bound" in text
    assert "mixing-fraction bound (stitched-g2)" in text
    assert "Tuned loss does not rise with G beyond seed noise (more than 0.0283 nats" in text
    single = "\n".join(findings(cert[cert["g"] != 2]))
    assert "One G per algorithm" in single and "does not rise" not in single


def test_gains_within_noise_are_a_tie_and_small_rises_are_not_failures():
    cert = frame([BASE, ("simple-g1", "simple", 1, 2.99, ""), ("simple-g2", "simple", 2, 3.01, "")], sd=0.02)
    text = "\n".join(findings(cert))
    assert "makes no difference beyond seed noise" in text
    assert "(1 rise(s) smaller than the noise threshold)" in text


def test_a_rise_beyond_noise_and_lr_epochs_corners_are_reported():
    cert = frame([BASE, ("latent-g1", "latent", 1, 3.2, "epochs upper"),
                  ("latent-g2", "latent", 2, 3.4, "lr lower, mix upper")], sd=0.01)
    text = "\n".join(findings(cert))
    assert text.startswith("**Synthetic data hurts at this scale.**")
    assert "rises with G beyond seed noise" in text and "probably did not converge" in text
    assert ("latent [iid]: tuned loss rose from G=1 (3.2000) to G=2 (3.4000), +0.2000 nats (20.0 noise sds); "
            f"{warm_start_advice('latent-g1', 'latent-g2', {})}.") in text
    assert "latent-g1 (epochs upper); latent-g2 (lr lower)" in text
    assert "Not certified yet" not in text
    cert.loc[2, "certified"] = False
    assert "Not certified yet (their loss is the best found so far, not an optimum): latent-g2." in findings(cert)


def test_without_repeats_nothing_is_called_clear():
    cert = frame([BASE, ("simple-g1", "simple", 1, 2.5, "")], sd=None)
    assert math.isnan(pooled_noise(cert)) and noise_tolerance(math.nan) == 0
    text = "\n".join(findings(cert))
    assert "cannot be told from single runs" in text and "not tested against noise" in text


def test_pooled_noise_is_the_rms_of_the_measured_sds():
    cert = frame([BASE, ("simple-g1", "simple", 1, 2.5, "")])
    cert.loc[0, "noise_sd"], cert.loc[1, "noise_sd"] = 0.03, 0.04
    assert math.isclose(pooled_noise(cert), math.sqrt((0.03**2 + 0.04**2) / 2))


def test_a_small_rise_without_a_noise_estimate_is_not_called_a_failure():
    """Issue 34: "Monotonicity check failed" for a 0.0066-nat rise and no noise estimate; and advice
    to set a warm_start the sweep already has."""
    cert = frame([BASE, ("simple-g1", "simple", 1, 2.9, ""), ("simple-g2", "simple", 2, 2.9066, "")], sd=None)
    cert["warm_start"] = [None, None, "simple-g1"]
    text = "\n".join(findings(cert))
    assert "the sweep has no noise estimate" in text and "cannot be told from seed noise" in text
    assert "+0.0066 nats (no noise estimate: it may be seed noise)" in text
    assert "simple-g2 already starts from simple-g1's certificate" in text and "`warm_start:" not in text
    assert "failed" not in text and "did not converge" not in text


def test_a_sweep_without_synthetic_certifications_still_gets_its_findings():
    cert = frame([("real", "real", math.nan, 3.0, "epochs upper, lr upper")], sd=None)
    text = "\n".join(findings(cert))
    assert "lacks a synthetic certification to compare with" in text
    assert "Certificates on an lr/epochs bound of the grid (grid corners, not optima): real (epochs upper, lr upper)" in text


def test_a_sweep_stopped_before_any_certificate_claims_no_interior_optimum():
    # A sweep stopped half way: best-so-far losses, nothing certified. It used to say "every
    # certified point is an interior optimum" of a ledger without a certified point.
    cert = frame([BASE, ("simple-g1", "simple", 1, 2.9, "")]).assign(certified=False)
    text = "\n".join(findings(cert))
    assert "Not certified yet" in text and "interior optimum" not in text


def test_a_frame_without_bounds_records_gets_its_findings_and_no_claim_about_bounds():
    """A frame built by hand or read back from `analysis export --table certifications` (which
    drops the ``bounds`` records) raised KeyError: 'bounds'; the Findings read it as
    generation_table does (its optional columns), and claim no interior optimum they cannot see."""
    cert = frame([BASE, ("simple-g1", "simple", 1, 2.95, ""), ("simple-g2", "simple", 2, 2.9, "")])
    for reduced in (cert.drop(columns=[BOUNDS]), cert[["method", "g", "loss"]]):
        text = "\n".join(findings(reduced))
        assert "Best synthetic: simple at G=2, 2.9000" in text
        assert "bound" not in text


def test_certifications_the_curves_merge_or_leave_out_are_still_named_in_the_findings(tmp_path):
    """The report's Findings read the curves (analysis.experiments.generation_curves), which make
    simple-g2-again one point with simple-g2 (one configuration; it is not certified yet, so left out
    beside it) and make simple-g2-t (another setting at G=2) the curve simple [temperature=0.5]: their
    pending and on-bound lines still name both, under their certifications' names."""
    from analysis.experiments import generation_curves
    from analysis.report import render_report

    cert = frame([BASE, ("simple-g1", "simple", 1, 2.95, ""), ("simple-g2", "simple", 2, 2.9, ""),
                  ("simple-g2-again", "simple", 2, 2.8, "lr upper"), ("simple-g2-t", "simple", 2, 2.85, "epochs upper")])
    cert["certified"] = [True, True, True, False, True]
    cert["setting"] = ["", "", "", "", "temperature=0.5"]
    curves = generation_curves(cert).set_index("certification")["method"].to_dict()
    assert curves == {"real": "real", "simple-g1": "simple", "simple-g2": "simple",
                      "simple-g2-t": "simple [temperature=0.5]"}
    expected = ["Not certified yet (their loss is the best found so far, not an optimum): simple-g2-again.",
                "Certificates on an lr/epochs bound of the grid (grid corners, not optima): simple-g2-again (lr upper); "
                "simple-g2-t (epochs upper)."]
    text = "\n".join(findings(generation_curves(cert), every=cert))
    assert all(line in text for line in expected)
    runs = pd.DataFrame({"certification": cert["certification"], "status": ["completed"] * 5, "loss": cert["loss"]})
    section = render_report(runs, cert, [], tmp_path).read_text().split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert all(line in section for line in expected)
