"""Plots: reliability diagram, Pareto fronts and posterior keep probabilities.

Every function draws on a given matplotlib ``Axes`` (``ax=``) or, without one, on a new
``matplotlib.figure.Figure`` (no pyplot state is touched, so the functions work headless and
under the Agg backend), and returns the ``Figure``. Save it with ``fig.savefig("plot.png")``; in a
notebook the returned figure displays itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from . import metrics

__all__ = ["keep_probabilities", "pareto_front", "reliability_diagram", "segmentation_samples"]


def _axes(ax, figsize: tuple[float, float]):
    if ax is not None:
        return ax.figure, ax
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "bayes_nest.plots needs matplotlib: pip install 'bayes_nest[plots]'"
        ) from err
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


# ----------------------------------------------------------------------------- reliability


def reliability_diagram(
    probs,
    labels,
    n_bins: int = 15,
    *,
    ax=None,
    label: str | None = None,
    color: str = "C0",
    show_gap: bool = True,
):
    """Reliability diagram: accuracy per confidence bin against the diagonal of calibration.

    Bars show the accuracy of each non-empty bin of top-label confidence; hatched bars show the
    gap to the bin's mean confidence (a gap above the bar means over-confidence). The legend
    reports [`expected_calibration_error`][bayes_nest.metrics.expected_calibration_error]. Bins
    are those of [`calibration_bins`][bayes_nest.metrics.calibration_bins]; for display, examples
    with confidence exactly ``1`` are merged into the last bar.

    Parameters
    ----------
    probs : tensor or array, shape ``(N, K)`` or ``(S, N, K)``
        Predictive probabilities (posterior samples are averaged first).
    labels : integer tensor or array, shape ``(N,)``
    n_bins : int
        Number of equal-width confidence bins.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    label : str, optional
        Model name for the legend.
    color : str
        Colour of the accuracy bars.
    show_gap : bool
        Draw the gap between accuracy and mean confidence.

    Returns
    -------
    matplotlib.figure.Figure
    """
    bins = metrics.calibration_bins(probs, labels, n_bins)
    ece = metrics.expected_calibration_error(probs, labels, n_bins=n_bins)
    count = bins.count.astype(float)
    correct = np.nan_to_num(bins.accuracy) * count
    conf_sum = np.nan_to_num(bins.confidence) * count
    for total in (count, correct, conf_sum):  # fold the "confidence == 1" bin into the last one
        total[n_bins - 1] += total[n_bins]
    full = count[:n_bins] > 0
    left = bins.edges[:n_bins][full]
    acc = correct[:n_bins][full] / count[:n_bins][full]
    conf = conf_sum[:n_bins][full] / count[:n_bins][full]
    width = 1.0 / n_bins

    fig, ax = _axes(ax, (4.5, 4.5))
    name = "accuracy" if label is None else label
    ax.bar(
        left,
        acc,
        width=width,
        align="edge",
        color=color,
        edgecolor="black",
        linewidth=0.6,
        label=f"{name} (ECE = {ece:.3f})",
        gid="accuracy",
    )
    if show_gap:
        ax.bar(
            left,
            conf - acc,
            bottom=acc,
            width=width,
            align="edge",
            facecolor=(0.84, 0.15, 0.16, 0.15),
            hatch="//",
            edgecolor="tab:red",
            linewidth=0.8,
            label="gap to confidence",
            gid="gap",
        )
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, zorder=3, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", aspect="equal")
    ax.legend(loc="upper left")
    return fig


# ----------------------------------------------------------------------------- Pareto fronts


def _cost_score(point: Any, where: str) -> tuple[float, float]:
    if hasattr(point, "cost") and hasattr(point, "score"):
        pair = (point.cost, point.score)
    elif isinstance(point, Sequence | np.ndarray) and len(point) == 2:
        pair = tuple(point)
    else:
        raise TypeError(
            f"{where} must have .cost and .score or be a (cost, score) pair, got {point!r}"
        )
    try:
        cost, score = float(pair[0]), float(pair[1])
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where}: cost and score must be numbers, got {pair!r}") from err
    if not (np.isfinite(cost) and np.isfinite(score)):
        raise ValueError(f"{where}: cost and score must be finite, got ({cost}, {score})")
    return cost, score


def _front_array(front: Any, name: str) -> np.ndarray:
    points = front.points if hasattr(front, "points") else front
    if isinstance(points, str | bytes) or not isinstance(points, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence of points, got {type(points).__name__}")
    if len(points) == 0:
        raise ValueError(f"{name} has no points")
    pairs = np.array([_cost_score(p, f"{name}[{i}]") for i, p in enumerate(points)])
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def pareto_front(
    points,
    *,
    ax=None,
    label: str | None = None,
    logx: bool = False,
    step: bool = True,
    xlabel: str = "cost",
    ylabel: str = "score",
):
    """Plot one or several score-versus-cost fronts.

    Points are sorted by cost and drawn with markers; with ``step=True`` the line is the
    staircase "best score with cost at most x" (right-continuous steps), which is what a front
    answers for a budget.

    Parameters
    ----------
    points : front, sequence of points, or mapping of str to either
        A point has ``.cost`` and ``.score`` attributes (e.g. the points of a search front) or is
        a ``(cost, score)`` pair; an object with a ``.points`` attribute is read through it. A
        mapping draws one labelled front per entry.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    label : str, optional
        Legend label for a single front (a mapping's keys label its fronts).
    logx : bool
        Logarithmic cost axis (costs must be positive).
    step : bool
        Draw a staircase rather than straight segments between points.
    xlabel, ylabel : str
        Axis labels, e.g. ``"MACs"`` and ``"accuracy"``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fronts = dict(points) if isinstance(points, Mapping) else {label: points}
    if not fronts:
        raise ValueError("points must contain at least one front")
    arrays = {
        name: _front_array(front, "points" if name is None else f"points[{name!r}]")
        for name, front in fronts.items()
    }
    if logx:
        for name, arr in arrays.items():
            if (arr[:, 0] <= 0).any():
                raise ValueError(f"logx=True needs positive costs; front {name!r} has cost <= 0")
    fig, ax = _axes(ax, (5.5, 4))
    for name, arr in arrays.items():
        kwargs = {"marker": "o", "markersize": 4, "label": name}
        if step:
            ax.step(arr[:, 0], arr[:, 1], where="post", **kwargs)
        else:
            ax.plot(arr[:, 0], arr[:, 1], **kwargs)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    if any(name is not None for name in arrays):
        ax.legend()
    return fig


# ----------------------------------------------------------------------------- keep probabilities


def _keep_samples(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"keep_probs[{name!r}] must be a numeric array") from err
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(
            f"keep_probs[{name!r}] must have shape (S, D) or (D,), got {np.shape(value)}"
        )
    if np.isnan(arr).any() or (arr < 0).any() or (arr > 1).any():
        raise ValueError(f"keep_probs[{name!r}] must hold probabilities in [0, 1]")
    return arr


def keep_probabilities(
    keep_probs: Mapping[str, Any],
    *,
    ax=None,
    interval: tuple[float, float] = (0.05, 0.95),
    marginal: bool = True,
):
    r"""Posterior keep probability of every block, per axis, with a credible band.

    For draws of the conditional keep probabilities $\beta$ of an axis, plots the posterior
    mean of the keep marginal $P(\text{block } i \text{ kept}) = \prod_{j \le i} \beta_j$
    (or of $\beta_i$ itself with ``marginal=False``) against the block index
    $i = 1, \dots, D$ (orderable blocks, after the always-on ones), and shades the band between
    the ``interval`` quantiles over draws.

    Parameters
    ----------
    keep_probs : mapping of str to tensor or array, shape ``(S, D)`` or ``(D,)``
        Draws of the conditional keep probabilities per axis name.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    interval : (float, float)
        Lower and upper quantile levels of the band (default 5% and 95%).
    marginal : bool
        Plot the keep marginal (cumulative product); ``False`` plots $\beta_i$.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(keep_probs, Mapping) or not keep_probs:
        raise ValueError("keep_probs must be a non-empty mapping axis name -> (S, D) draws")
    lo_q, hi_q = interval
    if not 0 <= lo_q < hi_q <= 1:
        raise ValueError(f"interval must satisfy 0 <= lower < upper <= 1, got {interval}")
    fig, ax = _axes(ax, (5.5, 4))
    for name, value in keep_probs.items():
        draws = _keep_samples(value, name)
        if marginal:
            draws = np.cumprod(draws, axis=1)
        blocks = np.arange(1, draws.shape[1] + 1)
        (line,) = ax.plot(blocks, draws.mean(0), marker="o", markersize=3, label=name)
        lower, upper = np.quantile(draws, [lo_q, hi_q], axis=0)
        ax.fill_between(blocks, lower, upper, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set(
        ylim=(0, 1.02),
        xlabel="block (in keep order)",
        ylabel="P(block kept)" if marginal else "P(block kept | previous kept)",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(title=f"mean, {100 * lo_q:g}–{100 * hi_q:g}% band")
    return fig


# ----------------------------------------------------------------------------- segmentation


def _image_stack(value: Any, name: str, ndim: int, shape: str) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != ndim or array.size == 0:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.isfinite(array.astype(np.float64)).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array.astype(np.float64)


def segmentation_samples(
    image,
    annotations,
    samples: Mapping[str, Any],
    *,
    max_samples: int = 4,
    cell: float = 1.4,
):
    r"""One image, its annotations and model samples, one row per model or budget.

    The first row shows the image (first channel, grey) followed by its ``A`` annotations; each
    further row is labelled by its key in ``samples`` and shows up to ``max_samples`` of its
    binary masks. Masks are drawn in ``[0, 1]`` (white = foreground).

    Parameters
    ----------
    image : tensor or array, shape ``(C, H, W)`` or ``(H, W)``
    annotations : tensor or array, shape ``(A, H, W)``
    samples : mapping of str to tensor or array, shape ``(S, H, W)``
        Samples of each model (e.g. ``{"BNNN full": ..., "BNNN 25 % MACs": ...}``).
    max_samples : int
        Most samples drawn per row.
    cell : float
        Size of one panel in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"max_samples must be a positive int, got {max_samples!r}")
    img = _image_stack(image, "image", np.ndim(image), "(C, H, W) or (H, W)")
    if img.ndim == 3:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"image must have shape (C, H, W) or (H, W), got {np.shape(image)}")
    ann = _image_stack(annotations, "annotations", 3, "(A, H, W)")
    if ann.shape[1:] != img.shape:
        raise ValueError(f"annotations are {ann.shape[1:]} pixels but the image is {img.shape}")
    if not isinstance(samples, Mapping):
        raise TypeError("samples must be a mapping row label -> (S, H, W) masks")
    rows = {}
    for label, value in samples.items():
        masks = _image_stack(value, f"samples[{label!r}]", 3, "(S, H, W)")
        if masks.shape[1:] != img.shape:
            raise ValueError(
                f"samples[{label!r}] are {masks.shape[1:]} pixels but the image is {img.shape}"
            )
        rows[str(label)] = masks[:max_samples]
    columns = max([1 + len(ann)] + [1 + len(m) for m in rows.values()])
    fig, _ = _axes(None, (cell * columns, cell * (1 + len(rows))))
    fig.clear()
    grid = fig.subplots(1 + len(rows), columns, squeeze=False)
    for ax in grid.flat:
        ax.set_axis_off()
    grid[0, 0].imshow(img, cmap="gray")
    grid[0, 0].set_title("image", fontsize=8)
    for a, mask in enumerate(ann):
        grid[0, 1 + a].imshow(mask, cmap="gray", vmin=0, vmax=1)
        grid[0, 1 + a].set_title(f"annotator {a + 1}", fontsize=8)
    for r, (label, masks) in enumerate(rows.items(), start=1):
        grid[r, 0].text(0.5, 0.5, label, ha="center", va="center", wrap=True, fontsize=8)
        for j, mask in enumerate(masks):
            grid[r, 1 + j].imshow(mask, cmap="gray", vmin=0, vmax=1)
    return fig
