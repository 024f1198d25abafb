"""Result tables and report folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_nest.models import MLP
from bayes_nest.report import (
    config_summary,
    format_table,
    keep_count_interval,
    markdown_table,
    write_report,
)


def test_config_summary():
    net = MLP(8, [16, 8], 3, groups=4)
    assert config_summary(net, {}) == "full"
    assert config_summary(net, {"hidden.1": 2}) == "hidden.0=4/4 hidden.1=2/4"


def test_tables_align_and_format():
    rows = [
        {"model": "FN3", "macs": 1234.0, "accuracy": 0.9, "ece": float("nan")},
        {"model": "BNNN", "macs": 56.0, "accuracy": 0.875, "ece": 0.01},
    ]
    text = format_table(rows).splitlines()
    assert text[0].split() == ["model", "MACs", "accuracy", "ECE"]
    assert text[2].split() == ["FN3", "1,234", "0.9000", "-"]
    assert len({len(line) for line in text[:2]}) == 1  # header and rule have equal width
    assert text[3].index("56") + 2 == text[2].index("1,234") + 5  # numbers right-aligned
    md = markdown_table(rows).splitlines()
    assert md[1] == "| --- | ---: | ---: | ---: |"
    assert md[3] == "| BNNN | 56 | 0.8750 | 0.0100 |"


@pytest.mark.parametrize("seed", range(5))
def test_keep_count_interval_matches_sample_quantiles(seed):
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.ones(9))
    lo, hi = keep_count_interval(q, 0.9)
    cdf = np.cumsum(q)
    # lo: first count with P(b <= lo) >= 5%; hi: first count with P(b <= hi) >= 95%
    assert lo == int(np.argmax(cdf >= 0.05)) and hi == int(np.argmax(cdf >= 0.95 - 1e-12))
    assert q[lo : hi + 1].sum() >= 0.9 - 1e-9


def test_write_report_refuses_and_replaces_folders(tmp_path):
    from bayes_nest.data import load_dataset
    from bayes_nest.pipeline import ModelSpec, fit
    from bayes_nest.workflow import analyse

    data = load_dataset("digits")
    model = fit(
        ModelSpec("mlp", {"hidden": [16], "groups": 4}),
        data,
        "bnnn",
        epochs=1,
        progress=False,
        predict_samples=2,
    )
    a = analyse(model, data, label="BNNN", budgets=["60%"], progress=False)
    out = tmp_path / "r"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--force"):
        write_report(out, [a])
    assert (out / "mine.txt").exists()
    write_report(out, [a], force=True, title="T")
    assert not (out / "mine.txt").exists()
    assert (out / "report.md").read_text().startswith("# T")
    assert (out / "keep_probabilities.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary folders left
    assert torch.is_tensor(a.probs[0][0])
