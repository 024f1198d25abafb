"""Shared test settings and fixtures (the only place fixtures used by several modules live).

Settings
    torch runs on ``BAYES_NEST_TEST_THREADS`` threads (default 1); pytest's header names the
    CPU kernels and threads in use.

Fixtures
    ``pyro_state`` (autouse)
        Every test starts and ends with an empty Pyro parameter store, runs with Pyro's
        validation on and leaves ``module_local_params`` as it found it.
    ``one_thread``
        torch on one thread for the test (restored after); modules whose tiny tensors are
        faster and steadier on one thread declare
        ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    ``digits`` (session)
        The built-in digits `DataBundle` with the default split (seed 0).
    ``tiny_mlp``
        A factory of fresh nested MLPs, ``tiny_mlp(in_features=6, hidden=(8,),
        out_features=3, groups=4, seed=0, **options)``.
    ``trained_fn3``, ``trained_bnnn`` (session)
        A nested MLP (``ModelSpec("mlp", {"hidden": [16, 16], "groups": 4})``: two hidden
        axes of 4 blocks) trained on ``digits`` with `bayes_nest.pipeline.fit`, seed 0 (FN3:
        3 epochs; BNNN: 2 epochs, 3 posterior samples per prediction).

The session-scoped objects are shared by every test that names them: a test must not change
them (copy them with `copy.deepcopy` first). Their teardown compares a digest of their
contents with the one taken when they were built and reports any test run's change.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyro
import pytest
import torch

if TYPE_CHECKING:
    from bayes_nest.data import DataBundle
    from bayes_nest.models import MLP
    from bayes_nest.pipeline import TrainedModel

# Small networks run fastest on one thread, and one thread keeps timings stable on busy machines.
torch.set_num_threads(int(os.environ.get("BAYES_NEST_TEST_THREADS", "1")))


def pytest_report_header(config) -> str:
    """Name the floating-point setting the run uses (kernels and threads change last bits)."""
    return (
        f"torch {torch.__version__}: CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} thread(s)"
    )


# ----------------------------------------------------------------------------- every test


@pytest.fixture(autouse=True)
def pyro_state() -> Iterator[None]:
    """Empty parameter store and validation on for the test; settings restored after."""
    pyro.clear_param_store()
    module_local = pyro.settings.get("module_local_params")
    try:
        with pyro.validation_enabled(True):
            yield
    finally:
        pyro.settings.set(module_local_params=module_local)
        pyro.clear_param_store()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test, whatever ``BAYES_NEST_TEST_THREADS`` says."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- data and models


def _digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes: equal exactly when nothing changed."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _bundle_digest(bundle: DataBundle) -> str:
    splits = [t for split in bundle.splits.values() for t in split]
    return _digest(*splits, bundle.mean, bundle.std)


def _check_unchanged(name: str, before: str, after: str) -> None:
    if before != after:
        pytest.fail(
            f"a test changed the session-scoped fixture {name!r}; tests that modify it must "
            "work on copy.deepcopy(...) of it",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def digits() -> Iterator[DataBundle]:
    """The built-in digits data (64 standardized features, 10 classes), default split."""
    from bayes_nest.data import load_dataset

    bundle = load_dataset("digits", seed=0)
    before = _bundle_digest(bundle)
    yield bundle
    _check_unchanged("digits", before, _bundle_digest(bundle))


@pytest.fixture
def tiny_mlp() -> Callable[..., MLP]:
    """Factory of small nested MLPs with seeded initial weights.

    ``tiny_mlp(in_features=6, hidden=(8,), out_features=3, *, groups=4, seed=0, **options)``
    returns ``bayes_nest.models.MLP(in_features, list(hidden), out_features, groups=groups,
    **options)`` initialised from ``torch.manual_seed(seed)`` inside `torch.random.fork_rng`,
    so the weights depend on ``seed`` only and torch's global generator is left as it was.
    """
    from bayes_nest.models import MLP

    def make(
        in_features: int = 6,
        hidden: Sequence[int] = (8,),
        out_features: int = 3,
        *,
        groups: int = 4,
        seed: int = 0,
        **options: Any,
    ) -> MLP:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MLP(in_features, list(hidden), out_features, groups=groups, **options)

    return make


def _trained(method: str, bundle: DataBundle, **options: Any) -> Iterator[TrainedModel]:
    from bayes_nest.pipeline import ModelSpec, fit

    spec = ModelSpec("mlp", {"hidden": [16, 16], "groups": 4})
    model = fit(spec, bundle, method, progress=False, seed=0, **options)
    before = model.fingerprint()
    yield model
    _check_unchanged(f"trained_{method}", before, model.fingerprint())


@pytest.fixture(scope="session")
def trained_fn3(digits: DataBundle) -> Iterator[TrainedModel]:
    """A nested MLP trained with FN3 (3 epochs on ``digits``, seed 0)."""
    yield from _trained("fn3", digits, epochs=3)


@pytest.fixture(scope="session")
def trained_bnnn(digits: DataBundle) -> Iterator[TrainedModel]:
    """A nested MLP trained as a BNNN (2 epochs on ``digits``, seed 0, 3 samples per
    prediction)."""
    yield from _trained("bnnn", digits, epochs=2, predict_samples=3)
