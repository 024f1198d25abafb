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
import datetime
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _cli_options as opt

__all__ = ["JobError", "Reported", "add_launch_options", "job_rank", "report_error", "run_fit"]

PROG = "bayes-nest"
REPORT_WAIT_S = 10.0
"""How long ranks other than 0 wait for rank 0 to report an error before reporting their own."""


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


def add_launch_options(p: argparse.ArgumentParser) -> None:
    """Options of ``fit`` about devices, processes and training checkpoints."""
    g = p.add_argument_group("devices, processes and checkpoints")
    g.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="where to train (default cuda when available, else cpu); under torchrun every "
        "process uses cuda:LOCAL_RANK",
    )
    g.add_argument(
        "--backend",
        choices=("gloo", "nccl"),
        help="process-group backend of a multi-process job (default nccl on cuda, gloo on cpu)",
    )
    g.add_argument(
        "--amp",
        nargs="?",
        const="float16",
        choices=("float16", "bfloat16"),
        help="mixed precision, float16 (default) or bfloat16 (FN3 on CUDA only)",
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="train with the data-parallel trainers even in one process (automatic under "
        "torchrun with WORLD_SIZE > 1)",
    )
    g.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="training checkpoint, written after every epoch (by rank 0 in a job)",
    )
    g.add_argument(
        "--resume", action="store_true", help="continue from --checkpoint when it exists"
    )


# ----------------------------------------------------------------------------- the job


def _world_size() -> int:
    raw = os.environ.get("WORLD_SIZE", "")
    try:
        return int(raw) if raw else 1
    except ValueError:
        return 2  # malformed: let setup() report it


def job_rank() -> int:
    """This process's global rank in a ``torchrun`` job (0 outside one)."""
    try:
        return int(os.environ.get("RANK") or 0) if _world_size() > 1 else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class Launch:
    """How ``fit`` runs: in a job or not, on which device, backend and precision."""

    distributed: bool
    device: str
    backend: str
    amp: str | None


def launch_settings(args: argparse.Namespace) -> Launch:
    """Check ``--device``, ``--backend``, ``--amp`` and ``--resume`` (before joining a job)."""
    import torch

    from .pipeline_train import cuda_absence

    cuda = torch.cuda.is_available()
    device = args.device or ("cuda" if cuda else "cpu")
    if device == "cuda" and not cuda:
        raise ValueError(f"--device cuda: CUDA is not available ({cuda_absence()})")
    backend = args.backend or ("nccl" if device == "cuda" else "gloo")
    if backend == "nccl" and device != "cuda":
        raise ValueError("--backend nccl needs --device cuda; use --backend gloo on the CPU")
    if args.amp and device != "cuda":
        raise ValueError(
            f"--amp {args.amp} needs --device cuda: mixed precision is offered on CUDA only"
        )
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint PATH")
    distributed = bool(args.distributed) or _world_size() > 1
    return Launch(distributed, device, backend, args.amp)


def run_fit(args: argparse.Namespace) -> None:
    """The ``fit`` command: one process, or this process's rank of a data-parallel job."""
    launch = launch_settings(args)
    if not launch.distributed:
        _fit(args, launch, None)
        return
    from .infer.distributed import setup, teardown

    ctx = setup(launch.backend, device=launch.device)
    try:
        _fit(args, launch, ctx)
    except Exception as error:
        if args.debug:
            raise
        from .cli import describe_error

        code, message = describe_error(error)
        report_error(f"{PROG}: {message}", ctx)
        raise Reported(code) from None
    finally:
        teardown(ctx)


def _fit(args: argparse.Namespace, launch: Launch, ctx: Any) -> None:
    from .pipeline import fit

    is_main = ctx is None or ctx.is_main
    settings, bundle, init = _agree(ctx, lambda: _prepare(args, launch, ctx))
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
    if is_main and n % world:
        warnings.warn(
            f"the {n} training examples are not divisible by the {world} processes: every epoch "
            f"repeats {world - n % world} of them to even out the shards",
            stacklevel=2,
        )
    stamp = contextlib.nullcontext()
    if args.checkpoint:  # every checkpoint records its run's settings (checked on --resume)
        from ._cli_resume import run_settings
        from .infer.checkpoint import stamped

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
        from .pipeline_segmentation import evaluate_segmentation

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
    from .defaults import defaults_of
    from .outputs import check_output
    from .pipeline import load_model
    from .workflow import load_data

    settings = opt.fit_settings(args)
    method, (train, data_info) = settings["method"], settings["rest"]
    if launch.amp and method != "fn3":
        raise ValueError(f"--amp is offered for FN3 training only, not for --method {method}")
    world = 1 if ctx is None else ctx.world_size
    defaults = defaults_of(method)
    batch = train.get("batch_size") or defaults["batch_size"]
    if batch % world:
        raise ValueError(
            f"--batch-size {batch} (the global batch) is not divisible by the {world} "
            f"processes; choose a multiple of {world}"
        )
    out = settings["out"]
    inputs = [settings["data"], args.config, settings.get("init_from")]
    if ctx is None or ctx.is_main:
        check_output(out, settings["force"], inputs)
        if args.checkpoint:
            _check_checkpoint(args.checkpoint, out, args.resume, settings["force"], inputs)
            if args.resume and os.path.exists(args.checkpoint):
                from ._cli_resume import check_resume, run_settings

                epochs = train.get("epochs") or defaults["epochs"]
                check_resume(args.checkpoint, run_settings(settings), epochs)
    if settings["task"] == "segmentation":
        from .pipeline_segmentation import load_segmentation_data

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
    from ._files import check_not_input
    from .outputs import check_output

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


def _agree(ctx: Any, prepare: Callable[[], Any]) -> Any:
    """Run ``prepare`` on every rank; if it fails anywhere, fail everywhere alike (so that rank
    0 reports the first failing rank's error and no rank waits in a collective)."""
    try:
        result, failure = prepare(), None
    except Exception as error:
        result, failure = None, error
    if ctx is None or not ctx.distributed:
        if failure is not None:
            raise failure
        return result
    from .cli import describe_error

    mine = None if failure is None else describe_error(failure)
    for rank, found in enumerate(ctx.all_gather_object(mine)):
        if found is None:
            continue
        if rank == ctx.rank:
            raise failure
        code, message = found
        raise JobError(code, f"{message} (on rank {rank})")
    return result


# ----------------------------------------------------------------------------- error lines


def _store_key() -> str:
    return f"bayes_nest/error_reported/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def report_error(line: str, ctx: Any = None) -> None:
    """Print an error ``line`` on stderr from rank 0 only.

    Rank 0 prints and tells the job (through the process group's key-value store) that it did.
    Other ranks wait up to `REPORT_WAIT_S` seconds for that; without word from rank 0 they print
    the line themselves, naming their rank. Outside a job the line is printed at once.
    """
    rank = job_rank() if ctx is None else ctx.rank
    if rank == 0:
        print(line, file=sys.stderr, flush=True)
        _tell_reported(ctx)
    elif not _wait_for_report(ctx):
        print(f"{line} (rank {rank})", file=sys.stderr, flush=True)


def _default_store(ctx: Any) -> Any:
    if ctx is None or not ctx.distributed:
        return None
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # a PyTorch without it: fall back to waiting
        return None


def _tell_reported(ctx: Any) -> None:
    store = _default_store(ctx)
    if store is not None:
        try:
            store.set(_store_key(), "1")
        except Exception:  # the store is gone: nothing to tell
            pass


def _wait_for_report(ctx: Any) -> bool:
    store = _default_store(ctx)
    if store is None:  # before the job's store exists: torchrun ends us once rank 0 exits
        time.sleep(REPORT_WAIT_S / 2)
        return False
    try:
        store.wait([_store_key()], datetime.timedelta(seconds=REPORT_WAIT_S))
        return True
    except Exception:  # timed out, or the store went away
        return False
