r"""Ordered dropout: fixed-prior keep counts for every axis, drawn once per mini-batch.

FN3 trains a nested network on the expected loss :math:`\mathbb E_{b \sim q}[L(f_{W, b}(x), y)]`
where every axis draws its own keep count independently for each mini-batch. An axis with
``always_on`` leading blocks and :math:`D` orderable ones keeps ``always_on + b`` blocks,
:math:`b \in \{0, \dots, D\}`, with

* ``"geometric"`` -- nested dropout's truncated geometric law with keep rate :math:`\pi`:
  :math:`q_b = \pi^b (1 - \pi)` for :math:`b < D` and :math:`q_D = \pi^D`, i.e. a keep-count
  distribution with constant conditional keep probabilities :math:`\beta_i = \pi`;
* ``"uniform"`` -- every count equally likely, :math:`q_b = 1 / (D + 1)` (FjORD's ordered
  dropout), i.e. :math:`\beta_i = (D + 1 - i) / (D + 2 - i)`.

Both are keep-count distributions :math:`q_b = (\beta_1 \cdots \beta_b)(1 - \beta_{b+1})`, so the
same conditional keep probabilities define the Pyro prior of the axis's mask site (a Downhill
distribution) when the sampler runs inside a Pyro model.

Draws are on the training hot path, so the sampler caches the cumulative probabilities of every
axis when its parameters change and draws a count with one uniform number and a binary search
(:math:`O(\log D)` per axis, no distribution objects, no validation). The counts are set as
``int`` masks on the axis owners, which then *slice*: a nested step computes only the kept blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..defaults import MASK_SITE_TEMPERATURE
from ..distributions import KeepCount
from ..nn.axis import AXIS_KINDS, Axis, axes, axis_owners
from .defaults import FN3_DEFAULTS

__all__ = [
    "COUPLING",
    "DISTRIBUTIONS",
    "SANDWICH",
    "OrderedDropout",
    "conditional_keep_probs",
    "keep_count_probs",
]

DISTRIBUTIONS = ("geometric", "uniform")
SANDWICH = (None, "full", "smallest", "both")
COUPLING = (None, "kind", "all")


def conditional_keep_probs(
    orderable: int, distribution: str = "geometric", keep_prob: float = 0.9
) -> torch.Tensor:
    r"""Conditional keep probabilities :math:`\beta_i = P(\text{block } i \text{ kept} \mid
    \text{block } i-1 \text{ kept})` of an ordered-dropout law over ``orderable`` blocks.

    Parameters
    ----------
    orderable : int
        Number :math:`D \ge 1` of droppable blocks.
    distribution : {"geometric", "uniform"}
        ``"geometric"``: :math:`\beta_i = \pi`; ``"uniform"``:
        :math:`\beta_i = (D + 1 - i) / (D + 2 - i)`, which makes every keep count equally likely.
    keep_prob : float
        :math:`\pi \in (0, 1)`; used by ``"geometric"`` only.

    Returns
    -------
    Tensor, shape ``(D,)``, float64
    """
    if isinstance(orderable, bool) or not isinstance(orderable, int) or orderable < 1:
        raise ValueError(f"orderable must be a positive int, got {orderable!r}")
    if distribution == "geometric":
        pi = _check_keep_prob(keep_prob, "keep_prob")
        return torch.full((orderable,), pi, dtype=torch.float64)
    if distribution == "uniform":
        i = torch.arange(1, orderable + 1, dtype=torch.float64)
        return (orderable + 1 - i) / (orderable + 2 - i)
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


def keep_count_probs(keep_probs: torch.Tensor) -> torch.Tensor:
    r"""Probabilities :math:`q_b`, :math:`b = 0..D`, of the keep count of conditional keep
    probabilities ``keep_probs`` (shape ``(D,)``), computed by
    :class:`bayes_nest.distributions.KeepCount`.

    :math:`q_0 = 1 - \beta_1`, :math:`q_b = (\beta_1 \cdots \beta_b)(1 - \beta_{b+1})`,
    :math:`q_D = \beta_1 \cdots \beta_D`.

    Returns
    -------
    Tensor, shape ``(D + 1,)``
    """
    return KeepCount(keep_probs=keep_probs).probs


def _check_keep_prob(value: Any, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{arg} must be a float in (0, 1), got {value!r}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{arg} must be in (0, 1), got {value!r}")
    return value


def _per_axis(value: Any, found: Mapping[str, Axis], arg: str) -> dict[str, Any]:
    """Resolve a scalar or a mapping keyed by axis name or axis kind to one value per axis."""
    if not isinstance(value, Mapping):
        return {name: value for name in found}
    # Kinds the module lacks are allowed (per-kind settings apply to whatever axes exist).
    allowed = set(AXIS_KINDS) | {"default"}
    unknown = [key for key in value if key not in found and key not in allowed]
    if unknown:
        raise ValueError(
            f"{arg} names {unknown[0]!r}, which is neither an axis of the module nor an axis "
            f"kind; axes: {sorted(found)}, kinds: {list(AXIS_KINDS)}"
        )
    default = value.get("default")
    resolved = {}
    for name, axis in found.items():
        if name in value:
            resolved[name] = value[name]
        elif axis.kind in value:
            resolved[name] = value[axis.kind]
        else:
            resolved[name] = default
    missing = [name for name, v in resolved.items() if v is None]
    if missing:
        raise ValueError(f"{arg} gives no value for axis {missing[0]!r}")
    return resolved


class OrderedDropout:
    r"""Draw one keep count per axis per mini-batch from a fixed ordered-dropout prior.

    Parameters
    ----------
    module : nn.Module
        The nested network; its axes with at least one orderable block are sampled, the others
        stay whole.
    keep_prob : float or Mapping[str, float]
        Keep rate :math:`\pi` of the geometric law: one value, or a mapping whose keys are axis
        names or axis kinds (``{"width": 0.9, "bits": 0.7}``; a name beats a kind; kinds the
        module lacks are ignored, unknown axis names are an error; the key ``"default"`` covers
        the remaining axes).
    distribution : {"geometric", "uniform"} or Mapping[str, str]
        Law of the keep count, globally or per axis name / kind (keys as for ``keep_prob``).
    sandwich : {None, "full", "smallest", "both"}
        Also train the full and/or the smallest sub-network at every step (the sandwich rule of
        universally slimmable networks); :meth:`step_configs` lists the configurations of a step.
    coupling : {None, "kind", "all"}
        ``None`` (default, FN3): every axis draws its own uniform number, so the counts are
        independent. ``"kind"``: axes of the same kind share one uniform number ``u`` and each
        takes the ``u``-quantile of its own law, so every axis keeps its marginal law while the
        counts move together (e.g. all hidden layers narrow at once, as in FjORD's ordered
        dropout); ``"all"``: one ``u`` for every axis.
    seed : int, optional
        Seed of the sampler's own ``torch.Generator``. ``None`` draws the seed from torch's
        global generator, so ``torch.manual_seed`` makes the sampler reproducible too.
    temperature : float
        Temperature of the Downhill mask sites used under Pyro (:meth:`sample_sites`).

    Attributes
    ----------
    axes : dict[str, Axis]
        The sampled axes.
    probs : dict[str, Tensor]
        Keep-count probabilities of each axis, shape ``(D + 1,)`` over ``b = 0..D`` extra blocks.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from bayes_nest.models import MLP
    >>> net = MLP(16, [32, 32], 3, groups=8)
    >>> sampler = OrderedDropout(net, keep_prob=0.9, seed=0)
    >>> x, y = torch.randn(5, 16), torch.tensor([0, 1, 2, 0, 1])
    >>> counts = sampler()  # e.g. {"hidden.0": 7, "hidden.1": 5}; net now slices
    >>> sorted(counts), all(1 <= c <= 8 for c in counts.values())
    (['hidden.0', 'hidden.1'], True)
    >>> loss = F.cross_entropy(net(x), y)
    >>> sampler.clear()  # the full network again
    """

    def __init__(
        self,
        module: nn.Module,
        keep_prob: float | Mapping[str, float] = FN3_DEFAULTS["keep_prob"],
        distribution: str | Mapping[str, str] = FN3_DEFAULTS["distribution"],
        *,
        sandwich: str | None = FN3_DEFAULTS["sandwich"],
        coupling: str | None = None,
        seed: int | None = None,
        temperature: float = MASK_SITE_TEMPERATURE,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        if sandwich not in SANDWICH:
            raise ValueError(f"sandwich must be one of {SANDWICH}, got {sandwich!r}")
        if coupling not in COUPLING:
            raise ValueError(f"coupling must be one of {COUPLING}, got {coupling!r}")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.module = module
        self.sandwich = sandwich
        self.coupling = coupling
        self.temperature = float(temperature)
        all_axes = axes(module)
        self.axes: dict[str, Axis] = {n: a for n, a in all_axes.items() if a.orderable > 0}
        if not self.axes:
            raise ValueError("module has no axis with orderable blocks; nothing to drop")
        # Owners per sampled axis, so that applying counts skips the tree walk of set_masks.
        self._owners: list[tuple[str, nn.Module]] = [
            (name, owner) for name, owner in axis_owners(module) if name in self.axes
        ]
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.generator = torch.Generator().manual_seed(seed)
        self._keep_prob: Any = keep_prob
        self._distribution: Any = distribution
        self._rebuild()

    # ------------------------------------------------------------------ parameters and cache

    @property
    def keep_prob(self) -> float | Mapping[str, float]:
        """Keep rate π (scalar or per axis); setting it recomputes the cached probabilities."""
        return self._keep_prob

    @keep_prob.setter
    def keep_prob(self, value: float | Mapping[str, float]) -> None:
        self._set_and_rebuild("_keep_prob", value)

    @property
    def distribution(self) -> str | Mapping[str, str]:
        """Keep-count law (scalar or per axis); setting it recomputes the cached probabilities."""
        return self._distribution

    @distribution.setter
    def distribution(self, value: str | Mapping[str, str]) -> None:
        self._set_and_rebuild("_distribution", value)

    def _set_and_rebuild(self, attribute: str, value: Any) -> None:
        """Set a prior parameter and rebuild the cache; restore the old value if it is invalid."""
        old = getattr(self, attribute)
        setattr(self, attribute, value)
        try:
            self._rebuild()
        except (TypeError, ValueError):
            setattr(self, attribute, old)
            raise

    def _rebuild(self) -> None:
        """Recompute the per-axis probabilities and cumulative sums; state changes only if every
        axis's parameters are valid."""
        dists = _per_axis(self._distribution, self.axes, "distribution")
        pis = _per_axis(self._keep_prob, self.axes, "keep_prob")
        keep_probs, probs, laws = {}, {}, []
        for name, axis in self.axes.items():
            if dists[name] not in DISTRIBUTIONS:
                raise ValueError(
                    f"distribution for axis {name!r} must be one of {DISTRIBUTIONS}, "
                    f"got {dists[name]!r}"
                )
            if dists[name] == "geometric":
                _check_keep_prob(pis[name], f"keep_prob for axis {name!r}")
            beta = conditional_keep_probs(axis.orderable, dists[name], pis[name])
            law = KeepCount(keep_probs=beta)  # float64: the one keep-count sampler
            keep_probs[name] = beta
            probs[name] = law.probs
            laws.append((axis.always_on, law))
        self.keep_probs: dict[str, torch.Tensor] = keep_probs
        self.probs: dict[str, torch.Tensor] = probs
        self._laws: list[tuple[int, KeepCount]] = laws
        self._names = list(self.axes)
        self._set_groups()
        self._pyro_priors = None

    def _set_groups(self) -> None:
        """Index of the uniform number each axis reads (one per axis, kind, or overall)."""
        if self.coupling is None:
            self._group = list(range(len(self._names)))
        elif self.coupling == "all":
            self._group = [0] * len(self._names)
        else:
            kinds = list(dict.fromkeys(axis.kind for axis in self.axes.values()))
            self._group = [kinds.index(self.axes[name].kind) for name in self._names]
        self._num_uniforms = max(self._group) + 1

    # ------------------------------------------------------------------ drawing

    def sample(self) -> dict[str, int]:
        """Draw one keep count (``always_on + b`` blocks) per sampled axis, without setting it."""
        u = torch.rand(self._num_uniforms, generator=self.generator, dtype=torch.float64).tolist()
        return {
            name: always_on + law.count_for_uniform(u[g])
            for name, (always_on, law), g in zip(self._names, self._laws, self._group, strict=True)
        }

    def apply(self, counts: Mapping[str, int | None]) -> None:
        """Set keep counts on the axis owners (no validation: counts from this sampler or from
        :meth:`full` / :meth:`smallest`; ``None`` keeps an axis whole)."""
        for name, owner in self._owners:
            owner.mask = counts[name]

    def __call__(self) -> dict[str, int]:
        """Draw keep counts, set them on the module and return them."""
        counts = self.sample()
        self.apply(counts)
        return counts

    def clear(self) -> None:
        """Reset every sampled axis to the full network (mask ``None``)."""
        for _, owner in self._owners:
            owner.mask = None

    def full(self) -> dict[str, int]:
        """The configuration keeping every block of the sampled axes."""
        return {name: axis.size for name, axis in self.axes.items()}

    def smallest(self) -> dict[str, int]:
        """The configuration keeping only the always-on blocks of the sampled axes."""
        return {name: axis.always_on for name, axis in self.axes.items()}

    def step_configs(self) -> list[dict[str, int]]:
        """Configurations trained in one step: the full network (sandwich ``"full"``/``"both"``),
        one draw, and the smallest network (sandwich ``"smallest"``/``"both"``)."""
        configs = [self.sample()]
        if self.sandwich in ("full", "both"):
            configs.insert(0, self.full())
        if self.sandwich in ("smallest", "both"):
            configs.append(self.smallest())
        return configs

    def iter_steps(self) -> Iterator[dict[str, int]]:
        """Set and yield each configuration of one step in turn (see :meth:`step_configs`)."""
        for counts in self.step_configs():
            self.apply(counts)
            yield counts

    # ------------------------------------------------------------------ Pyro

    def pyro_priors(self) -> dict[str, torch.distributions.Distribution]:
        """The mask-site priors of this sampler: per axis a straight-through Downhill with the
        sampler's conditional keep probabilities (cached until the parameters change)."""
        if self._pyro_priors is None:
            from ..distributions import DownhillStraightThrough

            self._pyro_priors = {
                name: DownhillStraightThrough(
                    keep_probs=beta.to(torch.get_default_dtype()), temperature=self.temperature
                )
                for name, beta in self.keep_probs.items()
            }
        return self._pyro_priors

    def sample_sites(self, *, slice_hard: bool = True) -> dict[str, int] | dict[str, torch.Tensor]:
        """Draw the masks as Pyro sample sites (one per axis, named after it) and set them.

        For use inside a Pyro model: the sites can be traced, replayed or conditioned like any
        other (see :func:`bayes_nest.infer.masks.sample_mask_sites`). The forward values are hard
        truncation masks; with ``slice_hard=True`` they are turned into keep counts so that the
        owners slice (the mask then carries no gradient), otherwise the ``(size,)`` 0/1 tensors
        stay set.

        Returns
        -------
        dict
            Axis name -> keep count (``slice_hard``) or full block mask of shape ``(size,)``.
        """
        from .masks import sample_mask_sites

        masks = sample_mask_sites(self.module, self.pyro_priors())
        if not slice_hard:
            return masks
        counts = {name: int(mask.detach().sum().round()) for name, mask in masks.items()}
        self.apply(counts)
        return counts

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Generator state and parameters, for checkpoints (tensors and plain values only)."""
        return {
            "generator": self.generator.get_state(),
            "keep_prob": dict(self._keep_prob)
            if isinstance(self._keep_prob, Mapping)
            else self._keep_prob,
            "distribution": dict(self._distribution)
            if isinstance(self._distribution, Mapping)
            else self._distribution,
            "sandwich": self.sandwich,
            "coupling": self.coupling,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        missing = {"generator", "keep_prob", "distribution", "sandwich"} - set(state)
        if missing:
            raise ValueError(f"sampler state is missing {sorted(missing)}")
        if state["sandwich"] not in SANDWICH:
            raise ValueError(f"sampler state has sandwich {state['sandwich']!r}")
        if state.get("coupling") not in COUPLING:
            raise ValueError(f"sampler state has coupling {state.get('coupling')!r}")
        self.sandwich = state["sandwich"]
        self.coupling = state.get("coupling")
        self._keep_prob = state["keep_prob"]
        self._distribution = state["distribution"]
        self._rebuild()
        self.generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(axes={list(self.axes)}, keep_prob={self._keep_prob!r}, "
            f"distribution={self._distribution!r}, sandwich={self.sandwich!r}, coupling={self.coupling!r})"
        )
