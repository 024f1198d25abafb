"""Shared fixtures for the sub-network tests: small models of every axis kind."""

from __future__ import annotations

import random

import torch
from torch import nn

from bayes_nest.models import MLP, VGG, ConvNet, ResNet, ResNeXt
from bayes_nest.nn import axes


def randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch-norm non-trivial statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(1.0 + 0.3 * torch.randn(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return module


def model_zoo() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """Small instances of every reference model and axis kind, with example shapes."""
    torch.manual_seed(0)
    zoo = {
        "mlp": (MLP(12, [16, 24], 5, groups=4), (12,)),
        "mlp_bn": (MLP(12, [16, 24], 5, groups=4, norm="batch", activation="tanh"), (12,)),
        "mlp_bits": (MLP(12, [16], 5, groups=4, bits=4), (12,)),
        "convnet": (ConvNet(5, 1, (8, 16), hidden=16, groups=4), (1, 8, 8)),
        "convnet_bits": (ConvNet(5, 1, (8, 8), groups=2, bits=5), (1, 6, 6)),
        "resnet": (ResNet(5, 3, (8, 16), (3, 2), groups=4), (3, 8, 8)),
        "resnext": (
            ResNeXt(5, 3, (8, 16), (2, 1), cardinality=3, path_width=4, groups=2),
            (3, 8, 8),
        ),
        "vgg": (VGG(5, 3, "tiny", head_width=32, groups=8), (3, 8, 8)),
    }
    for model, _ in zoo.values():
        randomize_norms(model).eval()
    return zoo


def random_configs(module: nn.Module, n: int, seed: int = 0) -> list[dict[str, int]]:
    """``n`` random configs plus the full and the smallest one."""
    rng = random.Random(seed)
    found = axes(module)
    configs = [
        {name: a.size for name, a in found.items()},
        {name: a.always_on for name, a in found.items()},
    ]
    for _ in range(n):
        configs.append({name: rng.randint(a.always_on, a.size) for name, a in found.items()})
    return configs
