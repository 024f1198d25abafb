"""The nested U-Net: axes, sub-networks against masks and exports, costs, validation, training."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayes_nest.data import RandomAnnotatorDataset, load_segmentation
from bayes_nest.infer import fit_fn3
from bayes_nest.metrics import pixel_nll
from bayes_nest.models import UNet
from bayes_nest.nn import axes, masked
from bayes_nest.subnet import cost, export, full, recalibrate_batchnorm, smallest, use
from bayes_nest.testing import assert_close

thop = pytest.importorskip("thop")

SHAPE = (1, 16, 16)


def build(seed=0, **kwargs):
    torch.manual_seed(seed)
    net = UNet(1, 2, widths=(4, 8, 8), groups=2, bottleneck_blocks=2, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_(0.0, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(0.1, 0.5, generator=gen)
    return net.eval()


def configs(net, count, seed=0):
    rng = random.Random(seed)
    found = axes(net)
    out = [full(net), smallest(net)]
    out += [{n: rng.randint(a.always_on, a.size) for n, a in found.items()} for _ in range(count)]
    return out


def test_axes_and_shapes():
    net = build()
    summary = {name: (a.kind, a.size, a.always_on) for name, a in axes(net).items()}
    assert summary == {
        "enc.0.0": ("width", 2, 1),
        "level0": ("width", 2, 1),
        "enc.1.0": ("width", 2, 1),
        "level1": ("width", 2, 1),
        "bottleneck": ("depth", 3, 1),
        "level2": ("width", 2, 1),
        "bottleneck.blocks.1.conv1": ("width", 2, 1),
        "bottleneck.blocks.2.conv1": ("width", 2, 1),
        "dec.0": ("width", 2, 1),
        "dec.1": ("width", 2, 1),
    }
    assert net(torch.randn(3, *SHAPE)).shape == (3, 2, 16, 16)
    no_depth = UNet(1, 1, (4, 8), groups=2, bottleneck_blocks=0)
    assert "bottleneck" not in axes(no_depth) and set(axes(no_depth)) == {
        "enc.0.0",
        "level0",
        "level1",
        "dec.0",
    }


def test_hard_configs_equal_prefix_masks_and_exports():
    net = build()
    x = torch.randn(4, *SHAPE)
    for config in configs(net, 6):
        with use(net, config):
            sliced = net(x)
        prefix = {
            name: torch.cat([torch.ones(config[name]), torch.zeros(a.size - config[name])])
            for name, a in axes(net).items()
        }
        with masked(net, prefix):
            scaled = net(x)
        assert_close(sliced, scaled, scale=10)
        plain = export(net, config, input_shape=SHAPE)
        assert not any(type(m).__module__.startswith("bayes_nest") for m in plain.modules())
        assert_close(plain(x), sliced, scale=10)


def test_dropped_channels_contribute_nothing():
    net = build()
    config = {name: a.always_on for name, a in axes(net).items()}
    x = torch.randn(2, *SHAPE)
    with use(net, config):
        before = net(x)
        with torch.no_grad():  # weights of dropped output channels of every width layer
            net.enc[0][0].affine.weight[2:].normal_()
            net.up[0].affine.weight[2:].normal_()
            net.dec[1].affine.weight[4:].normal_()
        assert torch.equal(net(x), before)


def _thop_macs(model, shape):
    zero = thop.vision.basic_hooks.zero_ops
    ops = {nn.BatchNorm2d: zero, nn.ReLU: zero, nn.MaxPool2d: zero, nn.Dropout2d: zero}
    macs, params = thop.profile(
        model, inputs=(torch.zeros(1, *shape),), custom_ops=ops, verbose=False
    )
    return macs, params


def test_costs_match_thop_on_exported_model_and_shrink():
    net = build()
    for config in configs(net, 4, seed=1):
        plain = export(net, config, input_shape=SHAPE)
        macs, params = _thop_macs(plain, SHAPE)
        assert cost(net, config, "macs", input_shape=SHAPE) == macs
        assert cost(net, config, "params", input_shape=SHAPE) == params
    full_macs = cost(net, full(net), "macs", input_shape=SHAPE)
    assert cost(net, smallest(net), "macs", input_shape=SHAPE) < full_macs / 3


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="widths must name at least 2 levels"):
        UNet(1, 1, (8,))
    with pytest.raises(ValueError, match=r"groups=3 must divide every width; widths\[0\]=8"):
        UNet(1, 1, (8, 16), groups=3)
    with pytest.raises(ValueError, match="dropout must be in"):
        UNet(1, 1, (8, 16), groups=2, dropout=1.0)
    with pytest.raises(ValueError, match=r"divisible by 4.*\(2, 1, 18, 16\)"):
        UNet(1, 1, (4, 8, 8), groups=2)(torch.zeros(2, 1, 18, 16))


def test_dropout_is_random_in_training_mode_only():
    net = build(dropout=0.5)
    x = torch.randn(2, *SHAPE)
    assert torch.equal(net(x), net(x))
    net.dropout.train()
    assert not torch.equal(net(x), net(x))


@pytest.mark.slow
def test_fn3_learns_per_pixel_masks_from_random_annotators():
    data = load_segmentation(num_images=160, size=16, seed=0)
    torch.manual_seed(0)  # the initial weights too: the bound below is for one fixed seed
    net = UNet(1, 1, widths=(4, 8), groups=2, bottleneck_blocks=1)
    train = RandomAnnotatorDataset(data.train, seed=0)
    fit_fn3(
        net,
        train,
        epochs=30,
        loss_fn=F.binary_cross_entropy_with_logits,
        batch_size=16,
        sandwich="both",
        seed=0,
        progress=False,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
    )
    net.eval()
    masks = data.test.masks
    base_rate = float(data.train.masks.mean())
    constant = pixel_nll(np.full((len(masks), 16, 16), base_rate), masks)
    scores = {}
    for name, config in (("full", full(net)), ("smallest", smallest(net))):
        recalibrate_batchnorm(net, data.train.x, config)  # batch-norm statistics of this width
        with torch.no_grad(), use(net, config):
            probs = torch.sigmoid(net(data.test.x))[:, 0]
        scores[name] = pixel_nll(probs, masks)
    # the full network learns the lesions; the 2-channel smallest one is far weaker
    assert scores["full"] < 0.7 * constant and scores["full"] < scores["smallest"], scores


@pytest.mark.slow
def test_bnnn_with_a_per_pixel_bernoulli_likelihood_learns_the_masks():
    import pyro

    from bayes_nest.infer import BNNN, likelihoods

    torch.manual_seed(0)
    data = load_segmentation(num_images=160, size=16, seed=0)
    net = UNet(1, 1, widths=(4, 8), groups=2, bottleneck_blocks=1)
    bnnn = BNNN(net, likelihood=likelihoods.Bernoulli(len(data.train.x)))
    x, masks = data.test
    train = RandomAnnotatorDataset(data.train, seed=0)
    optimizer = pyro.optim.Adam({"lr": 1e-2})
    bnnn.fit(train, epochs=12, batch_size=16, optimizer=optimizer, progress=False, seed=0)
    probs = bnnn.predict(x, num_samples=4)
    assert probs.shape == (4, len(x), 1, 16, 16)
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1
    assert not torch.equal(probs[0], probs[1])  # posterior samples differ
    constant = pixel_nll(np.full((len(x), 16, 16), float(data.train.masks.mean())), masks)
    assert pixel_nll(probs[:, :, 0], masks) < 0.8 * constant
    small = bnnn.predict(x, config=smallest(bnnn.net), num_samples=4)
    assert small.shape == probs.shape and not torch.equal(small, probs)
