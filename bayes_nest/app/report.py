"""Reports: a report folder (Markdown plus PNG figures) of one or more analysed models.

`write_report` writes a folder with ``report.md`` and figures: the Pareto fronts of every trained model, reliability diagrams of
the chosen sub-networks and, for BNNNs, the posterior keep probabilities per axis with credible
intervals of the keep counts. The folder is written to a temporary sibling first and moved into
place at the end, so an interrupted run leaves no half-written report.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._files import temporary_folder
from ..nn import axes
from .budgets import Analysis
from .tables import markdown_table, score_label

__all__ = [
    "keep_count_interval",
    "keep_figure",
    "pareto_figure",
    "reliability_figure",
    "render_markdown",
    "write_report",
]


def _figure(ncols: int = 1, size: tuple[float, float] = (5.5, 4.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1]), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def pareto_figure(analyses: Sequence[Analysis]):
    """Score-versus-cost fronts of all models in one plot: the Pareto staircase, every evaluated
    sub-network (faint) and the budgets' choices (circles)."""
    from .. import plots

    fronts = {a.label: a.front.pareto() for a in analyses}
    first = analyses[0]
    xlabel = {"macs": "MACs", "params": "parameters", "weight_bits": "weight bits"}
    fig = plots.pareto_front(
        fronts,
        xlabel=xlabel.get(first.cost, first.cost),
        ylabel=f"{score_label(first.score)} (validation)",
    )
    ax = fig.axes[0]
    for i, a in enumerate(analyses):
        points = list(a.front.points)
        ax.scatter(
            [p.cost for p in points],
            [p.score for p in points],
            s=10,
            color=f"C{i}",
            alpha=0.3,
            label=f"{a.label}: all evaluated",
            zorder=2,
        )
        xs = [r[a.cost] if a.cost in r else r.get("cost") for r in a.rows]
        ys = [r.get("front_score") for r in a.rows]
        ax.scatter(
            xs,
            ys,
            s=80,
            facecolors="none",
            edgecolors=f"C{i}",
            linewidths=1.5,
            label=f"{a.label}: chosen for the budgets",
            zorder=4,
        )
    ax.legend()
    return fig


def reliability_figure(analysis: Analysis):
    """Reliability diagrams of the chosen sub-network for each budget (one panel each)."""
    from .. import plots

    n = len(analysis.probs)
    fig, axs = _figure(n, (3.6, 3.8))
    for ax, row, (probs, labels) in zip(axs, analysis.rows, analysis.probs, strict=True):
        plots.reliability_diagram(probs, labels, ax=ax, label=analysis.label)
        ax.set_title(f"budget {row['budget']}: {row['macs']:,.0f} MACs", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    return fig


def keep_count_interval(q: Any, level: float = 0.9) -> tuple[int, int]:
    """Equal-tailed credible interval ``[lo, hi]`` of a keep count with probabilities ``q``."""
    import numpy as np

    cdf = np.cumsum(np.asarray(q, dtype=float))
    tail = (1 - level) / 2
    lo = int(np.searchsorted(cdf, tail - 1e-12))
    hi = int(np.searchsorted(cdf, 1 - tail - 1e-12))
    return lo, min(hi, len(cdf) - 1)


def keep_figure(analysis: Analysis, level: float = 0.9):
    """Posterior keep probability of every block per axis (left) and the posterior of the
    number of kept blocks with its credible interval (right), against the FN3 prior."""
    import numpy as np

    from .. import plots

    bnnn = analysis.model.bnnn
    fig, (left, right) = _figure(2)
    betas = bnnn.keep_probs()
    plots.keep_probabilities({n: b.numpy() for n, b in betas.items()}, ax=left)
    pi = float(analysis.model.options.get("keep_prob", 0.9))
    d = max(len(b) for b in betas.values())
    left.plot(
        np.arange(1, d + 1),
        pi ** np.arange(1, d + 1),
        "k--",
        linewidth=1,
        label=f"prior (π = {pi:g})",
    )
    left.legend(fontsize=8)
    left.set_title("keep marginals P(block kept)", fontsize=10)
    for i, (name, q) in enumerate(bnnn.keep_count_probs().items()):
        q = q.numpy()
        always_on = bnnn.vous[name].axis.always_on
        counts = np.arange(len(q)) + always_on
        lo, hi = keep_count_interval(q, level)
        right.step(
            counts,
            q,
            where="mid",
            color=f"C{i}",
            label=f"{name}: {100 * level:g}% interval [{lo + always_on}, {hi + always_on}]",
        )
        right.axvspan(lo + always_on - 0.5, hi + always_on + 0.5, color=f"C{i}", alpha=0.12)
    right.set(xlabel="kept blocks", ylabel="posterior probability")
    right.set_title("posterior of the keep count", fontsize=10)
    right.legend(fontsize=8)
    return fig


def _model_rows(analyses: Sequence[Analysis]) -> list[dict[str, Any]]:
    rows = []
    for a in analyses:
        m = a.model
        seconds = sum(m.history.get("seconds", []) or [0.0])
        rows.append(
            {
                "model": a.label,
                "method": m.method,
                "architecture": f"{m.spec.name} {m.spec.options}",
                "epochs": m.options.get("epochs"),
                "train seconds": f"{seconds:.1f}",
                "axes": ", ".join(f"{n} ({ax.size} blocks)" for n, ax in axes(m.module).items()),
            }
        )
    return rows


def render_markdown(
    analyses: Sequence[Analysis],
    figures: Mapping[str, str],
    *,
    title: str,
    data_name: str,
    notes: Sequence[str] = (),
) -> str:
    """The text of ``report.md``."""
    first = analyses[0]
    about = (
        "OOD AUROC separates test inputs from the same inputs replaced by noise (predictive "
        "entropy as the score)."
    )
    if first.model.task == "segmentation":
        about = (
            "A model sample is the mask p > 1/2 of one posterior draw (one for FN3); GED is "
            "the squared generalized energy distance to the annotators' masks (d = 1 - IoU, "
            "lower is better), Hungarian IoU the IoU of an optimal matching of samples and "
            "annotations; pixel ECE and NLL score the mean probability against every annotation."
        )
    lines = [f"# {title}", ""]
    lines += [
        f"Data: **{data_name}**. Fronts searched on the validation split (score: "
        f"{score_label(first.score)}, cost: {first.cost}); every number in the tables is "
        f"measured on the test split. {about}",
        "",
        "## Models",
        "",
        markdown_table(
            _model_rows(analyses),
            ["model", "method", "architecture", "epochs", "train seconds", "axes"],
        ),
        "",
        "## Sub-networks chosen per budget",
        "",
    ]
    rows = [{"model": a.label, **a.rows[i]} for i in range(len(first.rows)) for a in analyses]
    lines += [markdown_table(rows), ""]
    captions = {
        "pareto": "Pareto fronts (validation score against cost; faint dots: every evaluated "
        "sub-network; circles: the sub-networks chosen for the budgets)",
        "keep": "BNNN posterior: keep probability of every block and the keep-count posterior "
        "with its 90% credible interval",
    }
    lines += ["## Figures", ""]
    for key, path in figures.items():
        caption = captions.get(key, f"Reliability diagrams of the chosen sub-networks ({key})")
        if key.startswith("segmentation "):
            caption = (
                f"{key[len('segmentation ') :]}: the test image the annotators disagree on "
                "most, its annotations, and model samples at the cheapest and the largest budget"
            )
        lines += [f"![{caption}]({path})", "", f"*{caption}.*", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write_report(
    out: str | os.PathLike,
    analyses: Sequence[Analysis],
    *,
    title: str = "bayes_nest report",
    data_name: str = "",
    notes: Sequence[str] = (),
    populate: Callable[[Path], None] | None = None,
    force: bool = False,
    marker: str | None = None,
) -> Path:
    """Write ``report.md`` and the figures into the folder ``out`` (built next to it, then moved
    into place; an existing folder is replaced only with ``force``).

    Parameters
    ----------
    out : path
    analyses : sequence of Analysis
    title, data_name, notes
        Text of the report.
    populate : callable, optional
        ``populate(folder)`` writes more files into the (temporary) folder, e.g. saved models.
    force : bool
        Replace an existing ``out``.
    marker : str, optional
        Name of an empty file marking the folder as written by this tool.
    """
    if not analyses:
        raise ValueError("a report needs at least one analysed model")
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"output {str(out)!r} exists; pass --force to replace it")
    tmp = Path(temporary_folder(out))  # a killed run's leftover is removed by the next one
    try:
        figures = {"pareto": "pareto_front.png"}
        _save(pareto_figure(analyses), tmp / figures["pareto"])
        for a in analyses:
            if a.model.task == "segmentation":
                from .segmentation import segmentation_figure

                name = f"segmentation_{a.label.lower()}.png"
                _save(segmentation_figure(a), tmp / name)
                figures[f"segmentation {a.label}"] = name
                continue
            name = f"reliability_{a.label.lower()}.png"
            _save(reliability_figure(a), tmp / name)
            figures[a.label] = name
        bnnns = [a for a in analyses if a.model.bnnn is not None]
        if bnnns:
            figures["keep"] = "keep_probabilities.png"
            _save(keep_figure(bnnns[0]), tmp / figures["keep"])
        text = render_markdown(analyses, figures, title=title, data_name=data_name, notes=notes)
        (tmp / "report.md").write_text(text)
        if populate is not None:
            populate(tmp)
        if marker:
            (tmp / marker).write_text("")
        _replace_dir(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=110)


def _replace_dir(new: Path, out: Path, force: bool) -> None:
    os.chmod(new, 0o755)
    if not os.path.lexists(out):
        os.rename(new, out)  # fails if a non-empty folder or a file appeared meanwhile
        return
    if not force:
        raise FileExistsError(
            f"output {str(out)!r} appeared while the report was written (another run?); it "
            "was left as it is: pass --force to replace it"
        )
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
