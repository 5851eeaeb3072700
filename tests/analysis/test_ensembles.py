"""Ensemble tables from files, L(K) fits and asymptote comparison."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.ensembles import compare_asymptotes, fit_ensembles, load_ensemble_table
from analysis.fits import param_status
from analysis.scaling import power_law
from megadocs.errors import UserError

K = np.arange(1, 9)
ASYMPTOTES = {"real": 3.31, "stitched": 3.17}


def curve(E: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return power_law(K, E, 0.25, 0.9) * np.exp(rng.normal(0, 0.0005, len(K)))


def test_csv_and_train_ensemble_json_are_read_alike(tmp_path):
    csv = tmp_path / "real.csv"
    pd.DataFrame({"method": "real", "K": K, "loss": curve(3.31, 0)}).to_csv(csv, index=False)
    report = {"members": ["a", "b"], "sets": {"iid": [
        {"k": int(k), "members": [], "loss": float(v), "tokens": 10, "loss_short": float(v) - 0.1,
         "loss_long": float(v) + 0.1} for k, v in zip(K, curve(3.17, 1))]}}
    js = tmp_path / "stitched.json"
    js.write_text(json.dumps(report))
    table = load_ensemble_table([str(csv), f"stitched={js}"])
    assert set(table["algorithm"]) == {"real", "stitched"}
    assert set(table["set"]) == {"iid", "iid_short", "iid_long"}
    assert len(table[(table["set"] == "iid")]) == 2 * len(K)


def test_train_ensemble_json_without_a_label_reads_the_members_config(tmp_path):
    member = tmp_path / "run0"
    member.mkdir()
    (member / "config.yaml").write_text(  # read as a RunConfig, like train's own RUN/config.yaml
        "data:\n  store: s\n  mixing_fraction: 0.5\n  synthetic: {pool: p, algorithm: latent, g: 4}\n")
    path = tmp_path / "ens.json"
    path.write_text(json.dumps({"members": [str(member)], "sets": {"iid": [{"k": 1, "loss": 3.3}]}}))
    assert load_ensemble_table(path)["algorithm"].tolist() == ["latent"]
    (member / "config.yaml").unlink()
    with pytest.raises(UserError, match="pass it as ALGORITHM="):
        load_ensemble_table(path)


def test_fits_recover_asymptotes_and_compare_them():
    table = pd.concat(
        [pd.DataFrame({"algorithm": a, "k": K, "loss": curve(E, i), "set": "iid"})
         for i, (a, E) in enumerate(ASYMPTOTES.items())]
    )
    fits = fit_ensembles(table, n_boot=200)
    comparison = compare_asymptotes(fits).set_index("algorithm")
    for algorithm, E in ASYMPTOTES.items():
        assert comparison.loc[algorithm, "E"] == pytest.approx(E, abs=0.01)
        assert comparison.loc[algorithm, "E_low"] < E < comparison.loc[algorithm, "E_high"]
    delta = comparison.loc["stitched"]
    assert delta["delta"] == pytest.approx(-0.14, abs=0.015)
    assert delta["delta_low"] < -0.14 < delta["delta_high"]


def test_two_members_are_not_fitted_and_say_why():
    table = pd.DataFrame({"algorithm": "real", "k": [1, 2], "loss": [3.5, 3.4], "set": "iid"})
    fits = fit_ensembles(table, n_boot=0)
    assert isinstance(fits["real"], str) and "cannot determine 3 parameters" in fits["real"]
    row = compare_asymptotes(fits).iloc[0]
    assert np.isnan(row["E"]) and "cannot determine" in row["note"]


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("algorithm,loss\nreal,3.4\n", "t.csv", "ensemble table without column"),
        ("algorithm,k,loss\nreal,0,3.4\n", "t.csv", "k < 1"),
        ("algorithm,k,loss\nreal,1,3.5\n,2,3.4\n", "t.csv", "no algorithm"),  # was dropped from fit and figure
        ("{not json", "t.json", "invalid JSON"),
        ("a: 1", "t.yaml", "unknown ensemble table format"),
    ],
)
def test_bad_tables_are_refused_with_the_file_named(tmp_path, content, name, message):
    """Among several files, the one at fault is named (the column checks had said "ensemble table")."""
    (tmp_path / "fine.csv").write_text("algorithm,k,loss\nreal,1,3.5\nreal,2,3.4\n")
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: .*{message}") as info:
        load_ensemble_table([tmp_path / "fine.csv", path] if name == "t.csv" else path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("content", "name", "message"), [
    (b"", "t.csv", "empty"), (b"algorithm,k,loss\nr\xe9al,1,3.5\n", "t.csv", "not UTF-8"),
    (b"[{\"algorithm\": \"r\xe9al\"}]", "t.json", "not UTF-8"),
])
def test_an_unreadable_table_is_refused_with_the_file_named(tmp_path, content, name, message):
    """An empty or non-UTF-8 ensemble table was pandas' EmptyDataError or a UnicodeDecodeError traceback."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: {message}") as info:
        load_ensemble_table(path)
    assert "\n" not in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match="nope.csv: ensemble table not found"):
        load_ensemble_table(tmp_path / "nope.csv")


def test_reads_what_megadocs_train_ensemble_writes(tiny_store, tmp_path):
    """The real `megadocs train ensemble --json` over three tiny (random-init) members."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from analysis.ensembles import score_ensemble_studies
    from train.store import TokenStore

    vocab = TokenStore.open(tiny_store).vocab_size
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
        LlamaForCausalLM(config).save_pretrained(tmp_path / f"member{seed}")
        members.append(str(tmp_path / f"member{seed}"))
    # score_ensemble_studies calls train's ensemble API; trained runs keep their model in RUN/model
    runs = []
    for member in members:
        run = Path(member + "-run")
        run.mkdir()
        Path(member).rename(run / "model")
        runs.append(str(run))
    studies = {"real-ens": ensemble_study(*runs)}
    sources, problems = score_ensemble_studies(
        studies, tmp_path / "scored",
        val=[str(tiny_store)], context=64, windows=8, device="cpu",
    )
    out = tmp_path / "scored" / "real-ens.json"
    assert problems == {} and sources == [f"real={out}"]
    table = load_ensemble_table(sources)
    iid = table[table["set"] == "iid"]
    assert iid["k"].tolist() == [1, 2, 3] and (iid["algorithm"] == "real").all()
    written = json.loads(out.read_text())["sets"]["iid"]
    rows = written["by_k"] if isinstance(written, dict) else written
    assert iid["loss"].tolist() == pytest.approx([row["loss"] for row in rows])
    assert table["loss"].map(np.isfinite).all()


def ensemble_study(*run_dirs, stale=(), certified=True):
    """An ensemble study as ``search.status.summarize_ensembles`` returns it: completed members at
    the source's certified point (lr 0.01) and ``stale`` run dirs of an earlier point (lr 0.003)."""
    from megadocs.formats import RunStatus
    from search.certificate import CertState
    from search.params import RunParams
    from search.status import EnsembleMember, EnsembleSummary

    def member(k, run_dir, lr):
        return EnsembleMember(k, RunParams(point={"lr": lr}, seed=k + 1), RunStatus.COMPLETED, str(run_dir))

    return EnsembleSummary(
        "e", "real", "real", max(2, len(run_dirs)), {"lr": 0.01} if certified else None,
        CertState.CERTIFIED if certified else CertState.SEARCHING,
        tuple(member(k, d, 0.01) for k, d in enumerate(run_dirs)) if certified else (),
        tuple(member(k, d, 0.003) for k, d in enumerate(stale)))


def test_score_ensemble_studies_reports_what_it_cannot_score(tmp_path):
    from analysis.ensembles import score_ensemble_studies

    run = tmp_path / "run0"
    run.mkdir()
    studies = {"one": ensemble_study(run), "untrained": ensemble_study(run, run)}
    bare, bare2 = tmp_path / "bare", tmp_path / "bare2"  # a model/ but no RUN/config.yaml: refused without a context
    for member in (bare, bare2):  # two distinct models (train refuses one model listed twice first)
        (member / "model").mkdir(parents=True)
        (member / "model" / "config.json").write_text("{}")
    studies["bare"] = ensemble_study(bare, bare2)
    # members of an earlier certified point are never mixed with the current point's
    studies["moved"] = ensemble_study(bare, stale=[run, run])
    studies["uncertified"] = ensemble_study(stale=[run, run], certified=False)
    sources, problems = score_ensemble_studies(studies, tmp_path / "out")
    assert sources == []
    assert problems["one"] == "1 completed member(s) at real's certified point (lr=0.01); need at least 2"
    assert "has no model/" in problems["untrained"]
    assert problems["bare"].startswith("--context: the first member has no RUN/config.yaml")
    assert problems["moved"].startswith("1 completed member(s) at real's certified point (lr=0.01); need at least 2; "
                                        "2 finished member(s) belong to an earlier certified point of real (lr=0.003)")
    assert problems["uncertified"].startswith("source real is not certified now (searching)")
    assert all("\n" not in problem for problem in problems.values())


def test_a_train_ensemble_report_missing_a_field_is_refused_naming_it(tmp_path):
    """analysis reads the report through train's record (train.ensemble_report.EnsembleReport)."""
    path = tmp_path / "ens.json"
    path.write_text(json.dumps({"members": ["a"], "sets": {"iid": {"source": None, "by_k": [{"loss": 3.3}]}}}))
    with pytest.raises(UserError, match=r"ens.json: sets.iid.by_k.0.k: required field is missing"):
        load_ensemble_table(f"real={path}")


def test_an_asymptote_the_points_do_not_determine_is_not_compared():
    """Losses falling linearly in log K leave E NOT determined (scaling's policy): the comparison
    table quoted it and its difference from the baseline's as numbers; both are now blank and the
    note quotes E as the fit's description does."""
    noise = np.random.default_rng(0).normal(0, 0.0005, len(K))
    table = pd.concat([pd.DataFrame({"algorithm": "real", "k": K, "loss": curve(3.31, 0)}),
                       pd.DataFrame({"algorithm": "latent", "k": K, "loss": 3.30 - 0.02 * np.log2(K) + noise})])
    fits = fit_ensembles(table.assign(set="iid"), n_boot=100)
    assert fits["real"].determined["E"] and not fits["latent"].determined["E"]
    rows = compare_asymptotes(fits).set_index("algorithm")
    latent = rows.loc["latent"]
    assert not latent["E_determined"] and np.isnan(latent[["E", "E_low", "E_high", "delta", "delta_low",
                                                           "delta_high"]].astype(float)).all()
    assert f"E {param_status(fits['latent'], 'E')}" in latent["note"]
    assert rows.loc["real", "E"] == pytest.approx(3.31, abs=0.01)


def test_ensemble_studies_sharing_members_are_scored_once_and_sources_of_one_method_apart(tmp_path):
    """Two studies of one source share members (the sweep adopts a finished run of the same identity):
    scored as two ensembles of one algorithm, their L(K) were the same runs fitted twice as
    independent repeats. The smaller is left out, named; and studies of one method from two sources
    (another G) are two curves, labelled by source, not repeats of one L(K)."""
    import dataclasses

    from analysis.ensembles import ensemble_labels

    runs = [tmp_path / f"run{i}" for i in range(9)]

    def study(name, method, source, members):
        return dataclasses.replace(ensemble_study(*members), name=name, method=method, source=source)

    studies = {"real-ens": study("real-ens", "real", "real", runs[:3]),
               "real-ens-small": study("real-ens-small", "real", "real", runs[:2]),
               "real-ens-more": study("real-ens-more", "real", "real", runs[3:5]),
               "simple-g4-ens": study("simple-g4-ens", "simple", "simple-g4", runs[5:7]),
               "simple-g16-ens": study("simple-g16-ens", "simple", "simple-g16", runs[7:9])}
    labels, left_out = ensemble_labels(studies)
    assert labels == {"real-ens": "real", "real-ens-more": "real",
                      "simple-g4-ens": "simple (simple-g4)", "simple-g16-ens": "simple (simple-g16)"}
    assert left_out == {"real-ens-small": "its 2 completed member(s) are members of real-ens (the same runs): "
                                          "scored once, as real-ens, not fitted twice as independent repeats"}


def test_ensembles_of_several_sources_are_compared_with_the_real_ensemble_of_their_source():
    """Real-only ensembles of two sources are labelled ``real (source)`` (``ensemble_labels``): the
    comparison looked for a plain ``real``, found none and left every delta blank without a word. A
    labelled fit is now compared with the real ensemble of its source, a plain one with plain real, and
    a fit with no such reference says so in its note."""
    from analysis.ensembles import ensemble_label

    real_a, real_b = ensemble_label("real", "a"), ensemble_label("real", "b")
    stitched_a, stitched_c = ensemble_label("stitched", "a"), ensemble_label("stitched", "c")
    table = pd.concat([pd.DataFrame({"algorithm": label, "k": K, "loss": curve(E, i), "set": "iid"})
                       for i, (label, E) in enumerate({real_a: 3.31, real_b: 3.25, stitched_a: 3.17,
                                                       stitched_c: 3.10, "latent": 3.12}.items())])
    fits = fit_ensembles(table, n_boot=50)
    rows = compare_asymptotes(fits).set_index("algorithm")
    assert rows.loc[stitched_a, "delta"] == pytest.approx(fits[stitched_a].E - fits[real_a].E)
    assert rows.loc[stitched_a, "delta_low"] < rows.loc[stitched_a, "delta"] < rows.loc[stitched_a, "delta_high"]
    for label in (real_a, real_b):  # a reference is not compared with itself, nor with another source's
        assert np.isnan(rows.loc[label, "delta"]) and "no delta" not in rows.loc[label, "note"]
    for label, missing in ((stitched_c, "no real ensemble of source c"), ("latent", "no plain real ensemble")):
        assert np.isnan(rows.loc[label, "delta"])
        assert rows.loc[label, "note"].startswith(f"no delta: {missing}")
        assert f"{real_a}, {real_b}" in rows.loc[label, "note"]
    # with one real source the labels are plain (ensemble_labels) and every fit is compared with it
    alone = compare_asymptotes({"real": fits[real_a], stitched_c: fits[stitched_c]}).set_index("algorithm")
    assert alone.loc[stitched_c, "delta"] == pytest.approx(fits[stitched_c].E - fits[real_a].E)
    # no real ensemble at all, or an unfit one: said, not left blank
    assert compare_asymptotes({"latent": fits["latent"]}).iloc[0]["note"].startswith(
        "no delta: no real ensemble to compare with")
    unfit = compare_asymptotes({"real": "2 points cannot determine 3 parameters", "latent": fits["latent"]})
    assert unfit.set_index("algorithm").loc["latent", "note"].startswith("no delta: real's L(K) is not fitted")


def test_an_ensemble_label_reads_back_as_its_method_and_source():
    from analysis.ensembles import ensemble_label, label_parts

    for method, source in (("real", None), ("simple", "simple-g4"), ("latent", "a (b)")):
        assert label_parts(ensemble_label(method, source)) == (method, source)


def test_the_report_compares_each_ensemble_with_the_real_one_of_its_model_size(tmp_path):
    """Real-only ensemble studies of two sources (300m and 1.5b) are labelled by source, and the report
    looked for a real ensemble of the synthetic study's own source (a certification of another method)
    or a plain ``real``: it printed "no delta" instead of simple's. Each ensemble is now compared with
    the real-only ensemble of its source certification's model and setting (``ensemble_pairing``)."""
    import dataclasses

    from analysis.ensembles import ensemble_labels
    from analysis.frame import SETTING, empty_runs_frame
    from analysis.report import render_report

    sources = {"real-300m": ("real", "300m", 3.40), "real-1.5b": ("real", "1.5b", 3.31),
               "simple-g4": ("simple", "1.5b", 3.17)}
    runs = [tmp_path / f"run{i}" for i in range(2 * len(sources))]
    studies = {f"{source}-ens": dataclasses.replace(ensemble_study(*runs[2 * i:2 * i + 2]), name=f"{source}-ens",
                                                    method=method, source=source)
               for i, (source, (method, _model, _E)) in enumerate(sources.items())}
    labels, _ = ensemble_labels(studies)
    certifications = pd.DataFrame({
        "certification": list(sources), "method": [method for method, _, _ in sources.values()],
        "g": [0, 0, 4], "model": [model for _, model, _ in sources.values()], SETTING: "", "certified": True})
    table = pd.concat([pd.DataFrame({"algorithm": labels[f"{source}-ens"], "k": K, "loss": curve(E, i), "set": "iid"})
                       for i, (source, (_method, _model, E)) in enumerate(sources.items())])
    text = render_report(empty_runs_frame(), certifications, [], tmp_path / "report", ensemble_studies=studies,
                         ensembles=table, findings=False).read_text()
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| ")}
    delta = rows["algorithm"].index("delta")
    fits = fit_ensembles(table, n_boot=0)
    simple, real = labels["simple-g4-ens"], labels["real-1.5b-ens"]
    assert rows[simple][delta] != "", rows[simple][-1]  # the note said "no delta: ..."
    assert float(rows[simple][delta]) == pytest.approx(fits[simple].E - fits[real].E, abs=1e-3)


def test_an_ensemble_is_compared_with_the_real_one_of_its_model_and_setting_or_says_why_not():
    """With a pairing (label -> its source's model and setting, ``ensemble_pairing``) an ensemble is
    compared with the real one of its model only, of its setting where there is one (a real-only run
    has no generation setting: ``baseline_for``'s rule); none, or several, is said in the note; a label
    the pairing does not name (a hand-labelled file) keeps the default rule."""
    from analysis.ensembles import TrainedAt, ensemble_label

    real_a, real_b = ensemble_label("real", "real-300m"), ensemble_label("real", "real-1.5b")
    table = pd.concat([pd.DataFrame({"algorithm": label, "k": K, "loss": curve(E, i), "set": "iid"})
                       for i, (label, E) in enumerate({real_a: 3.40, real_b: 3.31, "simple": 3.17, "latent": 3.05,
                                                       "stitched": 3.10}.items())])
    fits = fit_ensembles(table, n_boot=0)
    pairing = {real_a: TrainedAt("300m"), real_b: TrainedAt("1.5b"), "simple": TrainedAt("1.5b", "temperature=0.5"),
               "latent": TrainedAt("7b")}
    rows = compare_asymptotes(fits, pairing=pairing).set_index("algorithm")
    assert rows.loc["simple", "delta"] == pytest.approx(fits["simple"].E - fits[real_b].E)
    assert np.isnan(rows.loc["latent", "delta"]) and rows.loc["latent", "note"].startswith(
        f"no delta: no real ensemble at model 7b to compare with ({real_b} at model 1.5b, {real_a} at model 300m)")
    assert rows.loc["stitched", "note"].startswith("no delta: no plain real ensemble to compare with")
    # of two real ensembles at its model, the one of its setting; two of none of its setting: said
    settings = {**pairing, real_a: TrainedAt("1.5b", "temperature=0.5")}
    assert compare_asymptotes(fits, pairing=settings).set_index("algorithm").loc["simple", "delta"] == pytest.approx(
        fits["simple"].E - fits[real_a].E)
    twice = compare_asymptotes(fits, pairing={**pairing, real_a: TrainedAt("1.5b")}).set_index("algorithm")
    assert twice.loc["simple", "note"].startswith(f"no delta: several real ensembles at model 1.5b ({real_b}, {real_a})")


def test_a_hand_labelled_reference_that_no_study_has_is_named_with_what_was_expected():
    """A hand-labelled file `real=FILE` beside the sweep's studies, whose real-only ensembles are
    labelled by source: simple (a study, trained at model 1.5b) printed "no delta: no real ensemble at
    model 1.5b to compare with (real of no known model)". The note now says which label is wrong and
    what was expected, in one line: the label of the sweep's real ensemble study at that model, or
    that the sweep has none."""
    from analysis.ensembles import TrainedAt, ensemble_label

    table = pd.concat([pd.DataFrame({"algorithm": label, "k": K, "loss": curve(E, i), "set": "iid"})
                       for i, (label, E) in enumerate({"real": 3.31, "simple": 3.17}.items())])
    fits = fit_ensembles(table, n_boot=0)
    real_large = ensemble_label("real", "real-1.5b")
    studies = {"simple": TrainedAt("1.5b"), real_large: TrainedAt("1.5b"),
               ensemble_label("real", "real-300m"): TrainedAt("300m")}
    note = compare_asymptotes(fits, pairing=studies).set_index("algorithm").loc["simple", "note"]
    assert note == ("no delta: no real ensemble at model 1.5b to compare with (real: no ensemble study of this sweep "
                    f"has that label, so its model is unknown; expected the label of the sweep's real ensemble "
                    f"study at model 1.5b, {real_large})")
    none = compare_asymptotes(fits, pairing={"simple": TrainedAt("1.5b")}).set_index("algorithm").loc["simple", "note"]
    assert none.endswith("(real: no ensemble study of this sweep has that label, so its model is unknown; the sweep "
                         "has no real ensemble study at model 1.5b)")
    assert "\n" not in note + none


def test_an_ensemble_file_with_its_algorithm_left_empty_is_refused(tmp_path):
    csv = tmp_path / "ens.csv"
    csv.write_text("algorithm,k,loss\nsimple,1,3.0\n")
    with pytest.raises(UserError, match=r"^--ensembles: expected ALGORITHM=FILE \(or FILE alone\), got '="):
        load_ensemble_table([f"={csv}"])
