r"""Batch-norm recalibration for a chosen sub-network.

The running statistics of a nested model's batch-norm layers were accumulated while training
over a *mixture* of sub-networks, so they do not match the activations of any single one. Every
slimmable and once-for-all system recalibrates them post hoc ("post-statistics" BN): reset the
running statistics, forward some training batches through the chosen sub-network with batch-norm
in training mode, then evaluate. Without this step the accuracy of small sub-networks of a BN model
can collapse; with it a few thousand examples suffice.

:func:`recalibrate_batchnorm` does this exactly: for every batch-norm layer it combines the
per-batch means and variances of its input into the mean and unbiased variance of *all* the
examples seen (weighted by batch size, including the between-batch spread), i.e.

.. math:: \mu = \frac{1}{N} \sum_b n_b \mu_b, \qquad
          \sigma^2 = \frac{1}{N - 1} \Big( \sum_b (n_b - 1) s_b^2 + \sum_b n_b (\mu_b - \mu)^2 \Big),

with :math:`n_b` the elements per channel in batch :math:`b` (batch × spatial size). As during
training, each layer normalises its input with the batch's own statistics while recalibrating.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..nn.width import _NestedWidth
from ._trace import eval_mode
from .config import use

__all__ = ["check_examples", "recalibrate_batchnorm"]

_BatchNorm = nn.modules.batchnorm._BatchNorm


class _Moments:
    """Running count, mean and sum of squared deviations (Chan et al. parallel combination)."""

    def __init__(self) -> None:
        self.count = 0.0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.batches = 0

    def add(self, n: float, mean: torch.Tensor, var_unbiased: torch.Tensor) -> None:
        mean = mean.double()
        m2_b = var_unbiased.double() * max(n - 1.0, 0.0)
        self.batches += 1
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean.clone(), m2_b
            return
        if mean.numel() != self.mean.numel():
            raise ValueError(
                "a batch-norm layer saw a different number of channels in different batches "
                f"({self.mean.numel()} vs {mean.numel()})"
            )
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2_b + delta.square() * (self.count * n / total)
        self.count = total

    def variance(self) -> torch.Tensor:
        return self.m2 / max(self.count - 1.0, 1.0)


def _batches(data: Any, batch_size: int) -> Iterable:
    if isinstance(data, torch.Tensor):
        return data.split(batch_size)
    if (  # an (x, y) pair; a *list* of two tensors is two batches
        isinstance(data, tuple)
        and len(data) == 2
        and isinstance(data[0], torch.Tensor)
        and isinstance(data[1], torch.Tensor)
        and data[0].shape[0] == data[1].shape[0]
    ):
        return data[0].split(batch_size)
    return data


def check_examples(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` if it holds at least one example and only finite values, else a clear error."""
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(
            f"{what} holds no examples (shape {tuple(x.shape)}); batch-norm statistics and "
            "layer shapes cannot be found from it"
        )
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(
                f"{what} holds {bad} NaN or infinite values; they would make the batch-norm "
                "statistics NaN"
            )
    return x


def _inputs(batch: Any, index: int) -> torch.Tensor:
    x = batch[0] if isinstance(batch, tuple | list) else batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"data must yield tensors or (x, y) tuples, got {type(x).__name__}")
    return check_examples(x, f"calibration batch {index}")


@contextlib.contextmanager
def _shape_hooks(module: nn.Module, seen: dict[int, list[tuple[int, int]]]) -> Iterator[None]:
    """Record (elements per channel, channels) of every batch-norm application."""

    def plain(bn: nn.Module, args: tuple) -> None:
        x = args[0]
        channels = x.shape[1]
        seen.setdefault(id(bn), []).append((x.numel() // channels, channels))

    def width(layer: nn.Module, args: tuple, out: torch.Tensor) -> None:
        channels = out.shape[layer.channel_dim]
        seen.setdefault(id(layer.norm), []).append((out.numel() // channels, channels))

    handles = []
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(plain))
        elif isinstance(m, _NestedWidth) and isinstance(m.norm, _BatchNorm):
            handles.append(m.register_forward_hook(width))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _check_num_batches(num_batches: int | None) -> None:
    if num_batches is None:
        return
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive int or None, got {num_batches!r}")


def recalibrate_batchnorm(
    module: nn.Module,
    data: Any,
    config: Mapping[str, int] | None = None,
    *,
    num_batches: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> nn.Module:
    """Reset and re-estimate every batch-norm layer's running statistics on ``data``.

    Parameters
    ----------
    module : nn.Module
        A nested model (statistics are estimated for sub-network ``config``) or an exported one.
    data : DataLoader, iterable of batches, Tensor or (x, y) pair
        Batches ``x`` or ``(x, y)`` (labels are ignored); a tensor or a tuple ``(x, y)`` of two
        tensors with as many rows is split into batches of ``batch_size`` (a list of tensors is
        a list of batches). Use training data, ideally a few thousand examples.
    config : Mapping[str, int], optional
        Sub-network whose statistics to estimate (nested models only); ``None`` uses the current
        masks. Channels of a sliced layer beyond the kept ones are reset.
    num_batches : int, optional
        Use at most this many batches (default: all of ``data``).
    batch_size : int
        Batch size when ``data`` is a tensor or a pair of tensors.
    progress : bool
        Show a progress bar.

    Returns
    -------
    nn.Module
        ``module`` itself, with new running statistics; its training flags and the momentum of
        every batch-norm layer are restored.

    Notes
    -----
    The statistics are those of the whole data (see the module docstring), not an exponential
    average, so they do not depend on the batch order. Other layers (e.g. dropout) run in eval
    mode during recalibration. Each batch needs more than one element per channel.

    Raises
    ------
    ValueError
        If ``data`` holds no batches, a batch holds no examples or a NaN or infinite value (it
        would make every statistic NaN); nothing is changed then. A module without batch-norm
        layers is returned without reading ``data``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    _check_num_batches(num_batches)
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return module
    device = next(iter(module.parameters()), torch.empty(0)).device
    momenta = [(bn, bn.momentum) for bn in norms]
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in norms]
    moments = {id(bn): _Moments() for bn in norms}
    used = 0
    try:
        with (
            eval_mode(module),
            torch.no_grad(),
            use(module, config) if config is not None else contextlib.nullcontext(),
        ):
            for bn in norms:
                bn.reset_running_stats()
                bn.momentum = 1.0  # running stats = this batch's stats after every batch
                bn.train()
            bar = tqdm(total=num_batches, disable=not progress, desc="recalibrating BN")
            for batch in _batches(data, batch_size):
                if num_batches is not None and used >= num_batches:
                    break
                seen: dict[int, list[tuple[int, int]]] = {}
                before = {id(bn): int(bn.num_batches_tracked) for bn in norms}
                with _shape_hooks(module, seen):
                    module(_inputs(batch, used).to(device))
                for bn in norms:
                    if int(bn.num_batches_tracked) == before[id(bn)]:
                        continue  # not applied in this sub-network
                    applications = seen.get(id(bn), [])
                    if len(applications) > 1:
                        raise ValueError(
                            "a batch-norm layer is applied more than once per forward pass; "
                            "recalibrate_batchnorm needs one application per layer"
                        )
                    if applications:
                        n, channels = applications[0]
                    else:  # applied by code we cannot see: weight the batches equally
                        n, channels = 1e6, bn.num_features
                    moments[id(bn)].add(
                        float(n), bn.running_mean[:channels], bn.running_var[:channels]
                    )
                used += 1
                bar.update(1)
            bar.close()
        if used == 0:
            raise ValueError("data holds no batches to recalibrate on")
    except BaseException:
        for bn, state in zip(norms, saved, strict=True):  # leave the statistics as they were
            bn.load_state_dict(state)
        raise
    finally:
        for bn, momentum in momenta:
            bn.momentum = momentum
    for bn in norms:
        stats = moments[id(bn)]
        bn.reset_running_stats()
        if stats.mean is None:
            continue
        width = stats.mean.numel()
        bn.running_mean[:width] = stats.mean.to(bn.running_mean.dtype)
        bn.running_var[:width] = stats.variance().to(bn.running_var.dtype)
        bn.num_batches_tracked.fill_(stats.batches)
    return module
