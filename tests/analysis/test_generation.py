"""generation_table and findings on ledgers where no certification has a finite loss."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.findings import findings
from analysis.generation import generation_table
from megadocs.errors import UserError


def _certifications(losses: list[float]) -> pd.DataFrame:
    """A hand-built certifications frame (the analysis contract: any source) with one iid loss each."""
    return pd.DataFrame({
        "certification": [f"c{i}" for i in range(len(losses))],
        "method": ["real", *["simple"] * (len(losses) - 1)],
        "g": [0, *range(1, len(losses))],
        "certified": [False] * len(losses),
        "loss": losses,
        "val_iid": losses,
    })


@pytest.mark.parametrize(("losses", "why"), [
    ([math.nan, math.nan], "none has a loss yet"),          # every run failed: no loss at all
    ([math.inf, math.inf, math.nan], "2 of 3 diverged"),   # every run of two certifications diverged
])
def test_no_finite_loss_is_one_line_not_a_crash(losses, why):
    # An all-NaN loss column used to empty the frame and crash with KeyError: 'method'.
    with pytest.raises(UserError, match=why):
        generation_table(_certifications(losses))
    [line] = findings(_certifications(losses))
    assert line.startswith("Nothing to compare yet") and why in line


def test_generation_table_has_its_columns_with_and_without_rows():
    """`COLUMNS` is the one list of the table's columns (the notebook's fallback for a ledger with no
    finite loss is `empty_table()`, not a hand-written copy)."""
    from analysis.efficiency import load_reference_law
    from analysis.generation import COLUMNS, empty_table

    certifications = _certifications([3.55, 3.45, 3.40])
    assert tuple(generation_table(certifications, law=load_reference_law()).columns) == COLUMNS
    assert tuple(empty_table().columns) == COLUMNS and len(empty_table()) == 0
