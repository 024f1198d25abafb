"""Training that crashes and resumes from its checkpoint ends with exactly the parameters of the
uninterrupted run (seeded, CPU), for FN3 and BNNN; a crash while writing leaves the previous
checkpoint usable; mismatched, tampered or truncated checkpoints are refused with a clear error."""

from __future__ import annotations

import functools
import os

import pytest
import torch

from bayes_nest.infer import FN3Trainer
from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bayes_nest.models import MLP

N, BATCH = 120, 32  # four steps per epoch (the last one short)


class Crash(Exception):
    """The injected failure (stands for a killed process or a power cut)."""


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 12, generator=g)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- FN3

SETTINGS = {
    "adam-steplr-sandwich": {
        "optimizer": functools.partial(torch.optim.Adam, lr=3e-3),
        "scheduler": functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.8),
        "keep_prob": 0.8,
        "sandwich": "both",
    },
    "sgd-uniform-coupled-distilled": {
        "optimizer": functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        "distribution": "uniform",
        "coupling": "all",
        "sandwich": "full",
        "distill": True,
        "grad_clip": 1.0,
    },
}


def _fn3(settings: str, crash_at_step: int | None = None) -> FN3Trainer:
    torch.manual_seed(0)
    net = MLP(12, [16, 16], 4, groups=4)
    trainer = FN3Trainer(net, batch_size=BATCH, seed=5, progress=False, **SETTINGS[settings])
    if crash_at_step is not None:
        step = trainer.loop._step

        def train_step(x, y):
            if trainer.step == crash_at_step:
                raise Crash(f"killed at step {trainer.step}")
            return step(x, y)

        trainer.loop._step = train_step
    return trainer


@pytest.mark.parametrize("settings", sorted(SETTINGS))
@pytest.mark.parametrize("every, crash_epoch, crash_in_epoch", [(1, 2, 0), (1, 3, 2), (2, 3, 1)])
def test_fn3_crash_and_resume_gives_the_uninterrupted_parameters(
    tmp_path, settings, every, crash_epoch, crash_in_epoch
):
    epochs, steps = 5, 4
    reference = _fn3(settings)
    whole = reference.fit(_data(), epochs=epochs, val=_data(1))

    path = tmp_path / "fn3.ckpt"
    crashing = _fn3(settings, crash_at_step=crash_epoch * steps + crash_in_epoch)
    with pytest.raises(Crash):
        crashing.fit(
            _data(), epochs=epochs, val=_data(1), checkpoint_path=path, checkpoint_every=every
        )
    saved_epoch = load_checkpoint(path, kind="fn3")["epoch"]
    assert saved_epoch == crash_epoch - crash_epoch % every

    torch.manual_seed(987)  # the global state at restart must not matter
    resumed = _fn3(settings)
    history = resumed.fit(
        _data(),
        epochs=epochs,
        val=_data(1),
        checkpoint_path=path,
        resume=True,
        checkpoint_every=every,
    )
    _assert_identical(_state(resumed.module), _state(reference.module))
    _assert_identical(
        resumed.optimizer.state_dict()["state"][0], reference.optimizer.state_dict()["state"][0]
    )
    assert resumed.step == reference.step == epochs * steps
    assert history.loss == whole.loss and history.val_loss == whole.val_loss
    assert history.lr == whole.lr


def test_fn3_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "fn3.ckpt"
    first = _fn3("adam-steplr-sandwich")
    first.fit(_data(), epochs=2, checkpoint_path=path)
    good = path.read_bytes()

    def power_cut(src, dst):
        raise Crash("power cut during the rename")

    crashing = _fn3("adam-steplr-sandwich")
    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(Crash):
        crashing.fit(_data(), epochs=4, checkpoint_path=path, resume=True)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["fn3.ckpt"]  # no temporary file left behind

    reference = _fn3("adam-steplr-sandwich")
    reference.fit(_data(), epochs=4)
    resumed = _fn3("adam-steplr-sandwich")
    resumed.fit(_data(), epochs=4, checkpoint_path=path, resume=True)
    _assert_identical(_state(resumed.module), _state(reference.module))


def test_fn3_refuses_mismatched_tampered_and_truncated_checkpoints(tmp_path):
    path = tmp_path / "fn3.ckpt"
    _fn3("adam-steplr-sandwich").fit(_data(), epochs=1, checkpoint_path=path)
    good = path.read_bytes()

    torch.manual_seed(0)
    other = FN3Trainer(MLP(12, [8, 8], 4, groups=4), batch_size=BATCH, progress=False)
    with pytest.raises(CheckpointError, match="fn3.ckpt") as info:
        other.fit(_data(), epochs=2, checkpoint_path=path, resume=True)
    assert "does not fit" in str(info.value)
    assert path.read_bytes() == good  # a refused resume writes nothing

    save_checkpoint(path, {"model": {}}, kind="fn3")  # a valid file of the wrong content
    with pytest.raises(CheckpointError, match="does not fit"):
        _fn3("adam-steplr-sandwich").fit(_data(), epochs=2, checkpoint_path=path, resume=True)

    path.write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        _fn3("adam-steplr-sandwich").fit(_data(), epochs=2, checkpoint_path=path, resume=True)
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 0x01
    path.write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError, match="SHA-256"):
        _fn3("adam-steplr-sandwich").fit(_data(), epochs=2, checkpoint_path=path, resume=True)
    save_checkpoint(path, {"state_dict": {}}, kind="bnnn")
    with pytest.raises(CheckpointError, match="expected 'fn3'"):
        _fn3("adam-steplr-sandwich").fit(_data(), epochs=2, checkpoint_path=path, resume=True)


# ----------------------------------------------------------------------------- BNNN


class _CrashingAdam(torch.optim.Adam):
    """Adam that raises before its ``crash_at``-th step (counted from 0 in this process)."""

    def __init__(self, params, crash_at: int | None = None, **kwargs):
        super().__init__(params, **kwargs)
        self.crash_at, self.calls = crash_at, 0

    def step(self, closure=None):
        if self.crash_at is not None and self.calls == self.crash_at:
            raise Crash(f"killed before optimizer step {self.calls}")
        self.calls += 1
        return super().step(closure)


def _bnnn_fit(bnnn: BNNN, epochs: int, crash_at: int | None = None, **kwargs):
    factory = functools.partial(_CrashingAdam, lr=1e-2, crash_at=crash_at)
    return bnnn.fit(
        _data(),
        epochs=epochs,
        batch_size=BATCH,
        seed=3,
        progress=False,
        optimizer=factory,
        **kwargs,
    )


def _bnnn() -> BNNN:
    torch.manual_seed(0)
    return BNNN(MLP(12, [8, 8], 4, groups=4))


def test_bnnn_crash_and_resume_gives_the_uninterrupted_parameters(tmp_path):
    epochs, steps = 4, 4
    reference = _bnnn()
    whole = _bnnn_fit(reference, epochs)

    path = tmp_path / "bnnn.ckpt"
    crashing = _bnnn()
    with pytest.raises(Crash):
        _bnnn_fit(crashing, epochs, crash_at=2 * steps + 1, checkpoint_path=path)
    assert load_checkpoint(path, kind="bnnn")["epoch"] == 2

    torch.manual_seed(321)
    resumed = _bnnn()
    history = _bnnn_fit(resumed, epochs, checkpoint_path=path, resume=True)
    _assert_identical(_state(resumed), _state(reference))
    assert history.loss == whole.loss and history.epoch == [1, 2, 3, 4]


def test_bnnn_refuses_mismatched_and_damaged_checkpoints(tmp_path):
    path = tmp_path / "bnnn.ckpt"
    _bnnn_fit(_bnnn(), 1, checkpoint_path=path)
    good = path.read_bytes()
    torch.manual_seed(0)
    wider = BNNN(MLP(12, [16, 8], 4, groups=4))
    with pytest.raises((CheckpointError, ValueError), match="bnnn.ckpt"):
        _bnnn_fit(wider, 2, checkpoint_path=path, resume=True)
    assert path.read_bytes() == good
    path.write_bytes(good[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        _bnnn_fit(_bnnn(), 2, checkpoint_path=path, resume=True)
    save_checkpoint(path, {"model": {}}, kind="fn3")
    with pytest.raises(CheckpointError, match="expected 'bnnn'"):
        _bnnn_fit(_bnnn(), 2, checkpoint_path=path, resume=True)
