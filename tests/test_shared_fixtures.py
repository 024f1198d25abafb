"""The shared fixtures of ``tests/conftest.py`` do what they promise.

The two pairs of Pyro tests rely on pytest running a module's tests in the order they are
written: the first of each pair leaves state behind on purpose, the second sees it gone.
"""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer.util import is_validation_enabled

from bayes_nest import metrics
from bayes_nest.nn import axes
from bayes_nest.pipeline import fit
from tests.conftest import _bundle_digest


def _validation_states() -> tuple[bool, bool, bool]:
    return is_validation_enabled(), dist.is_validation_enabled(), poutine.is_validation_enabled()


def test_a_test_may_leave_parameters_in_the_store():
    assert len(pyro.get_param_store()) == 0
    pyro.param("left_behind", torch.zeros(2))
    assert "left_behind" in pyro.get_param_store()


def test_the_next_test_starts_with_an_empty_store():
    assert len(pyro.get_param_store()) == 0


def test_a_test_may_switch_validation_off_globally():
    assert _validation_states() == (True, True, True)
    pyro.enable_validation(False)
    pyro.settings.set(module_local_params=True)
    assert _validation_states() == (False, False, False)


def test_the_next_test_runs_with_validation_on_and_global_params():
    assert _validation_states() == (True, True, True)
    assert pyro.settings.get("module_local_params") is False


def test_one_thread(one_thread):
    assert torch.get_num_threads() == 1


def test_tiny_mlp_is_seeded_and_leaves_the_global_generator_alone(tiny_mlp):
    state = torch.random.get_rng_state()
    a, b, c = tiny_mlp(), tiny_mlp(), tiny_mlp(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name])  # the same ops on the same seed
    assert not torch.equal(a.hidden[0].affine.weight, c.hidden[0].affine.weight)
    assert {n: x.size for n, x in axes(a).items()} == {"hidden.0": 4}  # 8 units in 4 groups
    assert a(torch.zeros(5, 6)).shape == (5, 3)


def test_tiny_mlp_takes_the_model_options(tiny_mlp):
    net = tiny_mlp(4, (8, 12), 2, groups=2, bits=3)
    assert {n: x.size for n, x in axes(net).items()} == {"hidden.0": 2, "hidden.1": 2, "bits": 3}
    assert net(torch.zeros(1, 4)).shape == (1, 2)


def test_digits_is_the_default_split(digits):
    sizes = {name: len(split.y) for name, split in digits.splits.items()}
    assert sum(sizes.values()) == 1797 and digits.seed == 0
    assert digits.input_shape == (64,) and digits.num_classes == 10


def test_the_digest_of_a_bundle_sees_any_change(digits):
    copied = copy.deepcopy(digits)
    assert _bundle_digest(copied) == _bundle_digest(digits)
    copied.train.x[3, 7] += 1e-6
    assert _bundle_digest(copied) != _bundle_digest(digits)


def test_trained_models_learned_something(trained_fn3, trained_bnnn, digits):
    for model in (trained_fn3, trained_bnnn):
        probs = model.predict(digits.test.x)
        assert metrics.accuracy(probs, digits.test.y) > 0.3  # chance: 0.1
    assert trained_bnnn.predict(digits.test.x[:4]).shape == (3, 4, 10)
    assert (trained_fn3.method, trained_bnnn.method) == ("fn3", "bnnn")


def test_trained_bnnn_is_seeded(trained_bnnn, digits):
    again = fit(
        trained_bnnn.spec, digits, "bnnn", epochs=2, seed=0, predict_samples=3, progress=False
    )
    assert again.fingerprint() == trained_bnnn.fingerprint()  # the very same computation
