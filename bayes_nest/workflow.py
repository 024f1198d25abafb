"""Data, evaluation, search and export for trained models (the steps after `pipeline`).

`load_data` reads a built-in dataset or a user file; `data_for` reads data for a
trained model, in that model's splits, class count and standardization, and rejects data it
cannot take (other input shapes, unknown labels, NaNs). `evaluate_config` scores one
sub-network (accuracy, NLL, Brier, ECE, OOD AUROC) the same way for both regimes.

Examples
--------
>>> from bayes_nest.pipeline import ModelSpec, fit
>>> from bayes_nest.workflow import data_for, evaluate_config, load_data
>>> spec = ModelSpec("mlp", {"hidden": [64, 64], "groups": 8})
>>> model = fit(spec, load_data("digits", flat=True), epochs=2, progress=False)
>>> data = data_for(model, "digits")  # the model's own splits and standardization
>>> scores = evaluate_config(model, data.test, {"hidden.0": 4, "hidden.1": 4})
>>> sorted(scores)
['accuracy', 'brier', 'ece', 'n', 'nll', 'ood_auroc']
>>> scores["n"] == len(data.test.y)
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from . import metrics
from ._files import require_file
from .data import (
    DATASETS,
    SEGMENTATION_DATASETS,
    DataBundle,
    Split,
    corrupt,
    load_dataset,
    load_file,
)
from .defaults import DEFAULT_COST, DEFAULT_OOD, SCORE_DEFAULTS, SCORES, SPLIT_DEFAULTS
from .pipeline import TrainedModel
from .search.objectives import default_score, make_objective, score_name

__all__ = [
    "SCORES",
    "analyse",
    "apply_standardization",
    "best_config",
    "data_for",
    "evaluate_config",
    "load_data",
    "make_score",
    "read_front",
    "recalibrated",
    "resolve_budget",
    "search_front",
    "seeded",
]


def apply_standardization(bundle: DataBundle, mean: torch.Tensor, std: torch.Tensor) -> DataBundle:
    """Re-express a bundle loaded with ``standardize=None`` in a trained model's standardization
    ``(x - mean) / std`` (the statistics of the model's own training split)."""
    splits = {}
    for key, split in bundle.splits.items():
        scaled = ((split.x.double() - mean.double()) / std.double()).float()
        bad = ~torch.isfinite(scaled).flatten(1).all(dim=1)
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"the {key} inputs hold values too large for float32 once standardized with "
                f"the model's statistics (e.g. {float(split.x[first].abs().max()):g} in "
                f"example {first}); the data are far outside the range the model was trained on"
            )
        splits[key] = Split(scaled, split.y)
    return dataclasses.replace(bundle, **splits, mean=mean, std=std, standardize="model")


# ----------------------------------------------------------------------------- data


def load_data(
    source: str | os.PathLike,
    *,
    flat: bool = True,
    seed: int = SPLIT_DEFAULTS["seed"],
    val_fraction: float = SPLIT_DEFAULTS["val_fraction"],
    test_fraction: float = SPLIT_DEFAULTS["test_fraction"],
    standardize: str | None = "feature",
    label_column: int | str | None = None,
    num_classes: int | None = None,
    stratify: bool = True,
    require_all_classes: bool = True,
) -> DataBundle:
    """A built-in dataset by name (``"digits"``, ``"mnist1d"``) or a ``.npz``/``.csv`` file.

    A name that is also an existing file is read as the file. ``flat`` selects flat vectors or
    images for built-in sets; the other arguments go to `load_dataset`
    or `load_file` (``label_column`` for CSV files only; ``require_all_classes=False``
    accepts files without examples of some class, e.g. for evaluation).

    Raises
    ------
    FileNotFoundError
        For a path that does not exist (a folder or a device is named as such).
    ValueError
        For unreadable files and bad contents (see `from_arrays`).
    """
    text = os.fspath(source)
    split = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    if text.lower() in SEGMENTATION_DATASETS and not os.path.exists(text):
        raise ValueError(
            f"{text!r} is a segmentation dataset; train a segmentation model on it "
            "(--task segmentation, model 'unet')"
        )
    if text.lower() in DATASETS and not os.path.exists(text):
        if label_column is not None:
            raise ValueError(
                f"label_column={label_column!r} applies to CSV files only, not to the built-in "
                f"dataset {text!r}"
            )
        bundle = load_dataset(text, flat=flat, standardize=standardize, **split)
        if num_classes is not None and num_classes != bundle.num_classes:
            raise ValueError(
                f"{text} has {bundle.num_classes} classes, the model expects {num_classes}"
            )
        return bundle
    if not os.path.exists(text):
        raise FileNotFoundError(
            f"data file {text!r} does not exist (built-in datasets: {', '.join(DATASETS)})"
        )
    require_file(text, "data file")
    from .pipeline_segmentation import holds_segmentation_arrays

    if holds_segmentation_arrays(text):
        raise ValueError(
            f"{text!r} holds segmentation data (images and masks, no x/y); train a "
            "segmentation model on it (--task segmentation, model 'unet')"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class missing from a small evaluation file
        return load_file(
            text,
            label_column=label_column,
            standardize=standardize,
            num_classes=num_classes,
            stratify=stratify,
            require_all_classes=require_all_classes,
            **split,
        )


def data_for(
    model: TrainedModel, source: str | os.PathLike, *, whole: bool = False, **kwargs: Any
) -> DataBundle:
    """Load data for a trained model: the splits it was trained with (same split seed and
    fractions, from `TrainedModel.data`), its class count, and its standardization.

    Parameters
    ----------
    model : TrainedModel
    source : str or path
        As in `load_data`.
    whole : bool
        Put every example of the file into the test split (new data the model has not seen),
        including predefined ``x_val``/``x_test`` arrays of a ``.npz`` file.
    **kwargs
        Override the stored loading options (e.g. ``label_column`` of a CSV file); a file need
        not hold examples of every class the model knows.

    Raises
    ------
    ValueError
        For inputs of another shape than the model's, labels it does not know, NaNs.

    A segmentation model gets a `bayes_nest.data.SegmentationBundle` (see
    `bayes_nest.pipeline_segmentation.segmentation_data_for`).
    """
    if model.task == "segmentation":
        from .pipeline_segmentation import segmentation_data_for

        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} do not apply to segmentation data")
        return segmentation_data_for(model, source, whole=whole)
    stored = {**SPLIT_DEFAULTS, "label_column": None}
    opts = {k: model.data.get(k, default) for k, default in stored.items()}
    if not os.fspath(source).lower().endswith(".csv"):
        opts["label_column"] = None  # the stored default of a model trained on a CSV file
    opts.update(kwargs)
    if whole:
        opts.update(val_fraction=0.0, test_fraction=0.0, stratify=False)
    bundle = load_data(
        source,
        flat=model.spec.flat,
        standardize=None,
        num_classes=model.num_classes,
        require_all_classes=False,
        **opts,
    )
    if tuple(bundle.input_shape) != tuple(model.input_shape):
        raise ValueError(
            f"{os.fspath(source)} has examples of shape {tuple(bundle.input_shape)}, but the "
            f"model was trained on examples of shape {tuple(model.input_shape)}"
        )
    bundle = apply_standardization(bundle, model.mean, model.std)
    if whole:
        parts = [s for s in (bundle.train, bundle.val, bundle.test) if len(s.y)]
        every = Split(torch.cat([s.x for s in parts]), torch.cat([s.y for s in parts]))
        bundle = dataclasses.replace(bundle, test=every)
    return bundle


# ----------------------------------------------------------------------------- evaluation


def evaluate_config(
    model: TrainedModel,
    split: Split,
    config: Mapping[str, int] | None = None,
    *,
    ood: str | None = DEFAULT_OOD,
    num_samples: int | None = None,
    seed: int = 0,
    n_bins: int = 15,
    return_probs: bool = False,
    calibration: Split | None = None,
) -> dict[str, float] | tuple[dict[str, float], torch.Tensor]:
    """Accuracy, NLL, Brier, ECE and (with ``ood``) OOD AUROC of one sub-network on a split.

    OOD inputs are the split's inputs corrupted with `corrupt` (kind
    ``ood`` at full severity); the OOD score is the predictive entropy of the mean prediction,
    and ``ood_auroc`` separates the split's inputs from their corrupted copies.

    Returns
    -------
    dict
        ``accuracy``, ``nll``, ``brier``, ``ece``, ``ood_auroc`` (NaN without ``ood``), ``n``;
        with ``return_probs`` also the predictions ``(S, N, K)``.

    With ``calibration`` (training data) a network with batch-norm first re-estimates its
    statistics for ``config`` (`recalibrated`), as its export would.

    A segmentation model is scored by
    `bayes_nest.pipeline_segmentation.evaluate_segmentation` instead (GED, Hungarian IoU,
    pixel ECE and NLL; ``ood`` does not apply).
    """
    if model.task == "segmentation":
        from .pipeline_segmentation import evaluate_segmentation

        return evaluate_segmentation(
            model,
            split,
            config,
            num_samples=num_samples,
            seed=seed,
            n_bins=n_bins,
            return_probs=return_probs,
            calibration=calibration,
        )
    x = model.check_inputs(split.x, "inputs")
    y = torch.as_tensor(split.y)
    if (y < 0).any() or (y >= model.num_classes).any():
        bad = y[(y < 0) | (y >= model.num_classes)][0]
        raise ValueError(
            f"labels hold class {int(bad)}, unknown to a model of {model.num_classes} classes"
        )
    with recalibrated(model, config, calibration):
        with seeded(seed):
            probs = model.predict(x, config, num_samples=num_samples)
        probs_out = None
        if ood is not None and len(x) >= 2:
            shifted = corrupt(x, ood, 1.0, seed=seed)
            with seeded(seed + 1):
                probs_out = model.predict(shifted, config, num_samples=num_samples)
    out = {
        "accuracy": metrics.accuracy(probs, y),
        "nll": metrics.nll(probs, y),
        "brier": metrics.brier_score(probs, y),
        "ece": metrics.expected_calibration_error(probs, y, n_bins=n_bins),
        "ood_auroc": math.nan,
        "n": len(y),
    }
    if probs_out is not None:
        out["ood_auroc"] = metrics.ood_auroc(
            metrics.predictive_entropy(probs), metrics.predictive_entropy(probs_out)
        )
    return (out, probs) if return_probs else out


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generator seeded, restoring its state afterwards (so
    posterior predictions are reproducible and comparable across sub-networks)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def recalibrated(
    model: TrainedModel, config: Mapping[str, int], calibration: Split | None
) -> Iterator[None]:
    """Within the block, the batch-norm layers of ``model`` hold statistics re-estimated for
    ``config`` on the ``calibration`` inputs; the model's own statistics (which mix all
    sub-networks seen in training) are restored afterwards. Nothing happens without
    batch-norm layers or without data."""
    norms = [m for m in model.module.modules() if isinstance(m, _BatchNorm)]
    if calibration is None or not norms:
        yield
        return
    from .subnet import recalibrate_batchnorm

    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    try:
        recalibrate_batchnorm(model.module, calibration.x, dict(config or {}))
        yield
    finally:
        for m, state in zip(norms, saved, strict=True):
            m.load_state_dict(state)


# ----------------------------------------------------------------------------- search


def make_score(
    model: TrainedModel,
    split: Split,
    score: str | None = None,
    *,
    ece_weight: float = SCORE_DEFAULTS["ece_weight"],
    max_ece: float = SCORE_DEFAULTS["max_ece"],
    num_samples: int | None = None,
    seed: int = 0,
    calibration: Split | None = None,
) -> Callable[[Mapping[str, int]], float]:
    r"""A score ``config -> float`` (higher is better) of sub-networks on ``split``.

    ``score=None`` is the model's default (`bayes_nest.search.objectives.default_score`:
    ``"accuracy"``, or ``"neg_ged"`` for a segmentation model, which also takes
    ``"neg_pixel_nll"``; a segmentation ``split`` holds masks instead of labels).

    ``score`` is a name of `bayes_nest.defaults.SCORES` (the same names as the
    searches and the ``--score`` option): ``"accuracy"``; ``"neg_nll"``, $-\mathrm{NLL}$;
    ``"ece_penalized"``, $\mathrm{acc} - w\,\mathrm{ECE}$ with $w$ = ``ece_weight``;
    ``"ece_capped"``, accuracy while the ECE is at most ``max_ece``, else $-\mathrm{ECE}$.
    BNNN predictions use the same random numbers for every config (common random numbers),
    so differences between configs are not Monte Carlo noise. With ``calibration``, batch-norm
    statistics are re-estimated for every config first (`recalibrated`).

    Raises
    ------
    ValueError
        For an unknown score name or bad settings (a deprecated name gives a `FutureWarning`).
    """
    score = default_score(model.task) if score is None else score
    objective = make_objective(
        score_name(score, model.task), ece_weight=ece_weight, max_ece=max_ece
    )
    x = model.check_inputs(split.x, "inputs")
    y = torch.as_tensor(split.masks if model.task == "segmentation" else split.y)

    def evaluate(config: Mapping[str, int]) -> float:
        if model.task == "segmentation":
            from .pipeline_segmentation import segmentation_probs

            probs = segmentation_probs(
                model, x, config, num_samples, seed=seed, calibration=calibration
            )
            return float(objective(probs, y))
        with recalibrated(model, config, calibration), seeded(seed):
            probs = model.predict(x, config, num_samples=num_samples)
        return float(objective(probs, y))

    return evaluate


def search_front(
    model: TrainedModel,
    split: Split,
    *,
    cost: str = DEFAULT_COST,
    score: str | None = None,
    ece_weight: float = SCORE_DEFAULTS["ece_weight"],
    max_ece: float = SCORE_DEFAULTS["max_ece"],
    num_samples: int | None = None,
    progress: bool = True,
    calibration: Split | None = None,
    **kwargs: Any,
) -> Any:
    """Greedy front (`bayes_nest.search.greedy`) of ``model``'s sub-networks, scored on
    ``split`` by `make_score` (``calibration``: see there); settings and the model's
    fingerprint (`TrainedModel.fingerprint`, checked by `read_front`) are recorded in
    ``front.info``."""
    from .search.greedy import greedy

    fingerprint = model.fingerprint()  # of the model as given, before any recalibration
    score = score_name(default_score(model.task) if score is None else score, model.task)
    fn = make_score(
        model,
        split,
        score,
        ece_weight=ece_weight,
        max_ece=max_ece,
        num_samples=num_samples,
        calibration=calibration,
    )
    front = greedy(
        model.module, fn, cost=cost, input_shape=model.input_shape, progress=progress, **kwargs
    )
    front.metric = cost
    front.info.update(
        {
            "score": score,
            "ece_weight": ece_weight,
            "max_ece": max_ece,
            "method": model.method,
            "model_fingerprint": fingerprint,
        }
    )
    return front


def read_front(path: str | os.PathLike, model: TrainedModel) -> Any:
    """A front JSON file (from `search_front`), checked against ``model``.

    The front must have been searched on this very model: its ``info["model_fingerprint"]``
    must equal `TrainedModel.fingerprint` (a front without one, from an older version, is
    accepted with a warning). Every keep count must be a whole number (``2.7`` is an error,
    never truncated) and fit the model's axes.

    Raises
    ------
    ValueError
        For a file that is not a front, a front of another model, or configs that do not fit.
    """
    import json

    from .search.front import Front
    from .subnet import validate_config

    text = require_file(path, "front file")
    try:
        with open(text, encoding="utf-8") as f:
            raw = json.load(f)
        points = raw["points"] if isinstance(raw, dict) else None
        for i, point in enumerate(points if isinstance(points, list) else []):
            config = point.get("config") if isinstance(point, dict) else None
            for axis, count in config.items() if isinstance(config, dict) else ():
                whole = isinstance(count, int) or (isinstance(count, float) and count.is_integer())
                if isinstance(count, bool) or not whole:
                    raise ValueError(
                        f"point {i} keeps {count!r} blocks of axis {axis!r}; keep counts are "
                        "whole numbers"
                    )
        front = Front.from_dict(raw)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        msg = " ".join(str(e).split())
        raise ValueError(f"{text} is not a front file: {msg}") from None
    recorded = front.info.get("model_fingerprint")
    if recorded is not None and recorded != model.fingerprint():
        source = front.info.get("checkpoint")
        where = f" ({source})" if source else ""
        raise ValueError(
            f"front {text} was searched on another model{where}, not on this one: its "
            "sub-networks and scores do not apply; search this model's front with "
            "'bayes-nest search'"
        )
    for point in front.points:
        try:
            validate_config(model.module, point.config)
        except (ValueError, TypeError) as e:
            raise ValueError(f"front {text} does not fit the model: {e}") from None
    if recorded is None and front.points:
        warnings.warn(
            f"front {text} does not record the model it was searched on (written by an older "
            "bayes_nest); make sure it belongs to this model",
            stacklevel=2,
        )
    return front


def resolve_budget(budget: float | str, front: Any, model: TrainedModel) -> float:
    """A budget in cost units; ``"25%"`` is that share of the full network's cost."""
    if isinstance(budget, str) and budget.endswith("%"):
        from .subnet import COST_METRICS

        share = float(budget[:-1]) / 100
        if front.metric in COST_METRICS:
            return share * model.cost_model(front.metric)({})
        return share * max(p.cost for p in front.points)
    return float(budget)


def best_config(front: Any, budget: float | str, model: TrainedModel) -> dict[str, int]:
    """The best config of ``front`` within ``budget`` (a clear error when none fits)."""
    from .subnet import validate_config

    point = front.best(resolve_budget(budget, front, model))
    return validate_config(model.module, point.config)


# ----------------------------------------------------------------------------- analysis


def analyse(
    model: TrainedModel,
    data: DataBundle,
    *,
    label: str,
    budgets: Sequence[float | str],
    cost: str = DEFAULT_COST,
    score: str | None = None,
    ece_weight: float = SCORE_DEFAULTS["ece_weight"],
    max_ece: float = SCORE_DEFAULTS["max_ece"],
    ood: str | None = DEFAULT_OOD,
    num_samples: int | None = None,
    progress: bool = True,
    front: Any = None,
    skip_infeasible: bool = False,
) -> Any:
    """Search the front on ``data.val`` (unless given), pick the best sub-network for every
    budget and evaluate it on ``data.test``; returns a `Analysis`.
    Networks with batch-norm are recalibrated on ``data.train`` for every sub-network.
    ``skip_infeasible``: leave out (with a warning) budgets below the cheapest sub-network,
    e.g. default shares on a small model, instead of failing.

    Raises
    ------
    ValueError
        For a budget no sub-network fits (the message names the cheapest cost).
    """
    from .report import Analysis, config_summary

    score = score_name(default_score(model.task) if score is None else score, model.task)
    if front is None:
        front = search_front(
            model,
            data.val,
            cost=cost,
            score=score,
            ece_weight=ece_weight,
            max_ece=max_ece,
            num_samples=num_samples,
            progress=progress,
            calibration=data.train,
        )
    resolved = [(b, resolve_budget(b, front, model)) for b in budgets]
    if skip_infeasible and front.points:
        cheapest = min(p.cost for p in front.points)
        fits = [(b, c) for b, c in resolved if c >= cheapest]
        if len(fits) < len(resolved):
            left = [str(b) for b, c in resolved if c < cheapest]
            warnings.warn(
                f"{label}: budget(s) {', '.join(left)} lie below the cheapest sub-network "
                f"({cheapest:,.6g} {front.metric}); left out",
                stacklevel=2,
            )
        resolved = fits or [(f"{cheapest:.6g}", cheapest)]
    chosen = [(b, front.best(c)) for b, c in resolved]
    macs, params = model.cost_model("macs"), model.cost_model("params")
    rows, probs = [], []
    bar = tqdm(chosen, desc=f"evaluating {label}", unit="budget", disable=not progress)
    for budget, point in bar:
        scores, p = evaluate_config(
            model,
            data.test,
            point.config,
            ood=ood,
            num_samples=num_samples,
            return_probs=True,
            calibration=data.train,
        )
        rows.append(
            {
                "budget": str(budget),
                "config": config_summary(model.module, point.config),
                "subnet": dict(point.config),
                "macs": macs(point.config),
                "params": params(point.config),
                "cost": point.cost,
                "front_score": point.score,
                **scores,
            }
        )
        probs.append((p, data.test.masks if model.task == "segmentation" else data.test.y))
    analysis = Analysis(label, model, front, rows, probs, cost=cost, score=score)
    if model.task == "segmentation":
        analysis.images = data.test.x
    return analysis
