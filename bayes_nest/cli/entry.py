"""The entry point of ``bayes-nest``: parse, run the subcommand, turn errors into one line."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from .commands import COMMANDS
from .errors import Reported, _one_line, describe_error
from .launch import PROG, job_rank, report_error
from .parser import build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bayes-nest`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 0
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _show_warning
            threads = args.threads or (1 if args.command == "demo" else None)
            if threads:
                import torch

                torch.set_num_threads(threads)
            COMMANDS[args.command](args)
        return 0
    except Reported as e:  # a data-parallel job's error, reported by rank 0
        return e.code
    except KeyboardInterrupt:
        if job_rank() == 0:
            print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help, --version
        return int(e.code or 0) if isinstance(e.code, int) else 0
    except Exception as e:
        if debug:
            raise
        code, message = describe_error(e)
        report_error(f"{PROG}: {message}")
        return code


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if job_rank() != 0:  # one copy of each warning, from rank 0
        return
    print(f"{PROG}: warning: {_one_line(Warning(str(message)))}", file=sys.stderr)
