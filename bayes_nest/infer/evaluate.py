"""Predictions and scores of a (sub-)network of a deterministic nested model.

Both functions run the module in eval mode under ``torch.no_grad()`` and restore its training
mode and masks afterwards. ``config`` selects a sub-network (axis name -> keep count, see
:mod:`bayes_nest.subnet`); ``None`` runs the module as it currently is (the full network unless
masks have been set, e.g. by an enclosing :func:`bayes_nest.subnet.use`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import metrics
from ..data import as_loader
from ..subnet.config import use

__all__ = ["evaluate", "predict_probs"]


@contextlib.contextmanager
def _eval_mode(module: nn.Module, config: Mapping[str, int] | None) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        with (
            torch.no_grad(),
            use(module, config) if config is not None else contextlib.nullcontext(),
        ):
            yield
    finally:
        module.train(was_training)


def _module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _loader(data: Any, batch_size: int) -> DataLoader:
    if torch.is_tensor(data):  # inputs only
        return DataLoader(data, batch_size=batch_size)
    return as_loader(data, batch_size)


def _predict(
    module: nn.Module,
    loader: DataLoader,
    config: Mapping[str, int] | None,
    device: torch.device | str | None,
    with_labels: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    device = torch.device(device) if device is not None else _module_device(module)
    chunks, labels = [], []
    with _eval_mode(module, config):
        for batch in loader:
            is_pair = isinstance(batch, tuple | list)
            if with_labels:
                if not is_pair or len(batch) < 2:
                    raise ValueError(
                        "evaluate needs labels: pass (x, y) or a loader of (x, y) batches"
                    )
                labels.append(torch.as_tensor(batch[1]).long().reshape(-1))
            logits = module((batch[0] if is_pair else batch).to(device))
            if logits.dim() != 2:
                raise ValueError(
                    f"module must return logits of shape (B, K), got {tuple(logits.shape)}"
                )
            chunks.append(torch.softmax(logits.float(), dim=-1).cpu())
    if not chunks:
        raise ValueError("data holds no examples")
    return torch.cat(chunks), (torch.cat(labels) if with_labels else None)


def predict_probs(
    module: nn.Module,
    data: Any,
    config: Mapping[str, int] | None = None,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Class probabilities :math:`\mathrm{softmax}(f_{W, c}(x))` of sub-network ``config``.

    Parameters
    ----------
    module : nn.Module
        A classifier returning logits of shape ``(B, K)``.
    data : DataLoader, (x, y) pair or Tensor
        Inputs; a loader may yield ``(x, y)`` batches or bare ``x`` tensors.
    config : Mapping[str, int], optional
        Sub-network to run; ``None`` runs the module with its current masks.
    batch_size : int
        Batch size when ``data`` is not already a loader.
    device : torch.device or str, optional
        Where to run; default: the device of the module's parameters.

    Returns
    -------
    Tensor, shape ``(N, K)``, float32 on the CPU
    """
    return _predict(module, _loader(data, batch_size), config, device, False)[0]


def evaluate(
    module: nn.Module,
    data: Any,
    config: Mapping[str, int] | None = None,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    n_bins: int = 15,
) -> dict[str, float]:
    """Accuracy, NLL, Brier score and calibration errors of sub-network ``config`` on ``data``.

    Parameters
    ----------
    module, config, batch_size, device
        As in :func:`predict_probs`.
    data : DataLoader or (x, y) pair
        Labelled examples.
    n_bins : int
        Equal-width confidence bins of the calibration errors.

    Returns
    -------
    dict
        ``accuracy``, ``nll`` (nats), ``brier``, ``ece``, ``mce`` (see :mod:`bayes_nest.metrics`)
        and ``n`` (number of examples).
    """
    if torch.is_tensor(data):
        raise TypeError("evaluate needs labels: pass (x, y) or a loader of (x, y) batches")
    probs, labels = _predict(module, _loader(data, batch_size), config, device, True)
    return {
        "accuracy": metrics.accuracy(probs, labels),
        "nll": metrics.nll(probs, labels),
        "brier": metrics.brier_score(probs, labels),
        "ece": metrics.expected_calibration_error(probs, labels, n_bins=n_bins),
        "mce": metrics.max_calibration_error(probs, labels, n_bins=n_bins),
        "n": len(labels),
    }
