"""Latency tables: interpolation, dropped layers, persistence (never asserting on wall time)."""

from __future__ import annotations

import math

import pytest
import torch

from bayes_nest.models import MLP, ConvNet, ResNet
from bayes_nest.subnet import LatencyTable, full, layer_costs, measure_latency, smallest
from bayes_nest.testing import assert_close


def _synthetic(table: LatencyTable) -> LatencyTable:
    """Replace measured times by t = 1e-6 · (in + 2·out + in·out), exact under bilinear
    interpolation."""
    for site in table.sites.values():
        site["seconds"] = [
            [1e-6 * (i + 2 * o + i * o) for o in site["out_levels"]] for i in site["in_levels"]
        ]
    table.overhead = 5e-6
    return table


@pytest.fixture(scope="module")
def mlp_table():
    torch.manual_seed(0)
    net = MLP(6, [16, 24], 3, groups=4)
    threads = torch.get_num_threads()
    table = LatencyTable.measure(net, (6,), levels=2, warmup=1, repeats=2, progress=False)
    assert torch.get_num_threads() == threads  # restored
    return net, table


def test_measured_table_is_complete_and_positive(mlp_table):
    net, table = mlp_table
    assert set(table.sites) == {"hidden.0.affine", "hidden.1.affine", "output"}
    for site in table.sites.values():
        assert len(site["seconds"]) == len(site["in_levels"])
        assert all(len(row) == len(site["out_levels"]) for row in site["seconds"])
        assert all(t > 0 and math.isfinite(t) for row in site["seconds"] for t in row)
    assert table.sites["hidden.0.affine"]["out_levels"] == [4, 8, 16]
    assert table.overhead >= 0.0
    assert table(full(net)) > 0


def test_prediction_is_exact_for_bilinear_layer_times(mlp_table):
    net, table = mlp_table
    table = _synthetic(table)
    for config in ({"hidden.0": 1, "hidden.1": 4}, {"hidden.0": 3, "hidden.1": 2}, full(net)):
        expected = 5e-6 + sum(
            1e-6 * (c.in_units + 2 * c.out_units + c.in_units * c.out_units)
            for c in layer_costs(net, config, (6,))
            if c.op == "linear"
        )
        assert_close(table(config), expected)


def test_save_and_load(mlp_table, tmp_path):
    net, table = mlp_table
    table.save(tmp_path / "lat.json")
    loaded = LatencyTable.load(tmp_path / "lat.json", net)
    assert loaded(smallest(net)) == table(smallest(net))
    assert loaded.meta["repeats"] == 2
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="latency table"):
        LatencyTable.load(tmp_path / "bad.json", net)


def test_dropped_residual_blocks_cost_nothing():
    torch.manual_seed(0)
    net = ResNet(3, 3, (8,), (3,), groups=2).eval()
    table = _synthetic(
        LatencyTable.measure(net, (3, 4, 4), levels=1, warmup=0, repeats=1, progress=False)
    )
    deep = table({"stages.0": 3})
    shallow = table({"stages.0": 1})
    block = [s for p, s in table.sites.items() if p.startswith("stages.0.blocks.2.")]
    per_block = sum(1e-6 * (s["in"] + 2 * s["out"] + s["in"] * s["out"]) for s in block)
    assert len(block) == 2 and deep - table({"stages.0": 2}) == pytest.approx(per_block)
    assert shallow < deep


def test_unknown_layer_and_argument_errors(mlp_table):
    net, table = mlp_table
    other = MLP(6, [16, 24, 8], 3, groups=4)
    with pytest.raises(ValueError, match="not in the latency table"):
        LatencyTable(other, (6,), table.sites)(full(other))
    with pytest.raises(ValueError, match="levels"):
        LatencyTable.measure(net, (6,), levels=0, progress=False)
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(net, (6,), repeats=0)
    with pytest.raises(ValueError, match="input_shape"):
        measure_latency(net, ())


def test_leaf_modules_such_as_pooling_are_timed_per_call():
    torch.manual_seed(0)
    net = ConvNet(3, 1, (8, 16), groups=4).eval()
    table = LatencyTable.measure(net, (1, 6, 6), levels=2, warmup=0, repeats=1, progress=False)
    assert {"pool", "pool#1"} <= set(table.sites)  # one module, called twice at two shapes
    assert table.sites["pool"]["spatial"] == [6, 6] and table.sites["pool#1"]["spatial"] == [3, 3]
    assert table.sites["pool#1"]["in_levels"] == [4, 8, 16]
    table = _synthetic(table)
    # ops are timed over their input channels only: t = 1e-6 · in for a pooling site
    small = {"convs.0": 1, "convs.1": 1}
    wide = {"convs.0": 1, "convs.1": 4}
    convs = {p: s for p, s in table.sites.items() if s["kind"] != "op"}
    assert set(convs) == {"convs.0.affine", "convs.1.affine", "head"}

    def t(i, o):
        return 1e-6 * (i + 2 * o + i * o)

    difference = (
        (t(2, 16) - t(2, 4))  # convs.1: 2 -> 4 or 16 channels
        + 1e-6 * (16 - 4)  # second pooling call
        + (t(16, 3) - t(4, 3))  # head
    )
    assert_close(table(wide) - table(small), difference)
