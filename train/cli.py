"""`megadocs data ...` and `megadocs train ...`: thin entry points into train/."""

from __future__ import annotations


def register_data(subparsers) -> None:
    from train.data_cli import register

    register(subparsers)


def register_train(subparsers) -> None:
    from train.train_cli import register

    register(subparsers)
