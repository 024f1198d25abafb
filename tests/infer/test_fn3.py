"""FN3 training: accuracy of nested sub-networks, ordering ablation, seeding, checkpoints,
non-finite losses, evaluation helpers."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from bayes_nest.data import load_dataset
from bayes_nest.infer import (
    FN3Trainer,
    NonFiniteLossError,
    evaluate,
    fit_fn3,
    predict_probs,
)
from bayes_nest.infer.checkpoint import load_checkpoint
from bayes_nest.models import MLP, ConvNet, ResNet, ResNeXt
from bayes_nest.nn import axes, get_masks, masked
from bayes_nest.subnet import full, recalibrate_batchnorm, smallest, use
from bayes_nest.testing import assert_close


@pytest.fixture(scope="module")
def trained_mlp(digits):
    torch.manual_seed(0)
    net = MLP(64, [128, 128], 10, groups=16)
    history = fit_fn3(net, digits.train, epochs=30, val=digits.val, seed=0, progress=False)
    return net, history


def _params(module):
    return [p.detach().clone() for p in module.state_dict().values()]


def _same(a, b):
    # Bit-identical on purpose: resumed training repeats the very same operations in order.
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- accuracy


def test_width_mlp_trains_to_sound_accuracy(trained_mlp, digits):
    net, history = trained_mlp
    assert len(history) == 30 and history.epoch[-1] == 30
    assert history.loss[-1] < history.loss[0]
    assert evaluate(net, digits.test, full(net))["accuracy"] >= 0.92
    # One group of 8 units per hidden layer: far above chance (0.1).
    assert evaluate(net, digits.test, smallest(net))["accuracy"] >= 0.5
    # Nested: wider prefixes are (up to noise) at least as good as narrower ones.
    accs = [
        evaluate(net, digits.test, {"hidden.0": n, "hidden.1": n})["accuracy"] for n in (2, 8, 16)
    ]
    assert accs[0] < accs[2] and accs[1] <= accs[2] + 0.02
    assert get_masks(net) == {"hidden.0": None, "hidden.1": None}  # training left it whole


def test_bits_mlp_trains(digits):
    torch.manual_seed(1)
    net = MLP(64, [64], 10, groups=8, bits=6)
    assert axes(net)["bits"].kind == "bits"
    fit_fn3(net, digits.train, epochs=25, seed=1, progress=False, optimizer=None)
    full_acc = evaluate(net, digits.test, full(net))["accuracy"]
    one_bit = evaluate(net, digits.test, {"bits": 1})["accuracy"]
    smallest_acc = evaluate(net, digits.test, smallest(net))["accuracy"]
    assert full_acc >= 0.9
    assert one_bit >= 0.8
    assert smallest_acc >= 0.4  # one group of 8 units with 1-bit weights


@pytest.fixture(scope="module")
def digits_images():
    return load_dataset("digits", seed=0, flat=False)


CONV_MODELS = {
    "width": lambda: ConvNet(10, 1, (16, 32), groups=4),
    "depth": lambda: ResNet(10, 1, (8, 16), (2, 2), groups=2),
    "paths": lambda: ResNeXt(10, 1, (8, 16), (2, 2), cardinality=4, path_width=2, groups=2),
}


def _conv_scores(kind, data, epochs):
    """Train a conv model with FN3; test accuracy of the full network and of the smallest
    setting of every axis of ``kind`` (others whole), after batch-norm recalibration."""
    torch.manual_seed(0)
    net = CONV_MODELS[kind]()
    assert any(a.kind == kind for a in axes(net).values())
    adam = functools.partial(torch.optim.Adam, lr=3e-3)
    fit_fn3(net, data.train, epochs=epochs, seed=0, progress=False, optimizer=adam)
    shrunk = {name: a.always_on for name, a in axes(net).items() if a.kind == kind}
    scores = []
    for config in (full(net), shrunk):
        recalibrate_batchnorm(net, data.train, config)
        scores.append(evaluate(net, data.test, config)["accuracy"])
    return scores


@pytest.mark.parametrize(
    "kind, epochs, min_full, min_small", [("width", 5, 0.7, 0.2), ("depth", 5, 0.8, 0.6)]
)
def test_conv_axis_kinds_train_fast(digits_images, kind, epochs, min_full, min_small):
    full_acc, small_acc = _conv_scores(kind, digits_images, epochs)
    assert full_acc >= min_full and small_acc >= min_small


@pytest.mark.slow
@pytest.mark.parametrize("kind, min_small", [("width", 0.5), ("depth", 0.85), ("paths", 0.5)])
def test_conv_axis_kinds_train_to_sound_accuracy(digits_images, kind, min_small):
    full_acc, small_acc = _conv_scores(kind, digits_images, 25)
    assert full_acc >= 0.9
    assert small_acc >= min_small  # chance is 0.1


def test_truncation_beats_random_block_dropping(digits):
    """The paper's ablation: dropping the learned tail hurts less than dropping random blocks."""
    torch.manual_seed(2)
    net = MLP(64, [128], 10, groups=16)
    fit_fn3(net, digits.train, epochs=30, seed=2, progress=False)
    x, y = digits.val
    axis = axes(net)["hidden.0"]
    gen = torch.Generator().manual_seed(0)
    for dropped in (6, 10, 13):
        kept = axis.size - dropped
        truncated = evaluate(net, (x, y), {"hidden.0": kept})["accuracy"]
        random_accs = []
        for _ in range(10):
            # Random blocks among the orderable ones (the always-on block stays kept).
            order = torch.randperm(axis.orderable, generator=gen) + axis.always_on
            mask = torch.ones(axis.size)
            mask[order[:dropped]] = 0.0
            with masked(net, {"hidden.0": mask}):
                random_accs.append(evaluate(net, (x, y))["accuracy"])
        assert truncated > sum(random_accs) / len(random_accs)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_parameters(digits):
    def run(seed):
        torch.manual_seed(0)
        net = MLP(64, [32], 10, groups=4)
        fit_fn3(net, digits.train, epochs=2, seed=seed, progress=False)
        return _params(net)

    first = run(3)
    assert _same(first, run(3))
    assert not _same(first, run(4))


def test_resume_gives_the_uninterrupted_parameters(digits, tmp_path):
    def trainer(net):
        return FN3Trainer(
            net,
            optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
            scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.7),
            keep_prob={"hidden.0": 0.8, "hidden.1": 0.9},
            sandwich="smallest",
            seed=11,
            progress=False,
        )

    def fresh():
        torch.manual_seed(0)
        return MLP(64, [32, 32], 10, groups=4)

    reference = fresh()
    whole = trainer(reference).fit(digits.train, epochs=4, val=digits.val)

    path = tmp_path / "fn3.ckpt"
    first = fresh()
    trainer(first).fit(digits.train, epochs=2, checkpoint_path=path, val=digits.val)
    assert load_checkpoint(path, kind="fn3")["epoch"] == 2
    torch.manual_seed(12345)  # resuming must not depend on the global state at restart
    resumed = fresh()
    history = trainer(resumed).fit(
        digits.train, epochs=4, checkpoint_path=path, resume=True, val=digits.val
    )
    assert _same(_params(resumed), _params(reference))
    # Exact: the resumed run repeats the same operations on the same data in the same order.
    assert history.loss == whole.loss and history.val_accuracy == whole.val_accuracy
    assert history.lr == whole.lr


def test_resume_without_checkpoint_warns_and_starts(digits, tmp_path):
    net = MLP(64, [16], 10, groups=2)
    with pytest.warns(UserWarning, match="no checkpoint"):
        fit_fn3(
            net,
            digits.train,
            epochs=1,
            checkpoint_path=tmp_path / "none.ckpt",
            resume=True,
            progress=False,
        )
    assert (tmp_path / "none.ckpt").exists()


# ----------------------------------------------------------------------------- failures


class _NaNAfter:
    def __init__(self, calls):
        self.calls, self.seen = calls, 0

    def __call__(self, out, y):
        self.seen += 1
        loss = F.cross_entropy(out, y)
        return loss * math.nan if self.seen > self.calls else loss


def test_non_finite_loss_names_step_and_keeps_last_checkpoint(digits, tmp_path):
    torch.manual_seed(0)
    net = MLP(64, [16], 10, groups=2)
    steps_per_epoch = math.ceil(len(digits.train.y) / 128)
    bad_step = steps_per_epoch + 3  # in the second epoch
    path = tmp_path / "run.ckpt"
    trainer = FN3Trainer(net, loss_fn=_NaNAfter(bad_step), seed=0, progress=False)
    before = None

    class Spy(torch.optim.Adam):
        def step(self, closure=None):
            nonlocal before
            out = super().step(closure)
            before = _params(net)
            return out

    trainer.optimizer = Spy(net.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteLossError, match=f"at step {bad_step} ") as info:
        trainer.fit(digits.train, epochs=3, checkpoint_path=path)
    assert info.value.step == bad_step and info.value.epoch == 1
    assert "Last good checkpoint" in str(info.value)
    assert load_checkpoint(path, kind="fn3")["epoch"] == 1
    assert _same(_params(net), before)  # the bad step did not update the weights
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert get_masks(net) == {"hidden.0": None}


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"epochs": -1}, ValueError),
        ({"epochs": 1.5}, ValueError),
        ({"epochs": 1, "resume": True}, ValueError),
        ({"epochs": 1, "checkpoint_every": 0}, ValueError),
        ({"epochs": 1, "optimizer": "adam"}, TypeError),
        ({"epochs": 1, "grad_clip": -1.0}, ValueError),
        ({"epochs": 1, "batch_size": 0}, ValueError),
        ({"epochs": 1, "keep_prob": 1.5}, ValueError),
    ],
)
def test_bad_arguments_raise(digits, kwargs, error):
    with pytest.raises(error):
        fit_fn3(MLP(64, [16], 10, groups=2), digits.train, progress=False, **kwargs)


def test_optimizer_and_scheduler_factories_and_plateau(digits):
    torch.manual_seed(0)
    net = MLP(64, [32], 10, groups=4)
    history = fit_fn3(
        net,
        digits.train,
        epochs=3,
        val=digits.val,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
        grad_clip=1.0,
        distribution="uniform",
        sandwich="both",
        progress=False,
    )
    assert all(math.isfinite(v) for v in history.val_loss)
    assert 0.0 <= min(history.accuracy) and max(history.val_accuracy) <= 1.0
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="different optimizer"):
        FN3Trainer(
            net,
            optimizer=opt,
            scheduler=torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1)]), 1),
        )


# ----------------------------------------------------------------------------- evaluation


def test_predict_probs_and_evaluate_agree_with_manual_computation(trained_mlp, digits):
    net, _ = trained_mlp
    x, y = digits.test
    config = {"hidden.0": 5, "hidden.1": 9}
    net.train()
    probs = predict_probs(net, x, config, batch_size=100)
    assert net.training and get_masks(net) == {"hidden.0": None, "hidden.1": None}
    with use(net, config), torch.no_grad():
        manual = torch.softmax(net.eval()(x), -1)
    assert_close(probs, manual)  # batches of 100 vs one pass
    assert_close(probs.sum(-1), torch.ones(len(x)))
    scores = evaluate(net, (x, y), config)
    assert scores["n"] == len(y)
    assert_close(scores["accuracy"], accuracy_score(y, probs.argmax(-1)), dtype=torch.float32)
    nll = -probs[torch.arange(len(y)), y].clamp_min(1e-12).log().mean().item()
    assert_close(scores["nll"], nll, dtype=torch.float32)
    assert 0.0 <= scores["ece"] <= scores["mce"] <= 1.0
    # Under an enclosing `use`, config=None means "as currently masked".
    # Exact: the same forward passes on the same batches, masks set by `use` either way.
    with use(net, config):
        assert evaluate(net, (x, y))["accuracy"] == scores["accuracy"]
    with pytest.raises(TypeError, match="labels"):
        evaluate(net, x)
    with pytest.raises(ValueError, match="unknown axis"):
        predict_probs(net, x, {"nope": 1})


def test_distillation_uses_labels_only_for_the_full_network(digits):
    class Counting:
        calls = 0

        def __call__(self, out, y):
            Counting.calls += 1
            return F.cross_entropy(out, y)

    def steps(**kwargs):
        Counting.calls = 0
        torch.manual_seed(0)
        net = MLP(64, [16], 10, groups=2)
        trainer = FN3Trainer(net, loss_fn=Counting(), seed=0, progress=False, **kwargs)
        trainer.fit(digits.train, epochs=1)
        return Counting.calls, trainer.step

    calls, n = steps(sandwich="full")
    assert calls == 2 * n
    calls, n = steps(sandwich="both", distill=True)
    assert calls == n  # the sampled and smallest networks learn from the full one's softmax
    with pytest.raises(ValueError, match="distill"):
        FN3Trainer(MLP(64, [16], 10, groups=2), distill=True)


def test_evaluate_accepts_loaders(trained_mlp, digits):
    net, _ = trained_mlp
    x, y = digits.test
    from torch.utils.data import DataLoader, TensorDataset

    pairs = DataLoader(TensorDataset(x, y), batch_size=50)
    inputs_only = DataLoader(x, batch_size=64)
    config = smallest(net)
    # Batches of 64 and 50 vs the default 512: different summation orders.
    assert_close(predict_probs(net, inputs_only, config), predict_probs(net, x, config))
    assert_close(evaluate(net, pairs, config), evaluate(net, (x, y), config), dtype=torch.float32)
    with pytest.raises(ValueError, match="labels"):
        evaluate(net, inputs_only)
