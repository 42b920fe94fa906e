"""Normalizing-flow posteriors: q(z|x) = a diagonal Gaussian q0(z0|x) pushed through K
invertible maps, z = f_K ∘ … ∘ f_1(z0) (``model.posterior: iaf | planar``, ``model.flow_steps``).

    log q(z|x) = log q0(z0|x) − Σ_k log |det ∂f_k/∂z_{k−1}|

Two flows, both amortized by the encoder (its output is loc, raw scale and the flow's inputs):

- **IAF** (Kingma et al., 2016): each step is a MADE m, s = MADE(z, h) over z (autoregressive:
  output i reads z_<i only) with the encoder's context vector h; σ = sigmoid(s) and
  z' = σ ⊙ z + (1 − σ) ⊙ m, so ∂z'/∂z is triangular and log |det| = Σ_i log σ_i. The order
  of z is reversed between steps. The gate's bias starts at +2 (σ ≈ 0.88: close to identity).
- **Planar** (Rezende & Mohamed, 2015): f(z) = z + û · tanh(wᵀz + b), with (u, w, b) per example
  from the encoder and û = u + (m(wᵀu) − wᵀu) w / ‖w‖², m(a) = −1 + softplus(a), which makes
  wᵀû ≥ −1 (invertible); log |det| = log |1 + ûᵀ ψ(z)|, ψ(z) = (1 − tanh²(wᵀz + b)) w.

A flow's density at an arbitrary z needs f⁻¹, which neither flow has in closed form (IAF's
inverse is sequential, planar's has none), so ``FlowPosterior`` caches the log-density of its
last ``rsample`` and scores exactly that tensor: the ELBO, the IWAE weights and the contract's
checks all score the draws they made. ``mean`` is f(E[z0]) (the flow of the base mean, a point
estimate used as the embedding; not E[z], which has no closed form). ``kl_per_dim`` is the
Monte-Carlo KL log q(z|x) − log p(z) on those draws, spread evenly over the dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ..config import DataInfo, ModelConfig
from ..distributions import diag_gaussian, posterior_scale
from ..networks import make_networks
from ..priors import make_prior
from .vae import VAE, condition_size, likelihood_of, network_options

__all__ = [
    "POSTERIORS",
    "MaskedLinear",
    "MADE",
    "IAFStep",
    "IAF",
    "PlanarFlow",
    "FlowPosterior",
    "FlowVAE",
    "build_flow_vae",
]

POSTERIORS = ("gaussian", "iaf", "planar")  # model.posterior


class MaskedLinear(nn.Linear):
    """y = x (W ⊙ M)ᵀ + b with a fixed binary mask M ``(out, in)``."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder (Germain et al., 2015) z (…, D), context h (…, H) → (m, s), each
    (…, D), where outputs i depend on z_<i (and on h) only. Input degrees 1..D, hidden degrees
    cycle through 1..max(D − 1, 1); hidden unit k sees input j iff deg_j ≤ deg_k, output i sees
    hidden k iff deg_k < i."""

    def __init__(self, dim: int, context: int, hidden: int):
        super().__init__()
        self.dim = dim
        d_in = torch.arange(1, dim + 1)
        d_h = torch.arange(hidden) % max(dim - 1, 1) + 1
        self.inp = MaskedLinear(dim, hidden, d_h[:, None] >= d_in[None, :])
        self.ctx = nn.Linear(context, hidden, bias=False) if context else None
        self.mid = MaskedLinear(hidden, hidden, d_h[:, None] >= d_h[None, :])
        out_mask = (d_in[:, None] > d_h[None, :]).repeat(2, 1)  # (2D, hidden): m, then s
        self.out = MaskedLinear(hidden, 2 * dim, out_mask)

    def forward(self, z: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a = self.inp(z)
        if self.ctx is not None and h is not None:
            a = a + self.ctx(h)
        a = self.mid(F.elu(a))
        m, s = self.out(F.elu(a)).chunk(2, -1)
        return m, s


class IAFStep(nn.Module):
    """z' = σ ⊙ z + (1 − σ) ⊙ m, [m, s] = MADE(z, h), σ = sigmoid(s + 2); log |det| = Σ log σ."""

    def __init__(self, dim: int, context: int, hidden: int):
        super().__init__()
        self.made = MADE(dim, context, hidden)

    def forward(self, z: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        m, s = self.made(z, h)
        log_sigma = F.logsigmoid(s + 2.0)
        sigma = log_sigma.exp()
        return sigma * z + (1 - sigma) * m, log_sigma.sum(-1)


class IAF(nn.Module):
    """K ``IAFStep``s with the order of z reversed between steps; ``forward(z0, h)`` →
    (z, Σ log |det|) with z0 ``(*S, B, D)`` and h ``(B, H)`` (broadcast over S)."""

    def __init__(self, dim: int, steps: int, context: int, hidden: int):
        super().__init__()
        self.steps = nn.ModuleList([IAFStep(dim, context, hidden) for _ in range(steps)])
        self.context = context

    def n_params(self, dim: int) -> int:
        """Encoder outputs the flow reads per example: the context h."""
        return self.context

    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        h = params.expand(*z.shape[:-1], params.shape[-1])
        logdet = z.new_zeros(z.shape[:-1])
        for i, step in enumerate(self.steps):
            if i:
                z = z.flip(-1)
            z, ld = step(z, h)
            logdet = logdet + ld
        if len(self.steps) % 2 == 0 and len(self.steps):  # back to the original order
            z = z.flip(-1)
        return z, logdet


class PlanarFlow(nn.Module):
    """K planar maps f(z) = z + û tanh(wᵀz + b) with per-example (u, w, b) from the encoder
    (``params`` (B, K·(2D + 1))); see the module doc for û and the log-determinant."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.dim, self.n_steps = dim, steps

    def n_params(self, dim: int) -> int:
        return self.n_steps * (2 * dim + 1)

    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        d = self.dim
        logdet = z.new_zeros(z.shape[:-1])
        for p in params.split(2 * d + 1, -1):  # (B, 2D + 1) per step
            u, w, b = p[..., :d], p[..., d : 2 * d], p[..., 2 * d :]
            wu = (w * u).sum(-1, keepdim=True)
            u_hat = u + (F.softplus(wu) - 1.0 - wu) * w / (w.pow(2).sum(-1, keepdim=True) + 1e-8)
            a = torch.tanh((z * w).sum(-1, keepdim=True) + b)  # (*S, B, 1)
            psi = (1 - a.pow(2)) * w
            logdet = logdet + torch.log((1 + (psi * u_hat).sum(-1)).abs() + 1e-8)
            z = z + u_hat * a
        return z, logdet


class FlowPosterior(Distribution):
    """q(z|x) = the flow of q0(z0|x) = N(loc, diag scale²): batch ``(B,)``, event ``(D,)``.

    ``rsample`` returns z = f(z0) and caches log q(z|x) = log q0(z0|x) − log |det|, ``(*S, B)``;
    ``log_prob`` scores that cached tensor only (any other z needs f⁻¹: ``ValueError``)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base, flow: nn.Module, params: Tensor):
        self.base, self.flow, self.params = base, flow, params
        self._last: tuple[Tensor, Tensor] | None = None
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def transform(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """(f(z0), log |det ∂f/∂z0|) for z0 ``(*S, B, D)``."""
        return self.flow(z0, self.params)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        z0 = self.base.rsample(sample_shape)
        z, logdet = self.transform(z0)
        self._last = (z, self.base.log_prob(z0) - logdet)
        return z

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Draws without gradient, not cached: their log q needs the inverse flow."""
        with torch.no_grad():
            return self.transform(self.base.sample(sample_shape))[0]

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x), nats, ``z.shape[:-1]``: for the tensor of the last ``rsample`` only."""
        if self._last is not None and self._last[0] is z:
            return self._last[1]
        raise ValueError(
            "a flow posterior scores only its own last rsample (log q of another z needs the "
            "inverse flow); use the reparam estimator and score the draws rsample returned"
        )

    def kl_per_dim(self, pz=None, z: Tensor | None = None) -> Tensor:
        """Monte-Carlo KL log q(z|x) − log p(z) on the draws ``z`` (S, B, D) of ``rsample``
        (a fresh one when None), averaged over S and spread evenly over D; ``(B, D)`` nats."""
        if z is None:
            z = self.rsample((1,))
        mc = (self.log_prob(z) - pz.log_prob(z)).mean(0)  # (B,)
        d = z.shape[-1]
        return (mc / d).unsqueeze(-1).expand(*mc.shape, d)

    @property
    def mean(self) -> Tensor:
        """f(E[z0]): the flow of the base mean (the embedding; not E[z])."""
        return self.transform(self.base.mean)[0]


class FlowVAE(VAE):
    """A VAE (or conditional VAE) whose posterior is a ``FlowPosterior``; the encoder's output
    is ``[loc (D), raw scale (D), flow inputs (n_params)]``."""

    def __init__(self, encoder, decoder, likelihood, latent_dim, flow, config=None, **kw):
        super().__init__(encoder, decoder, likelihood, latent_dim, config, **kw)
        self.flow = flow

    def top_posterior(self, inputs: Tensor, y: Tensor | None = None) -> FlowPosterior:
        if self.cond_dim:
            h = self.encoder(inputs, self._condition(y, len(inputs)))
        else:
            h = self.encoder(inputs)
        d = self.latent_dim
        loc, raw_scale, params = h[:, :d], h[:, d : 2 * d], h[:, 2 * d :]
        base = diag_gaussian(loc, posterior_scale(raw_scale, self.scale_head))
        return FlowPosterior(base, self.flow, params)


def build_flow_vae(cfg: ModelConfig, info: DataInfo) -> FlowVAE:
    """``model.posterior: iaf | planar`` for kinds vae / cvae: ``flow_steps`` steps; IAF's MADE
    has ``flow_hidden`` units (0: max(4D, 64)) and a context of 2D encoder outputs."""
    if cfg.posterior not in POSTERIORS[1:]:
        raise ValueError(f"model.posterior must be one of {POSTERIORS}, got {cfg.posterior!r}")
    if cfg.prior != "normal":
        raise ValueError("flow posteriors work with the standard normal prior (a VampPrior's "
                         "components would need a flow's density at arbitrary z)")  # fmt: skip
    if cfg.flow_steps < 1:
        raise ValueError(f"model.flow_steps must be at least 1, got {cfg.flow_steps}")
    d = cfg.latent_dim
    if cfg.posterior == "iaf":
        hidden = cfg.flow_hidden or max(4 * d, 64)
        flow: nn.Module = IAF(d, cfg.flow_steps, 2 * d, hidden)
    else:
        flow = PlanarFlow(d, cfg.flow_steps)
    likelihood = likelihood_of(cfg, info)
    cond_dim = condition_size(cfg, info)
    encoder, decoder = make_networks(
        cfg.arch,
        likelihood.network_shape,
        d,
        likelihood.n_params,
        enc_out=2 * d + flow.n_params(d),
        cond_dim=cond_dim,
        **network_options(cfg),
    )
    if cfg.posterior == "planar":  # start near the identity: small u, w
        last = [m for m in encoder.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight[2 * d :].mul_(0.1)
            last.bias[2 * d :].zero_()
    prior = make_prior(cfg.prior, likelihood.network_shape, cfg.prior_components)
    return FlowVAE(
        encoder, decoder, likelihood, d, flow, config=cfg, prior=prior, cond_dim=cond_dim
    )
