"""Ordered-mask distributions for nested networks, in Pyro's conventions.

* :class:`KeepCount` -- the number of kept blocks ``b`` in ``{0..D}`` of a chain of keep decisions.
* :class:`Downhill` -- a relaxed ordered mask (strictly decreasing in ``(0, 1)``), reparameterised.
* :class:`DownhillStraightThrough` -- hard ordered masks forward, relaxed gradients backward.
* :class:`DownhillTransform` -- bijection from ``R^D`` onto downhill vectors (for autoguides).
* :func:`kl_keep_count` -- closed-form KL of keep counts, registered for the straight-through
  variant (hard masks).
* :class:`NestedNormal` -- a weight posterior that reverts to the prior where a mask drops.
* :mod:`~bayes_nest.distributions.constraints` -- ``downhill``, ``downhill_closed`` and friends.
"""

from bayes_nest.distributions import constraints
from bayes_nest.distributions.downhill import Downhill
from bayes_nest.distributions.downhill_straight_through import DownhillStraightThrough
from bayes_nest.distributions.keep_count import KeepCount, hard_mask
from bayes_nest.distributions.kl import kl_keep_count
from bayes_nest.distributions.nested_normal import NestedNormal
from bayes_nest.distributions.transforms import DownhillTransform

__all__ = [
    "Downhill",
    "DownhillStraightThrough",
    "DownhillTransform",
    "KeepCount",
    "NestedNormal",
    "constraints",
    "hard_mask",
    "kl_keep_count",
]
