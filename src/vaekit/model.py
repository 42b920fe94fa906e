"""The VAE: p(x, z) = p(x|z) p(z) with an amortized Gaussian posterior q(z|x).

``VAE`` composes an encoder network, a decoder network, a likelihood head and a prior; it has no
training logic (see ``objectives`` and ``train``). Stages: ``encode`` (inference) → ``decode``
(generative); objectives combine them into a bound.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from .config import ModelConfig
from .distributions import (
    MIN_SCALE,
    Likelihood,
    diag_gaussian,
    make_likelihood,
    standard_normal,
)
from .networks import make_networks

__all__ = ["VAE", "build_model"]


class VAE(nn.Module):
    """Encoder → q(z|x) = N(loc, diag scale²); decoder → p(x|z) via a likelihood head; p(z)=N(0,I).

    Shapes: ``x`` is ``(B, *event_shape)``; ``z`` is ``(*S, B, D)`` with sample dims first.
    All log-probabilities are in nats.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent_dim: int,
        config: ModelConfig | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.event_shape = tuple(likelihood.event_shape)
        self.config = config

    # ---- inference -----------------------------------------------------------------------
    def encode(self, x: Tensor, *, check: bool = True) -> Independent:
        """q(z|x): batch shape ``(B,)``, event shape ``(D,)``; ``.mean`` is the embedding."""
        if check:
            self.check(x)
        h = self.encoder(self.likelihood.encoder_input(x))
        loc, raw_scale = h.chunk(2, dim=-1)
        return diag_gaussian(loc, F.softplus(raw_scale) + MIN_SCALE)

    # ---- generative ----------------------------------------------------------------------
    def prior(self) -> Independent:
        """p(z) = N(0, I), event shape ``(D,)``."""
        p = next(self.parameters())
        return standard_normal(self.latent_dim, device=p.device, dtype=p.dtype)

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z) for ``z`` of shape ``(*S, B, D)``: batch shape ``(*S, B)``."""
        lead = z.shape[:-1]
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood(params.view(*lead, *params.shape[1:]))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        mean: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` draws x ~ p(x|z), z ~ N(0, temperature² I); ``mean=True`` returns E[x|z]."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, device=p.device) * temperature
        px_z = self.decode(z)
        return px_z.mean if mean else px_z.sample()

    # ---- convenience bounds (per example, nats) --------------------------------------------
    def elbo(self, x: Tensor, n_samples: int = 1) -> Tensor:
        """ELBO per example, ``(B,)`` nats (a lower bound on log p(x))."""
        from .objectives import elbo

        with torch.no_grad():
            return elbo(self, self._checked(x), n_samples=n_samples).bound

    def log_likelihood(self, x: Tensor, k: int = 1000, *, chunk: int = 100) -> Tensor:
        """IWAE estimate of log p(x) with ``k`` importance samples, ``(B,)`` nats."""
        from .evaluation import iwae_log_likelihood

        return iwae_log_likelihood(self, self._checked(x), k=k, chunk=chunk)

    # ---- validation ------------------------------------------------------------------------
    def check(self, x: Tensor) -> None:
        """Raise a clear ``ValueError`` for a wrong shape, non-finite or out-of-support ``x``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"expected data of shape (batch, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )
        self.likelihood.check(x)

    def _checked(self, x: Tensor) -> Tensor:
        self.check(x)
        return x if x.is_floating_point() else x.float()

    @property
    def n_dims(self) -> int:
        return math.prod(self.event_shape)


def build_model(cfg: ModelConfig) -> VAE:
    """A fresh VAE from a resolved model config (``event_shape`` must be set)."""
    if cfg.event_shape is None:
        raise ValueError("model config has no event_shape; it is filled from the data")
    event_shape = tuple(cfg.event_shape)
    likelihood = make_likelihood(cfg.likelihood, event_shape, scale=cfg.gaussian_scale)
    encoder, decoder = make_networks(
        cfg.arch,
        event_shape,
        cfg.latent_dim,
        likelihood.n_params,
        hidden=tuple(cfg.hidden),
        channels=tuple(cfg.channels),
        activation=cfg.activation,
    )
    return VAE(encoder, decoder, likelihood, cfg.latent_dim, config=cfg)
