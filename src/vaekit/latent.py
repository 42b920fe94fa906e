"""Moving through latent space: paths between codes.

Latent codes are posterior means ``(B, D)``; paths are ``(steps, D)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lerp", "slerp", "PATHS"]


def lerp(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """z(t) = (1 − t)·z_a + t·z_b at ``steps`` evenly spaced t ∈ [0, 1]; ``(steps, D)``."""
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype).unsqueeze(1)
    return (1 - t) * z_a + t * z_b


def slerp(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """Spherical interpolation: the great-circle path between the directions of z_a and z_b,
    with the norm interpolated linearly (so endpoints are exact); ``(steps, D)``."""
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype).unsqueeze(1)
    na, nb = z_a.norm(), z_b.norm()
    ua, ub = z_a / na, z_b / nb
    omega = torch.arccos((ua * ub).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    if omega < 1e-4:
        return lerp(z_a, z_b, steps)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
    return direction * ((1 - t) * na + t * nb)


PATHS = {"linear": lerp, "slerp": slerp}
