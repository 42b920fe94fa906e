"""The VAE: p(x, z) = p(x|z) p(z) with an amortized Gaussian posterior q(z|x).

``VAE`` composes an encoder network, a decoder network, a likelihood head and a prior; it has no
training logic (see ``objectives`` and ``train``). Stages: ``encode`` (inference) → ``decode``
(generative); objectives combine them into a bound. A conditional model takes its condition
explicitly, ``encode(x, y)`` / ``decode(z, y)``; ``with model.given(y):`` sets a default ``y`` for
calls that pass none (sugar for interactive use).

This module imports no other model family: the families (``autoencoder``, ``hierarchical``,
``sequence``) build on it, and ``models/__init__`` registers them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from ..config import DataInfo, ModelConfig
from ..distributions import diag_gaussian, posterior_scale
from ..likelihoods import Likelihood, make_likelihood
from ..networks import make_networks
from ..priors import StandardNormalPrior, make_prior

__all__ = ["VAE", "build_vae", "likelihood_of", "network_options", "condition_size"]


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
        *,
        prior: nn.Module | None = None,
        cond_dim: int = 0,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.event_shape = tuple(likelihood.event_shape)
        self.config = config
        self.prior_net = prior if prior is not None else StandardNormalPrior()
        self.cond_dim = cond_dim  # > 0: a conditional model, see ``given``
        self._y: Tensor | None = None

    has_bound = True  # log p(x) has a lower bound (not so for a plain autoencoder)
    latent_groups: list[int] | None = None  # sizes of latent layers as they sit in z (hvae)

    @property
    def scale_head(self) -> str:
        """How the encoder's raw output becomes q(z|x)'s scale (``model.scale_head``)."""
        return getattr(self.config, "scale_head", "softplus") if self.config else "softplus"

    @property
    def top_dim(self) -> int:
        """Size of the latent layer the prior module draws (all of z for a one-layer model)."""
        return self.latent_dim

    # ---- conditioning (conditional models) -------------------------------------------------
    @contextmanager
    def given(self, y: Tensor | None):
        """Condition ``encode``/``decode``/``sample`` on ``y`` inside the ``with`` block.

        ``y``: class labels ``(B,)`` (int, one-hot encoded over ``cond_dim`` classes) or vectors
        ``(B, cond_dim)`` (float); a batch of 1 broadcasts. No effect on an unconditional model
        or for ``y=None``.
        """
        if y is None or not self.cond_dim:
            yield self
            return
        previous, self._y = self._y, self._as_condition(y)
        try:
            yield self
        finally:
            self._y = previous

    def _as_condition(self, y: Tensor) -> Tensor:
        y = torch.as_tensor(y)
        if not y.is_floating_point():
            if y.dim() != 1 or (y < 0).any() or (y >= self.cond_dim).any():
                raise ValueError(
                    f"labels must be a (batch,) tensor of classes 0..{self.cond_dim - 1}, "
                    f"got {tuple(y.shape)} with values {y.unique().tolist()[:10]}"
                )
            return F.one_hot(y, self.cond_dim).float()
        if y.dim() != 2 or y.shape[1] != self.cond_dim:
            raise ValueError(f"condition vectors must be (batch, {self.cond_dim}), got {y.shape}")
        return y.float()

    def _condition(self, y: Tensor | None, batch: int) -> Tensor:
        """The condition ``y`` (else the ``given`` default) as ``(batch, cond_dim)``."""
        c = self._y if y is None else self._as_condition(y)
        if c is None:
            raise ValueError(
                "this conditional model needs y: pass y (labels) or use "
                "`with model.given(labels): ...` (CLI: --label)"
            )
        if len(c) not in (1, batch):
            raise ValueError(f"condition has {len(c)} rows for a batch of {batch}")
        return c.expand(batch, -1)

    # ---- inference -----------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None, *, check: bool = True) -> Independent:
        """q(z|x[, y]): batch shape ``(B,)``, event shape ``(D,)``; ``.mean`` is the embedding."""
        if check:
            self.check(x)
        return self.top_posterior(self.likelihood.encoder_input(x), y)

    def top_posterior(self, inputs: Tensor, y: Tensor | None = None) -> Independent:
        """q(z|x) from encoder inputs (``likelihood.encoder_input(x)``, or pseudo-inputs)."""
        if self.cond_dim:
            h = self.encoder(inputs, self._condition(y, len(inputs)))
        else:
            h = self.encoder(inputs)
        if h.dtype in (torch.float16, torch.bfloat16):  # autocast: the posterior in float32
            h = h.float()
        loc, raw_scale = h.chunk(2, dim=-1)
        return diag_gaussian(loc, posterior_scale(raw_scale, self.scale_head))

    # ---- generative ----------------------------------------------------------------------
    def prior(self) -> Distribution:
        """p(z), event shape ``(D,)``: N(0, I) unless the model was built with another prior."""
        return self.prior_net(self)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x|z[, y]) for ``z`` of shape ``(*S, B, D)``: batch shape ``(*S, B)``."""
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        if self.cond_dim:
            c = self._condition(y, lead[-1] if lead else 1)
            params = self.decoder(flat, c.expand(*lead, -1).reshape(len(flat), -1))
        else:
            params = self.decoder(flat)
        params = params.to(z.dtype)  # a no-op, except for a bfloat16 (autocast) decoder's output
        return self.likelihood(params.view(*lead, *params.shape[1:]))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        *,
        temperature: float = 1.0,
        mean: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` draws x ~ p(x|z[, y]), z ~ p(z) (N(0, temperature² I) for the standard prior);
        ``mean=True`` returns E[x|z]. A conditional model without ``y`` (nor a ``given``
        default) cycles through the classes 0, 1, …, cond_dim − 1."""
        if self.cond_dim and y is None and self._y is None:
            y = torch.arange(n) % self.cond_dim
        z = self.prior_net.sample(self, n, temperature, generator)
        px_z = self.decode(z, y)
        return px_z.mean if mean else px_z.sample()

    # ---- latent groups (hierarchical kinds override) ------------------------------------------
    @torch.no_grad()
    def prior_codes(
        self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` codes z ~ p(z) with the prior's scales × ``temperature``, ``(n, D)``."""
        return self.prior_net.sample(self, n, temperature, generator)

    @property
    def n_groups(self) -> int:
        """Number of latent groups (layers): ``len(latent_groups)``, 1 for a one-layer model."""
        return len(self.latent_groups or [self.latent_dim])

    @property
    def n_top_groups(self) -> int:
        """Groups at the top of the hierarchy (what the latent tools' ``groups="top"`` edits)."""
        return 1

    @torch.no_grad()
    def decode_top(
        self,
        z: Tensor,
        n_top: int,
        x: Tensor | None = None,
        y: Tensor | None = None,
        *,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Distribution]:
        """Keep the top ``n_top`` latent groups of ``z`` ``(*S, B, D)``, fill the groups below
        (posterior means given images ``x``, else prior draws at ``temperature``) and decode;
        returns (completed z, p(x|z)). A one-layer model has nothing below: (z, decode(z))."""
        if n_top != 1:
            raise ValueError(f"this model has one latent group; n_top must be 1, got {n_top}")
        return z, self.decode(z, y)

    @property
    def kl_balance_alpha(self) -> Tensor:
        """Each latent group's share α_g of the KL under KL balancing (``objectives.kl_balanced``):
        proportional to its size, normalized to min 1 (one group: [1])."""
        a = torch.tensor(self.latent_groups or [self.latent_dim], dtype=torch.float32)
        return a / a.min()

    # ---- training hooks --------------------------------------------------------------------
    def after_step(self) -> None:
        """Called by the training loop after each optimizer step (e.g. a moving average of the
        weights); nothing for a plain VAE."""

    def running_buffers(self) -> list[Tensor]:
        """The buffers a training-mode forward pass may change in place (running statistics: an
        autoencoder's code fit, a VQ-VAE's codebook); the training loop restores them when it
        skips a non-finite step, so one bad batch cannot poison them."""
        return list(self.buffers())

    def evaluation_extras(self, x: Tensor, batch_size: int = 100) -> dict:
        """What ``evaluation.evaluate`` adds for this kind beside its bound terms (VQ-VAE: PSNR
        and its code prior's bits); nothing for a VAE."""
        return {}

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

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live (inputs are moved there by the tools)."""
        return next(self.parameters()).device

    @property
    def n_dims(self) -> int:
        return math.prod(self.event_shape)


def likelihood_of(cfg: ModelConfig, info: DataInfo) -> Likelihood:
    """The likelihood head of a model config for its data: every model kind builds it here, with
    what the data told (``levels`` for the Gaussian's bits/dim, ``columns`` for tables, ``vocab``
    for tokens)."""
    if not info.event_shape:
        raise ValueError("data_info has no event_shape; it is filled from the data")
    return make_likelihood(
        cfg.likelihood,
        tuple(info.event_shape),
        scale=cfg.gaussian_scale,
        components=cfg.mixture_components,
        levels=info.levels,
        columns=info.columns,
        vocab=info.vocab,
    )


def network_options(cfg: ModelConfig) -> dict:
    """The network options of a model config (each network takes the ones it accepts)."""
    return {
        "hidden": tuple(cfg.hidden),
        "channels": tuple(cfg.channels),
        "activation": cfg.activation,
        "blocks": cfg.blocks,
        "squeeze_excitation": cfg.squeeze_excitation,
        "init": cfg.init,
    }


def condition_size(cfg: ModelConfig, info: DataInfo) -> int:
    """Number of classes a ``cvae`` is conditioned on (0 for other kinds)."""
    if cfg.kind != "cvae":
        return 0
    if not info.n_classes or info.n_classes < 2:
        raise ValueError("a cvae needs labelled data with at least 2 classes (data_info.n_classes)")
    return int(info.n_classes)


def build_vae(cfg: ModelConfig, info: DataInfo) -> VAE:
    """One latent layer: networks ``cfg.arch`` (mlp | conv | resnet), a likelihood head, a prior;
    conditional on labels when ``cfg.kind == "cvae"``."""
    likelihood = likelihood_of(cfg, info)
    cond_dim = condition_size(cfg, info)
    if cond_dim and cfg.prior != "normal":
        raise ValueError("a cvae supports only the standard normal prior")
    encoder, decoder = make_networks(
        cfg.arch,
        likelihood.network_shape,  # the data's shape, or e.g. a table's one-hot width
        cfg.latent_dim,
        likelihood.n_params,
        cond_dim=cond_dim,
        **network_options(cfg),
    )
    prior = make_prior(cfg.prior, likelihood.network_shape, cfg.prior_components)
    return VAE(
        encoder, decoder, likelihood, cfg.latent_dim, config=cfg, prior=prior, cond_dim=cond_dim
    )
