"""BNNN training: learned keep counts, checkpoints and resume, fit arguments."""

import math

import pyro
import pytest
import torch
from torch import nn

from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.bnnn_fit import BNNNHistory
from bayes_nest.infer.checkpoint import CheckpointError, save_checkpoint
from bayes_nest.infer.vou import ExponentialTemperature
from bayes_nest.models import MLP
from bayes_nest.nn import NestedLinear, SlicedLinear
from bayes_nest.testing import assert_close

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: faster and steadier


def _signal_in_r_dims(n, seed, r=3, d=8):
    """2r classes at +-3 e_i in an r-dim subspace of R^d (randomly rotated), unit noise:
    a linear code needs exactly r units to separate them."""
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([torch.eye(r), -torch.eye(r)]) * 3.0
    y = torch.randint(0, 2 * r, (n,), generator=g)
    x = torch.randn(n, d, generator=g)
    x[:, :r] += means[y]
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    return x @ rotation.T, y


class _Code(nn.Module):
    """A nested linear code of 8 one-unit blocks and a classifier head."""

    def __init__(self, classes):
        super().__init__()
        self.code = NestedLinear(8, 8, groups=8, always_on=1, activation=None)
        self.head = SlicedLinear(8, classes)

    def forward(self, x):
        return self.head(self.code(x))


def _fit_code(seed, epochs, lr, r=3):
    torch.manual_seed(seed)
    x, y = _signal_in_r_dims(1000, seed, r=r)
    bnnn = BNNN(_Code(2 * r), init_keep_prob=0.9)
    bnnn.fit(
        (x, y),
        epochs=epochs,
        batch_size=200,
        optimizer=pyro.optim.Adam({"lr": lr}),
        progress=False,
        seed=seed,
    )
    return bnnn.keep_count_probs()["code"]  # over 0..7 orderable blocks kept


def test_keep_count_posterior_keeps_every_informative_block():
    q = _fit_code(seed=0, epochs=60, lr=0.1)
    counts = torch.arange(1, 9)  # the always-on block included
    assert q[counts < 3].sum() < 0.05  # the 3 informative units are never dropped
    assert float((q * counts).sum()) < 5.5  # and uninformative ones are being dropped


@pytest.mark.slow
def test_keep_count_posterior_concentrates_at_the_signal_dimension():
    """Over six seeds: no seed drops an informative unit and every one prunes most spare units;
    in at least five the posterior concentrates at the signal dimension (a seed may settle on a
    spare block or two: the ELBO difference of near-prior units is small)."""
    counts = torch.arange(1, 9)
    concentrated = 0
    for seed in range(6):
        q = _fit_code(seed=seed, epochs=300, lr=0.03)
        assert q[counts < 3].sum() < 0.05
        assert float((q * counts).sum()) < 5.0  # of 8 blocks
        concentrated += (
            int(counts[q.argmax()]) == 3
            and float(q[counts == 3].sum()) > 0.5
            and float(q[(counts - 3).abs() <= 1].sum()) > 0.9
        )
    assert concentrated >= 5


def _small_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def test_checkpoint_resume_is_identical_to_an_uninterrupted_run(tmp_path):
    x, y = _small_problem()

    def make():
        torch.manual_seed(0)
        return BNNN(MLP(6, [8], 3, groups=4), temperature=ExponentialTemperature(1.0, 0.2, 0.5))

    straight = make()
    straight.fit((x, y), epochs=3, batch_size=16, seed=7, progress=False)
    path = tmp_path / "bnnn.ckpt"
    interrupted = make()
    interrupted.fit((x, y), epochs=2, batch_size=16, seed=7, progress=False, checkpoint_path=path)
    resumed = make()
    history = resumed.fit(
        (x, y), epochs=3, batch_size=16, seed=7, progress=False, checkpoint_path=path, resume=True
    )
    # exact: the resumed run repeats the same operations on the same data in the same order
    assert_close(resumed.state_dict(), straight.state_dict(), rtol=0, atol=0)
    assert history.epoch == [1, 2, 3]
    assert history.temperature == pytest.approx([1.0, math.exp(-0.5), math.exp(-1.0)])
    assert resumed.epoch == 3


def test_resume_rejects_a_checkpoint_of_other_settings(tmp_path):
    x, y = _small_problem()
    path = tmp_path / "bnnn.ckpt"
    BNNN(MLP(6, [8], 3, groups=4)).fit(
        (x, y), epochs=1, progress=False, checkpoint_path=path, seed=0
    )
    other = BNNN(MLP(6, [8], 3, groups=4), kl_scale=0.5)
    with pytest.raises(ValueError, match="settings"):
        other.fit((x, y), epochs=2, progress=False, checkpoint_path=path, resume=True)
    save_checkpoint(path, {"x": 1}, kind="fn3")
    with pytest.raises(CheckpointError, match="expected 'bnnn'"):
        other.fit((x, y), epochs=2, progress=False, checkpoint_path=path, resume=True)


def test_fit_records_history_and_validation_scores():
    x, y = _small_problem()
    bnnn = BNNN(MLP(6, [8], 3, groups=4))
    history = bnnn.fit(
        (x, y), epochs=2, val=(x, y), loss="trace", progress=False, seed=0, num_particles=2
    )
    assert isinstance(history, BNNNHistory) and len(history) == 2
    assert all(math.isfinite(v) for v in history.loss + history.val_nll + history.weight_kl)
    assert 0 <= history.val_accuracy[-1] <= 1
    assert bnnn.likelihood.dataset_size == 64
    assert bnnn.history is history
    # a second call continues (epochs is the total)
    bnnn.fit((x, y), epochs=3, progress=False)
    assert history.epoch == [1, 2, 3]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": -1}, ValueError, "epochs"),
        ({"epochs": 1, "loss": "elbo"}, ValueError, "loss"),
        ({"epochs": 1, "num_particles": 0}, ValueError, "num_particles"),
        ({"epochs": 1, "resume": True}, ValueError, "checkpoint_path"),
        ({"epochs": 1, "seed": 1.5}, TypeError, "seed"),
        ({"epochs": 1, "optimizer": "adam"}, TypeError, "optimizer"),
    ],
)
def test_fit_validation(kwargs, error, match):
    bnnn = BNNN(MLP(6, [8], 3, groups=4))
    with pytest.raises(error, match=match):
        bnnn.fit(_small_problem(), progress=False, **kwargs)


def test_fit_accepts_a_torch_optimizer_factory():
    x, y = _small_problem()
    bnnn = BNNN(MLP(6, [8], 3, groups=4))
    before = bnnn.net.output.weight_loc.detach().clone()
    bnnn.fit((x, y), epochs=1, optimizer=lambda p: torch.optim.SGD(p, lr=1e-3), progress=False)
    made = list(bnnn._optim.optim.optim_objs.values())
    assert made and all(isinstance(opt, torch.optim.SGD) for opt in made)
    assert len(made) == len(list(bnnn.parameters()))  # SVI updated every parameter
    assert not torch.equal(before, bnnn.net.output.weight_loc)


def test_an_elementwise_pyro_optimizer_updates_as_one_torch_optimizer_per_parameter():
    """fit applies pyro.optim.Adam as one torch Adam over all parameters: the same update as
    Pyro's one Adam per parameter (a factory callable is applied the Pyro way)."""
    x, y = _small_problem()
    runs = []
    for optimizer in (
        pyro.optim.Adam({"lr": 1e-2}),
        pyro.optim.PyroOptim(lambda params, **kw: torch.optim.Adam(params, **kw), {"lr": 1e-2}),
    ):
        torch.manual_seed(0)
        bnnn = BNNN(MLP(6, [8], 3, groups=4))
        bnnn.fit((x, y), epochs=3, batch_size=16, optimizer=optimizer, progress=False, seed=1)
        runs.append(bnnn)
    assert runs[0]._optim.fusable and not runs[1]._optim.fusable
    for (name, a), b in zip(runs[0].named_parameters(), runs[1].parameters(), strict=True):
        assert_close(a, b, scale=100, msg=name)
