"""The subcommands of ``bayes-nest``: thin handlers from parsed options to `bayes_nest.app`.

Every handler validates its inputs before it writes anything, refuses to overwrite an existing
output without ``--force`` and writes atomically; ``fit`` is in `bayes_nest.cli.fit`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from . import options as opt
from .parser import DEFAULT_BUDGETS

__all__ = ["COMMANDS", "format_front"]


def _fit(args: argparse.Namespace) -> None:
    from .fit import run_fit

    run_fit(args)


def _evaluate(args: argparse.Namespace) -> None:
    from ..app.data import data_for
    from ..app.evaluation import evaluate_config
    from ..app.model_file import load_model
    from ..app.outputs import check_output, write_atomic
    from ..app.tables import config_summary, format_table

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
    from ..app.data import data_for
    from ..app.model_file import load_model
    from ..app.outputs import check_output, export_paths, export_subnet
    from ..app.tables import config_summary

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
    from ..app.demo import run_demo

    run_demo(
        args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress, force=args.force
    )


def _search(args: argparse.Namespace) -> None:
    from ..app.data import data_for
    from ..app.front import search_front
    from ..app.model_file import load_model
    from ..app.outputs import check_output, write_atomic
    from ..search.objectives import default_score, score_name

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
    from ..app.tables import config_summary, format_table

    rows = [
        {"config": config_summary(model.module, p.config), cost: p.cost, score: p.score}
        for p in front.points
    ]
    return format_table(rows, ["config", cost, score])


def _report(args: argparse.Namespace) -> None:
    from .._files import check_not_input, check_writable
    from ..app.budgets import analyse
    from ..app.data import data_for
    from ..app.model_file import load_model
    from ..app.report import write_report
    from ..search.objectives import default_score, score_name

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
