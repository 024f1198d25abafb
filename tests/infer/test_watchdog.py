"""The training watchdog: a non-finite loss, gradient or state stops training with an error naming
the step and the input, parameter, layer or Pyro site where it first appears, before the weights
change, and the checkpoint on disk stays the last good one (byte for byte)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from bayes_nest.infer import FN3Trainer, NonFiniteLossError
from bayes_nest.infer.checkpoint import load_checkpoint
from bayes_nest.infer.watchdog import NonFiniteError, Watchdog, first_non_finite_site
from bayes_nest.models import MLP

N, BATCH = 96, 32  # three steps per epoch
STEPS = N // BATCH


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 10, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Recorder:
    """Wraps a trainer's checkpoint writer: remembers the bytes of every checkpoint written, and
    the weights right after every optimizer step."""

    def __init__(self, trainer: FN3Trainer) -> None:
        self.trainer, self.files, self.after_step = trainer, [], []
        write = trainer.loop._save

        def save(path, loader):
            write(path, loader)
            self.files.append(path.read_bytes())

        trainer.loop._save = save
        step = trainer.optimizer.step

        def optimizer_step(*args, **kwargs):
            out = step(*args, **kwargs)
            self.after_step.append(_params(trainer.module))
            for hook in self.hooks:
                hook(len(self.after_step))
            return out

        trainer.optimizer.step = optimizer_step
        self.hooks = []


def _trainer(module: nn.Module | None = None, **kwargs) -> FN3Trainer:
    torch.manual_seed(0)
    module = module if module is not None else MLP(10, [16, 16], 3, groups=4)
    return FN3Trainer(module, batch_size=BATCH, seed=0, progress=False, **kwargs)


def _check_kept_last_good(path, recorder: _Recorder, good_epochs: int) -> None:
    assert len(recorder.files) == good_epochs
    assert path.read_bytes() == recorder.files[-1]  # byte-identical to the last good file
    assert load_checkpoint(path, kind="fn3")["epoch"] == good_epochs


# ----------------------------------------------------------------------------- FN3


def test_nan_in_a_parameter_names_the_parameter_and_step(tmp_path):
    trainer = _trainer()
    rec = _Recorder(trainer)
    bad_after = STEPS + 1  # poison a weight after the second step of epoch 2

    def poison(n):
        if n == bad_after:
            with torch.no_grad():
                trainer.module.hidden[1].affine.weight[3, 2] = math.nan

    rec.hooks.append(poison)
    path = tmp_path / "run.ckpt"
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(_data(), epochs=4, checkpoint_path=path)
    e = info.value
    assert isinstance(e, NonFiniteError) and e.quantity == "loss"
    assert e.step == bad_after and e.epoch == 1
    assert e.where == "parameter 'hidden.1.affine.weight'"
    msg = str(e)
    assert f"at step {bad_after} " in msg and "'hidden.1.affine.weight'" in msg
    assert "Last good checkpoint" in msg and str(path) in msg
    _check_kept_last_good(path, rec, good_epochs=1)


def test_nan_in_the_input_names_the_input_batch(tmp_path):
    x, y = _data()
    x[N - 5, 4] = math.nan  # the last batch of an unshuffled epoch
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    trainer = _trainer()
    rec = _Recorder(trainer)
    with pytest.raises(NonFiniteError, match="input batch") as info:
        trainer.fit(loader, epochs=2, checkpoint_path=tmp_path / "run.ckpt")
    assert info.value.step == STEPS - 1 and info.value.epoch == 0
    assert "No checkpoint was written" in str(info.value)
    assert not (tmp_path / "run.ckpt").exists() and rec.files == []


def test_non_finite_gradient_with_finite_loss_stops_before_the_update(tmp_path):
    trainer = _trainer()
    rec = _Recorder(trainer)
    weight = trainer.module.hidden[0].affine.weight
    bad_step = 2 * STEPS + 1  # in the third epoch

    def poison_gradient(grad):
        return grad * math.inf if trainer.step == bad_step else grad

    weight.register_hook(poison_gradient)
    path = tmp_path / "run.ckpt"
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(_data(), epochs=4, checkpoint_path=path)
    e = info.value
    assert not isinstance(e, NonFiniteLossError)
    assert (e.quantity, e.step, e.epoch) == ("gradient", bad_step, 2)
    assert "'hidden.0.affine.weight'" in e.where and "gradient" in e.where
    assert str(e).startswith(f"non-finite gradient at step {bad_step} (epoch 2)")
    # the bad step was never applied: the weights are those after the previous step
    assert len(rec.after_step) == bad_step
    assert _same(_params(trainer.module), rec.after_step[-1])
    assert all(torch.isfinite(p).all() for p in trainer.module.parameters())
    _check_kept_last_good(path, rec, good_epochs=2)


class _Glitch(nn.Module):
    """Identity, until switched on: then log of a negative number (NaN from finite input)."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    def forward(self, x):
        return torch.log(x - x.detach().abs().max() - 1) if self.on else x


def test_nan_produced_inside_a_layer_names_that_layer(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(MLP(10, [16], 3, groups=4), _Glitch())
    trainer = _trainer(net)
    rec = _Recorder(trainer)
    rec.hooks.append(lambda n: setattr(net[1], "on", n == STEPS + 2))
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(_data(), epochs=3, checkpoint_path=tmp_path / "run.ckpt")
    assert info.value.where == "output of layer '1'"
    assert info.value.step == STEPS + 2
    _check_kept_last_good(tmp_path / "run.ckpt", rec, good_epochs=1)


def test_a_non_finite_state_is_never_written_over_a_good_checkpoint(tmp_path):
    trainer = _trainer()
    rec = _Recorder(trainer)

    def overflow(n):  # the last update of epoch 2 leaves an infinite weight (finite gradients)
        if n == 2 * STEPS:
            with torch.no_grad():
                trainer.module.output.weight[0, 0] = math.inf

    rec.hooks.append(overflow)
    path = tmp_path / "run.ckpt"
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(_data(), epochs=3, checkpoint_path=path)
    e = info.value
    assert (e.quantity, e.step, e.epoch) == ("state", 2 * STEPS, 2)
    assert e.where == "parameter 'output.weight'"
    _check_kept_last_good(path, rec, good_epochs=1)


def test_switched_off_watchdog_lets_the_optimizer_see_the_gradient():
    trainer = _trainer()
    trainer.watchdog = None
    weight = trainer.module.hidden[0].affine.weight
    weight.register_hook(lambda g: g * math.inf if trainer.step == STEPS - 1 else g)
    trainer.fit(_data(), epochs=1)  # the last step's gradient reaches the weights unchecked
    assert not torch.isfinite(weight).all()


# ----------------------------------------------------------------------------- units


def test_fast_check_has_no_false_alarm_on_huge_finite_gradients():
    net = nn.Linear(4, 4).double()
    for p in net.parameters():
        p.grad = torch.full_like(p, 1e308)  # the float64 sum overflows, every entry is finite
    Watchdog(net).check_gradients(step=0, epoch=0)
    net.bias.grad[2] = -math.inf
    with pytest.raises(NonFiniteError, match="gradient of parameter 'bias'"):
        Watchdog(net).check_gradients(step=5, epoch=1)
    for dtype, big in ((torch.float32, 3e38), (torch.float16, 6e4), (torch.bfloat16, 3e38)):
        net = nn.Linear(8, 8).to(dtype)
        for p in net.parameters():
            p.grad = torch.full_like(p, big)  # sums overflow the dtype; entries are finite
        Watchdog(net).check_gradients(step=0, epoch=0)


def test_parameters_without_gradients_are_skipped_and_counts_reported():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3))
    net[0].weight.grad = torch.zeros(3, 3)
    Watchdog(net).check_gradients(step=0, epoch=0)
    net[1].weight.grad = torch.full((3, 3), math.nan)
    net[2].bias.grad = torch.full((3,), math.nan)
    with pytest.raises(NonFiniteError, match=r"parameter '1.weight' and 1 more"):
        Watchdog(net).check_gradients(step=0, epoch=0)
    Watchdog(net, gradients=False).check_gradients(step=0, epoch=0)


def test_state_check_names_buffers_and_optimizer_state():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    dog = Watchdog(net)
    dog.check_state(step=1, epoch=0, optimizer=opt)
    opt.state[net[0].bias]["exp_avg_sq"][0] = math.inf
    with pytest.raises(NonFiniteError, match="optimizer state"):
        dog.check_state(step=1, epoch=0, optimizer=opt)
    net[1].running_var[1] = math.nan
    with pytest.raises(NonFiniteError, match="buffer '1.running_var'"):
        dog.check_state(step=1, epoch=0, optimizer=opt)


def test_layer_search_restores_batch_norm_statistics():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), _Glitch()).train()
    net[2].on = True
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert Watchdog(net).first_non_finite_output(lambda: net(torch.randn(8, 3))) == "2"
    assert _same(before, net.state_dict())


def test_loss_check_accepts_finite_and_reports_value():
    net = nn.Linear(2, 2)
    dog = Watchdog(net)
    dog.check_loss(torch.tensor(3.0), step=0, epoch=0)
    with pytest.raises(NonFiniteError) as info:
        dog.check_loss(torch.tensor(-math.inf), step=7, epoch=2)
    assert info.value.value == -math.inf and info.value.where is None
    assert str(info.value).startswith("non-finite loss -inf at step 7 (epoch 2)")
    with pytest.raises(TypeError, match="nn.Module"):
        Watchdog("net")


def test_first_non_finite_site_names_the_pyro_site():
    def model(scale):
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(torch.log(scale - 2.0), 1.0))  # NaN loc for scale < 2
        pyro.sample("c", dist.Normal(0.0, 1.0))

    def guide(scale):
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, scale))
        pyro.sample("c", dist.Normal(0.0, 1.0))

    assert first_non_finite_site(model, guide, torch.tensor(3.0)) is None
    assert first_non_finite_site(model, guide, torch.tensor(1.0)) == (
        "Pyro site 'b' (model log density)"
    )
    assert first_non_finite_site(model, guide, torch.tensor(math.inf)) == (
        "Pyro site 'b' (guide value)"
    )


# ----------------------------------------------------------------------------- BNNN


class _HookedAdam(torch.optim.Adam):
    """Adam that calls ``hook(n)`` after its n-th step (n = 1, 2, ...)."""

    hook = staticmethod(lambda n: None)

    def __init__(self, params, **kwargs):
        super().__init__(params, lr=1e-2, **kwargs)
        self.calls = 0

    def step(self, closure=None):
        out = super().step(closure)
        self.calls += 1
        type(self).hook(self.calls)
        return out


def _bnnn_run(tmp_path, hook, data=None, epochs=3):
    from bayes_nest.infer.bnnn import BNNN

    pyro.clear_param_store()
    torch.manual_seed(0)
    bnnn = BNNN(MLP(10, [16, 16], 3, groups=4))
    files = []
    path = tmp_path / "bnnn.ckpt"

    class Opt(_HookedAdam):
        pass

    Opt.hook = staticmethod(lambda n: (hook(bnnn, n), files.append(_bytes(path))))
    with pytest.raises(NonFiniteError) as info:
        bnnn.fit(
            data if data is not None else _data(),
            epochs=epochs,
            batch_size=BATCH,
            seed=0,
            progress=False,
            optimizer=Opt,
            checkpoint_path=path,
        )
    return bnnn, info.value, path


def _bytes(path):
    return path.read_bytes() if path.exists() else None


def test_bnnn_nan_in_a_parameter_names_it_and_keeps_the_checkpoint(tmp_path):
    good = {}

    def poison(bnnn, n):
        if n == STEPS:  # end of epoch 1: remember the checkpoint about to be written
            good["params"] = _params(bnnn)
        if n == STEPS + 1:
            with torch.no_grad():
                bnnn.model.net.hidden[1].affine.weight_loc[0, 0] = math.nan

    bnnn, e, path = _bnnn_run(tmp_path, poison)
    assert (e.quantity, e.step, e.epoch) == ("ELBO loss", STEPS + 1, 1)
    assert e.where == "parameter 'model.net.hidden.1.affine.weight_loc'"
    assert "Last good checkpoint" in str(e)
    saved = load_checkpoint(path, kind="bnnn")
    assert saved["epoch"] == 1
    assert _same({k: v for k, v in saved["state_dict"].items()}, good["params"])


def test_bnnn_nan_in_the_input_names_the_input_batch(tmp_path):
    x, y = _data()
    x[:, 3] = math.nan
    _, e, path = _bnnn_run(tmp_path, lambda b, n: None, data=(x, y))
    assert e.where == "input batch" and e.step == 0 and not path.exists()
    assert "No checkpoint was written" in str(e)


def test_bnnn_non_finite_gradient_stops_before_the_update(tmp_path):
    seen = {}

    def poison(grad):  # runs in the backward pass of the bad step, after the epoch-2 file
        seen["file"] = (tmp_path / "bnnn.ckpt").read_bytes()
        return grad * math.inf

    def arm(bnnn, n):
        if n == 2 * STEPS:  # the first step of epoch 3 gets an infinite gradient
            seen["before"] = _params(bnnn)
            bnnn.guide.vous[0].keep_logits.register_hook(poison)

    bnnn, e, path = _bnnn_run(tmp_path, arm)
    assert (e.quantity, e.step, e.epoch) == ("gradient", 2 * STEPS, 2)
    assert e.where == "gradient of parameter 'guide.masks.vous.0.keep_logits'"
    assert _same(_params(bnnn), seen["before"])  # the optimizer never saw it
    assert path.read_bytes() == seen["file"]  # the epoch-2 checkpoint, byte for byte
    assert load_checkpoint(path, kind="bnnn")["epoch"] == 2


def test_bnnn_site_search_names_the_mask_site():
    from bayes_nest.infer.bnnn import BNNN

    torch.manual_seed(0)
    bnnn = BNNN(MLP(10, [16, 16], 3, groups=4))
    x, y = _data()
    dog = Watchdog(bnnn)
    assert dog.locate(inputs=x, pyro_program=(bnnn.model, bnnn.guide, (x, y), {})) is None
    with torch.no_grad():  # a keep logit of +inf: the guide's keep-count law is degenerate
        bnnn.guide.vous[1].keep_logits[2] = math.inf
    site = first_non_finite_site(bnnn.model, bnnn.guide, x, y)
    assert site == "Pyro site 'hidden.1' (guide log density)"
    assert dog.locate(inputs=x) == "parameter 'guide.masks.vous.1.keep_logits'"  # parameters first
    with torch.no_grad():
        bnnn.guide.vous[1].keep_logits[2] = 0.0
        bnnn.model.net.output.bias_loc[0] = math.nan  # the guide's draw of the output bias
    site = first_non_finite_site(bnnn.model, bnnn.guide, x, y)
    assert site == "Pyro site 'output.bias' (guide value)"
