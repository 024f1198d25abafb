r"""Export a sub-network as a standalone plain PyTorch module.

:func:`export` turns a nested model and a config into an ordinary ``nn.Module`` made of
``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm*``, activation modules and, for residual sums and
channel scales, small ``torch.fx.GraphModule``\ s: no ``bayes_nest`` class is left inside, so the
result can be saved, loaded without this package, passed to ``torch.export`` or exported to ONNX.

The transform is recursive. Every module is exported by the exporter registered for its type
(:func:`register_exporter`, looked up along the class hierarchy):

* width layers become ``Linear/Conv2d [+ BatchNorm] [+ activation]`` with the weight sliced to
  the kept output units *and* to the input units that actually reach the layer (found by tracing
  one forward pass), the quantized weight baked in when a bits axis is attached;
* depth stages and parallel paths become graphs of their kept blocks with plain residual adds;
* plain torch modules are deep-copied;
* any other container is copied with its children replaced by their exports (so user modules
  built from nested layers keep their own ``forward``); a container class defined inside
  ``bayes_nest`` is then converted to a ``GraphModule`` by ``torch.fx.symbolic_trace``.

Optional per-block scales (``block_scales``, e.g. the keep marginals
:math:`P(b \ge i) = \prod_{j \le i} \beta_j` of a BNNN posterior) multiply each kept block's output
as a tensor mask would; they are folded into the layer's weights (or batch-norm affine) when the
activation is positively homogeneous (ReLU, none), otherwise kept as a channel-scale node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..nn.axis import axes
from ._trace import check_input_fits, infer_input_shape, resolve_input_shape, trace
from .config import use, validate_config
from .export_registry import ExportContext, ExportError, _is_ours, register_exporter
from .recalibrate import check_examples, recalibrate_batchnorm

__all__ = ["ExportContext", "ExportError", "export", "register_exporter"]


# ----------------------------------------------------------------------------- entry point


def _check_scales(module: nn.Module, block_scales: Mapping[str, Any] | None) -> dict:
    if block_scales is None:
        return {}
    if not isinstance(block_scales, Mapping):
        raise TypeError(
            f"block_scales must be a mapping axis name -> tensor, got {type(block_scales).__name__}"
        )
    known = axes(module)
    checked = {}
    for name, value in block_scales.items():
        if name not in known:
            raise ValueError(f"block_scales: unknown axis {name!r}; known axes: {sorted(known)}")
        axis = known[name]
        if axis.kind not in ("width", "depth", "paths"):
            raise ValueError(f"block_scales: axis {name!r} of kind {axis.kind!r} has no scales")
        scale = torch.as_tensor(value, dtype=torch.float32)
        if scale.shape != (axis.size,):
            raise ValueError(
                f"block_scales[{name!r}] must have shape ({axis.size},), got {tuple(scale.shape)}"
            )
        if not torch.isfinite(scale).all():
            raise ValueError(f"block_scales[{name!r}] must be finite")
        checked[name] = scale
    return checked


def _first_batch(data: Any) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return check_examples(data, "calibration batch 0")[:1]
    if isinstance(data, tuple | list) and data and isinstance(data[0], torch.Tensor):
        return check_examples(data[0], "calibration batch 0")[:1]
    for batch in data:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"calibration_data must yield tensors or (x, y) tuples, got {type(x).__name__}"
            )
        return check_examples(x, "calibration batch 0")[:1]
    raise ValueError("calibration_data holds no batches")


def _check_plain(model: nn.Module) -> None:
    for path, m in model.named_modules():
        if _is_ours(m):
            raise ExportError(
                f"export left a bayes_nest module at {path!r} ({type(m).__name__}); register an "
                "exporter for it"
            )


def export(
    module: nn.Module,
    config: Mapping[str, int] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
    calibration_data: Iterable | None = None,
    calibration_batches: int | None = None,
    block_scales: Mapping[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> nn.Module:
    r"""Export sub-network ``config`` of ``module`` as a standalone plain ``nn.Module``.

    Parameters
    ----------
    module : nn.Module
        A nested model, or any module built from nested layers and plain torch modules.
    config : Mapping[str, int], optional
        Axis name to keep count (missing axes full; ``None``: the full network).
    input_shape : sequence of int, optional
        Shape of one example without the batch dimension, used to trace which input units
        reach every layer. Alternatively pass ``example_input`` or ``calibration_data``; with
        none of them the shape is inferred from the first layer when that is a linear layer
        (an MLP). The full network must run on it with every nested layer seeing its full input
        width (a shorter input would export truncated layers).
    example_input : Tensor, optional
        An example batch to trace (at least one example, finite values).
    calibration_data : iterable, optional
        Batches (``x`` or ``(x, y)``) on which to recalibrate the exported model's batch-norm
        statistics (:func:`~bayes_nest.subnet.recalibrate_batchnorm`). Recommended for any
        sub-network of a model with batch-norm: the nested model's running statistics were
        accumulated over a mixture of sub-networks. Every batch must hold at least one example
        and only finite values.
    calibration_batches : int, optional
        Use at most this many calibration batches.
    block_scales : Mapping[str, Tensor], optional
        Axis name to a per-block multiplier of shape ``(size,)`` (e.g. keep marginals of a BNNN
        posterior); the exported network computes what the masked network computes with the
        tensor mask ``block_scales[axis] · 1[i < n_axis]``.
    progress : bool
        Progress bar during recalibration.

    Returns
    -------
    nn.Module
        In eval mode; outputs equal the masked network's (eval mode) up to float rounding.

    Raises
    ------
    ValueError
        For an invalid config, a missing input shape or one that does not fit the module,
        malformed scales, or calibration data with no examples or non-finite values.
    ExportError
        For a layer type export does not know, or a module that cannot be sized statically.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    config = validate_config(module, {} if config is None else config)
    scales = _check_scales(module, block_scales)
    if example_input is None and input_shape is None and calibration_data is not None:
        example_input = _first_batch(calibration_data)
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor):
            raise TypeError(f"example_input must be a tensor, got {type(example_input).__name__}")
        example_input = check_examples(example_input, "example_input")
        input_shape = check_input_fits(module, tuple(example_input.shape[1:]))
    elif input_shape is not None or infer_input_shape(module) is not None:
        input_shape = resolve_input_shape(module, input_shape, "export")
    else:
        raise ValueError(
            "export needs input_shape (one example, e.g. (3, 32, 32)), example_input or "
            "calibration_data to find the shapes each layer sees; the shape cannot be inferred "
            f"from the layers of {type(module).__name__}"
        )
    traced = trace(module, config, input_shape=input_shape, example_input=example_input)
    ctx = ExportContext(module, traced.calls, scales)
    with use(module, config), torch.no_grad():
        exported = ctx.export(module)
    _check_plain(exported)
    if calibration_data is not None:
        recalibrate_batchnorm(
            exported, calibration_data, num_batches=calibration_batches, progress=progress
        )
    return exported.eval()


from . import _exporters  # noqa: E402, F401  (registers the built-in exporters)
