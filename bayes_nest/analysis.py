r"""Posterior samples to ArviZ, for diagnostics, summaries and plots.

[`to_arviz`][bayes_nest.analysis.to_arviz] works with both ArviZ APIs: on ArviZ 0.2x (Python
3.10/3.11) it returns an ``arviz.InferenceData``; on ArviZ ≥ 1.0 (Python ≥ 3.12) an
``xarray.DataTree``. Both hold the same groups (``posterior``, optionally
``posterior_predictive`` and ``observed_data``), variables, dimensions and coordinates, and
[`summary`][bayes_nest.analysis.summary] returns the same table from either.

Variable names. The package names per-axis quantities ``"<quantity>/<axis>"``, e.g.
``"keep_probs/layers.0"``. ArviZ 1.x (``DataTree``) and netCDF files forbid ``/`` in variable and
dimension names, so every name is mapped by [`arviz_name`][bayes_nest.analysis.arviz_name], which
replaces each ``/`` with ``.``: ``"keep_probs/layers.0"`` becomes ``"keep_probs.layers.0"``. The
mapping is the same on both ArviZ versions; ``dims``, ``coords`` and ``var_names`` accept either
spelling.

Default dimensions for the known variables (an entry in ``dims`` overrides them):

| variable | shape per draw | dimensions |
|---|---|---|
| ``keep_probs/<axis>``, ``keep_logits/<axis>``, ``mask/<axis>`` | ``(D,)`` | ``<axis>_block`` |
| ``keep_count/<axis>`` | ``()`` | none |
| ``probs``, ``logits`` | ``(N, K)`` | ``("example", "class")`` |
| ``labels`` (observed data, no draw dimension) | ``(N,)`` | ``("example",)`` |

Block dimensions are per axis because axes have different numbers of blocks.

SVI draws are independent samples, not a Markov chain: effective sample sizes and R-hat of such
draws are trivially good and say nothing about the fit of the variational posterior.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["arviz_name", "from_bnnn", "summary", "to_arviz"]

_BLOCK_QUANTITIES = ("keep_probs", "keep_logits", "mask")
_SCALAR_QUANTITIES = ("keep_count",)
_CLASS_PROBS = ("probs", "logits")
_LABELS = ("labels",)


def _import_arviz():
    try:
        with warnings.catch_warnings():  # 0.2x warns about the 1.0 refactor on import
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "bayes_nest.analysis needs ArviZ: pip install 'bayes_nest[arviz]'"
        ) from err
    return arviz


def _arviz_major(az) -> int:
    """Major version of an imported ArviZ module (``0`` for the legacy API)."""
    try:
        return int(str(az.__version__).split(".")[0])
    except ValueError as err:
        raise RuntimeError(f"cannot parse the ArviZ version {az.__version__!r}") from err


def arviz_name(name: str) -> str:
    """The ArviZ variable or dimension name used for ``name``: every ``/`` becomes ``.``.

    Parameters
    ----------
    name : str
        A package name such as ``"keep_probs/layers.0"``.

    Returns
    -------
    str
        E.g. ``"keep_probs.layers.0"``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"variable names must be non-empty strings, got {name!r}")
    return name.replace("/", ".")


def _default_dims(name: str, event_ndim: int, group: str) -> list[str] | None:
    quantity, _, axis = name.partition("/")
    if axis and quantity in _BLOCK_QUANTITIES and event_ndim == 1:
        return [f"{arviz_name(axis)}_block"]
    if axis and quantity in _SCALAR_QUANTITIES and event_ndim == 0:
        return []
    if name in _CLASS_PROBS and event_ndim == 2:
        return ["example", "class"]
    if name in _LABELS and group == "observed_data" and event_ndim == 1:
        return ["example"]
    if name == "obs" and event_ndim == 1:  # log_likelihood and observed_data of from_bnnn
        return ["example"]
    return None


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"{name} must be a numeric tensor or array, got {type(value).__name__}")
    return array


def _group(
    values: Mapping[str, Any] | None, group: str, num_chains: int | None
) -> dict[str, np.ndarray]:
    """Convert one group to numpy arrays of shape ``(chain, draw, ...)`` (or as is for data)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"{group} must be a mapping name -> array, got {type(values).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in values.items():
        key = arviz_name(name)
        if key in out:
            raise ValueError(f"{group}: names {name!r} and another one both map to {key!r}")
        array = _to_numpy(value, f"{group}[{name!r}]")
        if group != "observed_data":
            lead = 1 if num_chains is not None else 2
            if array.ndim < lead:
                raise ValueError(
                    f"{group}[{name!r}] must have a leading "
                    f"{'sample' if lead == 1 else '(chain, draw)'} dimension, "
                    f"got shape {array.shape}"
                )
            if num_chains is not None:
                if array.shape[0] % num_chains:
                    raise ValueError(
                        f"{group}[{name!r}] has {array.shape[0]} samples, not divisible into "
                        f"num_chains={num_chains} chains"
                    )
                array = array.reshape(num_chains, array.shape[0] // num_chains, *array.shape[1:])
        out[key] = array
    return out


def to_arviz(
    posterior: Mapping[str, Any],
    *,
    num_chains: int | None = 1,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Any] | None = None,
    posterior_predictive: Mapping[str, Any] | None = None,
    observed_data: Mapping[str, Any] | None = None,
    log_likelihood: Mapping[str, Any] | None = None,
):
    """Convert posterior samples to ArviZ data (``InferenceData`` on 0.2x, ``DataTree`` on 1.x).

    Parameters
    ----------
    posterior : mapping of str to tensor or array
        Posterior draws per variable, shape ``(S, ...)`` (``num_chains`` an int) or
        ``(chains, draws, ...)`` (``num_chains=None``).
    num_chains : int or None
        Split the ``S`` leading draws into this many consecutive chains of ``S / num_chains``
        draws (``1``: all draws form one chain, the usual case for SVI). ``None``: the arrays
        already have ``(chain, draw)`` leading dimensions, as from
        ``pyro.infer.MCMC.get_samples(group_by_chain=True)``.
    dims : mapping of str to list of str, optional
        Dimension names of the non-sample axes per variable; overrides the defaults listed in the
        module documentation. Variables without dims get ArviZ's ``<var>_dim_<i>``.
    coords : mapping of str to array, optional
        Coordinate values per dimension name (e.g. ``{"class": ["cat", "dog"]}``).
    posterior_predictive : mapping of str to tensor or array, optional
        Predictive draws (e.g. ``probs`` of shape ``(S, N, K)``), same leading layout as
        ``posterior``.
    observed_data : mapping of str to tensor or array, optional
        Data without sample dimensions (e.g. ``labels`` of shape ``(N,)``).
    log_likelihood : mapping of str to tensor or array, optional
        Pointwise log-likelihoods per draw, e.g. ``{"obs": (S, N)}``, same leading layout as
        ``posterior`` (what ``az.loo`` and ``az.waic`` read).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
    """
    if num_chains is not None and (
        isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1
    ):
        raise ValueError(f"num_chains must be a positive integer or None, got {num_chains!r}")
    if not isinstance(posterior, Mapping) or not posterior:
        raise ValueError("posterior must be a non-empty mapping name -> array of draws")
    groups: dict[str, dict[str, np.ndarray]] = {}
    originals: dict[str, tuple[str, str, int]] = {}
    for group, values in (
        ("posterior", posterior),
        ("posterior_predictive", posterior_predictive),
        ("log_likelihood", log_likelihood),
        ("observed_data", observed_data),
    ):
        converted = _group(values, group, num_chains)
        if converted:
            groups[group] = converted
        sample_ndim = 0 if group == "observed_data" else 2
        for name in values or {}:
            key = arviz_name(name)
            originals[key] = (name, group, converted[key].ndim - sample_ndim)
    all_dims: dict[str, list[str]] = {}
    for key, (name, group, event_ndim) in originals.items():
        default = _default_dims(name, event_ndim, group)
        if default is not None:
            all_dims[key] = default
    for name, names in (dims or {}).items():
        key = arviz_name(name)
        if key not in originals:
            raise ValueError(f"dims names {name!r}, which is not a variable ({sorted(originals)})")
        all_dims[key] = [arviz_name(d) for d in names]
    all_coords = {arviz_name(d): np.asarray(v) for d, v in (coords or {}).items()}
    return _from_dict(_import_arviz(), groups, all_dims, all_coords)


def _from_dict(az, groups: dict, dims: dict, coords: dict):
    """Call ``az.from_dict`` with the signature of the installed ArviZ major version."""
    if _arviz_major(az) >= 1:
        return az.from_dict(groups, dims=dims, coords=coords)
    return az.from_dict(**groups, dims=dims, coords=coords)


def _group_dataset(data, group: str):
    """The ``xarray.Dataset`` of one group of InferenceData, a DataTree or a Dataset."""
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data
    if isinstance(data, getattr(xr, "DataTree", ())):
        if group not in data.children:
            raise ValueError(f"data has no group {group!r} (groups: {sorted(data.children)})")
        return data[group].to_dataset()
    if hasattr(data, "groups") and callable(data.groups):  # arviz.InferenceData
        if group not in data.groups():
            raise ValueError(f"data has no group {group!r} (groups: {data.groups()})")
        return getattr(data, group)
    raise TypeError(
        f"data must be InferenceData, a DataTree or an xarray Dataset, got {type(data).__name__}"
    )


def _with_chain_draw(ds):
    """Give a Dataset the ``(chain, draw)`` sample dimensions ArviZ summaries expect."""
    if "chain" in ds.dims and "draw" in ds.dims:
        return ds
    if "draw" in ds.dims:
        return ds.expand_dims("chain", 0).assign_coords(chain=[0])
    if "sample" in ds.dims:  # ArviZ 1.x SVI layout: a single "sample" dimension
        return ds.rename({"sample": "draw"}).expand_dims("chain", 0).assign_coords(chain=[0])
    raise ValueError(
        f"cannot find sample dimensions (chain, draw) or (sample) in {sorted(map(str, ds.dims))}"
    )


def summary(
    data,
    *,
    var_names: Sequence[str] | None = None,
    group: str = "posterior",
    kind: str = "stats",
    ci_prob: float = 0.9,
    round_to: int | None = None,
):
    """Summary table of ArviZ data (``az.summary``), identical in layout on ArviZ 0.2x and 1.x.

    Works for SVI draws without a chain dimension: a group with only ``draw`` (or ArviZ 1.x's
    ``sample``) dimension is summarised as one chain.

    Parameters
    ----------
    data : arviz.InferenceData, xarray.DataTree or xarray.Dataset
        For example the result of [`to_arviz`][bayes_nest.analysis.to_arviz].
    var_names : list of str, optional
        Variables to include (package or ArviZ spelling); all by default.
    group : str
        Group to summarise.
    kind : {"stats", "diagnostics", "all"}
        ``"stats"``: mean, sd and the highest-density interval; ``"diagnostics"``: ESS, R-hat
        and MCSE (meaningful for MCMC chains only; R-hat is NaN with one chain); ``"all"``: both.
    ci_prob : float
        Probability mass of the highest-density interval, in ``(0, 1)``.
    round_to : int, optional
        Decimals to round to; ``None`` keeps full precision.

    Returns
    -------
    pandas.DataFrame
        One row per scalar (``name[coord, ...]``); columns among ``mean``, ``sd``,
        ``hdi_lower``, ``hdi_upper``, ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail``,
        ``r_hat``. The statistics are ArviZ's own (e.g. ``sd`` divides by ``S - 1`` on ArviZ
        0.2x and by ``S`` on 1.x).
    """
    if kind not in ("stats", "diagnostics", "all"):
        raise ValueError(f"kind must be 'stats', 'diagnostics' or 'all', got {kind!r}")
    if not 0 < ci_prob < 1:
        raise ValueError(f"ci_prob must lie in (0, 1), got {ci_prob}")
    az = _import_arviz()
    ds = _with_chain_draw(_group_dataset(data, group))
    if var_names is not None:
        names = [arviz_name(v) for v in var_names]
        missing = [v for v in names if v not in ds.data_vars]
        if missing:
            raise ValueError(f"var_names {missing} not in {group} ({sorted(ds.data_vars)})")
        ds = ds[names]
    rounding = "none" if round_to is None else round_to
    if _arviz_major(az) >= 1:
        table = az.summary(ds, kind=kind, ci_prob=ci_prob, ci_kind="hdi", round_to=rounding)
    else:
        table = az.summary(ds, kind=kind, hdi_prob=ci_prob, round_to=rounding)
    interval = [c for c in table.columns if str(c).startswith("hdi")]
    if len(interval) == 2:  # "hdi_5%"/"hdi_95%" (0.2x) or "hdi90_lb"/"hdi90_ub" (1.x)
        table = table.rename(columns=dict(zip(interval, ["hdi_lower", "hdi_upper"], strict=True)))
    return table


def from_bnnn(
    bnnn: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_samples: int,
    weights: Sequence[str] | None = None,
    batch_size: int = 1024,
):
    r"""ArviZ data of a fitted BNNN's posterior on data ``(x, y)``.

    Each of the ``S`` draws runs the BNNN's guide once (a mask per axis and every weight) and
    the network on ``x`` with that draw.

    Parameters
    ----------
    bnnn : BNNN
    x, y : Tensor
        Inputs ``(N, ...)`` and their observations (labels for a Categorical likelihood).
    num_samples : int
        :math:`S`, the number of posterior draws.
    weights : list of str, optional
        Weight or bias sites to include in the posterior group (e.g.
        ``bnnn.weight_site_names()``); none by default (they are large).
    batch_size : int
        Examples per forward pass.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        Groups ``posterior`` (``keep_count/<axis>`` ``(S,)``, ``mask/<axis>`` ``(S, D)`` and the
        chosen weight sites), ``posterior_predictive`` (``probs`` ``(S, N, K)`` for a Categorical
        likelihood, else ``mean``: the likelihood's mean), ``log_likelihood`` (``obs`` ``(S, N)``,
        :math:`\log p(y_n \mid \text{draw } s)`, for ``az.loo`` / ``az.waic``) and
        ``observed_data`` (``obs``). The keep probabilities are variational parameters, not draws:
        they are not in the posterior group (read them from ``bnnn.keep_probs()``).
    """
    from .infer.bnnn_predict import posterior_draws

    draws = posterior_draws(bnnn, x, y, num_samples=num_samples, weights=weights,
                            batch_size=batch_size)  # fmt: skip
    return to_arviz(
        draws["posterior"],
        posterior_predictive=draws["posterior_predictive"],
        log_likelihood=draws["log_likelihood"],
        observed_data=draws["observed_data"],
    )
