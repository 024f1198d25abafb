r"""Fused operations of Bayesian layers: local reparameterization and the per-unit Normal KL.

Both are :class:`torch.autograd.Function` s with hand-derived gradients. They compute exactly
the expressions the layers document; what they save is the bookkeeping of a dozen small autograd
nodes per layer and step, which dominates the cost of a small network on a CPU.

Local reparameterization of a linear map (shapes: ``x`` ``(N, d)``, ``μ``, ``σ`` ``(o, d)``,
bias ``(o,)``, noise :math:`\varepsilon` ``(N, o)``):

.. math:: v = x^2 (\sigma^2)^\top + \sigma_b^2, \qquad s = \sqrt{v + \delta}, \qquad
   h = x \mu^\top + \mu_b + s \odot \varepsilon,

with :math:`\delta` = ``1e-12``. With :math:`g = \partial L / \partial h` and
:math:`g_v = g \odot \varepsilon / (2 s)`:

.. math:: \partial_\mu L = g^\top x, \quad \partial_{\mu_b} L = \textstyle\sum_n g, \quad
   \partial_\sigma L = 2\sigma \odot (g_v^\top x^2), \quad
   \partial_{\sigma_b} L = 2\sigma_b \odot \textstyle\sum_n g_v, \quad
   \partial_x L = g \mu + 2x \odot (g_v \sigma^2).

Per-unit KL of a layer (row :math:`i` of the weight and bias entry :math:`i`, prior
:math:`\mathcal N(m, s_0^2)`):

.. math:: \kappa_i = \sum_j \Big[\log\frac{s_0}{\sigma_{ij}}
   + \frac{\sigma_{ij}^2 + (\mu_{ij} - m)^2}{2 s_0^2} - \frac12\Big], \qquad
   \frac{\partial \kappa_i}{\partial \mu_{ij}} = \frac{\mu_{ij} - m}{s_0^2}, \quad
   \frac{\partial \kappa_i}{\partial \sigma_{ij}} = \frac{\sigma_{ij}}{s_0^2}
   - \frac{1}{\sigma_{ij}}.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    "VAR_FLOOR",
    "block_weighted_normal_kl",
    "example_noise",
    "example_shard",
    "local_reparam_linear",
    "per_unit_normal_kl",
]

VAR_FLOOR = 1e-12  # added to the pre-activation variance before the square root

_shard: tuple[int, int, int] | None = None  # (rank, world size, rows of the global batch)


@contextlib.contextmanager
def example_shard(rank: int, world_size: int, global_rows: int) -> Iterator[None]:
    """Within this context, the batches are rows ``rank, rank + world_size, ...`` of a global
    batch of ``global_rows`` rows, and per-example noise (:func:`example_noise`) is drawn for
    the global batch and split the same way.

    So every process of a data-parallel job draws the random numbers a single process would
    draw for the whole batch, and keeps its rows: the processes' random streams stay equal, and
    their results are those of one process (a training loop that splits batches this way
    enters this context around each step).
    """
    global _shard
    if not 0 <= rank < world_size or global_rows < 1:
        raise ValueError(
            f"need 0 <= rank < world_size and global_rows >= 1, got rank={rank}, "
            f"world_size={world_size}, global_rows={global_rows}"
        )
    previous, _shard = _shard, (int(rank), int(world_size), int(global_rows))
    try:
        yield
    finally:
        _shard = previous


def example_noise(like: torch.Tensor) -> torch.Tensor:
    r"""Standard normal noise shaped like ``like`` (whose dim 0 indexes examples):
    ``torch.randn_like(like)``, or inside :func:`example_shard` this process's rows of one draw
    for the global batch.
    """
    if _shard is None:
        return torch.randn_like(like)
    rank, world_size, rows = _shard
    local = len(range(rank, rows, world_size))
    if like.dim() == 0 or like.shape[0] != local:
        raise RuntimeError(
            f"per-example noise of shape {tuple(like.shape)} inside example_shard(rank={rank}, "
            f"world_size={world_size}, global_rows={rows}): dim 0 should hold this process's "
            f"{local} examples"
        )
    noise = torch.randn((rows, *like.shape[1:]), dtype=like.dtype, device=like.device)
    return noise[rank::world_size].contiguous()


class _LocalReparamLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_loc, weight_scale, bias_loc, bias_scale):
        mean = F.linear(x, weight_loc, bias_loc)
        x_sq = x * x
        weight_var = weight_scale * weight_scale
        bias_var = None if bias_scale is None else bias_scale * bias_scale
        std = F.linear(x_sq, weight_var, bias_var).add_(VAR_FLOOR).sqrt_()
        noise = example_noise(mean)
        ctx.save_for_backward(x, x_sq, weight_loc, weight_scale, weight_var, bias_scale, std, noise)
        return torch.addcmul(mean, std, noise)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, x_sq, weight_loc, weight_scale, weight_var, bias_scale, std, noise = ctx.saved_tensors
        need = ctx.needs_input_grad
        # 2 g_v: the factors 2 of the variance's derivatives cancel the 1/2 of g_v (exactly:
        # scaling by 2 is exact in floating point)
        grad_var2 = grad * noise / std
        grad_x = grad_loc = grad_scale = grad_bias_loc = grad_bias_scale = None
        if need[0]:
            grad_x = torch.addcmul(grad @ weight_loc, x, grad_var2 @ weight_var)
        if need[1]:
            grad_loc = grad.t() @ x
        if need[2]:
            grad_scale = weight_scale * (grad_var2.t() @ x_sq)
        if need[3]:
            grad_bias_loc = grad.sum(0)
        if need[4]:
            grad_bias_scale = bias_scale * grad_var2.sum(0)
        return grad_x, grad_loc, grad_scale, grad_bias_loc, grad_bias_scale


def local_reparam_linear(
    x: torch.Tensor,
    weight_loc: torch.Tensor,
    weight_scale: torch.Tensor,
    bias_loc: torch.Tensor | None = None,
    bias_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""One draw of the pre-activations :math:`h = x\mu^\top + \mu_b + s \odot \varepsilon`.

    Parameters
    ----------
    x : Tensor, shape ``(N, d)``
    weight_loc, weight_scale : Tensor, shape ``(o, d)``
        Posterior mean and standard deviation of the weight.
    bias_loc, bias_scale : Tensor, shape ``(o,)``, optional
        Both or neither.

    Returns
    -------
    Tensor, shape ``(N, o)``
        The noise :math:`\varepsilon` is one ``torch.randn`` draw of that shape, taken after the
        moments are computed.
    """
    _check_bias(bias_loc, bias_scale)
    return _LocalReparamLinear.apply(x, weight_loc, weight_scale, bias_loc, bias_scale)


class _PerUnitNormalKL(torch.autograd.Function):
    """Per-unit KL ``(o,)``, or with ``block_weights`` the scalar ``sum_k w_k sum_{i in k} κ_i``."""

    @staticmethod
    def forward(
        ctx,
        weight_loc,
        weight_scale,
        bias_loc,
        bias_scale,
        block_weights,
        block_size,
        prior_loc,
        prior_scale,
    ):
        two_var = 2.0 * prior_scale**2
        const = math.log(prior_scale) - 0.5
        centred = weight_loc - prior_loc if prior_loc else weight_loc
        flat_centred, flat_scale = centred.flatten(1), weight_scale.flatten(1)
        kl = (flat_scale * flat_scale + flat_centred * flat_centred).sum(-1).div_(two_var)
        kl.sub_(flat_scale.log().sum(-1)).add_(flat_centred.shape[1] * const)
        bias_centred = None
        if bias_loc is not None:
            bias_centred = bias_loc - prior_loc if prior_loc else bias_loc
            bias_kl = (bias_scale * bias_scale + bias_centred * bias_centred) / two_var
            kl.add_(bias_kl.sub_(bias_scale.log()).add_(const))
        ctx.prior_var, ctx.block_size = prior_scale**2, block_size
        per_block = None
        if block_weights is not None:
            per_block = kl.view(-1, block_size).sum(-1)
            kl = (per_block * block_weights).sum()
        ctx.save_for_backward(
            centred, weight_scale, bias_centred, bias_scale, block_weights, per_block
        )
        return kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        centred, weight_scale, bias_centred, bias_scale, block_weights, per_block = (
            ctx.saved_tensors
        )
        need = ctx.needs_input_grad
        grad_block_weights = None
        if block_weights is not None:
            if need[4]:
                grad_block_weights = grad * per_block
            grad = (grad * block_weights).repeat_interleave(ctx.block_size)
        prior_var = ctx.prior_var
        rows = grad.view((-1,) + (1,) * (centred.dim() - 1))
        grad_loc = grad_scale = grad_bias_loc = grad_bias_scale = None
        if need[0]:
            grad_loc = centred * (rows / prior_var)
        if need[1]:
            grad_scale = (weight_scale / prior_var - weight_scale.reciprocal()).mul_(rows)
        if need[2]:
            grad_bias_loc = bias_centred * (grad / prior_var)
        if need[3]:
            grad_bias_scale = (bias_scale / prior_var - bias_scale.reciprocal()).mul_(grad)
        return (
            grad_loc,
            grad_scale,
            grad_bias_loc,
            grad_bias_scale,
            grad_block_weights,
            None,
            None,
            None,
        )


def _check_bias(bias_loc, bias_scale) -> None:
    if (bias_loc is None) != (bias_scale is None):
        raise ValueError("give both bias_loc and bias_scale, or neither")


def per_unit_normal_kl(
    weight_loc: torch.Tensor,
    weight_scale: torch.Tensor,
    bias_loc: torch.Tensor | None,
    bias_scale: torch.Tensor | None,
    prior_loc: float,
    prior_scale: float,
) -> torch.Tensor:
    r""":math:`\kappa_i`: the Normal KL of output unit :math:`i`'s weights and bias, summed.

    Parameters
    ----------
    weight_loc, weight_scale : Tensor, shape ``(o, ...)``
    bias_loc, bias_scale : Tensor, shape ``(o,)``, or None
    prior_loc, prior_scale : float
        :math:`m` and :math:`s_0` of the Normal prior of every entry.

    Returns
    -------
    Tensor, shape ``(o,)``
    """
    _check_bias(bias_loc, bias_scale)
    return _PerUnitNormalKL.apply(
        weight_loc,
        weight_scale,
        bias_loc,
        bias_scale,
        None,
        1,
        float(prior_loc),
        float(prior_scale),
    )


def block_weighted_normal_kl(
    weight_loc: torch.Tensor,
    weight_scale: torch.Tensor,
    bias_loc: torch.Tensor | None,
    bias_scale: torch.Tensor | None,
    block_weights: torch.Tensor,
    block_size: int,
    prior_loc: float,
    prior_scale: float,
) -> torch.Tensor:
    r""":math:`\sum_k w_k \sum_{i \in \text{block } k} \kappa_i`, a scalar.

    The output units form consecutive blocks of ``block_size`` units; ``block_weights``
    :math:`w` has shape ``(o / block_size,)`` and receives the gradient
    :math:`\sum_{i \in k} \kappa_i` (e.g. keep marginals :math:`P(b \ge k)`, the BNNN weight
    KL of :mod:`bayes_nest.infer.bnnn_kl`). Other arguments as :func:`per_unit_normal_kl`.
    """
    _check_bias(bias_loc, bias_scale)
    return _PerUnitNormalKL.apply(
        weight_loc,
        weight_scale,
        bias_loc,
        bias_scale,
        block_weights,
        int(block_size),
        float(prior_loc),
        float(prior_scale),
    )
