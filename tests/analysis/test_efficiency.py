"""Data efficiency: the paper's published ratios, the inverse law, fitted laws with intervals."""

from __future__ import annotations

import argparse
import functools

import numpy as np
import pytest

from analysis.efficiency import (
    DEFAULT_REFERENCE_LAW,
    STATED_CAVEAT,
    Basis,
    Evidence,
    ReferenceLaw,
    effective_data,
    efficiency,
    efficiency_basis,
    efficiency_ratio,
    evidence_range,
    load_reference_law,
    range_margin,
    ratio_of_losses,
)
from analysis.noise import noise_tolerance
from analysis.scaling import fit_power_law, power_law
from megadocs.cli import main
from megadocs.errors import UserError
from tests.analysis.synthetic import BASELINE_RUNS


def test_paper_ratios_from_alpha_and_asymptote():
    # paper.md: simple rephrasing 3.41 -> 1.48x, latent thoughts 3.344 -> about 1.80x vs 3.5544.
    assert efficiency_ratio(3.41, 3.5544, alpha=0.235, E=1.92) == pytest.approx(1.48, abs=0.005)
    assert efficiency_ratio(3.344, 3.5544, alpha=0.235, E=1.92) == pytest.approx(1.80, abs=0.01)
    assert efficiency_ratio(3.5544, 3.5544, alpha=0.235, E=1.92) == pytest.approx(1.0)


def test_shipped_reference_law_has_the_paper_constants_and_provenance():
    law = load_reference_law()
    assert (law.alpha, law.E) == (0.235, 1.92)
    assert "1.48" in law.provenance and DEFAULT_REFERENCE_LAW.is_file()
    assert efficiency(3.41, 3.5544, law).format() == "1.48x"


def test_effective_data_inverts_the_law():
    D = np.array([1e7, 1e8, 1e9])
    losses = power_law(D, 1.92, 400.0, 0.235)
    recovered = [effective_data(loss, alpha=0.235, E=1.92, A=400.0) for loss in losses]
    assert recovered == pytest.approx(D, rel=1e-9)


def test_losses_at_or_below_the_asymptote_are_refused():
    with pytest.raises(UserError, match="method loss 1.9 is not above the law's asymptote E=1.92"):
        efficiency_ratio(1.9, 3.5544, alpha=0.235, E=1.92)
    with pytest.raises(UserError, match="baseline loss"):
        efficiency_ratio(3.4, 1.92, alpha=0.235, E=1.92)


def test_reference_law_file_needs_provenance(tmp_path):
    path = tmp_path / "law.yaml"
    path.write_text("alpha: 0.3\nE: 2.0\nprovenance: ''\n")
    with pytest.raises(UserError, match="provenance"):
        load_reference_law(path)
    path.write_text("alpha: -1\nE: 2.0\nprovenance: mine\n")
    with pytest.raises(UserError, match="alpha"):
        load_reference_law(path)


def test_fitted_law_from_baseline_runs_gives_a_ratio_with_an_interval():
    rng = np.random.default_rng(0)
    D = np.array([25e6, 50e6, 100e6, 200e6, 400e6, 800e6])
    losses = power_law(D, 1.92, 150.0, 0.235) * np.exp(rng.normal(0, 0.002, len(D)))
    law = fit_power_law(D, losses, n_boot=300)
    truth = efficiency_ratio(3.41, 3.5544, alpha=0.235, E=1.92)
    result = efficiency(3.41, 3.5544, law)
    assert result.interval is not None
    assert result.interval[0] < truth < result.interval[1]
    assert result.interval[0] < result.ratio < result.interval[1]
    assert result.effective_tokens == pytest.approx(effective_data(3.41, alpha=law.alpha, E=law.E, A=law.A))


def test_refits_whose_asymptote_is_above_the_loss_leave_no_finite_upper_bound():
    """A refit whose E lies at or above the method's loss says no amount of real data reaches it (an
    infinite efficiency); the interval dropped those refits and quoted a finite upper end from the
    rest (here [146, 34225] with 9% of the refits dropped, beyond the 2.5% tail)."""
    D = np.array([25e6, 50e6, 100e6, 200e6, 400e6, 800e6])
    losses = power_law(D, 3.0, 150.0, 0.3) * np.exp(np.random.default_rng(2).normal(0, 0.002, len(D)))
    law = fit_power_law(D, losses, n_boot=300, seed=2)
    loss = float(power_law(8 * D[-1], 3.0, 150.0, 0.3))  # 8x past the largest run: close to E
    share = float(np.mean(law.samples[:, 0] >= loss))
    assert share > 0.025  # the premise: more refits than the interval's upper tail cannot reach the loss
    result = efficiency(loss, float(losses[0]), law)
    assert result.basis.determined and result.interval is None
    assert f"no upper bound: E lies at or above the loss in {share:.0%} of the fit's bootstrap refits" in result.note


def test_efficiency_intervals_from_a_fitted_baseline_cover_the_true_ratio():
    """The ratio's interval comes from the fit's bootstrap draws (--fit-baseline), so it inherits
    their coverage: 55 of 60 seeded baselines here (51 with the residual bootstrap it replaced)."""
    D = np.array([25e6, 50e6, 100e6, 200e6, 400e6, 800e6])
    truth = efficiency_ratio(3.41, 3.5544, alpha=0.235, E=1.92)
    covered = 0
    for trial in range(60):
        rng = np.random.default_rng(100 + trial)
        law = fit_power_law(D, power_law(D, 1.92, 150.0, 0.235) + rng.normal(0, 0.003, len(D)),
                                n_boot=60, seed=trial)
        interval = efficiency(3.41, 3.5544, law).interval
        covered += interval[0] <= truth <= interval[1]
    assert covered >= 53  # 95% nominal; 60 trials leave a few fits of sampling noise


def test_cli_prints_the_paper_ratios(capsys):
    assert main(["analysis", "efficiency", "--loss", "3.41", "--baseline-loss", "3.5544",
                 "--alpha", "0.235", "--asymptote", "1.92"]) == 0
    assert "data efficiency: 1.48x" in capsys.readouterr().out
    assert main(["analysis", "efficiency", "--loss", "3.344", "--baseline-loss", "3.5544",
                 "--alpha", "0.235", "--asymptote", "1.92"]) == 0
    assert "data efficiency: 1.80x" in capsys.readouterr().out


def test_cli_default_law_and_fit_baseline(tmp_path, capsys):
    assert main(["analysis", "efficiency", "--loss", "3.344", "--baseline-loss", "3.5544"]) == 0
    out = capsys.readouterr().out
    assert "1.80x" in out and "effective data" in out
    table = tmp_path / "baseline.csv"
    D = np.array([25e6, 50e6, 100e6, 200e6, 400e6])
    losses = power_law(D, 1.92, 150.0, 0.235) * np.exp(np.random.default_rng(1).normal(0, 0.001, len(D)))
    table.write_text("D,loss\n" + "\n".join(f"{d},{loss}" for d, loss in zip(D, losses)) + "\n")
    assert main(["analysis", "efficiency", "--loss", "3.41", "--baseline-loss", "3.5544",
                 "--fit-baseline", str(table), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "L(D) = E + A * D^(-alpha), 5 points" in out
    assert "data efficiency: 1.4" in out and "[" in out  # ratio with its interval


def test_cli_refuses_half_a_law(capsys):
    assert main(["analysis", "efficiency", "--loss", "3.4", "--baseline-loss", "3.55", "--alpha", "0.2"]) == 2
    assert "--alpha: give both --alpha and --asymptote" in capsys.readouterr().err


def test_reference_law_model_is_strict():
    with pytest.raises(Exception, match="extra"):
        ReferenceLaw(alpha=0.2, E=1.0, provenance="x", beta=3)


@pytest.mark.parametrize(("n_sizes", "unusable"), [(1, None), (2, None), (2, "inf"), (2, "")])
def test_cli_fit_baseline_with_too_few_sizes_says_what_to_give_instead(tmp_path, capsys, n_sizes, unusable):
    # The fit's own advice (--alpha/--asymptote to fix a parameter) is refused next to --fit-baseline,
    # so the one line must name the file and the options that do combine. A size whose loss diverged
    # (inf) or is missing is no point of the law: it was counted, and the fit's advice came out.
    table = tmp_path / "baseline.csv"
    D = np.array([25e6, 50e6][:n_sizes])
    rows = [f"{d},{power_law(d, 1.92, 150.0, 0.235)}" for d in D] + ([] if unusable is None else [f"1e8,{unusable}"])
    table.write_text("D,loss\n" + "\n".join(rows) + "\n")
    assert main(["analysis", "efficiency", "--loss", "3.41", "--baseline-loss", "3.5544",
                 "--fit-baseline", str(table)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--fit-baseline {table}: {n_sizes} distinct data size(s)" in err and "--reference" in err


def _losses_given_by_options() -> dict[str, str]:
    """The flag of each `analysis efficiency` option that gives a loss argument of `efficiency` (its dest)."""
    import argparse
    import inspect

    from megadocs.cli import build_parser, option_flags

    [groups] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    [commands] = [a for a in groups.choices["analysis"]._actions if isinstance(a, argparse._SubParsersAction)]
    losses = [name for name in inspect.signature(efficiency).parameters if "loss" in name]
    return {dest: flag for dest, flag in option_flags(commands.choices["efficiency"]).items() if dest in losses}


@pytest.mark.parametrize("dest", _losses_given_by_options())
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_cli_names_the_flag_of_a_loss_that_is_no_number(capsys, dest, value):
    """`--loss nan` said 'efficiency: method loss must be finite, got nan': now the flag typed."""
    flags = _losses_given_by_options()
    assert len(flags) == 2  # the method's and the baseline's
    given = {flag: "3.4" for flag in flags.values()} | {flags[dest]: value}
    assert main(["analysis", "efficiency", *(item for pair in given.items() for item in pair)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flags[dest]}: expected a finite ") and err.endswith(f" loss, got {value}\n")


@pytest.mark.parametrize("dest", _losses_given_by_options())
def test_cli_names_the_flag_of_a_loss_below_the_laws_asymptote(capsys, dest):
    """`--loss 1.5` (E 1.92) said 'efficiency: loss 1.5000 is not above ...', naming neither flag."""
    flags = _losses_given_by_options()
    given = {flag: "3.4" for flag in flags.values()} | {flags[dest]: "1.5"}
    assert main(["analysis", "efficiency", *(item for pair in given.items() for item in pair)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flags[dest]}: loss 1.5000 is not above the reference law's E=") and \
        err.count("\n") == 1


def _commands_with_a_fitted_law() -> dict[str, argparse.ArgumentParser]:
    """The `analysis` commands whose law may be fitted to baseline runs (--fit-baseline), and their parsers."""
    from megadocs.cli import build_parser

    [groups] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    [commands] = [a for a in groups.choices["analysis"]._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: parser for name, parser in commands.choices.items()
            if any("--fit-baseline" in action.option_strings for action in parser._actions)}


def test_bootstrap_without_fit_baseline_is_refused_naming_the_option_it_needs(tmp_path, capsys):
    """`analysis efficiency --bootstrap 500` (report too) without --fit-baseline was silently ignored:
    a law given or read from a file is not refitted. Now refused in one line, before anything is read."""
    given = {"efficiency": ["--loss", "3.4", "--baseline-loss", "3.5"],
             "report": [str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "report")]}
    assert set(_commands_with_a_fitted_law()) == set(given)
    for command, argv in given.items():
        assert main(["analysis", command, *argv, "--bootstrap", "500"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("error: --bootstrap: only with --fit-baseline ")
        assert captured.err.count("\n") == 1


@pytest.mark.parametrize(("alpha", "asymptote"), [("0", "1.9"), ("nan", "1.9"), ("0.2", "-1"), ("inf", "1"),
                                                  ("0.2", "inf")])
def test_cli_refuses_a_meaningless_law_in_one_line(capsys, alpha, asymptote):
    # alpha 0 or E -1 ended in a pydantic traceback; alpha inf printed "1.00x".
    assert main(["analysis", "efficiency", "--loss", "3.4", "--baseline-loss", "3.5",
                 "--alpha", alpha, "--asymptote", asymptote]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --alpha/--asymptote: need a finite alpha > 0") and "\n" not in err


N_BOOT = 100
SCENARIOS = {  # basis -> (baseline runs or None for the shipped law, loss, baseline loss, measured seed-noise sd)
    Basis.STATED: (None, 3.41, 3.5544, None),
    Basis.AT_EDGE: (None, 3.41, 3.56, 0.003),  # a 300M reproduction's baseline, 0.0056 above the paper's
    Basis.OUT_OF_RANGE: (None, 4.4387, 4.9918, 0.01),  # the demo's tiny model, latent G=4 vs its baseline
    Basis.INTERPOLATED: ("loose", 3.50, 3.5544, None),  # both losses among the runs' (3.46-3.70)
    Basis.EXTRAPOLATED: ("determined", 3.0, 3.5544, None),  # beyond the runs (3.13 at 800M), on a determined law
    Basis.NOT_DETERMINED: ("loose", 3.40, 3.5544, None),  # beyond the runs, on a law whose E is not determined
    Basis.BELOW_E: (None, 1.9, 3.5544, None),
}


@functools.cache  # 500 refits of a loose law (about 0.7 s; 2.4 s before refits started down the valley floor): fit each once
def _law(runs: str | None):
    return load_reference_law() if runs is None else fit_power_law(*BASELINE_RUNS[runs], n_boot=N_BOOT)


def test_every_basis_has_a_scenario():
    assert set(SCENARIOS) == set(Basis)
    assert not _law("loose").determined["E"] and all(_law("determined").determined.values())


@pytest.mark.parametrize("basis", list(Basis), ids=lambda basis: basis.name)
def test_an_efficiency_is_only_quoted_where_the_law_determines_it(basis):
    """A fitted law whose E is not determined gave ratios with intervals beyond its points (8.85x
    [7.33, 28.92] for 3.40 on these runs): now "not determined" with the reason, while a loss among
    the runs is read off the curve, which needs no asymptote. A law given as constants gave a
    ratio 1.4 nats away from the losses it was calibrated on: now "out of range", no number."""
    runs, loss, baseline_loss, noise_sd = SCENARIOS[basis]
    law = _law(runs)
    result = efficiency(loss, baseline_loss, law, noise_sd=noise_sd)
    assert result.basis is basis
    assert np.isfinite(result.ratio) == basis.determined == (result.format()[0].isdigit())
    if not basis.determined:
        assert result.interval is None and result.effective_tokens is None and result.note
    if basis is Basis.NOT_DETERMINED:
        assert "below the baseline runs' losses" in result.note and "rests on E, which the points do not" \
            in result.note
    if basis is Basis.INTERPOLATED:  # E is loose, yet the effective data lies among the runs' sizes
        assert not law.determined["E"]
        sizes = BASELINE_RUNS["loose"][0]
        assert sizes.min() <= result.effective_tokens <= sizes.max()
        assert result.ratio == pytest.approx(2 ** ((baseline_loss - loss) / 0.08), rel=0.05)  # 0.08 per doubling
        assert result.interval[0] <= result.ratio <= result.interval[1]


@pytest.mark.parametrize("basis", list(Basis), ids=lambda basis: basis.name)
def test_cli_efficiency_json_agrees_with_the_library_and_with_fit_json(basis, tmp_path, capsys):
    import json

    runs, loss, baseline_loss, noise_sd = SCENARIOS[basis]
    argv = ["analysis", "efficiency", "--loss", str(loss), "--baseline-loss", str(baseline_loss), "--json"]
    if noise_sd is not None:
        argv += ["--noise-sigma", str(noise_sd)]
    if runs is not None:
        table = tmp_path / "baseline.csv"
        table.write_text("D,loss\n" + "\n".join(f"{float(d)!r},{float(y)!r}" for d, y in zip(*BASELINE_RUNS[runs])) + "\n")
        argv += ["--fit-baseline", str(table), "--bootstrap", str(N_BOOT)]
    if basis is Basis.BELOW_E:  # a loss below a stated asymptote is a bad input: one line
        assert main(argv) == 2
        assert "is not above the reference law's E=1.92" in capsys.readouterr().err
        return
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    expected = efficiency(loss, baseline_loss, _law(runs), noise_sd=noise_sd)
    assert out["basis"] == basis.value and out["determined"] == basis.determined
    assert out["illustrative"] == (runs is None) and "source" not in out  # one field says how it was read
    assert out["margin"] == pytest.approx(expected.margin) == range_margin(_law(runs), noise_sd)  # both kinds
    if runs is None:
        assert out["law"]["loss_range"] == [3.344, 3.5544]
    assert (out["ratio"] is None) == (not basis.determined)
    if basis.determined:
        assert out["ratio"] == pytest.approx(expected.ratio)
    if runs is not None:  # the law as `fit --json` gives it, with the same verdicts
        assert main(["analysis", "fit", str(table), "--x", "D", "--bootstrap", str(N_BOOT), "--json"]) == 0
        [fitted] = json.loads(capsys.readouterr().out)
        assert out["law"]["params"] == fitted["params"]
        assert out["law"]["params"]["E"]["determined"] == (runs == "determined")


# The rule for a law given as constants on both sides of its boundaries: the shipped law's
# calibrated losses are 3.344-3.5544 (paper.md: 1.80x at 3.344 and 1.48x at 3.41 against the 3.5544
# baseline); a loss outside them by less than seed noise can tell (range_margin: 2 sds of a two-run
# difference, 0.0085 at sd 0.003) is at their edge.
# (law: "paper", "paper-noise" (the same with loss_noise 0.003) or "unranged" (no range); loss;
# baseline loss; the measured noise sd; basis)
RANGE_CASES = [
    ("paper", 3.344, 3.5544, None, Basis.STATED),  # the calibration points themselves: inside
    ("paper", 3.41, 3.5544, 0.003, Basis.STATED),
    ("paper", 3.3439, 3.5544, None, Basis.OUT_OF_RANGE),  # no noise estimate: the range is closed
    ("paper", 3.41, 3.5545, None, Basis.OUT_OF_RANGE),
    ("paper", 3.41, 3.56, 0.003, Basis.AT_EDGE),  # 0.0056 above, within 0.0085
    ("paper", 3.336, 3.5544, 0.003, Basis.AT_EDGE),  # 0.008 below
    ("paper", 3.41, 3.563, 0.003, Basis.OUT_OF_RANGE),  # 0.0086 above: beyond 0.0085
    ("paper", 3.336, 3.563, 0.003, Basis.OUT_OF_RANGE),  # one loss at the edge, the other beyond it
    ("paper-noise", 3.41, 3.56, None, Basis.AT_EDGE),  # the law's own loss_noise alone
    ("paper-noise", 3.41, 3.56, 0.001, Basis.AT_EDGE),  # both: 2 * hypot(0.003, 0.001) = 0.0063
    ("paper-noise", 3.41, 3.5615, 0.001, Basis.OUT_OF_RANGE),  # 0.0071 above: beyond 0.0063
    ("paper", 4.4387, 4.9918, 0.01, Basis.OUT_OF_RANGE),  # the demo's latent G=4 against its baseline
    ("paper", 1.9, 3.5544, 0.003, Basis.BELOW_E),  # below E says so, not "out of range"
    ("unranged", 4.4387, 4.9918, None, Basis.STATED),  # a law that states no range cannot be checked
]


def _stated_law(kind: str) -> ReferenceLaw:
    paper = load_reference_law()
    return {"paper": paper, "paper-noise": paper.model_copy(update={"loss_noise": 0.003}),
            "unranged": ReferenceLaw(alpha=0.235, E=1.92, provenance="given on the command line")}[kind]


def test_every_basis_of_a_stated_law_has_a_case():
    assert {case[-1] for case in RANGE_CASES} == {Basis.STATED, Basis.AT_EDGE, Basis.OUT_OF_RANGE, Basis.BELOW_E}
    law = load_reference_law()
    assert law.loss_range == (3.344, 3.5544) and law.name == "the paper's reference law"
    assert law.loss_noise is None  # the paper states no seed noise: the user's measured one sets the margin


@pytest.mark.parametrize(("kind", "loss", "baseline_loss", "noise_sd", "basis"), RANGE_CASES)
def test_a_stated_law_reads_losses_within_seed_noise_of_its_range(kind, loss, baseline_loss, noise_sd, basis):
    """The range was closed: a 300M reproduction whose baseline read 3.56 (the paper's: 3.5544) got
    "out of range", and a loss below E the out-of-range cell. Within seed noise of the range a loss
    is now read at its edge with a number; clearly outside it gets none; below E says below E."""
    law = _stated_law(kind)
    result = efficiency(loss, baseline_loss, law, noise_sd=noise_sd)
    assert result.basis is basis and result.illustrative
    record = result.to_json()
    assert record["basis"] == basis.value and record["illustrative"] is True
    assert (record["ratio"] is not None) == basis.determined
    if basis is Basis.AT_EDGE:
        assert "within seed noise" in result.note and f"margin {result.margin:.4f}" in result.note
        assert result.ratio == pytest.approx(efficiency_ratio(loss, baseline_loss, alpha=0.235, E=1.92))
    if basis is Basis.OUT_OF_RANGE:
        assert "calibration losses 3.344-3.5544 of the paper's reference law" in result.note
        assert "`--fit-baseline`" in result.note and result.effective_tokens is None
    if basis is Basis.BELOW_E:
        assert result.note == "loss 1.9000 is not above the reference law's E=1.92"


def test_range_margin_is_the_clear_difference_of_two_single_losses():
    law = load_reference_law()
    assert range_margin(law) == 0.0 and range_margin(law, float("nan")) == 0.0
    assert range_margin(law, 0.003) == pytest.approx(noise_tolerance(0.003)) == pytest.approx(2 * 0.003 * 2 ** 0.5)
    noisy = law.model_copy(update={"loss_noise": 0.003})
    assert range_margin(noisy) == pytest.approx(range_margin(law, 0.003))
    assert range_margin(noisy, 0.001) == pytest.approx(2 * float(np.hypot(0.003, 0.001)))



# One rule at the edge of every law's evidence (analysis.efficiency.efficiency_basis): a stated law's
# calibration losses and a fitted law's baseline runs alike, a loss outside them by at most
# range_margin (0.0085 at seed-noise sd 0.003) reads `at the edge` with a number; beyond it a stated law
# gives none (`out of range`) and a fitted law rests on E and alpha (`extrapolated` where the fit
# determines them, `not determined` where not).
EDGE_LAWS = {None: (Basis.STATED, Basis.OUT_OF_RANGE), "loose": (Basis.INTERPOLATED, Basis.NOT_DETERMINED),
             "determined": (Basis.INTERPOLATED, Basis.EXTRAPOLATED)}  # runs -> (inside, clearly beyond)
EDGE_DISTANCES = {"at the end": 0.0, "just within the margin": 1 - 1e-6, "just beyond it": 1 + 1e-6}  # x margin


def _losses_beyond(evidence: Evidence, side: str, distance: float) -> tuple[float, float]:
    """(loss, baseline loss): one ``distance`` below the evidence's low end or above its high end, the
    other in its middle."""
    middle = (evidence.low + evidence.high) / 2
    return (evidence.low - distance, middle) if side == "below" else (middle, evidence.high + distance)


@pytest.mark.parametrize("side", ["below", "above"])
@pytest.mark.parametrize("distance", EDGE_DISTANCES)
@pytest.mark.parametrize("runs", EDGE_LAWS, ids=lambda runs: runs or "stated")
def test_every_law_reads_a_loss_within_seed_noise_of_its_evidence_at_the_edge(runs, distance, side):
    """A fitted law's range was closed while a stated law's had a seed-noise margin: a method loss
    0.008 below the lowest of the user's own baseline runs (sd 0.003) read `not determined`, one
    0.008 below the paper's calibration losses `at the edge`. Both now follow one rule."""
    law, noise_sd = _law(runs), 0.003
    margin = range_margin(law, noise_sd)
    assert margin == pytest.approx(noise_tolerance(noise_sd))  # a fitted law's runs: the user's own noise
    loss, baseline_loss = _losses_beyond(evidence_range(law), side, EDGE_DISTANCES[distance] * margin)
    basis, note = efficiency_basis(loss, baseline_loss, law, noise_sd=noise_sd)
    inside, beyond = EDGE_LAWS[runs]
    assert basis is {"at the end": inside, "just within the margin": Basis.AT_EDGE, "just beyond it": beyond}[distance]
    if basis is Basis.AT_EDGE:
        assert f"{side} {evidence_range(law).name}: within seed noise (margin {margin:.4f})" in note
        result = efficiency(loss, baseline_loss, law, noise_sd=noise_sd)
        assert result.ratio == pytest.approx(efficiency_ratio(loss, baseline_loss, alpha=law.alpha, E=law.E))
    assert efficiency_basis(loss, baseline_loss, law)[0] is (inside if distance == "at the end" else beyond)  # no noise


def test_a_fitted_laws_number_at_the_edge_rests_on_E_only_at_second_order():
    """Why the rule holds for a fitted law whose E is NOT determined. Curves with E held anywhere in
    0-2 all pass through the "loose" runs within their noise; the log efficiency they give spreads with
    the loss smoothly across the runs' edge (no cliff where "interpolated" ends), and one margin past it
    the spread over E is a fraction of the step that the margin's seed noise itself makes."""
    D, y = BASELINE_RUNS["loose"]
    low, margin = evidence_range(_law("loose")).low, range_margin(_law("loose"), 0.003)
    curves = [fit_power_law(D, y, fix_E=E, n_boot=0) for E in (0.0, 1.0, 2.0)]
    assert all(curve.rmse_log < 0.003 / low for curve in curves)  # each fits the runs within seed noise
    losses = (low + margin, low, low - margin)  # inside, at the end, at the edge
    logs = np.array([[np.log(ratio_of_losses(loss, 3.68, c.alpha, c.E)) for loss in losses] for c in curves])
    spread = logs.max(axis=0) - logs.min(axis=0)
    inside_step, edge_step = spread[1] - spread[0], spread[2] - spread[1]
    assert 0 < edge_step < 1.5 * inside_step  # about 0.0035 each
    assert spread[2] < 0.25 * (logs[:, 2] - logs[:, 1]).min()  # 0.013 against 0.076


def test_no_edge_below_a_fitted_law_whose_asymptote_ended_at_the_lowest_loss():
    """Where E ended at the lowest loss (its search bound) the curve below the runs is held up by that
    bound: a loss 0.0001 below them, though within seed noise, would read about 15x. Not at the edge."""
    import dataclasses

    D = np.array([25e6, 50e6, 100e6, 200e6])
    fit = fit_power_law(D, np.array([3.70, 3.60, 3.58, 3.57]), n_boot=0)
    law = dataclasses.replace(fit, E=3.57 - 2e-4)  # at the bound within its tolerance, a sliver below it
    assert law.E_at_lowest_loss and evidence_range(law).low == 3.57
    basis, note = efficiency_basis(3.57 - 1e-4, 3.60, law, noise_sd=0.003)
    assert basis is Basis.NOT_DETERMINED and "rests on E" in note
    assert efficiency_basis(3.60, 3.70 + 1e-3, law, noise_sd=0.003)[0] is Basis.AT_EDGE  # above: the slope holds


@pytest.mark.parametrize("value", ["0", "-0.01", ".inf", ".nan"])
def test_reference_law_refuses_a_meaningless_loss_noise(tmp_path, value):
    path = tmp_path / "law.yaml"
    path.write_text(f"alpha: 0.3\nE: 2.0\nprovenance: mine\nloss_noise: {value}\n")
    with pytest.raises(UserError, match="loss_noise"):
        load_reference_law(path)


def test_reference_law_range_must_lie_above_its_asymptote():
    with pytest.raises(Exception, match="loss_range"):
        ReferenceLaw(alpha=0.2, E=2.0, provenance="x", loss_range=(1.9, 3.0))
    with pytest.raises(Exception, match="loss_range"):
        ReferenceLaw(alpha=0.2, E=2.0, provenance="x", loss_range=(3.5, 3.4))


def test_cli_says_how_the_number_was_read_on_its_line(tmp_path, capsys):
    def lines(*argv) -> list[str]:
        assert main(["analysis", "efficiency", *argv]) == 0
        out = capsys.readouterr().out.splitlines()
        [at] = [i for i, text in enumerate(out) if text.startswith("data efficiency:")]
        return out[at:at + 2]

    [inside, _] = lines("--loss", "3.41", "--baseline-loss", "3.5544")
    caveat = STATED_CAVEAT  # the one wording, on the number's line only
    assert inside.startswith(f"data efficiency: 1.48x  (stated; {caveat}; ")
    assert main(["analysis", "efficiency", "--loss", "3.41", "--baseline-loss", "3.5544"]) == 0
    out = capsys.readouterr().out
    assert "effective data: " in out and out.count("illustrative") == 1  # the effective-data line repeated it
    edge, note = lines("--loss", "3.41", "--baseline-loss", "3.56", "--noise-sigma", "0.003")
    assert edge.startswith(f"data efficiency: 1.50x  (at the edge; {caveat}; ")
    assert note == ("  baseline loss 3.5600 lies 0.0056 above the calibration losses 3.344-3.5544 of the paper's "
                    "reference law: within seed noise (margin 0.0085)")
    closed, note = lines("--loss", "3.41", "--baseline-loss", "3.56")
    assert closed.startswith(f"data efficiency: out of range  ({caveat}; ") and "no seed-noise estimate" in note
    demo, note = lines("--loss", "4.4387", "--baseline-loss", "4.9918")
    assert demo.startswith("data efficiency: out of range") and "4.9918 lies 1.4374 above" in note
    table = tmp_path / "baseline.csv"
    table.write_text("D,loss\n" + "\n".join(f"{float(d)!r},{float(y)!r}" for d, y in zip(*BASELINE_RUNS["loose"])))
    [fitted, _] = lines("--loss", "3.50", "--baseline-loss", "3.5544", "--fit-baseline", str(table),
                        "--bootstrap", str(N_BOOT))
    assert "illustrative" not in fitted and "interpolated" in fitted


@pytest.mark.parametrize("sigma", ["0", "-0.1", "nan", "inf"])
def test_cli_refuses_a_meaningless_noise_sigma(capsys, sigma):
    assert main(["analysis", "efficiency", "--loss", "3.41", "--baseline-loss", "3.56", "--noise-sigma", sigma]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --noise-sigma: need a finite seed-noise sd > 0") and "\n" not in err
