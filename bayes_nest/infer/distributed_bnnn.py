r"""Data-parallel BNNN training: stochastic variational inference under ``torchrun``.

Every rank evaluates the ELBO's differentiable loss on its shard of the global batch and
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients.

Scaling of the mini-batch ELBO. The model's likelihood plate has ``size=N`` (the whole
dataset) and subsamples the :math:`b = G / W` examples of the rank's shard, so rank :math:`r`'s
loss is

.. math:: L_r = -\frac{N}{b} \sum_{n \in \text{shard}_r} \log p(y_n \mid x_n, W, m)
   + \mathrm{KL}_\text{masks} + \lambda\, \mathrm{KL}_\text{weights},

and the averaged gradient is that of

.. math:: \frac1W \sum_r L_r = -\frac{N}{G} \sum_{n \in \text{batch}} \log p(y_n \mid \dots)
   + \mathrm{KL}_\text{masks} + \lambda\, \mathrm{KL}_\text{weights}:

the likelihood scaled by dataset size over *global* batch size and the KL terms counted once —
the one-process ELBO estimate of the global batch.

Randomness. The masks must be the same sub-network on every rank, so the guide (the
variational ordering units' Downhill draws) runs on a :class:`~bayes_nest.infer.distributed.
SharedStream` seeded alike on all ranks. The weight noise of local reparameterization must
*differ* between ranks (they see different examples), so every rank reseeds its own global
generators at the start of each epoch from ``(seed, epoch, rank)``; that also makes a resumed run
identical to an uninterrupted one without saving every rank's generator state.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from tqdm.auto import tqdm

from .. import metrics
from ..data import as_loader
from .bnnn_fit import (
    CHECKPOINT_KIND,
    BNNNHistory,
    _check_args,
    _make_optimizer,
    _settings_payload,
)
from .checkpoint import load_checkpoint, rng_state, save_checkpoint
from .defaults import BNNN_DEFAULTS
from .distributed import (
    DistContext,
    SharedStream,
    agreed_seed,
    broadcast_buffers,
    distributed_sampler,
    rank_seed,
    set_epoch,
    setup,
    shard_loader,
    wrap_ddp,
)

__all__ = ["fit_bnnn_distributed"]


class _ELBOLoss(nn.Module):
    """The ELBO's differentiable loss as a module (what DDP wraps); the guide runs on the
    shared random stream and its masks are kept in ``last_masks``."""

    def __init__(self, bnnn: nn.Module, elbo: Any, stream: SharedStream) -> None:
        super().__init__()
        self.bnnn = bnnn
        self.elbo = elbo
        self.stream = stream
        self.last_masks: dict[str, torch.Tensor] = {}

    def guide(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        with self.stream.active():
            masks = self.bnnn.guide(*args, **kwargs)
        self.last_masks = masks
        return masks

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.bnnn.model, self.guide, x, y)


@torch.no_grad()
def _validate(bnnn: Any, val: Any, num_samples: int, device: torch.device) -> tuple[float, float]:
    probs, labels = [], []
    for batch in as_loader(val, 1024):
        x = batch[0].to(device, non_blocking=True)
        probs.append(bnnn.predict(x, num_samples=num_samples).mean(0).cpu())
        labels.append(batch[1])
    p, y = torch.cat(probs), torch.cat(labels)
    return metrics.nll(p, y), metrics.accuracy(p, y)


def fit_bnnn_distributed(
    bnnn: Any,
    train: Any,
    *,
    epochs: int,
    ctx: DistContext | None = None,
    optimizer: Any = None,
    loss: str = "mean_field",
    num_particles: int = 1,
    batch_size: int = BNNN_DEFAULTS["batch_size"],
    val: Any = None,
    val_samples: int = 4,
    progress: bool = True,
    seed: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    find_unused_parameters: bool = False,
    check_masks: bool = False,
) -> BNNNHistory:
    """Fit a BNNN's posterior by SVI on every rank of a data-parallel job.

    Arguments as :func:`bayes_nest.infer.bnnn_fit.fit`, except:

    Parameters
    ----------
    ctx : DistContext, optional
        From :func:`~bayes_nest.infer.distributed.setup` (called when ``None``). The BNNN is
        moved to ``ctx.device``.
    batch_size : int
        *Global* batch size (all ranks), divisible by the world size; a ``DataLoader`` given as
        ``train`` contributes its batch size instead.
    seed : int, optional
        Seeds the data permutation, the shared mask stream and each rank's weight-noise stream
        (rank 0 draws one and sends it when ``None``).
    progress : bool
        Progress bar on rank 0 only.
    checkpoint_path : path, optional
        Written by rank 0 after every epoch (others wait); read by every rank to resume.
    find_unused_parameters : bool
        Passed to DDP. ``False`` suits BNNNs: their masks are tensors, so every block runs and
        every parameter gets a gradient.
    check_masks : bool
        All-gather the guide's masks every step and raise :class:`RuntimeError` if the ranks
        disagree.

    Returns
    -------
    BNNNHistory
        The same on every rank (validation runs on rank 0 and is broadcast); also stored as
        ``bnnn.history``.
    """
    _check_args(epochs, loss, num_particles, resume, checkpoint_path)
    if ctx is None:
        ctx = setup()
    if not isinstance(ctx, DistContext):
        raise TypeError(f"ctx must be a DistContext (from setup()), got {type(ctx).__name__}")
    seed = agreed_seed(seed, ctx)
    device = ctx.device
    bnnn.to(device)
    loader = shard_loader(train, batch_size, ctx, seed=seed)
    bnnn.model.dataset_size = len(loader.dataset)
    elbo = (TraceMeanField_ELBO if loss == "mean_field" else Trace_ELBO)(
        num_particles=num_particles
    )
    if getattr(bnnn, "_optimizer", None) is None or optimizer is not None:
        bnnn._optimizer = _make_optimizer(optimizer, bnnn.parameters())
    opt = bnnn._optimizer
    history = bnnn.history if isinstance(bnnn.history, BNNNHistory) else BNNNHistory()
    stream = SharedStream(seed, device)
    loss_module = _ELBOLoss(bnnn, elbo, stream)
    if resume:
        found = os.path.exists(checkpoint_path)
        if len(set(ctx.all_gather_object(found))) > 1:
            raise RuntimeError(
                f"checkpoint {str(checkpoint_path)!r} exists on some ranks only: resuming needs "
                "it on every rank (a shared file system, or a copy on every node)"
            )
        if found:
            history, seed = _restore(bnnn, opt, stream, checkpoint_path)
            distributed_sampler(loader).seed = seed  # the data order of the interrupted run
        else:
            warnings.warn(
                f"no checkpoint at {str(checkpoint_path)!r}; training from the start",
                stacklevel=2,
            )
    bnnn.history = history
    ddp = wrap_ddp(loss_module, ctx, find_unused_parameters=find_unused_parameters)

    total = len(loader)
    bar = tqdm(
        total=epochs * total,
        initial=min(bnnn.epoch, epochs) * total,
        disable=not (progress and ctx.is_main),
        desc="BNNN",
        unit="step",
    )
    net = bnnn.net
    was_training = net.training
    n = bnnn.model.dataset_size
    try:
        while bnnn.epoch < epochs:
            temperature = next(iter(bnnn.set_epoch(bnnn.epoch).values()))
            torch.manual_seed(rank_seed(seed, bnnn.epoch, ctx.rank))
            set_epoch(loader, bnnn.epoch)
            net.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            steps = 0
            start = time.perf_counter()
            with pyro.validation_enabled(False):
                for batch in loader:
                    x = batch[0].to(device, non_blocking=True)
                    y = batch[1].to(device, non_blocking=True)
                    opt.zero_grad(set_to_none=True)
                    value = ddp(x, y)
                    value.backward()
                    if check_masks:
                        flat = [m.detach().reshape(-1) for m in loss_module.last_masks.values()]
                        ctx.assert_same(torch.cat(flat), "masks of this step")
                    step_value = (
                        ctx.all_reduce_sum(value.detach().to(torch.float64)) / ctx.world_size
                    )
                    if not torch.isfinite(step_value):
                        opt.zero_grad(set_to_none=True)
                        raise FloatingPointError(
                            f"non-finite ELBO loss {float(step_value)} at epoch {bnnn.epoch}; "
                            "the weights are those before this step"
                        )
                    opt.step()
                    loss_sum += step_value
                    steps += 1
                    bar.update(1)
                    if progress and ctx.is_main:
                        bar.set_postfix(elbo=f"{-float(loss_sum) / steps / n:.4f}", refresh=False)
            seconds = time.perf_counter() - start
            broadcast_buffers(bnnn, ctx)
            bnnn.epoch += 1
            scores = (math.nan, math.nan)
            if val is not None and ctx.is_main:
                scores = _validate(bnnn, val, val_samples, device)
            val_nll, val_acc = ctx.broadcast_object(scores)
            history.epoch.append(bnnn.epoch)
            history.loss.append(float(loss_sum) / max(steps, 1) / n)
            history.weight_kl.append(float(bnnn.weight_kl().detach()))
            history.temperature.append(float(temperature))
            history.val_nll.append(val_nll)
            history.val_accuracy.append(val_acc)
            history.seconds.append(seconds)
            if checkpoint_path is not None:
                if ctx.is_main:
                    payload = {
                        "state_dict": bnnn.state_dict(),
                        "optimizer": opt.state_dict(),
                        "rng": rng_state(),
                        "loader_generators": [],
                        "mask_stream": stream.state_dict(),
                        "seed": seed,
                        "world_size": ctx.world_size,
                        "epoch": bnnn.epoch,
                        "history": history.as_dict(),
                        "settings": _settings_payload(bnnn),
                    }
                    save_checkpoint(checkpoint_path, payload, kind=CHECKPOINT_KIND)
                ctx.barrier()
    finally:
        bar.close()
        net.train(was_training)
    return history


def _restore(
    bnnn: Any, opt: torch.optim.Optimizer, stream: SharedStream, path: str | os.PathLike
) -> tuple[BNNNHistory, int]:
    """Load a checkpoint into ``bnnn``, ``opt`` and ``stream``; return the history and the
    run's seed."""
    state = load_checkpoint(path, kind=CHECKPOINT_KIND)
    if "mask_stream" not in state:
        raise ValueError(
            f"checkpoint {str(path)!r} was written by one-process training "
            "(bayes_nest.infer.bnnn_fit.fit); resume it with that function"
        )
    if state["settings"] != _settings_payload(bnnn):
        raise ValueError(
            f"checkpoint {str(path)!r} was written by a BNNN with settings "
            f"{state['settings']}, not {_settings_payload(bnnn)}"
        )
    bnnn.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    stream.load_state_dict(state["mask_stream"])
    bnnn.epoch = int(state["epoch"])
    return BNNNHistory.from_dict(state["history"]), int(state["seed"])
