r"""Segmentation models in the main job: data, training, prediction, evaluation and the figure.

A model spec of `bayes_nest.app.spec.SEGMENTATION_MODELS` (the nested U-Net, ``"unet"``) makes a
*segmentation* model (`bayes_nest.app.spec.ModelSpec.task`). Its data are a
`bayes_nest.data.SegmentationBundle`: the built-in procedural lesion set (``"lesions"``) or a
user ``.npz`` file with ``images (N, C, H, W)`` and binary ``masks (N, A, H, W)`` (``A``
annotators per image). Training draws one random annotator per image and step
(`bayes_nest.data.RandomAnnotatorDataset`):

* **FN3** minimises the per-pixel binary cross-entropy
  $-\sum_u [m_u \log \sigma(f_u) + (1 - m_u) \log(1 - \sigma(f_u))]$ under ordered dropout;
* **BNNN** fits its posterior by SVI with a per-pixel Bernoulli likelihood
  $m_u \sim \mathrm{Bernoulli}(\sigma(f_u(x)))$ (`bayes_nest.infer.likelihoods.Bernoulli`).

Predictions are foreground probabilities ``(S, N, H, W)`` (``S = 1`` for FN3, ``S`` posterior
draws for a BNNN); a model *sample* is the binary mask $p > 1/2$ of one draw. Sub-networks are
scored by the generalized energy distance (GED), the Hungarian-matched IoU between samples and
annotations, and the per-pixel ECE and NLL of the mean probability
(`bayes_nest.metrics.segmentation`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._files import require_file
from ..data import DATASETS
from ..data.segmentation import make_lesions
from ..data.segmentation_bundle import (
    SEGMENTATION_DATASETS,
    RandomAnnotatorDataset,
    SegmentationBundle,
    SegmentationSplit,
    load_segmentation_file,
    segmentation_from_arrays,
)

__all__ = [
    "LESIONS_DEFAULTS",
    "check_segmentation_fit",
    "evaluate_segmentation",
    "holds_segmentation_arrays",
    "load_segmentation_data",
    "predict_segmentation",
    "segmentation_probs",
    "segmentation_data_for",
    "segmentation_figure",
    "train_segmentation",
]

LESIONS_DEFAULTS = {"num_images": 1000, "image_size": 32}
"""Size of the built-in lesion set unless told otherwise: images and their side in pixels."""
_PREDICT_BATCH = 256


# ----------------------------------------------------------------------------- data


def load_segmentation_data(
    source: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    num_images: int | None = None,
    image_size: int | None = None,
    standardize: str | None = "channel",
) -> SegmentationBundle:
    """The built-in lesion set by name (``"lesions"``) or a user ``.npz`` file with ``images``
    ``(N, C, H, W)`` and ``masks`` ``(N, A, H, W)``, split with ``seed`` and the fractions.

    ``num_images`` and ``image_size`` size the built-in set (default `LESIONS_DEFAULTS`);
    ``standardize`` as in `bayes_nest.data.segmentation_from_arrays`.

    Raises
    ------
    FileNotFoundError
        For a path that does not exist.
    ValueError
        For classification data, a file without ``images``/``masks``, masks of the wrong shape
        or with values other than 0/1, or unequal numbers of images and masks.
    """
    text = os.fspath(source)
    split = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    if text.lower() in SEGMENTATION_DATASETS and not os.path.exists(text):
        n = LESIONS_DEFAULTS["num_images"] if num_images is None else num_images
        size = LESIONS_DEFAULTS["image_size"] if image_size is None else image_size
        images, masks, truth = make_lesions(n, size=size, seed=seed)
        return segmentation_from_arrays(
            images, masks, name=text.lower(), standardize=standardize, truth=truth, **split
        )
    if num_images is not None or image_size is not None:
        raise ValueError(
            "num_images and image_size size the built-in set 'lesions' only, not the data "
            f"file {text!r}"
        )
    if text.lower() in DATASETS and not os.path.exists(text):
        raise ValueError(
            f"{text!r} is a classification dataset; a segmentation model trains on the built-in "
            f"{SEGMENTATION_DATASETS[0]!r} or an .npz file with images (N, C, H, W) and masks "
            "(N, A, H, W)"
        )
    if not os.path.exists(text):
        raise FileNotFoundError(
            f"data file {text!r} does not exist (built-in segmentation data: "
            f"{', '.join(SEGMENTATION_DATASETS)})"
        )
    require_file(text, "data file")
    if not text.lower().endswith(".npz"):
        raise ValueError(
            f"segmentation data file {text!r} must be an .npz file with images (N, C, H, W) "
            "and masks (N, A, H, W)"
        )
    try:
        return load_segmentation_file(text, standardize=standardize, **split)
    except (EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{text!r} is not a readable .npz archive: {err}") from None
    except ValueError as err:
        if "has no array" not in str(err):
            raise
        raise ValueError(
            f"{text!r} holds no segmentation data ({err}); a classification file needs a "
            "classification model (--task classification)"
        ) from None


def holds_segmentation_arrays(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``.npz`` archive with ``images`` and ``masks`` but no ``x``
    (segmentation data rather than classification data); ``False`` for unreadable files."""
    import numpy as np

    if not os.fspath(path).lower().endswith(".npz"):
        return False
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(getattr(archive, "files", ()))
    except Exception:  # unreadable: the loader reports it
        return False
    return {"images", "masks"} <= names and "x" not in names


def _restandardize(
    bundle: SegmentationBundle, mean: torch.Tensor, std: torch.Tensor
) -> SegmentationBundle:
    """``bundle`` with images expressed as ``(raw - mean) / std``, ``raw`` its original images."""
    splits = {}
    for key, split in bundle.splits.items():
        raw = split.x.double() * bundle.std.double() + bundle.mean.double()
        x = ((raw - mean.double()) / std.double()).float()
        if not torch.isfinite(x).all():
            raise ValueError(
                f"the {key} images hold values too large for float32 once standardized with "
                "the model's statistics; the data are far outside the range it was trained on"
            )
        splits[key] = SegmentationSplit(x, split.masks)
    return dataclasses.replace(bundle, **splits, mean=mean.float(), std=std.float())


def segmentation_data_for(
    model: Any, source: str | os.PathLike, *, whole: bool = False
) -> SegmentationBundle:
    """Data for a trained segmentation model: its own splits (split seed, fractions and, for
    the built-in set, its size, from ``model.data``) in its standardization. ``whole`` puts
    every image into the test split.

    Raises
    ------
    ValueError
        For images of another shape than the model's, and for bad data (see
        `load_segmentation_data`).
    """
    stored = model.data
    opts = {k: stored.get(k, d) for k, d in (("seed", 0), ("val_fraction", 0.1))}
    opts["test_fraction"] = stored.get("test_fraction", 0.2)
    text = os.fspath(source)
    if text.lower() in SEGMENTATION_DATASETS and not os.path.exists(text):
        opts["num_images"] = stored.get("num_images")
        opts["image_size"] = stored.get("image_size")
    if whole:
        opts.update(val_fraction=0.0, test_fraction=0.0)
    bundle = load_segmentation_data(text, **opts)
    if tuple(bundle.input_shape) != tuple(model.input_shape):
        raise ValueError(
            f"{text} has images of shape {tuple(bundle.input_shape)}, but the model was trained "
            f"on images of shape {tuple(model.input_shape)}"
        )
    bundle = _restandardize(bundle, model.mean, model.std)
    if whole:
        parts = [s for s in bundle.splits.values() if len(s.x)]
        every = SegmentationSplit(
            torch.cat([s.x for s in parts]), torch.cat([s.masks for s in parts])
        )
        bundle = dataclasses.replace(bundle, test=every)
    return bundle


# ----------------------------------------------------------------------------- training


def check_segmentation_fit(bundle: Any, *, amp: Any, ctx: Any, init: Any) -> None:
    """Refuse what segmentation training does not offer, naming it."""
    if not isinstance(bundle, SegmentationBundle):
        raise ValueError(
            f"a segmentation model needs segmentation data (a SegmentationBundle: 'lesions' or "
            f"an .npz file with images and masks), got {type(bundle).__name__}"
        )
    if amp:
        raise ValueError(f"amp={amp!r}: mixed precision is offered for classifiers only")
    if ctx is not None and getattr(ctx, "world_size", 1) > 1:
        raise ValueError("segmentation models train in one process (no data-parallel job)")
    if init is not None:
        raise ValueError("starting from a trained model (init) is offered for classifiers only")


def train_segmentation(
    module: nn.Module,
    bundle: SegmentationBundle,
    method: str,
    opts: Mapping[str, Any],
    *,
    ctx: Any,
    device: torch.device,
    progress: bool,
    checkpoint_path: str | os.PathLike | None,
    resume: bool,
) -> tuple[Any, dict[str, list]]:
    """Train a segmentation ``module`` on ``bundle.train``, one random annotator per image and
    step; returns ``(bnnn or None, history)``.

    FN3: ordered dropout with the per-pixel binary cross-entropy; BNNN: SVI with a per-pixel
    Bernoulli likelihood. ``opts`` are the training options of `bayes_nest.app.fitting.fit`.
    """
    del ctx  # one process only (check_segmentation_fit)
    train = RandomAnnotatorDataset(bundle.train, seed=int(opts["seed"]))
    job = {"checkpoint_path": checkpoint_path, "resume": resume}
    if method == "fn3":
        from ..infer import FN3Trainer

        trainer = FN3Trainer(
            module,
            optimizer=functools.partial(
                torch.optim.Adam, lr=float(opts["lr"]), weight_decay=float(opts["weight_decay"])
            ),
            keep_prob=float(opts["keep_prob"]),
            distribution=opts["distribution"],
            sandwich=None if opts["sandwich"] in (None, "none") else opts["sandwich"],
            loss_fn=F.binary_cross_entropy_with_logits,
            batch_size=int(opts["batch_size"]),
            device=device,
            seed=int(opts["seed"]),
            progress=progress,
        )
        history = trainer.fit(train, epochs=int(opts["epochs"]), **job)
        return None, history.as_dict()
    from ..infer.likelihoods import Bernoulli
    from .train import make_bnnn

    bnnn = make_bnnn(module, opts, likelihood=Bernoulli(len(train))).to(device)
    history = bnnn.fit(
        train,
        epochs=int(opts["epochs"]),
        optimizer=functools.partial(torch.optim.Adam, lr=float(opts["lr"])),
        batch_size=int(opts["batch_size"]),
        progress=progress,
        seed=int(opts["seed"]),
        **job,
    )
    return bnnn, history.as_dict()


# ----------------------------------------------------------------------------- prediction


def predict_segmentation(
    model: Any, x: torch.Tensor, config: Mapping[str, int], num_samples: int | None
) -> torch.Tensor:
    r"""Foreground probabilities $\sigma(f(x))$ ``(S, N, H, W)`` of sub-network ``config`` on
    standardized images ``x`` (checked by the caller): ``S = 1`` for FN3, ``S`` posterior
    draws for a BNNN (default: the training option ``predict_samples``)."""
    if model.bnnn is not None:
        s = int(num_samples or model.options.get("predict_samples", 16))
        with torch.no_grad():
            probs = model.bnnn.predict(x, config=config, num_samples=s)
        return probs[:, :, 0].float().cpu()
    from ..subnet import use

    module = model.module
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), use(module, config):
            out = [torch.sigmoid(module(b))[:, 0] for b in x.split(_PREDICT_BATCH)]
    finally:
        module.train(was_training)
    return torch.cat(out).float().cpu().unsqueeze(0)


def segmentation_probs(
    model: Any,
    x: torch.Tensor,
    config: Mapping[str, int] | None,
    num_samples: int | None,
    *,
    seed: int = 0,
    calibration: SegmentationSplit | None = None,
) -> torch.Tensor:
    """`predict_segmentation` of ``config`` as evaluation and search score it: batch-norm
    statistics re-estimated for ``config`` on ``calibration`` (a BNNN's weight draws during
    that pass seeded too, so the statistics are reproducible) and posterior draws seeded by
    ``seed`` (common random numbers across sub-networks)."""
    from .contexts import recalibrated, seeded

    with seeded(seed), recalibrated(model, config, calibration), seeded(seed):
        return model.predict(x, config, num_samples=num_samples)


def _check_masks(model: Any, x: torch.Tensor, masks: Any) -> torch.Tensor:
    m = torch.as_tensor(masks)
    if m.dim() != 4 or m.shape[0] != len(x) or tuple(m.shape[2:]) != tuple(x.shape[2:]):
        raise ValueError(
            f"masks must have shape (N, A, H, W) = ({len(x)}, A, {x.shape[2]}, {x.shape[3]}) "
            f"for these images, got {tuple(m.shape)}"
        )
    if m.numel() and not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("masks must be binary (0/1)")
    return m


def evaluate_segmentation(
    model: Any,
    split: SegmentationSplit,
    config: Mapping[str, int] | None = None,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    n_bins: int = 15,
    return_probs: bool = False,
    calibration: SegmentationSplit | None = None,
) -> dict[str, float] | tuple[dict[str, float], torch.Tensor]:
    r"""GED, Hungarian IoU, pixel ECE and pixel NLL of one sub-network of a segmentation model.

    With probabilities $p$ ``(S, N, H, W)`` and samples $p > 1/2$, against the split's masks
    ``(N, A, H, W)``: ``ged`` is $D^2_\text{GED}$ with $d = 1 - \mathrm{IoU}$ (lower is
    better), ``hungarian_iou`` the IoU of an optimal matching of samples and annotations (each
    set repeated to a common size when one count is not a multiple of the other), and
    ``pixel_ece``/``pixel_nll`` score the mean probability per pixel against every annotation.
    ``calibration`` (training data) re-estimates batch-norm statistics for ``config`` first.

    Returns
    -------
    dict
        ``ged``, ``hungarian_iou``, ``pixel_ece``, ``pixel_nll``, ``n``; with
        ``return_probs`` also the probabilities ``(S, N, H, W)``.
    """
    from .. import metrics

    x = model.check_inputs(split.x, "images")
    if len(x) == 0:
        raise ValueError(
            "no images to evaluate: this split of the data is empty (a small file? score "
            "every image with --split all)"
        )
    masks = _check_masks(model, x, split.masks)
    probs = segmentation_probs(model, x, config, num_samples, seed=seed, calibration=calibration)
    samples = probs > 0.5
    a, s = masks.shape[1], len(samples)
    matched = samples.repeat(a, 1, 1, 1) if max(a, s) % min(a, s) else samples
    out = {
        "ged": metrics.generalized_energy_distance(samples, masks),
        "hungarian_iou": metrics.hungarian_iou(matched, masks),
        "pixel_ece": metrics.pixel_ece(probs, masks, n_bins=n_bins),
        "pixel_nll": metrics.pixel_nll(probs, masks),
        "n": len(x),
    }
    return (out, probs) if return_probs else out


# ----------------------------------------------------------------------------- figure


def segmentation_figure(analysis: Any, *, max_samples: int = 4):
    """An image, its annotations and the model's samples at the cheapest and the largest
    budget of ``analysis`` (a `bayes_nest.app.budgets.Analysis` of a segmentation model), on the
    test image where the annotators disagree most."""
    from ..plots import segmentation_samples

    rows = [0, len(analysis.rows) - 1] if len(analysis.rows) > 1 else [0]
    masks = analysis.probs[0][1]
    spread = masks.float().std(1).sum((1, 2)) if masks.shape[1] > 1 else masks.sum((1, 2, 3))
    i = int(spread.argmax())
    images = analysis.images  # the test images, (N, C, H, W)
    samples = {}
    for r in rows:
        row, (probs, _) = analysis.rows[r], analysis.probs[r]
        label = f"{analysis.label} {row['budget']}\n{row['macs']:,.0f} MACs"
        samples[label] = (probs[:, i] > 0.5).float()
    return segmentation_samples(images[i], masks[i], samples, max_samples=max_samples)
