"""Likelihood heads for images and other 8-bit or real-valued arrays: Bernoulli (binary),
Gaussian (continuous, learned scale), Categorical over 256 levels, discretized logistic."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal

from ..distributions import MIN_SCALE, DiscretizedLogistic, SupportError
from .base import Likelihood

__all__ = [
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "CategoricalLikelihood",
    "LogisticLikelihood",
    "check_levels",
]


class _BinaryBernoulli(Bernoulli):
    """Bernoulli(logits) whose ``log_prob`` is specialised to x ∈ {0, 1} (checked upstream):
    log p(x) = x·l − softplus(l) = log σ((2x − 1)·l), one fused pass instead of
    ``binary_cross_entropy_with_logits``'s several (the IWAE evaluation's hot spot)."""

    def log_prob(self, value: Tensor) -> Tensor:
        return F.logsigmoid((2.0 * value - 1.0) * self.logits)


class BernoulliLikelihood(Likelihood):
    """p(x|z) = Π_d Bern(x_d; σ(logits_d)); x ∈ {0, 1}."""

    name = "bernoulli"
    binary = True
    discrete = True

    def dist(self, params: Tensor) -> Distribution:
        base = _BinaryBernoulli(logits=self._param(params, 0), validate_args=False)
        return Independent(base, self._event_dims(), validate_args=False)

    def check(self, x: Tensor) -> None:
        super().check(x)
        bad = (x != 0) & (x != 1)
        if bad.any():
            v, lo, hi = float(x[bad][0]), float(x.min()), float(x.max())
            raise SupportError(
                f"bernoulli likelihood needs binary data (0 or 1), got {v:g} (values in "
                f"[{lo:g}, {hi:g}]); binarize the data (--binarize dynamic) or choose the "
                "gaussian, categorical or logistic likelihood for grey levels"
            )

    def prepare(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Already binary data pass through; grey levels must be binarized by the data pipeline."""
        return raw.float()


class GaussianLikelihood(Likelihood):
    """p(x|z) = Π_d N(x_d; loc_d, scale²) with a learned scale, shared or per dimension.

    8-bit data are dequantized to x = (k + u)/256, u ~ U(0,1), so that −log p(x) + D·log 256 is an
    upper bound on the discrete negative log-likelihood (``nats_offset_per_dim = log 256``, only
    when ``levels`` says the data were 8-bit: real-valued data keep their density, offset 0).
    """

    name = "gaussian"

    def __init__(
        self,
        event_shape: tuple[int, ...],
        scale: str = "per_dim",
        init_scale: float = 0.1,
        levels: int | None = 256,
    ):
        super().__init__(event_shape)
        shape = event_shape if scale == "per_dim" else ()
        if scale not in ("per_dim", "shared"):
            raise ValueError(f"gaussian scale must be 'per_dim' or 'shared', got {scale!r}")
        self.log_scale = nn.Parameter(torch.full(shape, math.log(init_scale)))
        self.levels = levels

    @property
    def nats_offset_per_dim(self) -> float:
        return math.log(float(self.levels)) if self.levels else 0.0

    def dist(self, params: Tensor) -> Distribution:
        loc = self._param(params, 0)
        scale = self.log_scale.exp().clamp_min(MIN_SCALE).expand_as(loc)
        return Independent(
            Normal(loc, scale, validate_args=False), self._event_dims(), validate_args=False
        )

    def prepare(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(raw.shape, generator=generator, device=raw.device)
        return (raw.float() + u) / 256.0


class CategoricalLikelihood(Likelihood):
    """p(x|z) = Π_d Cat(x_d; softmax(logits_d)) over the 256 levels 0..255."""

    name = "categorical"
    n_params = 256
    discrete = True

    def dist(self, params: Tensor) -> Distribution:
        logits = params.movedim(-self._event_dims() - 1, -1)  # (*batch, *event, 256)
        return Independent(
            _FloatCategorical(logits=logits, validate_args=False),
            self._event_dims(),
            validate_args=False,
        )

    def check(self, x: Tensor) -> None:
        super().check(x)
        check_levels(self.name, x)

    def encoder_input(self, x: Tensor) -> Tensor:
        return x / 255.0


class _FloatCategorical(Categorical):
    """Categorical that accepts integer-valued float observations (data tensors stay float)."""

    def log_prob(self, value: Tensor) -> Tensor:
        return super().log_prob(value.long())

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        return super().sample(sample_shape).float()

    @property
    def mean(self) -> Tensor:
        levels = torch.arange(self.logits.shape[-1], dtype=self.probs.dtype)
        return (self.probs * levels).sum(-1)


class LogisticLikelihood(Likelihood):
    """p(x|z) = Π_d DiscretizedLogistic(x_d; loc_d, scale_d) on the levels 0..255."""

    name = "logistic"
    n_params = 2
    discrete = True

    def dist(self, params: Tensor) -> Distribution:
        loc = self._param(params, 0)
        scale = F.softplus(self._param(params, 1)) + 1e-3
        return Independent(DiscretizedLogistic(loc, scale), self._event_dims(), validate_args=False)

    def check(self, x: Tensor) -> None:
        super().check(x)
        check_levels(self.name, x)

    def encoder_input(self, x: Tensor) -> Tensor:
        return x / 255.0


def check_levels(name: str, x: Tensor) -> None:
    """``SupportError`` unless every value is an integer level 0..255."""
    if x.is_floating_point() and not (x == x.round()).all():
        raise SupportError(f"{name} likelihood needs integer levels 0..255, got fractional values")
    if (x < 0).any() or (x > 255).any():
        raise SupportError(
            f"{name} likelihood needs integer levels 0..255, got values in "
            f"[{float(x.min()):g}, {float(x.max()):g}]"
        )
