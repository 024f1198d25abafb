r"""A procedural ambiguous-segmentation set whose annotator distribution is known exactly.

Each example is a grey image with a textured background and up to ``max_lesions`` soft-edged,
low-contrast blobs ("lesions"), annotated by ``A`` simulated experts who disagree the way
radiologists do:

* **boundary placement** — annotator ``a`` outlines every lesion it sees at its own level
  $t_a \sim \mathcal U(t_\text{lo}, t_\text{hi})$ of the lesion's soft map, so wider or
  tighter outlines;
* **faint lesions** — a faint lesion ``k`` is seen by each annotator independently with
  probability $v_k$ (clear lesions have $v_k = 1$).

Lesion ``k`` of an image has the soft map $s_k(u) = \exp(-\tfrac12 r_k(u)^2) \in [0, 1]$, with
$r_k$ the elliptic radius around its centre, and adds $c_k s_k$ to the image (contrast $c_k$).
Annotator ``a`` draws

$$m_a(u) = \max_k\, \mathbb 1[\text{a sees } k]\; \mathbb 1[s_k(u) > t_a].$$

The probability that a random annotator marks pixel ``u`` is therefore known in closed form:

$$P(m(u) = 1) = \frac{1}{t_\text{hi} - t_\text{lo}} \int_{t_\text{lo}}^{t_\text{hi}}
  \Bigl(1 - \prod_k \bigl(1 - v_k\, \mathbb 1[s_k(u) > t]\bigr)\Bigr)\, dt,$$

a piecewise-constant integrand computed exactly by :meth:`LesionTruth.pixel_probs`; fresh
annotations from the same distribution come from :meth:`LesionTruth.sample`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bundle import _check_inputs

__all__ = ["LesionTruth", "make_lesions"]

_TEXTURE_WAVES = 6


@dataclass(frozen=True)
class LesionTruth:
    r"""The generating annotator distribution of a set of lesion images.

    Attributes
    ----------
    lesion_maps : ndarray, shape ``(N, K, H, W)``
        Soft map $s_k \in [0, 1]$ of every lesion slot (all zeros for an absent lesion).
    visibility : ndarray, shape ``(N, K)``
        Probability $v_k$ that an annotator sees lesion ``k`` (``1`` clear, ``0`` absent).
    threshold_range : tuple of float
        ``(t_lo, t_hi)``: annotators outline at a level drawn uniformly from this interval.
    """

    lesion_maps: np.ndarray
    visibility: np.ndarray
    threshold_range: tuple[float, float]

    def __len__(self) -> int:
        return len(self.lesion_maps)

    def __getitem__(self, index) -> LesionTruth:
        """The truth of a subset of the images (an index array, slice or boolean mask)."""
        index = np.arange(len(self))[index]
        return LesionTruth(self.lesion_maps[index], self.visibility[index], self.threshold_range)

    def pixel_probs(self) -> np.ndarray:
        """Exact probability that a random annotator marks each pixel, shape ``(N, H, W)``."""
        lo, hi = self.threshold_range
        s = self.lesion_maps.transpose(1, 0, 2, 3)  # (K, N, H, W)
        edges = np.concatenate([np.full((1,) + s.shape[1:], lo), np.clip(s, lo, hi)])
        edges = np.sort(np.concatenate([edges, np.full((1,) + s.shape[1:], hi)]), axis=0)
        widths = np.diff(edges, axis=0)  # (K + 1, N, H, W)
        mids = (edges[1:] + edges[:-1]) / 2
        v = self.visibility.T[:, :, None, None]  # (K, N, 1, 1)
        unseen = np.prod(1 - v[None] * (s[None] > mids[:, None]), axis=1)  # (K + 1, N, H, W)
        return ((1 - unseen) * widths).sum(0) / (hi - lo)

    def sample(self, num_samples: int, *, seed: int = 0) -> np.ndarray:
        r"""Fresh annotations from the true distribution, shape ``(num_samples, N, H, W)``.

        Each sample is one new annotator per image: a level $t \sim \mathcal U(t_\text{lo},
        t_\text{hi})$ and a Bernoulli($v_k$) draw per lesion, independent across images.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        rng = np.random.default_rng(seed)
        return _annotate(rng, self.lesion_maps, self.visibility, self.threshold_range, num_samples)


def _annotate(
    rng: np.random.Generator,
    maps: np.ndarray,
    visibility: np.ndarray,
    threshold_range: tuple[float, float],
    count: int,
) -> np.ndarray:
    """``count`` annotations per image, shape ``(count, N, H, W)``, as uint8 in {0, 1}."""
    n, k = visibility.shape
    level = rng.uniform(*threshold_range, size=(count, n, 1, 1, 1))
    seen = rng.random((count, n, k)) < visibility
    marked = (maps[None] > level) & seen[..., None, None]
    return marked.any(axis=2).astype(np.uint8)


def _texture(rng: np.random.Generator, n: int, grid: np.ndarray, amplitude: float) -> np.ndarray:
    """Smooth random background: a sum of low-frequency plane waves, shape ``(N, H, W)``."""
    freq = rng.uniform(1.0, 4.0, size=(n, _TEXTURE_WAVES, 1, 1))
    angle = rng.uniform(0, 2 * np.pi, size=(n, _TEXTURE_WAVES, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, _TEXTURE_WAVES, 1, 1))
    proj = np.cos(angle) * grid[0] + np.sin(angle) * grid[1]
    waves = np.cos(2 * np.pi * freq * proj + phase)
    return amplitude * waves.sum(1) / np.sqrt(_TEXTURE_WAVES)


def _lesion_maps(rng: np.random.Generator, shape: tuple[int, int], grid: np.ndarray) -> np.ndarray:
    r"""Soft elliptic blobs $\exp(-r^2/2)$ with random centre, radii and angle, ``shape + (H, W)``."""
    centre = rng.uniform(0.3, 0.7, size=shape + (2, 1, 1))
    radius = rng.uniform(0.06, 0.13, size=shape + (2, 1, 1))
    angle = rng.uniform(0, np.pi, size=shape + (1, 1))
    dx, dy = grid[0] - centre[..., 0, :, :], grid[1] - centre[..., 1, :, :]
    along = (np.cos(angle) * dx + np.sin(angle) * dy) / radius[..., 0, :, :]
    across = (-np.sin(angle) * dx + np.cos(angle) * dy) / radius[..., 1, :, :]
    return np.exp(-0.5 * (along**2 + across**2))


def make_lesions(
    num_images: int,
    *,
    size: int = 32,
    annotators: int = 4,
    max_lesions: int = 2,
    threshold_range: tuple[float, float] = (0.3, 0.7),
    noise: float = 0.08,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, LesionTruth]:
    r"""Generate the ambiguous lesion-segmentation set.

    Lesion slot 0 holds a clear lesion (contrast in ``[0.35, 0.6]``, seen by everyone) with
    probability 0.8, else a faint one; every further slot holds a faint lesion (contrast in
    ``[0.12, 0.22]``, visibility $v \sim \mathcal U(0.2, 0.8)$) with probability 0.5, else
    nothing. Images are ``texture + Σ_k c_k s_k + noise`` with Gaussian pixel noise.

    Parameters
    ----------
    num_images : int
        Number of images ``N``.
    size : int
        Height and width ``H = W`` in pixels (at least 8).
    annotators : int
        Annotations per image ``A``.
    max_lesions : int
        Lesion slots ``K`` per image.
    threshold_range : (float, float)
        ``0 < t_lo < t_hi < 1``: range of the annotators' outline levels.
    noise : float
        Standard deviation of the pixel noise.
    seed : int
        Seed of the generator: the same arguments give the same arrays.

    Returns
    -------
    images : ndarray, shape ``(N, 1, H, W)``, float32
    masks : ndarray, shape ``(N, A, H, W)``, uint8 in {0, 1}
    truth : LesionTruth
        The distribution the masks were drawn from.
    """
    for value, name, minimum in (
        (num_images, "num_images", 1),
        (size, "size", 8),
        (annotators, "annotators", 1),
        (max_lesions, "max_lesions", 1),
        (seed, "seed", 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    lo, hi = (float(t) for t in threshold_range)
    if not 0 < lo < hi < 1:
        raise ValueError(f"threshold_range must satisfy 0 < t_lo < t_hi < 1, got {threshold_range}")
    if not (isinstance(noise, int | float) and noise >= 0):
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    rng = np.random.default_rng(seed)
    n, k = int(num_images), int(max_lesions)
    coords = (np.arange(size) + 0.5) / size
    grid = np.stack(np.meshgrid(coords, coords, indexing="xy"))  # (2, H, W): x, y
    maps = _lesion_maps(rng, (n, k), grid)
    kind = rng.random((n, k))
    clear = np.zeros((n, k), dtype=bool)
    clear[:, 0] = kind[:, 0] < 0.8
    faint = ~clear & ((kind < 0.5) | (np.arange(k) == 0))
    contrast = np.where(
        clear, rng.uniform(0.35, 0.6, (n, k)), np.where(faint, rng.uniform(0.12, 0.22, (n, k)), 0)
    )
    visibility = np.where(clear, 1.0, np.where(faint, rng.uniform(0.2, 0.8, (n, k)), 0.0))
    maps = np.where((clear | faint)[..., None, None], maps, 0.0)
    images = _texture(rng, n, grid, 0.12) + (contrast[..., None, None] * maps).sum(1)
    images = images + noise * rng.standard_normal(images.shape)
    masks = _annotate(rng, maps, visibility, (lo, hi), int(annotators)).transpose(1, 0, 2, 3)
    truth = LesionTruth(maps, visibility, (lo, hi))
    return images[:, None].astype(np.float32), np.ascontiguousarray(masks), truth


def check_segmentation_arrays(images, masks, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validate user images ``(N, C, H, W)`` and binary masks ``(N, A, H, W)``.

    Returns float64 images and uint8 masks; raises ``ValueError``/``TypeError`` naming the
    offending shape or value.
    """
    tag = f"{where}" if where else ""
    x = _check_inputs(images, f"{tag}images")
    if x.ndim != 4:
        raise ValueError(f"{tag}images must have shape (N, C, H, W), got {x.shape}")
    if torch.is_tensor(masks):
        masks = masks.detach().cpu().numpy()
    m = np.asarray(masks)
    if m.dtype == object or not (np.issubdtype(m.dtype, np.number) or m.dtype == bool):
        raise TypeError(f"{tag}masks must be a numeric or boolean array, got dtype {m.dtype}")
    if m.ndim != 4:
        raise ValueError(f"{tag}masks must have shape (N, A, H, W), got {m.shape}")
    if m.shape[0] != x.shape[0]:
        raise ValueError(f"{tag}images has {x.shape[0]} examples but masks has {m.shape[0]}")
    if m.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"{tag}masks have spatial size {m.shape[2:]} but images have {x.shape[2:]}; each "
            "mask must cover its image pixel for pixel"
        )
    if m.shape[1] < 1 or m.size == 0:
        raise ValueError(f"{tag}masks must hold at least one annotation per image, got {m.shape}")
    binary = (m == 0) | (m == 1)
    if not binary.all():
        bad = m[~binary]
        raise ValueError(
            f"{tag}masks must be binary (0/1 or bool); found {bad.size} other values, e.g. "
            f"{bad.flat[0]!r}"
        )
    return x, m.astype(np.uint8)
