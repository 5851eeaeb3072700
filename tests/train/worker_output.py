"""How the workers of tests/train's multi-process tests print a result: one JSON line, written
to stdout by one write(2).

The ranks torchrun starts share its stdout, one pipe. ``print(line, flush=True)`` under
PYTHONUNBUFFERED (the tests' environment) writes the line and its newline in two writes, so two
ranks printing at once interleaved (``{...}{...}`` then an empty line) and the test could not read
it ("JSONDecodeError: Extra data"; the W&B test, where both ranks print the same refusal at the
same moment, failed about one run in six). A write of at most PIPE_BUF bytes to a pipe is never
interleaved with another's (POSIX); a result line is far shorter.

Usage: ``print_result({"rank": 1, "error": None})``.
"""

from __future__ import annotations

import json
import os
import select
import sys
from typing import Any


def print_result(record: dict[str, Any]) -> None:
    """`record` as one JSON line on stdout, in one write.

    Raises:
        ValueError: the line is longer than PIPE_BUF (it could be interleaved with another rank's).
    """
    line = (json.dumps(record) + "\n").encode()
    if len(line) > select.PIPE_BUF:
        raise ValueError(f"a worker's result line of {len(line)} bytes: at most {select.PIPE_BUF} are written whole")
    sys.stdout.flush()  # anything printed before it comes first
    os.write(sys.stdout.fileno(), line)
