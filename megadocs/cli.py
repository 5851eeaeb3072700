"""The `megadocs` console script: one dispatcher, each package owns its subcommands.

A package exposes ``register(subparsers)`` in its ``cli`` module; it adds its parser(s) and
sets ``func`` (called with the parsed namespace; its return value is the exit status, one of
:class:`megadocs.exits.Exit`: the same number means the same for every command). Every
parser has a description and examples: ``add_parser(..., description=..., **examples(...))``.
CLI modules import heavy libraries (torch, vllm, optuna) inside their handlers so that
``megadocs --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

from megadocs import __version__
from megadocs.errors import FieldError, UserError, WorkFailed, disk_full_message, refused_in
from megadocs.exits import Exit
from megadocs.formats import NAME_PATTERN

__all__ = ["GROUPS", "HelpFormatter", "examples", "named_value", "Parser", "Count", "Destination",
           "GivenDestination", "unwritable", "option_flags", "flags_named", "build_parser", "main"]

# group name -> "module:function" that registers it
GROUPS = {
    "data": "train.cli:register_data",
    "train": "train.cli:register_train",
    "gen": "gen.cli:register",
    "search": "search.cli:register",
    "analysis": "analysis.cli:register",
    "demo": "megadocs.demo:register",
}


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose paragraphs like argparse does, but keeps indented lines (examples) verbatim."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if lines and all(line.startswith("  ") or line.endswith(":") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                                subsequent_indent=indent))
        return "\n\n".join(paragraphs)


def examples(*commands: str, note: str | None = None) -> dict:
    r"""``add_parser``/``ArgumentParser`` keyword arguments: an epilog of example commands.

    >>> parser = argparse.ArgumentParser(prog="x", **examples("x --flag"))
    >>> "examples:\n  x --flag" in parser.format_help()
    True
    """
    epilog = "examples:\n" + "\n".join(f"  {command}" for command in commands)
    if note:
        epilog += "\n\n" + note
    return {"epilog": epilog, "formatter_class": HelpFormatter}


def named_value(item: str, flag: str, form: str) -> tuple[str | None, str]:
    """A ``[NAME=]VALUE`` item of ``flag`` as (NAME, VALUE), NAME None where it names none.
    ``form`` is the named spelling (``NAME=STORE``) its error shows; a VALUE is a path.

    NAME is the part before the first ``=`` when that part is a plain name
    (:data:`~megadocs.formats.NAME_PATTERN`: no ``/``, no ``=``); otherwise the whole item is the
    VALUE, so a path may hold ``=`` (sweep folders such as ``runs/lr=0.01/store``). A path whose
    first ``=`` follows a plain name (``lr=0.01/store``) is written ``./lr=0.01/store``. A part
    before the ``=`` that is neither (no ``/``, not a plain name: ``my set=store``) is refused as a
    NAME unless the whole item is a path that exists.

    >>> named_value("arxiv=runs/lr=0.01/store", "--val", "NAME=STORE")
    ('arxiv', 'runs/lr=0.01/store')
    >>> named_value("runs/lr=0.01/store", "--val", "NAME=STORE"), named_value("data/a", "--val", "NAME=STORE")
    ((None, 'runs/lr=0.01/store'), (None, 'data/a'))
    >>> named_value("=data/a", "--val", "NAME=STORE")
    Traceback (most recent call last):
    megadocs.errors.UserError: --val: expected NAME=STORE (or STORE alone), got '=data/a': nothing on one side of '='
    >>> named_value("my set=data/a", "--val", "NAME=STORE")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    megadocs.errors.UserError: --val: expected NAME=STORE (or STORE alone), got 'my set=data/a': 'my set' is not a valid NAME (...
    """
    name, sep, value = item.partition("=")
    label, _, alone = form.partition("=")
    expected = f"{flag}: expected {form} (or {alone} alone), got {item!r}"
    if not sep:
        return None, item
    if name.strip() and not re.fullmatch(NAME_PATTERN, name):
        if "/" in name or os.sep in name or os.path.lexists(item):
            return None, item  # a path holding '=' (runs/lr=0.01/store): a VALUE alone
        raise UserError(f"{expected}: {name!r} is not a valid {label} ({NAME_PATTERN}: a letter or digit, then "
                        f"letters, digits and _ . + -) and no file or directory {item!r} exists")
    if not name.strip() or not value.strip():
        raise UserError(f"{expected}: nothing on one side of '='")
    return name, value


class _NotedStore(argparse._StoreAction):
    """argparse's ``store`` that also notes the spelling typed (`Parser.typed`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        if option_string is not None and isinstance(parser, Parser):
            parser.typed[self.dest] = option_string


class Parser(argparse.ArgumentParser):
    """The console script's parser (and, as argparse makes them, its subcommands'): it notes the
    spelling each option was typed under in its last parse (``typed``: ``dest`` -> the spelling,
    an alias such as ``--models`` for ``--members`` included), which `flags_named` names.

    >>> parser = Parser()
    >>> _ = parser.add_argument("--members", "--models", dest="models")
    >>> _ = parser.parse_args(["--models", "a"])
    >>> parser.typed
    {'models': '--models'}
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.typed: dict[str, str] = {}
        for name in (None, "store"):  # a plain option: action=None or "store"
            self.register("action", name, _NotedStore)

    def parse_known_args(self, args=None, namespace=None):
        self.typed = {}
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:  # a destination left at its default (demo's runs/demo) is one the user gives
            if isinstance(action, Destination) and isinstance(action.default, str) and action.default != argparse.SUPPRESS \
                    and not hasattr(namespace, _GIVEN + action.dest) and getattr(namespace, action.dest) == action.default:
                action.give(namespace, action.default, option_flags(self)[action.dest])
        return namespace, extras


class Count(_NotedStore):
    """An option's count of at least 1 that no record checks (``--batch-size``): ``type=int``, and a
    count below 1 is refused as it is read, in one line naming the flag typed, in the form a
    record's field is named by its flag (`flags_named`): ``--batch-size: expected >= 1, got 0``
    (`main`). A word that is no integer is argparse's own error.

    >>> parser = Parser(prog="x")
    >>> _ = parser.add_argument("--batch-size", "--batch", action=Count)
    >>> parser.parse_args(["--batch-size", "4"]).batch_size
    4
    >>> parser.parse_args(["--batch", "0"])
    Traceback (most recent call last):
    megadocs.errors.UserError: --batch: expected >= 1, got 0
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, type=int, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if values < 1:
            raise UserError(f"{option_string or self.dest}: expected >= 1, got {values}")
        super().__call__(parser, namespace, values, option_string)


@dataclass(frozen=True)
class GivenDestination:
    """A destination of a command line (`Destination`): its flag as typed, its path, and whether the
    command makes or fills that folder (else it writes that file, beside which its temporary one)."""

    flag: str
    path: str
    folder: bool

    @property
    def place(self) -> str:
        """The folder the command writes in: the path's own, or the one that holds the file."""
        return self.path if self.folder else os.path.dirname(self.path) or "."


_GIVEN = "_destination_"  # the namespace's attribute of each destination given: _destination_<dest>


class Destination(_NotedStore):
    """An option naming where the command writes: a file (``folder=False``) or a folder it makes or
    fills (``folder=True``). The one rule of every destination the user gives (typed, or the option's
    default: `Parser`): one that cannot be written is refused in one line naming the flag as it is
    read (`unwritable`), before any work; and a path there that the file system refuses later (where
    the check could not tell: root in /proc) is one line naming the flag too (`main`), not a
    traceback. A command writes there with plain ``mkdir``/``open``, no try/except of its own.

    >>> parser = Parser(prog="x")
    >>> _ = parser.add_argument("--out", action=Destination, folder=False)
    >>> parser.parse_args(["--out", "/dev/null/runs.csv"])
    Traceback (most recent call last):
    megadocs.errors.UserError: --out: cannot write /dev/null/runs.csv: /dev/null is a file, not a directory
    """

    def __init__(self, *args, folder: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.folder = folder

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        self.give(namespace, values, option_string or self.dest)

    def give(self, namespace: argparse.Namespace, path: str | os.PathLike, flag: str) -> None:
        """Refuse ``path`` (typed as ``flag``, or this option's default) unless it can be written;
        else note it in ``namespace`` (`given_destinations`)."""
        given = GivenDestination(flag, os.fspath(path), self.folder)
        problem = unwritable(given.path, folder=self.folder)
        if problem is not None:
            raise UserError(f"{given.flag}: cannot write {given.path}: {problem}")
        setattr(namespace, _GIVEN + self.dest, given)


def unwritable(path: str | os.PathLike, *, folder: bool) -> str | None:
    """Why ``path`` cannot be written (a file, or with ``folder`` a folder made or filled there),
    or None when it can as far as the file system says before trying: the nearest folder that
    exists on its way must be one that we may write in, and a file's path no folder.

    >>> unwritable("/dev/null/sub/out.csv", folder=False), unwritable("/", folder=False)
    ('/dev/null is a file, not a directory', 'it is a directory, expected a file')
    """
    path = os.path.normpath(path)
    if not folder and os.path.isdir(path):
        return "it is a directory, expected a file"
    place = path if folder else os.path.dirname(path) or "."
    while not os.path.lexists(place):
        place = os.path.dirname(place) or "."
    if not os.path.isdir(place):
        return f"{place} is a file, not a directory" if place != path else "it is a file, not a directory"
    if not os.access(place, os.W_OK | os.X_OK):
        read_only = os.statvfs(place).f_flag & os.ST_RDONLY
        return f"{place} is on a read-only file system" if read_only else f"no permission to write in {place}"
    return None


def given_destinations(args: argparse.Namespace) -> list[GivenDestination]:
    """The destinations of the command line parsed into ``args``, typed or by default (`Destination`)."""
    return [value for key, value in vars(args).items() if key.startswith(_GIVEN)]


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The flag the user types for each option's ``dest`` (its first long spelling): how a
    command's messages name the fields its options fill.

    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--corpus", "--docs", dest="docs")
    >>> _ = parser.add_argument("--vocab-size", type=int)
    >>> option_flags(parser)["docs"], option_flags(parser)["vocab_size"]
    ('--corpus', '--vocab-size')
    """
    return {action.dest: next((flag for flag in action.option_strings if flag.startswith("--")),
                              action.option_strings[0])
            for action in parser._actions if action.option_strings}


@contextlib.contextmanager
def flags_named(parser: argparse.ArgumentParser, *, where: str | None = None) -> Iterator[None]:
    """A :class:`~megadocs.errors.FieldError` of the record ``parser``'s options fill (raised with
    ``where``: the record's, not a file's it reads) names the flag that set the field, not the
    field: ``--vocab-size: expected >= 257, got 3``; as the user typed it where a :class:`Parser`
    noted an alias (``--models``), else its first long spelling (`option_flags`). Another error,
    or a field no option sets, is raised as it is.

    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--vocab-size", type=int)
    >>> with flags_named(parser):
    ...     raise FieldError("vocab_size", "expected >= 257, got 3")
    Traceback (most recent call last):
    megadocs.errors.UserError: --vocab-size: expected >= 257, got 3
    """
    try:
        yield
    except FieldError as exc:
        field = exc.field.split(".")[0]
        flag = (getattr(parser, "typed", {}).get(field) or option_flags(parser).get(field)) if exc.where == where else None
        if flag is None:
            raise
        raise UserError(f"{flag}: {exc.problem}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="megadocs",
        description="Synthetic-data pre-training research: generate, train, certify, analyse. "
        "Each command has its own --help with examples.",
        **examples(
            "megadocs demo --smoke --out runs/demo-smoke      # the whole pipeline, small",
            "megadocs data prepare --corpus stdlib --out runs/data --vocab-size 4096",
            "megadocs train --template > run.yaml && megadocs train run.yaml",
            "megadocs search certify search/examples/analytic.yaml",
        ),
    )
    parser.add_argument("--version", action="version", version=f"megadocs {__version__}")
    subparsers = parser.add_subparsers(dest="group", metavar="{" + ",".join(GROUPS) + "}")
    for target in GROUPS.values():
        module_name, function_name = target.split(":")
        # every package is part of the installation: a failing import is a bug to show, not skip
        getattr(importlib.import_module(module_name), function_name)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UserError as exc:  # an option refused as it was read (a destination that cannot be written, a count)
        print(f"error: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT
    if not getattr(args, "func", None):
        parser.print_help()
        return Exit.BAD_INPUT
    try:
        status = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT
    except WorkFailed as exc:  # the input was fine: a re-run resumes, no change to it is asked for
        print(f"error: {exc}", file=sys.stderr)
        return Exit.WORK_FAILED
    except KeyboardInterrupt as exc:  # a command that stopped work on the way out says what (one line)
        print(f"interrupted: {str(exc).strip() or 're-run the same command to resume'}", file=sys.stderr)
        return Exit.INTERRUPTED
    except BrokenPipeError:  # `megadocs search status --json | head`: the reader left, nothing is wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush has nowhere to fail
        return Exit.BROKEN_PIPE  # what a shell reports for a writer its reader closed on (128 + SIGPIPE)
    except Exception as exc:  # a full disk is no bug of the code: one line naming the file, not a traceback
        message = disk_full_message(exc)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return Exit.WORK_FAILED
        message = _refused_destination(exc, args)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return Exit.BAD_INPUT
    return int(status or 0)


def _refused_destination(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One line naming the flag of a destination the user gave where the file system refused a
    path in it (or on its way to it) that `unwritable` could not foresee; None for any other error."""
    for given in given_destinations(args):
        refused = refused_in(exc, given.place)
        if refused is not None and refused.errno in (errno.ENOENT, errno.EEXIST) and not _on_the_way(refused, given):
            continue  # a file missing or already there inside the destination: the work's own error (a bug's, maybe)
        if refused is not None:
            what = os.strerror(refused.errno).lower()
            where = "" if os.path.normpath(os.fsdecode(refused.filename)) == os.path.normpath(given.path) \
                else f" ({os.fsdecode(refused.filename)})"
            return f"{given.flag}: cannot write {given.path}: {what}{where}"
    return None


def _on_the_way(refused: OSError, given: GivenDestination) -> bool:
    """Whether the path ``refused`` names is the destination ``given``, a folder on its way to it,
    or (a file) beside it in its folder (the temporary file it is written through); not a path
    inside a destination folder, where a missing or existing file is the work's own error."""
    path, target = (os.path.abspath(os.fsdecode(p)) for p in (refused.filename, given.path))
    beside = not given.folder and os.path.dirname(path) == os.path.dirname(target)
    return beside or os.path.commonpath([path, target]) == path


if __name__ == "__main__":
    sys.exit(main())
