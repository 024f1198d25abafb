"""The keep-count distribution: how many ordered blocks a chain of keep decisions retains."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import lazy_property

from bayes_nest.distributions.constraints import open_unit_interval

__all__ = [
    "KeepCount",
    "hard_mask",
    "keep_count_kl",
    "keep_count_log_probs",
    "log_keep_marginals",
]

_ShapeLike = torch.Size | Sequence[int]


def _as_float_tensor(value: object, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    if tensor.ndim == 0:
        raise ValueError(
            f"{name} must have at least one dimension (the D orderable blocks, last); "
            f"got a scalar {tensor.item()!r}"
        )
    if tensor.shape[-1] == 0:
        raise ValueError(f"{name} must hold at least one block; got shape {tuple(tensor.shape)}")
    return tensor


def _select_keep_param(keep_probs: object, keep_logits: object) -> tuple[str, torch.Tensor]:
    """Return ``(name, tensor)`` for the one keep parameter given; raise if both or neither."""
    if (keep_probs is None) == (keep_logits is None):
        given = "both" if keep_probs is not None else "neither"
        raise ValueError(f"exactly one of keep_probs or keep_logits must be given; got {given}")
    if keep_probs is not None:
        return "keep_probs", _as_float_tensor(keep_probs, "keep_probs")
    return "keep_logits", _as_float_tensor(keep_logits, "keep_logits")


def _log_keep(keep_logits: torch.Tensor) -> torch.Tensor:
    # -softplus(-x) equals logsigmoid(x); torch's CPU logsigmoid kernel opens a parallel region,
    # which stalls for milliseconds on a loaded machine even for a handful of values.
    return -F.softplus(-keep_logits)


def log_keep_marginals(keep_logits: torch.Tensor) -> torch.Tensor:
    r""":math:`\log P(b \ge i) = \sum_{j \le i} \log \beta_j`, shape ``batch + (D,)``."""
    return _log_keep(keep_logits).cumsum(-1)


def keep_count_log_probs(keep_logits: torch.Tensor) -> torch.Tensor:
    r""":math:`\log q_b`, :math:`b = 0..D`, shape ``batch + (D+1,)``, in log space:
    :math:`\log q_b = \sum_{j \le b} \log \beta_j + \log(1 - \beta_{b+1})` (the last term
    absent for :math:`b = D`), finite for :math:`\beta` near 0 or 1."""
    log_drop = -F.softplus(keep_logits)  # log(1 - beta) = logsigmoid(-logit), no cancellation
    return F.pad(log_keep_marginals(keep_logits), (1, 0)) + F.pad(log_drop, (0, 1))


def keep_count_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(q \| p) = \sum_b q_b (\log q_b - \log p_b)` over the last axis, with
    :math:`0 \log 0 = 0` (counts of probability zero under ``q``)."""
    product = log_q.exp() * (log_q - log_p)
    return torch.where(log_q == -torch.inf, torch.zeros_like(product), product).sum(-1)


class KeepCount(TorchDistribution):
    r"""Number of ordered blocks kept by a chain of keep decisions, over :math:`\{0, \dots, D\}`.

    Block ``i`` (1-based) is kept with probability :math:`\beta_i` given that block ``i - 1`` was
    kept; once a block is dropped every later block is dropped too. The count ``b`` of kept blocks
    has probabilities

    .. math::

        q_0 = 1 - \beta_1, \qquad
        q_b = \Big(\prod_{j \le b} \beta_j\Big)(1 - \beta_{b+1}) \ (0 < b < D), \qquad
        q_D = \prod_{j \le D} \beta_j,

    and keep marginals :math:`P(b \ge i) = \prod_{j \le i} \beta_j`. ``log q`` is computed from
    :math:`\log\sigma(\pm\,\mathrm{logit}\,\beta)` (sums of log-sigmoids), so it stays finite for
    :math:`\beta` within ``1e-6`` of 0 or 1. A constant :math:`\beta = \pi` gives the truncated
    geometric of nested dropout (:meth:`geometric`); :meth:`uniform` and
    :meth:`from_count_probs` build the chain from probabilities over counts.

    Parameters
    ----------
    keep_probs : Tensor, shape ``batch + (D,)``, optional
        Conditional keep probabilities :math:`\beta \in (0, 1)^D`.
    keep_logits : Tensor, shape ``batch + (D,)``, optional
        Their logits :math:`\mathrm{logit}\,\beta`. Give exactly one of the two.
    validate_args : bool, optional
        Check the arguments and the values passed to :meth:`log_prob` (Pyro's default).

    Notes
    -----
    Samples are ``torch.long`` counts of shape ``sample_shape + batch``; :meth:`sample_hard_mask`
    returns the masks ``1[i <= b]`` directly. Derived quantities (``log q``, its cumulative sum)
    are computed once per instance and cached, so reuse one instance for a fixed prior.
    """

    arg_constraints = {
        "keep_probs": constraints.independent(open_unit_interval, 1),
        "keep_logits": constraints.real_vector,
    }
    has_enumerate_support = True

    def __init__(
        self,
        keep_probs: torch.Tensor | None = None,
        keep_logits: torch.Tensor | None = None,
        *,
        validate_args: bool | None = None,
    ) -> None:
        name, param = _select_keep_param(keep_probs, keep_logits)
        setattr(self, name, param)
        self._param = param
        super().__init__(param.shape[:-1], torch.Size(), validate_args=validate_args)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def geometric(
        cls,
        keep_prob: float | torch.Tensor,
        num_blocks: int,
        *,
        validate_args: bool | None = None,
    ) -> KeepCount:
        r"""Truncated geometric (nested dropout): :math:`\beta_i = \pi` for every block.

        ``keep_prob`` is a scalar or a tensor of the batch shape; the result has event size
        ``num_blocks``: :math:`q_b = \pi^b (1 - \pi)` for ``b < D`` and :math:`q_D = \pi^D`.
        """
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive int; got {num_blocks!r}")
        prob = torch.as_tensor(keep_prob)
        if not prob.is_floating_point():
            prob = prob.to(torch.get_default_dtype())
        probs = prob.unsqueeze(-1).expand(prob.shape + (num_blocks,))
        return cls(keep_probs=probs, validate_args=validate_args)

    @classmethod
    def uniform(
        cls,
        num_blocks: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        validate_args: bool | None = None,
    ) -> KeepCount:
        r"""Uniform over counts :math:`\{0, \dots, D\}` (FjORD-style ordered dropout).

        The chain that yields :math:`q_b = 1/(D+1)` has
        :math:`\beta_i = (D + 1 - i)/(D + 2 - i)`, i.e. keep logits :math:`\log(D + 1 - i)`.
        """
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive int; got {num_blocks!r}")
        dtype = dtype or torch.get_default_dtype()
        remaining = torch.arange(num_blocks, 0, -1, dtype=dtype, device=device)
        return cls(keep_logits=remaining.log(), validate_args=validate_args)

    @classmethod
    def from_count_probs(
        cls,
        count_probs: torch.Tensor | None = None,
        count_logits: torch.Tensor | None = None,
        *,
        validate_args: bool | None = None,
    ) -> KeepCount:
        r"""The chain whose keep count has the given probabilities over ``{0..D}``.

        With survival :math:`S_i = P(b \ge i) = \sum_{k \ge i} q_k`, the chain has
        :math:`\beta_i = S_i / S_{i-1}`, i.e. keep logits :math:`\log S_i - \log q_{i-1}`
        (computed with a reversed log-cumsum-exp). ``count_probs`` (non-negative, normalised
        along the last axis here) or ``count_logits`` (unnormalised log probabilities) has shape
        ``batch + (D + 1,)`` with ``D >= 1``. Steps that can never be reached (all later counts
        have probability 0) get keep logit 0; they do not affect the distribution.
        """
        if (count_probs is None) == (count_logits is None):
            given = "both" if count_probs is not None else "neither"
            raise ValueError(
                f"exactly one of count_probs or count_logits must be given; got {given}"
            )
        if count_probs is not None:
            probs = torch.as_tensor(count_probs)
            if not probs.is_floating_point():
                probs = probs.to(torch.get_default_dtype())
            if probs.ndim == 0 or probs.shape[-1] < 2:
                raise ValueError(f"count_probs needs shape batch + (D+1,), D >= 1; got {probs}")
            if not bool(((probs >= 0) & torch.isfinite(probs)).all()):
                raise ValueError(f"count_probs must be finite and non-negative; got {probs}")
            if not bool((probs.sum(-1) > 0).all()):
                raise ValueError(f"count_probs must have a positive sum; got {probs}")
            log_q = probs.log()
        else:
            log_q = torch.as_tensor(count_logits)
            if not log_q.is_floating_point():
                log_q = log_q.to(torch.get_default_dtype())
            if log_q.ndim == 0 or log_q.shape[-1] < 2:
                raise ValueError(f"count_logits needs shape batch + (D+1,), D >= 1; got {log_q}")
            if bool(torch.isnan(log_q).any()) or bool((log_q == math.inf).any()):
                raise ValueError(f"count_logits must not contain NaN or +inf; got {log_q}")
        log_q = log_q - log_q.logsumexp(-1, keepdim=True)
        log_survival = log_q.flip(-1).logcumsumexp(-1).flip(-1)
        keep_logits = log_survival[..., 1:] - log_q[..., :-1]
        keep_logits = torch.nan_to_num(keep_logits, nan=0.0, posinf=math.inf, neginf=-math.inf)
        return cls(keep_logits=keep_logits, validate_args=validate_args)

    # ------------------------------------------------------------------ shapes
    def expand(self, batch_shape: _ShapeLike, _instance: KeepCount | None = None) -> KeepCount:
        new = self._get_checked_instance(KeepCount, _instance)
        batch_shape = torch.Size(batch_shape)
        param_shape = batch_shape + (self.num_blocks,)
        for name in ("keep_probs", "keep_logits", "logits", "_log_keep_marginals"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(batch_shape + (-1,)))
        new._param = self._param.expand(param_shape)
        super(KeepCount, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @classmethod
    def infer_shapes(
        cls, keep_probs: _ShapeLike | None = None, keep_logits: _ShapeLike | None = None
    ) -> tuple[torch.Size, torch.Size]:
        shape = keep_probs if keep_probs is not None else keep_logits
        if shape is None or len(shape) == 0:
            raise ValueError(
                "infer_shapes needs the shape of keep_probs or keep_logits (ndim >= 1)"
            )
        return torch.Size(shape[:-1]), torch.Size()

    @property
    def num_blocks(self) -> int:
        """``D``, the number of orderable blocks (counts range over ``0..D``)."""
        return self._param.shape[-1]

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.num_blocks)

    # ------------------------------------------------------------------ parameters
    @lazy_property
    def keep_logits(self) -> torch.Tensor:
        """Keep logits :math:`\\mathrm{logit}\\,\\beta`, shape ``batch + (D,)``."""
        probs = self.keep_probs
        return probs.log() - (-probs).log1p()

    @lazy_property
    def keep_probs(self) -> torch.Tensor:
        """Conditional keep probabilities :math:`\\beta`, shape ``batch + (D,)``."""
        return torch.sigmoid(self.keep_logits)

    @lazy_property
    def _log_keep_marginals(self) -> torch.Tensor:
        return log_keep_marginals(self.keep_logits)

    @property
    def keep_marginals(self) -> torch.Tensor:
        """Keep marginals :math:`P(b \\ge i) = \\prod_{j \\le i} \\beta_j`, shape ``batch + (D,)``."""
        return self._log_keep_marginals.exp()

    @lazy_property
    def logits(self) -> torch.Tensor:
        """Normalised log probabilities :math:`\\log q_b`, shape ``batch + (D + 1,)``."""
        return keep_count_log_probs(self.keep_logits)

    @lazy_property
    def probs(self) -> torch.Tensor:
        """Probabilities :math:`q_b` of keeping ``b`` blocks, shape ``batch + (D + 1,)``."""
        return self.logits.exp()

    @lazy_property
    def _cdf(self) -> torch.Tensor:
        return self.probs.cumsum(-1).contiguous()

    # ------------------------------------------------------------------ moments
    @property
    def mean(self) -> torch.Tensor:
        return self.keep_marginals.sum(-1)

    @property
    def variance(self) -> torch.Tensor:
        # E[b^2] = sum_i (2i - 1) P(b >= i)
        marginals = self.keep_marginals
        odd = torch.arange(
            1, 2 * self.num_blocks, 2, dtype=marginals.dtype, device=marginals.device
        )
        return (odd * marginals).sum(-1) - self.mean**2

    def entropy(self) -> torch.Tensor:
        logits = self.logits
        return -(logits.exp() * logits).nan_to_num(nan=0.0).sum(-1)

    # ------------------------------------------------------------------ sampling and scoring
    def sample_keep_count(self, sample_shape: _ShapeLike = ()) -> torch.Tensor:
        """Draw counts with one uniform each and a search over the cached cumulative ``q``.

        Returns a ``torch.long`` tensor of shape ``sample_shape + batch``; no gradient.
        """
        sample_shape = torch.Size(sample_shape)
        cdf = self._cdf.detach()
        num = sample_shape.numel()
        if not self.batch_shape:
            uniform = torch.rand(sample_shape, dtype=cdf.dtype, device=cdf.device)
            counts = torch.searchsorted(cdf, uniform, right=True)
        else:
            uniform = torch.rand(self.batch_shape + (num,), dtype=cdf.dtype, device=cdf.device)
            counts = torch.searchsorted(cdf, uniform, right=True)
            counts = counts.movedim(-1, 0).reshape(sample_shape + self.batch_shape)
        return counts.clamp_(max=self.num_blocks)

    def count_for_uniform(self, uniform: float) -> int:
        """The count that the uniform number ``uniform`` in ``[0, 1)`` draws: the inverse CDF of
        :meth:`sample_keep_count`, from a cached list of the cumulative probabilities (no tensor
        operation: the per-step prior draw of FN3). Unbatched distributions only."""
        cdf = self.__dict__.get("_cdf_list")
        if cdf is None:
            if self.batch_shape:
                raise ValueError(
                    f"count_for_uniform needs an unbatched KeepCount, batch {self.batch_shape}"
                )
            cdf = self.__dict__["_cdf_list"] = self._cdf.detach().cpu().tolist()
        return min(bisect.bisect_right(cdf, uniform), self.num_blocks)

    def sample(self, sample_shape: _ShapeLike = ()) -> torch.Tensor:
        return self.sample_keep_count(sample_shape)

    def sample_hard_mask(self, sample_shape: _ShapeLike = ()) -> torch.Tensor:
        """Draw hard masks ``1[i <= b]`` of shape ``sample_shape + batch + (D,)`` (param dtype)."""
        counts = self.sample_keep_count(sample_shape)
        return hard_mask(counts, self.num_blocks, dtype=self._param.dtype)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value = value.long().unsqueeze(-1)
        value, log_pmf = torch.broadcast_tensors(value, self.logits)
        return log_pmf.gather(-1, value[..., :1]).squeeze(-1)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        values = torch.arange(self.num_blocks + 1, device=self._param.device)
        values = values.view((-1,) + (1,) * len(self.batch_shape))
        if expand:
            values = values.expand((-1,) + self.batch_shape)
        return values


def hard_mask(counts: torch.Tensor, num_blocks: int, *, dtype: torch.dtype) -> torch.Tensor:
    """Masks ``m_i = 1[i <= b]`` (i = 1..D) for counts ``b`` of any shape; adds a last axis ``D``."""
    positions = torch.arange(num_blocks, device=counts.device)
    return (positions < counts.unsqueeze(-1)).to(dtype)
