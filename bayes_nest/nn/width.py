"""Width nesting: linear and 2-D conv layers whose output units form ordered groups.

A width layer computes ``mask ⊙ act(norm(W x + b))`` where the ``out`` units are split into
``groups`` equal blocks. The mask multiplies a block *after* normalisation and activation, so a
dropped block contributes exactly nothing downstream and the sliced (exported) layer computes the
same function. Under a hard keep count ``n`` only the first ``n · block_size`` units are computed
(slimmable-style slicing ``weight[:out, :in]``); every layer here accepts inputs narrower than its
``in`` dimension and uses the matching leading columns of its weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .axis import NestedModule

__all__ = ["NestedConv2d", "NestedLinear", "SlicedConv2d", "SlicedLinear", "make_activation"]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "silu": F.silu,
}


def make_activation(
    activation: str | Callable[[torch.Tensor], torch.Tensor] | None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Resolve an activation given by name (``"relu"``, ``"gelu"``, ``"tanh"``, ``"silu"``),
    callable or ``None``. Activations must act elementwise so that slicing commutes with them."""
    if activation is None or callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}"
        )
    return _ACTIVATIONS[activation]


def _input_width(x: torch.Tensor, dim: int, expected: int, layer: str) -> int:
    width = x.shape[dim]
    if width > expected:
        raise ValueError(f"{layer}: input has {width} features/channels, more than {expected}")
    return width


def _batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, width: int) -> torch.Tensor:
    """Batch-norm over the first ``width`` channels, sharing (slices of) the full statistics."""
    use_batch_stats = norm.training or norm.running_mean is None
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(norm.num_batches_tracked)
    return F.batch_norm(
        x,
        None if norm.running_mean is None else norm.running_mean[:width],
        None if norm.running_var is None else norm.running_var[:width],
        None if norm.weight is None else norm.weight[:width],
        None if norm.bias is None else norm.bias[:width],
        use_batch_stats,
        momentum,
        norm.eps,
    )


class SlicedLinear(nn.Linear):
    """A linear layer that accepts inputs narrower than ``in_features`` and can drop outputs.

    ``y = x W'[:o, :d]^T + b[:o]`` where ``d = x.shape[-1] <= in_features``, ``o = out_units``
    (default all) and ``W' = weight_transform(W)`` (default ``W``). The dropped inputs of a
    sliced previous layer contribute nothing, exactly as if they were zero. Layers with other
    weight posteriors (e.g. Bayesian ones) implement the same ``forward`` signature.
    """

    def forward(
        self,
        x: torch.Tensor,
        out_units: int | None = None,
        weight_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        width = _input_width(x, -1, self.in_features, type(self).__name__)
        weight = self.weight if weight_transform is None else weight_transform(self.weight)
        bias = self.bias if self.bias is None or out_units is None else self.bias[:out_units]
        return F.linear(x, weight[:out_units, :width], bias)


class SlicedConv2d(nn.Conv2d):
    """A 2-D convolution that accepts inputs with fewer than ``in_channels`` channels and can drop
    output channels; same slicing rules as :class:`SlicedLinear`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1:
            raise ValueError("SlicedConv2d supports groups=1 only")

    def forward(
        self,
        x: torch.Tensor,
        out_units: int | None = None,
        weight_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        width = _input_width(x, -3, self.in_channels, type(self).__name__)
        if width == 0:
            # torch's convolution drops the output channels of an empty input; a zero channel
            # contributes nothing, exactly as the missing inputs.
            x = x.new_zeros(x.shape[:-3] + (1,) + x.shape[-2:])
            width = 1
        weight = self.weight if weight_transform is None else weight_transform(self.weight)
        bias = self.bias if self.bias is None or out_units is None else self.bias[:out_units]
        return self._conv_forward(x, weight[:out_units, :width], bias)


class _NestedWidth(NestedModule):
    """Shared logic of width layers: slicing, normalisation, activation, block mask."""

    axis_kind = "width"
    channel_dim: int = -1

    def __init__(
        self,
        out_units: int,
        groups: int,
        always_on: int,
        axis_name: str | None,
        norm: str | None,
        activation: str | Callable | None,
    ) -> None:
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive integer, got {groups!r}")
        if out_units % groups:
            raise ValueError(f"out units ({out_units}) must be divisible by groups ({groups})")
        super().__init__(
            size=groups, always_on=always_on, block_size=out_units // groups, axis_name=axis_name
        )
        if norm not in (None, "batch"):
            raise ValueError(f"norm must be None or 'batch', got {norm!r}")
        self.activation = make_activation(activation)
        self.norm_kind = norm
        # Optional module mapping the full weight to its quantized value (a bits axis owner).
        # It sees the full weight so that a sliced layer uses a slice of the same quantized weight.
        self.weight_quantizer: nn.Module | None = None

    def full_weight(self) -> torch.Tensor:
        """The layer's weight after the optional weight quantizer, shape ``(out, in, ...)``."""
        weight = self.affine.weight
        return weight if self.weight_quantizer is None else self.weight_quantizer(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = self.kept_units()
        if units == 0:
            # Nothing kept (possible with always_on=0): an empty output of the right shape.
            # Convolution and batch-norm reject zero channels, so compute one unit and drop it.
            return self.affine(x, out_units=1).narrow(self.channel_dim, 0, 0)
        pre = self.affine(x, out_units=units, weight_transform=self.weight_quantizer)
        return self._finish(pre)

    def kept_units(self) -> int:
        """Output units computed under the current mask."""
        return self.kept_blocks() * self.axis_block_size

    def _finish(self, pre: torch.Tensor) -> torch.Tensor:
        width = pre.shape[self.channel_dim]
        out = pre if self.norm is None else _batch_norm(self.norm, pre, width)
        if self.activation is not None:
            out = self.activation(out)
        scale = self.block_scale(out.dtype)
        if scale is not None:
            unit_scale = scale.repeat_interleave(self.axis_block_size)
            shape = [1] * out.dim()
            shape[self.channel_dim] = -1
            out = out * unit_scale.view(shape)
        return out


class NestedLinear(_NestedWidth):
    """Linear layer with ordered output groups (a width axis).

    Computes ``y = m ⊙ act(norm(x W^T + b))`` with ``m`` the per-unit mask (each block's mask
    repeated ``out_features / groups`` times).

    Parameters
    ----------
    in_features, out_features : int
    groups : int
        Number of ordered blocks of output units; must divide ``out_features``.
    always_on : int
        Leading groups that are never dropped.
    norm : {None, "batch"}
        Batch normalisation between the affine map and the activation.
    activation : str, callable or None
    bias : bool
    axis_name : str, optional
        Explicit axis name (to share the axis between layers); default: the module path.

    Shapes
    ------
    input ``(N, d)`` with ``d <= in_features``; output ``(N, n · out_features / groups)`` under a
    hard keep count ``n``, else ``(N, out_features)``.
    """

    channel_dim = -1

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        groups: int = 16,
        always_on: int = 1,
        norm: str | None = None,
        activation: str | Callable | None = "relu",
        bias: bool = True,
        axis_name: str | None = None,
    ) -> None:
        super().__init__(out_features, groups, always_on, axis_name, norm, activation)
        self.in_features = in_features
        self.out_features = out_features
        self.affine = SlicedLinear(in_features, out_features, bias=bias)
        self.norm = nn.BatchNorm1d(out_features) if norm == "batch" else None


class NestedConv2d(_NestedWidth):
    """2-D convolution with ordered output channel groups (a width axis).

    Computes ``y = m ⊙ act(norm(conv(x, W) + b))`` per output channel, with ``m`` each block's mask
    repeated over its ``out_channels / groups`` channels.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation : as in ``nn.Conv2d``
    groups : int
        Number of ordered channel blocks (not grouped convolution); must divide ``out_channels``.
    always_on, norm, activation, bias, axis_name : as in :class:`NestedLinear`

    Shapes
    ------
    input ``(N, c, H, W)`` with ``c <= in_channels``; output ``(N, n · out_channels / groups, H', W')``
    under a hard keep count ``n``.
    """

    channel_dim = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 16,
        always_on: int = 1,
        norm: str | None = "batch",
        activation: str | Callable | None = "relu",
        bias: bool = False,
        axis_name: str | None = None,
    ) -> None:
        super().__init__(out_channels, groups, always_on, axis_name, norm, activation)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.affine = SlicedConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
        )
        self.norm = nn.BatchNorm2d(out_channels) if norm == "batch" else None
