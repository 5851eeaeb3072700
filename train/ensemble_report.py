"""The report of ``megadocs train ensemble --json OUT``, as one typed record.

`train.ensemble_cli.score_ensemble` writes it (and resumes from it); analysis reads it
(`analysis.ensembles.load_ensemble_table`) through :meth:`EnsembleReport.parse`, so the two cannot
drift apart. A module of its own so that ``megadocs --help`` (which builds the ensemble parser)
does not import pydantic.

>>> report = EnsembleReport.parse({"members": ["a", "b"], "sets": {"iid": [{"k": 1, "loss": 3.4}]}}, source="r")
>>> report.sets["iid"].by_k[0].loss, report.sets["iid"].source
(3.4, None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from megadocs import compat
from megadocs.config import format_validation_error
from megadocs.errors import UserError
from megadocs.formats import BenchmarkScore, finite_or_none

__all__ = ["EnsembleReport", "EnsembleSet", "EnsembleLoss", "EnsembleBenchmarks", "BenchmarkRequest"]


class EnsembleLoss(BaseModel):
    """One row of a set's ``by_k``: the ensemble of the first ``k`` members and its loss (null:
    no token scored); ``loss_short``/``loss_long`` only for the ``iid`` set (its halves)."""

    model_config = ConfigDict(extra="ignore")  # reports written before carried e.g. "tokens"

    k: int
    members: list[str] = []
    loss: float | None
    loss_short: float | None = None
    loss_long: float | None = None

    @property
    def has_halves(self) -> bool:
        return "loss_short" in self.model_fields_set


class EnsembleSet(BaseModel):
    """One validation set of the report: where its windows came from and L(K)."""

    source: dict[str, str] | None = None
    """``{"store", "split"}`` (a finished set is reused when it matches); absent in older reports."""
    by_k: list[EnsembleLoss]


class BenchmarkRequest(BaseModel):
    """What the benchmarks were asked for (``--benchmarks``, ``--benchmark-data``,
    ``--benchmark-limit``): a re-run asking for the same reuses the scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[str]
    data: str | None
    """Local benchmark files (None: the Hugging Face Hub)."""
    limit: int | None
    """Items per task (None: all)."""


class EnsembleBenchmarks(BaseModel):
    """The report's ``benchmarks``: the request and the full ensemble's zero-shot scores by task,
    and their ``average`` (`train.downstream.evaluate_benchmarks`, as records)."""

    request: BenchmarkRequest
    scores: dict[str, BenchmarkScore]


class EnsembleReport(BaseModel):
    """The report of ``megadocs train ensemble --json OUT`` (module docstring), written by
    `score_ensemble` and read by analysis (`analysis.ensembles`) through :meth:`parse`.

    Older reports are read too: a set as a bare list of rows (no ``source``), no ``context`` or
    ``windows``, rows with keys since dropped. :meth:`to_json` writes the fields a report holds,
    nothing more (a set without halves has no ``loss_short``).
    """

    members: list[str]
    context: int | None = None
    windows: int | None = None
    sets: dict[str, EnsembleSet] = {}
    benchmarks: EnsembleBenchmarks | None = None
    """Only with ``--benchmarks``."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Older reports (a set as a bare list of rows): :data:`megadocs.compat.RECORDS`."""
        return compat.upgrade(compat.ENSEMBLE_REPORT, data)

    def to_json(self) -> dict[str, Any]:
        """Standard JSON: the fields the report was given (non-finite numbers as null)."""
        return finite_or_none(self.model_dump(mode="json", exclude_unset=True))

    @classmethod
    def parse(cls, data: Any, *, source: str | Path) -> EnsembleReport:
        """Validate a loaded report; UserError naming ``source`` and the field."""
        try:
            return cls.model_validate(finite_or_none(data))
        except ValidationError as exc:
            line = format_validation_error(exc, str(source), model=cls)
            raise UserError(f"{line} (expected a `megadocs train ensemble --json` report)") from None
