"""Batch-norm recalibration: exact full-data statistics, restored state, sub-networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bayes_nest.models import MLP, ConvNet
from bayes_nest.subnet import export, recalibrate_batchnorm, use
from bayes_nest.testing import assert_close
from tests.subnet.subnet_testing import randomize_norms


def _batches(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(x.split(sizes))


def test_linear_bn_statistics_are_exact_over_unequal_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, momentum=0.3), nn.ReLU())
    net[1].running_mean.fill_(7.0)
    x = 3.0 + 2.0 * torch.randn(100, 5)
    recalibrate_batchnorm(net, _batches(x, [10, 30, 7, 53]))
    with torch.no_grad():
        pre = net[0](x)
    assert_close(net[1].running_mean, pre.mean(0), scale=10)
    assert_close(net[1].running_var, pre.var(0, unbiased=True), scale=10)
    assert net[1].momentum == 0.3
    assert net.training  # restored
    assert int(net[1].num_batches_tracked) == 4


def test_conv_bn_statistics_count_spatial_positions():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    net = nn.Sequential(conv, nn.BatchNorm2d(3)).eval()
    x = torch.randn(24, 2, 5, 5) + 1.0
    recalibrate_batchnorm(net, _batches(x, [5, 11, 8]))
    with torch.no_grad():
        pre = conv(x).transpose(0, 1).reshape(3, -1)
    assert_close(net[1].running_mean, pre.mean(1), scale=10)
    assert_close(net[1].running_var, pre.var(1), scale=10)
    assert not net.training


def test_nested_width_layer_under_a_config():
    torch.manual_seed(2)
    net = randomize_norms(MLP(6, [8], 3, groups=4, norm="batch"))
    x = torch.randn(64, 6)
    recalibrate_batchnorm(net, (x, torch.zeros(64)), {"hidden.0": 3}, batch_size=20)
    layer = net.hidden[0]
    with torch.no_grad():
        pre = layer.affine(x)[:, :6]
    assert_close(layer.norm.running_mean[:6], pre.mean(0), scale=10)
    assert_close(layer.norm.running_var[:6], pre.var(0), scale=10)
    # channels outside the sub-network are reset
    assert torch.equal(layer.norm.running_mean[6:], torch.zeros(2))
    assert torch.equal(layer.norm.running_var[6:], torch.ones(2))


def test_second_layer_uses_batch_statistics_of_the_first():
    """As in training, a downstream layer sees inputs normalised with batch statistics."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 3), nn.BatchNorm1d(3))
    batches = _batches(torch.randn(60, 4) * 2 + 1, [20, 40])
    recalibrate_batchnorm(net, batches)
    pres = []
    with torch.no_grad():
        for b in batches:
            h = net[0](b)
            h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + net[1].eps)
            h = h * net[1].weight + net[1].bias
            pres.append(net[2](h))
    pre = torch.cat(pres)
    assert_close(net[3].running_mean, pre.mean(0), scale=10)
    assert_close(net[3].running_var, pre.var(0), scale=10)


def test_num_batches_limits_the_data():
    torch.manual_seed(4)
    net = nn.Sequential(nn.BatchNorm1d(2))
    batches = [torch.randn(10, 2), torch.randn(10, 2) + 100.0]
    recalibrate_batchnorm(net, batches, num_batches=1)
    assert_close(net[0].running_mean, batches[0].mean(0))
    assert int(net[0].num_batches_tracked) == 1


def test_exported_model_recalibrated_like_the_nested_one():
    torch.manual_seed(5)
    net = randomize_norms(ConvNet(3, 1, (8, 8), groups=4)).eval()
    config = {"convs.0": 2, "convs.1": 3}
    data = [torch.randn(12, 1, 6, 6) for _ in range(3)]
    exported = export(net, config, input_shape=(1, 6, 6))
    recalibrate_batchnorm(exported, data)
    recalibrate_batchnorm(net, data, config)
    x = torch.randn(5, 1, 6, 6)
    with torch.no_grad(), use(net, config):
        expected = net(x)
    assert_close(exported(x), expected, scale=100)


def test_module_without_batch_norm_is_returned_unchanged():
    net = MLP(4, [8], 2, groups=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batchnorm(net, [torch.randn(3, 4)]) is net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("num_batches", [0, -1, 1.5, True])
def test_bad_num_batches(num_batches):
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_batchnorm(nn.BatchNorm1d(2), [torch.randn(3, 2)], num_batches=num_batches)


def test_errors_restore_momentum():
    net = nn.Sequential(nn.BatchNorm1d(2, momentum=0.2))
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_batchnorm(net, [])
    assert net[0].momentum == 0.2
    with pytest.raises(TypeError):
        recalibrate_batchnorm("net", [])
    with pytest.raises(TypeError, match="tensors"):
        recalibrate_batchnorm(net, [["a", "b"]])
    assert net[0].momentum == 0.2
