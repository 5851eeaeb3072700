"""The exit statuses of every ``megadocs`` command: one vocabulary, one meaning per number.

A script driving the pipeline (a SLURM chain, a notebook, CI) branches on these: 2 means "fix
your input and run again", 4 means "the input was fine, the work did not finish: re-run the same
command to resume" (every command keeps what it finished, docs/architecture.md "Conventions").
``search certify``'s results (:class:`search.certificate.CertifyExit`) are members of this vocabulary.

>>> Exit.WORK_FAILED.value, Exit.BAD_INPUT.value
(4, 2)
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Exit", "EXIT_MEANINGS", "help_line"]


class Exit(IntEnum):
    """What a ``megadocs`` command's exit status means (the same number means the same thing for
    every command; a command uses the subset that applies to it)."""

    OK = 0
    NEGATIVE = 1
    BAD_INPUT = 2
    CERTIFIED_ON_BOUND = 3
    WORK_FAILED = 4
    PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): "try again later"
    INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout left (`... --json | head`)


EXIT_MEANINGS: dict[Exit, str] = {
    Exit.OK: "done",
    Exit.NEGATIVE: "the work ran and its answer is no: a certification not certified on its evidence "
    "(no finite loss, or its run budget spent), a scaling fit that could not be fitted",
    Exit.BAD_INPUT: "bad input (a config field, file or option; one line names it); nothing was done",
    Exit.CERTIFIED_ON_BOUND: "search certify: every certification certified, but one leans on a search bound "
    "or searched no axis",
    Exit.WORK_FAILED: "work failed: a job-array task or a run failed, was cancelled or killed, or the disk "
    "is full; what finished is kept, re-run the same command to resume",
    Exit.PREEMPTED: "train: preempted (SIGTERM/SIGUSR1), checkpoint saved; re-run to resume",
    Exit.INTERRUPTED: "interrupted (Ctrl-C); re-run the same command to resume",
    Exit.BROKEN_PIPE: "the reader of stdout closed it (e.g. `| head`); nothing is wrong",
}
"""One line per status, for help screens and docs (every member has one: tests/megadocs/test_exits.py)."""


def help_line(*codes: Exit) -> str:
    """``exit status: 0 done; 2 bad input ...`` for the ``codes`` a command uses (all when none).

    >>> help_line(Exit.OK, Exit.BAD_INPUT)
    'exit status: 0 done; 2 bad input (a config field, file or option; one line names it); nothing was done.'
    """
    return "exit status: " + "; ".join(f"{c.value} {EXIT_MEANINGS[c]}" for c in (codes or tuple(Exit))) + "."
