r"""Training behind :func:`bayes_nest.pipeline.fit`: FN3 or BNNN, one process or a data-parallel
job, CPU or CUDA.

Both methods train through the one training loop
(:class:`~bayes_nest.infer.training.TrainingLoop`), given the job's context when there is one:
with :math:`W` processes every global batch holds the examples of the one-process run, split by
rows, and the random numbers are the one-process ones, so `fit` in one process and under
``torchrun`` train the same network up to floating-point summation order, and a checkpoint of
either resumes in the other.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..data import DataBundle
from ..defaults import BNNN_DEFAULTS, FN3_DEFAULTS, defaults_of
from ..infer import FN3Trainer
from ..infer.distributed import DistContext

__all__ = [
    "BNNN_DEFAULTS",
    "FN3_DEFAULTS",
    "cuda_absence",
    "make_bnnn",
    "resolve_device",
    "train_bnnn",
    "train_fn3",
    "training_device",
    "training_options",
    "warm_start",
]


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a :class:`torch.device` (``None``: the CPU); ``"cuda"`` must be available.

    Raises
    ------
    ValueError
        For a string that names no device, or CUDA on a machine without it.
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must name a torch device such as 'cpu' or 'cuda', got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} requested, but {cuda_absence()}")
    return dev


def cuda_absence() -> str:
    """Why CUDA is not available here, in a few words."""
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    return "no CUDA GPU is visible on this machine"


def training_options(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of ``method`` (`bayes_nest.defaults`, the one source the library, this
    function and the command line share) updated by the ``given`` options that are not
    ``None``; a :class:`ValueError` names an unknown option. (``None`` means "the default": FN3
    training without the sandwich rule is ``sandwich="none"``, recorded as the library's
    ``None``, so that a run that names it and one that leaves it out have the same options.)"""
    defaults = defaults_of(method)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown training option {unknown[0]!r} for method {method!r}; "
            f"options: {sorted(defaults)}"
        )
    options = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    if options.get("sandwich") == "none":
        options["sandwich"] = None
    return options


def training_device(device: Any, ctx: DistContext | None) -> torch.device:
    """The device to train on: ``device`` in one process (``ctx=None``), else the job's, which
    ``device``, if given, must match."""
    if ctx is None:
        return resolve_device(device)
    if not isinstance(ctx, DistContext):
        raise TypeError(f"ctx must be a DistContext (from setup()), got {type(ctx).__name__}")
    if device is not None and resolve_device(device) != ctx.device:
        raise ValueError(
            f"device={str(device)!r} differs from the job's device {str(ctx.device)!r}; "
            "choose the device in setup(device=...)"
        )
    return ctx.device


def warm_start(module: nn.Module, init: Any, spec: Any, bundle: DataBundle) -> None:
    """Load a trained FN3 model's weights into ``module`` (same spec and data shapes)."""
    if getattr(init, "method", None) != "fn3" or not hasattr(init, "module"):
        raise ValueError("init must be a trained FN3 model (method 'fn3')")
    same = (init.spec.name, init.spec.options, init.input_shape, init.num_classes) == (
        spec.name,
        spec.options,
        tuple(bundle.input_shape),
        bundle.num_classes,
    )
    if not same:
        raise ValueError(
            f"init model ({init.spec.name} {init.spec.options}, input {init.input_shape}, "
            f"{init.num_classes} classes) does not match ({spec.name} {spec.options}, input "
            f"{tuple(bundle.input_shape)}, {bundle.num_classes} classes)"
        )
    module.load_state_dict(init.module.state_dict())


def train_fn3(
    module: nn.Module,
    bundle: DataBundle,
    opts: Mapping[str, Any],
    *,
    ctx: DistContext | None,
    device: torch.device,
    amp: bool | str,
    progress: bool,
    checkpoint_path: str | os.PathLike | None,
    resume: bool,
) -> dict[str, list]:
    """Train ``module`` with ordered dropout on ``bundle.train``; returns the history as a dict.

    ``ctx=None`` trains in this process alone, otherwise on every process of ``ctx``'s job
    (``opts["batch_size"]`` is the global batch); the same :class:`~bayes_nest.infer.FN3Trainer`
    either way.
    """
    kwargs = {
        "optimizer": functools.partial(
            torch.optim.Adam, lr=float(opts["lr"]), weight_decay=float(opts["weight_decay"])
        ),
        "keep_prob": float(opts["keep_prob"]),
        "distribution": opts["distribution"],
        "sandwich": None if opts["sandwich"] in (None, "none") else opts["sandwich"],
        "batch_size": int(opts["batch_size"]),
        "seed": int(opts["seed"]),
        "progress": progress,
    }
    if ctx is None:
        ctx = DistContext(device=device)
    trainer = FN3Trainer(module, ctx=ctx, amp=amp or False, **kwargs)
    history = trainer.fit(
        bundle.train,
        epochs=int(opts["epochs"]),
        val=bundle.val,
        checkpoint_path=checkpoint_path,
        resume=resume,
    )
    return history.as_dict()


def make_bnnn(module: nn.Module, opts: Mapping[str, Any], likelihood: Any = None) -> Any:
    """The BNNN wrapper (variational posterior over masks and weights) of ``module``;
    ``likelihood`` as in `bayes_nest.infer.BNNN` (default: categorical over classes)."""
    from ..infer.bnnn import BNNN

    return BNNN(
        module,
        likelihood=likelihood,
        prior_keep_prob=float(opts["keep_prob"]),
        init_keep_prob=float(opts["init_keep_prob"]),
        temperature=float(opts["temperature"]),
        prior_scale=opts["prior_scale"],
        kl_scale=float(opts["kl_scale"]),
    )


def train_bnnn(
    module: nn.Module,
    bundle: DataBundle,
    opts: Mapping[str, Any],
    *,
    ctx: DistContext | None,
    device: torch.device,
    progress: bool,
    checkpoint_path: str | os.PathLike | None,
    resume: bool,
) -> tuple[Any, dict[str, list]]:
    """Fit a BNNN posterior for ``module`` by SVI; returns the BNNN and its history as a dict.

    ``ctx=None``: in this process; otherwise on every process of ``ctx``'s job
    (``opts["batch_size"]`` is the global batch); :meth:`~bayes_nest.infer.BNNN.fit` either way.
    """
    bnnn = make_bnnn(module, opts).to(device)
    kwargs = {
        "epochs": int(opts["epochs"]),
        "optimizer": functools.partial(torch.optim.Adam, lr=float(opts["lr"])),
        "batch_size": int(opts["batch_size"]),
        "val": bundle.val,
        "progress": progress,
        "seed": int(opts["seed"]),
        "checkpoint_path": checkpoint_path,
        "resume": resume,
    }
    history = bnnn.fit(bundle.train, ctx=ctx, **kwargs)
    return bnnn, history.as_dict()
