"""Nested bit quantizers: exact truncation, nested grids, bit sums, straight-through gradients."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayes_nest.models import MLP
from bayes_nest.nn import (
    Axis,
    NestedConv2d,
    NestedLinear,
    NestedQuantizer,
    attach_weight_quantizers,
    axes,
    bit_planes,
    truncate,
)
from bayes_nest.testing import assert_close

K = 10


def grid_points():
    """Every K-bit cell j/2^K, entered at its left edge, middle and just below its right edge."""
    j = torch.arange(2**K, dtype=torch.float64)
    offsets = torch.tensor([0.0, 0.5, 1.0 - 2.0**-20], dtype=torch.float64)
    return j.repeat_interleave(3), (j.unsqueeze(1) + offsets).reshape(-1) / 2**K


# Exact comparisons below: dyadic grid points and sums of powers of two are represented exactly
# in float64, so truncation and bit sums involve no rounding.


def test_truncation_keeps_the_top_bits_exhaustively():
    j, x = grid_points()
    index = j.long()
    for c in range(K + 1):
        expected = (index >> (K - c)).double() / 2**c
        assert torch.equal(truncate(x, c), expected), c
    planes = bit_planes(x, K)
    for k in range(1, K + 1):
        assert torch.equal(planes[k - 1].long(), (index >> (K - k)) & 1), k


def test_truncation_is_the_prefix_bit_sum():
    _, x = grid_points()
    planes = bit_planes(x, K)
    weights = 2.0 ** -torch.arange(1, K + 1, dtype=torch.float64)
    for c in range(K + 1):
        bit_sum = (planes[:c] * weights[:c].unsqueeze(1)).sum(0)
        assert torch.equal(bit_sum, truncate(x, c))


def test_grids_are_nested_and_truncation_composes():
    torch.manual_seed(0)
    x = torch.rand(1000, dtype=torch.float64)
    for c, c_hi in itertools.combinations_with_replacement(range(K + 1), 2):
        assert torch.equal(truncate(truncate(x, c_hi), c), truncate(x, c))
    for c in range(1, 6):
        coarse = set(truncate(x, c).tolist())
        assert coarse <= set(truncate(x, c + 1).tolist())
        assert len(coarse) == 2**c


def test_rounding_grids_would_not_nest():
    # the test above can fail: DoReFa's rounding grids {k / (2^c - 1)} are not nested
    def grid(c):
        return {round(k / (2**c - 1), 12) for k in range(2**c)}

    assert not grid(2) <= grid(3)


def normalised(q, w):
    """Recover the [0, 1) value from a signed quantizer output."""
    a = w.abs().max()
    return (q / a + 1.0) / 2.0


@pytest.mark.parametrize("transform", ["linear", "tanh"])
def test_weight_levels_are_truncations_of_the_normalised_weight(transform):
    torch.manual_seed(1)
    w = torch.randn(300, dtype=torch.float64)
    w[:2] = torch.tensor([4.0, -4.0])  # the extremes
    quantizer = NestedQuantizer(6, transform=transform, offset=False).double()
    t = w if transform == "linear" else torch.tanh(w)
    x = (t / (2 * t.abs().max()) + 0.5).clamp(max=1 - 2.0**-6)
    outputs = {}
    for c in range(1, 7):
        quantizer.mask = c
        outputs[c] = normalised(quantizer(w), w)
        assert_close(outputs[c], truncate(x, c), rtol=0, atol=1e-12)
    for c, c_hi in itertools.combinations(range(1, 7), 2):
        assert_close(truncate(outputs[c_hi], c), outputs[c], rtol=0, atol=1e-12)
    # the maximum maps to the top level below 1, the minimum to 0
    assert normalised(quantizer(w), w)[0] == pytest.approx(1 - 2.0**-6)
    assert normalised(quantizer(w), w)[1] == 0.0


def test_mid_offset_gives_a_symmetric_grid():
    torch.manual_seed(2)
    w = torch.randn(200, dtype=torch.float64)
    quantizer = NestedQuantizer(4, transform="linear").double()
    a = w.abs().max()
    for c in range(1, 5):
        quantizer.mask = c
        q = quantizer(w)
        assert_close(quantizer(-w), -q)  # odd symmetry
        levels = torch.unique(q)
        assert len(levels) <= 2**c
        expected = a * ((2 * torch.arange(2**c, dtype=torch.float64) + 1) / 2**c - 1)
        assert all(torch.isclose(expected, v).any() for v in levels)
        # without offset the value is the bin's lower edge: the offset adds half a step
        quantizer.offset = False
        assert_close(q - quantizer(w), a * 2.0**-c * torch.ones_like(w))
        quantizer.offset = True


def test_quantization_error_bounded_by_step():
    torch.manual_seed(3)
    w = torch.randn(1000)
    quantizer = NestedQuantizer(8, transform="linear")
    a = w.abs().max()
    for c in range(1, 9):
        quantizer.mask = c
        assert (quantizer(w) - w).abs().max() <= a * 2.0**-c + 1e-6


def test_straight_through_gradients():
    torch.manual_seed(4)
    w = torch.randn(50, requires_grad=True)
    NestedQuantizer(3, transform="linear")(w).sum().backward()
    assert_close(w.grad, torch.ones(50))
    w.grad = None
    NestedQuantizer(3, transform="tanh")(w).sum().backward()
    t = torch.tanh(w.detach())
    expected = w.detach().abs().max() * (1 - t**2) / t.abs().max()
    assert_close(w.grad, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"offset": False},
        {"transform": "linear"},
        {"signed": False, "clip": 2.0},
        {"signed": False, "offset": True},
        {"always_on": 0},
    ],
)
def test_prefix_tensor_mask_equals_truncation(kwargs):
    torch.manual_seed(5)
    quantizer = NestedQuantizer(5, **kwargs)
    v = torch.randn(400)
    if not quantizer.signed:
        v = v.abs() * 1.5
    for c in range(quantizer.axis_always_on, 6):
        quantizer.mask = c
        hard = quantizer(v)
        quantizer.mask = torch.cat([torch.ones(c), torch.zeros(5 - c)])
        assert_close(quantizer(v), hard)  # the bit-plane sum vs direct truncation
    quantizer.mask = None
    full = quantizer(v)
    quantizer.mask = 5
    assert torch.equal(quantizer(v), full)  # exact: mask None means the full count, same path


def oracle_bit_sum(x, m, offset):
    """Σ_k m_k β_k 2^-k (+ the soft offset) by integer arithmetic, one value at a time."""
    bits = len(m)
    out = []
    for value in x.tolist():
        index = int(value * 2**bits)
        total = sum(m[k - 1] * ((index >> (bits - k)) & 1) * 2.0**-k for k in range(1, bits + 1))
        if offset:
            padded = [1.0, *m, 0.0]
            total += sum((padded[k] - padded[k + 1]) * 2.0 ** -(k + 1) for k in range(bits + 1))
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("offset", [False, True])
def test_soft_mask_is_a_weighted_bit_sum(offset):
    torch.manual_seed(6)
    x = torch.rand(300, dtype=torch.float64) * (1 - 2.0**-4)
    m = [1.0, 0.8, 0.3, 0.05]
    quantizer = NestedQuantizer(4, signed=False, offset=offset).double()
    quantizer.mask = torch.tensor(m, dtype=torch.float64)
    assert_close(quantizer(x), oracle_bit_sum(x, m, offset))


@pytest.mark.parametrize("offset", [False, True])
def test_gradient_reaches_bit_mask(offset):
    torch.manual_seed(7)
    w = torch.randn(64, dtype=torch.float64)
    quantizer = NestedQuantizer(4, transform="linear", offset=offset).double()
    m = torch.tensor([1.0, 0.7, 0.4, 0.2], dtype=torch.float64, requires_grad=True)
    quantizer.mask = m
    quantizer(w).sum().backward()
    a = w.abs().max()
    x = (w / (2 * a) + 0.5).clamp(max=1 - 2.0**-4)
    planes = bit_planes(x, 4)
    k = torch.arange(1, 5, dtype=torch.float64)
    expected = 2 * a * (planes.sum(1) * 2.0**-k - (len(w) * 2.0 ** -(k + 1) if offset else 0))
    assert_close(m.grad, expected)


def test_unsigned_activation_quantizer():
    quantizer = NestedQuantizer(3, signed=False, clip=2.0, axis_name=None)
    v = torch.tensor([-1.0, 0.0, 0.3, 1.0, 1.99, 5.0], requires_grad=True)
    quantizer.mask = 2
    out = quantizer(v)
    assert_close(out, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.5, 1.5]))
    out.sum().backward()
    assert_close(v.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0]))
    learned = NestedQuantizer(3, signed=False, learn_clip=True)
    assert isinstance(learned.clip, nn.Parameter)
    learned(torch.tensor([0.3, 4.0])).sum().backward()
    assert learned.clip.grad is not None and learned.clip.grad != 0


def test_zero_weights_stay_finite():
    out = NestedQuantizer(4)(torch.zeros(5))
    assert torch.all(torch.isfinite(out)) and torch.all(out.abs() < 1e-30)


def test_quantizer_axis():
    assert axes(NestedQuantizer(4)) == {"bits": Axis("bits", "bits", 4, 1, 1)}
    assert list(axes(nn.Sequential(NestedQuantizer(4, axis_name=None)))) == ["0"]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "word"),
    [
        ((0,), {}, ValueError, "bits"),
        ((17,), {}, ValueError, "bits"),
        ((2.0,), {}, TypeError, "bits"),
        ((True,), {}, TypeError, "bits"),
        ((4,), {"always_on": 5}, ValueError, "always_on"),
        ((4,), {"always_on": -1}, ValueError, "always_on"),
        ((4,), {"transform": "round"}, ValueError, "transform"),
        ((4,), {"signed": False, "clip": 0.0}, ValueError, "clip"),
    ],
)
def test_quantizer_validation(args, kwargs, error, word):
    with pytest.raises(error, match=word):
        NestedQuantizer(*args, **kwargs)


def test_attach_weight_quantizers():
    net = nn.Sequential(
        NestedConv2d(1, 4, 3, groups=2), nn.Flatten(), NestedLinear(4, 6, groups=3), nn.Linear(6, 2)
    )
    quantizers = attach_weight_quantizers(net, 3)
    assert len(quantizers) == 2 and quantizers[0] is not quantizers[1]
    assert net[0].weight_quantizer is quantizers[0] and net[2].weight_quantizer is quantizers[1]
    assert axes(net)["bits"] == Axis("bits", "bits", 3, 1, 1)
    attach_weight_quantizers(net, 3, axis_name=None)
    names = [n for n, a in axes(net).items() if a.kind == "bits"]
    assert names == ["0.weight_quantizer", "2.weight_quantizer"]
    with pytest.raises(ValueError, match="no width layers"):
        attach_weight_quantizers(nn.Linear(2, 2), 4)
    with pytest.raises(ValueError, match="bits"):
        attach_weight_quantizers(net, 0)


def test_mlp_computes_with_quantized_weights():
    torch.manual_seed(8)
    net = MLP(5, [8], 3, groups=4, bits=4)
    layer = net.hidden[0]
    x = torch.randn(7, 5)
    for c in range(1, 5):
        layer.weight_quantizer.mask = c
        layer.mask = 3
        reference = NestedQuantizer(4)
        reference.mask = c
        w_q = reference(layer.affine.weight)
        hidden = F.relu(F.linear(x, w_q[:6], layer.affine.bias[:6]))
        expected = F.linear(hidden, net.output.weight[:, :6], net.output.bias)
        assert_close(net(x), expected)
