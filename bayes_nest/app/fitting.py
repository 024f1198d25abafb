"""The fit façade: build a `ModelSpec` for a data set and train it with FN3 or as a BNNN.

`fit` checks the data and options, builds the network (`build_model`), optionally warm-starts
it from another trained model, trains it (`bayes_nest.app.train`: one process or a
data-parallel job, CPU or CUDA) and returns a `TrainedModel` on the CPU.

Examples
--------
>>> import bayes_nest as bn
>>> data = bn.load_dataset("digits")
>>> spec = bn.ModelSpec("mlp", {"hidden": [32], "groups": 4})
>>> model = bn.fit(spec, data, "fn3", epochs=1, progress=False)
>>> model.method, model.num_classes
('fn3', 10)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ..data import DataBundle
from ..defaults import DEFAULT_METHOD
from ..infer.distributed import DistContext
from .model_file import TrainedModel
from .spec import METHODS, ModelSpec, build_model
from .train import train_bnnn, train_fn3, training_device, training_options, warm_start

__all__ = ["fit"]


def fit(
    spec: ModelSpec,
    bundle: DataBundle,
    method: str = DEFAULT_METHOD,
    *,
    progress: bool = True,
    data_info: Mapping[str, Any] | None = None,
    init: TrainedModel | None = None,
    device: torch.device | str | None = None,
    ctx: DistContext | None = None,
    amp: bool | str = False,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    **options: Any,
) -> TrainedModel:
    """Build ``spec`` for ``bundle`` and train it on ``bundle.train`` with ``method``.

    Parameters
    ----------
    spec : ModelSpec
    bundle : DataBundle
        Standardized data; its statistics are stored with the model.
    method : {"fn3", "bnnn"}
    progress : bool
        Progress bar during training (rank 0 only in a data-parallel job).
    data_info : mapping, optional
        How the data were loaded (``source``, ``seed``, ``val_fraction``, ``test_fraction``,
        ...; the keyword arguments of `load_data`), stored so that `data_for` can
        load the same splits again.
    init : TrainedModel, optional
        Start from this model's weights (same spec and data shapes), e.g. a BNNN whose
        posterior means start at a trained FN3 network.
    device : torch.device or str, optional
        Where to train in one process (default the CPU); the trained model is returned on
        the CPU.
    ctx : DistContext, optional
        Train on every rank of a data-parallel job (from
        `bayes_nest.infer.distributed.setup`; call `fit` on every rank), on ``ctx.device``;
        ``batch_size`` is then the global batch. FN3 in one process reads the data in the
        same order, so both give the same network (see `bayes_nest.app.train`).
    amp : bool or {"float16", "bfloat16"}
        Mixed precision (FN3 on CUDA only; ``True`` means float16).
    checkpoint_path : path, optional
        Training checkpoint written after every epoch (by rank 0 in a job).
    resume : bool
        Continue from ``checkpoint_path`` when it exists.
    **options
        Training options; FN3: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``,
        ``keep_prob``, ``distribution``, ``sandwich`` (``"none"``, ``"full"``, ``"smallest"``,
        ``"both"``), ``seed`` (defaults in
        `FN3_DEFAULTS`); BNNN: `BNNN_DEFAULTS`.

    Returns
    -------
    TrainedModel
        On the CPU; ``options["processes"]`` records the number of processes that trained it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if spec.task == "segmentation":
        from .segmentation import check_segmentation_fit

        check_segmentation_fit(bundle, amp=amp, ctx=ctx, init=init)
    elif not isinstance(bundle, DataBundle):
        raise TypeError(
            f"bundle must be a DataBundle, got {type(bundle).__name__}"
            + (
                " (segmentation data need a segmentation model: 'unet')"
                * hasattr(bundle, "num_annotators")
            )
        )
    opts = training_options(method, options)
    dev = training_device(device, ctx)
    for name, stat in (("mean", bundle.mean), ("std", bundle.std)):
        if not torch.isfinite(stat).all() or (name == "std" and not (stat > 0).all()):
            raise ValueError(
                f"the bundle's standardization {name} must be finite (std > 0), got {name} "
                f"from {float(stat.min()):g} to {float(stat.max()):g}; rescale the inputs"
            )
    if amp and method != "fn3":
        raise ValueError(f"amp={amp!r}: mixed precision is offered for FN3 training only")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path")
    torch.manual_seed(int(opts["seed"]))
    num_classes = 1 if spec.task == "segmentation" else bundle.num_classes
    class_names = ("foreground",) if spec.task == "segmentation" else bundle.class_names
    module = build_model(spec, bundle.input_shape, num_classes)
    if init is not None:
        warm_start(module, init, spec, bundle)
    model = TrainedModel(
        method=method,
        spec=spec,
        module=module,
        input_shape=tuple(bundle.input_shape),
        num_classes=num_classes,
        mean=bundle.mean.clone(),
        std=bundle.std.clone(),
        class_names=tuple(class_names),
        options=opts,
        data=dict(data_info) if data_info else {"source": bundle.name, "seed": bundle.seed},
    )
    job = {
        "ctx": ctx,
        "device": dev,
        "progress": progress,
        "checkpoint_path": checkpoint_path,
        "resume": resume,
    }
    if spec.task == "segmentation":
        from .segmentation import train_segmentation

        model.bnnn, model.history = train_segmentation(module, bundle, method, opts, **job)
        if model.bnnn is not None:
            model.bnnn.cpu()
    elif method == "fn3":
        model.history = train_fn3(module, bundle, opts, amp=amp, **job)
    else:
        model.bnnn, model.history = train_bnnn(module, bundle, opts, **job)
        model.bnnn.cpu()
    module.cpu().eval()
    model.options = {**opts, "processes": 1 if ctx is None else ctx.world_size}
    return model
