"""The Downhill distribution: a relaxed ordered (nested-dropout) mask."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import lazy_property

from bayes_nest.distributions.constraints import downhill, open_unit_interval, positive_finite
from bayes_nest.distributions.keep_count import KeepCount

__all__ = ["Downhill"]

_ShapeLike = torch.Size | Sequence[int]


def _simplex_floor(dtype: torch.dtype) -> float:
    """Smallest simplex entry of a draw: 4 eps keeps neighbouring tail sums 3+ ulps apart."""
    return 4.0 * torch.finfo(dtype).eps


def _differences(value: torch.Tensor) -> torch.Tensor:
    """Simplex point of a mask: ``y_0 = 1 - m_1``, ``y_k = m_k - m_{k+1}``, ``y_D = m_D``."""
    padded = F.pad(value, (1, 1))
    padded[..., 0] = 1.0
    return padded[..., :-1] - padded[..., 1:]


class Downhill(TorchDistribution):
    r"""Relaxed ordered mask: a strictly decreasing vector in :math:`(0, 1)^D`.

    With keep-count probabilities :math:`q = q(\beta)` over :math:`\{0, \dots, D\}` (see
    :class:`~bayes_nest.distributions.KeepCount`), a draw is

    .. math::

        y \sim \mathrm{Concrete}(\log q, \tau) \ \text{on the } (D+1)\text{-simplex}, \qquad
        m_i = 1 - \sum_{k < i} y_k = \sum_{k \ge i} y_k, \quad i = 1, \dots, D.

    The Concrete (Gumbel-softmax) draw is :math:`y = \mathrm{softmax}((\log q + g)/\tau)` with
    i.i.d. standard Gumbel :math:`g`; its logits are :math:`\log q`, **not** :math:`q` (the
    reference implementation of the BNNN paper passes :math:`q` where logits belong, which draws
    the count from :math:`\mathrm{softmax}(q)`, nearly uniform). Hence
    :math:`\arg\max_k y_k \sim \mathrm{Cat}(q)` exactly at every temperature, and as
    :math:`\tau \to 0` the sample tends to the hard mask :math:`1[i \le b]`, :math:`b \sim q`.

    The inverse map :math:`y_0 = 1 - m_1`, :math:`y_k = m_k - m_{k+1}`, :math:`y_D = m_D` is affine
    with unit Jacobian, so the density is the Concrete density of the differences
    (:math:`n = D + 1`):

    .. math::

        \log p(m) = \log (n-1)! + (n-1)\log\tau
        + \sum_{k=0}^{D} \big(\log q_k - (\tau + 1)\log y_k\big)
        - n \log \sum_{k=0}^{D} q_k\, y_k^{-\tau}.

    Parameters
    ----------
    keep_probs : Tensor, shape ``batch + (D,)``, optional
        Conditional keep probabilities :math:`\beta \in (0,1)^D`.
    keep_logits : Tensor, shape ``batch + (D,)``, optional
        Their logits. Give exactly one of ``keep_probs`` and ``keep_logits``.
    temperature : float or Tensor
        Concrete temperature :math:`\tau > 0`; a scalar or a tensor broadcastable to the batch
        shape. Sampling and densities stay finite for :math:`\tau \in [0.05, 10]`.
    validate_args : bool, optional
        Check arguments and :meth:`log_prob` values (Pyro's default; turn off in hot loops with
        ``pyro.validation_enabled(False)``).

    Notes
    -----
    Event shape ``(D,)``; batch shape from the leading dims of the keep parameter (broadcast
    with ``temperature``). ``log q`` is computed once per instance. In floating point the simplex
    entries are floored at ``4 * eps`` of the dtype, summed from the tail by one sequential
    cumulative sum (CPU) and renormalised, so neighbouring entries of ``m`` stay several ulps
    apart and every sample lies strictly inside the support
    :data:`~bayes_nest.distributions.constraints.downhill` (``1 - m_1``, every gap
    ``m_i - m_{i+1}`` and ``m_D`` are about ``4 * eps`` or more). The mean has no closed form
    (the straight-through variant's mean is :math:`\prod_{j \le i}\beta_j`).

    Scoring: a tensor returned by :meth:`rsample` or :meth:`sample` keeps the exact
    :math:`\log y` of its draw as a tensor attribute, and :meth:`log_prob` of that very tensor
    uses it. This matters: in floating point the gaps :math:`y_k` below the floor are not
    representable in ``m``, while the density (and every score-function or ELBO estimate built
    on it) depends on them through :math:`\log y_k`. Any other tensor (a copy, ``.detach()``,
    user data) is scored from its differences. A tensor that carries a relaxed sample (the
    output of :class:`~bayes_nest.distributions.DownhillStraightThrough`) is scored at that
    relaxed sample. Pyro passes the sampled tensor itself to ``log_prob``, so ``Trace_ELBO`` and
    ``TraceMeanField_ELBO`` get the exact terms.
    """

    arg_constraints = {
        "keep_probs": constraints.independent(open_unit_interval, 1),
        "keep_logits": constraints.real_vector,
        "temperature": positive_finite,
    }
    support = downhill
    has_rsample = True

    def __init__(
        self,
        keep_probs: torch.Tensor | None = None,
        keep_logits: torch.Tensor | None = None,
        *,
        temperature: float | torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        index = KeepCount(keep_probs, keep_logits, validate_args=False)
        param = index._param
        temperature = torch.as_tensor(temperature, dtype=param.dtype, device=param.device)
        batch_shape = index.batch_shape
        if temperature.ndim > 0 and temperature.shape != batch_shape:
            try:
                batch_shape = torch.broadcast_shapes(batch_shape, temperature.shape)
            except RuntimeError as error:
                raise ValueError(
                    f"temperature of shape {tuple(temperature.shape)} does not broadcast with "
                    f"the batch shape {tuple(batch_shape)} of the keep parameter"
                ) from error
            index = index.expand(batch_shape)
            temperature = temperature.expand(batch_shape)
        self._set_state(index, temperature)
        super().__init__(batch_shape, param.shape[-1:], validate_args=validate_args)

    @classmethod
    def geometric(
        cls,
        keep_prob: float | torch.Tensor,
        num_blocks: int,
        *,
        temperature: float | torch.Tensor,
        validate_args: bool | None = None,
    ) -> Downhill:
        r"""Nested-dropout prior: :math:`\beta_i = \pi` for all ``num_blocks`` blocks.

        The keep count is the truncated geometric of :meth:`KeepCount.geometric`; ``keep_prob``
        is a scalar or a tensor of the batch shape.
        """
        keep_probs = KeepCount.geometric(keep_prob, num_blocks, validate_args=False).keep_probs
        return cls(keep_probs=keep_probs, temperature=temperature, validate_args=validate_args)

    def _set_state(self, index: KeepCount, temperature: torch.Tensor) -> None:
        self.index_distribution = index
        self.temperature = temperature
        for name in ("keep_probs", "keep_logits"):
            if name in index.__dict__:
                setattr(self, name, index.__dict__[name])

    # ------------------------------------------------------------------ shapes
    def expand(self, batch_shape: _ShapeLike, _instance: Downhill | None = None) -> Downhill:
        new = self._get_checked_instance(Downhill, _instance)
        batch_shape = torch.Size(batch_shape)
        temperature = self.temperature
        if temperature.ndim > 0:
            temperature = temperature.expand(batch_shape)
        new._set_state(self.index_distribution.expand(batch_shape), temperature)
        super(Downhill, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @classmethod
    def infer_shapes(
        cls,
        keep_probs: _ShapeLike | None = None,
        keep_logits: _ShapeLike | None = None,
        temperature: _ShapeLike = (),
    ) -> tuple[torch.Size, torch.Size]:
        shape = keep_probs if keep_probs is not None else keep_logits
        if shape is None or len(shape) == 0:
            raise ValueError(
                "infer_shapes needs the shape of keep_probs or keep_logits (ndim >= 1)"
            )
        batch_shape = torch.broadcast_shapes(torch.Size(shape[:-1]), torch.Size(temperature))
        return batch_shape, torch.Size(shape[-1:])

    @property
    def num_blocks(self) -> int:
        """``D``, the length of the mask."""
        return self.event_shape[0]

    # ------------------------------------------------------------------ parameters
    @lazy_property
    def keep_logits(self) -> torch.Tensor:
        """Keep logits, shape ``batch + (D,)``."""
        return self.index_distribution.keep_logits

    @lazy_property
    def keep_probs(self) -> torch.Tensor:
        """Conditional keep probabilities :math:`\\beta`, shape ``batch + (D,)``."""
        return self.index_distribution.keep_probs

    @lazy_property
    def _event_temperature(self) -> torch.Tensor:
        # temperature with a trailing singleton axis, to broadcast against batch + (D + 1,)
        return self.temperature.unsqueeze(-1) if self.temperature.ndim > 0 else self.temperature

    @lazy_property
    def _log_normalizer(self) -> torch.Tensor:
        n = self.num_blocks + 1
        return math.lgamma(n) + (n - 1) * self.temperature.log()

    # ------------------------------------------------------------------ sampling
    def _rsample_scores(self, sample_shape: _ShapeLike) -> torch.Tensor:
        """Gumbel-perturbed scores ``(log q + g) / tau`` in reversed order ``k = D..0``.

        The Gumbel noise is i.i.d., so reversing the order leaves the law unchanged and lets one
        cumulative sum produce the tails ``sum_{k >= i} y_k``. Large intermediate tensors are
        updated in place wherever autograd allows it (allocation dominates at large sizes).
        """
        log_q = self.index_distribution.logits
        shape = self._extended_shape(sample_shape)[:-1] + (self.num_blocks + 1,)
        noise = torch.rand(shape, dtype=log_q.dtype, device=log_q.device)
        tiny = torch.finfo(log_q.dtype).tiny
        scores = noise.clamp_(min=tiny).log_().neg_().log_().neg_().add_(log_q.flip(-1))
        temperature = self._event_temperature
        if temperature.requires_grad and torch.is_grad_enabled():
            return scores / temperature
        return scores.div_(temperature)

    def _tails(self, scores: torch.Tensor) -> torch.Tensor:
        """Relaxed mask ``m_i = sum_{k >= i} y_k`` from reversed scores (see class notes)."""
        log_normalizer = scores.logsumexp(-1, keepdim=True)
        floor = _simplex_floor(scores.dtype)
        if scores.requires_grad and torch.is_grad_enabled():
            log_y = scores - log_normalizer
            y = log_y.exp().clamp(min=floor)
        else:
            log_y = scores.sub_(log_normalizer)
            y = log_y.exp().clamp_(min=floor)
        tails = y.cumsum_(-1)
        mask = (tails[..., :-1] / tails[..., -1:]).flip(-1)
        mask._reversed_log_simplex = log_y  # exact log y of this draw, for log_prob
        return mask

    def rsample(self, sample_shape: _ShapeLike = ()) -> torch.Tensor:
        """Reparameterised draw of shape ``sample_shape + batch + (D,)``."""
        return self._tails(self._rsample_scores(sample_shape))

    # ------------------------------------------------------------------ scoring
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density of masks ``value`` (shape ``... + (D,)``), shape ``sample + batch``."""
        value = getattr(value, "_relaxed", value)
        if self._validate_args:
            self._validate_sample(value)
        return self._relaxed_log_prob(value)

    def _relaxed_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_q = self.index_distribution.logits
        log_y = getattr(value, "_reversed_log_simplex", None)
        if log_y is None:
            log_y = _differences(value).clamp_(min=torch.finfo(value.dtype).tiny).log()
        else:  # a draw of rsample/sample: its exact log y, stored in reversed order k = D..0
            log_q = log_q.flip(-1)
        scores = log_y * -self._event_temperature
        if scores.shape == torch.broadcast_shapes(scores.shape, log_q.shape):
            scores = scores.add_(log_q)
        else:  # the value broadcasts against a larger batch
            scores = scores + log_q
        return (
            scores.sum(-1)
            - log_y.sum(-1)
            - (self.num_blocks + 1) * scores.logsumexp(-1)
            + self._log_normalizer
        )
