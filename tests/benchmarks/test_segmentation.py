"""The segmentation benchmark's baselines, config family, front and summary arithmetic."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from bayes_nest.models import UNet
from bayes_nest.nn import axes
from bayes_nest.testing import assert_close

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("segmentation")
baselines = _load("segmentation_baselines")


def test_config_family_covers_every_width_and_depth_once():
    net = UNet(1, 1, (4, 8, 8), groups=2, bottleneck_blocks=2)
    family = bench.width_depth_configs(net)
    assert len(family) == 2 * 3 and family[-1][0] == "full"
    assert family[-1][1] == {n: a.size for n, a in axes(net).items()}
    assert family[0][1] == {n: a.always_on for n, a in axes(net).items()}
    assert len({tuple(sorted(c.items())) for _, c in family}) == len(family)


def test_front_keeps_only_undominated_configs():
    rows = [
        {"config": "a", "macs": 1.0, "val_ged": 0.9},
        {"config": "b", "macs": 2.0, "val_ged": 0.5},
        {"config": "c", "macs": 3.0, "val_ged": 0.6},  # dominated by b
        {"config": "d", "macs": 2.0, "val_ged": 0.7},  # dominated by b
        {"config": "full", "macs": 4.0, "val_ged": 0.4},
    ]
    assert [r["config"] for r in bench.front_of(rows)] == ["a", "b", "full"]


def _row(method, seed, config, macs, test_ged, val_ged=None):
    return {
        "method": method,
        "seed": seed,
        "config": config,
        "macs": macs,
        "test_ged": test_ged,
        "val_ged": test_ged if val_ged is None else val_ged,
        "test_hungarian_iou": 0.5,
        "test_pixel_ece": 0.1,
        "test_pixel_nll": 0.2,
    }


def test_summary_ratios_are_per_seed_means_with_half_macs_chosen_on_validation():
    rows = []
    for seed, (bnnn, prob, mc) in enumerate([(0.4, 0.5, 0.8), (0.6, 0.5, 0.6)]):
        rows += [
            _row("prob_unet", seed, "full", float("nan"), prob),
            _row("mc_dropout", seed, "full", 100.0, mc),
            _row("bnnn", seed, "full", 100.0, bnnn),
            # the cheap config with the best validation GED is picked, not the best test GED
            _row("bnnn", seed, "w1", 40.0, 2 * bnnn, val_ged=0.1),
            _row("bnnn", seed, "w2", 50.0, bnnn, val_ged=0.9),
            _row("bnnn", seed, "w3", 60.0, 0.5 * bnnn, val_ged=0.0),  # over 50 % of the MACs
        ]
    summary = bench.summarize(rows, [0, 1])
    assert_close(summary["ged_ratio_vs_prob_unet"], (0.4 / 0.5 + 0.6 / 0.5) / 2)
    assert_close(summary["ged_ratio_vs_mc_dropout"], (0.4 / 0.8 + 0.6 / 0.6) / 2)
    assert_close(summary["half_macs_ged_ratio"], 2.0)
    assert summary["met"] == {
        "ged_ratio_vs_prob_unet": True,
        "ged_ratio_vs_mc_dropout": True,
        "half_macs_ged_ratio": False,
    }
    # two seeds: the interval of the mc-dropout ratio (0.5, 1.0) spans 0.9 -> not resolved
    assert summary["resolved"]["ged_ratio_vs_mc_dropout"] is False
    assert summary["fn3_ged_ratio_vs_prob_unet"] is None
    assert_close(summary["bnnn_ged"], 0.5)


def test_scores_repeat_five_samples_to_match_four_annotations():
    masks = torch.zeros(2, 4, 4, 4)
    masks[:, :, :2] = 1
    samples = masks[:, :1].expand(2, 5, 4, 4).transpose(0, 1).bool()
    out = bench.scores(samples, samples.float(), masks)
    assert out["ged"] == 0.0 and out["hungarian_iou"] == 1.0 and out["pixel_nll"] < 1e-9


def test_baseline_samples_have_the_documented_counts_and_randomness():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 8, 8)
    plain = [UNet(1, 1, (4, 8), groups=2).eval() for _ in range(5)]
    masks, probs = baselines.sample_masks("ensemble", plain, x, 16)
    assert masks.shape == probs.shape == (5, 3, 8, 8)
    assert torch.equal(masks, probs > 0.5)
    assert baselines.sample_masks("deterministic", plain, x, 16)[1].shape[0] == 1
    dropout = UNet(1, 1, (4, 8), groups=2, dropout=0.5).eval()
    _, mc = baselines.sample_masks("mc_dropout", [dropout], x, 6)
    assert mc.shape[0] == 6 and not torch.equal(mc[0], mc[1])
    assert not dropout.dropout.training  # switched back off
    prob = baselines.ProbabilisticUNet(1, (4, 8), groups=2, latent_dim=3).eval()
    _, pu = baselines.sample_masks("prob_unet", [prob], x, 4)
    assert pu.shape == (4, 3, 8, 8) and not torch.equal(pu[0], pu[1])
    with pytest.raises(ValueError, match="unknown baseline 'vae'"):
        baselines.sample_masks("vae", plain, x, 2)


def test_prob_unet_loss_is_bce_plus_beta_kl():
    torch.manual_seed(1)
    model = baselines.ProbabilisticUNet(1, (4, 8), groups=2, latent_dim=3, beta=0.0).eval()
    x, y = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) < 0.3).float()
    torch.manual_seed(2)
    with_beta0 = model.loss(x, y)
    model.beta = 2.0
    torch.manual_seed(2)  # same latent draw
    with_beta2 = model.loss(x, y)
    q = model.posterior(torch.cat([x, y], dim=1))
    kl = torch.distributions.kl_divergence(q, model.prior(x)).sum(-1).mean()
    assert_close(with_beta2 - with_beta0, 2.0 * kl, scale=100)
