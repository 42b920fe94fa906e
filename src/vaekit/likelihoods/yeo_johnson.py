"""The Yeo-Johnson power transform of numeric table columns (robustly fitted), used by the
tabular likelihood: T(x) = YJ_λ((x − c)/r) with its inverse and log-slope, so that a density on
T(x) stays a density in the original units (log p(x) = log p(T(x)) + log T'(x))."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "POWER_RANGE",
    "yeo_johnson",
    "yeo_johnson_inverse",
    "yeo_johnson_log_slope",
    "fit_yeo_johnson",
]

MIN_STD = 1e-8
POWER_RANGE = (0.0, 2.0)  # Yeo-Johnson λ in here: T maps ℝ onto ℝ
POWER_SEARCH = (-4.0, 6.0)  # λ search interval of the robust fit (projected to POWER_RANGE)
OUTLIER_Z = 2.576  # rows beyond this robust z of the transformed column do not fit λ


def _scaled(fn, a: Tensor, lam: Tensor) -> Tensor:
    """fn(λ·a)/λ elementwise, and its λ → 0 limit ``a`` (for fn = expm1 or log1p)."""
    return torch.where(lam.abs() < 1e-6, a, fn(lam * a) / torch.where(lam == 0, 1, lam))


def yeo_johnson(z: Tensor, lam: Tensor) -> Tensor:
    """Yeo-Johnson transform, elementwise (``lam`` broadcasts): ((1+z)^λ − 1)/λ for z ≥ 0,
    −((1−z)^(2−λ) − 1)/(2−λ) for z < 0 (the logarithms at λ = 0 and λ = 2)."""
    pos, neg = torch.log1p(z.clamp_min(0)), torch.log1p((-z).clamp_min(0))
    lam, mu = lam.expand_as(z), (2 - lam).expand_as(z)
    return torch.where(z >= 0, _scaled(torch.expm1, pos, lam), -_scaled(torch.expm1, neg, mu))


def yeo_johnson_inverse(t: Tensor, lam: Tensor) -> Tensor:
    """The inverse of ``yeo_johnson`` for λ in [0, 2], defined on the whole real line."""
    lam, mu = lam.expand_as(t), (2 - lam).expand_as(t)
    up = _scaled(torch.log1p, t.clamp_min(0), lam)
    down = _scaled(torch.log1p, (-t).clamp_min(0), mu)
    return torch.where(t >= 0, torch.expm1(up), -torch.expm1(down))


def yeo_johnson_log_slope(z: Tensor, lam: Tensor) -> Tensor:
    """log dYJ_λ(z)/dz = (λ − 1)·sign(z)·log(1 + |z|)."""
    return (lam - 1) * torch.sign(z) * torch.log1p(z.abs())


def fit_yeo_johnson(v: np.ndarray, rounds: int = 3) -> tuple[float, float, float]:
    """(center, spread, λ) of a column's values ``v``: median and 1.4826·MAD (the std when the
    MAD is 0), and the maximum-likelihood λ (searched in ``POWER_SEARCH``) of the standardized
    values, refitted ``rounds`` times on the rows within ``OUTLIER_Z`` robust z-scores of the
    transformed column, so that outliers in the (contaminated) data do not bend λ towards
    themselves (Raymaekers & Rousseeuw, 2021, "Transforming variables to central normality");
    the result is projected onto ``POWER_RANGE``, where the transform maps ℝ onto ℝ. A column
    whose core (those rows) is a single value, e.g. mostly zeros, keeps λ = 1 (no shape to fit)."""
    from scipy.optimize import minimize_scalar
    from scipy.stats import yeojohnson_llf

    v = np.asarray(v, dtype=np.float64)
    if len(v) < 3 or np.ptp(v) == 0:
        return 0.0, 1.0, 1.0
    center = float(np.median(v))
    spread = float(1.4826 * np.median(np.abs(v - center)))
    if spread <= MIN_STD:
        spread = float(v.std())
    z = (v - center) / spread

    def best(rows: np.ndarray) -> float:
        res = minimize_scalar(
            lambda lam: -yeojohnson_llf(lam, rows), bounds=POWER_SEARCH, method="bounded"
        )
        return float(res.x)

    lam = best(z)
    for _ in range(rounds):
        t = yeo_johnson(torch.from_numpy(z), torch.tensor(lam).double()).numpy()
        mid = np.median(t)
        mad = 1.4826 * np.median(np.abs(t - mid))
        keep = np.abs(t - mid) <= OUTLIER_Z * mad
        if mad <= MIN_STD or keep.sum() < 3 or np.ptp(z[keep]) == 0:
            return center, spread, 1.0  # the core is one value: no shape to fit, identity
        lam = best(z[keep])
    return center, spread, float(np.clip(lam, *POWER_RANGE))
