"""From stored data (uint8 levels or floats) to values in a likelihood's support.

Dynamic binarization (the standard MNIST likelihood benchmark): every training batch is resampled
as x ~ Bernoulli(pixel/255); the evaluation split is binarized once with a fixed seed. Without
binarization, 8-bit data go through the likelihood's own ``prepare`` (dequantization for a
Gaussian, integer levels for categorical / discretized logistic); float data pass unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distributions import Likelihood

__all__ = ["DataPrep", "BINARIZE"]

BINARIZE = ("auto", "dynamic", "none")


class DataPrep:
    """Turns raw batches into likelihood-support values; ``binarize`` is auto | dynamic | none."""

    def __init__(self, likelihood: Likelihood, binarize: str = "auto"):
        if binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
        self.likelihood = likelihood
        if binarize == "auto":
            binarize = "dynamic" if likelihood.binary else "none"
        self.binarize = binarize

    def __call__(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One batch; random parts (binarization, dequantization) drawn from ``generator``."""
        if raw.dtype != torch.uint8:
            return raw.float()
        if self.binarize == "dynamic":
            # x ~ Bernoulli(k/255) as 255·u < k, u ~ U(0, 1): one pass, faster than torch.bernoulli
            u = torch.rand(raw.shape, generator=generator, device=raw.device)
            return (u.mul_(255.0) < raw).float()
        return self.likelihood.prepare(raw, generator)

    def fixed(self, raw: Tensor, seed: int = 0) -> Tensor:
        """The whole split prepared once with a seeded generator (the evaluation convention)."""
        return self(raw, torch.Generator().manual_seed(seed))
