r"""The trained-model file format: `TrainedModel` and `load_model`.

A `TrainedModel` remembers everything needed to use a trained nested network again: the spec,
the weights (or variational parameters), the input standardization, the class names and the
training options. `TrainedModel.save` writes it as one verified checkpoint (kind
`CHECKPOINT_KIND`) and `load_model` reads it back. `TrainedModel.predict` returns class
probabilities of shape ``(S, N, K)`` for both regimes (``S = 1`` for FN3, ``S`` posterior draws
for a BNNN), so everything downstream (metrics, search, reports) treats them alike.

Examples
--------
>>> import bayes_nest as bn
>>> data = bn.load_dataset("digits")
>>> spec = bn.ModelSpec("mlp", {"hidden": [64, 64], "groups": 8})
>>> model = bn.fit(spec, data, "fn3", epochs=5, progress=False)
>>> probs = model.predict(data.test.x, {"hidden.0": 4, "hidden.1": 4})  # (1, N, 10)
>>> tuple(probs.shape) == (1, len(data.test.y), 10)
True
>>> model.save("digits.ckpt")
>>> bn.load_model("digits.ckpt").fingerprint() == model.fingerprint()
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..infer import predict_probs
from ..infer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..subnet import CostModel, validate_config
from .spec import ModelSpec, build_model
from .train import BNNN_DEFAULTS, make_bnnn

__all__ = ["CHECKPOINT_KIND", "TrainedModel", "load_model"]

CHECKPOINT_KIND = "bayes_nest.model"
_FORMAT = 1


@dataclass
class TrainedModel:
    """A trained nested network with everything needed to use it again.

    Attributes
    ----------
    method : {"fn3", "bnnn"}
    spec : ModelSpec
    module : nn.Module
        The nested network (for a BNNN: its network with Bayesian layers).
    input_shape : tuple of int
    num_classes : int
        Classes; for a segmentation model the output channels (1: a foreground logit per pixel).
    mean, std : Tensor
        Input standardization of the training data, broadcastable to ``input_shape``.
    class_names : tuple of str
    options : dict
        Training options (epochs, learning rate, keep probability, ...).
    history : dict
        Per-epoch training record.
    data : dict
        Where the training data came from (``source``, split ``seed`` and fractions).
    bnnn : object or None
        The BNNN wrapper (posterior over masks and weights) of a BNNN model.
    """

    method: str
    spec: ModelSpec
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor
    class_names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    bnnn: Any = None

    @property
    def task(self) -> str:
        """``"classification"`` or ``"segmentation"`` (from the architecture, `ModelSpec.task`);
        recorded in the model file."""
        return self.spec.task

    # ------------------------------------------------------------------ prediction
    def check_inputs(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """``x`` as float32 of shape ``(N, *input_shape)``; a clear error otherwise."""
        x = torch.as_tensor(x, dtype=torch.float32)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(
                f"{name} has example shape {tuple(x.shape[1:])}, but the model was trained on "
                f"examples of shape {tuple(self.input_shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return x

    def predict(
        self,
        x: torch.Tensor,
        config: Mapping[str, int] | None = None,
        *,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        r"""Class probabilities of sub-network ``config`` (``None``: full) on standardized inputs.

        Returns
        -------
        Tensor, shape ``(S, N, K)``
            ``S = 1`` for FN3; ``S = num_samples`` posterior draws (default: the training
            option ``predict_samples``) for a BNNN. A segmentation model returns per-pixel
            foreground probabilities $\sigma(f(x))$ of shape ``(S, N, H, W)`` instead.
        """
        x = self.check_inputs(x)
        config = validate_config(self.module, {} if config is None else config)
        if self.task == "segmentation":
            from .segmentation import predict_segmentation

            return predict_segmentation(self, x, config, num_samples)
        if self.method == "fn3":
            return predict_probs(self.module, x, config).unsqueeze(0)
        s = int(num_samples or self.options.get("predict_samples", 16))
        return _bnnn_predict(self.bnnn, x, config, s)

    def cost_model(self, metric: str = "macs") -> CostModel:
        """Cost of a config of this network under ``metric`` (see `bayes_nest.subnet`)."""
        return CostModel(self.module, metric, self.input_shape)

    # ------------------------------------------------------------------ persistence
    def payload(self) -> dict[str, Any]:
        """The checkpoint payload (tensors and plain containers only)."""
        state = self.bnnn.state_dict() if self.bnnn is not None else self.module.state_dict()
        return {
            "format": _FORMAT,
            "method": self.method,
            "task": self.task,
            "spec": {"name": self.spec.name, "options": _plain(self.spec.options)},
            "state": state,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "mean": self.mean,
            "std": self.std,
            "class_names": list(self.class_names),
            "options": _plain(self.options),
            "history": _plain(self.history),
            "data": _plain(self.data),
        }

    def save(self, path: str | os.PathLike, *, exclusive: bool = False) -> None:
        """Write the model atomically to ``path`` as a verified checkpoint; ``exclusive``:
        fail with `FileExistsError` instead of replacing an existing file."""
        save_checkpoint(path, self.payload(), kind=CHECKPOINT_KIND, exclusive=exclusive)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of what determines the model's predictions: method, architecture,
        shapes, input standardization and every weight (or variational parameter).

        Equal for a model and its saved-and-loaded copy; a front records it so that it is
        never applied to another model (`bayes_nest.app.front.read_front`).
        """
        import hashlib
        import json

        digest = hashlib.sha256()
        head = {
            "method": self.method,
            "spec": {"name": self.spec.name, "options": _plain(self.spec.options)},
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }
        digest.update(json.dumps(head, sort_keys=True, default=str).encode())
        state = self.bnnn.state_dict() if self.bnnn is not None else self.module.state_dict()
        tensors = [("mean", self.mean), ("std", self.std), *sorted(state.items())]
        for name, value in tensors:
            if not torch.is_tensor(value):
                digest.update(f"{name}={value!r}".encode())
                continue
            value = value.detach().cpu().contiguous()
            digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def _plain(obj: Any) -> Any:
    """JSON-like copy: tuples to lists, numpy scalars to Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def load_model(path: str | os.PathLike) -> TrainedModel:
    """Read a model written by `TrainedModel.save`.

    Raises
    ------
    CheckpointError
        Missing, corrupt or foreign file, or weights that do not fit the stored spec.
    """
    payload = load_checkpoint(path, kind=CHECKPOINT_KIND)
    try:
        if payload["format"] > _FORMAT:
            raise CheckpointError(f"{path} was written by a newer bayes_nest (format {_FORMAT})")
        spec = ModelSpec(payload["spec"]["name"], dict(payload["spec"]["options"]))
        shape = tuple(int(s) for s in payload["input_shape"])
        k = int(payload["num_classes"])
        method = payload["method"]
        task = payload.get("task", "classification")  # files of earlier releases: classifiers
        if task != spec.task:
            raise CheckpointError(
                f"{path} records the task {task!r} but holds a {spec.task} model "
                f"({spec.name!r}); the file is damaged"
            )
        mean, std = _stored_statistics(path, payload["mean"], payload["std"], shape)
        module = build_model(spec, shape, k)
        model = TrainedModel(
            method=method,
            spec=spec,
            module=module,
            input_shape=shape,
            num_classes=k,
            mean=mean,
            std=std,
            class_names=tuple(payload["class_names"]),
            options=dict(payload["options"]),
            history=dict(payload["history"]),
            data=dict(payload["data"]),
        )
        if method == "fn3":
            module.load_state_dict(payload["state"])
        elif method == "bnnn":
            model.bnnn = _bnnn_restore(module, model.options, payload["state"], task)
        else:
            raise CheckpointError(f"{path} holds a model trained by unknown method {method!r}")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} does not hold a usable bayes_nest model: {msg}") from None
    module.eval()
    return model


def _stored_statistics(
    path: str | os.PathLike, mean: Any, std: Any, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored input standardization, checked: float tensors broadcastable to the input
    shape, finite, ``std > 0``. A `CheckpointError` blames the model file otherwise."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"model file {os.fspath(path)} holds an unusable input standardization: {what} "
            "(the file is damaged or was not written by a correct bayes_nest fit; train the "
            "model again)"
        )

    out = []
    for name, value in (("mean", mean), ("std", std)):
        if not torch.is_tensor(value) or not value.is_floating_point():
            raise bad(f"{name} is not a floating-point tensor")
        try:
            full = torch.broadcast_shapes(tuple(value.shape), shape)
        except RuntimeError:
            full = None
        if full != tuple(shape):
            raise bad(
                f"{name} has shape {tuple(value.shape)}, which does not fit inputs of shape "
                f"{tuple(shape)}"
            )
        if not torch.isfinite(value).all():
            raise bad(f"{name} holds NaN or infinite values")
        out.append(value.float())
    if (out[1] <= 0).any():
        raise bad(f"std holds values <= 0 (smallest {float(out[1].min()):g})")
    return out[0], out[1]


# ----------------------------------------------------------------------------- BNNN glue


def _bnnn_restore(module: nn.Module, opts: dict, state: dict, task: str = "classification"):
    likelihood = None
    if task == "segmentation":
        from ..infer.likelihoods import Bernoulli

        likelihood = Bernoulli()
    bnnn = make_bnnn(module, {**BNNN_DEFAULTS, **opts}, likelihood=likelihood)
    bnnn.load_state_dict(state)
    return bnnn


def _bnnn_predict(bnnn: Any, x: torch.Tensor, config: dict, num_samples: int) -> torch.Tensor:
    return bnnn.predict(x, config=config, num_samples=num_samples)
