"""The plain autoencoder, in the same harness as the VAEs (``kind: ae``).

Same networks, likelihood heads, trainer, run directories and pictures as a VAE; the code is
deterministic: ``encode(x)`` is a point mass δ(z − enc(x)) whose KL term is defined as 0, so the
ELBO objective reduces to the reconstruction loss −log p(x|ẑ) (binary cross-entropy for Bernoulli
data, a Gaussian negative log-likelihood for continuous data, ...). Nothing about it is a bound on
log p(x): evaluation reports the reconstruction term only (no IWAE / NLL).

Samples come from a Gaussian fitted to the training codes: N(mean, cov) tracked with an
exponential moving average over training batches (``GaussianFitPrior``; ``fit`` sets it exactly
from a set of codes). ``model.prior()`` is that Gaussian, so sampling, interpolation and latent
pictures work exactly as for a VAE.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal, constraints

from ..config import DataInfo, ModelConfig
from ..networks import make_networks
from .vae import VAE, likelihood_of, network_options

__all__ = ["PointMass", "GaussianFitPrior", "Autoencoder", "build_autoencoder"]


class PointMass(Distribution):
    """δ(z − loc): batch ``loc.shape[:-1]``, event ``(D,)``. ``rsample`` returns ``loc`` (with its
    gradient) for every sample; its KL to any prior is reported as 0 (the autoencoder's loss)."""

    arg_constraints = {"loc": constraints.real_vector}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        return self.loc.expand(torch.Size(sample_shape) + self.loc.shape)

    @property
    def mean(self) -> Tensor:
        return self.loc

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            "an autoencoder's code is a point mass with no density: importance-weighted bounds "
            "and NLL are undefined for kind 'ae' (compare reconstructions and samples instead)"
        )

    def kl_per_dim(self, pz=None, z: Tensor | None = None) -> Tensor:
        """0 per dimension ``(B, D)``: the autoencoder trains on reconstruction alone."""
        return torch.zeros_like(self.loc)


class GaussianFitPrior(nn.Module):
    """N(mean, cov) of the training codes, an exponential moving average over batches."""

    def __init__(self, dim: int, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("cov", torch.eye(dim))

    @torch.no_grad()
    def update(self, codes: Tensor) -> None:
        """One moving-average step towards the mean and covariance of ``codes`` ``(B, D)``; a
        batch with a non-finite code leaves both as they were (no device sync: a select)."""
        if len(codes) < 2:
            return
        mean = self.mean.lerp(codes.mean(0), self.momentum)
        cov = self.cov.lerp(torch.cov(codes.T).reshape_as(self.cov), self.momentum)
        ok = torch.isfinite(mean).all() & torch.isfinite(cov).all()
        self.mean.copy_(torch.where(ok, mean, self.mean))
        self.cov.copy_(torch.where(ok, cov, self.cov))

    @torch.no_grad()
    def fit(self, codes: Tensor) -> None:
        """Set the Gaussian to the exact mean and covariance of ``codes`` ``(N, D)``."""
        self.mean.copy_(codes.mean(0))
        self.cov.copy_(torch.cov(codes.T).reshape_as(self.cov))

    def _scale_tril(self) -> Tensor:
        d = len(self.mean)
        return torch.linalg.cholesky(self.cov + 1e-5 * torch.eye(d, device=self.cov.device))

    def forward(self, model) -> Distribution:
        return MultivariateNormal(self.mean, scale_tril=self._scale_tril(), validate_args=False)

    def sample(self, model, n: int, temperature: float = 1.0, generator=None) -> Tensor:
        """``(n, D)`` draws mean + temperature·L·ε with L Lᵀ = cov."""
        eps = torch.randn(n, len(self.mean), generator=generator).to(self.mean.device)
        return self.mean + temperature * eps @ self._scale_tril().T


class Autoencoder(VAE):
    """Deterministic encoder ẑ = enc(x), decoder p(x|ẑ); the prior is the codes' Gaussian fit."""

    def __init__(self, encoder, decoder, likelihood, latent_dim: int, config=None):
        super().__init__(
            encoder, decoder, likelihood, latent_dim, config, prior=GaussianFitPrior(latent_dim)
        )

    has_bound = False  # evaluation reports the reconstruction term only

    def top_posterior(self, inputs: Tensor, y: Tensor | None = None) -> PointMass:
        """δ(z − enc(x)) from encoder inputs; training mode moves the Gaussian fit to the codes."""
        loc = self.encoder(inputs)
        if self.training:
            self.prior_net.update(loc.detach())
        return PointMass(loc)


def build_autoencoder(cfg: ModelConfig, info: DataInfo) -> Autoencoder:
    """``kind: ae``: the networks of ``arch`` with a ``latent_dim`` code and a likelihood head."""
    if cfg.prior != "normal":
        raise ValueError("an autoencoder's prior is its Gaussian fit; set prior: normal")
    likelihood = likelihood_of(cfg, info)
    encoder, decoder = make_networks(
        cfg.arch,
        likelihood.network_shape,  # the data's shape, or e.g. a table's one-hot width
        cfg.latent_dim,
        likelihood.n_params,
        enc_out=cfg.latent_dim,
        **network_options(cfg),
    )
    return Autoencoder(encoder, decoder, likelihood, cfg.latent_dim, config=cfg)
