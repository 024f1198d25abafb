"""Helpers shared by the property tests: Hypothesis settings with a bounded example count, and
strategies for the inputs the package promises to handle.

Two Hypothesis profiles are registered here (never loaded globally, so other test folders keep
Hypothesis' defaults): ``property`` (bounded and derandomized: the CI default) and
``property-long`` (ten times the examples, random seeds). Choose one with the environment
variable ``BAYES_NEST_PROPERTY_PROFILE=property-long``.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("property", derandomize=True, **_COMMON)
settings.register_profile("property-long", derandomize=False, **_COMMON)

PROFILE = os.environ.get("BAYES_NEST_PROPERTY_PROFILE", "property")
SCALE = 10 if PROFILE == "property-long" else 1

KEEP_MIN, KEEP_MAX = 1e-6, 1.0 - 1e-6
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.05, 10.0


def examples(n: int) -> settings:
    """Settings of the active profile with ``n`` examples (``10 n`` under ``property-long``)."""
    return settings(settings.get_profile(PROFILE), max_examples=n * SCALE)


dtypes = st.sampled_from([torch.float32, torch.float64])
temperatures = st.one_of(
    st.sampled_from([TEMPERATURE_MIN, TEMPERATURE_MAX, 1.0]),
    st.floats(TEMPERATURE_MIN, TEMPERATURE_MAX),
)
num_blocks = st.one_of(st.sampled_from([1, 2, 256]), st.integers(1, 256))


@st.composite
def keep_probs(draw, d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Keep probabilities in ``[1e-6, 1 - 1e-6]^d``: constant, extreme (each entry at an end),
    random in logit space, or small lists drawn entry by entry."""
    kind = draw(st.sampled_from(["constant", "extreme", "random", "entries"]))
    if kind == "constant":
        value = draw(
            st.one_of(st.sampled_from([KEEP_MIN, KEEP_MAX, 0.5]), st.floats(KEEP_MIN, KEEP_MAX))
        )
        probs = torch.full((d,), value, dtype=torch.float64)
    elif kind == "entries" and d <= 16:
        values = draw(st.lists(st.floats(KEEP_MIN, KEEP_MAX), min_size=d, max_size=d))
        probs = torch.tensor(values, dtype=torch.float64)
    else:
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        if kind == "extreme":
            ends = torch.tensor([KEEP_MIN, KEEP_MAX], dtype=torch.float64)
            probs = ends[torch.randint(0, 2, (d,), generator=g)]
        else:
            bound = float(torch.logit(torch.tensor(KEEP_MAX, dtype=torch.float64)))
            logits = (2 * torch.rand(d, generator=g, dtype=torch.float64) - 1) * bound
            probs = torch.sigmoid(logits).clamp(KEEP_MIN, KEEP_MAX)
    return probs.to(dtype)
