"""The tolerance helper: accepts reordering noise, rejects real differences, names them."""

import numpy as np
import pytest
import torch

from bayes_nest.testing import argmax_margin, assert_close, tolerances


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reordered_sums_pass(dtype):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(10_000, generator=generator, dtype=dtype)
    assert_close(values.sum(), values[torch.randperm(10_000, generator=generator)].sum(), scale=10)
    assert_close(values.reshape(100, 100).sum(0).sum(), values.sum(), scale=10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_differences_above_tolerance_fail_and_are_named(dtype):
    rtol, atol = tolerances(dtype)
    expected = torch.tensor([1.0, 2.0, 3.0], dtype=dtype)
    actual = expected.clone()
    actual[1] += 2.0 * (atol + rtol * 2.0) + 1e-3 * float(dtype == torch.float32)
    with pytest.raises(AssertionError, match="1 of 3 values differ at flat index 1"):
        assert_close(actual, expected)
    assert_close(actual, expected, scale=1e4)


def test_float64_tolerance_is_tighter_than_float32():
    assert tolerances(torch.float64)[0] < tolerances(torch.float32)[0]
    assert tolerances(np.float32) == tolerances(torch.float32)
    assert tolerances(torch.int64) == (0.0, 0.0)
    with pytest.raises(AssertionError):
        assert_close(1.0 + 1e-7, 1.0)
    assert_close(1.0 + 1e-7, 1.0, dtype=torch.float32)


def test_shapes_nans_and_containers():
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_close(torch.zeros(2), torch.zeros(3))
    assert_close(torch.tensor([float("nan"), float("inf")]), np.array([np.nan, np.inf]))
    with pytest.raises(AssertionError, match="NaNs in different places"):
        assert_close(torch.tensor([float("nan")]), torch.tensor([0.0]))
    with pytest.raises(AssertionError, match=r"\['nll'\]"):
        assert_close({"acc": 0.5, "nll": 1.0}, {"acc": 0.5, "nll": 1.1})
    with pytest.raises(AssertionError, match="keys differ"):
        assert_close({"acc": 0.5}, {"nll": 0.5})
    assert_close([1, 2.0, 3], (1.0, 2.0, 3.0))
    assert_close(torch.tensor([0.1, 0.2]), [0.1, 0.2])  # float32 values against exact numbers
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_close(torch.tensor([0.1, 0.2]), [0.1, 0.2, 0.3])
    with pytest.raises(AssertionError, match="values differ"):
        assert_close(np.array([0.1, 0.2]), [0.1, 0.2 + 1e-9])
    assert_close(torch.tensor([[2.0, 0.7], [20.0, 0.9]]), [[2, 0.7], [20, 0.9]])
    assert_close(np.arange(4.0)[::-1], torch.tensor([3.0, 2.0, 1.0, 0.0]))  # a reversed view
    with pytest.raises(AssertionError, match=r"shapes differ: \(\) vs \(1,\)"):
        assert_close(torch.tensor(1.0), [1.0])
    assert_close(torch.tensor([1, 2]), torch.tensor([1, 2]))
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([1, 2]), torch.tensor([1, 3]))


def test_argmax_margin_is_the_gap_between_the_two_largest_entries():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 50, 7, generator=generator)
    ordered = scores.sort(dim=-1, descending=True).values
    assert_close(argmax_margin(scores), ordered[..., 0] - ordered[..., 1], rtol=0, atol=0)
    assert argmax_margin(torch.tensor([[0.4, 0.2, 0.4]])).tolist() == [0.0]
    with pytest.raises(ValueError, match=r"\(5, 1\)"):
        argmax_margin(torch.zeros(5, 1))
