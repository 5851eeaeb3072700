"""The console script's commands as tests reach them: the argparse parser of ``megadocs WORDS...``,
whose options (their dests and spellings) are the vocabulary a test iterates."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from megadocs.cli import build_parser


def command_parser(*words: str) -> argparse.ArgumentParser:
    """The argparse parser of ``megadocs WORDS...`` (what the console script builds).

    >>> command_parser("search", "plan").prog, command_parser("train", "benchmarks").prog
    ('megadocs search plan', 'megadocs train benchmarks')
    """
    parser = build_parser()
    for word in words:
        [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = commands._name_parser_map[word]  # not .choices: train's is any word (a CONFIG.yaml)
    return parser


def every_command(parser: argparse.ArgumentParser | None = None,
                  words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(WORDS, parser)`` of every parser of the console script, ``megadocs`` itself and each group
    (``train``, whose options precede a CONFIG.yaml) included, as `command_parser` reaches them.

    >>> ("analysis", "export") in {words for words, _ in every_command()}
    True
    """
    parser = parser or build_parser()
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, child in action._name_parser_map.items():
                yield from every_command(child, (*words, word))
