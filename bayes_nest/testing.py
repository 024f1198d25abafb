"""One numeric-tolerance policy for comparing results computed in different orders.

Two computations of the same quantity agree bit for bit only when the same operations run in the
same order on the same data. Batching, thread count, kernel choice (``ATEN_CPU_CAPABILITY``) and
summation order all change the last bits, so such results are compared with a tolerance that
depends on the floating-point type: a few hundred units in the last place relative, plus an
absolute floor for values near zero.

=============  ==========  ==========
dtype          ``rtol``     ``atol``
=============  ==========  ==========
float64        1e-10        1e-12
float32        1e-5         1e-6
bfloat16       2e-2         1e-2
float16        2e-3         1e-3
=============  ==========  ==========

Use :func:`assert_close` for every such comparison, and ``==`` only where the computation is
literally repeated (same operations, same order, same data).

Discrete results (an accuracy, a predicted class) are exact across orders only while no decision
sits within rounding of its threshold: :func:`argmax_margin` measures how far each prediction is
from a tie, so a test can state that precondition before it compares accuracies exactly.

Examples
--------
>>> import torch
>>> from bayes_nest.testing import assert_close, tolerances
>>> tolerances(torch.float32)
(1e-05, 1e-06)
>>> x = torch.rand(100, dtype=torch.float64)
>>> assert_close(x.sum(), x.flip(0).sum())
>>> assert_close(0.1 + 0.2, 0.3)
>>> assert_close(1.0000001, 1.0, dtype=torch.float32)  # a float32 result held as a Python float
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["TOLERANCES", "argmax_margin", "assert_close", "tolerances"]

#: ``dtype -> (rtol, atol)`` for values computed in a different order.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (2e-2, 1e-2),
    torch.float16: (2e-3, 1e-3),
}

_NUMPY_TO_TORCH = {
    np.dtype(np.float64): torch.float64,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float16): torch.float16,
}


def tolerances(dtype: torch.dtype | np.dtype | type | None) -> tuple[float, float]:
    """The ``(rtol, atol)`` pair for values of ``dtype`` computed in a different order.

    Parameters
    ----------
    dtype
        A torch or numpy floating dtype, Python's ``float`` (treated as float64), or ``None``
        (float64). Integer and boolean dtypes get ``(0, 0)``: they must match exactly.
    """
    if dtype is None or dtype is float:
        return TOLERANCES[torch.float64]
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            return (0.0, 0.0)
        return TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    np_dtype = np.dtype(dtype)
    if np_dtype.kind in "iub":
        return (0.0, 0.0)
    if np_dtype not in _NUMPY_TO_TORCH:
        raise TypeError(f"no tolerance defined for dtype {np_dtype}")
    return TOLERANCES[_NUMPY_TO_TORCH[np_dtype]]


def _dtype_of(value: Any) -> torch.dtype | np.dtype | type:
    if isinstance(value, torch.Tensor):
        return value.dtype
    if isinstance(value, np.ndarray | np.generic):
        return value.dtype
    if isinstance(value, bool | int):
        return np.dtype(np.int64)
    return float


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    # a contiguous copy: torch cannot share a numpy view with negative strides (reversed)
    return torch.as_tensor(np.array(value))


def _coarser(first: tuple[float, float], second: tuple[float, float]) -> tuple[float, float]:
    return (max(first[0], second[0]), max(first[1], second[1]))


def assert_close(
    actual: Any,
    expected: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: torch.dtype | np.dtype | type | None = None,
    scale: float = 1.0,
    msg: str | None = None,
) -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    Parameters
    ----------
    actual, expected
        Tensors, numpy arrays, Python numbers, or (nested) mappings / sequences of them with the
        same keys and lengths; a tensor or array may also be compared with a (nested) list of
        numbers. Shapes must match exactly; NaNs match NaNs in the same places.
    rtol, atol
        Override the dtype-dependent defaults of :func:`tolerances` (the coarser dtype of the
        two values decides).
    dtype
        The precision the values were *computed* in, when it differs from how they are held
        (a Python float returned by a float32 computation: ``dtype=torch.float32``).
    scale
        Multiplies both default tolerances, for quantities that accumulate many rounding steps
        (say, a loss summed over thousands of terms or a trained network's outputs).
    msg
        Prefix for the failure message.

    Raises
    ------
    AssertionError
        Naming the largest absolute and relative difference and where it occurs.
    """
    prefix = f"{msg}: " if msg else ""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping) or set(actual) != set(expected):
            raise AssertionError(f"{prefix}keys differ: {sorted(actual)} vs {sorted(expected)}")
        for key in expected:
            assert_close(
                actual[key],
                expected[key],
                rtol=rtol,
                atol=atol,
                dtype=dtype,
                scale=scale,
                msg=f"{msg or ''}[{key!r}]",
            )
        return
    if isinstance(expected, Sequence) and not isinstance(expected, str):
        if isinstance(actual, torch.Tensor | np.ndarray):
            expected = np.asarray(expected, dtype=float)  # a tensor against (nested) numbers
        elif not isinstance(actual, Sequence) or len(actual) != len(expected):
            raise AssertionError(f"{prefix}lengths differ: {actual!r} vs {expected!r}")
        elif all(isinstance(item, bool | int | float) for item in expected):
            actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
        else:
            for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
                assert_close(
                    left,
                    right,
                    rtol=rtol,
                    atol=atol,
                    dtype=dtype,
                    scale=scale,
                    msg=f"{msg or ''}[{index}]",
                )
            return
    if dtype is not None:
        default_rtol, default_atol = tolerances(dtype)
    else:
        default_rtol, default_atol = _coarser(
            tolerances(_dtype_of(actual)), tolerances(_dtype_of(expected))
        )
    rtol = default_rtol * scale if rtol is None else rtol
    atol = default_atol * scale if atol is None else atol
    left, right = _as_tensor(actual), _as_tensor(expected)
    if left.shape != right.shape:
        raise AssertionError(f"{prefix}shapes differ: {tuple(left.shape)} vs {tuple(right.shape)}")
    left, right = left.double(), right.double()
    nan_left, nan_right = torch.isnan(left), torch.isnan(right)
    if not torch.equal(nan_left, nan_right):
        raise AssertionError(f"{prefix}NaNs in different places")
    same_inf = torch.isinf(left) & (left == right)
    difference = torch.where(nan_left | same_inf, torch.zeros_like(left), (left - right).abs())
    allowed = atol + rtol * right.abs().nan_to_num(posinf=0.0)
    bad = difference > allowed
    if bool(bad.any()):
        worst = int(
            torch.argmax(torch.where(bad, difference - allowed, torch.zeros_like(difference)))
        )
        flat_left, flat_right = left.reshape(-1), right.reshape(-1)
        where = "" if left.dim() == 0 else f" at flat index {worst}"
        relative = float(
            difference.reshape(-1)[worst] / max(float(flat_right[worst].abs()), math.ulp(0.0))
        )
        raise AssertionError(
            f"{prefix}{int(bad.sum())} of {bad.numel()} values differ{where}: "
            f"{float(flat_left[worst])!r} vs {float(flat_right[worst])!r} "
            f"(abs diff {float(difference.reshape(-1)[worst]):.3g}, rel {relative:.3g}; "
            f"rtol={rtol:.3g}, atol={atol:.3g})"
        )


def argmax_margin(scores: torch.Tensor) -> torch.Tensor:
    r"""Gap between the largest and second-largest entry of each row, :math:`s_{(1)} - s_{(2)}`.

    An argmax (a predicted class) cannot change under a perturbation smaller than half this gap,
    so accuracies computed in two orders agree exactly when every margin exceeds twice the
    rounding tolerance of the scores.

    Parameters
    ----------
    scores : Tensor, shape ``(..., K)`` with ``K >= 2``
        Probabilities or logits; the last axis holds the classes.

    Returns
    -------
    Tensor, shape ``(...)``
        Non-negative gaps (zero where the top two entries tie).
    """
    if scores.dim() == 0 or scores.shape[-1] < 2:
        raise ValueError(
            f"scores need at least two classes on the last axis, got {tuple(scores.shape)}"
        )
    top_two = scores.detach().topk(2, dim=-1).values
    return top_two[..., 0] - top_two[..., 1]
