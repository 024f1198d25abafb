"""A bijection from unconstrained vectors to downhill vectors, registered for autoguides."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import Transform

from bayes_nest.distributions import constraints as downhill_constraints

__all__ = ["DownhillTransform"]


class DownhillTransform(Transform):
    r"""Maps ``x`` in :math:`\mathbb{R}^D` to a strictly decreasing vector in :math:`(0, 1)^D`.

    The map reads ``x`` as keep logits and returns the keep marginals of the chain:

    .. math::

        m_i = \prod_{j \le i} \sigma(x_j), \qquad
        x_i = \log m_i - \log(m_{i-1} - m_i), \quad m_0 = 1,

    with :math:`\sigma` the logistic sigmoid. The Jacobian is lower triangular with diagonal
    :math:`\partial m_i / \partial x_i = m_i\,\sigma(-x_i)`, so

    .. math::

        \log\lvert\det J\rvert = \sum_{i=1}^{D} \Big(\sum_{j \le i} \log\sigma(x_j)\Big)
        + \log\sigma(-x_i).

    Each factor :math:`\sigma(x_j)` is capped at :math:`\exp(-4\epsilon)` (``eps`` of the dtype)
    so that neighbours stay distinct in floating point; for ``x`` beyond about 15 (float32) the
    forward map is therefore flat. Very negative sums underflow to 0 (outside the support), as
    with any map onto an open set in floating point.
    """

    domain = constraints.real_vector
    codomain = downhill_constraints.downhill
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DownhillTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    @staticmethod
    def _log_keep(x: torch.Tensor) -> torch.Tensor:
        cap = -4.0 * torch.finfo(x.dtype).eps
        return F.logsigmoid(x).clamp(max=cap)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self._log_keep(x).cumsum(-1).exp()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        previous = F.pad(y[..., :-1], (1, 0), value=1.0)
        return y.log() - (previous - y).log()

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_marginals = self._log_keep(x).cumsum(-1)
        return (log_marginals + F.logsigmoid(-x)).sum(-1)


@biject_to.register(type(downhill_constraints.downhill))
@transform_to.register(type(downhill_constraints.downhill))
def _transform_to_downhill(constraint: object) -> Transform:
    return DownhillTransform()
