"""From stored data (uint8 levels or floats) to values in a likelihood's support.

Dynamic binarization (the standard MNIST likelihood benchmark): every training batch is resampled
as x ~ Bernoulli(pixel/255) from 16-bit uniforms (``binarize_fast``); the evaluation split is
binarized once with a fixed seed from 24-bit uniforms (``binarize``, unchanged since the first
release, so that every run is evaluated on the same test set). Without
binarization, 8-bit data go through the likelihood's own ``prepare`` (dequantization for a
Gaussian, integer levels for categorical / discretized logistic); float data pass unchanged.

Augmentation (``augment``): ``flip`` mirrors each training image left-right with probability ½
(faces, photos); the coin flips come from the trainer's data generator, drawn before the batch's
binarization / dequantization, so a seeded run and its resumed continuation see the same
batches. ``fixed`` (the evaluation splits) never augments. ``none`` draws nothing, so runs
without augmentation keep their random stream bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..likelihoods.base import Likelihood

__all__ = ["DataPrep", "BINARIZE", "AUGMENT", "binarize", "binarize_fast", "flip"]

BINARIZE = ("auto", "dynamic", "none")
AUGMENT = ("auto", "none", "flip")  # auto: what the dataset implies, else none


def binarize(levels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x ~ Bernoulli(k/255) for uint8 levels k, as 1[255·u < k] with u ~ U(0, 1) (24-bit floats):
    P(x=1) is k/255 to within 2⁻²⁴. Float32 of ``levels``' shape; u is overwritten in place."""
    u = torch.rand(levels.shape, generator=generator, device=levels.device)
    return u.mul_(255.0).lt_(levels)


def binarize_fast(levels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``binarize`` from 16-bit uniforms, about twice as fast (the training batches' version).

    One 64-bit draw gives four s ~ U{0, …, 65535}; x = 1[s·255/65536 < k], computed exactly in
    float32 (s·255 < 2²⁴), so P(x=1) = ⌈65536·k/255⌉/65536: exactly 0 for k = 0 and 1 for k = 255,
    within 1.6·10⁻⁵ of k/255 in between.
    """
    n = levels.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=levels.device)
    words.random_(-(2**63), None, generator=generator)  # all 64 bits uniform
    r = words.view(torch.int16)[:n].view(levels.shape).float()  # r = s − 32768
    return r.mul_(255.0 / 65536.0).add_(127.5).lt_(levels)  # s·255/65536 < k


def flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each image of ``(B, C, H, W)`` mirrored left-right with probability ½ (one uniform per
    image from ``generator``); a new tensor of the same dtype."""
    if images.dim() != 4:
        raise ValueError(f"flip augmentation needs images (B, C, H, W), got {tuple(images.shape)}")
    coin = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(coin.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)


class DataPrep:
    """Turns raw batches into likelihood-support values; ``binarize`` is auto | dynamic | none,
    ``augment`` none | flip (``auto`` means none here: the run setup resolves it per dataset)."""

    def __init__(self, likelihood: Likelihood, binarize: str = "auto", augment: str = "none"):
        if binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
        if augment not in AUGMENT:
            raise ValueError(f"augment must be one of {AUGMENT}, got {augment!r}")
        self.likelihood = likelihood
        if binarize == "auto":
            binarize = "dynamic" if likelihood.binary else "none"
        self.binarize = binarize
        self.augment = "none" if augment == "auto" else augment
        if self.augment == "flip" and len(likelihood.event_shape) != 3:
            raise ValueError(
                f"augment flip needs images (C, H, W), got data of shape {likelihood.event_shape}"
            )

    def __call__(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One training batch; random parts (flips, binarization, dequantization) drawn from
        ``generator``, in that order."""
        if self.augment == "flip":
            raw = flip(raw, generator)
        return self._prepare(raw, generator)

    def _prepare(self, raw: Tensor, generator: torch.Generator | None) -> Tensor:
        if raw.dtype != torch.uint8:
            return raw.float()
        if self.binarize == "dynamic":
            return binarize_fast(raw, generator)
        return self.likelihood.prepare(raw, generator)

    def fixed(self, raw: Tensor, seed: int = 0) -> Tensor:
        """The whole split prepared once with a seeded generator (the evaluation convention)."""
        generator = torch.Generator().manual_seed(seed)
        if not isinstance(raw, Tensor):  # a split on disk (``shards.ShardedArray``): read it
            raw = raw[:]
        if raw.dtype == torch.uint8 and self.binarize == "dynamic":
            return binarize(raw, generator)  # the same test set as every earlier run
        return self._prepare(raw, generator)  # never augmented
