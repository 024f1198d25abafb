"""Reference models: axes, sub-network equivalences, dropped blocks, gradients, validation."""

import random

import pytest
import torch
from torch import nn

from bayes_nest.models import MLP, VGG, VGG_CONFIGS, ConvNet, ResNet, ResNeXt
from bayes_nest.nn import axes, axis_owners, masked
from bayes_nest.subnet import full, smallest, use
from bayes_nest.testing import assert_close

IMAGE = (1, 8, 8)

FACTORIES = {
    "mlp": (lambda: MLP(6, [8, 8], 3, groups=4), (6,)),
    "mlp-bits": (lambda: MLP(6, [8], 3, groups=2, bits=3, norm="batch"), (6,)),
    "convnet": (lambda: ConvNet(3, 1, (4, 8), hidden=8, groups=2), IMAGE),
    "convnet-bits": (lambda: ConvNet(3, 1, (4, 8), groups=4, bits=3), IMAGE),
    "resnet": (lambda: ResNet(3, 1, widths=(4, 8), depths=(2, 3), groups=2), IMAGE),
    "resnet-bits": (lambda: ResNet(3, 1, (4, 8), (2, 1), groups=2, bits=2), IMAGE),
    "resnext": (
        lambda: ResNeXt(3, 1, (4, 8), (2, 2), cardinality=3, path_width=2, groups=2),
        IMAGE,
    ),
    "vgg": (lambda: VGG(3, 1, [8, "M", 8, "M", 16], head_width=8, groups=2), IMAGE),
    "vgg-bits": (
        lambda: VGG(3, 1, "tiny", head_width=8, groups=4, nest_first=True, bits=2),
        IMAGE,
    ),
}


def build(name, seed=0):
    torch.manual_seed(seed)
    factory, shape = FACTORIES[name]
    model = factory()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                module.running_mean.normal_(0.0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(0.1, 0.5)  # keep ReLU units alive
    return model.eval(), torch.randn((5, *shape))


def prefix_masks(model, config):
    """The 0/1 tensor mask of every axis equivalent to the keep counts ``config``."""
    return {
        name: torch.cat([torch.ones(config[name]), torch.zeros(axis.size - config[name])])
        for name, axis in axes(model).items()
    }


def random_configs(model, count, seed):
    rng = random.Random(seed)
    found = axes(model)
    return [
        {name: rng.randint(axis.always_on, axis.size) for name, axis in found.items()}
        for _ in range(count)
    ]


def summary(model):
    return {name: (a.kind, a.size, a.always_on) for name, a in axes(model).items()}


# -- axes -------------------------------------------------------------------------------------


def test_mlp_axes():
    model, _ = build("mlp-bits")
    assert summary(model) == {"hidden.0": ("width", 2, 1), "bits": ("bits", 3, 1)}


def test_convnet_axes():
    model, _ = build("convnet")
    assert summary(model) == {
        "convs.0": ("width", 2, 1),
        "convs.1": ("width", 2, 1),
        "hidden": ("width", 2, 1),
    }


def test_resnet_axes_and_shared_widths():
    model, _ = build("resnet")
    assert summary(model) == {
        "stages.0.width": ("width", 2, 1),
        "stages.0": ("depth", 2, 1),
        "stages.0.blocks.0.body.conv1": ("width", 2, 1),
        "stages.0.blocks.1.conv1": ("width", 2, 1),
        "stages.1.width": ("width", 2, 1),
        "stages.1": ("depth", 3, 1),
        "stages.1.blocks.0.body.conv1": ("width", 2, 1),
        "stages.1.blocks.1.conv1": ("width", 2, 1),
        "stages.1.blocks.2.conv1": ("width", 2, 1),
    }
    owners = {}
    for name, owner in axis_owners(model):
        owners.setdefault(name, []).append(owner)
    # stem + two branch outputs in stage 0; shortcut + three branch outputs in stage 1
    assert owners["stages.0.width"] == [model.stem] + [
        b.conv2 for b in (model.stages[0].blocks[0].body, model.stages[0].blocks[1])
    ]
    assert len(owners["stages.1.width"]) == 4
    assert model.stages[1].blocks[0].shortcut in owners["stages.1.width"]


def test_resnext_axes():
    model, _ = build("resnext")
    found = summary(model)
    assert found["stages.0"] == ("depth", 2, 1)
    for s in range(2):
        assert found[f"stages.{s}.width"] == ("width", 2, 1)
        for i in range(2):
            assert found[f"stages.{s}.blocks.{i}.paths"] == ("paths", 3, 1)
            assert found[f"stages.{s}.blocks.{i}.inner"] == ("width", 2, 1)
    assert len(found) == 12


def test_vgg_axes_and_bnnn_config():
    model, _ = build("vgg")
    assert summary(model) == {
        "features.2": ("width", 2, 1),
        "features.4": ("width", 2, 1),
        "classifier.0": ("width", 2, 1),
    }
    assert isinstance(model.features[0][0], nn.Conv2d)  # the first conv is plain
    torch.manual_seed(0)
    bnnn = VGG().eval()
    assert bnnn.cfg == VGG_CONFIGS["11-wide"]
    found = axes(bnnn)
    nested = [2, 4, 5, 7, 8, 10, 11]
    assert list(found) == [f"features.{i}" for i in nested] + ["classifier.0"]
    assert all(a.size == 32 and a.always_on == 1 for a in found.values())
    assert [a.block_size for a in found.values()] == [6, 12, 12, 24, 24, 24, 24, 8]
    assert bnnn.classifier[1].in_features == 256
    with torch.no_grad(), use(bnnn, smallest(bnnn)):
        assert bnnn(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_bits_axis_is_shared_by_all_quantized_layers():
    model, _ = build("resnet-bits")
    found = axes(model)
    assert found["bits"].kind == "bits" and found["bits"].size == 2
    quantizers = [o for n, o in axis_owners(model) if n == "bits"]
    widths = [o for n, o in axis_owners(model) if found[n].kind == "width"]
    # stem, 2 × 2 branch convs in stage 0, shortcut + 2 branch convs in stage 1
    assert len(quantizers) == len(widths) == 8


# -- sub-networks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_int_counts_equal_prefix_tensor_masks(name):
    model, x = build(name)
    configs = [full(model), smallest(model), *random_configs(model, 6, seed=len(name))]
    with torch.no_grad():
        for config in configs:
            with use(model, config):
                sliced = model(x)
            with masked(model, prefix_masks(model, config)):
                scaled = model(x)
            assert sliced.shape == (5, 3)
            assert_close(sliced, scaled, scale=10)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_count_of_every_axis_runs(name):
    model, x = build(name)
    outputs = set()
    with torch.no_grad():
        for base in (full(model), smallest(model)):
            for axis_name, axis in axes(model).items():
                for count in range(axis.always_on, axis.size + 1):
                    with use(model, base | {axis_name: count}):
                        out = model(x)
                    assert out.shape == (5, 3) and torch.isfinite(out).all()
                    outputs.add(round(float(out.sum()), 4))
    assert len(outputs) > 1  # the counts do change the network


def test_dropped_residual_blocks_do_not_matter():
    model, x = build("resnet")
    config = full(model) | {"stages.1": 1}
    with torch.no_grad(), use(model, config):
        before = model(x)
        for block in model.stages[1].blocks[1:]:
            for p in block.parameters():
                p.add_(1.0)
        assert_close(model(x), before)
        for p in model.stages[1].blocks[0].parameters():
            p.add_(0.1)
        assert not torch.allclose(model(x), before)


def test_dropped_paths_do_not_matter():
    model, x = build("resnext")
    with torch.no_grad(), use(model, {"stages.1.blocks.1.paths": 1}):
        before = model(x)
        paths = model.stages[1].blocks[1]
        for branch in paths.branches[1:]:
            for p in branch.parameters():
                p.mul_(-3.0)
        assert_close(model(x), before)
        for p in paths.branches[0].parameters():
            p.mul_(-3.0)
        assert not torch.allclose(model(x), before)


def test_dropped_channels_do_not_matter():
    model, x = build("vgg")
    conv = model.features[2]
    nxt = model.features[4]
    kept = conv.axis_block_size  # one group kept
    with torch.no_grad(), use(model, {"features.2": 1}):
        before = model(x)
        conv.affine.weight[kept:] += 5.0
        conv.norm.bias[kept:] += 5.0
        nxt.affine.weight[:, kept:] += 5.0  # inputs from dropped channels
        assert_close(model(x), before)
        conv.affine.weight[:kept] += 0.5
        assert not torch.allclose(model(x), before)


def test_shared_width_axis_drops_channels_everywhere():
    model, x = build("resnet")
    with torch.no_grad(), use(model, {"stages.0.width": 1}):
        before = model(x)
        stage_out = model.stages[0](model.stem(x))
        assert stage_out.shape[1] == 2  # one group of two channels
        for owner in [o for n, o in axis_owners(model) if n == "stages.0.width"]:
            owner.affine.weight[2:] += 3.0
        assert_close(model(x), before)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_gradients_reach_every_tensor_mask(name):
    model, x = build(name)
    torch.manual_seed(1)
    masks = {
        axis_name: torch.empty(axis.size).uniform_(0.3, 0.9).requires_grad_()
        for axis_name, axis in axes(model).items()
    }
    with masked(model, masks):
        model(x).square().sum().backward()
    for axis_name, mask in masks.items():
        axis = axes(model)[axis_name]
        if axis.orderable == 0:  # e.g. a one-block stage: nothing to scale
            continue
        orderable = mask.grad[axis.always_on :]
        assert torch.isfinite(mask.grad).all()
        assert orderable.abs().sum() > 0, axis_name


@pytest.mark.parametrize("name", ["convnet", "resnet", "resnext", "vgg-bits"])
def test_models_train(name):
    model, x = build(name)
    model.train()
    y = torch.tensor([0, 1, 2, 0, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "word"),
    [
        (lambda: ConvNet(3, 1, (4, 6), groups=4), "groups"),
        (lambda: ConvNet(3, 1, (4, 8), groups=4, always_on=5), "always_on"),
        (lambda: ConvNet(3, 1, (4, 8), groups=4, bits=0), "bits"),
        (lambda: ConvNet(3, 1, (4, 8), groups=4, bits=17), "bits"),
        (lambda: ConvNet(0, 1), "num_classes"),
        (lambda: ConvNet(3, 1, ()), "channels"),
        (lambda: ConvNet(3, 1, (4, 8), hidden=6, groups=4), "groups"),
        (lambda: ResNet(3, 1, (4, 8), (2,)), "depths"),
        (lambda: ResNet(3, 1, (4, 8), (2, 0)), r"depths\[1\]"),
        (lambda: ResNet(3, 1, (4, 6), (1, 1), groups=4), "groups"),
        (lambda: ResNet(3, 1, (4, 8), (1, 1), groups=4, always_on=-1), "always_on"),
        (lambda: ResNet(3, 1, (4, 8), (1, 1), groups=4, bits=2.0), "bits"),
        (lambda: ResNeXt(3, 1, (4, 8), (1, 1), groups=4, cardinality=0), "cardinality"),
        (
            lambda: ResNeXt(3, 1, (4, 8), (1, 1), groups=4, cardinality=2, paths_always_on=3),
            "paths_always_on",
        ),
        (lambda: ResNeXt(3, 1, (4, 8), (1, 1), groups=4, path_width=0), "path_width"),
        (lambda: VGG(3, 1, "12"), "cfg"),
        (lambda: VGG(3, 1, [8, "X"]), r"cfg\[1\]"),
        (lambda: VGG(3, 1, ["M"]), "cfg"),
        (lambda: VGG(3, 1, "tiny", head_width=20, groups=8), "groups"),
        (lambda: VGG(3, 1, "tiny", groups=0), "groups"),
        (lambda: MLP(4, [8], 2, groups=4, bits=0), "bits"),
        (lambda: MLP(True, [8], 2), "in_features"),
        (lambda: ResNet(3, 1, "ab"), "widths"),
        (lambda: ResNet(3, 1, 8), "widths"),
        (lambda: ConvNet(3, 1, (4, 8), groups=2.0), "groups"),
    ],
)
def test_model_validation_names_the_argument(factory, word):
    with pytest.raises((ValueError, TypeError), match=word):
        factory()


def test_models_accept_always_on_zero():
    torch.manual_seed(0)
    model = ResNet(3, 1, (4, 8), (2, 2), groups=2, always_on=0).eval()
    x = torch.randn(2, *IMAGE)
    with torch.no_grad(), use(model, smallest(model)):
        out = model(x)
    assert_close(out, model.head.bias.expand(2, 3))


def test_numpy_integers_are_accepted():
    import numpy as np

    model = ResNet(np.int64(3), 1, np.array([4, 8]), (1, 1), groups=np.int64(2))
    assert model.widths == (4, 8) and axes(model)["stages.0.width"].size == 2
    vgg = VGG(3, 1, [np.int64(8), "M", 16], head_width=8, groups=2)
    assert vgg.cfg == [8, "M", 16]
