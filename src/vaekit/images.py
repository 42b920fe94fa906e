"""Pictures of what a model learned: sample grids, reconstructions, interpolations, as PNG.

Images are ``(N, C, H, W)`` in the likelihood's support; ``to_unit`` maps them to [0, 1] for
display through the likelihood's own encoder-input scaling.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .latent import PATHS, decode_groups

__all__ = [
    "grid",
    "save_png",
    "samples",
    "reconstructions",
    "interpolation",
    "is_image",
    "write_run_pictures",
]


def is_image(event_shape) -> bool:
    """True for ``(C, H, W)`` with 1 or 3 channels."""
    return len(event_shape) == 3 and event_shape[0] in (1, 3)


def grid(x: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``(N, C, H, W)`` values in [0, 1] into an ``(H', W', 3)`` uint8 array."""
    x = x.detach().float().clamp(0, 1).cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    out = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        out[:, top : top + h, left : left + w] = x[i]
    return (out.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_png(path: str | Path, array: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _to_unit(model, x: Tensor) -> Tensor:
    """Values to [0, 1] for display, as the likelihood decides (``Likelihood.display``)."""
    return model.likelihood.display(x)


@torch.no_grad()
def samples(
    model,
    n: int = 64,
    y: Tensor | None = None,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    n_top: int | None = None,
    lower_temperature: float = 0.0,
) -> Tensor:
    """Means E[x|z] of ``n`` prior draws z ~ N(0, temperature² I), in [0, 1], seeded; ``y``
    conditions a conditional model (default: the classes in turn). Hierarchical models with
    ``n_top`` below their number of groups: the top ``n_top`` groups are drawn at
    ``temperature`` and the groups below at ``lower_temperature`` (0: their prior means)."""
    gen = torch.Generator().manual_seed(seed)
    if n_top is not None and n_top < model.n_groups:
        z = model.prior_codes(n, temperature=temperature, generator=gen)
        means = decode_groups(
            model, z, n_top, lower="prior", temperature=lower_temperature, seed=seed
        )
        return _to_unit(model, means)
    x = model.sample(n, y, temperature=temperature, mean=True, generator=gen)
    return _to_unit(model, x)


@torch.no_grad()
def reconstructions(model, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """Inputs and E[x | z = posterior mean] interleaved in pairs of rows, in [0, 1]."""
    # a conditional model reconstructs given each input's label
    x = x.to(model.device)
    labels = None if labels is None else labels.to(model.device)
    recon = model.decode(model.encode(x, labels, check=False).mean, labels).mean
    pairs = torch.stack([_to_unit(model, x.float()), _to_unit(model, recon)], 1)  # (N, 2, C, H, W)
    n = len(x)
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    pairs = torch.cat([pairs, pairs[:1].expand(rows * cols - n, *pairs.shape[1:])])[: rows * cols]
    # (rows, cols, 2, ...) → (rows, 2, cols, ...): an input row followed by its reconstruction row.
    return pairs.view(rows, cols, 2, *x.shape[1:]).transpose(1, 2).reshape(-1, *x.shape[1:])


@torch.no_grad()
def interpolation(
    model,
    x_a: Tensor,
    x_b: Tensor,
    steps: int = 10,
    path: str = "linear",
    y: Tensor | None = None,
    *,
    n_top: int | None = None,
    temperature: float = 0.0,
) -> Tensor:
    """Decoded means along a path (``linear`` or ``slerp``) between the posterior means of two
    examples ``x_a``, ``x_b`` of shape ``event_shape``; returns ``(steps, C, H, W)`` in [0, 1].
    ``y`` (one label) conditions a conditional model along the whole path. Hierarchical models:
    ``n_top`` groups follow the path and the groups below are drawn from the prior at
    ``temperature`` (0: the prior means; seeded); default: all groups."""
    yy = None if y is None else y.reshape(1).to(model.device)
    pair = torch.stack([x_a, x_b]).float().to(model.device)
    mu = model.encode(pair, yy, check=False).mean  # (2, D)
    codes = PATHS[path](mu[0], mu[1], steps)
    if n_top is not None and n_top < model.n_groups:
        means = decode_groups(model, codes, n_top, lower="prior", temperature=temperature)
        return _to_unit(model, means)
    return _to_unit(model, model.decode(codes, yy).mean)


def write_run_pictures(
    model, x_test: Tensor, out: str | Path, labels: Tensor | None = None
) -> dict[str, Path]:
    """Write ``samples.png`` (64 prior draws) and ``reconstructions.png`` (32 test inputs)."""
    if not is_image(model.event_shape):
        return {}
    out = Path(out)
    return {
        "samples": save_png(out / "samples.png", grid(samples(model, 64), nrow=8)),
        "reconstructions": save_png(
            out / "reconstructions.png",
            grid(reconstructions(model, x_test[:32], _first(labels, 32)), nrow=8),
        ),
    }


def _first(labels: Tensor | None, n: int) -> Tensor | None:
    return None if labels is None else labels[:n]
