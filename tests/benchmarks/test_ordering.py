"""The ordering benchmark's masks and summary arithmetic."""

import importlib.util
import sys
from pathlib import Path

import torch

from bayes_nest.data import load_dataset
from bayes_nest.infer import predict_probs
from bayes_nest.models import MLP
from bayes_nest.testing import assert_close

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("ordering", ROOT / "benchmarks" / "ordering.py")
ordering = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ordering)


def test_random_masks_keep_exactly_k_blocks_uniformly():
    g = torch.Generator().manual_seed(0)
    masks = torch.stack([ordering.random_mask(3, g) for _ in range(4000)])
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert (masks.sum(1) == 3).all()
    # Each block is kept with probability 3/8; 4000 draws: s.e. ~ 0.0077, 5 s.e. bound.
    assert (masks.mean(0) - 3 / ordering.GROUPS).abs().max() < 0.04


def test_prefix_tensor_mask_equals_the_truncated_sub_network():
    bundle = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    net = MLP(bundle.num_features, ordering.HIDDEN, 10, groups=ordering.GROUPS).eval()
    x, y = bundle.test
    for k in (1, 4, 8):
        mask = ordering.prefix_mask(k)
        acc = ordering.masked_accuracy("fn3", net, {"hidden.0": mask, "hidden.1": mask}, x, y)
        probs = predict_probs(net, x, {"hidden.0": k, "hidden.1": k})
        assert_close(acc, float((probs.argmax(-1) == y).float().mean()), dtype=torch.float32)


def test_seed_gaps_average_k_below_full_width_only():
    rows = [
        {"method": "fn3", "seed": s, "k": k, "prefix_minus_random_pp": 10.0 * s + k}
        for s in (0, 1)
        for k in range(1, ordering.GROUPS + 1)
    ]
    # k = 1..7 averages to 4 (the k = 8 row, which would raise the mean, is excluded).
    assert ordering.seed_gaps(rows, "fn3") == [4.0, 14.0]
