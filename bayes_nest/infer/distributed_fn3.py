"""Data-parallel FN3 training under ``torchrun``: :class:`~bayes_nest.infer.FN3Trainer` given
the job's :class:`~bayes_nest.infer.distributed.DistContext`.

Kept for code written against the separate data-parallel trainer; the one trainer takes
``ctx=`` (see :class:`~bayes_nest.infer.training.TrainingLoop` for how a data-parallel step
works: same global batches, same keep counts, gradients of the global batch's mean loss).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .distributed import DistContext, setup
from .fn3 import FN3Trainer, History, fit_fn3

__all__ = ["DistributedFN3Trainer", "fit_fn3_distributed"]


class DistributedFN3Trainer(FN3Trainer):
    """:class:`~bayes_nest.infer.FN3Trainer` with ``ctx`` defaulting to
    :func:`~bayes_nest.infer.distributed.setup` (the job described by ``torchrun``'s
    environment, or this process alone).

    ``find_unused_parameters`` is accepted for compatibility and ignored: gradients are summed
    over processes by the training loop, which needs no record of the parameters a step used.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        ctx: DistContext | None = None,
        find_unused_parameters: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(module, ctx=setup() if ctx is None else ctx, **kwargs)


def fit_fn3_distributed(
    module: nn.Module,
    train: Any,
    *,
    epochs: int,
    ctx: DistContext | None = None,
    find_unused_parameters: bool | None = None,
    **kwargs: Any,
) -> History:
    """Train ``module`` with ordered dropout on every process of a data-parallel job:
    :func:`~bayes_nest.infer.fit_fn3` with ``ctx`` defaulting to
    :func:`~bayes_nest.infer.distributed.setup` (``batch_size`` is the global batch;
    ``find_unused_parameters`` is accepted and ignored). Call it on every process (e.g. in a
    script started by ``torchrun``); every process returns the same
    :class:`~bayes_nest.infer.History`.

    Examples
    --------
    >>> from bayes_nest.infer.distributed import distributed
    >>> with distributed() as ctx:  # doctest: +SKIP
    ...     history = fit_fn3_distributed(net, data.train, epochs=10, ctx=ctx, seed=0)  # torchrun
    """
    return fit_fn3(module, train, epochs=epochs, ctx=setup() if ctx is None else ctx, **kwargs)
