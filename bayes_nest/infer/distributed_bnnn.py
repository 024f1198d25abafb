"""Data-parallel BNNN training under ``torchrun``: :func:`~bayes_nest.infer.bnnn_fit.fit`
given the job's :class:`~bayes_nest.infer.distributed.DistContext`.

Kept for code written against the separate data-parallel function; ``BNNN.fit`` takes
``ctx=``. How a data-parallel step works (the same global batches and random numbers as one
process, every process's gradients weighted by its share of the global batch and summed, so the
ELBO estimate is the one-process estimate of the global batch) is described in
:class:`~bayes_nest.infer.training.TrainingLoop`.
"""

from __future__ import annotations

from typing import Any

from .bnnn_fit import fit
from .distributed import DistContext, setup
from .training.history import History

__all__ = ["fit_bnnn_distributed"]


def fit_bnnn_distributed(
    bnnn: Any,
    train: Any,
    *,
    epochs: int,
    ctx: DistContext | None = None,
    find_unused_parameters: bool = False,
    **kwargs: Any,
) -> History:
    """Fit a BNNN's posterior by SVI on every process of a data-parallel job.

    Arguments as :func:`bayes_nest.infer.bnnn_fit.fit` (``batch_size`` is the global batch);
    ``ctx`` defaults to :func:`~bayes_nest.infer.distributed.setup` and
    ``find_unused_parameters`` is accepted for compatibility and ignored. Call it on every
    process; every process returns the same :class:`~bayes_nest.infer.training.History`.
    """
    return fit(bnnn, train, epochs=epochs, ctx=setup() if ctx is None else ctx, **kwargs)
