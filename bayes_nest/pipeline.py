r"""End-to-end workflow: model specs, training in either regime, saved models, uniform prediction.

A `ModelSpec` names a reference architecture and its options; `fit` builds it for a
`DataBundle` and trains it with FN3 (ordered dropout, point weights) or as
a BNNN (variational ordering units and weight posteriors, by SVI). The result, a
`TrainedModel`, remembers everything needed to use it again: the spec, the weights (or
variational parameters), the input standardization, the class names and the training options.
`TrainedModel.save` writes it as one verified checkpoint and `load_model` reads it
back. `TrainedModel.predict` returns class probabilities of shape ``(S, N, K)`` for both
regimes (``S = 1`` for FN3, ``S`` posterior draws for a BNNN), so everything downstream
(metrics, search, reports) treats them alike.

Examples
--------
>>> from bayes_nest.data import load_dataset
>>> from bayes_nest.pipeline import ModelSpec, fit, load_model
>>> data = load_dataset("digits")
>>> model = fit(ModelSpec("mlp", {"hidden": [64, 64], "groups": 8}), data, "fn3", epochs=5)
>>> probs = model.predict(data.test.x, {"hidden.0": 4, "hidden.1": 4})  # (1, N, 10)
>>> model.save("digits.ckpt")
>>> same = load_model("digits.ckpt")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import DataBundle
from .defaults import DEFAULT_METHOD, DEFAULT_MODEL
from .infer import predict_probs
from .infer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .infer.distributed import DistContext
from .models import MLP, VGG, ConvNet, ResNet, ResNeXt, UNet
from .pipeline_train import (
    BNNN_DEFAULTS,
    FN3_DEFAULTS,
    make_bnnn,
    train_bnnn,
    train_fn3,
    training_device,
    training_options,
    warm_start,
)
from .subnet import CostModel, validate_config

__all__ = [
    "BNNN_DEFAULTS",
    "CHECKPOINT_KIND",
    "FN3_DEFAULTS",
    "METHODS",
    "MODELS",
    "SEGMENTATION_MODELS",
    "TASKS",
    "ModelSpec",
    "TrainedModel",
    "build_model",
    "fit",
    "load_model",
]

CHECKPOINT_KIND = "bayes_nest.model"
METHODS = ("fn3", "bnnn")
TASKS = ("classification", "segmentation")
"""What a model predicts: class probabilities, or per-pixel foreground probabilities."""
SEGMENTATION_MODELS = ("unet",)
"""Architectures of the segmentation task (every other one is a classifier)."""
_FORMAT = 1


def _mlp(shape: tuple[int, ...], k: int, kw: dict[str, Any]) -> nn.Module:
    return MLP(int(np.prod(shape)), kw.pop("hidden", [128, 128]), k, **kw)


def _conv(cls: type) -> Any:
    def build(shape: tuple[int, ...], k: int, kw: dict[str, Any]) -> nn.Module:
        if len(shape) != 3:
            raise ValueError(
                f"model {cls.__name__} needs image inputs of shape (C, H, W); the data have "
                f"example shape {shape} (use --model mlp, or a built-in set loaded as images)"
            )
        return cls(num_classes=k, in_channels=shape[0], **kw)

    return build


def _unet(shape: tuple[int, ...], k: int, kw: dict[str, Any]) -> nn.Module:
    if len(shape) != 3:
        raise ValueError(f"model UNet needs images of shape (C, H, W), got example shape {shape}")
    return UNet(shape[0], k, kw.pop("widths", (16, 32, 64)), **kw)


MODELS = {
    "mlp": _mlp,
    "convnet": _conv(ConvNet),
    "resnet": _conv(ResNet),
    "resnext": _conv(ResNeXt),
    "vgg": _conv(VGG),
    "unet": _unet,
}
"""Reference architectures by name; each is built for an input shape and a number of classes
(for the segmentation model ``"unet"``: of output channels, one foreground logit per pixel)."""


@dataclass
class ModelSpec:
    """A reference architecture and its keyword options.

    Attributes
    ----------
    name : {"mlp", "convnet", "resnet", "resnext", "vgg", "unet"}
        ``"unet"`` (`bayes_nest.models.UNet`) is a segmentation model (`task`), the others
        classifiers.
    options : dict
        Keyword arguments of the model class other than its input and output sizes, e.g.
        ``{"hidden": [128, 128], "groups": 16}`` for the MLP (see `bayes_nest.models`).
    """

    name: str = DEFAULT_MODEL
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(f"unknown model {self.name!r}; choose one of {sorted(MODELS)}")
        if not isinstance(self.options, Mapping):
            raise TypeError(f"model options must be a mapping, got {type(self.options).__name__}")
        self.options = {str(k).replace("-", "_"): v for k, v in self.options.items()}

    @property
    def flat(self) -> bool:
        """Whether the model takes flat feature vectors (built-in sets are loaded accordingly)."""
        return self.name == "mlp"

    @property
    def task(self) -> str:
        """``"segmentation"`` for a model of `SEGMENTATION_MODELS`, else ``"classification"``."""
        return "segmentation" if self.name in SEGMENTATION_MODELS else "classification"


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build ``spec`` for examples of ``input_shape`` and ``num_classes`` classes, and check with
    a dry forward pass of one example that it accepts such inputs.

    Raises
    ------
    ValueError
        For unknown or bad options, or an input shape the architecture cannot take.
    """
    try:
        module = MODELS[spec.name](tuple(input_shape), int(num_classes), dict(spec.options))
    except (TypeError, ValueError) as e:  # an unknown keyword, a bad size
        raise ValueError(f"bad options for model {spec.name!r} {spec.options}: {e}") from None
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *input_shape))
    except (RuntimeError, ValueError) as e:
        msg = str(e).splitlines()[0]
        raise ValueError(
            f"model {spec.name!r} cannot take inputs of shape {tuple(input_shape)}: {msg}"
        ) from None
    expected = (2, num_classes)
    if spec.task == "segmentation":
        expected = (2, num_classes, *tuple(input_shape)[1:])
    if tuple(out.shape) != expected:
        raise ValueError(f"model {spec.name!r} returned shape {tuple(out.shape)} for 2 examples")
    return module.train()


@dataclass
class TrainedModel:
    """A trained nested network with everything needed to use it again.

    Attributes
    ----------
    method : {"fn3", "bnnn"}
    spec : ModelSpec
    module : nn.Module
        The nested network (for a BNNN: its network with Bayesian layers).
    input_shape : tuple of int
    num_classes : int
        Classes; for a segmentation model the output channels (1: a foreground logit per pixel).
    mean, std : Tensor
        Input standardization of the training data, broadcastable to ``input_shape``.
    class_names : tuple of str
    options : dict
        Training options (epochs, learning rate, keep probability, ...).
    history : dict
        Per-epoch training record.
    data : dict
        Where the training data came from (``source``, split ``seed`` and fractions).
    bnnn : object or None
        The BNNN wrapper (posterior over masks and weights) of a BNNN model.
    """

    method: str
    spec: ModelSpec
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor
    class_names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    bnnn: Any = None

    @property
    def task(self) -> str:
        """``"classification"`` or ``"segmentation"`` (from the architecture, `ModelSpec.task`);
        recorded in the model file."""
        return self.spec.task

    # ------------------------------------------------------------------ prediction
    def check_inputs(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """``x`` as float32 of shape ``(N, *input_shape)``; a clear error otherwise."""
        x = torch.as_tensor(x, dtype=torch.float32)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(
                f"{name} has example shape {tuple(x.shape[1:])}, but the model was trained on "
                f"examples of shape {tuple(self.input_shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return x

    def predict(
        self,
        x: torch.Tensor,
        config: Mapping[str, int] | None = None,
        *,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        r"""Class probabilities of sub-network ``config`` (``None``: full) on standardized inputs.

        Returns
        -------
        Tensor, shape ``(S, N, K)``
            ``S = 1`` for FN3; ``S = num_samples`` posterior draws (default: the training
            option ``predict_samples``) for a BNNN. A segmentation model returns per-pixel
            foreground probabilities $\sigma(f(x))$ of shape ``(S, N, H, W)`` instead.
        """
        x = self.check_inputs(x)
        config = validate_config(self.module, {} if config is None else config)
        if self.task == "segmentation":
            from .pipeline_segmentation import predict_segmentation

            return predict_segmentation(self, x, config, num_samples)
        if self.method == "fn3":
            return predict_probs(self.module, x, config).unsqueeze(0)
        s = int(num_samples or self.options.get("predict_samples", 16))
        return _bnnn_predict(self.bnnn, x, config, s)

    def cost_model(self, metric: str = "macs") -> CostModel:
        """Cost of a config of this network under ``metric`` (see `bayes_nest.subnet`)."""
        return CostModel(self.module, metric, self.input_shape)

    # ------------------------------------------------------------------ persistence
    def payload(self) -> dict[str, Any]:
        """The checkpoint payload (tensors and plain containers only)."""
        state = self.bnnn.state_dict() if self.bnnn is not None else self.module.state_dict()
        return {
            "format": _FORMAT,
            "method": self.method,
            "task": self.task,
            "spec": {"name": self.spec.name, "options": _plain(self.spec.options)},
            "state": state,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "mean": self.mean,
            "std": self.std,
            "class_names": list(self.class_names),
            "options": _plain(self.options),
            "history": _plain(self.history),
            "data": _plain(self.data),
        }

    def save(self, path: str | os.PathLike, *, exclusive: bool = False) -> None:
        """Write the model atomically to ``path`` as a verified checkpoint; ``exclusive``:
        fail with `FileExistsError` instead of replacing an existing file."""
        save_checkpoint(path, self.payload(), kind=CHECKPOINT_KIND, exclusive=exclusive)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of what determines the model's predictions: method, architecture,
        shapes, input standardization and every weight (or variational parameter).

        Equal for a model and its saved-and-loaded copy; a front records it so that it is
        never applied to another model (`bayes_nest.workflow.read_front`).
        """
        import hashlib
        import json

        digest = hashlib.sha256()
        head = {
            "method": self.method,
            "spec": {"name": self.spec.name, "options": _plain(self.spec.options)},
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }
        digest.update(json.dumps(head, sort_keys=True, default=str).encode())
        state = self.bnnn.state_dict() if self.bnnn is not None else self.module.state_dict()
        tensors = [("mean", self.mean), ("std", self.std), *sorted(state.items())]
        for name, value in tensors:
            if not torch.is_tensor(value):
                digest.update(f"{name}={value!r}".encode())
                continue
            value = value.detach().cpu().contiguous()
            digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def _plain(obj: Any) -> Any:
    """JSON-like copy: tuples to lists, numpy scalars to Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ----------------------------------------------------------------------------- training


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
        same order, so both give the same network (see `bayes_nest.pipeline_train`).
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
        from .pipeline_segmentation import check_segmentation_fit

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
        from .pipeline_segmentation import train_segmentation

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


def load_model(path: str | os.PathLike) -> TrainedModel:
    """Read a model written by `TrainedModel.save`.

    Raises
    ------
    CheckpointError
        Missing, corrupt or foreign file, or weights that do not fit the stored spec.
    """
    payload = load_checkpoint(path, kind=CHECKPOINT_KIND)
    try:
        if payload["format"] > _FORMAT:
            raise CheckpointError(f"{path} was written by a newer bayes_nest (format {_FORMAT})")
        spec = ModelSpec(payload["spec"]["name"], dict(payload["spec"]["options"]))
        shape = tuple(int(s) for s in payload["input_shape"])
        k = int(payload["num_classes"])
        method = payload["method"]
        task = payload.get("task", "classification")  # files of earlier releases: classifiers
        if task != spec.task:
            raise CheckpointError(
                f"{path} records the task {task!r} but holds a {spec.task} model "
                f"({spec.name!r}); the file is damaged"
            )
        mean, std = _stored_statistics(path, payload["mean"], payload["std"], shape)
        module = build_model(spec, shape, k)
        model = TrainedModel(
            method=method,
            spec=spec,
            module=module,
            input_shape=shape,
            num_classes=k,
            mean=mean,
            std=std,
            class_names=tuple(payload["class_names"]),
            options=dict(payload["options"]),
            history=dict(payload["history"]),
            data=dict(payload["data"]),
        )
        if method == "fn3":
            module.load_state_dict(payload["state"])
        elif method == "bnnn":
            model.bnnn = _bnnn_restore(module, model.options, payload["state"], task)
        else:
            raise CheckpointError(f"{path} holds a model trained by unknown method {method!r}")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} does not hold a usable bayes_nest model: {msg}") from None
    module.eval()
    return model


def _stored_statistics(
    path: str | os.PathLike, mean: Any, std: Any, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored input standardization, checked: float tensors broadcastable to the input
    shape, finite, ``std > 0``. A `CheckpointError` blames the model file otherwise."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"model file {os.fspath(path)} holds an unusable input standardization: {what} "
            "(the file is damaged or was not written by a correct bayes_nest fit; train the "
            "model again)"
        )

    out = []
    for name, value in (("mean", mean), ("std", std)):
        if not torch.is_tensor(value) or not value.is_floating_point():
            raise bad(f"{name} is not a floating-point tensor")
        try:
            full = torch.broadcast_shapes(tuple(value.shape), shape)
        except RuntimeError:
            full = None
        if full != tuple(shape):
            raise bad(
                f"{name} has shape {tuple(value.shape)}, which does not fit inputs of shape "
                f"{tuple(shape)}"
            )
        if not torch.isfinite(value).all():
            raise bad(f"{name} holds NaN or infinite values")
        out.append(value.float())
    if (out[1] <= 0).any():
        raise bad(f"std holds values <= 0 (smallest {float(out[1].min()):g})")
    return out[0], out[1]


# ----------------------------------------------------------------------------- BNNN glue


def _bnnn_restore(module: nn.Module, opts: dict, state: dict, task: str = "classification"):
    likelihood = None
    if task == "segmentation":
        from .infer.likelihoods import Bernoulli

        likelihood = Bernoulli()
    bnnn = make_bnnn(module, {**BNNN_DEFAULTS, **opts}, likelihood=likelihood)
    bnnn.load_state_dict(state)
    return bnnn


def _bnnn_predict(bnnn: Any, x: torch.Tensor, config: dict, num_samples: int) -> torch.Tensor:
    return bnnn.predict(x, config=config, num_samples=num_samples)
