"""Posteriors, priors and likelihoods on ``torch.distributions``.

Conventions: a posterior ``qz_x`` and the prior ``pz`` are ``Independent(Normal)`` with event shape
``(D,)``; a likelihood ``px_z`` is a distribution whose event shape is the data's event shape (for
images ``(C, H, W)``), so ``px_z.log_prob(x)`` is one number per example, in nats.

A *likelihood head* (``Likelihood`` subclass) is the one place that knows a data type: how many
decoder outputs it needs per data element, which values it accepts (support), how raw 8-bit data
become values in that support, how those values feed an encoder, and the constant that converts its
density to bits per dimension. Everything else asks the head; nothing branches on likelihood names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    Normal,
    constraints,
    kl_divergence,
    register_kl,
)

__all__ = [
    "DiscretizedLogistic",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "CategoricalLikelihood",
    "LogisticLikelihood",
    "LIKELIHOODS",
    "make_likelihood",
    "diag_gaussian",
    "standard_normal",
    "StandardNormal",
    "kl_per_dim",
    "SupportError",
]

MIN_SCALE = 1e-4


class SupportError(ValueError):
    """Data outside a likelihood's support (or not finite)."""


def diag_gaussian(loc: Tensor, scale: Tensor) -> Independent:
    """N(loc, diag(scale²)) with event shape ``loc.shape[-1:]``."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def standard_normal(latent_dim: int, *, device=None, dtype=torch.float32) -> Independent:
    """The prior p(z) = N(0, I), event shape ``(latent_dim,)``."""
    base = StandardNormal((latent_dim,), device=device, dtype=dtype)
    return Independent(base, 1, validate_args=False)


class StandardNormal(Normal):
    """N(0, 1) in each element of ``shape``. A class of its own so that KL(Normal ‖ N(0, 1)) is
    dispatched (``register_kl``) to its shorter closed form: 7 tensor operations instead of 10,
    forward and backward, on every training step."""

    def __init__(self, shape, *, device=None, dtype=torch.float32):
        zeros = torch.zeros(shape, device=device, dtype=dtype)
        super().__init__(zeros, torch.ones_like(zeros), validate_args=False)

    def expand(self, batch_shape, _instance=None) -> StandardNormal:
        return StandardNormal(torch.Size(batch_shape), device=self.loc.device, dtype=self.loc.dtype)


@register_kl(Normal, StandardNormal)
def _kl_normal_standard_normal(q: Normal, p: StandardNormal) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ²) − log σ − ½ per element, nats."""
    kl = 0.5 * (q.loc.pow(2) + q.scale.pow(2)) - q.scale.log() - 0.5
    qs, ps = q.batch_shape, p.batch_shape
    fits = len(ps) <= len(qs) and all(a in (1, b) for a, b in zip(ps[::-1], qs[::-1], strict=False))
    # (torch.broadcast_shapes is slow Python: called only when p's shape widens q's)
    return kl if fits else kl.expand(torch.broadcast_shapes(qs, ps))


def kl_per_dim(qz_x: Distribution, pz: Distribution, z: Tensor | None = None) -> Tensor:
    """KL(q(z|x) || p(z)) per latent dimension, nats, shape ``(B, D)``.

    Analytic when torch has the pair registered on the factorised base distributions; otherwise a
    Monte-Carlo estimate ``log q(z) - log p(z)`` from the samples ``z`` of shape ``(S, B, D)``
    (averaged over S, and spread evenly over dimensions when p(z) does not factorise).
    A posterior that knows its own decomposition (e.g. the hierarchical model's, per layer) provides
    ``qz_x.kl_per_dim(pz, z)`` and is asked instead.
    """
    own = getattr(qz_x, "kl_per_dim", None)
    if own is not None:
        return own(pz, z)
    base_q = getattr(qz_x, "base_dist", qz_x)
    base_p = getattr(pz, "base_dist", pz)
    try:
        return kl_divergence(base_q, base_p).expand(base_q.batch_shape)
    except NotImplementedError:
        pass
    if z is None:
        z = qz_x.rsample((1,))
    mc = (qz_x.log_prob(z) - pz.log_prob(z)).mean(0)  # (B,)
    d = z.shape[-1]
    return (mc / d).unsqueeze(-1).expand(*mc.shape, d)


# --------------------------------------------------------------------------------------------
# Discretized logistic (PixelCNN++ without the mixture) on integer levels 0..255.
# --------------------------------------------------------------------------------------------


class DiscretizedLogistic(Distribution):
    """Logistic(loc, scale) on [-1, 1] discretized into 256 bins, observed as integers 0..255.

    P(x=k) = σ((c_k + 1/255 - loc)/scale) - σ((c_k - 1/255 - loc)/scale) with c_k = 2k/255 - 1,
    and the edge bins k=0 and k=255 taking all the mass below / above.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.integer_interval(0, 255)
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor, validate_args: bool | None = None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        c = value / 127.5 - 1.0
        inv_s = 1.0 / self.scale
        centered = c - self.loc
        plus = inv_s * (centered + 1.0 / 255.0)
        minus = inv_s * (centered - 1.0 / 255.0)
        log_cdf_plus = plus - F.softplus(plus)  # log σ(plus), for k = 0
        log_one_minus_cdf_min = -F.softplus(minus)  # log(1 - σ(minus)), for k = 255
        cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        mid = inv_s * centered
        log_pdf_mid = mid - self.scale.log() - 2.0 * F.softplus(mid)
        # Interior bins: log of the CDF difference, or the density times the bin width when tiny.
        interior = torch.where(
            cdf_delta > 1e-5,
            torch.log(cdf_delta.clamp_min(1e-12)),
            log_pdf_mid - math.log(127.5),
        )
        return torch.where(
            value < 0.5, log_cdf_plus, torch.where(value > 254.5, log_one_minus_cdf_min, interior)
        )

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, device=self.loc.device).clamp(1e-5, 1 - 1e-5)
            y = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
            return torch.round((y.clamp(-1, 1) + 1) * 127.5)

    @property
    def mean(self) -> Tensor:
        """Approximate mean: the bin of the logistic's location (exact for small scales)."""
        return torch.round((self.loc.clamp(-1, 1) + 1) * 127.5)


# --------------------------------------------------------------------------------------------
# Likelihood heads
# --------------------------------------------------------------------------------------------


class Likelihood(nn.Module):
    """Maps decoder outputs of shape ``(*batch, n_params, *event_shape)`` to p(x|z).

    Subclasses set ``name``, ``n_params`` and implement ``dist`` and ``check``.
    ``prepare(raw)`` turns raw 8-bit data (uint8) into values in the support; ``encoder_input(x)``
    maps support values to floats of order one for a network; ``nats_offset_per_dim`` is added to
    −log p(x)/D before converting to bits/dim (``log 256`` for a density on dequantized 8-bit data).
    """

    name: str = ""
    n_params: int = 1
    nats_offset_per_dim: float = 0.0
    binary: bool = False  # needs binary data: 8-bit data are binarized by default

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__()
        self.event_shape = tuple(event_shape)

    def dist(self, params: Tensor) -> Distribution:
        raise NotImplementedError

    def forward(self, params: Tensor) -> Distribution:
        return self.dist(params)

    def check(self, x: Tensor) -> None:
        """Raise ``SupportError`` if ``x`` is not finite or outside the support."""
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise SupportError(f"{self.name} likelihood: data contain NaN or inf values")

    def prepare(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Raw uint8 (0..255) → float values in this likelihood's support."""
        return raw.float()

    def encoder_input(self, x: Tensor) -> Tensor:
        return x

    @property
    def network_shape(self) -> tuple[int, ...]:
        """Shape of the encoder's input row and of each decoder output map (the data's)."""
        return self.event_shape

    def _event_dims(self) -> int:
        return len(self.event_shape)

    def _param(self, params: Tensor, i: int) -> Tensor:
        """The i-th parameter map of ``params`` shaped ``(*batch, n_params, *event_shape)``."""
        dim = -self._event_dims() - 1
        if self.n_params == 1:  # a view both ways (select's backward writes a zero-filled copy)
            return params.squeeze(dim)
        return params.select(dim, i)


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

    def dist(self, params: Tensor) -> Distribution:
        base = _BinaryBernoulli(logits=self._param(params, 0), validate_args=False)
        return Independent(base, self._event_dims(), validate_args=False)

    def check(self, x: Tensor) -> None:
        super().check(x)
        if not ((x == 0) | (x == 1)).all():
            lo, hi = float(x.min()), float(x.max())
            raise SupportError(
                f"bernoulli likelihood needs binary data (0 or 1), got values in [{lo:g}, {hi:g}]; "
                "binarize the data (--binarize dynamic) or choose the gaussian, categorical or "
                "logistic likelihood for grey levels"
            )

    def prepare(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Already binary data pass through; grey levels must be binarized by the data pipeline."""
        return raw.float()


class GaussianLikelihood(Likelihood):
    """p(x|z) = Π_d N(x_d; loc_d, scale²) with a learned scale, shared or per dimension.

    8-bit data are dequantized to x = (k + u)/256, u ~ U(0,1), so that −log p(x) + D·log 256 is an
    upper bound on the discrete negative log-likelihood (``nats_offset_per_dim = log 256``).
    """

    name = "gaussian"

    def __init__(self, event_shape: tuple[int, ...], scale: str = "per_dim", init_scale=0.1):
        super().__init__(event_shape)
        shape = event_shape if scale == "per_dim" else ()
        if scale not in ("per_dim", "shared"):
            raise ValueError(f"gaussian scale must be 'per_dim' or 'shared', got {scale!r}")
        self.log_scale = nn.Parameter(torch.full(shape, math.log(init_scale)))
        self.nats_offset_per_dim = math.log(256.0)

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

    def dist(self, params: Tensor) -> Distribution:
        logits = params.movedim(-self._event_dims() - 1, -1)  # (*batch, *event, 256)
        return Independent(
            _FloatCategorical(logits=logits, validate_args=False),
            self._event_dims(),
            validate_args=False,
        )

    def check(self, x: Tensor) -> None:
        super().check(x)
        _check_levels(self.name, x)

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

    def dist(self, params: Tensor) -> Distribution:
        loc = self._param(params, 0)
        scale = F.softplus(self._param(params, 1)) + 1e-3
        return Independent(DiscretizedLogistic(loc, scale), self._event_dims(), validate_args=False)

    def check(self, x: Tensor) -> None:
        super().check(x)
        _check_levels(self.name, x)

    def encoder_input(self, x: Tensor) -> Tensor:
        return x / 255.0


def _check_levels(name: str, x: Tensor) -> None:
    if x.is_floating_point() and not (x == x.round()).all():
        raise SupportError(f"{name} likelihood needs integer levels 0..255, got fractional values")
    if (x < 0).any() or (x > 255).any():
        raise SupportError(
            f"{name} likelihood needs integer levels 0..255, got values in "
            f"[{float(x.min()):g}, {float(x.max()):g}]"
        )


LIKELIHOODS: dict[str, type[Likelihood]] = {
    cls.name: cls
    for cls in (BernoulliLikelihood, GaussianLikelihood, CategoricalLikelihood, LogisticLikelihood)
}


def make_likelihood(name: str, event_shape: tuple[int, ...], **options) -> Likelihood:
    """A likelihood head by name (``bernoulli``, ``gaussian``, ``categorical``, ``logistic``).

    Options a head does not take (e.g. ``scale`` for all but gaussian) are ignored.
    """
    from .networks import accepted_options

    try:
        cls = LIKELIHOODS[name]
    except KeyError:
        raise ValueError(
            f"unknown likelihood {name!r}; choose from {sorted(LIKELIHOODS)}"
        ) from None
    return cls(tuple(event_shape), **accepted_options(cls, options))
