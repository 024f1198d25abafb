"""Model specs: a reference architecture by name and its options, built for a data set.

`ModelSpec` names one of `MODELS` (MLP, ConvNet, ResNet, ResNeXt, VGG, and the segmentation U-Net)
with its keyword options; `build_model` builds it for an input shape and a number of classes and
checks with a dry forward pass that it takes such inputs.

Examples
--------
>>> import bayes_nest as bn
>>> spec = bn.ModelSpec("mlp", {"hidden": [32, 32], "groups": 4})
>>> net = bn.app.build_model(spec, (64,), 10)
>>> sorted(bn.nn.axes(net))
['hidden.0', 'hidden.1']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..defaults import DEFAULT_MODEL
from ..models import MLP, VGG, ConvNet, ResNet, ResNeXt, UNet

__all__ = ["METHODS", "MODELS", "SEGMENTATION_MODELS", "TASKS", "ModelSpec", "build_model"]

METHODS = ("fn3", "bnnn")
TASKS = ("classification", "segmentation")
"""What a model predicts: class probabilities, or per-pixel foreground probabilities."""
SEGMENTATION_MODELS = ("unet",)
"""Architectures of the segmentation task (every other one is a classifier)."""


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
