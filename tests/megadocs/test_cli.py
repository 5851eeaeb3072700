"""The command-line helpers every package's CLI uses (megadocs/cli.py)."""

from __future__ import annotations

import pytest

from megadocs.cli import named_value
from megadocs.errors import UserError


def _val(items):
    from train.ensemble_cli import validation_specs

    return [(spec.name, str(spec.store)) for spec in validation_specs(items, None)]


def _ensembles(items):
    from analysis.ensembles import load_ensemble_table

    return load_ensemble_table(items)


@pytest.mark.parametrize(("read", "flag", "form"), [(_val, "--val", "NAME=STORE"),
                                                    (_ensembles, "--ensembles", "ALGORITHM=FILE")])
def test_a_name_with_a_space_is_refused_as_a_name_unless_the_item_is_a_path(read, flag, form, tmp_path, monkeypatch):
    """`my set=store` said 'my set=store: not found' (read as one path): it is a NAME that is not one."""
    monkeypatch.chdir(tmp_path)
    name = form.partition("=")[0]
    with pytest.raises(UserError, match=rf"^{flag}: expected {form} \(or \w+ alone\), got 'my set=x.json': 'my set' "
                                        rf"is not a valid {name} \(.*\) and no file or directory 'my set=x.json' exists$"):
        read(["my set=x.json"])
    (tmp_path / "my set=x.json").write_text("x")  # the same item, a path that exists: a VALUE alone
    assert named_value("my set=x.json", flag, form) == (None, "my set=x.json")
    assert named_value("runs/lr=0.01/x.json", flag, form) == (None, "runs/lr=0.01/x.json")  # a '/' before '=': a path
