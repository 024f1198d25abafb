"""VGG with nested channel widths: the reference network of Bayesian nested networks (BNNN)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from ..nn.width import NestedLinear, SlicedLinear
from .blocks import (
    attach_bits,
    check_bits,
    check_groups,
    check_image_input,
    check_int,
    nested_conv_bn,
)

__all__ = ["VGG", "VGG_CONFIGS"]

#: Layer configurations: an int is a 3×3 conv-BN-ReLU with that many channels, ``"M"`` a 2×2
#: max-pool. ``"11-wide"`` is the BNNN CIFAR-10 network, ``"11"`` the standard VGG-11; the small
#: ones suit tests and CPU runs (``"tiny"`` on 8×8 digits, ``"small"`` on 8×8 to 32×32).
VGG_CONFIGS: dict[str, list[int | str]] = {
    "11-wide": [96, "M", 192, "M", 384, 384, "M", 768, 768, "M", 768, 768, "M"],
    "11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "small": [32, "M", 64, "M", 128, 128, "M"],
    "tiny": [32, "M", 64, "M"],
}


def _resolve_cfg(cfg: str | Sequence[int | str]) -> list[int | str]:
    if isinstance(cfg, str):
        if cfg not in VGG_CONFIGS:
            raise ValueError(f"cfg must be one of {sorted(VGG_CONFIGS)} or a list, got {cfg!r}")
        return list(VGG_CONFIGS[cfg])
    if not isinstance(cfg, Sequence) or not cfg:
        raise ValueError(f"cfg must be a config name or a non-empty list, got {cfg!r}")
    layers = list(cfg)
    for i, item in enumerate(layers):
        if isinstance(item, str) and item == "M":
            continue
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 1:
            raise ValueError(f"cfg[{i}] must be a positive int or 'M', got {item!r}")
        layers[i] = int(item)
    if not any(item != "M" for item in layers):
        raise ValueError(f"cfg must contain at least one conv layer, got {cfg!r}")
    return layers


class VGG(nn.Module):
    r"""VGG (conv3×3-BN-ReLU and max-pools) with nested widths and a nested hidden head layer.

    Features follow ``cfg``; each nested conv is a :class:`~bayes_nest.nn.NestedConv2d`
    (axis ``"features.<i>"``). As in BNNN's reference network the first conv is a plain
    ``Conv2d``-``BatchNorm2d``-``ReLU`` unless ``nest_first``. After the features: global average
    pooling (the identity for the 1×1 map of a 32×32 input after five pools), then
    ``NestedLinear(C, head_width)``-BN-ReLU (axis ``"classifier.0"``) and a plain
    ``Linear(head_width, num_classes)``.

    Parameters
    ----------
    num_classes : int
    in_channels : int
    cfg : str or list of (int or "M")
        A key of :data:`VGG_CONFIGS` (``"11-wide"``, ``"11"``, ``"small"``, ``"tiny"``) or a list.
    head_width : int
        Hidden width of the classifier (256 in BNNN).
    groups : int
        Ordered blocks of every width axis (BNNN: 32); must divide every width.
    always_on : int
        Always-kept leading groups of every width axis.
    nest_first : bool
        Nest the first conv layer too.
    bits : int, optional
        Nest the weights' quantization bits of the nested layers (one shared ``"bits"`` axis).

    Shapes
    ------
    input ``(N, in_channels, H, W)`` with ``H, W`` divisible by ``2^(number of pools)``;
    output ``(N, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        cfg: str | Sequence[int | str] = "11-wide",
        *,
        head_width: int = 256,
        groups: int = 32,
        always_on: int = 1,
        nest_first: bool = False,
        bits: int | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_int(num_classes, "num_classes")
        in_channels = check_int(in_channels, "in_channels")
        layers = _resolve_cfg(cfg)
        head_width = check_int(head_width, "head_width")
        widths = [item for item in layers if item != "M"]
        nested = widths if nest_first else widths[1:]
        groups, always_on = check_groups(
            nested + [head_width], groups, always_on, "cfg widths + [head_width]"
        )
        bits = check_bits(bits)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.cfg = layers
        self.bits = bits
        features: list[nn.Module] = []
        previous = in_channels
        plain_first = not nest_first
        for item in layers:
            if item == "M":
                features.append(nn.MaxPool2d(2))
            elif plain_first:
                plain_first = False
                features.append(
                    nn.Sequential(
                        nn.Conv2d(previous, item, 3, padding=1, bias=False),
                        nn.BatchNorm2d(item),
                        nn.ReLU(),
                    )
                )
                previous = item
            else:
                features.append(
                    nested_conv_bn(previous, item, 3, groups=groups, always_on=always_on)
                )
                previous = item
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            NestedLinear(
                previous,
                head_width,
                groups=groups,
                always_on=always_on,
                norm="batch",
                activation="relu",
            ),
            SlicedLinear(head_width, num_classes),
        )
        attach_bits(self, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels, type(self).__name__)
        x = self.features(x).mean(dim=(-2, -1))
        return self.classifier(x)
