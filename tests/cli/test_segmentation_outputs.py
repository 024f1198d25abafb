"""``bayes-nest export`` and ``report`` of a segmentation model: the exported network computes
the sub-network's outputs, and the report tabulates GED, Hungarian IoU and pixel scores and draws
an image, its annotations and model samples at two budgets."""

from __future__ import annotations

import json

import pytest
import torch

from bayes_nest.cli import main
from bayes_nest.pipeline import load_model
from bayes_nest.subnet import use
from bayes_nest.testing import assert_close
from tests.cli.segmentation_testing import QUIET, TINY, run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An FN3 U-Net trained on 24 built-in lesion images of 16 x 16 pixels."""
    root = tmp_path_factory.mktemp("seg_outputs")
    fn3 = root / "fn3.ckpt"
    argv = ["fit", "--task", "segmentation", "--data", "lesions", "--num-images", "24"]
    argv += ["--image-size", "16", *TINY, "--epochs", "1", "--batch-size", "8"]
    assert main([*argv, "--out", str(fn3), *QUIET]) == 0
    return {"root": root, "fn3": fn3}


def test_export_gives_a_plain_network_with_the_sub_networks_outputs(trained, capsys):
    out = trained["root"] / "small.pt"
    argv = ["export", str(trained["fn3"]), "--subnet", "level0=1,dec.0=1", "--out", str(out)]
    code, text, _ = run(argv, capsys)
    assert code == 0 and "exported" in text
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["task"] == "segmentation" and info["input_shape"] == [1, 16, 16]
    plain = torch.load(out, weights_only=False).eval()
    model = load_model(trained["fn3"])
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    model.module.eval()
    with torch.no_grad(), use(model.module, {"level0": 1, "dec.0": 1}):
        expected = model.module(x)
    with torch.no_grad():
        got = plain(x)
    assert got.shape == (3, 1, 16, 16)
    assert_close(got, expected)
    assert sum(p.numel() for p in plain.parameters()) < sum(
        p.numel() for p in model.module.parameters()
    )


def test_report_draws_annotations_and_samples_and_tabulates_segmentation_scores(trained, capsys):
    out = trained["root"] / "report"
    argv = ["report", str(trained["fn3"]), "--data", "lesions", "--budgets", "50%,100%"]
    code, text, _ = run([*argv, "--out", str(out)], capsys)
    assert code == 0, text
    figure = out / "segmentation_fn3.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "segmentation_fn3.png" in report
    header = next(line for line in report.splitlines() if line.startswith("| model | budget"))
    for column in ("GED", "Hungarian IoU", "pixel ECE", "pixel NLL"):
        assert column in header
    assert "accuracy" not in header and "OOD AUROC" not in header
    # the figure: one row of image + 4 annotations, then one row per budget
    import matplotlib.image

    height, width = matplotlib.image.imread(figure).shape[:2]
    assert height > width / 5 * 2.5  # three rows of panels, five columns
