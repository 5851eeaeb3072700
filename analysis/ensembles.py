"""Ensembles: loss vs number of members K per algorithm, fitted asymptotes and their comparison.

The losses per K come from train's ensemble scoring (`train.ensemble_cli.score_ensemble`, the
API behind ``megadocs train ensemble --json OUT``) over the member runs of a sweep's ensemble
study, or from any table with columns ``algorithm, k, loss`` (and optionally
``set``), so the fit and figure do not depend on how the numbers were produced. Each algorithm
gets L(K) = E + A * K^(-alpha); algorithms are compared by their asymptotes E (paper.md: real
only about 3.31, each synthetic method lower by >= 0.12).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from analysis.configurations import model_key
from analysis.fits import fit_groups, param_status
from analysis.frame import SETTING, read_table
from analysis.scaling import PowerLawFit, percentile_interval
from megadocs.cli import named_value
from megadocs.errors import UserError
from megadocs.formats import IID, REAL, RunDir, half_names
from train.ensemble_report import EnsembleReport

if TYPE_CHECKING:
    from search.status import EnsembleSummary

__all__ = ["load_ensemble_table", "ensemble_label", "label_parts", "ensemble_labels", "TrainedAt", "ensemble_pairing",
           "score_ensemble_studies", "fit_ensembles", "compare_asymptotes"]

_COLUMN_ALIASES = {"method": "algorithm", "K": "k", "members": "k", "val_set": "set"}


def _from_train_ensemble(report: EnsembleReport, label: str | None, source: Path) -> list[dict]:
    """Rows from a ``megadocs train ensemble --json`` report (`train.ensemble_report`): each set's
    L(K), its halves becoming the sets ``<name>_short`` / ``<name>_long`` like train's
    ``iid_short`` / ``iid_long``."""
    algorithm = label or _algorithm_of_members(report.members)
    if algorithm is None:
        raise UserError(
            f"{source}: cannot tell which algorithm these ensemble members used (no RUN/config.yaml); "
            f"pass it as ALGORITHM={source}"
        )
    rows = []
    for set_name, scored in report.sets.items():
        for entry in scored.by_k:
            rows.append({"algorithm": algorithm, "k": entry.k, "loss": entry.loss, "set": set_name})
            for value, half_set in zip((entry.loss_short, entry.loss_long), half_names(set_name)):
                if value is not None and math.isfinite(value):
                    rows.append({"algorithm": algorithm, "k": entry.k, "loss": value, "set": half_set})
    return rows


def _algorithm_of_members(members: list[str]) -> str | None:
    """The data algorithm in the first member's RUN/config.yaml (``real`` without synthetic data).

    A member is a run directory or its ``RUN/model``; None when neither holds a run config.
    """
    from train.ensemble_cli import member_run_config

    for member in members[:1]:
        for run_dir in (Path(member), Path(member).parent):
            config = member_run_config(run_dir)
            if config is not None:
                synthetic = config.data.synthetic
                return synthetic.algorithm if synthetic else REAL
    return None


def load_ensemble_table(sources) -> pd.DataFrame:
    """Read ensemble losses from files named ``[ALGORITHM=]PATH`` (CSV, JSON list, or train-ensemble JSON).

    Returns a DataFrame with columns ``algorithm``, ``k``, ``loss``, ``set`` (``iid`` when a
    file does not say).

    Raises:
        UserError: a missing file, an unknown format, or missing columns (named).
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    parts = []
    for item in sources:
        label, path_text = named_value(str(item), "--ensembles", "ALGORITHM=FILE")
        path = Path(path_text)
        if not path.is_file():
            raise UserError(f"{path}: ensemble table not found (expected CSV or JSON with algorithm, k, loss)")
        if path.suffix == ".csv":
            part = read_table(path).rename(columns=_COLUMN_ALIASES)
        elif path.suffix == ".json":
            try:
                data = json.loads(path.read_bytes())
            except UnicodeDecodeError:
                raise UserError(f"{path}: not UTF-8 text (expected JSON; save the file as UTF-8)") from None
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
            if isinstance(data, dict) and "sets" in data:
                part = pd.DataFrame(_from_train_ensemble(EnsembleReport.parse(data, source=path), label or None, path))
            elif isinstance(data, list):
                part = pd.DataFrame(data).rename(columns=_COLUMN_ALIASES)
            else:
                raise UserError(f"{path}: expected a list of rows or a `megadocs train ensemble --json` report")
        else:
            raise UserError(f"{path}: unknown ensemble table format {path.suffix!r} (expected .csv or .json)")
        if label:
            part["algorithm"] = label
        parts.append(_checked_rows(part, path))
    if not parts:
        raise UserError("ensemble table: no file given (expected [ALGORITHM=]PATH, CSV or JSON)")
    table = pd.concat(parts, ignore_index=True)
    return table[["algorithm", "k", "loss", "set"]].sort_values(["set", "algorithm", "k"]).reset_index(drop=True)


def _checked_rows(part: pd.DataFrame, path: Path) -> pd.DataFrame:
    """One file's rows with numeric k and loss and a ``set`` (``iid`` when not given); UserError
    naming the file for missing columns or rows that are no ensemble loss."""
    missing = [c for c in ("algorithm", "k", "loss") if c not in part]
    if missing:
        raise UserError(f"{path}: ensemble table without column(s) {missing} (expected algorithm, k, loss[, set])")
    part = part.assign(set=part["set"].fillna(IID) if "set" in part else IID,
                       k=pd.to_numeric(part["k"], errors="coerce"), loss=pd.to_numeric(part["loss"], errors="coerce"))
    bad = part[part["k"].isna() | part["loss"].isna() | (part["k"] < 1) | part["algorithm"].isna()]
    if len(bad):
        raise UserError(f"{path}: ensemble table rows with k < 1, no algorithm or non-numeric k/loss: "
                        f"{bad.head(3).to_dict('records')}")
    return part


def ensemble_labels(studies: Mapping[str, EnsembleSummary]) -> tuple[dict[str, str], dict[str, str]]:
    """Which of ``studies`` (those :meth:`search.status.EnsembleSummary.refusal` lets through) to score
    under which algorithm label, and, per study left out, why: the points of every L(K) fit.

    * A study whose completed members are all another's (the sweep adopts a finished run of the same
      identity: two studies of one source share members) is that ensemble again: scored once, as the
      study with more members (ties: the first by name); its losses as a second L(K) would fit the same
      runs twice as independent repeats.
    * The label is the study's method, or ``method (source)`` where the method has studies of several
      sources (another G, model or setting: another L(K), not a repeat of one). Studies of one source
      with distinct members share the label: independent repeats of its L(K).

    Returns:
        ({study: label}, {study: why it is not scored}).
    """
    ready = {name: study for name, study in studies.items() if study.refusal() is None}
    kept: dict[str, EnsembleSummary] = {}
    left_out: dict[str, str] = {}
    for name, study in sorted(ready.items(), key=lambda item: (-len(item[1].completed), item[0])):
        members = set(study.completed)
        owner = next((other for other, kept_study in kept.items() if members <= set(kept_study.completed)), None)
        if owner is not None:
            left_out[name] = (f"its {len(members)} completed member(s) are members of {owner} (the same runs): "
                              f"scored once, as {owner}, not fitted twice as independent repeats")
        else:
            kept[name] = study
    sources: dict[str, set[str]] = {}
    for study in kept.values():
        sources.setdefault(study.method, set()).add(study.source)
    labels = {name: ensemble_label(study.method, None if len(sources[study.method]) == 1 else study.source)
              for name, study in sorted(kept.items())}
    return labels, left_out


def ensemble_label(method: str, source: str | None) -> str:
    """The algorithm label of ``method``'s ensembles from ``source`` (:func:`ensemble_labels`): the
    method, ``method (source)`` where a source is named; :func:`label_parts` reads it back."""
    return method if source is None else f"{method} ({source})"


_LABEL = re.compile(r"(?P<method>.+?) \((?P<source>.+)\)")


def label_parts(label: str) -> tuple[str, str | None]:
    """``(method, source)`` of an :func:`ensemble_label` (source None for a plain label).

    >>> label_parts("simple (simple-g4)"), label_parts("real")
    (('simple', 'simple-g4'), ('real', None))
    """
    match = _LABEL.fullmatch(label)
    return (match["method"], match["source"]) if match else (label, None)


class TrainedAt(NamedTuple):
    """Where an ensemble's members were trained: its source certification's model (``base`` where it
    names none) and setting (:data:`analysis.frame.SETTING`, "" for none).

    >>> str(TrainedAt("1.5b")), str(TrainedAt("base", "temperature=0.5"))
    ('model 1.5b', 'model base, temperature=0.5')
    """

    model: str
    setting: str = ""

    def __str__(self) -> str:
        return f"model {self.model}" + (f", {self.setting}" if self.setting else "")


def ensemble_pairing(studies: Mapping[str, EnsembleSummary], certifications: pd.DataFrame) -> dict[str, TrainedAt]:
    """Where each label of ``studies`` (:func:`ensemble_labels`) was trained, for
    :func:`compare_asymptotes`'s ``pairing``: its source certification's model and setting in the
    certifications frame (:mod:`analysis.frame`). A label whose source the frame does not hold is left
    out (compared by the default rule)."""
    if "certification" not in certifications:
        return {}
    sources = certifications.drop_duplicates("certification").set_index("certification")
    labels, _left_out = ensemble_labels(studies)
    pairing: dict[str, TrainedAt] = {}
    for name, label in labels.items():
        source = studies[name].source
        if source not in sources.index:
            continue
        row = sources.loc[source]
        pairing[label] = TrainedAt(str(model_key(row.get("model")) or "base"), str(model_key(row.get(SETTING)) or ""))
    return pairing


def score_ensemble_studies(
    studies: Mapping[str, EnsembleSummary], out_dir: str | Path, **options: Any
) -> tuple[list[str], dict[str, str]]:
    """Score each ensemble study's completed members at its source's current certified point
    with train's ensemble API.

    Writes ``out_dir/NAME.json`` per study through `train.ensemble_cli.score_ensemble` (which
    resumes a half-written one) and returns the ``ALGORITHM=PATH`` sources for
    :func:`load_ensemble_table` and, per study that could not be scored, the reason in one line
    (``EnsembleSummary.refusal``: members of an earlier certified point are never mixed in).
    ``studies`` is ``LedgerTables.ensembles``; ``options`` are fields of
    `train.ensemble_cli.EnsembleRequest` (e.g. ``device="cpu"``, ``val=[STORE]``, ``context=64``).
    Each source is labelled, and a study whose members another's hold is left out (with the reason),
    by :func:`ensemble_labels`.
    """
    from train.ensemble_cli import EnsembleRequest, score_ensemble

    out_dir = Path(out_dir)
    sources: list[str] = []
    labels, problems = ensemble_labels(studies)
    for name, study in studies.items():
        refusal = study.refusal()
        if refusal is not None:
            problems[name] = refusal
            continue
        if name not in labels:  # its members are another study's: said in problems
            continue
        members = study.completed
        missing = [d for d in members if not RunDir(d).has_model()]
        if missing:
            problems[name] = f"member {missing[0]} has no model/ (not a trained run?)"
            continue
        path = out_dir / f"{name}.json"
        try:
            score_ensemble(EnsembleRequest(members=members, out=path, **options))
        except UserError as exc:
            problems[name] = str(exc)
            continue
        sources.append(f"{labels[name]}={path}")
    return sources, problems


def fit_ensembles(table: pd.DataFrame, *, val_set: str = IID, **fit_options) -> dict[str, PowerLawFit | str]:
    """L(K) per algorithm on one validation set; unfit groups map to the reason (see fit_groups)."""
    part = table[table["set"] == val_set]
    if len(part) == 0:
        raise UserError(f"ensemble table: no rows for validation set {val_set!r} (sets: {sorted(table['set'].unique())})")
    return fit_groups(part, x="k", y="loss", group="algorithm", **fit_options)


def compare_asymptotes(fits: dict[str, PowerLawFit | str], *, reference: str = REAL,
                       pairing: Mapping[str, TrainedAt] | None = None) -> pd.DataFrame:
    """Asymptote E per algorithm with its interval, and its difference from the reference's.

    Columns: ``algorithm``, ``E``, ``E_low``, ``E_high``, ``E_determined``, ``delta`` (E -
    E_reference), ``delta_low``, ``delta_high``, ``note``. ``pairing`` (label -> where it was
    trained, :func:`ensemble_pairing`) compares a label it names with the reference's ensemble of
    the same model, of its setting where there is one (as a curve is compared with its setting's
    baseline, :func:`analysis.generation.baseline_for`): a synthetic ensemble with the real-only one
    of its model size. A label it does not name (a hand-labelled file; no ``pairing``) by the
    default rule: a label of one source, ``method (source)`` (:func:`ensemble_labels`), with the
    reference's ensembles of that source where there are some, and every label with the plain
    reference (the reference's ensembles of one source). Where there is no such reference, the note
    says what is missing (:func:`_reference_of`). Differences get an
    interval when both fits have bootstrap draws (independent draws, paired by index). An E the
    points do not determine (``PowerLawFit.determined``, the policy of :mod:`analysis.scaling`) is
    left blank, and so is every difference it enters: the fit's own description quotes it with its
    status.
    """
    rows = []
    for algorithm, fit in fits.items():
        if not isinstance(fit, PowerLawFit):
            rows.append({"algorithm": algorithm, "E": math.nan, "E_determined": False, "note": fit})
            continue
        determined = fit.determined["E"]
        interval = (fit.interval("E") if determined else None) or (math.nan, math.nan)
        row = {
            "algorithm": algorithm,
            "E": fit.E if determined else math.nan,
            "E_low": interval[0],
            "E_high": interval[1],
            "E_determined": determined,
            "delta": math.nan,
            "delta_low": math.nan,
            "delta_high": math.nan,
            "note": "; ".join([*([] if determined else [f"E {param_status(fit, 'E')}"]), *fit.notes]),
        }
        if label_parts(algorithm)[0] != reference and determined:
            ref, missing = _reference_of(algorithm, fits, reference, pairing or {})
            if ref is None:
                row["note"] = "; ".join([f"no delta: {missing}", *fit.notes])
            else:
                row["delta"] = fit.E - ref.E
                if fit.samples is not None and ref.samples is not None:
                    n = min(len(fit.samples), len(ref.samples))
                    diffs = fit.samples[:n, 0] - ref.samples[:n, 0]
                    row["delta_low"], row["delta_high"] = percentile_interval(diffs, fit.level)
        rows.append(row)
    return pd.DataFrame(rows)


def _unknown_labels(unknown: list[str], reference: str, at: TrainedAt, pairing: Mapping[str, TrainedAt]) -> str:
    """What is wrong with ``unknown``, ``reference`` labels that no ensemble study of the sweep has
    (a hand-labelled file's: ``pairing`` does not name them, so their model is unknown), and what was
    expected: the label of the sweep's ``reference`` study at ``at``, or that it has none. "" for none."""
    if not unknown:
        return ""
    one = len(unknown) == 1
    studies = [study for study, trained in pairing.items() if label_parts(study)[0] == reference
               and trained.model == at.model]
    expected = (f"expected the label of the sweep's {reference} ensemble study at {at}, {studies[0]}" if len(studies) == 1
                else f"expected the label of one of the sweep's {reference} ensemble studies at {at}, "
                f"{', '.join(studies)}" if studies else f"the sweep has no {reference} ensemble study at {at}")
    return (f"{', '.join(unknown)}: no ensemble study of this sweep has {'that label' if one else 'these labels'}, "
            f"so {'its model is' if one else 'their models are'} unknown; {expected}")


def _reference_of(label: str, fits: Mapping[str, PowerLawFit | str], reference: str,
                  pairing: Mapping[str, TrainedAt]) -> tuple[PowerLawFit | None, str]:
    """The fit ``label``'s asymptote is compared with (:func:`compare_asymptotes`): where ``pairing``
    names ``label``, the reference's of its model, of its setting where there is one; else the
    reference's of ``label``'s source, else the plain reference's. Or None and what is missing, in
    one phrase."""
    others = [other for other in fits if label_parts(other)[0] == reference]
    if label in pairing:
        at = pairing[label]
        same_model = [other for other in others if other in pairing and pairing[other].model == at.model]
        same = [other for other in same_model if pairing[other].setting == at.setting]
        where = at if same else TrainedAt(at.model)
        same = same or same_model
        if len(same) > 1:
            return None, f"several {reference} ensembles at {where} ({', '.join(same)}): no one reference"
        name = same[0] if same else None
        which = f"{reference} ensemble at {where}"
        listed = "; ".join(part for part in (", ".join(f"{other} at {pairing[other]}" for other in others
                                                     if other in pairing),
                                           _unknown_labels([o for o in others if o not in pairing], reference,
                                                           TrainedAt(at.model), pairing)) if part)
    else:
        source = label_parts(label)[1]
        wanted = [*([ensemble_label(reference, source)] if source is not None else []), reference]
        name = next((candidate for candidate in wanted if candidate in fits), None)
        which = (f"{reference} ensemble of source {source}, nor a plain {reference} one," if source is not None
                 else f"plain {reference} ensemble")
        listed = f"{', '.join(others)} are of other sources"
    if name is None:
        if not others:
            return None, f"no {reference} ensemble to compare with"
        return None, f"no {which} to compare with ({listed})"
    ref = fits[name]
    if not isinstance(ref, PowerLawFit):
        return None, f"{name}'s L(K) is not fitted"
    if not ref.determined["E"]:
        return None, f"{name}'s E is not determined"
    return ref, ""
