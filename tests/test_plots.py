from collections import namedtuple

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from bayes_nest import metrics, plots  # noqa: E402
from bayes_nest.testing import assert_close  # noqa: E402

Point = namedtuple("Point", ["config", "score", "cost"])


def _probs(seed=0, n=600, k=4):
    g = torch.Generator().manual_seed(seed)
    logits = 2.5 * torch.randn(5, n, k, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    labels[:300] = logits.mean(0)[:300].argmax(-1)  # make it better than chance
    return torch.softmax(logits, -1), labels


def _container(ax, gid):
    (container,) = [c for c in ax.containers if c.patches[0].get_gid() == gid]
    return container


# ----------------------------------------------------------------------------- reliability


def test_reliability_bars_are_per_bin_accuracy_and_confidence():
    probs, labels = _probs()
    n_bins = 10
    fig = plots.reliability_diagram(probs, labels, n_bins=n_bins, label="model")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    # independent per-bin statistics with numpy (the last bin closed at 1)
    pbar = probs.mean(0).numpy()
    conf, correct = pbar.max(1), pbar.argmax(1) == labels.numpy()
    idx = np.minimum(np.floor(conf * n_bins).astype(int), n_bins - 1)
    full = [b for b in range(n_bins) if (idx == b).any()]
    acc = [correct[idx == b].mean() for b in full]
    mean_conf = [conf[idx == b].mean() for b in full]

    bars = _container(ax, "accuracy")
    # per-bin means of float32 confidences, summed in another order than numpy's
    assert_close([p.get_height() for p in bars.patches], acc, dtype=torch.float32)
    edges = list(np.array(full) / n_bins)  # float32 bin edges
    assert_close([p.get_x() for p in bars.patches], edges, dtype=torch.float32)
    assert_close(
        [p.get_width() for p in bars.patches], [1 / n_bins] * len(full), dtype=torch.float32
    )
    gaps = _container(ax, "gap")
    assert_close([p.get_y() for p in gaps.patches], acc, dtype=torch.float32)
    tops = [p.get_y() + p.get_height() for p in gaps.patches]
    assert_close(tops, [float(c) for c in mean_conf], dtype=torch.float32)
    ece = metrics.expected_calibration_error(probs, labels, n_bins=n_bins)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"model (ECE = {ece:.3f})" in legend


def test_reliability_merges_confidence_one_into_last_bar():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.1, 0.9]])
    labels = torch.tensor([0, 1, 0, 1])
    fig = plots.reliability_diagram(probs, labels, n_bins=5, show_gap=False)
    (ax,) = fig.axes
    bars = _container(ax, "accuracy")
    assert len(bars.patches) == 1
    assert bars.patches[0].get_x() == pytest.approx(0.8)
    assert bars.patches[0].get_height() == pytest.approx(3 / 4)
    assert not any(c.patches[0].get_gid() == "gap" for c in ax.containers)


def test_reliability_on_given_axes_and_png(tmp_path):
    probs, labels = _probs(seed=1)
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    assert plots.reliability_diagram(probs, labels, ax=left, label="BNNN") is fig
    plots.reliability_diagram(probs[0], labels, ax=right, label="one sample", color="C1")
    path = tmp_path / "reliability.png"
    fig.savefig(path, dpi=80)
    assert path.stat().st_size > 5000


def test_reliability_validates_inputs():
    with pytest.raises(ValueError, match="labels"):
        plots.reliability_diagram(torch.full((3, 2), 0.5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="n_bins"):
        plots.reliability_diagram(torch.full((3, 2), 0.5), torch.tensor([0, 1, 1]), n_bins=0)


# ----------------------------------------------------------------------------- Pareto fronts


def test_pareto_front_line_data_is_sorted_points():
    points = [Point({}, 0.9, 300.0), Point({}, 0.5, 10.0), Point({}, 0.8, 100.0)]
    fig = plots.pareto_front(points, label="greedy")
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [10, 100, 300])
    np.testing.assert_array_equal(line.get_ydata(), [0.5, 0.8, 0.9])
    assert line.get_drawstyle() == "steps-post"
    assert line.get_label() == "greedy"
    assert ax.get_xscale() == "linear"


def test_pareto_multiple_labelled_fronts_pairs_and_front_objects(tmp_path):
    class Front:
        points = [Point({}, 0.7, 2.0), Point({}, 0.9, 20.0)]

    fig = plots.pareto_front(
        {"greedy": Front(), "random": [(1.0, 0.4), (10.0, 0.6)], "grid": np.array([[5.0, 0.5]])},
        logx=True,
        step=False,
        xlabel="MACs",
        ylabel="accuracy",
    )
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"greedy", "random", "grid"}
    np.testing.assert_array_equal(lines["greedy"].get_xydata(), [[2, 0.7], [20, 0.9]])
    np.testing.assert_array_equal(lines["random"].get_xydata(), [[1, 0.4], [10, 0.6]])
    assert lines["random"].get_drawstyle() == "default"
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "MACs" and ax.get_ylabel() == "accuracy"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == set(lines)
    fig.savefig(tmp_path / "front.png", dpi=60)


def test_pareto_validation():
    with pytest.raises(ValueError, match="no points"):
        plots.pareto_front([])
    with pytest.raises(TypeError, match=r"points\[1\]"):
        plots.pareto_front([(1.0, 0.5), (1.0, 2.0, 3.0)])
    with pytest.raises(ValueError, match="finite"):
        plots.pareto_front([(float("nan"), 0.5)])
    with pytest.raises(ValueError, match="positive costs"):
        plots.pareto_front({"a": [(0.0, 0.5), (1.0, 0.6)]}, logx=True)
    with pytest.raises(TypeError, match="sequence of points"):
        plots.pareto_front(42)


# ----------------------------------------------------------------------------- keep probabilities


def _beta_draws(seed, s, d):
    torch.manual_seed(seed)
    mean = torch.linspace(0.98, 0.7, d)
    return torch.distributions.Beta(40 * mean, 40 * (1 - mean)).sample((s,))


@pytest.mark.parametrize("marginal", [True, False])
def test_keep_probabilities_lines_and_bands(marginal):
    draws = {"layers.0": _beta_draws(0, 200, 8), "layers.1": _beta_draws(1, 200, 5)}
    fig = plots.keep_probabilities(draws, marginal=marginal, interval=(0.1, 0.9))
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    bands = ax.collections
    assert len(bands) == 2
    for (name, beta), band in zip(draws.items(), bands, strict=True):
        values = beta.double().numpy()
        if marginal:
            values = np.cumprod(values, axis=1)
        x = np.arange(1, values.shape[1] + 1)
        np.testing.assert_array_equal(lines[name].get_xdata(), x)
        assert_close(lines[name].get_ydata(), values.mean(0))
        lo, hi = np.quantile(values, [0.1, 0.9], axis=0)
        vertices = band.get_paths()[0].vertices
        for xi, lo_i, hi_i in zip(x, lo, hi, strict=True):
            ys = vertices[np.isclose(vertices[:, 0], xi), 1]
            assert ys.min() == pytest.approx(lo_i) and ys.max() == pytest.approx(hi_i)
    if marginal:  # marginals are non-increasing
        assert all(np.all(np.diff(line.get_ydata()) <= 0) for line in lines.values())


def test_keep_probabilities_point_estimate_and_png(tmp_path):
    fig = plots.keep_probabilities({"fc": np.array([0.9, 0.8, 0.5])})
    (line,) = fig.axes[0].get_lines()
    assert_close(line.get_ydata(), [0.9, 0.72, 0.36])
    fig.savefig(tmp_path / "keep.png", dpi=60)


def test_keep_probabilities_validation():
    with pytest.raises(ValueError, match="non-empty mapping"):
        plots.keep_probabilities({})
    with pytest.raises(ValueError, match=r"keep_probs\['a'\] must hold probabilities"):
        plots.keep_probabilities({"a": np.array([[0.5, 1.5]])})
    with pytest.raises(ValueError, match=r"shape \(S, D\)"):
        plots.keep_probabilities({"a": np.ones((2, 2, 2))})
    with pytest.raises(ValueError, match="interval"):
        plots.keep_probabilities({"a": np.ones(3)}, interval=(0.9, 0.1))


# ----------------------------------------------------------------------------- segmentation


def test_segmentation_samples_draws_image_annotations_and_one_row_per_model():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 6, 5))
    annotations = rng.random((4, 6, 5)) < 0.5
    samples = {"full": rng.random((8, 6, 5)) < 0.5, "half": torch.zeros(2, 6, 5)}
    fig = plots.segmentation_samples(image, annotations, samples, max_samples=3)
    assert isinstance(fig, Figure)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 1 + 4 + 3 + 2  # image, annotations, 3 of 8 samples, 2 samples
    np.testing.assert_array_equal(drawn[0].images[0].get_array(), image[0])
    np.testing.assert_array_equal(drawn[3].images[0].get_array(), annotations[2].astype(float))
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert labels == ["full", "half"]


def test_segmentation_samples_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match=r"annotations are \(6, 6\) pixels but the image is"):
        plots.segmentation_samples(np.zeros((5, 5)), np.zeros((2, 6, 6)), {})
    with pytest.raises(ValueError, match=r"samples\['bnnn'\] must have shape \(S, H, W\)"):
        plots.segmentation_samples(
            np.zeros((5, 5)), np.zeros((2, 5, 5)), {"bnnn": np.zeros((5, 5))}
        )
