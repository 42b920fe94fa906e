"""Likelihood heads for count data (counts per feature: gene expression, event counts, word
counts): Poisson and negative binomial. Values are non-negative integers stored as floats; the
encoder sees log(1 + x). Both are probability masses, so bits/dim need no constant."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, NegativeBinomial, Poisson

from ..distributions import SupportError
from .base import Likelihood

__all__ = ["PoissonLikelihood", "NegativeBinomialLikelihood", "check_counts"]

MAX_LOG_RATE = 20.0  # rates are exp(min(η, 20)) ≤ 4.9e8: no overflow in log_prob


def check_counts(name: str, x: Tensor) -> None:
    """``SupportError`` unless every value is a finite non-negative integer (one pass)."""
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise SupportError(f"{name} likelihood: data contain NaN or inf values")
    bad = (x < 0) | (x != x.round()) if x.is_floating_point() else x < 0
    if bad.any():
        v = float(x[bad][0])
        raise SupportError(f"{name} likelihood needs non-negative integer counts, got {v:g}")


class _CountLikelihood(Likelihood):
    """Shared parts: the support check, log1p encoder input, the log-rate parameter."""

    discrete = True

    def check(self, x: Tensor) -> None:
        check_counts(self.name, x)

    def encoder_input(self, x: Tensor) -> Tensor:
        return torch.log1p(x)

    def display(self, x: Tensor) -> Tensor:
        return (x / x.amax().clamp_min(1)).clamp(0, 1)

    def _log_rate(self, params: Tensor) -> Tensor:
        return self._param(params, 0).clamp(max=MAX_LOG_RATE)


class _Poisson(Poisson):
    """Poisson(rate) whose ``log_prob`` reads the log-rate directly (no log of the rate):
    log p(k) = k·η − e^η − log k!, η = log rate."""

    def __init__(self, log_rate: Tensor):
        self.log_rate = log_rate
        super().__init__(log_rate.exp(), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        return value * self.log_rate - self.rate - torch.lgamma(value + 1)


class PoissonLikelihood(_CountLikelihood):
    """p(x|z) = Π_d Poisson(x_d; λ_d), λ_d = exp(η_d) with η the decoder's output."""

    name = "poisson"

    def dist(self, params: Tensor) -> Distribution:
        return Independent(
            _Poisson(self._log_rate(params)), self._event_dims(), validate_args=False
        )


class NegativeBinomialLikelihood(_CountLikelihood):
    """p(x|z) = Π_d NB(x_d; mean μ_d, dispersion θ_d): μ = exp(η) from the decoder, θ learned per
    feature (as scVI's gene-wise dispersion). Var = μ + μ²/θ (Poisson as θ → ∞).

    In torch's parameterization NB(total_count = θ, logits = log μ − log θ):
    log p(k) = log Γ(k+θ) − log Γ(θ) − log k! + θ log(θ/(θ+μ)) + k log(μ/(θ+μ)).
    """

    name = "negbinomial"

    def __init__(self, event_shape: tuple[int, ...], init_dispersion: float = 1.0):
        super().__init__(event_shape)
        self.log_dispersion = nn.Parameter(torch.full(event_shape, math.log(init_dispersion)))

    def dist(self, params: Tensor) -> Distribution:
        log_mean = self._log_rate(params)
        log_theta = self.log_dispersion.clamp(-MAX_LOG_RATE, MAX_LOG_RATE)
        theta = log_theta.exp().expand_as(log_mean)
        base = NegativeBinomial(total_count=theta, logits=log_mean - log_theta, validate_args=False)
        return Independent(base, self._event_dims(), validate_args=False)
