"""The argument parser of ``bayes-nest``: every subcommand with its options and help.

Option groups shared between subcommands live in `bayes_nest.cli.options` (with their value
types in `bayes_nest.cli.values`); the device and process options of ``fit`` in
`bayes_nest.cli.launch`.
"""

from __future__ import annotations

import argparse

from .. import __version__, defaults
from . import options as opt
from .errors import UsageError
from .launch import PROG, add_launch_options

__all__ = ["DEFAULT_BUDGETS", "PROG", "build_parser"]

DEFAULT_BUDGETS = ",".join(defaults.DEFAULT_BUDGETS)
"""The budgets of ``bayes-nest report`` when none are given, as the option text."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _command(sub, name: str, summary: str, example: str, parents) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="example:\n  " + example.replace("\n", "\n  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bayes-nest`` (all subcommands)."""
    common = _Parser(add_help=False)
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    common.add_argument(
        "--threads",
        type=opt.positive_int,
        help="CPU threads for torch (default: torch's choice; the demo uses 1, fastest for "
        "its small networks and robust on busy machines)",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser = _Parser(
        prog=PROG,
        description="Fully nested networks with learned orderings: train once (FN3 or BNNN), "
        "search the best sub-network for every budget, export it.",
        epilog="example:\n  bayes-nest demo --quick --out demo-report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bayes_nest {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = _command(
        sub,
        "demo",
        "the main job on built-in digits: train both ways, search, report, export",
        "bayes-nest demo --quick --out demo-report",
        [common],
    )
    p.add_argument("--quick", action="store_true", help="smaller network, fewer epochs (<1 min)")
    p.add_argument("--out", default="demo-report", help="report folder (default: demo-report)")
    p.add_argument("--seed", type=opt.integer, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing folder")

    p = _command(
        sub,
        "fit",
        "train a nested network (FN3 or BNNN) and save it",
        "bayes-nest fit --data digits --model mlp --hidden 128,128 --method bnnn "
        "--epochs 40 --out bnnn.ckpt\nbayes-nest fit --config fit.toml --out fn3.ckpt\n"
        "torchrun --standalone --nproc-per-node 2 -m bayes_nest.cli fit --data digits "
        "--batch-size 128 --checkpoint fn3.train --resume --out fn3.ckpt",
        [common],
    )
    opt.add_fit_options(p)
    add_launch_options(p)

    p = _command(
        sub,
        "evaluate",
        "metrics of sub-networks of a trained model",
        "bayes-nest evaluate fn3.ckpt --data digits --subnet hidden.0=4,hidden.1=4\n"
        "bayes-nest evaluate fn3.ckpt --data digits --front front.json --budget 25%",
        [common],
    )
    opt.add_model_data(p, split="test")
    opt.add_selection(p, multiple=True)
    p.add_argument(
        "--ood",
        default=defaults.DEFAULT_OOD,
        type=opt.ood_kind,
        help=f"corruption for OOD inputs, or 'none' (default {defaults.DEFAULT_OOD}; "
        "classifiers only: a segmentation model reports GED, Hungarian IoU, pixel ECE and NLL)",
    )
    p.add_argument("--samples", type=opt.positive_int, help="posterior samples (BNNN)")
    p.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")

    p = _command(
        sub,
        "search",
        "search the Pareto front of sub-networks (score vs cost)",
        "bayes-nest search fn3.ckpt --data digits --cost macs --score accuracy --out front.json",
        [common],
    )
    opt.add_model_data(p, split="val")
    opt.add_search_options(p)
    p.add_argument("--out", required=True, help="front JSON file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")

    p = _command(
        sub,
        "export",
        "export a sub-network as a standalone PyTorch model",
        "bayes-nest export fn3.ckpt --front front.json --budget 20000 --data digits "
        "--out small.pt --onnx",
        [common],
    )
    p.add_argument("checkpoint", help="trained model file (from 'bayes-nest fit')")
    opt.add_selection(p, multiple=False)
    p.add_argument("--data", help="data for batch-norm recalibration (its training split)")
    p.add_argument("--out", required=True, help="model file to write (.pt)")
    p.add_argument("--onnx", action="store_true", help="also write an ONNX file next to it")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")

    p = _command(
        sub,
        "report",
        "a report folder (Markdown + figures) for trained models",
        "bayes-nest report fn3.ckpt bnnn.ckpt --data digits --out report",
        [common],
    )
    p.add_argument("checkpoints", nargs="+", help="trained model files (from 'bayes-nest fit')")
    p.add_argument("--data", required=True, help="built-in name or .npz/.csv file")
    opt.add_search_options(p)
    p.add_argument(
        "--budgets",
        type=opt.budget_list,
        help="comma-separated budgets (cost units or %% of full; default "
        f"{DEFAULT_BUDGETS.replace('%', '%%')}, leaving out those below a model's cheapest "
        "sub-network)",
    )
    p.add_argument("--out", required=True, help="report folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    return parser
