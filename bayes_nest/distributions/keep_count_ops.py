r"""Fused per-step operations on the keep-count law (keep terms and mask draws).

The values come from :mod:`bayes_nest.distributions.keep_count` (log probabilities, marginals,
KL) and are those of :class:`~bayes_nest.distributions.Downhill`'s draw; what this module adds is
hand-derived gradients, so a training step costs two autograd nodes per axis. Used by the
variational ordering units and the BNNN's fast ELBO.

A BNNN training step needs, for every axis, three functions of the keep logits
:math:`\ell \in \mathbb R^D`: the keep-count log probabilities :math:`\log q` (for the mask
draw), the keep marginals :math:`P(b \ge k)` (the weights of the nested weight KL) and the
closed-form mask KL. Written with ordinary tensor operations they cost about thirty tiny autograd
nodes per axis, more than the arithmetic itself. The two :class:`torch.autograd.Function` s here
compute the same values with hand-derived gradients, in two nodes.

**Keep terms** (:func:`keep_terms`). With :math:`L_i = \log\sigma(\ell_i)`,
:math:`L^{d}_i = L_i - \ell_i = \log(1 - \sigma(\ell_i))` and :math:`c_k = \sum_{i \le k} L_i`:

.. math:: \log q = (0, c_1, \dots, c_D) + (L^d_1, \dots, L^d_D, 0), \qquad
   P(b \ge k) = e^{c_k}, \qquad
   \mathrm{KL} = \sum_b q_b (\log q_b - \log p_b).

Gradients: :math:`\partial \mathrm{KL} / \partial \log q_b = q_b(\log q_b - \log p_b + 1)`;
:math:`\partial c_k / \partial L_i = 1[i \le k]` (a reversed cumulative sum);
:math:`\partial L_i / \partial \ell_i = \sigma(-\ell_i)`, :math:`\partial L^d_i / \partial
\ell_i = -\sigma(\ell_i)`.

**Mask draw** (:func:`draw_mask`), from Gumbel noise :math:`g` in reversed order
(:math:`k = D, \dots, 0`, as the Downhill sampler draws it): scores
:math:`s = (\log q_{D..0} + g)/\tau`, :math:`y = \mathrm{softmax}(s)` floored at
:math:`4\epsilon`, tails :math:`t_j = \sum_{k \le j} y_k`, relaxed mask
:math:`\tilde m = (t_{0..D-1} / t_D)` reversed, i.e. :math:`\tilde m_i = \sum_{k \ge i} y_k`
renormalised. The straight-through value is the hard mask :math:`1[i \le b]`,
:math:`b = D - \arg\max_j s_j`, with the relaxed mask's gradient. Backward, with
:math:`r = t_{0..D-1}/t_D`: :math:`\partial t_j = \partial r_j / t_D` for :math:`j < D`,
:math:`\partial t_D = -\sum_j \partial r_j\, r_j / t_D`; :math:`\partial y` is the reversed
cumulative sum of :math:`\partial t`, masked where the floor is active; the softmax gives
:math:`\partial s = y \odot (\partial y - \langle \partial y, y \rangle)`.

Both return full block vectors: ones for the ``always_on`` leading blocks, then the orderable
ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from bayes_nest.distributions.keep_count import (
    keep_count_kl,
    keep_count_log_probs,
    log_keep_marginals,
)

__all__ = ["SIMPLEX_FLOOR", "draw_mask", "gumbel_noise", "keep_terms"]

SIMPLEX_FLOOR = 4.0  # smallest simplex entry of a relaxed draw, in units of the dtype's eps


def _reversed_cumsum(value: torch.Tensor) -> torch.Tensor:
    """``out_i = sum_{k >= i} value_k`` along the last dimension."""
    return value.flip(-1).cumsum(-1).flip(-1)


def _pad_ones(value: torch.Tensor, count: int) -> torch.Tensor:
    return value if count == 0 else F.pad(value, (count, 0), value=1.0)


class _KeepTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, keep_logits, log_prior, always_on):
        log_q = keep_count_log_probs(keep_logits)
        marginals = log_keep_marginals(keep_logits).exp()
        q = log_q.exp()
        kl = keep_count_kl(log_q, log_prior)
        ctx.always_on = always_on
        ctx.save_for_backward(keep_logits, log_q, q, marginals, log_prior)
        return log_q, _pad_ones(marginals, always_on), kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_log_q, grad_marginals, grad_kl):
        keep_logits, log_q, q, marginals, log_prior = ctx.saved_tensors
        grad = torch.zeros_like(log_q) if grad_log_q is None else grad_log_q.clone()
        if grad_kl is not None:
            grad.add_(grad_kl * q * (log_q - log_prior + 1.0))
        grad_cum = grad[1:]
        if grad_marginals is not None:
            grad_cum = grad_cum + grad_marginals[ctx.always_on :] * marginals
        grad_drop = grad[:-1]
        grad_keep = _reversed_cumsum(grad_cum) + grad_drop
        grad_logits = grad_keep * torch.sigmoid(-keep_logits) - grad_drop
        return grad_logits, None, None


def keep_terms(
    keep_logits: torch.Tensor, log_prior: torch.Tensor, always_on: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r""":math:`\log q`, the block keep marginals and the keep-count KL, in one autograd node.

    Parameters
    ----------
    keep_logits : Tensor, shape ``(D,)``
        :math:`\ell`.
    log_prior : Tensor, shape ``(D+1,)``
        :math:`\log p_b` of the prior keep count (no gradient).
    always_on : int
        Leading blocks that are always kept (their marginal is 1).

    Returns
    -------
    log_q : Tensor, shape ``(D+1,)``
    block_marginals : Tensor, shape ``(always_on + D,)``
        Ones, then :math:`P(b \ge k)`, :math:`k = 1..D`.
    kl : Tensor, shape ``()``
        :math:`\mathrm{KL}(q(b) \,\|\, p(b))`.
    """
    return _KeepTerms.apply(keep_logits, log_prior.detach(), int(always_on))


def gumbel_noise(num: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``num`` standard Gumbel draws from one ``torch.rand`` call, as the Downhill sampler."""
    uniform = torch.rand(num, dtype=dtype, device=device)
    return -(-uniform.clamp_(min=torch.finfo(dtype).tiny).log()).log()


class _MaskDraw(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_q, gumbel, temperature, straight_through, always_on):
        scores = (log_q.flip(-1) + gumbel) / temperature
        y = torch.softmax(scores, -1)
        floor = SIMPLEX_FLOOR * torch.finfo(y.dtype).eps
        tails = y.clamp(min=floor).cumsum(-1)
        total = tails[-1:]
        ratio = tails[:-1] / total
        if straight_through:
            count = (log_q.shape[-1] - 1) - scores.argmax(-1)
            value = (torch.arange(ratio.shape[-1], device=ratio.device) < count).to(ratio.dtype)
        else:
            value = ratio.flip(-1)
        ctx.temperature, ctx.always_on, ctx.floor = temperature, always_on, floor
        ctx.save_for_backward(y, ratio, total)
        return _pad_ones(value, always_on)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value):
        y, ratio, total = ctx.saved_tensors
        grad_ratio = grad_value[ctx.always_on :].flip(-1)
        grad_total = -(grad_ratio * ratio).sum(-1, keepdim=True)
        grad_tails = torch.cat([grad_ratio, grad_total]) / total
        grad_y = _reversed_cumsum(grad_tails) * (y >= ctx.floor)
        grad_scores = y * (grad_y - (grad_y * y).sum(-1, keepdim=True))
        return (grad_scores / ctx.temperature).flip(-1), None, None, None, None


def draw_mask(
    log_q: torch.Tensor,
    gumbel: torch.Tensor,
    temperature: float,
    *,
    straight_through: bool = True,
    always_on: int = 0,
) -> torch.Tensor:
    r"""A Downhill mask draw from :math:`\log q` and Gumbel noise, in one autograd node.

    Parameters
    ----------
    log_q : Tensor, shape ``(D+1,)``
        Keep-count log probabilities (e.g. from :func:`keep_terms`).
    gumbel : Tensor, shape ``(D+1,)``
        Standard Gumbel noise in reversed count order (:func:`gumbel_noise`).
    temperature : float
        :math:`\tau`.
    straight_through : bool
        Hard mask with the relaxed gradient (``DownhillStraightThrough``) or the relaxed mask
        (``Downhill``).
    always_on : int
        Leading ones to prepend.

    Returns
    -------
    Tensor, shape ``(always_on + D,)``
        The same value as ``DownhillStraightThrough(keep_logits, τ).rsample()`` (or
        ``Downhill``) from the same noise, padded with ones; its gradient reaches ``log_q``
        through the relaxed mask.
    """
    return _MaskDraw.apply(
        log_q, gumbel, float(temperature), bool(straight_through), int(always_on)
    )
