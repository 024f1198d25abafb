"""The ``bayes-nest`` command: the main job (``demo``) and subcommands for work on your own data.

Every subcommand validates its inputs before it writes anything, refuses to overwrite an
existing output without ``--force``, writes atomically, and reports bad input as one line
``bayes-nest: error: ...`` with exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from . import __version__, defaults
from . import _cli_options as opt
from ._cli_fit import JobError, Reported, add_launch_options, job_rank, report_error

__all__ = ["build_parser", "main"]

PROG = "bayes-nest"
DEFAULT_BUDGETS = ",".join(defaults.DEFAULT_BUDGETS)
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, FloatingPointError)


class UsageError(Exception):
    """Bad command-line input (reported as one line, exit status 2)."""


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


# ----------------------------------------------------------------------------- commands


def _fit(args: argparse.Namespace) -> None:
    from ._cli_fit import run_fit

    run_fit(args)


def _evaluate(args: argparse.Namespace) -> None:
    from .outputs import check_output, write_atomic
    from .pipeline import load_model
    from .report import config_summary, format_table
    from .workflow import data_for, evaluate_config

    if args.json_out:
        check_output(args.json_out, args.force, [args.checkpoint, args.data, args.front])
    model = load_model(args.checkpoint)
    data = data_for(model, args.data, whole=args.split == "all", **opt.data_kwargs(args))
    split = data.test if args.split == "all" else getattr(data, args.split)
    configs = opt.selected_configs(args, model)
    calib = None if args.split == "all" else data.train  # batch-norm statistics per config
    cost_macs, cost_params = model.cost_model("macs"), model.cost_model("params")
    rows = []
    for label, config in configs:
        scores = evaluate_config(
            model, split, config, ood=args.ood, num_samples=args.samples, calibration=calib
        )
        rows.append(
            {
                "budget": label,
                "config": config_summary(model.module, config),
                "macs": cost_macs(config),
                "params": cost_params(config),
                **scores,
                "subnet": config,
            }
        )
    print(format_table(rows))
    if args.json_out:
        payload = {
            "checkpoint": args.checkpoint,
            "data": args.data,
            "split": args.split,
            "method": model.method,
            "rows": rows,
        }
        text = json.dumps(payload, indent=2, allow_nan=True) + "\n"
        write_atomic(args.json_out, text, exclusive=not args.force)


def _export(args: argparse.Namespace) -> None:
    from .outputs import check_output, export_paths, export_subnet
    from .pipeline import load_model
    from .report import config_summary
    from .workflow import data_for

    inputs = [args.checkpoint, args.data, args.front]
    for path in export_paths(args.out, args.onnx).values():
        check_output(path, args.force, inputs)
    model = load_model(args.checkpoint)
    ((label, config),) = opt.selected_configs(args, model)
    calibration = data_for(model, args.data).train if args.data else None
    paths = export_subnet(
        model,
        config,
        args.out,
        calibration=calibration,
        onnx=args.onnx,
        force=args.force,
        progress=not args.no_progress,
        inputs=inputs,
    )
    print(
        f"exported {config_summary(model.module, config)} "
        f"({model.cost_model('macs')(config):,.0f} MACs) to {', '.join(paths.values())}"
    )


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(
        args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress, force=args.force
    )


def _search(args: argparse.Namespace) -> None:
    from .outputs import check_output, write_atomic
    from .pipeline import load_model
    from .search.objectives import default_score, score_name
    from .workflow import data_for, search_front

    score = score_name(args.score) if args.score else None  # a deprecated one warns, once
    check_output(args.out, args.force, [args.checkpoint, args.data])
    model = load_model(args.checkpoint)
    score = score_name(score or default_score(model.task), model.task)
    data = data_for(model, args.data, whole=args.split == "all", **opt.data_kwargs(args))
    split = data.test if args.split == "all" else getattr(data, args.split)
    front = search_front(
        model,
        split,
        cost=args.cost,
        score=score,
        ece_weight=args.ece_weight,
        max_ece=args.max_ece,
        num_samples=args.samples,
        progress=not args.no_progress,
        calibration=None if args.split == "all" else data.train,
    )
    front.info.update(
        {"checkpoint": os.fspath(args.checkpoint), "data": args.data, "split": args.split}
    )
    write_atomic(args.out, front.to_json() + "\n", exclusive=not args.force)
    pareto = front.pareto()
    print(
        f"{len(front.points)} sub-networks scored ({front.evaluations} evaluations); "
        f"{len(pareto.points)} on the Pareto front; saved to {args.out}"
    )
    print(format_front(pareto, model, args.cost, score))


def format_front(front: Any, model: Any, cost: str, score: str) -> str:
    from .report import config_summary, format_table

    rows = [
        {"config": config_summary(model.module, p.config), cost: p.cost, score: p.score}
        for p in front.points
    ]
    return format_table(rows, ["config", cost, score])


def _report(args: argparse.Namespace) -> None:
    from ._files import check_not_input, check_writable
    from .pipeline import load_model
    from .report import write_report
    from .search.objectives import default_score, score_name
    from .workflow import analyse, data_for

    score = score_name(args.score) if args.score else None  # a deprecated one warns, once
    check_not_input(args.out, [*args.checkpoints, args.data])
    if os.path.lexists(args.out) and not args.force:
        raise FileExistsError(f"output {args.out!r} exists; pass --force to replace it")
    check_writable(args.out)
    budgets = opt.budget_list(DEFAULT_BUDGETS) if args.budgets is None else args.budgets
    models = [load_model(path) for path in args.checkpoints]
    tasks = {m.task for m in models}
    if len(tasks) > 1:
        raise ValueError(
            "one report shows models of one task; got classification and segmentation models "
            f"({', '.join(f'{p}: {m.task}' for p, m in zip(args.checkpoints, models, strict=True))})"
        )
    score = score_name(score or default_score(models[0].task), models[0].task)
    labels = [m.method.upper() for m in models]
    if len(set(labels)) < len(labels):
        labels = [os.path.splitext(os.path.basename(p))[0] for p in args.checkpoints]
    datasets = [data_for(m, args.data) for m in models]
    analyses = [
        analyse(
            m,
            d,
            label=label,
            budgets=budgets,
            skip_infeasible=args.budgets is None,
            cost=args.cost,
            score=score,
            ece_weight=args.ece_weight,
            max_ece=args.max_ece,
            num_samples=args.samples,
            progress=not args.no_progress,
        )
        for m, d, label in zip(models, datasets, labels, strict=True)
    ]
    write_report(
        args.out, analyses, title="bayes_nest report", data_name=args.data, force=args.force
    )
    print(f"wrote {os.path.join(args.out, 'report.md')}")


COMMANDS = {
    "demo": _demo,
    "fit": _fit,
    "evaluate": _evaluate,
    "search": _search,
    "export": _export,
    "report": _report,
}


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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if job_rank() != 0:  # one copy of each warning, from rank 0
        return
    print(f"{PROG}: warning: {_one_line(Warning(str(message)))}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
