"""The one root of every trainyard error, and what each means for the exit code.

A leaf module (it imports nothing, ours or Ray's), so that every package, the spec included, can derive
its errors from it. The composition root (`trainyard.cli`) turns any ``TrainyardError`` into its message on
stderr and ``exit_code``; no layer reads exit codes any other way.

- ``BadInput`` (exit 2): what the user gave must change: the spec, the data, a bundle, a command-line value,
  or what the spec asks of this cluster;
- ``Failure`` (exit 1): the input was fine but the work failed while running (a worker error, a lost node).
"""
from __future__ import annotations

import re

from typing import Optional

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class TrainyardError(Exception):
    """Base of every error trainyard raises on purpose. ``str()`` is the whole message a person reads.

    ``exit_code`` is a class attribute (``BadInput``/``Failure`` set it); an instance may carry its own when
    the same condition is one or the other depending on the case (an HTTP client error: 4xx or 5xx)."""

    exit_code: int = EXIT_FAILED

    def __init__(self, *args, exit_code: Optional[int] = None):
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(TrainyardError):
    """The user's input must change (exit 2); the message names what (file, field, column, value) and how."""

    exit_code = EXIT_BAD_INPUT


class Failure(TrainyardError):
    """The work failed while running (exit 1); the message says where to look."""

    exit_code = EXIT_FAILED


def root_cause(exc: BaseException) -> str:
    """The innermost message of an exception chain (Ray wraps task errors several levels deep). A Ray task's
    exception raised `from` the user's (Ray Data's UserCodeException) comes back with the user's traceback as
    text before "The above exception was ...": its last line is the message; the wrapper's own last line, and
    the innermost exception's, are Ray Data's retry advice."""
    chain, seen = [exc], exc
    while getattr(seen, "cause", None) is not None or seen.__cause__ is not None:
        seen = getattr(seen, "cause", None) or seen.__cause__
        chain.append(seen)
    for level in reversed(chain):
        text = str(level).strip()
        if _CHAINED in text:
            lines = _without_retry_advice(text.split(_CHAINED)[0].strip().splitlines())
            if lines:
                return lines[-1]
    lines = _without_retry_advice(str(seen).strip().splitlines())
    return lines[-1] if lines else type(seen).__name__


_CHAINED = "The above exception was the direct cause of the following exception:"
# What Ray Data appends to an error it retried (ray.data._internal.util._annotate_exception_with_retry_context):
# "Failed to <what> after N/M attempts (total backoff ...)." and its advice on retries, after the error's own text.
_RETRIED = re.compile(r"^Failed to .* after \d+/\d+ attempts \(total backoff")


def _without_retry_advice(lines: list[str]) -> list[str]:
    """`lines` up to Ray Data's retry note; all of them when that would leave none."""
    cut = next((i for i, line in enumerate(lines) if _RETRIED.match(line.strip())), len(lines))
    return [line for line in lines[:cut] if line.strip()] or lines
