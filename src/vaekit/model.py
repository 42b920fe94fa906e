"""The VAE: p(x, z) = p(x|z) p(z) with an amortized Gaussian posterior q(z|x).

``VAE`` composes an encoder network, a decoder network, a likelihood head and a prior; it has no
training logic (see ``objectives`` and ``train``). Stages: ``encode`` (inference) → ``decode``
(generative); objectives combine them into a bound.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from .config import ModelConfig
from .distributions import MIN_SCALE, Likelihood, diag_gaussian, make_likelihood
from .networks import make_networks
from .priors import StandardNormalPrior, make_prior
from .tabular import TabularLikelihood  # noqa: F401  (registers the "tabular" likelihood)

__all__ = ["VAE", "MODELS", "adopt_dataset", "build_model", "build_vae", "network_options"]


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

    def _condition(self, batch: int) -> Tensor:
        """The current condition as ``(batch, cond_dim)``; clear error when none is set."""
        if self._y is None:
            raise ValueError(
                "this conditional model needs y: use `with model.given(labels): ...` (CLI: --label)"
            )
        if len(self._y) not in (1, batch):
            raise ValueError(f"condition has {len(self._y)} rows for a batch of {batch}")
        return self._y.expand(batch, -1)

    # ---- inference -----------------------------------------------------------------------
    def encode(self, x: Tensor, *, check: bool = True) -> Independent:
        """q(z|x): batch shape ``(B,)``, event shape ``(D,)``; ``.mean`` is the embedding."""
        if check:
            self.check(x)
        return self.top_posterior(self.likelihood.encoder_input(x))

    def top_posterior(self, inputs: Tensor) -> Independent:
        """q(z|x) from encoder inputs (``likelihood.encoder_input(x)``, or pseudo-inputs)."""
        if self.cond_dim:
            h = self.encoder(inputs, self._condition(len(inputs)))
        else:
            h = self.encoder(inputs)
        loc, raw_scale = h.chunk(2, dim=-1)
        return diag_gaussian(loc, F.softplus(raw_scale) + MIN_SCALE)

    # ---- generative ----------------------------------------------------------------------
    def prior(self) -> Distribution:
        """p(z), event shape ``(D,)``: N(0, I) unless the model was built with another prior."""
        return self.prior_net(self)

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z) for ``z`` of shape ``(*S, B, D)``: batch shape ``(*S, B)``."""
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        if self.cond_dim:
            y = self._condition(lead[-1] if lead else 1)
            params = self.decoder(flat, y.expand(*lead, -1).reshape(len(flat), -1))
        else:
            params = self.decoder(flat)
        params = params.to(z.dtype)  # a no-op, except for a bfloat16 (autocast) decoder's output
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
        """``n`` draws x ~ p(x|z), z ~ p(z) (N(0, temperature² I) for the standard prior);
        ``mean=True`` returns E[x|z]. A conditional model outside ``given`` cycles through the
        classes 0, 1, …, cond_dim − 1."""
        if self.cond_dim and self._y is None:
            with self.given(torch.arange(n) % self.cond_dim):
                return self.sample(n, temperature=temperature, mean=mean, generator=generator)
        z = self.prior_net.sample(self, n, temperature, generator)
        px_z = self.decode(z)
        return px_z.mean if mean else px_z.sample()

    # ---- convenience bounds (per example, nats) --------------------------------------------
    def elbo(self, x: Tensor, n_samples: int = 1) -> Tensor:
        """ELBO per example, ``(B,)`` nats (a lower bound on log p(x))."""
        from .objectives import elbo

        with torch.no_grad():
            return elbo(self, self._checked(x), n_samples=n_samples).bound

    def log_likelihood(self, x: Tensor, k: int = 1000, *, chunk: int | None = None) -> Tensor:
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


MODELS = ("vae", "cvae", "hvae", "seqvae", "ae")


def build_model(cfg: ModelConfig) -> VAE:
    """A fresh model from a resolved model config (``event_shape`` must be set).

    ``cfg.kind`` picks the family member: ``vae``, ``cvae`` (conditional on labels), ``hvae``
    (hierarchical), ``seqvae`` (text), ``ae`` (plain autoencoder); see docs/models.md.
    """
    if cfg.event_shape is None:
        raise ValueError("model config has no event_shape; it is filled from the data")
    from .autoencoder import build_autoencoder
    from .hierarchical import build_hierarchical
    from .text import build_sequence_vae

    builders = {
        "vae": build_vae,
        "cvae": build_vae,
        "hvae": build_hierarchical,
        "seqvae": build_sequence_vae,
        "ae": build_autoencoder,
    }
    if cfg.kind not in builders:
        raise ValueError(f"unknown model kind {cfg.kind!r}; choose from {list(MODELS)}")
    return builders[cfg.kind](cfg)


def adopt_dataset(cfg: ModelConfig, ds) -> None:
    """Fill what a model learns from its data (values already in ``cfg``, e.g. from a saved run,
    are kept): a text vocabulary ``vocab``; a cvae's number of classes ``n_classes``."""
    vocab = getattr(ds, "vocab", None)
    if vocab is not None and not cfg.vocab:
        cfg.vocab = list(vocab)
    if cfg.kind == "cvae" and cfg.n_classes is None:
        if ds.train_labels is None:
            raise ValueError(f"a cvae needs labelled data; {ds.name} has no labels")
        labels = [t for t in (ds.train_labels, ds.test_labels) if t is not None and len(t)]
        cfg.n_classes = int(max(int(t.max()) for t in labels)) + 1


def network_options(cfg: ModelConfig) -> dict:
    """The network options of a model config (each network takes the ones it accepts)."""
    return {
        "hidden": tuple(cfg.hidden),
        "channels": tuple(cfg.channels),
        "activation": cfg.activation,
        "blocks": cfg.blocks,
        "squeeze_excitation": cfg.squeeze_excitation,
    }


def condition_size(cfg: ModelConfig) -> int:
    """Number of classes a ``cvae`` is conditioned on (0 for other kinds)."""
    if cfg.kind != "cvae":
        return 0
    if not cfg.n_classes or cfg.n_classes < 2:
        raise ValueError("a cvae needs labelled data with at least 2 classes (model.n_classes)")
    return int(cfg.n_classes)


def build_vae(cfg: ModelConfig) -> VAE:
    """One latent layer: networks ``cfg.arch`` (mlp | conv | resnet), a likelihood head, a prior;
    conditional on labels when ``cfg.kind == "cvae"``."""
    event_shape = tuple(cfg.event_shape)
    likelihood = make_likelihood(
        cfg.likelihood, event_shape, scale=cfg.gaussian_scale, columns=cfg.columns
    )
    cond_dim = condition_size(cfg)
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
    prior = make_prior(cfg.prior, event_shape, cfg.prior_components)
    return VAE(
        encoder, decoder, likelihood, cfg.latent_dim, config=cfg, prior=prior, cond_dim=cond_dim
    )
