"""Export: standalone plain modules that compute exactly what the masked network computes."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from bayes_nest.models import MLP, ConvNet, ResNet, ResNeXt, UNet
from bayes_nest.nn import NestedConv2d, NestedLinear, NestedModule, SlicedLinear, axes, masked
from bayes_nest.nn.bayesian import deterministic_weights, to_bayesian_
from bayes_nest.nn.bits import NestedQuantizer
from bayes_nest.subnet import ExportError, export, recalibrate_batchnorm, use
from bayes_nest.testing import assert_close
from tests.subnet.subnet_testing import model_zoo, random_configs, randomize_norms

ZOO = model_zoo()


def _reference(model: nn.Module, config, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), use(model, config):
        return model(x)


def _assert_plain(module: nn.Module) -> None:
    for path, m in module.named_modules():
        assert type(m).__module__.split(".")[0] != "bayes_nest", (path, type(m))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_export_equals_masked_network(name):
    model, shape = ZOO[name]
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    for config in random_configs(model, 2, seed=2):
        exported = export(model, config, input_shape=shape)
        _assert_plain(exported)
        assert not exported.training
        with torch.no_grad():
            out = exported(x)
        assert_close(out, _reference(model, config, x), scale=10)


def test_export_leaves_source_model_untouched():
    model, shape = ZOO["resnet"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export(model, random_configs(model, 1)[-1], input_shape=shape)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(owner.mask is None for owner in model.modules() if isinstance(owner, NestedModule))


def test_sliced_shapes_of_exported_mlp():
    net = MLP(10, [16, 32], 3, groups=4)
    exported = export(net, {"hidden.0": 1, "hidden.1": 3}, input_shape=(10,))
    linears = [m for m in exported.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 4), (4, 24), (24, 3)]


@pytest.mark.parametrize("name", ["convnet_bits", "resnext"])
def test_torch_export_accepts_exported_model(name):
    model, shape = ZOO[name]
    exported = export(model, random_configs(model, 1, seed=5)[-1], input_shape=shape)
    x = torch.randn(2, *shape)
    program = torch.export.export(exported, (x,))
    assert_close(program.module()(x), exported(x), scale=10)


def _onnx_matches_subnetwork(model: nn.Module, config, shape) -> None:
    """Export ``config`` to ONNX, run it in onnxruntime and compare with the masked network."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    exported = export(model, config, input_shape=shape)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(3))
    buffer = io.BytesIO()
    try:
        torch.onnx.export(exported, (x,), buffer, dynamo=True, verbose=False)
    except Exception:  # noqa: BLE001 - fall back to the legacy exporter
        buffer = io.BytesIO()
        torch.onnx.export(exported, (x,), buffer, dynamo=False)
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    # Different kernels (onnxruntime vs torch) on the same float32 data: at most 1e-5 apart.
    assert_close(torch.from_numpy(out), _reference(model, config, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["mlp_bits", "convnet", "resnet", "resnext", "vgg", "unet"])
def test_onnx_runtime_computes_the_subnetwork_of_every_model_kind(name):
    if name == "unet":
        torch.manual_seed(0)
        model, shape = randomize_norms(UNet(2, 2, (4, 8), groups=2)).eval(), (2, 8, 8)
    else:
        model, shape = ZOO[name]
    _onnx_matches_subnetwork(model, random_configs(model, 1, seed=4)[-1], shape)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_onnx_runtime_computes_every_model_and_config(name):
    model, shape = ZOO[name]
    for config in random_configs(model, 1, seed=8):
        _onnx_matches_subnetwork(model, config, shape)


def test_saved_model_loads_without_package_classes():
    model, shape = ZOO["resnet"]
    exported = export(model, random_configs(model, 1, seed=6)[-1], input_shape=shape)
    buffer = io.BytesIO()
    torch.save(exported, buffer)
    assert b"bayes_nest" not in buffer.getvalue()
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(2, *shape)
    assert_close(loaded(x), exported(x))


# ----------------------------------------------------------------------------- block scales


def _scaled_reference(model, config, scales, x):
    """Masked network with tensor masks scale · 1[i < n] on the scaled axes."""
    masks = dict(config)
    for name, scale in scales.items():
        keep = (torch.arange(scale.numel()) < config[name]).float()
        masks[name] = scale * keep
    with torch.no_grad(), masked(model, masks):
        return model(x)


@pytest.mark.parametrize(
    "kwargs, sign",
    [
        ({"activation": "relu"}, 1.0),  # folded into the weights
        ({"activation": "relu", "norm": "batch"}, 1.0),  # folded into the batch-norm affine
        ({"activation": "relu"}, -1.0),  # negative scales cannot pass a ReLU: kept as a node
        ({"activation": "gelu", "norm": "batch"}, 1.0),  # non-homogeneous: kept as a node
    ],
)
def test_block_scales_fold_into_width_layers(kwargs, sign):
    torch.manual_seed(0)
    net = randomize_norms(MLP(6, [8, 12], 3, groups=4, **kwargs)).eval()
    config = {"hidden.0": 3, "hidden.1": 2}
    scales = {"hidden.0": sign * torch.rand(4) + 0.1, "hidden.1": torch.rand(4) + 0.1}
    exported = export(net, config, input_shape=(6,), block_scales=scales)
    _assert_plain(exported)
    x = torch.randn(7, 6)
    assert_close(exported(x), _scaled_reference(net, config, scales, x), scale=10)


def test_block_scales_on_depth_and_paths():
    torch.manual_seed(0)
    for model, shape in (
        (ResNet(4, 3, (8,), (3,), groups=2), (3, 6, 6)),
        (ResNeXt(4, 3, (8,), (2,), cardinality=3, path_width=4, groups=2), (3, 6, 6)),
    ):
        randomize_norms(model).eval()
        found = axes(model)
        config = {name: a.size - 1 if a.size > a.always_on else a.size for name, a in found.items()}
        scales = {
            name: torch.rand(a.size) + 0.2
            for name, a in found.items()
            if a.kind in ("depth", "paths")
        }
        exported = export(model, config, input_shape=shape, block_scales=scales)
        x = torch.randn(3, *shape)
        assert_close(exported(x), _scaled_reference(model, config, scales, x), scale=10)


def test_block_scales_validation(tiny_mlp):
    net = tiny_mlp(bits=4)
    with pytest.raises(ValueError, match="unknown axis"):
        export(net, {}, input_shape=(6,), block_scales={"nope": torch.ones(4)})
    with pytest.raises(ValueError, match="shape"):
        export(net, {}, input_shape=(6,), block_scales={"hidden.0": torch.ones(3)})
    with pytest.raises(ValueError, match="bits"):
        export(net, {}, input_shape=(6,), block_scales={"bits": torch.ones(4)})
    with pytest.raises(ValueError, match="finite"):
        export(net, {}, input_shape=(6,), block_scales={"hidden.0": torch.full((4,), torch.nan)})


# ----------------------------------------------------------------------------- other modules


class UserNet(nn.Module):
    """A user module mixing nested layers, plain layers and its own forward logic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = NestedConv2d(2, 8, 3, padding=1, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = NestedLinear(8, 8, groups=2, activation="tanh")
        self.head = SlicedLinear(8, 3)
        self.extra = nn.Linear(3, 3)

    def forward(self, x):
        h = self.pool(self.conv(x)).flatten(1)
        return self.extra(self.head(self.fc(h))) * 2.0


def test_user_modules_keep_their_forward():
    torch.manual_seed(0)
    net = randomize_norms(UserNet()).eval()
    config = {"conv": 2, "fc": 1}
    exported = export(net, config, input_shape=(2, 5, 5))
    assert type(exported) is UserNet
    assert isinstance(exported.conv[0], nn.Conv2d) and exported.conv[0].out_channels == 4
    _assert_plain(exported.conv)
    x = torch.randn(4, 2, 5, 5)
    assert_close(exported(x), _reference(net, config, x), scale=10)


def test_activation_quantizer_is_exported_as_graph():
    torch.manual_seed(0)
    net = nn.Sequential(
        NestedLinear(5, 8, groups=4),
        NestedQuantizer(4, signed=False, axis_name="act_bits", clip=2.0),
        SlicedLinear(8, 2),
    ).eval()
    config = {"0": 3, "act_bits": 2}
    exported = export(net, config, input_shape=(5,))
    _assert_plain(exported)
    x = torch.randn(16, 5)
    assert_close(exported(x), _reference(net, config, x), scale=10)


def test_bayesian_model_exports_its_mean_network():
    torch.manual_seed(0)
    net = MLP(6, [8, 8], 3, groups=4)
    to_bayesian_(net)
    config = {"hidden.0": 1, "hidden.1": 3}
    exported = export(net, config, input_shape=(6,))
    _assert_plain(exported)
    x = torch.randn(4, 6)
    with deterministic_weights(net):
        expected = _reference(net, config, x)
    assert_close(exported(x), expected, scale=10)
    assert sum(p.numel() for p in exported.parameters()) == (6 * 2 + 2) + (2 * 6 + 6) + (6 * 3 + 3)


def test_calibration_data_recalibrates_exported_norms():
    torch.manual_seed(0)
    model, shape = ZOO["convnet"]
    config = random_configs(model, 1, seed=7)[-1]
    data = [torch.randn(16, *shape) for _ in range(3)]
    exported = export(model, config, input_shape=shape, calibration_data=data)
    # The same statistics result from recalibrating the nested model under the config.
    nested = model_zoo()["convnet"][0]
    recalibrate_batchnorm(nested, data, config)
    x = torch.randn(4, *shape)
    assert_close(exported(x), _reference(nested, config, x), scale=100)
    assert not exported.training


def test_shape_can_come_from_calibration_data_or_example(tiny_mlp):
    net = tiny_mlp()
    data = [(torch.randn(4, 6), torch.zeros(4))]
    a = export(net, {"hidden.0": 1}, calibration_data=data)
    b = export(net, {"hidden.0": 1}, example_input=torch.randn(2, 6))
    assert a[1][0].out_features == b[1][0].out_features == 2


class Mystery(NestedModule):
    axis_kind = "width"

    def __init__(self) -> None:
        super().__init__(size=2, always_on=1)

    def forward(self, x):
        return x


@pytest.mark.parametrize(
    "build, config, error, match",
    [
        (lambda: MLP(6, [8], 3, groups=4), {"hidden.9": 1}, ValueError, "unknown axis"),
        (lambda: MLP(6, [8], 3, groups=4), {"hidden.0": 5}, ValueError, "out of range"),
        (lambda: nn.Sequential(Mystery()), {}, ExportError, "Mystery"),
        (
            lambda: nn.Sequential(NestedLinear(6, 4, activation=lambda t: t * 2, groups=2)),
            {},
            ExportError,
            "activation",
        ),
        (
            lambda: nn.Sequential(NestedLinear(6, 4, groups=2, always_on=0), SlicedLinear(4, 2)),
            {"0": 0},
            ExportError,
            "no units",
        ),
    ],
)
def test_clear_errors(build, config, error, match):
    with pytest.raises(error, match=match):
        export(build(), config, input_shape=(6,))


def test_input_shape_required_where_the_layers_do_not_fix_it():
    with pytest.raises(ValueError, match="input_shape"):
        export(ConvNet(3, 1, (4,), groups=2), {})
    with pytest.raises(TypeError):
        export("not a module", {}, input_shape=(6,))
