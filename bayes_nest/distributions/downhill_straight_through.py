"""Downhill with a straight-through estimator: hard masks forward, relaxed gradients backward."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bayes_nest.distributions.constraints import downhill, downhill_closed
from bayes_nest.distributions.downhill import Downhill
from bayes_nest.distributions.keep_count import hard_mask

__all__ = ["DownhillStraightThrough"]

_ShapeLike = torch.Size | Sequence[int]


class DownhillStraightThrough(Downhill):
    r"""Downhill whose samples are hard ordered masks with the relaxed sample's gradient.

    One Concrete draw :math:`y \sim \mathrm{Concrete}(\log q, \tau)` gives the relaxed mask
    :math:`\tilde m_i = \sum_{k \ge i} y_k` (see :class:`~bayes_nest.distributions.Downhill`) and
    the keep count :math:`b = \arg\max_k y_k \sim \mathrm{Cat}(q)`. :meth:`rsample` returns

    .. math::

        m_i = 1[i \le b] \quad \text{(forward)}, \qquad
        \frac{\partial m}{\partial \theta} := \frac{\partial \tilde m}{\partial \theta}
        \quad \text{(backward)},

    so :math:`\mathbb{E}[m_i] = P(b \ge i) = \prod_{j \le i} \beta_j` exactly (:attr:`mean`),
    and the forward value is exactly 0 or 1. The returned tensor carries the relaxed sample
    as ``value._relaxed`` (as Pyro's ``RelaxedOneHotCategoricalStraightThrough`` does).

    :meth:`log_prob` evaluates:

    * the relaxed Downhill density at ``value._relaxed`` when the value carries it (this is what
      ``Trace_ELBO`` sees for a sample of this distribution);
    * otherwise, for a hard mask (every entry 0 or 1, non-increasing), the keep-count
      **probability mass** :math:`\log q_b` with :math:`b = \sum_i m_i` -- a different measure
      from the density, so do not mix the two cases in one objective;
    * otherwise the relaxed Downhill density of the value, which must then lie in the open
      support (strictly decreasing in (0, 1)).

    The support is :data:`~bayes_nest.distributions.constraints.downhill_closed`, which holds
    both hard and relaxed masks. Parameters and shapes are those of ``Downhill``.
    """

    support = downhill_closed

    def rsample(self, sample_shape: _ShapeLike = ()) -> torch.Tensor:
        """Hard masks of shape ``sample_shape + batch + (D,)`` with relaxed gradients."""
        scores = self._rsample_scores(sample_shape)
        relaxed = self._tails(scores)
        counts = self.num_blocks - scores.max(-1).indices
        value = _StraightThrough.apply(relaxed, counts)
        value._relaxed = relaxed
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        relaxed = getattr(value, "_relaxed", None)
        if relaxed is not None:
            return super().log_prob(relaxed)
        if bool(((value == 0) | (value == 1)).all()):
            if self._validate_args:
                self._validate_sample(value)
            counts = value.sum(-1).round().long()
            return self.index_distribution.log_prob(counts)
        if self._validate_args:
            self._validate_sample(value)
            if not bool(downhill.check(value).all()):
                raise ValueError(
                    "DownhillStraightThrough.log_prob: a value that is not a hard mask must be "
                    "strictly decreasing in (0, 1) (the relaxed support)"
                )
        return self._relaxed_log_prob(value)

    @property
    def mean(self) -> torch.Tensor:
        """:math:`\\prod_{j \\le i}\\beta_j`, shape ``batch + (D,)`` (exact)."""
        return self.index_distribution.keep_marginals

    @property
    def variance(self) -> torch.Tensor:
        marginals = self.index_distribution.keep_marginals
        return marginals * (1 - marginals)


class _StraightThrough(torch.autograd.Function):
    """Forward: the hard mask ``1[i <= b]``; backward: the gradient goes to the relaxed mask."""

    @staticmethod
    def forward(ctx, relaxed: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return hard_mask(counts, relaxed.shape[-1], dtype=relaxed.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None
