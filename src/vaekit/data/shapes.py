"""A procedural dSprites-style dataset with known generative factors (numpy only, no download).

64×64 binary images of one sprite. Factors, in order, with their sizes (as in dSprites):

    color        1  (constant white) — or 6 hues in the colour variant
    shape        3  square, ellipse, heart
    scale        6  0.5, 0.6, …, 1.0
    orientation 40  2πk/40, k = 0..39 (counter-clockwise; [0, 2π), not dSprites' repeated 2π)
    posX        32  k/31 ∈ [0, 1], left → right
    posY        32  k/31 ∈ [0, 1], top → bottom

737,280 combinations (4,423,680 in colour). Geometry, in pixels at scale 1: square half-side 9.5,
ellipse semi-axes 14 × 7, heart (x² + y² − 1)³ − x²y³ ≤ 0 scaled so that its farthest point is 14
from its centroid (the centre of rotation). The sprite's centre lies on the pixel centre
(16 + 31·posX, 16 + 31·posY): positions step by exactly one pixel, so every image is one of the
3·6·40 = 720 (shape, scale, orientation) templates pasted at an integer offset. Templates are
rasterised once by the inside test at pixel centres, with pixel coordinates inverse-rotated into the
sprite's frame; nothing is random. The square's 4-fold and the ellipse's 2-fold symmetry make some
orientations indistinguishable, as in dSprites.

Colour variant (``Shapes(color=True)``): RGB images, the colour factor has the 6 hues at 60° steps
(red, yellow, green, cyan, blue, magenta: the saturated hues whose channels are all 0 or 255), so
images stay binary per channel and a Bernoulli likelihood still applies.

``FactorDataset`` (defined in ``vaekit.disentangle``, re-exported here) is the protocol the
metrics need; any dataset with ``factor_sizes``, ``sample_factors`` and ``render`` plugs in. The
dataset registry's ``shapes`` spec loads a sample of it (``data.registry``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..disentangle import FactorDataset  # the protocol the metrics need (re-exported here)

__all__ = ["FactorDataset", "Shapes", "HUES"]

SIZE = 64  # image side, pixels
_HALF = 16  # template half-size: a template is (2·16 + 1)² pixels centred on its middle pixel
_T = 2 * _HALF + 1
_CHUNK = 4096  # images rendered at a time
_N_POS = 32  # offsets 0..31 keep the 33-pixel template inside the 64-pixel image

_SQUARE_HALF = 9.5
_ELLIPSE_AXES = (14.0, 7.0)
_HEART_CENTROID_Y = 0.2935  # centroid of the implicit heart, in its own units
_HEART_UNIT = 14.0 / 1.2935  # pixels per heart unit: farthest point 14 px from the centroid

# The 6 saturated hues at 60° steps, RGB in {0, 255}.
HUES = np.array(
    [[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 255, 255], [0, 0, 255], [255, 0, 255]],
    dtype=np.uint8,
)


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in the sprite's frame (pixels at scale 1, v up).

    shape (N, 1, 1) in {0, 1, 2}; u, v (N, H, W) → bool (N, H, W)."""
    square = np.maximum(np.abs(u), np.abs(v)) <= _SQUARE_HALF
    a, b = _ELLIPSE_AXES
    ellipse = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    x, y = u / _HEART_UNIT, v / _HEART_UNIT + _HEART_CENTROID_Y
    heart = (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))


def _rasterise(shape, scale, angle, dx, dy) -> np.ndarray:
    """Binary masks (N, H, W): pixel centres at offsets (dx right, dy down) (N or 1, H, W) from
    the sprite's centre, inverse-rotated by ``angle`` and divided by ``scale`` (both (N,))."""
    shape, scale, angle = (np.asarray(a)[:, None, None] for a in (shape, scale, angle))
    x, y = dx / scale, -dy / scale
    cos, sin = np.cos(angle), np.sin(angle)
    return _inside(shape, cos * x + sin * y, -sin * x + cos * y)


class Shapes:
    """dSprites-style sprites (see the module docstring); ``Shapes(color=True)`` for RGB."""

    SCALES = np.linspace(0.5, 1.0, 6)
    ORIENTATIONS = 2.0 * np.pi * np.arange(40) / 40
    POSITIONS = np.linspace(0.0, 1.0, _N_POS)
    SHAPES = ("square", "ellipse", "heart")

    def __init__(self, color: bool = False):
        self.color = bool(color)
        self.factor_names = ("color", "shape", "scale", "orientation", "posX", "posY")
        self.factor_sizes = (len(HUES) if self.color else 1, 3, 6, 40, _N_POS, _N_POS)
        self.channels = 3 if self.color else 1
        self.n_combinations = int(np.prod(self.factor_sizes))

    # ---------------------------------------------------------------- factors
    def check(self, factors: np.ndarray) -> np.ndarray:
        """Validated int64 (N, K) factors; ValueError if a value is outside its range."""
        f = np.asarray(factors)
        if f.ndim != 2 or f.shape[1] != len(self.factor_sizes):
            raise ValueError(f"factors must be (N, {len(self.factor_sizes)}), got {f.shape}")
        if not np.issubdtype(f.dtype, np.integer):
            raise ValueError(f"factors must be integers, got {f.dtype}")
        bad = (f < 0) | (f >= np.array(self.factor_sizes))
        if bad.any():
            n, k = np.argwhere(bad)[0]
            raise ValueError(
                f"factor {self.factor_names[k]} = {f[n, k]} outside 0..{self.factor_sizes[k] - 1}"
            )
        return f.astype(np.int64, copy=False)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n independent uniform factor vectors, int64 (N, K)."""
        return rng.integers(0, self.factor_sizes, size=(n, len(self.factor_sizes)), dtype=np.int64)

    def index(self, factors: np.ndarray) -> np.ndarray:
        """Flat index (N,) in row-major order of ``factor_sizes`` (posY fastest)."""
        f = self.check(factors)
        return np.ravel_multi_index(tuple(f.T), self.factor_sizes).astype(np.int64)

    def factors_of(self, index: np.ndarray) -> np.ndarray:
        """Inverse of ``index``: int64 (N, K); ValueError outside 0..n_combinations − 1."""
        idx = np.asarray(index, dtype=np.int64)
        return np.stack(np.unravel_index(idx, self.factor_sizes), axis=-1).astype(np.int64)

    # ---------------------------------------------------------------- images
    @cached_property
    def templates(self) -> np.ndarray:
        """bool (3, 6, 40, 33, 33): every (shape, scale, orientation) sprite centred on pixel 16."""
        s, c, o = np.meshgrid(np.arange(3), np.arange(6), np.arange(40), indexing="ij")
        s, c, o = s.ravel(), c.ravel(), o.ravel()
        grid = np.arange(_T, dtype=np.float64) - _HALF
        masks = _rasterise(
            s, self.SCALES[c], self.ORIENTATIONS[o], grid[None, None, :], grid[None, :, None]
        )
        return masks.reshape(3, 6, 40, _T, _T)

    def masks(self, factors: np.ndarray) -> np.ndarray:
        """bool (N, 64, 64) sprite masks (colour ignored): templates pasted at their offsets."""
        f = self.check(factors)
        out = np.zeros((len(f), SIZE, SIZE), dtype=bool)
        n, h, w = out.strides
        shape = (len(f), _N_POS, _N_POS, _T, _T)  # windows[i, row, col] = 33×33 block at offset
        windows = as_strided(out, shape, (n, h, w, h, w), writeable=True)
        windows[np.arange(len(f)), f[:, 5], f[:, 4]] = self.templates[f[:, 1], f[:, 2], f[:, 3]]
        return out

    def render(self, factors: np.ndarray) -> np.ndarray:
        """uint8 (N, C, 64, 64) with values 0/255; C = 1, or 3 in the colour variant."""
        f = self.check(factors)
        out = np.empty((len(f), self.channels, SIZE, SIZE), dtype=np.uint8)
        for start in range(0, len(f), _CHUNK):  # chunks keep the temporaries in cache
            part = f[start : start + _CHUNK]
            masks = self.masks(part)[:, None]  # (n, 1, 64, 64)
            colour = HUES[part[:, 0]] if self.color else np.full((len(part), 1), 255, np.uint8)
            np.multiply(masks, colour[:, :, None, None], out=out[start : start + _CHUNK])
        return out

    def load(self, n_train: int, n_test: int, seed: int = 0):
        """(x_train, y_train, x_test, y_test): distinct factor combinations drawn uniformly without
        replacement with ``np.random.default_rng(seed)`` (train and test disjoint), images uint8
        (N, C, 64, 64) and factors int64 (N, K)."""
        if n_train + n_test > self.n_combinations:
            raise ValueError(f"only {self.n_combinations} distinct images exist")
        rng = np.random.default_rng(seed)
        flat = rng.choice(self.n_combinations, size=n_train + n_test, replace=False)
        y = self.factors_of(flat)
        y_train, y_test = y[:n_train], y[n_train:]
        return self.render(y_train), y_train, self.render(y_test), y_test

    def _render_reference(self, factors: np.ndarray) -> np.ndarray:
        """bool (N, 64, 64) by the inside test on the full 64×64 grid (slow; checks ``masks``)."""
        f = self.check(factors)
        grid = np.arange(SIZE, dtype=np.float64)
        cx, cy = (_HALF + f[:, 4])[:, None, None], (_HALF + f[:, 5])[:, None, None]
        dx, dy = grid[None, None, :] - cx, grid[None, :, None] - cy
        return _rasterise(f[:, 1], self.SCALES[f[:, 2]], self.ORIENTATIONS[f[:, 3]], dx, dy)
