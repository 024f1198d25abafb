import random
import socket

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bayes_nest.data import (
    CORRUPTIONS,
    DataBundle,
    Split,
    as_loader,
    corrupt,
    from_arrays,
    held_out_classes,
    load_dataset,
    load_file,
    loaders,
)
from bayes_nest.data import builtin as bn_builtin
from bayes_nest.testing import assert_close


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data, d.target


def _raw(bundle, split):
    return (split.x.double() * bundle.std.double() + bundle.mean.double()).numpy()


def _sorted_rows(a):
    a = np.round(np.asarray(a, dtype=np.float64).reshape(len(a), -1), 4)
    return a[np.lexsort(a.T[::-1])]


# ----------------------------------------------------------------------------- built-in data


def test_digits_split_sizes_and_partition(digits, sk_digits):
    n = len(sk_digits[1])
    assert (len(digits.test.y), len(digits.val.y)) == (round(0.2 * n), round(0.1 * n))
    assert len(digits.train.y) + len(digits.val.y) + len(digits.test.y) == n
    # the three splits together are exactly sklearn's examples, each used once
    all_raw = np.concatenate([_raw(digits, s) for s in digits.splits.values()])
    np.testing.assert_allclose(_sorted_rows(all_raw), _sorted_rows(sk_digits[0]), atol=1e-3)
    assert digits.num_classes == 10 and digits.input_shape == (64,) and digits.name == "digits"
    assert digits.train.x.dtype == torch.float32 and digits.train.y.dtype == torch.int64


def test_digits_stratified(digits, sk_digits):
    class_sizes = np.bincount(sk_digits[1])
    for split, frac in ((digits.test, 0.2), (digits.val, 0.1), (digits.train, 0.7)):
        counts = np.bincount(split.y.numpy(), minlength=10)
        assert np.all(np.abs(counts - frac * class_sizes) <= 1.5), (counts, frac * class_sizes)


def test_split_determinism():
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=np.int64(3))
    c = load_dataset("digits", seed=4)
    for key in ("train", "val", "test"):
        assert torch.equal(a.splits[key].x, b.splits[key].x)
        assert torch.equal(a.splits[key].y, b.splits[key].y)
    assert not torch.equal(a.test.y, c.test.y)


def test_digits_image_shape(digits):
    img = load_dataset("digits", flat=False)
    assert img.input_shape == (1, 8, 8) and img.train.x.shape[1:] == (1, 8, 8)
    assert_close(img.train.x.reshape(len(img.train.x), -1), digits.train.x)


def test_standardization_uses_train_statistics_only():
    n = 300
    raw = np.stack([np.arange(n, dtype=float), (np.arange(n) % 7) ** 2.0], axis=1)
    y = np.arange(n) % 3
    b = from_arrays(raw, y, seed=1)
    # recover which raw rows landed in train from the first feature (the row index)
    train_idx = np.round(_raw(b, b.train)[:, 0]).astype(int)
    assert_close(b.mean, raw[train_idx].mean(0), dtype=torch.float32)
    assert_close(b.std, raw[train_idx].std(0), dtype=torch.float32)
    assert not np.allclose(b.mean.numpy(), raw.mean(0), rtol=1e-4)
    # float32 sums over the training rows
    assert_close(b.train.x.mean(0), torch.zeros(2), scale=10)
    assert_close(b.train.x.std(0, unbiased=False), torch.ones(2), scale=10)
    assert_close(b.transform(raw[train_idx]), b.train.x)


def test_standardize_options_and_constant_feature():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(200, 3))
    x[:, 1] = 5.0
    y = np.arange(200) % 2
    b = from_arrays(x, y)
    assert b.std[1] == 1.0 and torch.all(b.train.x[:, 1] == 0)
    g = from_arrays(x, y, standardize="global")
    assert g.mean.shape == () and g.std.shape == ()
    assert abs(float(g.train.x.mean())) < 1e-5 and abs(float(g.train.x.std()) - 1) < 1e-2
    none = from_arrays(x, y, standardize=None)
    raw_train = _sorted_rows(none.train.x.numpy())
    assert np.isin(raw_train[:, 0], np.round(x[:, 0], 4)).all()
    with pytest.raises(ValueError, match="standardize"):
        from_arrays(x, y, standardize="minmax")


def test_mnist1d_offline_matches_package(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    bn_builtin._mnist1d_raw.cache_clear()
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002
    m = load_dataset("mnist1d")
    assert np.array_equal(np.random.get_state()[1], np_before)  # noqa: NPY002
    assert random.getstate() == py_before
    assert m.input_shape == (40,) and m.num_classes == 10
    counts = sum(np.bincount(s.y.numpy(), minlength=10) for s in m.splits.values())
    assert counts.tolist() == [500] * 10
    assert np.bincount(m.test.y.numpy()).tolist() == [100] * 10
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    ref_x = np.concatenate([ref["x"], ref["x_test"]])
    all_raw = np.concatenate([_raw(m, s) for s in m.splits.values()])
    np.testing.assert_allclose(_sorted_rows(all_raw), _sorted_rows(ref_x), atol=1e-3)
    conv = load_dataset("mnist-1d", flat=False)
    assert conv.input_shape == (1, 40) and conv.train.x.shape[1:] == (1, 40)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


# ----------------------------------------------------------------------------- user arrays


def test_from_arrays_torch_and_explicit_splits():
    x, y = torch.randn(60, 2, 3), torch.arange(60) % 3
    b = from_arrays(x, y, val=(torch.randn(5, 2, 3), [0, 1, 2, 0, 1]), test=(x[:7], y[:7]))
    assert len(b.train.y) == 60 and len(b.val.y) == 5 and len(b.test.y) == 7
    assert b.input_shape == (2, 3) and b.num_classes == 3
    assert isinstance(b.train, Split) and "train=60" in repr(b)


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (np.ones((10, 2)), np.zeros(9), {}, "10 examples but its labels have 9"),
        (np.ones(10), np.zeros(10), {}, "ndim >= 2"),
        (np.ones((10, 2)), np.zeros((10, 1)), {}, r"y must have shape \(N,\)"),
        (np.array([[np.nan, 1.0]] * 3 + [[0, np.inf]] * 7), np.arange(10) % 2, {}, "3 NaN and 7"),
        (np.ones((10, 2)), np.arange(10) % 2 + 0.5, {}, "10 non-integer labels"),
        (np.ones((10, 2)), np.arange(10) - 1, {}, "1 negative labels"),
        (np.ones((10, 2)), np.arange(10), {"num_classes": 4}, "6 unknown labels"),
        (np.ones((10, 2)), np.array([0, 2] * 5), {}, "class 1 has no example"),
        (np.ones((10, 2)), np.arange(10) % 2, {"test_fraction": 1.2}, "test_fraction"),
        (np.ones((10, 2)), np.arange(10) % 2, {"val_fraction": 0.5, "test_fraction": 0.5}, "no"),
        (np.ones((10, 2)), np.zeros(10), {}, "at least 2 classes"),
        (np.ones((10, 2)), np.array([np.nan] + [0, 1] * 4 + [1]), {}, "1 NaN or infinite"),
    ],
)
def test_from_arrays_rejects_bad_input(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        from_arrays(x, y, **kwargs)


def test_from_arrays_rejects_non_numeric():
    with pytest.raises(TypeError, match="numeric"):
        from_arrays(np.array([["a", "b"]] * 4), np.arange(4) % 2)


def test_class_missing_from_train_when_not_stratified_warns():
    y = np.array([0, 1] * 10 + [2])
    with pytest.raises(ValueError, match="class 2 has no example"):
        from_arrays(np.ones((21, 1)), y, test_fraction=0.5, seed=0)
    with pytest.warns(UserWarning, match="class 2"):
        for seed in range(50):  # some seed puts the single class-2 example outside train
            b = from_arrays(np.ones((21, 1)), y, stratify=False, test_fraction=0.5, seed=seed)
            if 2 not in b.train.y:
                break


# ----------------------------------------------------------------------------- files


def test_load_npz(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:6], y_test=y[:6])
    b = load_file(tmp_path / "d.npz", seed=2)
    assert b.name == "d" and len(b.test.y) == 6 and len(b.train.y) + len(b.val.y) == 50
    np.savez(tmp_path / "e.npz", inputs=x, labels=y)
    e = load_file(tmp_path / "e.npz", x_key="inputs", y_key="labels", test_fraction=0.2)
    assert len(e.test.y) == 10
    with pytest.raises(ValueError, match="no array 'x'.*inputs"):
        load_file(tmp_path / "e.npz")
    x[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=y)
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        load_file(tmp_path / "nan.npz")
    np.savez(tmp_path / "bad.npz", x=np.ones((50, 2)), y=y[:40])
    with pytest.raises(ValueError, match="50 examples but its labels have 40"):
        load_file(tmp_path / "bad.npz")


def test_load_file_missing_and_unsupported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_file(tmp_path / "nope.npz")
    (tmp_path / "d.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_file(tmp_path / "d.txt")


def test_load_csv(tmp_path):
    rows = [f"{i * 0.5},{i % 3},{-i}" for i in range(30)]
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\n")
    b = load_file(tmp_path / "plain.csv", label_column=1, standardize=None)
    assert b.num_classes == 3 and b.input_shape == (2,)
    all_x = np.concatenate([s.x.numpy() for s in b.splits.values()])
    all_y = np.concatenate([s.y.numpy() for s in b.splits.values()])
    order = np.argsort(all_x[:, 0])
    np.testing.assert_allclose(all_x[order, 1], -np.arange(30))
    assert all_y[order].tolist() == [i % 3 for i in range(30)]
    (tmp_path / "head.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    h = load_file(tmp_path / "head.csv", label_column="b", standardize=None)
    assert h.num_classes == 3 and len(h.train.y) + len(h.val.y) + len(h.test.y) == 30
    with pytest.raises(ValueError, match="label_column 'c'"):
        load_file(tmp_path / "head.csv", label_column="c")


@pytest.mark.parametrize(
    "text, match",
    [
        ("1,0\n2,x\n3,1\n", r"line 2, column 2: non-numeric label 'x'"),
        ("1,0\n,1\n3,1\n", r"line 2, column 1: non-numeric value ''"),
        ("1,0\n2,1,5\n", "line 2 has 3 columns, expected 2"),
        ("1,0.5\n2,1\n3,1\n4,0\n", "1 non-integer labels"),
        ("1,0\n2,7\n3,1\n4,0\n", "unknown labels"),
        ("a,b\n", "no data rows"),
        ("\n\n", "no data rows"),
        ("nan,0\n1,1\n2,0\n3,1\n", "x contains 1 NaN"),
        ("1\n0\n", "at least one feature column"),
    ],
)
def test_load_csv_bad_input(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    kwargs = {"num_classes": 2} if "7" in text else {}
    with pytest.raises(ValueError, match=match):
        load_file(tmp_path / "bad.csv", test_fraction=0.0, val_fraction=0.0, **kwargs)


# ----------------------------------------------------------------------------- loaders


def test_loaders_seeded_and_complete(digits):
    first = loaders(digits, 100, seed=5)
    again = loaders(digits, 100, seed=5)
    other = loaders(digits, 100, seed=6)
    batches = [y for _, y in first.train]
    assert [len(b) for b in batches][:-1] == [100] * (len(batches) - 1)
    assert len(first.train.dataset) == len(digits.train.y)
    # one epoch visits every training example exactly once
    xs = torch.cat([x for x, _ in again.train])
    assert torch.equal(torch.sort(xs[:, 10]).values, torch.sort(digits.train.x[:, 10]).values)
    assert torch.equal(
        torch.cat(batches), torch.cat([y for _, y in loaders(digits, 100, seed=5).train])
    )
    assert not torch.equal(torch.cat(batches), torch.cat([y for _, y in other.train]))
    # evaluation loaders keep the split order
    assert torch.equal(torch.cat([y for _, y in first.test]), digits.test.y)
    # a second epoch draws a new order from the same generator
    assert not torch.equal(torch.cat([y for _, y in first.train]), torch.cat(batches))
    fixed = loaders(digits, 64, shuffle_train=False)
    assert torch.equal(torch.cat([y for _, y in fixed.train]), digits.train.y)


def test_as_loader_inputs():
    x, y = np.random.default_rng(0).normal(size=(10, 3)), np.arange(10) % 2
    dl = as_loader((x, y), 4)
    xb, yb = next(iter(dl))
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64 and xb.shape == (4, 3)
    assert as_loader(dl) is dl
    ds = torch.utils.data.TensorDataset(torch.randn(7, 2), torch.zeros(7, dtype=torch.long))
    assert sum(len(b[1]) for b in as_loader(ds, 3)) == 7
    assert isinstance(as_loader(Split(torch.randn(5, 2), torch.arange(5)), 2), DataLoader)
    with pytest.raises(TypeError, match="bundle.train"):
        as_loader(from_arrays(x, y))
    with pytest.raises(TypeError, match="DataLoader"):
        as_loader(x)
    with pytest.raises(ValueError, match="batch_size"):
        as_loader((x, y), 0)
    with pytest.raises(ValueError, match="10 examples but y has 9"):
        as_loader((torch.randn(10, 2), torch.zeros(9)))


# ----------------------------------------------------------------------------- OOD helpers


def test_held_out_classes(digits):
    held = held_out_classes(digits, [7, 3])
    ind, ood, class_map = held
    assert class_map == {0: 0, 1: 1, 2: 2, 4: 3, 5: 4, 6: 5, 8: 6, 9: 7}
    assert ind.num_classes == 8 and ind.class_names == ("0", "1", "2", "4", "5", "6", "8", "9")
    inverse = torch.tensor(list(class_map))
    for key, split in digits.splits.items():
        keep = ~torch.isin(split.y, torch.tensor([3, 7]))
        assert torch.equal(inverse[ind.splits[key].y], split.y[keep])
        assert torch.equal(ood.splits[key].y, split.y[~keep])
        # raw inputs are unchanged, only re-standardized with in-distribution training stats
        np.testing.assert_allclose(_raw(ind, ind.splits[key]), _raw(digits, split)[keep], atol=1e-4)
        np.testing.assert_allclose(
            _raw(ood, ood.splits[key]), _raw(digits, split)[~keep], atol=1e-4
        )
    assert_close(ind.train.x.mean(0), torch.zeros(ind.train.x.shape[1]), scale=10)
    assert set(ood.test.y.tolist()) == {3, 7} and ood.num_classes == 10
    single = held_out_classes(digits, 9)
    assert single.in_distribution.num_classes == 9 and set(single.ood.val.y.tolist()) == {9}
    with pytest.raises(ValueError, match="classes must be labels"):
        held_out_classes(digits, [10])
    with pytest.raises(ValueError, match="at least 2 must remain"):
        held_out_classes(digits, range(9))


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_shape_dtype_seeded(kind):
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 + 1
    out = corrupt(x, kind, 0.7, seed=1)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, corrupt(x, kind, 0.7, seed=1))
    assert torch.equal(corrupt(x, kind, 0.0, seed=1), x)
    if kind != "invert":
        assert not torch.equal(out, corrupt(x, kind, 0.7, seed=2))
    arr = corrupt(x.numpy().astype(np.float64), kind, seed=1)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.shape == x.shape


@pytest.mark.parametrize("kind", ["gaussian_noise", "uniform_noise"])
def test_pure_noise_matches_statistics(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 5, generator=g) * torch.tensor([1.0, 2, 3, 4, 5]) + 10
    out = corrupt(x, kind, 1.0, seed=3)
    # per-feature mean and std preserved (standard error of the mean ~ sigma / 63)
    assert_close(out.mean(0), x.mean(0), atol=0.2, rtol=0)
    assert_close(out.std(0), x.std(0), rtol=0.05, atol=0)
    # pure noise: no correlation left with the original inputs
    corr = torch.corrcoef(torch.stack([out[:, 0], x[:, 0]]))[0, 1]
    assert abs(float(corr)) < 0.1
    half = corrupt(x, kind, 0.6, seed=3)
    corr = torch.corrcoef(torch.stack([half[:, 0], x[:, 0]]))[0, 1]
    assert abs(float(corr) - 0.8) < 0.05  # sqrt(1 - 0.6^2)
    if kind == "uniform_noise":
        z = (out - x.mean(0)) / x.std(0)
        assert float(z.abs().max()) <= 3**0.5 + 0.05


def test_shuffle_and_invert_exact():
    x = torch.randn(16, 30, generator=torch.Generator().manual_seed(1))
    shuffled = corrupt(x, "shuffle_pixels", 1.0)
    assert torch.equal(shuffled.sort(1).values, x.sort(1).values)
    partial = corrupt(x, "shuffle_pixels", 0.2, seed=4)
    assert ((partial != x).sum(1) <= 6).all()
    assert torch.equal(partial.sort(1).values, x.sort(1).values)
    inverted = corrupt(x, "invert")
    expected = x.max(1, keepdim=True).values + x.min(1, keepdim=True).values - x
    assert_close(inverted, expected)
    assert_close(corrupt(inverted, "invert"), x)


def test_corrupt_rejects_bad_arguments():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="unknown corruption kind 'blur'"):
        corrupt(x, "blur")
    with pytest.raises(ValueError, match="severity must be in"):
        corrupt(x, "invert", 1.5)
    with pytest.raises(ValueError, match="N >= 2"):
        corrupt(x[:1], "gaussian_noise")
    with pytest.raises(ValueError, match="float array"):
        corrupt(torch.arange(4), "invert")


def test_bundle_type(digits):
    assert isinstance(digits, DataBundle) and digits.num_features == 64
    with pytest.raises(ValueError, match="input_shape"):
        digits.transform(np.zeros((2, 8, 8)))
