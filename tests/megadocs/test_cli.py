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


def _destinations():
    """(WORDS, option) of every option of every command that names where the command writes."""
    from megadocs.cli import Destination
    from tests.commands import every_command

    return [(words, action) for words, parser in every_command() for action in parser._actions
            if isinstance(action, Destination)]


def test_every_out_option_is_a_destination():
    """An --out, or an option whose value is an OUT file (`train ensemble --json OUT`), is checked as
    a destination; both kinds (a file, a folder) are offered."""
    from megadocs.cli import Destination
    from tests.commands import every_command

    writers = [(words, action) for words, parser in every_command() for action in parser._actions
               if "--out" in action.option_strings or action.metavar == "OUT"]
    assert writers and all(isinstance(action, Destination) for _, action in writers), writers
    assert {action.folder for _, action in _destinations()} == {False, True}


def test_a_destination_that_cannot_be_written_is_one_line_naming_the_flag_typed(tmp_path, monkeypatch, capsys):
    """`analysis export SWEEP --out FILE` onto a path it could not write ended in a traceback (or in a
    line of another problem, after the work): every destination option of every command, each
    spelling, is refused as it is read, in one line naming the flag, before anything is done. A path
    under a regular file: what no one may write, root included."""
    from megadocs.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("")
    for words, action in _destinations():
        for flag in action.option_strings:
            path = "file.txt/sub/out.json"
            assert main([*words, flag, path]) == 2, (words, flag)
            assert capsys.readouterr().err == f"error: {flag}: cannot write {path}: file.txt is a file, not a directory\n"
            path, problem = ("file.txt", "it is a file, not a directory") if action.folder else \
                (".", "it is a directory, expected a file")
            assert main([*words, flag, path]) == 2, (words, flag)
            assert capsys.readouterr().err == f"error: {flag}: cannot write {path}: {problem}\n"
    assert sorted(tmp_path.iterdir()) == [tmp_path / "file.txt"]  # nothing was made


def test_a_destination_left_at_its_default_is_refused_as_one_typed(tmp_path, monkeypatch, capsys):
    """`megadocs demo` where ./runs is a file ended in mkdir's traceback: a destination's default is
    the user's too, refused in one line naming the option that would change it."""
    import argparse
    from pathlib import Path

    from megadocs.cli import main

    monkeypatch.chdir(tmp_path)
    defaults = [(words, action) for words, action in _destinations()
                if isinstance(action.default, str) and action.default != argparse.SUPPRESS]
    assert defaults
    for words, action in defaults:
        top = Path(action.default).parts[0]
        (tmp_path / top).write_text("")
        assert main(list(words)) == 2, words
        assert capsys.readouterr().err == (f"error: {action.option_strings[0]}: cannot write {action.default}: "
                                           f"{top} is a file, not a directory\n")
        (tmp_path / top).unlink()


def test_a_file_missing_inside_a_destination_folder_is_the_works_own_error_not_the_destination(tmp_path):
    """A FileNotFoundError of a file inside the destination folder (a run's own file its code expected:
    perhaps a bug) is not reported as '--out: cannot write ...' (exit 2, which pointed at the folder the
    user gave); a folder on the way that cannot be made, or the file beside a file destination, still is."""
    import argparse
    import errno

    from megadocs.cli import _GIVEN, GivenDestination, _refused_destination

    out = tmp_path / "run"
    args = argparse.Namespace(**{_GIVEN + "out": GivenDestination("--out", str(out), folder=True)})
    inside = FileNotFoundError(errno.ENOENT, "No such file or directory", str(out / "metrics.json"))
    assert _refused_destination(inside, args) is None
    on_the_way = FileNotFoundError(errno.ENOENT, "No such file or directory", str(out))
    assert _refused_destination(on_the_way, args) == f"--out: cannot write {out}: no such file or directory"
    csv = tmp_path / "runs.csv"
    args = argparse.Namespace(**{_GIVEN + "out": GivenDestination("--out", str(csv), folder=False)})
    beside = FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / ".runs.csv.tmp"))
    assert _refused_destination(beside, args).startswith(f"--out: cannot write {csv}: no such file or directory")
