r"""Bit nesting: quantizers whose ``c``-bit grid is nested in their ``(c+1)``-bit grid.

A value normalised to :math:`x \in [0, 1)` is the sum of its bits, most significant first,
:math:`x = \sum_{k \ge 1} \beta_k 2^{-k}`. Keeping ``c`` bits is *truncation*

.. math::

    Q_c(x) = \lfloor 2^c x \rfloor / 2^c = \sum_{k=1}^{c} \beta_k 2^{-k},

so every ``c``-bit grid is a subset of the ``(c+1)``-bit grid and
:math:`Q_c(Q_{c'}(x)) = Q_c(x)` for :math:`c \le c'` (rounding would break this: a carry changes
higher bits). The bits are the additive building blocks of a ``bits`` axis: a tensor mask ``m``
over them gives :math:`\sum_k m_k \beta_k 2^{-k}`, which equals :math:`Q_c` for the prefix mask
with ``c`` ones. Gradients pass straight through the rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from .axis import NestedModule

__all__ = [
    "MAX_BITS",
    "NestedQuantizer",
    "attach_weight_quantizers",
    "bit_planes",
    "truncate",
]

MAX_BITS = 16
_TRANSFORMS = ("tanh", "linear")


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int, got {bits!r}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in [1, {MAX_BITS}], got {bits}")
    return bits


def truncate(x: torch.Tensor, bits: int) -> torch.Tensor:
    r"""Keep the ``bits`` most significant bits of ``x ∈ [0, 1)``: :math:`\lfloor 2^c x\rfloor/2^c`.

    No gradient (use :class:`NestedQuantizer` for the straight-through version). Scaling by a
    power of two is exact in floating point, so the result is exact for ``bits`` up to the
    mantissa width.
    """
    scale = float(2**bits)
    return torch.floor(x * scale) / scale


def bit_planes(x: torch.Tensor, bits: int) -> torch.Tensor:
    r"""The first ``bits`` binary digits of ``x ∈ [0, 1)``, MSB first.

    :math:`\beta_k = \lfloor 2^k x \rfloor - 2 \lfloor 2^{k-1} x \rfloor`.

    Returns
    -------
    Tensor, shape ``(bits,) + x.shape``, entries in {0, 1}
    """
    powers = 2.0 ** torch.arange(bits + 1, dtype=x.dtype, device=x.device)
    floors = torch.floor(x.unsqueeze(0) * powers.view((-1,) + (1,) * x.dim()))
    return floors[1:] - 2.0 * floors[:-1]


class NestedQuantizer(NestedModule):
    r"""Nested (bit-truncating) fake quantizer with a ``bits`` axis.

    **Signed mode** (``signed=True``, weights). With ``a = max|w|`` (no gradient):

    * ``transform="tanh"`` (DoReFa): :math:`x = \tanh(w) / (2 \max|\tanh w|) + 1/2`;
    * ``transform="linear"``: :math:`x = w / (2a) + 1/2`;

    then :math:`x` is clipped to :math:`[0, 1 - 2^{-K}]` (the maximum maps to the top ``K``-bit
    level, not to 1), ``c`` bits are kept, and the value is mapped back to the weight scale,
    :math:`w_q = a\,(2 (Q_c(x) + o_c) - 1)`, with the mid-offset :math:`o_c = 2^{-(c+1)}` when
    ``offset`` is true (reconstruction at bin centres: a symmetric grid; the bin edges stay
    nested) and 0 otherwise.

    **Unsigned mode** (``signed=False``, non-negative activations): :math:`x = v / r` clipped to
    :math:`[0, 1 - 2^{-K}]` with range ``r = clip`` (a buffer, or a parameter when
    ``learn_clip``), output :math:`r\,(Q_c(x) + o_c)`.

    Masks: ``None`` keeps all ``K = bits`` bits; an int ``c`` keeps ``c``; a tensor ``m`` of
    shape ``(K,)`` gives :math:`\sum_k m_k \beta_k 2^{-k}` in place of :math:`Q_c(x)` and the
    offset :math:`\sum_{k=0}^{K} (m_k - m_{k+1}) 2^{-(k+1)}` (with :math:`m_0 = 1`,
    :math:`m_{K+1} = 0`), both equal to the hard values for a prefix mask, and differentiable in
    ``m``.

    Gradients (straight-through, :math:`\partial Q / \partial x := 1`): in signed mode
    :math:`\partial w_q / \partial w = 1` for ``"linear"`` and
    :math:`a (1 - \tanh^2 w) / \max|\tanh w|` for ``"tanh"``; in unsigned mode 1 inside
    :math:`[0, r]` and 0 outside.

    Parameters
    ----------
    bits : int
        Total bits ``K`` (the axis size), ``1 <= K <= 16``.
    always_on : int
        Bits never dropped (default 1).
    axis_name : str or None
        Axis name (default ``"bits"``: all quantizers of a network share one axis); ``None``
        names it after the module path.
    signed : bool
        Weight mode (default) or non-negative activation mode.
    transform : {"tanh", "linear"}
        Normalisation of signed values.
    offset : bool, optional
        Add the mid-offset; default: true in signed mode, false in unsigned mode (so 0 stays
        representable for ReLU outputs).
    clip : float
        Range of unsigned values (default 1).
    learn_clip : bool
        Make the unsigned range a learnable parameter.

    Shapes
    ------
    any; output has the input's shape.
    """

    axis_kind = "bits"

    def __init__(
        self,
        bits: int,
        *,
        always_on: int = 1,
        axis_name: str | None = "bits",
        signed: bool = True,
        transform: str = "tanh",
        offset: bool | None = None,
        clip: float = 1.0,
        learn_clip: bool = False,
    ) -> None:
        bits = _check_bits(bits)
        if isinstance(always_on, bool) or not isinstance(always_on, int):
            raise TypeError(f"always_on must be an int, got {always_on!r}")
        if not 0 <= always_on <= bits:
            raise ValueError(f"always_on must be in [0, bits={bits}], got {always_on}")
        if transform not in _TRANSFORMS:
            raise ValueError(f"transform must be one of {_TRANSFORMS}, got {transform!r}")
        if not isinstance(clip, int | float) or not float(clip) > 0.0:
            raise ValueError(f"clip must be a positive number, got {clip!r}")
        super().__init__(size=bits, always_on=always_on, axis_name=axis_name)
        self.bits = bits
        self.signed = bool(signed)
        self.transform = transform
        self.offset = self.signed if offset is None else bool(offset)
        clip_tensor = torch.tensor(float(clip))
        if learn_clip:
            self.clip = nn.Parameter(clip_tensor)
        else:
            self.register_buffer("clip", clip_tensor)

    # -- normalisation ---------------------------------------------------------------------
    def _normalise(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``v`` to ``x`` in [0, 1] (differentiable) and return ``(x, scale)``."""
        if not self.signed:
            return v / self.clip, self.clip
        a = v.detach().abs().max().clamp_min(torch.finfo(v.dtype).tiny)
        if self.transform == "linear":
            return v / (2.0 * a) + 0.5, a
        t = torch.tanh(v)
        s = t.detach().abs().max().clamp_min(torch.finfo(v.dtype).tiny)
        return t / (2.0 * s) + 0.5, a

    def _denormalise(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * (2.0 * q - 1.0) if self.signed else scale * q

    # -- the nested levels -----------------------------------------------------------------
    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Quantized value of ``x in [0, 1)`` (no gradient to ``x``) under the current mask."""
        mask = self.mask
        if not isinstance(mask, torch.Tensor):
            c = self.bits if mask is None else mask
            q = truncate(x, c)
            return q + 2.0 ** -(c + 1) if self.offset else q
        m = mask.to(x.dtype)
        weights = 2.0 ** -torch.arange(1, self.bits + 1, dtype=x.dtype, device=x.device)
        planes = bit_planes(x, self.bits)
        q = torch.tensordot(m * weights, planes, dims=1)
        if self.offset:
            padded = torch.cat([m.new_ones(1), m, m.new_zeros(1)])
            q = q + ((padded[:-1] - padded[1:]) * 0.5 * torch.cat([m.new_ones(1), weights])).sum()
        return q

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        x, scale = self._normalise(v)
        top = 1.0 - 2.0**-self.bits
        if self.signed:
            inner = x  # already in [0, 1]; only the maximum is clipped (no gradient effect)
        else:
            inner = x.clamp(0.0, 1.0)  # PACT-style: zero gradient outside the range
        q = self._levels(x.detach().clamp(0.0, top))
        # straight-through: forward value q, gradient of `inner` with respect to v
        q = inner + (q - inner.detach())
        return self._denormalise(q, scale)

    def extra_repr(self) -> str:
        mode = f"signed, transform={self.transform!r}" if self.signed else "unsigned"
        return f"{super().extra_repr()}, bits={self.bits}, {mode}, offset={self.offset}"


def attach_weight_quantizers(
    module: nn.Module,
    bits: int,
    *,
    axis_name: str | None = "bits",
    always_on: int = 1,
    transform: str = "tanh",
    offset: bool | None = None,
) -> list[NestedQuantizer]:
    """Give every width layer of ``module`` a nested weight quantizer.

    Sets ``.weight_quantizer`` on each :class:`~bayes_nest.nn.NestedLinear` /
    :class:`~bayes_nest.nn.NestedConv2d` (any width-axis owner with that attribute). Each layer
    gets its own :class:`NestedQuantizer` (its own range), all sharing the axis ``axis_name``
    (default ``"bits"``: one keep count for the whole network; ``None``: one axis per layer,
    named ``"<layer path>.weight_quantizer"``). Layers that already have a quantizer get a new one.

    Returns
    -------
    list[NestedQuantizer]
        The quantizers, in module order.

    Raises
    ------
    ValueError
        For bad ``bits`` or ``always_on``, or if ``module`` has no width layers.
    """
    bits = _check_bits(bits)
    targets = [
        sub
        for sub in module.modules()
        if isinstance(sub, NestedModule) and sub.axis_kind == "width"
        if hasattr(sub, "weight_quantizer")
    ]
    if not targets:
        raise ValueError(
            f"module {type(module).__name__} has no width layers to attach quantizers to"
        )
    quantizers = []
    for layer in targets:
        quantizer = NestedQuantizer(
            bits,
            always_on=always_on,
            axis_name=axis_name,
            signed=True,
            transform=transform,
            offset=offset,
        )
        layer.weight_quantizer = quantizer
        quantizers.append(quantizer)
    return quantizers
