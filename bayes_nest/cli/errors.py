"""Errors of the ``bayes-nest`` command and their one-line messages.

Bad input (`UsageError` and the exception types of `USER_ERRORS`) ends the command with exit
status 2 and one line ``bayes-nest: error: ...``; anything else is an internal error (a bug),
status 1. In a data-parallel job, `JobError` carries another rank's error and `Reported` marks
an error already reported (see `bayes_nest.cli.launch`).
"""

from __future__ import annotations

__all__ = ["USER_ERRORS", "JobError", "Reported", "UsageError", "describe_error"]

USER_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, FloatingPointError)
"""Exception types that mean bad input (exit status 2), not a bug."""


class UsageError(Exception):
    """Bad command-line input (reported as one line, exit status 2)."""


class Reported(Exception):
    """An error already reported (or left to rank 0 to report); ``code`` is the exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class JobError(Exception):
    """An error that happened on another rank of the job, with its exit status and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def describe_error(error: BaseException) -> tuple[int, str]:
    """Exit status and one-line message (after ``bayes-nest: ``) of an error: 2 for bad input,
    1 for an internal error (a bug)."""
    if isinstance(error, JobError):
        return error.code, str(error)
    if isinstance(error, (UsageError, *USER_ERRORS)):
        return 2, f"error: {_one_line(error)}"
    return 1, (
        f"internal error: {type(error).__name__}: {_one_line(error)} (rerun with --debug "
        "for the traceback)"
    )


def _one_line(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, KeyError) and error.args:
        text = f"missing key {error.args[0]!r}"
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.strerror}: {error.filename!r}"
    text = " ".join(text.split()) or type(error).__name__
    return text
