"""Safe output files and standalone exports of sub-networks."""

from __future__ import annotations

import json
import os

import pytest
import torch

from bayes_nest.outputs import check_output, export_paths, export_subnet, write_atomic
from bayes_nest.pipeline import ModelSpec, fit
from bayes_nest.testing import assert_close


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_atomic(path, "one")
    write_atomic(path, b"two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["a.json"]


def test_check_output(tmp_path):
    existing = tmp_path / "x"
    existing.write_text("keep")
    with pytest.raises(FileExistsError, match="pass --force"):
        check_output(existing)
    check_output(existing, force=True)
    check_output(tmp_path / "new" / "deeper" / "y")  # parents are created when writing
    assert export_paths("a/b.pt", onnx=True) == {
        "module": "a/b.pt",
        "program": "a/b.pt2",
        "info": "a/b.json",
        "onnx": "a/b.onnx",
    }


@pytest.mark.parametrize("method", ["fn3", "bnnn"])
def test_export_subnet_files_compute_the_sub_network(method, digits, tmp_path):
    spec = ModelSpec("mlp", {"hidden": [16, 16], "groups": 4, "norm": "batch"})
    model = fit(spec, digits, method, epochs=1, progress=False)
    config = {"hidden.0": 2, "hidden.1": 3}
    paths = export_subnet(model, config, tmp_path / "s.pt", calibration=digits.train)
    x = digits.test.x[:30]
    plain = torch.load(paths["module"], weights_only=False)
    program = torch.export.load(paths["program"]).module()
    assert_close(plain(x), program(x), scale=10)  # eager vs torch.export's graph
    if method == "fn3":  # BN statistics recalibrated on the training inputs for the config
        from bayes_nest.subnet import recalibrate_batchnorm

        recalibrate_batchnorm(model.module, digits.train.x, config)
        expected = model.predict(x, config)[0]
        assert_close(torch.softmax(plain(x), -1), expected, scale=10)  # sliced weights
    info = json.loads(open(paths["info"]).read())
    assert info["config"] == config and info["method"] == method
    assert info["task"] == "classification"
    assert_close(info["mean"], model.mean, dtype=torch.float32)  # through JSON text
    assert len(info["std"]) == 64
    with pytest.raises(FileExistsError, match="s.pt"):
        export_subnet(model, config, tmp_path / "s.pt")


def test_export_to_onnx(digits, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    model = fit(
        ModelSpec("mlp", {"hidden": [8], "groups": 2}), digits, "fn3", epochs=1, progress=False
    )
    paths = export_subnet(model, {"hidden.0": 1}, tmp_path / "o.pt", onnx=True)
    graph = onnx.load(paths["onnx"])
    onnx.checker.check_model(graph)
    x = digits.test.x[:5]
    (logits,) = ReferenceEvaluator(graph).run(None, {graph.graph.input[0].name: x.numpy()})
    expected = torch.log(model.predict(x, {"hidden.0": 1})[0])
    got = torch.log_softmax(torch.as_tensor(logits), -1)
    assert torch.allclose(got, expected, atol=1e-4)
