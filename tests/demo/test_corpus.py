"""`megadocs demo`'s corpus step, which refuses a corpus too small before any other step runs (fast)."""

from __future__ import annotations

import json

from megadocs.cli import main
from megadocs.demo import SMOKE
from tests.commands import command_parser


def test_a_corpus_too_small_names_the_corpus_option_as_typed(tmp_path, capsys):
    """--docs SRC (the older spelling of --corpus) of too few documents said '--corpus SRC: only ...'."""
    source = tmp_path / "few.jsonl"
    text = "x" * SMOKE.min_chars
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": text}) + "\n" for i in range(2)))
    [spellings] = [action.option_strings for action in command_parser("demo")._actions if action.dest == "corpus"]
    for spelling in spellings:
        assert main(["demo", "--smoke", "--out", str(tmp_path / "demo"), spelling, str(source)]) == 2
        err = capsys.readouterr().err
        assert err == (f"error: {spelling}: {source}: only 2 documents of {SMOKE.min_chars}-{SMOKE.max_chars} "
                       f"characters; the demo needs at least {SMOKE.val_docs + 8}\n")
