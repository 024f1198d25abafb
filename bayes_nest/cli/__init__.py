"""The ``bayes-nest`` command: the main job (``demo``) and subcommands for work on your own data.

Every subcommand validates its inputs before it writes anything, refuses to overwrite an
existing output without ``--force``, writes atomically, and reports bad input as one line
``bayes-nest: error: ...`` with exit status 2 (``--debug`` shows the traceback instead).

The package holds the parser (`bayes_nest.cli.parser`, with option groups in
`bayes_nest.cli.options` and value types in `bayes_nest.cli.values`), thin command handlers
over `bayes_nest.app` (`bayes_nest.cli.commands`, ``fit`` in `bayes_nest.cli.fit`), the launch
of data-parallel jobs (`bayes_nest.cli.launch`), resume checks (`bayes_nest.cli.resume`), the
errors and their one-line messages (`bayes_nest.cli.errors`) and the entry point
(`bayes_nest.cli.entry`). Importing it does not import torch.
"""

from __future__ import annotations

from .entry import main
from .errors import UsageError, describe_error
from .parser import DEFAULT_BUDGETS, build_parser

__all__ = ["DEFAULT_BUDGETS", "UsageError", "build_parser", "describe_error", "main"]
