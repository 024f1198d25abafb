r"""The weight posterior of a nested layer given its mask: posterior where kept, prior where not.

A block dropped by the mask contributes nothing downstream, so its weights revert to the prior.
Per element, with a keep value :math:`k \in \{0, 1\}` (the hard mask of the block the element's
output row feeds),

.. math:: q(w \mid k) = \begin{cases} \mathcal N(\mu, \sigma^2) & k = 1 \\
   \mathcal N(m_0, s_0^2) & k = 0, \end{cases}
   \qquad \mathrm{KL}(q(w \mid k) \,\|\, \mathcal N(m_0, s_0^2))
   = k\, \mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(m_0, s_0^2)).

:class:`NestedNormal` is that distribution: a Normal with location
:math:`m_0 + k(\mu - m_0)` and scale :math:`s_0 + k(\sigma - s_0)`, and its KL to a Normal is
registered as :math:`k\, \mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, p)`, exact for hard keep
values. With a straight-through mask (hard forward value, relaxed gradient) the gradient of the
KL with respect to :math:`k` is :math:`\mathrm{KL}(\mathcal N(\mu, \sigma^2) \| p)`, the cost of
keeping the block, so the expected mask gradient of the ELBO approximates that of BNNN's nested
weight KL :math:`\sum_k P(b \ge k)\, \mathrm{KL}_k`.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import register_kl

__all__ = ["NestedNormal", "normal_kl_elementwise"]


def normal_kl_elementwise(
    loc: torch.Tensor, scale: torch.Tensor, prior_loc: torch.Tensor, prior_scale: torch.Tensor
) -> torch.Tensor:
    r""":math:`\log(s/\sigma) + (\sigma^2 + (\mu - m)^2) / (2 s^2) - 1/2` elementwise."""
    return (
        torch.log(prior_scale / scale)
        + (scale.square() + (loc - prior_loc).square()) / (2.0 * prior_scale.square())
        - 0.5
    )


class NestedNormal(dist.Normal):
    r"""A Normal that is the posterior :math:`\mathcal N(\mu, \sigma^2)` where ``keep`` is 1
    and the prior :math:`\mathcal N(m_0, s_0^2)` where it is 0.

    Parameters
    ----------
    post_loc, post_scale : Tensor
        :math:`\mu`, :math:`\sigma` (broadcastable).
    prior_loc, prior_scale : float
        :math:`m_0`, :math:`s_0`.
    keep : Tensor
        Hard keep values (0 or 1; a straight-through mask carries a gradient), broadcastable
        to ``post_loc``.
    """

    def __init__(
        self,
        post_loc: torch.Tensor,
        post_scale: torch.Tensor,
        prior_loc: float,
        prior_scale: float,
        keep: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        self.post_loc, self.post_scale, self.keep = post_loc, post_scale, keep
        self.prior_loc, self.prior_scale = float(prior_loc), float(prior_scale)
        loc, scale = self.effective(post_loc, post_scale, prior_loc, prior_scale, keep)
        super().__init__(loc, scale, validate_args=validate_args)

    @staticmethod
    def effective(
        post_loc: torch.Tensor,
        post_scale: torch.Tensor,
        prior_loc: float,
        prior_scale: float,
        keep: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The location and scale of the Normal that is drawn from (values as in the class
        documentation for hard ``keep``)."""
        return (
            prior_loc + keep * (post_loc - prior_loc),
            prior_scale + keep * (post_scale - prior_scale),
        )

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return NestedNormal(
            self.post_loc.expand(shape),
            self.post_scale.expand(shape),
            self.prior_loc,
            self.prior_scale,
            torch.broadcast_to(self.keep, shape),
            validate_args=False,
        )


@register_kl(NestedNormal, dist.Normal)
def _kl_nested_normal_normal(p: NestedNormal, q: dist.Normal) -> torch.Tensor:
    kl = normal_kl_elementwise(p.post_loc, p.post_scale, q.loc, q.scale)
    return p.keep * kl
