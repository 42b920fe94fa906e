"""Distributions on ``torch.distributions`` that the rest of vaekit builds on.

Conventions: a posterior ``qz_x`` and the prior ``pz`` are ``Independent(Normal)`` with event shape
``(D,)``; a likelihood ``px_z`` is a distribution whose event shape is the data's event shape (for
images ``(C, H, W)``), so ``px_z.log_prob(x)`` is one number per example, in nats. The likelihood
heads that build ``px_z`` from decoder outputs live in ``vaekit.likelihoods``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    constraints,
    kl_divergence,
    register_kl,
)

__all__ = [
    "DiscretizedLogistic",
    "diag_gaussian",
    "posterior_scale",
    "SCALE_HEADS",
    "standard_normal",
    "StandardNormal",
    "kl_per_dim",
    "kl_terms",
    "KLTerms",
    "marginal_log_prob",
    "marginal_kl_per_dim",
    "SupportError",
]

MIN_SCALE = 1e-4
SCALE_HEADS = ("softplus", "exp")  # encoder output → posterior scale (``posterior_scale``)


class SupportError(ValueError):
    """Data outside a likelihood's support (or not finite)."""


def diag_gaussian(loc: Tensor, scale: Tensor) -> Independent:
    """N(loc, diag(scale²)) with event shape ``loc.shape[-1:]``."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def posterior_scale(raw: Tensor, head: str = "softplus") -> Tensor:
    """The scale σ of q(z|x) from the encoder's raw output h: ``softplus``: σ = softplus(h) +
    1e-4 (vaekit's default); ``exp``: σ = exp(½h), h = log σ² (Kingma & Welling; Pythae)."""
    if head == "softplus":
        return F.softplus(raw) + MIN_SCALE
    if head == "exp":
        return torch.exp(0.5 * raw)
    raise ValueError(f"scale head must be one of {SCALE_HEADS}, got {head!r}")


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


def _prime_kl_dispatch() -> None:
    """Resolve torch's KL dispatch for the pairs vaekit's Gaussian models use, once, at import:
    ``kl_divergence`` memoizes the match, and the first (unmemoized) match calls ``min`` over a
    generator, which ``torch.compile`` cannot trace (a graph break in every compiled step)."""
    one = torch.zeros(1)
    for p in (StandardNormal((1,)), Normal(one, one + 1)):
        kl_divergence(Normal(one, one + 1), p)


_prime_kl_dispatch()


class KLTerms(NamedTuple):
    """KL(q(z|x) ‖ p(z)) of a batch, nats: ``total`` ``(B,)`` (what a bound subtracts) and
    ``per_dim`` ``(B, D)``. ``additive``: ``per_dim`` sums to ``total`` over dimensions (closed-form
    and layered KLs); False for a prior that does not factorise over dimensions (a mixture such as
    the VampPrior), whose ``per_dim`` are the marginal KLs (``marginal_kl_per_dim``).
    ``per_group`` ``(B, G)``: the KL of each latent layer (bottom → top) where the posterior
    knows it, else None."""

    total: Tensor
    per_dim: Tensor
    additive: bool = True
    per_group: Tensor | None = None


def kl_terms(qz_x: Distribution, pz: Distribution, z: Tensor | None = None) -> KLTerms:
    """KL(q(z|x) ‖ p(z)): the total ``(B,)`` and a per-dimension decomposition ``(B, D)``, nats.

    - A posterior that knows its own decomposition (the hierarchical and deep models' layers,
      the autoencoder's 0) is asked: ``qz_x.kl_terms(pz, z)`` or ``qz_x.kl_per_dim(pz, z)``.
    - Closed form when torch registers the pair on the factorised base distributions:
      KL = Σ_d KL_d exactly.
    - Otherwise (e.g. the VampPrior, p(z) = (1/K) Σ_k N(z; μ_k, diag σ_k²)) the total is the
      Monte-Carlo estimate mean_S [log q(z|x) − log p(z)] on the draws ``z`` ``(S, B, D)`` (one
      fresh draw when None), and ``per_dim`` are the marginal KLs
      KL_d = E_q[log q_d(z_d) − log p_d(z_d)] with p_d the prior's 1-D marginal (a 1-D mixture)
      on the same draws (``marginal_kl_per_dim``). Those do *not* sum to the total in general
      (``additive=False``): dependence between dimensions under p(z) is in the total only.
    """
    own = getattr(qz_x, "kl_terms", None)
    if own is not None:
        return own(pz, z)
    own = getattr(qz_x, "kl_per_dim", None)
    if own is not None:
        per_dim = own(pz, z)
        return KLTerms(per_dim.sum(-1), per_dim)
    base_q = getattr(qz_x, "base_dist", qz_x)
    base_p = getattr(pz, "base_dist", pz)
    try:
        per_dim = kl_divergence(base_q, base_p).expand(base_q.batch_shape)
        return KLTerms(per_dim.sum(-1), per_dim)
    except NotImplementedError:
        pass
    if z is None:
        z = qz_x.rsample((1,))
    total = (qz_x.log_prob(z) - pz.log_prob(z)).mean(0)  # (B,)
    return KLTerms(total, marginal_kl_per_dim(qz_x, pz, z), additive=False)


def kl_per_dim(qz_x: Distribution, pz: Distribution, z: Tensor | None = None) -> Tensor:
    """The per-dimension KL of ``kl_terms`` ``(B, D)``, nats: exact terms of the total KL for a
    factorised or layered prior, the marginal KLs for a mixture prior (see ``kl_terms``)."""
    return kl_terms(qz_x, pz, z).per_dim


def marginal_log_prob(pz: Distribution, z: Tensor) -> Tensor:
    """log p_d(z_d), the log density of each coordinate under the prior's 1-D marginal,
    ``z.shape`` nats. A mixture of diagonal Gaussians (the VampPrior) has the 1-D mixture
    marginals log p_d(z_d) = logsumexp_k [log π_k + log N(z_d; μ_kd, σ_kd²)] (``ValueError`` for
    other priors)."""
    if isinstance(pz, MixtureSameFamily):
        comps = pz.component_distribution
        normal = getattr(comps, "base_dist", None)
        if isinstance(comps, Independent) and isinstance(normal, Normal):
            log_pi = pz.mixture_distribution.logits.log_softmax(-1)  # (K,)
            lp = Normal(normal.loc, normal.scale, validate_args=False).log_prob(z.unsqueeze(-2))
            return torch.logsumexp(lp + log_pi.unsqueeze(-1), -2)  # (..., K, D) → (..., D)
    raise ValueError(
        f"no per-dimension KL for the prior {type(pz).__name__}: it has no closed-form KL and "
        "no known 1-D marginals"
    )


@torch.no_grad()
def marginal_kl_per_dim(qz_x: Distribution, pz: Distribution, z: Tensor) -> Tensor:
    """KL_d = mean_S [log q_d(z_d) − log p_d(z_d)] ``(B, D)`` nats on the draws ``z``
    ``(S, B, D)`` from the diagonal Gaussian q(z|x): the Monte-Carlo KL of each coordinate's
    posterior marginal to the prior's (``marginal_log_prob``). Each is ≥ 0 in expectation, is 0
    for a dimension whose posterior is the prior's marginal (an inactive unit) and measures how
    much that coordinate alone tells about x. Reporting only: computed without gradient."""
    base_q = getattr(qz_x, "base_dist", None)
    if not isinstance(base_q, Normal):
        raise ValueError(
            f"a per-dimension KL to a mixture prior needs a diagonal Gaussian posterior, got "
            f"{type(qz_x).__name__}"
        )
    return (base_q.log_prob(z) - marginal_log_prob(pz, z)).mean(0)


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
