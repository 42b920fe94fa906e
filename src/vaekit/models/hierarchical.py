"""Hierarchical VAE with top-down inference (Ladder VAE / NVAE family).

Generative model, L ≥ 2 stochastic layers: p(z_L) p(z_{L−1}|z_L) … p(z_1|z_2) p(x|z_1), with
p(z_l|z_{l+1}) = N(loc_p, scale_p) computed from z_{l+1} by a top-down network.

Inference shares the top-down path (Sønderby et al., 2016; Vahdat & Kautz, 2020): a bottom-up
pass turns x into features d_1 … d_L (the encoder network, then one MLP per layer); then, from the
top, q(z_L|x) reads d_L and for l < L

    q(z_l | z_{l+1}, x) = N(loc_p + Δloc, scale_p·exp(Δlog_scale)), (Δloc, Δlog_scale) = f(d_l, t_l)

combines bottom-up (d_l) and top-down (t_l, the prior's features) information (``merge:
residual``, NVAE's parameterization relative to the prior). ``merge: precision`` is the Ladder
VAE's: a bottom-up Gaussian N(loc_u, scale_u) read from d_l alone is multiplied with the prior,

    1/scale_q² = 1/scale_u² + 1/scale_p²,  loc_q = scale_q² (loc_u/scale_u² + loc_p/scale_p²),

which is exact for linear-Gaussian layers and cheaper (the bottom-up part is computed once per
example, not once per draw). Log-scales are soft-clamped to (−c, c) (``c = logscale_clamp``).

The posterior and the prior are distributions over the concatenated vector z = [z_1, …, z_L]
(bottom → top), so every objective treats this model as any VAE: ``rsample`` runs the top-down
pass, ``log_prob`` sums the layers, and ``kl_per_dim`` is the analytic KL of each layer given the
sampled layers above (its sum over a layer's dimensions is that layer's KL; ``latent_groups``
names the layer sizes for per-layer reporting). Under a VampPrior the top layer's KL is Monte
Carlo and its per-dim values are marginal KLs (``distributions.kl_terms``); ``kl_terms`` also
gives each layer's KL.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints, kl_divergence

from ..config import DataInfo, ModelConfig
from ..distributions import KLTerms, kl_terms
from ..networks import ACTIVATIONS, MLPEncoder, make_networks, mlp
from ..priors import make_prior
from .vae import VAE, likelihood_of, network_options

__all__ = ["HierarchicalVAE", "LadderPosterior", "LadderPrior", "build_hierarchical"]


def soft_clamp(x: Tensor, c: float) -> Tensor:
    """c·tanh(x/c): ≈ x for |x| ≪ c, never beyond ±c, gradient everywhere."""
    return c * torch.tanh(x / c)


@dataclass
class _Pass:
    """One top-down pass. ``z`` is ``(*S, B, D)``; per layer (bottom → top) ``log_q``/``log_p`` are
    ``(*S, B)`` and ``kl`` is the per-dimension KL given the layers above, ``(B, d_l)`` (averaged
    over the sample dimensions), ``kl_layer`` each layer's KL ``(B,)`` (for a top layer under a
    mixture prior the Monte-Carlo KL, which its marginal per-dim KLs do not sum to; ``top_additive``
    False then). ``log_q``/``kl`` are None for a prior-only pass."""

    z: Tensor
    log_p: list[Tensor]
    log_q: list[Tensor] | None = None
    kl: list[Tensor] | None = None
    kl_layer: list[Tensor] | None = None
    top_additive: bool = True


MERGES = ("residual", "precision")


def precision_merge(
    u_loc: Tensor, u_log_scale: Tensor, p_loc: Tensor, p_log_scale: Tensor
) -> tuple[Tensor, Tensor]:
    """(loc, scale) of the normalized product N(u_loc, u_scale²)·N(p_loc, p_scale²), elementwise.

    loc = p_loc + w (u_loc − p_loc) with w = σ(2 log p_scale − 2 log u_scale) (the bottom-up
    share of the precision); log scale = −½ logaddexp(−2 log u_scale, −2 log p_scale).
    """
    w = torch.sigmoid(2.0 * (p_log_scale - u_log_scale))
    log_scale = -0.5 * torch.logaddexp(-2.0 * u_log_scale, -2.0 * p_log_scale)
    return p_loc + w * (u_loc - p_loc), log_scale.exp()


class HierarchicalVAE(VAE):
    """A VAE whose latent is z = [z_1, …, z_L]; ``decode`` reads z_1 only (see module doc)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood,
        latent_dims: list[int],
        width: int,
        *,
        activation: str = "relu",
        logscale_clamp: float = 7.0,
        merge: str = "residual",
        features: int | None = None,
        config: ModelConfig | None = None,
        prior: nn.Module | None = None,
    ):
        if len(latent_dims) < 2 or min(latent_dims) < 1:
            raise ValueError(f"a hierarchical VAE needs ≥ 2 latent layers, got {latent_dims}")
        if merge not in MERGES:
            raise ValueError(f"model.ladder_merge must be one of {MERGES}, got {merge!r}")
        super().__init__(encoder, decoder, likelihood, sum(latent_dims), config, prior=prior)
        self.latent_dims = list(latent_dims)
        self.logscale_clamp = logscale_clamp
        self.merge = merge
        n = len(latent_dims)
        f = features or width  # bottom-up feature width (the encoder's output)
        self.act = ACTIVATIONS[activation]()
        hidden = (width,)
        self.up = nn.ModuleList([mlp([f, f, 1], activation)[:2] for _ in range(n - 1)])
        self.q_top = nn.Linear(f, 2 * latent_dims[-1])
        # Index l (0-based, bottom first) serves layer l from the layer above it.
        self.down = nn.ModuleList(
            [mlp([latent_dims[l + 1], *hidden, width], activation) for l in range(n - 1)]
        )
        self.p_head = nn.ModuleList(  # t is the down network's linear output
            [nn.Sequential(self.act, nn.Linear(width, 2 * latent_dims[l])) for l in range(n - 1)]
        )
        with torch.no_grad():  # each conditional prior starts close to N(0, I): initially
            for head in self.p_head:  # a single-layer VAE plus a nearly dormant top layer
                head[-1].weight.mul_(0.01)
                head[-1].bias.zero_()
        q_in = f if merge == "precision" else f + width  # precision: d_l alone
        self.q_head = nn.ModuleList([nn.Linear(q_in, 2 * latent_dims[l]) for l in range(n - 1)])
        self._last_pass = None  # weakref to the last posterior pass, shared with the prior

    @property
    def top_dim(self) -> int:
        return self.latent_dims[-1]

    @property
    def latent_groups(self) -> list[int]:  # type: ignore[override]
        """Sizes of the latent layers z_1 … z_L as they sit in the concatenated z."""
        return list(self.latent_dims)

    # ---- networks ------------------------------------------------------------------------------
    def _features(self, inputs: Tensor) -> list[Tensor]:
        """Bottom-up features d_1 … d_L, each ``(B, features)``."""
        d = [self.act(self.encoder(inputs))]
        for up in self.up:
            d.append(up(d[-1]))
        return d

    def _normal(self, loc: Tensor, log_scale: Tensor) -> Normal:
        return Normal(loc, soft_clamp(log_scale, self.logscale_clamp).exp(), validate_args=False)

    def _q_top(self, d_top: Tensor) -> Independent:
        loc, log_scale = self.q_top(d_top).chunk(2, -1)
        return Independent(self._normal(loc, log_scale), 1, validate_args=False)

    def top_posterior(self, inputs: Tensor, y: Tensor | None = None) -> Independent:
        """q(z_L | x) from encoder inputs: batch ``(B,)``, event ``(d_L,)``."""
        return self._q_top(self._features(inputs)[-1])

    def top_down(
        self,
        feats: list[Tensor] | None,
        lead: torch.Size,
        z: Tensor | None = None,
        *,
        mean: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        keep: int | None = None,
    ) -> _Pass:
        """The top-down pass over leading shape ``lead`` = ``(*S, B)``.

        With bottom-up ``feats`` it draws z ~ q (or takes the given ``z``, or the mean path with
        ``mean=True``) and scores q and p; without, it is the prior: ancestral draws (scales
        multiplied by ``temperature``) or the given ``z`` scored under p. ``keep``: only the top
        ``keep`` layers are taken from ``z``, the layers below drawn as without ``z``.
        """
        given = list(z.split(self.latent_dims, -1)) if z is not None else None
        top = len(self.latent_dims) - 1
        n_layers = top + 1
        keep = 0 if z is None else n_layers if keep is None else int(keep)
        zs: list[Tensor | None] = [None] * (top + 1)
        log_p: list[Tensor | None] = [None] * (top + 1)
        log_q: list[Tensor | None] = [None] * (top + 1)
        kl: list[Tensor | None] = [None] * (top + 1)
        kl_layer: list[Tensor | None] = [None] * (top + 1)
        top_additive = True
        lead = torch.Size(lead)

        pz = self.prior_net(self)
        if feats is not None:
            q = self._q_top(feats[-1])  # batch (B,)
            if keep > 0:
                zs[top] = given[top]
            elif mean:
                zs[top] = q.mean.expand(*lead, -1)
            else:
                zs[top] = q.rsample(lead[:-1])
            log_q[top] = q.log_prob(zs[top])
            kl_top = kl_terms(q, pz, zs[top].reshape(-1, *zs[top].shape[-2:]))
            kl[top], kl_layer[top], top_additive = kl_top.per_dim, kl_top.total, kl_top.additive
        elif keep > 0:
            zs[top] = given[top]
        else:
            n = lead.numel()
            zs[top] = self.prior_net.sample(self, n, temperature, generator).view(*lead, -1)
        log_p[top] = pz.log_prob(zs[top])

        for l in range(top - 1, -1, -1):
            t = self.down[l](zs[l + 1])  # (*S, B, width)
            p_loc, p_log_scale = self.p_head[l](t).chunk(2, -1)
            p = self._normal(p_loc, p_log_scale)
            if feats is not None:
                q = self._posterior(l, feats[l], t, p_loc, p_log_scale, lead)
                if l >= n_layers - keep:
                    zs[l] = given[l]
                else:
                    zs[l] = q.loc if mean else q.rsample()
                log_q[l] = q.log_prob(zs[l]).sum(-1)
                kl[l] = kl_divergence(q, p).reshape(-1, *q.loc.shape[-2:]).mean(0)  # (B, d_l)
                kl_layer[l] = kl[l].sum(-1)
            elif l >= n_layers - keep:
                zs[l] = given[l]
            else:
                eps = torch.randn(p.loc.shape, generator=generator, dtype=p.loc.dtype)
                zs[l] = p.loc + temperature * p.scale * eps.to(p.loc.device)
            log_p[l] = p.log_prob(zs[l]).sum(-1)

        z_all = z if keep == n_layers else torch.cat(zs, -1)
        if feats is None:
            return _Pass(z_all, log_p)
        return _Pass(z_all, log_p, log_q, kl, kl_layer, top_additive)

    def _posterior(
        self, l: int, d: Tensor, t: Tensor, p_loc: Tensor, p_log_scale: Tensor, lead: torch.Size
    ) -> Normal:
        """q(z_l | z_{l+1}, x) from bottom-up ``d`` ``(B, features)`` and top-down ``t``/prior
        parameters ``(*S, B, ·)``; see the module doc for the two ``merge`` rules."""
        c = self.logscale_clamp
        if self.merge == "precision":
            u_loc, u_log_scale = self.q_head[l](d).chunk(2, -1)  # (B, d_l), once per example
            loc, scale = precision_merge(
                u_loc, soft_clamp(u_log_scale, c), p_loc, soft_clamp(p_log_scale, c)
            )
            return Normal(loc, scale, validate_args=False)
        d_loc, d_log_scale = self.q_head[l](torch.cat([d.expand(*lead, -1), t], -1)).chunk(2, -1)
        return self._normal(p_loc + d_loc, soft_clamp(p_log_scale, c) + d_log_scale)

    # ---- the VAE interface -----------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None, *, check: bool = True) -> LadderPosterior:
        """q(z|x) over the concatenated z: batch ``(B,)``, event ``(D,)``, D = Σ d_l."""
        if check:
            self.check(x)
        return LadderPosterior(self, self._features(self.likelihood.encoder_input(x)))

    def prior(self) -> LadderPrior:
        return LadderPrior(self)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x|z_1) for z of shape ``(*S, B, D)`` (only the bottom layer reaches the decoder)."""
        return super().decode(z[..., : self.latent_dims[0]], y)

    @torch.no_grad()
    def prior_codes(self, n: int, *, temperature=1.0, generator=None) -> Tensor:
        """``n`` ancestral draws of z, every layer's scale × ``temperature``, ``(n, D)``."""
        return self.top_down(None, torch.Size([n]), temperature=temperature, generator=generator).z

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
        """Keep the top ``n_top`` layers of ``z`` ``(*S, B, D)``; fill the layers below with the
        posterior means given images ``x`` ``(B or 1, …)``, else with prior draws at
        ``temperature`` (0: the prior means); returns (completed z, p(x|z))."""
        if not 1 <= n_top <= len(self.latent_dims):
            raise ValueError(f"n_top must be in 1..{len(self.latent_dims)}, got {n_top}")
        feats = None if x is None else self._features(self.likelihood.encoder_input(x.float()))
        lead = z.shape[:-1]
        full = self.top_down(
            feats, lead, z, mean=True, temperature=temperature, generator=generator, keep=n_top
        ).z
        return full, self.decode(full, y)

    @torch.no_grad()
    def sample(self, n: int, y=None, *, temperature=1.0, mean=False, generator=None) -> Tensor:
        """``n`` ancestral draws; every layer's scale multiplied by ``temperature``."""
        p = next(self.parameters())
        lead = torch.Size([n])
        z = self.top_down(None, lead, temperature=temperature, generator=generator).z.to(p.device)
        px_z = self.decode(z)
        return px_z.mean if mean else px_z.sample()


class LadderPosterior(Distribution):
    """q(z|x) = q(z_L|x) Π_{l<L} q(z_l|z_{l+1}, x) over z = [z_1 … z_L]; batch ``(B,)``.

    ``mean`` is the mean path (each layer's conditional mean given the means above), the
    deterministic embedding used for reconstructions. The last ``rsample`` pass is cached, so
    scoring the same tensor again (``log_prob``, the prior's ``log_prob``, ``kl_per_dim``) costs
    nothing.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, model: HierarchicalVAE, feats: list[Tensor]):
        self.model, self.feats = model, feats
        self._last: _Pass | None = None
        super().__init__(feats[0].shape[:1], torch.Size([model.latent_dim]), validate_args=False)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        lead = torch.Size(sample_shape) + self.batch_shape
        self._last = self.model.top_down(self.feats, lead)
        self.model._last_pass = weakref.ref(self._last)
        return self._last.z

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Draws without gradient; not cached, so a later ``log_prob`` keeps its gradient (the
        score-function estimator differentiates log q(z|x) at fixed z)."""
        with torch.no_grad():
            return self.model.top_down(self.feats, torch.Size(sample_shape) + self.batch_shape).z

    def _pass(self, z: Tensor) -> _Pass:
        if self._last is not None and self._last.z is z:
            return self._last
        return self.model.top_down(self.feats, z.shape[:-1], z)

    def log_prob(self, z: Tensor) -> Tensor:
        """Σ_l log q(z_l | z_{l+1}, x), shape ``z.shape[:-1]``, nats."""
        return torch.stack(self._pass(z).log_q).sum(0)

    def kl_terms(self, pz=None, z: Tensor | None = None) -> KLTerms:
        """KL given the sampled layers above: total ``(B,)`` = Σ_l KL_l, per dimension ``(B, D)``
        and per layer ``(B, L)``, nats. Lower layers' KLs are analytic and split over their
        dimensions; the top layer's under a VampPrior is Monte Carlo, with marginal per-dim KLs
        (``distributions.kl_terms``)."""
        if pz is not None and not isinstance(pz, LadderPrior):
            raise ValueError("a hierarchical posterior's KL is taken against its own prior")
        if z is None:
            z = self.rsample((1,))
        p = self._pass(z)
        layers = torch.stack(p.kl_layer, -1)  # (B, L)
        return KLTerms(layers.sum(-1), torch.cat(p.kl, -1), p.top_additive, layers)

    def kl_per_dim(self, pz=None, z: Tensor | None = None) -> Tensor:
        """Per-dimension KL of each layer given the sampled layers above, ``(B, D)`` nats."""
        return self.kl_terms(pz, z).per_dim

    @property
    def mean(self) -> Tensor:
        return self.model.top_down(self.feats, self.batch_shape, mean=True).z


class LadderPrior(Distribution):
    """p(z) = p(z_L) Π_{l<L} p(z_l|z_{l+1}) over z = [z_1 … z_L]; batch ``()``, event ``(D,)``."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, model: HierarchicalVAE):
        self.model = model
        super().__init__(torch.Size(), torch.Size([model.latent_dim]), validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """Σ_l log p(z_l | z_{l+1}), shape ``z.shape[:-1]``, nats."""
        ref = self.model._last_pass
        last = ref() if ref is not None else None
        if last is not None and last.z is z:
            return torch.stack(last.log_p).sum(0)
        return torch.stack(self.model.top_down(None, z.shape[:-1], z).log_p).sum(0)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.model.top_down(None, torch.Size(sample_shape)).z


def build_hierarchical(cfg: ModelConfig, info: DataInfo) -> HierarchicalVAE:
    """``kind: hvae``: ``latent_dims`` (bottom → top; default [latent_dim, latent_dim // 2]),
    encoder/decoder networks of ``arch``, top-down width ``ladder_width`` (default
    ``hidden[-1]``). The bottom-up features are the encoder's last hidden layer (``hidden[-1]``
    units; an MLP encoder is the single-layer model's trunk, ``hidden[:-1]`` then that layer)."""
    dims = list(cfg.latent_dims) or [cfg.latent_dim, max(cfg.latent_dim // 2, 1)]
    features = cfg.hidden[-1] if cfg.hidden else 256
    width = cfg.ladder_width or features
    likelihood = likelihood_of(cfg, info)
    shape = likelihood.network_shape  # the data's shape, or e.g. a table's one-hot width
    options = network_options(cfg)
    encoder, decoder = make_networks(
        cfg.arch, shape, dims[0], likelihood.n_params, enc_out=features, **options
    )
    if cfg.arch == "mlp" and cfg.hidden:
        encoder = MLPEncoder(shape, features, cfg.hidden[:-1], cfg.activation)
    return HierarchicalVAE(
        encoder,
        decoder,
        likelihood,
        dims,
        width,
        activation=cfg.activation,
        logscale_clamp=cfg.logscale_clamp,
        merge=cfg.ladder_merge,
        features=features,
        config=cfg,
        prior=make_prior(cfg.prior, shape, cfg.prior_components),
    )
