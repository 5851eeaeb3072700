"""The CLI teaches: every help screen has a description and examples, `--version` works, the
same idea has one name everywhere (old spellings still accepted), `--set` errors name `--set`."""

from __future__ import annotations

import argparse

import pytest

from megadocs import __version__
from megadocs.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: str = "megadocs"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_has_a_description_and_runnable_examples():
    found = dict(_parsers(build_parser()))
    assert {"megadocs gen sample", "megadocs search dashboard", "megadocs analysis report",
            "megadocs data info"} <= set(found)  # fmt: skip
    for path, parser in found.items():
        assert parser.description and len(parser.description) > 20, f"{path}: no description"
        text = parser.format_help()
        assert "examples:\n  megadocs " in text or "examples:\n  tensorboard" in text, f"{path}: no example"
        commands = [line.strip() for line in text.split("examples:\n", 1)[1].splitlines() if line.startswith("  ")]
        # examples name this very command (the top level and groups: any of theirs)
        assert any(c.startswith(path) for c in commands), f"{path}: examples {commands}"


@pytest.mark.parametrize("words", [["train", "ensemble"], ["train", "benchmarks"]])
def test_train_ensemble_and_benchmarks_help_has_examples(words, capsys):
    with pytest.raises(SystemExit) as info:
        main([*words, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"examples:\n  megadocs {' '.join(words)} --members" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"megadocs {__version__}"


@pytest.mark.parametrize("spelling", ["--corpus", "--docs"])
def test_corpus_and_docs_are_one_option_everywhere(spelling):
    parser = build_parser()
    prepare = parser.parse_args(["data", "prepare", spelling, "src", "--out", "o", "--vocab-size", "300"])
    rephrase = parser.parse_args(["gen", "rephrase", spelling, "src", "--generator", "m", "--g", "2", "--out", "o"])
    assemble = parser.parse_args(["gen", "assemble", "--pool", "p", "--algorithm", "simple", "--g", "1", spelling, "s"])
    demo = parser.parse_args(["demo", spelling, "src"])
    assert prepare.corpus == rephrase.docs == demo.corpus == "src" and assemble.docs == "s"


@pytest.mark.parametrize("old", [False, True])
def test_benchmarks_options_match_ensemble_names_and_keep_the_old_ones(old):
    from train.ensemble_cli import add_benchmark_arguments

    parser = argparse.ArgumentParser()
    add_benchmark_arguments(parser)
    names = ["--models", "--tasks", "--data-dir", "--limit"] if old else \
        ["--members", "--benchmarks", "--benchmark-data", "--benchmark-limit"]  # fmt: skip
    args = parser.parse_args([names[0], "m1", "m2", names[1], "piqa", names[2], "d", names[3], "5"])
    assert (args.models, args.benchmarks, args.benchmark_data, args.limit) == (["m1", "m2"], "piqa", "d", 5)


def test_set_errors_name_the_set_option_not_the_file(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("data: {store: s}\noptim: {batch_size: 64}\n")
    assert main(["train", str(path), "--set", "optim.lr=-1"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --set optim.lr=-1: optim.lr: ")
    # a cross-field check of the section an override changed
    assert main(["train", str(path), "--set", "optim.micro_batch_size=5"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --set optim.micro_batch_size=5: optim.micro_batch_size: ")
    # a bad value the file itself holds is still the file's
    path.write_text("data: {store: s}\noptim: {lr: 0}\n")
    assert main(["train", str(path), "--set", "optim.weight_decay=0.1"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {path}: optim.lr: ")


@pytest.mark.parametrize(("raised", "line"), [
    (KeyboardInterrupt(), "interrupted: re-run the same command to resume"),
    (KeyboardInterrupt("cancelled 2 slurm task(s) (7_0, 7_1); re-run"), "interrupted: cancelled 2 slurm task(s) (7_0, 7_1); re-run"),
])
def test_ctrl_c_ends_in_one_line_and_exit_130(monkeypatch, capsys, raised, line):
    """A bare Ctrl-C says how to resume; one raised with what was stopped on the way out says that."""
    import megadocs.cli

    def interrupted(_args):
        raise raised

    parser = build_parser()
    monkeypatch.setattr(megadocs.cli, "build_parser", lambda: parser)
    parser.set_defaults(func=interrupted)
    assert main([]) == 130
    assert capsys.readouterr().err == line + "\n"


def test_output_into_a_closed_pipe_is_no_traceback():
    """`megadocs search plan ... --json | head -1`: the reader leaves before the command writes.
    That was a BrokenPipeError traceback; it is exit 141 (as a shell reports it) and no output."""
    import subprocess
    import sys
    from pathlib import Path

    sweep = Path(__file__).resolve().parents[1] / "search" / "examples" / "analytic.yaml"
    command = [sys.executable, "-m", "megadocs.cli", "search", "plan", str(sweep), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # closed before the plan is computed (about a second): the write is refused
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
