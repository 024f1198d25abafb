"""Blocks of code run in a set state: a seeded random generator (`seeded`) and batch-norm
statistics re-estimated for one sub-network (`recalibrated`); both restore what they changed.

Evaluation, search scores and the segmentation steps use them alike, so that the numbers of a
sub-network do not depend on what ran before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["recalibrated", "seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generator seeded, restoring its state afterwards (so
    posterior predictions are reproducible and comparable across sub-networks)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def recalibrated(model: Any, config: Mapping[str, int] | None, calibration: Any) -> Iterator[None]:
    """Within the block, the batch-norm layers of ``model`` hold statistics re-estimated for
    ``config`` on the ``calibration`` inputs; the model's own statistics (which mix all
    sub-networks seen in training) are restored afterwards. Nothing happens without
    batch-norm layers or without data.

    Parameters
    ----------
    model : TrainedModel
        Its ``module`` is recalibrated (`bayes_nest.subnet.recalibrate_batchnorm`).
    config : mapping of str to int, optional
        The sub-network (``None``: the full network).
    calibration : Split or None
        Inputs ``calibration.x`` of shape ``(N, *input_shape)``, e.g. the training split.
    """
    norms = [m for m in model.module.modules() if isinstance(m, _BatchNorm)]
    if calibration is None or not norms:
        yield
        return
    from ..subnet import recalibrate_batchnorm

    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    try:
        recalibrate_batchnorm(model.module, calibration.x, dict(config or {}))
        yield
    finally:
        for m, state in zip(norms, saved, strict=True):
            m.load_state_dict(state)
