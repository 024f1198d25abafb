r"""Closed-form KL divergences of keep counts, registered with ``torch.distributions.kl``.

For two chains with keep probabilities :math:`\beta` (first argument) and :math:`\gamma`,

.. math::

    \mathrm{KL}(q_\beta \,\|\, q_\gamma) = \sum_{b=0}^{D} q_b \log\frac{q_b}{p_b}
    = \sum_{i=1}^{D} P_\beta(b \ge i - 1)\,
      \mathrm{KL}\big(\mathrm{Bern}(\beta_i) \,\|\, \mathrm{Bern}(\gamma_i)\big)

(the second form: the chain rule over the keep decisions), evaluated from the log probabilities
of :mod:`~bayes_nest.distributions.keep_count`, the one implementation of the keep-count law.

``KL(DownhillStraightThrough || DownhillStraightThrough)`` is registered as the KL of the two
keep-count distributions: the forward values of the straight-through variant are the hard masks
:math:`1[i \le b]`, a one-to-one image of the keep count, so this is their exact KL. Nothing is
registered for the relaxed :class:`~bayes_nest.distributions.Downhill`: the keep-count KL is not
the KL of the relaxed (Concrete) densities (which has no closed form), so Pyro's
``TraceMeanField_ELBO`` estimates that term by Monte Carlo (:math:`\log q(m) - \log p(m)`).
"""

from __future__ import annotations

import torch
from torch.distributions import register_kl

from bayes_nest.distributions.downhill_straight_through import DownhillStraightThrough
from bayes_nest.distributions.keep_count import KeepCount, keep_count_kl

__all__ = ["kl_keep_count"]


def kl_keep_count(p: KeepCount, q: KeepCount) -> torch.Tensor:
    """``KL(p || q)`` of two keep-count distributions, shape ``broadcast(p.batch, q.batch)``
    (:func:`~bayes_nest.distributions.keep_count.keep_count_kl` of their log probabilities)."""
    if p.num_blocks != q.num_blocks:
        raise ValueError(
            f"KL between keep counts needs the same number of blocks; got {p.num_blocks} "
            f"and {q.num_blocks}"
        )
    return keep_count_kl(*torch.broadcast_tensors(p.logits, q.logits))


@register_kl(KeepCount, KeepCount)
def _kl_keep_count_keep_count(p: KeepCount, q: KeepCount) -> torch.Tensor:
    return kl_keep_count(p, q)


@register_kl(DownhillStraightThrough, DownhillStraightThrough)
def _kl_straight_through(p: DownhillStraightThrough, q: DownhillStraightThrough) -> torch.Tensor:
    # the hard masks do not depend on the temperature: any pair of temperatures is exact
    return kl_keep_count(p.index_distribution, q.index_distribution)
