"""The user-facing documents name only what the code has: every option written after a `megadocs`
command is an option of that command's real parser, every dotted Python name resolves, every
repository file named exists, and every field of a SLURM profile is in slurm/README.md's table."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from megadocs.cli import build_parser
from tests.tree import ROOT

DOCS = ["README.md", "search/README.md", "slurm/README.md", "notebooks/README.md", "analysis/README.md",
        "gen/README.md", "benchmarks/README.md", "docs/architecture.md"]  # fmt: skip
PACKAGES = ("megadocs", "search", "train", "gen", "analysis")


def _text(doc: str) -> str:
    """The prose of a document (code blocks left out) with its lines joined, so that a command or
    name wrapped over lines is one code span."""
    prose = re.sub(r"```.*?```", " ", (ROOT / doc).read_text(), flags=re.S)
    return re.sub(r"\s*\n\s*", " ", prose)


def _commands(doc: str) -> list[str]:
    """`megadocs ...` as written in code spans and in shell blocks (one command a line)."""
    raw = (ROOT / doc).read_text()
    lines = [line for block in re.findall(r"```(?:bash|sh)\n(.*?)```", raw.replace("\\\n", " "), re.S)
             for line in block.splitlines()]  # fmt: skip
    spans = re.findall(r"`(megadocs [^`]+)`", _text(doc))
    return [item[item.index("megadocs ") :].split("  #")[0] for item in lines + spans if "megadocs " in item]


def _children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {name: sub for name, sub in action._name_parser_map.items() if name != "run"}
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """A command's options; a group's (`megadocs gen ... --executor`): any of its commands'."""
    found = set(parser._option_string_actions)
    for child in _children(parser).values():
        found |= _options(child)
    return found


def _command_parser(words: list[str]) -> tuple[str, argparse.ArgumentParser]:
    parser, path = build_parser(), ["megadocs"]
    for word in words:
        children = _children(parser)
        if word not in children:
            break
        parser, path = children[word], [*path, word]
    return " ".join(path), parser


@pytest.mark.parametrize("doc", DOCS)
def test_every_option_a_document_writes_is_the_commands(doc):
    commands = _commands(doc)
    unknown = []
    for command in commands:
        path, parser = _command_parser(command.split()[1:])
        options = _options(parser)
        unknown += [f"{path} {flag} (in `{command}`)" for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command)
                    if flag not in options]  # fmt: skip
    assert not unknown, f"{doc}: {unknown}"


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            if not hasattr(target, part):
                return False
            target = getattr(target, part)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS)
def test_every_python_name_a_document_writes_resolves(doc):
    pattern = r"(?<![\w./-])((?:" + "|".join(PACKAGES) + r")(?:\.[A-Za-z_]\w*)+)"
    names = {name for span in re.findall(r"`([^`]+)`", _text(doc)) for name in re.findall(pattern, span)
             if not name.endswith((".py", ".md", ".yaml", ".json", ".jsonl", ".db")) and "/" not in span}  # fmt: skip
    assert [name for name in sorted(names) if not _resolves(name)] == [], doc


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_file_a_document_names_exists(doc):
    """Placeholders (`slurm/profiles/NAME.yaml`) and the files the reader is told to make
    (`slurm/profiles/mine.yaml`) are not the repository's."""
    tops = "|".join([*PACKAGES, "tests", "benchmarks", "slurm", "notebooks", "docs"])
    pattern = r"(?<![\w./$-])((?:" + tops + r")/[\w./-]*\.(?:py|yaml|md|ipynb|sh|json))\b"
    named = set(re.findall(pattern, _text(doc)))
    missing = [
        path
        for path in sorted(named)
        if not (ROOT / path).exists() and "/mine" not in path and not re.search(r"/[A-Z_]+\.", path)
    ]
    assert missing == [], doc


def test_slurm_readme_lists_every_profile_field():
    from megadocs.executors import SlurmProfile

    table = {
        row.split("|")[1]
        for row in (ROOT / "slurm" / "README.md").read_text().splitlines()
        if row.startswith("| `")
    }
    named = {field for cell in table for field in re.findall(r"`(\w+)`", cell)}
    assert set(SlurmProfile.model_fields) - named == set()


@pytest.mark.parametrize("doc", DOCS)
def test_every_section_a_document_points_to_is_there(doc):
    """`benchmarks/RESULTS.md "gpu_check"`, `(docs/architecture.md, "Conventions")`: the quoted
    section is a heading of that file (or the start of one)."""
    missing = []
    for path, section in re.findall(r"`?([\w/.-]+\.md)`?,? \"([^\"]+)\"", _text(doc)):
        target = ROOT / path if (ROOT / path).exists() else (ROOT / doc).parent / path
        headings = re.findall(r"^#+ (.*?)\s*$", target.read_text(), re.M) if target.exists() else []
        if not any(heading.startswith(section) for heading in headings):
            missing.append(f'{path} "{section}"')
    assert missing == [], doc
