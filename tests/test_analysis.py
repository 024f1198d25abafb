import types

import numpy as np
import pandas as pd
import pytest
import torch

az = pytest.importorskip("arviz")
xr = pytest.importorskip("xarray")

from bayes_nest import analysis  # noqa: E402
from bayes_nest.testing import assert_close  # noqa: E402

S, N, K = 120, 6, 3


def _samples(seed=0):
    g = torch.Generator().manual_seed(seed)
    posterior = {
        "keep_probs/layers.0": torch.rand(S, 4, generator=g),
        "keep_probs/layers.1": torch.rand(S, 3, generator=g),
        "keep_count/layers.0": torch.randint(0, 5, (S,), generator=g),
        "w": torch.randn(S, 2, 5, generator=g, dtype=torch.float64),
    }
    probs = torch.softmax(torch.randn(S, N, K, generator=g), -1)
    return posterior, {"probs": probs}, {"labels": torch.arange(N) % K}


def _group(data, name):
    return getattr(data, name) if hasattr(data, "groups") else data[name].to_dataset()


def test_round_trip_values_dims_and_coords():
    posterior, predictive, observed = _samples()
    data = analysis.to_arviz(
        posterior,
        posterior_predictive=predictive,
        observed_data=observed,
        coords={"class": ["a", "b", "c"]},
    )
    post = _group(data, "posterior")
    assert set(post.data_vars) == {
        "keep_probs.layers.0",
        "keep_probs.layers.1",
        "keep_count.layers.0",
        "w",
    }
    keep0 = post["keep_probs.layers.0"]
    assert keep0.dims == ("chain", "draw", "layers.0_block")
    # exact: the draws are copied (float32 widened to float64 exactly), not computed
    np.testing.assert_array_equal(keep0.values[0], posterior["keep_probs/layers.0"].numpy())
    assert post["keep_probs.layers.1"].dims == ("chain", "draw", "layers.1_block")
    assert post["keep_count.layers.0"].dims == ("chain", "draw")
    np.testing.assert_array_equal(
        post["keep_count.layers.0"].values[0], posterior["keep_count/layers.0"].numpy()
    )
    assert post["w"].dims == ("chain", "draw", "w_dim_0", "w_dim_1")
    assert post["w"].dtype == np.float64

    pred = _group(data, "posterior_predictive")["probs"]
    assert pred.dims == ("chain", "draw", "example", "class")
    assert list(pred["class"].values) == ["a", "b", "c"]
    np.testing.assert_array_equal(pred.values[0], predictive["probs"].numpy())
    labels = _group(data, "observed_data")["labels"]
    assert labels.dims == ("example",)
    np.testing.assert_array_equal(labels.values, observed["labels"].numpy())


def test_chains_split_and_given():
    posterior, _, _ = _samples()
    data = analysis.to_arviz(posterior, num_chains=4)
    keep = _group(data, "posterior")["keep_probs.layers.0"].values
    assert keep.shape == (4, S // 4, 4)
    np.testing.assert_array_equal(keep.reshape(S, 4), posterior["keep_probs/layers.0"].numpy())
    by_chain = {k: v.reshape(2, S // 2, *v.shape[1:]) for k, v in posterior.items()}
    data = analysis.to_arviz(by_chain, num_chains=None)
    np.testing.assert_array_equal(_group(data, "posterior")["w"].values, by_chain["w"].numpy())


def test_user_dims_override_defaults_in_either_spelling():
    posterior, _, _ = _samples()
    data = analysis.to_arviz(
        posterior,
        dims={"keep_probs/layers.0": ["unit"], "w": ["row", "col"]},
        coords={"unit": [10, 11, 12, 13]},
    )
    post = _group(data, "posterior")
    assert post["keep_probs.layers.0"].dims == ("chain", "draw", "unit")
    assert list(post["unit"].values) == [10, 11, 12, 13]
    assert post["w"].dims == ("chain", "draw", "row", "col")
    data = analysis.to_arviz(posterior, dims={"keep_probs.layers.0": ["unit"]})
    assert _group(data, "posterior")["keep_probs.layers.0"].dims[-1] == "unit"


def test_numpy_and_requires_grad_inputs():
    w = torch.randn(10, 2, requires_grad=True)
    data = analysis.to_arviz({"w": w, "b": np.arange(10.0)})
    np.testing.assert_array_equal(_group(data, "posterior")["w"].values[0], w.detach().numpy())


def test_netcdf_round_trip(tmp_path):
    pytest.importorskip("h5netcdf")
    posterior, predictive, observed = _samples()
    data = analysis.to_arviz(posterior, posterior_predictive=predictive, observed_data=observed)
    path = tmp_path / "posterior.nc"
    data.to_netcdf(str(path), engine="h5netcdf")
    loaded = az.from_netcdf(str(path), engine="h5netcdf")
    np.testing.assert_array_equal(
        loaded.posterior["keep_probs.layers.1"].values[0],
        posterior["keep_probs/layers.1"].numpy(),
    )


def test_arviz_name():
    assert analysis.arviz_name("keep_probs/layers.0") == "keep_probs.layers.0"
    assert analysis.arviz_name("a/b/c") == "a.b.c"
    assert analysis.arviz_name("plain") == "plain"
    with pytest.raises(TypeError):
        analysis.arviz_name("")


# ----------------------------------------------------------------------------- summary


def test_summary_means_match_numpy():
    posterior, predictive, _ = _samples()
    data = analysis.to_arviz(posterior, posterior_predictive=predictive)
    table = analysis.summary(data)
    assert list(table.columns) == ["mean", "sd", "hdi_lower", "hdi_upper"]
    keep = posterior["keep_probs/layers.0"].double().numpy()
    for i in range(4):
        row = table.loc[f"keep_probs.layers.0[{i}]"]
        # ArviZ summarizes the float32 draws in float32
        assert_close(row["mean"], keep[:, i].mean(), dtype=torch.float32)
        ddof = 1 if analysis._arviz_major(az) == 0 else 0  # ArviZ 0.2x: sample sd
        assert_close(row["sd"], keep[:, i].std(ddof=ddof), dtype=torch.float32)
        assert keep[:, i].min() <= row["hdi_lower"] < row["mean"] < row["hdi_upper"]
    count = posterior["keep_count/layers.0"].double().numpy()
    assert_close(table.loc["keep_count.layers.0", "mean"], count.mean(), dtype=torch.float32)
    assert len(table) == 4 + 3 + 1 + 10

    pred = analysis.summary(data, group="posterior_predictive", var_names=["probs"])
    expected = predictive["probs"].double().mean(0).numpy().ravel()
    assert_close(pred["mean"].to_numpy(), expected, dtype=torch.float32)


def test_summary_interval_probability_and_rounding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    data = analysis.to_arviz({"x": x})
    wide = analysis.summary(data, ci_prob=0.95).loc["x"]
    narrow = analysis.summary(data, ci_prob=0.5).loc["x"]
    assert wide["hdi_lower"] < narrow["hdi_lower"] < narrow["hdi_upper"] < wide["hdi_upper"]
    assert wide["hdi_upper"] - wide["hdi_lower"] == pytest.approx(2 * 1.96, rel=0.1)
    rounded = analysis.summary(data, round_to=1).loc["x", "mean"]
    assert rounded == round(x.mean(), 1)


def test_summary_diagnostics_and_var_names_in_package_spelling():
    posterior, _, _ = _samples()
    data = analysis.to_arviz(posterior, num_chains=2)
    table = analysis.summary(data, var_names=["keep_count/layers.0"], kind="all")
    assert list(table.index) == ["keep_count.layers.0"]
    assert {"ess_bulk", "r_hat", "hdi_lower"} <= set(table.columns)
    assert np.isfinite(table.loc["keep_count.layers.0", "r_hat"])  # two chains


def test_summary_of_draws_without_chain_dimension():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(300, 2))
    ds = xr.Dataset({"w": (("sample", "w_dim_0"), values)})
    tree = xr.DataTree.from_dict({"posterior": ds})
    for data in (ds, tree, xr.Dataset({"w": (("draw", "w_dim_0"), values)})):
        table = analysis.summary(data)
        assert_close(table["mean"].to_numpy(), values.mean(0))


def test_summary_validation():
    data = analysis.to_arviz({"x": np.zeros(10)})
    with pytest.raises(ValueError, match="kind"):
        analysis.summary(data, kind="everything")
    with pytest.raises(ValueError, match="ci_prob"):
        analysis.summary(data, ci_prob=1.0)
    with pytest.raises(ValueError, match="no group 'posterior_predictive'"):
        analysis.summary(data, group="posterior_predictive")
    with pytest.raises(ValueError, match="var_names"):
        analysis.summary(data, var_names=["y"])
    with pytest.raises(TypeError, match="data must be"):
        analysis.summary({"x": np.zeros(3)})
    with pytest.raises(ValueError, match="sample dimensions"):
        analysis.summary(xr.Dataset({"x": (("obs",), np.zeros(3))}))


def test_to_arviz_validation():
    with pytest.raises(ValueError, match="num_chains"):
        analysis.to_arviz({"x": np.zeros(10)}, num_chains=0)
    with pytest.raises(ValueError, match="not divisible"):
        analysis.to_arviz({"x": np.zeros(10)}, num_chains=3)
    with pytest.raises(ValueError, match="non-empty mapping"):
        analysis.to_arviz({})
    with pytest.raises(ValueError, match=r"\(chain, draw\)"):
        analysis.to_arviz({"x": np.zeros(10)}, num_chains=None)
    with pytest.raises(ValueError, match="both map to 'a.b'"):
        analysis.to_arviz({"a/b": np.zeros(4), "a.b": np.zeros(4)})
    with pytest.raises(ValueError, match="dims names 'y'"):
        analysis.to_arviz({"x": np.zeros((4, 2))}, dims={"y": ["d"]})
    with pytest.raises(TypeError, match="numeric"):
        analysis.to_arviz({"x": [object(), object()]})


# ----------------------------------------------------------------------------- version dispatch


def _fake_arviz(version, calls):
    """A stand-in ArviZ module recording how it is called; ``from_dict`` builds the result with
    xarray the way the respective API would (DataTree for 1.x, InferenceData for 0.x)."""

    def build(groups, dims, coords):
        datasets = {}
        for group, variables in groups.items():
            lead = [] if "data" in group else ["chain", "draw"]
            data_vars = {}
            for name, value in variables.items():
                var_dims = lead + list(dims.get(name, []))
                var_dims += [f"{name}_dim_{i}" for i in range(value.ndim - len(var_dims))]
                data_vars[name] = (var_dims, value)
            used = {d for v in data_vars.values() for d in v[0]}
            datasets[group] = xr.Dataset(
                data_vars, coords={d: c for d, c in coords.items() if d in used}
            )
        return datasets

    def from_dict(*args, **kwargs):
        calls.append(("from_dict", args, dict(kwargs)))
        if version.startswith("1."):
            (groups,) = args
            return xr.DataTree.from_dict(build(groups, kwargs["dims"], kwargs["coords"]))
        groups = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("dims", "coords")}
        return az.InferenceData(**build(groups, kwargs["dims"], kwargs["coords"]))

    def summary(ds, **kwargs):
        calls.append(("summary", (ds,), kwargs))
        names = ["hdi90_lb", "hdi90_ub"] if version.startswith("1.") else ["hdi_5%", "hdi_95%"]
        x = ds["x"].values.ravel()
        return pd.DataFrame(
            [[x.mean(), x.std(), x.min(), x.max()]], index=["x"], columns=["mean", "sd", *names]
        )

    return types.SimpleNamespace(__version__=version, from_dict=from_dict, summary=summary)


@pytest.mark.parametrize("version", ["1.3.0", "0.23.4"])
def test_version_dispatch(monkeypatch, version):
    calls = []
    fake = _fake_arviz(version, calls)
    monkeypatch.setattr(analysis, "_import_arviz", lambda: fake)
    data = analysis.to_arviz(
        {"x": np.arange(8.0), "keep_probs/a.b": np.full((8, 3), 0.5)},
        observed_data={"labels": np.array([0, 1])},
    )
    (_, args, kwargs) = calls[0]
    if version == "1.3.0":
        assert isinstance(data, xr.DataTree)
        assert set(args[0]) == {"posterior", "observed_data"}
        assert "posterior" not in kwargs
    else:
        assert isinstance(data, az.InferenceData)
        assert args == () and {"posterior", "observed_data"} <= set(kwargs)
    assert kwargs["dims"] == {"keep_probs.a.b": ["a.b_block"], "labels": ["example"]}
    post = _group(data, "posterior")
    assert post["keep_probs.a.b"].dims == ("chain", "draw", "a.b_block")

    table = analysis.summary(data, ci_prob=0.9)
    (_, (ds,), kwargs) = calls[1]
    assert ("chain", "draw") == ds["x"].dims
    if version == "1.3.0":
        assert kwargs == {"kind": "stats", "ci_prob": 0.9, "ci_kind": "hdi", "round_to": "none"}
    else:
        assert kwargs == {"kind": "stats", "hdi_prob": 0.9, "round_to": "none"}
    assert list(table.columns) == ["mean", "sd", "hdi_lower", "hdi_upper"]
    assert_close(table.loc["x", "mean"], 3.5)


def test_unparsable_version():
    with pytest.raises(RuntimeError, match="version"):
        analysis._arviz_major(types.SimpleNamespace(__version__="dev"))


# ----------------------------------------------------------------------------- tutorial


def test_tutorial_code_runs(tmp_path, monkeypatch):
    """The code of docs/tutorials/arviz.md runs top to bottom and prints what the page shows."""
    pytest.importorskip("matplotlib")
    import contextlib
    import io
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "arviz.md"
    if not page.exists():
        pytest.skip("tutorial not found")
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(page), "exec"), namespace)
    printed = out.getvalue()
    ece = float(re.search(r"^ECE +([0-9.]+)$", printed, re.M).group(1))
    ece_single = float(re.search(r"ECE of a single draw ([0-9.]+)", printed).group(1))
    assert ece < ece_single  # the claim the page makes about averaging draws
    assert re.search(r"^keep_count\.hidden\.1 +[0-9.]+ +[0-9.]+", printed, re.M)
    for png in ("keep_probabilities.png", "reliability.png", "pareto_front.png"):
        assert (tmp_path / png).stat().st_size > 5000


def _fitted_bnnn():
    import pyro

    from bayes_nest.infer import BNNN
    from bayes_nest.models import MLP

    pyro.clear_param_store()
    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    bnnn = BNNN(MLP(4, [8], 3, groups=4), init_scale=0.05)
    bnnn.fit((x, y), epochs=5, batch_size=20, progress=False, seed=0)
    return bnnn, x, y


def test_from_bnnn_has_a_log_likelihood_group_that_loo_and_waic_read():
    bnnn, x, y = _fitted_bnnn()
    data = analysis.from_bnnn(
        bnnn, x, y, num_samples=40, weights=["output.weight", "hidden.0.affine.bias"]
    )
    ll = analysis._group_dataset(data, "log_likelihood")["obs"].values.reshape(40, 60)
    probs = analysis._group_dataset(data, "posterior_predictive")["probs"].values.reshape(40, 60, 3)
    # the log-likelihood of each draw is that of the draw's predicted class probabilities
    picked = np.take_along_axis(probs, y.numpy()[None, :, None], -1)[..., 0]
    assert_close(ll, np.log(picked), dtype=torch.float32)
    # WAIC by its definition: lppd - sum of the pointwise variances of the log-likelihood
    lppd = np.log(np.exp(ll).mean(0)).sum()
    expected = lppd - ll.var(0).sum()  # ArviZ: the variance over draws, ddof 0
    assert_close(float(az.waic(data).elpd_waic), float(expected))
    loo = az.loo(data)
    assert np.isfinite(loo.elpd_loo) and loo.elpd_loo <= lppd
    posterior = analysis._group_dataset(data, "posterior")
    assert posterior["output.weight"].values.reshape(40, 3, 8).std(0).min() > 0  # real draws
    assert "keep_probs.hidden.0" not in posterior  # a variational parameter, not a draw
    counts = posterior["keep_count.hidden.0"].values.reshape(-1)
    masks = posterior["mask.hidden.0"].values.reshape(40, 3)
    np.testing.assert_array_equal(counts, masks.sum(1) + 1)  # exact: sums of zeros and ones
    with pytest.raises(ValueError, match="no weight site"):
        analysis.from_bnnn(bnnn, x, y, num_samples=2, weights=["nope"])
