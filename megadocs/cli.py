"""The `megadocs` console script: one dispatcher, each package owns its subcommands.

A package exposes ``register(subparsers)`` in its ``cli`` module; it adds its parser(s) and
sets ``func`` (called with the parsed namespace; its return value is the exit status).
CLI modules import heavy libraries (torch, vllm, optuna) inside their handlers so that
``megadocs --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from megadocs.errors import UserError

# group name -> "module:function" that registers it
GROUPS = {
    "data": "train.cli:register_data",
    "train": "train.cli:register_train",
    "gen": "gen.cli:register",
    "search": "search.cli:register",
    "analysis": "analysis.cli:register",
    "demo": "megadocs.demo:register",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megadocs",
        description="Synthetic-data pre-training research: generate, train, certify, analyse.",
    )
    subparsers = parser.add_subparsers(dest="group", metavar="{" + ",".join(GROUPS) + "}")
    for target in GROUPS.values():
        module_name, function_name = target.split(":")
        # every package is part of the installation: a failing import is a bug to show, not skip
        getattr(importlib.import_module(module_name), function_name)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        status = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
