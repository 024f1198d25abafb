"""Launching ``bayes-nest fit``: devices, precision, and the processes of a ``torchrun`` job.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) or with ``--distributed``, every
process joins the job (`bayes_nest.infer.distributed.setup`). An error ends every rank with
exit status 2 (1 for an internal error): rank 0 prints the one line, naming the rank where it
happened; the other ranks stay quiet unless rank 0 has not reported within `REPORT_WAIT_S`
seconds (an error of their own while rank 0 waits in a collective), in which case they print
theirs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import JobError, describe_error

__all__ = [
    "PROG",
    "REPORT_WAIT_S",
    "Launch",
    "add_launch_options",
    "agree",
    "job_rank",
    "launch_settings",
    "report_error",
]

PROG = "bayes-nest"
REPORT_WAIT_S = 10.0
"""How long ranks other than 0 wait for rank 0 to report an error before reporting their own."""


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

    from ..app.train import cuda_absence

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


def agree(ctx: Any, prepare: Callable[[], Any]) -> Any:
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
    mine = None if failure is None else describe_error(failure)
    for rank, found in enumerate(ctx.all_gather_object(mine)):
        if found is None:
            continue
        if rank == ctx.rank:
            raise failure
        code, message = found
        raise JobError(code, f"{message} (on rank {rank})")
    return result


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
