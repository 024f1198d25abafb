"""The ``fit`` command of ``bayes-nest``: training in one process, or on every rank of a
data-parallel job started by ``torchrun``.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) or with ``--distributed``, every
process joins the job (`bayes_nest.infer.distributed.setup`), loads the data and trains on its
shard of every global batch (``--batch-size`` is the global batch). Rank 0 alone checks and
writes ``--out`` and the checkpoint, and prints. An error ends every rank with exit status 2
(1 for an internal error): rank 0 prints the one line, naming the rank where it happened; the
other ranks stay quiet unless rank 0 has not reported within `REPORT_WAIT_S` seconds (an error
of their own while rank 0 waits in a collective), in which case they print theirs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from . import options as opt
from .errors import Reported, describe_error
from .launch import PROG, Launch, agree, launch_settings, report_error

__all__ = ["run_fit"]


def run_fit(args: argparse.Namespace) -> None:
    """The ``fit`` command: one process, or this process's rank of a data-parallel job."""
    launch = launch_settings(args)
    if not launch.distributed:
        _fit(args, launch, None)
        return
    from ..infer.distributed import setup, teardown

    ctx = setup(launch.backend, device=launch.device)
    try:
        _fit(args, launch, ctx)
    except Exception as error:
        if args.debug:
            raise
        code, message = describe_error(error)
        report_error(f"{PROG}: {message}", ctx)
        raise Reported(code) from None
    finally:
        teardown(ctx)


def _fit(args: argparse.Namespace, launch: Launch, ctx: Any) -> None:
    from ..app.fitting import fit

    is_main = ctx is None or ctx.is_main
    settings, bundle, init = agree(ctx, lambda: _prepare(args, launch, ctx))
    spec, method, (train, data_info) = settings["spec"], settings["method"], settings["rest"]
    world = 1 if ctx is None else ctx.world_size
    if ctx is not None and args.checkpoint and args.resume:
        seen = ctx.all_gather_object(os.path.exists(args.checkpoint))
        if len(set(seen)) > 1:
            raise ValueError(
                f"checkpoint {args.checkpoint!r} exists on ranks "
                f"{[r for r, found in enumerate(seen) if found]} only: resuming needs it on "
                "every rank (a shared file system, or a copy on every node)"
            )
    n = len(bundle.train.x)
    stamp = contextlib.nullcontext()
    if args.checkpoint:  # every checkpoint records its run's settings (checked on --resume)
        from ..infer.checkpoint import stamped
        from .resume import run_settings

        stamp = stamped(args.checkpoint, {"run": run_settings(settings)})
    with stamp:
        model = fit(
            spec,
            bundle,
            method,
            progress=not args.no_progress,
            data_info={"source": str(settings["data"]), **data_info},
            init=init,
            device=launch.device if ctx is None else None,
            ctx=ctx,
            amp=launch.amp or False,
            checkpoint_path=args.checkpoint,
            resume=args.resume,
            **train,
        )
    if not is_main:
        return
    model.save(settings["out"], exclusive=not settings["force"])
    h = model.history
    val = h["val_accuracy"][-1] if h.get("val_accuracy") else float("nan")
    quality = f"validation accuracy {val:.4f}"
    if model.task == "segmentation":
        from ..app.segmentation import evaluate_segmentation

        quality = "no validation images"
        if len(bundle.val.x):
            scores = evaluate_segmentation(model, bundle.val, calibration=bundle.train)
            quality = f"validation GED {scores['ged']:.4f} (full network)"
        n = f"{n} images"
    else:
        n = f"{n} examples"
    where = "" if ctx is None else f" with {world} process(es) ({ctx.backend or 'one process'})"
    if launch.device != "cpu":
        where += f" on {launch.device}"
    print(
        f"trained {method} {spec.name} for {model.options['epochs']} epochs on "
        f"{bundle.name} ({n}){where}; {quality}; "
        f"saved to {settings['out']}"
    )


def _prepare(args: argparse.Namespace, launch: Launch, ctx: Any) -> tuple:
    """Settings, output checks (rank 0), the data and the initial model (every rank)."""
    from ..app.data import load_data
    from ..app.model_file import load_model
    from ..app.outputs import check_output
    from ..defaults import defaults_of

    settings = opt.fit_settings(args)
    method, (train, data_info) = settings["method"], settings["rest"]
    if launch.amp and method != "fn3":
        raise ValueError(f"--amp is offered for FN3 training only, not for --method {method}")
    defaults = defaults_of(method)
    out = settings["out"]
    inputs = [settings["data"], args.config, settings.get("init_from")]
    if ctx is None or ctx.is_main:
        check_output(out, settings["force"], inputs)
        if args.checkpoint:
            _check_checkpoint(args.checkpoint, out, args.resume, settings["force"], inputs)
            if args.resume and os.path.exists(args.checkpoint):
                from .resume import check_resume, run_settings

                epochs = train.get("epochs") or defaults["epochs"]
                check_resume(args.checkpoint, run_settings(settings), epochs)
    if settings["task"] == "segmentation":
        from ..app.segmentation import load_segmentation_data

        if ctx is not None or launch.amp:
            raise ValueError(
                "segmentation models train in one process without mixed precision (no "
                "torchrun, --distributed or --amp)"
            )
        if settings.get("init_from"):
            raise ValueError("--init-from is offered for classification models only")
        bundle = load_segmentation_data(settings["data"], **data_info)
    else:
        bundle = load_data(settings["data"], flat=settings["spec"].flat, **data_info)
    init = load_model(settings["init_from"]) if settings.get("init_from") else None
    return settings, bundle, init


def _check_checkpoint(path: str, out: str, resume: bool, force: bool, inputs: list) -> None:
    from .._files import check_not_input
    from ..app.outputs import check_output

    if os.path.abspath(path) == os.path.abspath(out):
        raise ValueError(f"--checkpoint {path!r} must differ from --out (the trained model)")
    check_not_input(path, inputs, "--checkpoint")
    if os.path.isdir(path):
        raise IsADirectoryError(f"--checkpoint {path!r} is a folder; give a file path")
    if os.path.exists(path) and not (resume or force):
        raise FileExistsError(
            f"checkpoint {path!r} exists; pass --resume to continue from it or --force to "
            "start over"
        )
    check_output(path, force=True)  # a writable place
