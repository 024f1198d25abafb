r"""Training watchdog: stop at the first NaN or infinity, say where it came from, keep good files.

A diverging run must not cost a wrong model or the last good checkpoint. :class:`Watchdog` makes
three cheap checks that the trainers (:class:`~bayes_nest.infer.FN3Trainer` and the BNNN
``fit``) call on the hot path:

* :meth:`Watchdog.check_loss` -- the loss of a step, before its backward pass;
* :meth:`Watchdog.check_gradients` -- after the backward pass and before the optimizer step;
  one sum per parameter, stacked and summed per device, and a single host sync, so a bad step
  never reaches the weights;
* :meth:`Watchdog.check_state` -- parameters, floating buffers and optimizer state, before a
  checkpoint is written, so a good checkpoint is never replaced by a bad state.

Only when a check fails does the watchdog search for the origin, in this order: the input batch,
the parameters (by name), then either the modules of a forward pass (forward hooks, in
execution order: the first layer whose output is non-finite) or the sample sites of a Pyro
model and guide (the first site whose value, log density or KL term is non-finite). The error,
:class:`NonFiniteError`, names the step, the epoch and that place.

A non-finite sum over finite gradients (an overflowing sum of huge gradients) is re-checked entry
by entry, so the fast check has no false alarms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["NonFiniteError", "Watchdog", "first_non_finite_site", "restore_rng", "snapshot_rng"]


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or an infinity; it stopped before the bad value did any harm.

    Attributes
    ----------
    quantity : str
        What was non-finite: ``"loss"``, ``"gradient"`` or ``"state"`` (before a checkpoint).
    step : int
        Global optimizer step (0-based) of the failure.
    epoch : int
        Epoch (0-based) of that step.
    where : str or None
        Where it first appears: ``"input batch"``, ``"parameter 'hidden.0.affine.weight'"``,
        ``"output of layer 'hidden.1'"``, ``"Pyro site 'hidden.0' (guide log density)"``, ...
        (None when the search found nothing more specific than the quantity itself).
    value : float or None
        The non-finite loss, when the quantity is the loss.
    note : str
        What happened to the run (e.g. which checkpoint is the last good one).
    """

    def __init__(
        self,
        quantity: str,
        *,
        step: int,
        epoch: int,
        where: str | None = None,
        value: float | None = None,
        note: str = "",
    ) -> None:
        self.quantity, self.step, self.epoch = quantity, step, epoch
        self.where, self.value, self.note = where, value, note
        super().__init__(self._message())

    def _message(self) -> str:
        value = "" if self.value is None else f" {self.value}"
        where = f"; first non-finite at {self.where}" if self.where else ""
        note = f". {self.note}" if self.note else ""
        return (
            f"non-finite {self.quantity}{value} at step {self.step} (epoch {self.epoch}){where}; "
            f"training stopped before it changed the weights{note}"
        )

    def _replaced(self, **changes: Any) -> NonFiniteError:
        error = type(self).__new__(type(self))
        error.__dict__.update(self.__dict__)
        error.__dict__.update(changes)
        error.args = (error._message(),)
        return error

    def with_note(self, note: str) -> NonFiniteError:
        """The same error with ``note`` (e.g. the last good checkpoint) in its message."""
        return self._replaced(note=note)

    def on_ranks(self, ranks: Iterable[int]) -> NonFiniteError:
        """The same error, saying which processes of a data-parallel job saw the value."""
        ranks = list(ranks)
        label = f"process{'es' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
        return self._replaced(where=f"{self.where} on {label}" if self.where else f"{label}")


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every entry of every floating tensor is finite: one sum per tensor, one stacked
    sum and one host sync per device.

    NaN and infinities propagate into the sums; a sum that overflows although every entry is
    finite is re-checked tensor by tensor, so the answer is exact.
    """
    with torch.no_grad():
        floats = [t for t in tensors if t.is_floating_point()]
        devices = {t.device for t in floats}
        for device in devices:
            group = floats if len(devices) == 1 else [t for t in floats if t.device == device]
            sums = [
                t.sum(dtype=torch.float32) if t.dtype in _LOW_PRECISION else t.sum() for t in group
            ]
            if not bool(torch.isfinite(torch.stack(sums).sum())):
                return all(bool(torch.isfinite(t).all()) for t in floats)
    return True


def _non_finite(t: Any) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and (t.is_floating_point() or t.is_complex())
        and not bool(torch.isfinite(t.detach()).all())
    )


def _tensors_in(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _tensors_in(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors_in(v)


class Watchdog:
    """Checks for non-finite losses, gradients and training state of one module.

    Parameters
    ----------
    module : nn.Module
        The trained module; its parameters are named as ``module.named_parameters()`` names
        them.
    gradients : bool
        Whether :meth:`check_gradients` checks anything (default True).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(3, 2)
    >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    >>> optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> dog = Watchdog(net)
    >>> loss = nn.functional.cross_entropy(net(x), y)
    >>> dog.check_loss(loss, step=0, epoch=0, inputs=x, forward=lambda: net(x))
    >>> loss.backward()
    >>> dog.check_gradients(step=0, epoch=0)
    >>> optimizer.step()
    >>> dog.check_loss(torch.tensor(float("nan")), step=1, epoch=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bayes_nest.infer.watchdog.NonFiniteError: ...
    """

    def __init__(self, module: nn.Module, *, gradients: bool = True) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.gradients = bool(gradients)

    # ------------------------------------------------------------------ searches
    def first_non_finite_parameter(self) -> str | None:
        """Name of the first parameter (in registration order) holding a NaN or infinity."""
        for name, p in self.module.named_parameters():
            if _non_finite(p):
                return name
        return None

    def _bad_gradients(self) -> list[str]:
        return [
            n
            for n, p in self.module.named_parameters()
            if p.grad is not None and _non_finite(p.grad)
        ]

    def first_non_finite_output(self, forward: Callable[[], Any]) -> str | None:
        """Run ``forward`` with hooks; the first module (in execution order) whose output holds
        a NaN or infinity although its inputs did not. Buffers (e.g. batch-norm running
        statistics) are restored afterwards and no gradient is recorded."""
        found: list[str] = []
        names = {m: n for n, m in self.module.named_modules()}

        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if found or not any(_non_finite(t) for t in _tensors_in(output)):
                return
            if not any(_non_finite(t) for t in _tensors_in(inputs)):
                found.append(names.get(mod) or type(mod).__name__)

        buffers = {n: b.detach().clone() for n, b in self.module.named_buffers()}
        handles = [m.register_forward_hook(hook) for m in self.module.modules()]
        try:
            with torch.no_grad():
                forward()
        except Exception:  # the search is best effort; the original failure is what matters
            pass
        finally:
            for h in handles:
                h.remove()
            with torch.no_grad():
                for n, b in self.module.named_buffers():
                    if n in buffers:
                        b.copy_(buffers[n])
        return found[0] if found else None

    def locate(
        self,
        *,
        inputs: Any = None,
        forward: Callable[[], Any] | None = None,
        pyro_program: tuple[Callable, Callable, tuple, dict] | None = None,
    ) -> str | None:
        """Where a non-finite value first appears: input batch, parameter, layer or Pyro site.

        Parameters
        ----------
        inputs : Tensor or container of tensors, optional
            The batch of the failing step.
        forward : callable, optional
            Re-runs the failing forward pass (searched with forward hooks).
        pyro_program : (model, guide, args, kwargs), optional
            A Pyro model and guide to trace (see :func:`first_non_finite_site`).
        """
        if inputs is not None and any(_non_finite(t) for t in _tensors_in(inputs)):
            return "input batch"
        name = self.first_non_finite_parameter()
        if name is not None:
            return f"parameter {name!r}"
        if pyro_program is not None:
            model, guide, args, kwargs = pyro_program
            site = first_non_finite_site(model, guide, *args, **kwargs)
            if site is not None:
                return site
        if forward is not None:
            layer = self.first_non_finite_output(forward)
            if layer is not None:
                return f"output of layer {layer!r}"
        return None

    # ------------------------------------------------------------------ checks
    def check_loss(
        self,
        loss: torch.Tensor | float,
        *,
        step: int,
        epoch: int,
        inputs: Any = None,
        forward: Callable[[], Any] | None = None,
        pyro_program: tuple[Callable, Callable, tuple, dict] | None = None,
    ) -> None:
        """Raise :class:`NonFiniteError` (quantity ``"loss"``) if ``loss`` is NaN or infinite,
        naming where it first appears (see :meth:`locate`)."""
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if math.isfinite(value):
            return
        where = self.locate(inputs=inputs, forward=forward, pyro_program=pyro_program)
        raise NonFiniteError("loss", step=step, epoch=epoch, where=where, value=value)

    def check_gradients(self, *, step: int, epoch: int) -> None:
        """Raise :class:`NonFiniteError` (quantity ``"gradient"``) if a parameter's gradient
        holds a NaN or infinity, naming the first such parameter (registration order) and
        counting the others. Call after ``backward()`` and before ``optimizer.step()``."""
        if not self.gradients:
            return
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        if _all_finite(grads):
            return
        bad = self._bad_gradients()
        if not bad:
            return
        where = self.first_non_finite_parameter()
        if where is not None:
            where = f"parameter {where!r} (its value)"
        else:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            where = f"gradient of parameter {bad[0]!r}{more}"
        raise NonFiniteError("gradient", step=step, epoch=epoch, where=where)

    def check_state(
        self, *, step: int, epoch: int, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Raise :class:`NonFiniteError` (quantity ``"state"``) if a parameter, a floating
        buffer or an optimizer state tensor holds a NaN or infinity. Call before writing a
        checkpoint: the file already on disk then stays the last good one."""
        tensors = [*self.module.parameters(), *self.module.buffers()]
        opt_state = list(_tensors_in(list(optimizer.state.values()))) if optimizer else []
        if _all_finite(tensors + opt_state):
            return
        where = self.first_non_finite_parameter()
        if where is not None:
            where = f"parameter {where!r}"
        else:
            where = next(
                (f"buffer {n!r}" for n, b in self.module.named_buffers() if _non_finite(b)),
                "optimizer state",
            )
        raise NonFiniteError("state", step=step, epoch=epoch, where=where)


# ----------------------------------------------------------------------------- random state


def snapshot_rng(device: torch.device | str | None = None) -> tuple[torch.Tensor, Any]:
    """The global random state that a step's draws come from (CPU, and the CUDA device when
    ``device`` is one), so that a failing step's draws can be replayed by the site search."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), (device, cuda)


def restore_rng(state: tuple[torch.Tensor, Any]) -> None:
    """Restore a state from :func:`snapshot_rng`."""
    cpu, (device, cuda) = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


# ----------------------------------------------------------------------------- Pyro


def first_non_finite_site(
    model: Callable, guide: Callable, *args: Any, **kwargs: Any
) -> str | None:
    """Trace ``guide``, replay ``model`` against it, and name the first sample site (guide
    first, then model, each in execution order) whose value, log density, or KL term between
    the guide's and the model's distribution is NaN or infinite.

    Returns ``"Pyro site 'name' (guide value)"``, ``"... (model log density)"``,
    ``"... (KL)"`` or None. Raises nothing: a failure while tracing is reported as the site
    being traced when it failed, if known, else None.
    """
    import pyro
    from pyro import poutine
    from torch.distributions import kl_divergence

    try:
        with pyro.validation_enabled(False), torch.no_grad():
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
    except Exception:
        return None
    with torch.no_grad():
        for role, trace in (("guide", guide_trace), ("model", model_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if _non_finite(site["value"]):
                    return f"Pyro site {name!r} ({role} value)"
                try:
                    log_p = site["fn"].log_prob(site["value"])
                except Exception:
                    continue
                if _non_finite(log_p):
                    return f"Pyro site {name!r} ({role} log density)"
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or name not in guide_trace.nodes:
                continue
            try:
                kl = kl_divergence(guide_trace.nodes[name]["fn"], site["fn"])
            except (NotImplementedError, ValueError, RuntimeError):
                continue
            if _non_finite(kl):
                return f"Pyro site {name!r} (KL)"
    return None
