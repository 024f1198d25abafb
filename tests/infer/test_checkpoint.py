import json
import os
import random
from collections import OrderedDict

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from bayes_nest.infer import checkpoint as ckpt
from bayes_nest.infer.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_info,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))


def _train(net, opt, steps):
    for _ in range(steps):
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "run" / "model.ckpt"
    save_checkpoint(path, {"w": torch.arange(1000.0), "config": {"lr": 0.1}}, kind="fn3")
    return path


def test_round_trip_module_and_optimizer(tmp_path):
    torch.manual_seed(0)
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    _train(net, opt, 3)
    config = OrderedDict(hidden=[8], betas=(0.9, 0.99), note=None, flag=True, dtype=torch.float32)
    path = save_checkpoint(
        tmp_path / "a" / "b" / "c.ckpt",
        {"model": net.state_dict(), "optim": opt.state_dict(), "config": config},
        kind="fn3",
    )
    assert path.is_file() and os.listdir(path.parent) == ["c.ckpt"]
    out = load_checkpoint(path, kind="fn3")
    assert out["config"] == config and type(out["config"]) is OrderedDict
    net2 = _net()
    opt2 = torch.optim.Adam(net2.parameters(), lr=1.0)
    net2.load_state_dict(out["model"])
    opt2.load_state_dict(out["optim"])
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert opt2.param_groups[0]["lr"] == 1e-2
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        s, t = opt.state[p], opt2.state[q]
        assert torch.equal(s["exp_avg"], t["exp_avg"]) and torch.equal(s["step"], t["step"])
    info = checkpoint_info(path)
    assert info["format_version"] == FORMAT_VERSION and info["kind"] == "fn3"
    assert {"package_version", "torch_version", "sha256", "payload_bytes"} <= set(info)


def test_resumed_training_is_bitwise_reproducible(tmp_path):
    torch.manual_seed(1)
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    _train(net, opt, 2)
    payload = {"model": net.state_dict(), "optim": opt.state_dict(), "rng": rng_state()}
    path = save_checkpoint(tmp_path / "resume.ckpt", payload, kind="fn3")
    _train(net, opt, 3)  # uninterrupted run
    torch.manual_seed(99)  # a "new process" with different random state
    resumed = load_checkpoint(path)
    net2 = _net()
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1, momentum=0.9)
    net2.load_state_dict(resumed["model"])
    opt2.load_state_dict(resumed["optim"])
    set_rng_state(resumed["rng"])
    _train(net2, opt2, 3)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)


def _draws():
    return (
        torch.randn(5),
        np.random.standard_normal(3),  # noqa: NPY002
        random.random(),
        random.gauss(0, 1),
        pyro.sample("z", dist.Normal(torch.zeros(4), 1.0)),
    )


def test_rng_state_round_trip_through_file(tmp_path):
    pyro.set_rng_seed(3)
    np.random.standard_normal(1)  # noqa: NPY002  (leave a cached gaussian in numpy's state)
    random.gauss(0, 1)  # and one in Python's
    state = rng_state()
    save_checkpoint(tmp_path / "rng.ckpt", {"rng": state}, kind="rng")
    first = _draws()
    pyro.set_rng_seed(123)
    assert not torch.equal(_draws()[0], first[0])
    set_rng_state(load_checkpoint(tmp_path / "rng.ckpt", kind="rng")["rng"])
    again = _draws()
    assert torch.equal(first[0], again[0]) and torch.equal(first[4], again[4])
    assert np.array_equal(first[1], again[1]) and first[2:4] == again[2:4]
    set_rng_state(state)  # the in-memory state works too
    assert torch.equal(_draws()[0], first[0])
    with pytest.raises(ValueError, match="missing"):
        set_rng_state({"torch": state["torch"]})


def test_crash_during_replace_keeps_old_file(saved, monkeypatch):
    def crash(*args):
        raise OSError("disk on fire")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        save_checkpoint(saved, {"w": torch.zeros(3)}, kind="fn3")
    monkeypatch.undo()
    assert os.listdir(saved.parent) == [saved.name]
    assert torch.equal(load_checkpoint(saved)["w"], torch.arange(1000.0))


def test_crash_mid_write_keeps_old_file(saved, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, {"w": torch.zeros(3)}, kind="fn3")
    monkeypatch.undo()
    assert os.listdir(saved.parent) == [saved.name]
    assert torch.equal(load_checkpoint(saved)["w"], torch.arange(1000.0))


def test_overwrite_replaces_content(saved):
    save_checkpoint(saved, {"w": torch.ones(2)}, kind="bnnn")
    assert torch.equal(load_checkpoint(saved, kind="bnnn")["w"], torch.ones(2))
    assert os.listdir(saved.parent) == [saved.name]


@pytest.mark.parametrize("keep", [5, 30, 200, -1])
def test_truncated_file(saved, keep):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:keep])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(saved)


@pytest.mark.parametrize("where", ["payload", "end", "kind"])
def test_flipped_byte_is_detected(saved, where):
    raw = bytearray(saved.read_bytes())
    pos = {"payload": len(raw) // 2, "end": len(raw) - 1, "kind": raw.index(b'"fn3"') + 3}[where]
    raw[pos] ^= 0x01
    saved.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(saved)


def test_appended_bytes_are_detected(saved):
    saved.write_bytes(saved.read_bytes() + b"\x00")
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(saved)


def test_wrong_kind(saved):
    with pytest.raises(CheckpointError, match="holds a 'fn3' checkpoint, expected 'bnnn'"):
        load_checkpoint(saved, kind="bnnn")


def test_newer_format_version(saved):
    raw = saved.read_bytes()
    magic_end = raw.index(b"\n") + 1
    header_end = raw.index(b"\n", magic_end)
    meta = json.loads(raw[magic_end:header_end])
    meta["format_version"] = FORMAT_VERSION + 1
    saved.write_bytes(raw[:magic_end] + json.dumps(meta).encode() + raw[header_end:])
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        load_checkpoint(saved)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    plain = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), plain)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for path in (text, plain, empty):
        with pytest.raises(CheckpointError, match="not a bayes_nest checkpoint"):
            load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(tmp_path / "missing.ckpt")
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


class _Opaque:
    def __init__(self):
        self.value = 1


def test_payload_is_loaded_with_weights_only(tmp_path):
    # a file with a valid header and digest around a pickled custom object
    path = save_checkpoint(tmp_path / "x.ckpt", {"a": torch.ones(1)}, kind="fn3")
    raw = path.read_bytes()
    magic_end = raw.index(b"\n") + 1
    header_end = raw.index(b"\n", magic_end)
    meta = json.loads(raw[magic_end:header_end])
    buffer = __import__("io").BytesIO()
    torch.save({"a": _Opaque()}, buffer)
    data = buffer.getvalue()
    meta["payload_bytes"] = len(data)
    meta["sha256"] = ckpt._digest(meta, data)
    path.write_bytes(raw[:magic_end] + json.dumps(meta).encode() + b"\n" + data)
    assert checkpoint_info(path)["sha256"] == meta["sha256"]
    with pytest.raises(CheckpointError, match="not a trusted bayes_nest checkpoint") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)  # never torch's advice to load it unsafely


def test_save_rejects_bad_payload(tmp_path):
    path = tmp_path / "bad.ckpt"
    with pytest.raises(TypeError, match=r"payload\['cfg'\]\['fn'\] has type function"):
        save_checkpoint(path, {"cfg": {"fn": lambda: 0}}, kind="fn3")
    with pytest.raises(TypeError, match=r"payload\['x'\]\[1\] has type ndarray.*torch.as_tensor"):
        save_checkpoint(path, {"x": [1, np.zeros(2)]}, kind="fn3")
    with pytest.raises(TypeError, match="payload must be a dict"):
        save_checkpoint(path, [torch.ones(1)], kind="fn3")
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        save_checkpoint(path, {}, kind="")
    assert not path.parent.exists() or os.listdir(path.parent) == []
