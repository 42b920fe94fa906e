"""A deep hierarchical image VAE (NVAE / VDVAE family), ``model.kind: deep``.

Latents are groups of spatial maps z_g ``(latent_channels, h_s, w_s)`` at several scales, coarse
to fine (e.g. 4×4, 8×8, 16×16 for 64×64 faces), ``groups_per_scale`` groups at each. Generative
model, in generation order g = 1 … G (top = coarsest first):

    h_0 = a learned constant map;  for each group g: h ← cells(h),
    p(z_g | z_<g) = N(μ_p(h), σ_p(h)),  h ← h + Conv1×1(z_g);  upsampling between scales,
    then more cells up to full resolution → the likelihood head's parameters → p(x | z).

Inference shares the top-down path (Vahdat & Kautz, 2020): a bottom-up residual tower turns x
into one feature map e_g per group (at its scale), and the posterior is *residual* to the prior,

    q(z_g | z_<g, x) = N(μ_p + Δμ, σ_p · Δσ),  (Δμ, log Δσ) = Conv3×3(SiLU([h, e_g])),

so KL(q ‖ p) per element = ½(Δμ²/σ_p² + Δσ² − 1) − log Δσ, analytic given the groups above.
Log-scales are soft-clamped, log σ ← c·tanh(log σ / c). Residual cells (bottom-up and top-down):
h + f(h), f = SiLU → WNConv 3×3 → SiLU → WNConv 3×3 → squeeze-excitation, with weight-normalized
convolutions (w = g·v/‖v‖) and no batch statistics, so a model's output for an example never
depends on the rest of its batch (the IWAE evaluation and exact resume rely on that).

Interface (the same as every vaekit VAE, so objectives, evaluation and pictures run unchanged):
``encode(x)`` is a distribution over the flattened z ``(B, D)`` (groups in *bottom → top* order,
like the hierarchical model's layers; ``latent_groups`` gives their sizes), ``rsample((S,))``
runs the top-down pass ``(S, B, D)`` and caches it, so the prior's ``log_prob``, the posterior's
``log_prob`` and ``kl_per_dim`` and ``decode`` of that same tensor cost nothing more;
``decode(z)`` reruns the top-down pass (as the prior, given z) only for a tensor it has not seen.

Training aids: KL balancing (``objective.kl_balance``: NVAE's γ coefficients while β < 1, with
this model's ``kl_balance_alpha``) and an exponential moving average of the weights kept as
buffers (``update_ema()``, which the training loop calls through ``after_step`` after each
optimizer step; in ``eval()`` mode the model computes with the averaged weights).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ..config import DataInfo, ModelConfig
from ..likelihoods import Likelihood
from ..networks import SqueezeExcite
from .vae import VAE, likelihood_of

__all__ = [
    "DeepOptions",
    "DeepVAE",
    "DeepPosterior",
    "DeepPrior",
    "build_deep",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Feature maps are kept channels-last: oneDNN's CPU convolutions with few channels ran 1.4–2.2×
# faster in that layout (3×3, 8–16 channels, 32² and 64² maps). Values are the same either way.
_LAYOUT = torch.channels_last


@dataclass
class DeepOptions:
    """The model-config fields of ``kind: deep`` (new; ``build_deep`` reads them from the config,
    with these defaults when absent). Also read from the config: ``event_shape``, ``likelihood``
    (default head: ``logistic_mixture``), ``logscale_clamp``, ``gaussian_scale``."""

    deep_channels: int | list[int] = field(
        default_factory=lambda: [32]
    )  # channels of the cells: one count for every
    # stage, or a list per stage from full resolution (stage 0, ×1) to the coarsest (last entry
    # repeated when the list is short), e.g. [16, 16, 32] for fewer channels at high resolution
    deep_scales: list[int] = field(default_factory=lambda: [16, 8, 4])  # downsampling of the
    # latent scales, top (coarsest) → bottom: 64×64 images → 4×4, 8×8, 16×16 latent maps
    groups_per_scale: list[int] = field(default_factory=lambda: [1, 1, 1])  # one entry per scale
    latent_channels: int | list[int] = 8  # channels of each latent group's map: one count, or
    # one per scale (coarsest first, like groups_per_scale), e.g. [16, 16, 4] for fewer at the
    # fine scales
    cells: int = 1  # residual cells per block (one block per group and per non-latent stage)
    ema: float = 0.999  # decay of the weights' moving average (0: none)
    mixture_components: int = 10  # logistic_mixture likelihood: K

    @classmethod
    def from_config(cls, cfg) -> DeepOptions:
        """The options of a ModelConfig-like object (missing fields take the defaults)."""
        values = {
            f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)
        }
        return cls(**values)


def soft_clamp(x: Tensor, c: float) -> Tensor:
    """c·tanh(x/c): ≈ x for |x| ≪ c, never beyond ±c, gradient everywhere."""
    return c * torch.tanh(x / c)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class WNConv2d(nn.Conv2d):
    """Conv2d with weight normalization, w = g · v / ‖v‖ per output channel (Salimans & Kingma,
    2016). ``init_scale`` multiplies the initial g (a residual branch or a head that should start
    small). ``(N, C_in, H, W) → (N, C_out, H', W')``."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, init_scale: float = 1.0
    ):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
        with torch.no_grad():
            norm = self.weight.flatten(1).norm(dim=1)
        self.g = nn.Parameter(norm * init_scale)

    def forward(self, x: Tensor) -> Tensor:
        v = self.weight
        scale = self.g / v.flatten(1).norm(dim=1).clamp_min(1e-12)
        x = x.contiguous(memory_format=_LAYOUT)  # a no-op for inputs already in that layout
        return F.conv2d(x, v * scale[:, None, None, None], self.bias, self.stride, self.padding)


class Cell(nn.Module):
    """Residual cell h + f(h), f = SiLU → WNConv 3×3 → SiLU → WNConv 3×3 (g at 0.1×) → SE."""

    def __init__(self, channels: int):
        super().__init__()
        self.f = nn.Sequential(
            nn.SiLU(),
            WNConv2d(channels, channels, 3),
            nn.SiLU(),
            WNConv2d(channels, channels, 3, init_scale=0.1),
            SqueezeExcite(channels, activation="silu"),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.f(h)


def _block(channels: int, cells: int) -> nn.Sequential:
    return nn.Sequential(*[Cell(channels) for _ in range(cells)])


class Upsample(nn.Module):
    """Nearest upsampling to an exact ``size`` (any image size), then WNConv 3×3 (c_in → c_out)."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        self.conv = WNConv2d(c_in, c_out, 3)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(F.interpolate(h, size=self.size, mode="nearest"))


def _sizes(hw: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """Side lengths at stages 0 … n: stage i + 1 = ⌈stage i / 2⌉ (a 3×3 stride-2 conv)."""
    out = [tuple(hw)]
    for _ in range(n):
        h, w = out[-1]
        out.append(((h + 1) // 2, (w + 1) // 2))
    return out


class BottomUp(nn.Module):
    """x ``(N, C, H, W)`` → one feature map per latent group, ``(N, ch, h_s, w_s)``, returned in
    generation order (top group first). Stage i works at resolution ⌈H/2^i⌉: stage 0 starts with a
    WNConv 3×3 stem, the others with a WNConv 3×3 stride 2; a latent stage has one block of cells
    per group (its feature is read after the block), any other stage one block."""

    def __init__(self, c_in: int, channels: list[int], groups: dict[int, int], cells: int):
        super().__init__()
        stages = len(channels) - 1
        self.stem = WNConv2d(c_in, channels[0], 3)
        self.downs = nn.ModuleList(
            [WNConv2d(channels[i], channels[i + 1], 3, stride=2) for i in range(stages)]
        )
        self.blocks = nn.ModuleList()
        self.plan: list[tuple[int, bool]] = []  # (block index, read a feature after it) per stage
        self.stage_of_block: list[int] = []
        for i in range(stages + 1):
            for _ in range(groups.get(i, 1)):
                self.plan.append((len(self.blocks), i in groups))
                self.stage_of_block.append(i)
                self.blocks.append(_block(channels[i], cells))

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.stem(x)
        feats, stage = [], 0
        for (b, read), i in zip(self.plan, self.stage_of_block, strict=True):
            if i != stage:
                h, stage = self.downs[i - 1](h), i
            h = self.blocks[b](h)
            if read:
                feats.append(h)
        return feats[::-1]


class LatentGroup(nn.Module):
    """One group's heads: prior (μ_p, log σ_p) = WNConv 3×3(SiLU(h)) (starting at 1 % so that
    p ≈ N(0, I)), posterior residual (Δμ, log Δσ) = WNConv 3×3(SiLU([h, e])), and the combiner
    h + WNConv 1×1(z)."""

    def __init__(self, channels: int, latent_channels: int):
        super().__init__()
        self.prior = WNConv2d(channels, 2 * latent_channels, 3, init_scale=0.01)
        self.posterior = WNConv2d(2 * channels, 2 * latent_channels, 3, init_scale=0.1)
        self.combine = WNConv2d(latent_channels, channels, 1)
        with torch.no_grad():
            self.prior.bias.zero_()
            self.posterior.bias.zero_()


class TopDown(nn.Module):
    """The generative path: the learned constant ``h0`` (N(0, 1) at init), then per stage from
    the top a block of cells and a ``LatentGroup`` per group (a non-latent stage: one block),
    upsampling between stages; after the last group the ``tail`` (remaining stages to full
    resolution, SiLU, WNConv 3×3) gives the likelihood parameters ``(N, n_params·C, H, W)``."""

    def __init__(
        self,
        channels: list[int],
        latent_channels: dict[int, int],
        sizes: list[tuple[int, int]],
        groups: dict[int, int],
        cells: int,
        out_channels: int,
    ):
        super().__init__()
        top, bottom = max(groups), min(groups)
        self.h0 = nn.Parameter(torch.randn(channels[top], *sizes[top]))
        self.blocks = nn.ModuleList()
        self.groups = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.plan: list[tuple[str, int]] = []  # ("block" | "group" | "up", index), in order
        self.group_stage: list[int] = []  # stage of each group, generation order
        for i in range(top, bottom - 1, -1):
            for _ in range(groups.get(i, 1)):
                self.plan.append(("block", len(self.blocks)))
                self.blocks.append(_block(channels[i], cells))
                if i in groups:
                    self.plan.append(("group", len(self.groups)))
                    self.groups.append(LatentGroup(channels[i], latent_channels[i]))
                    self.group_stage.append(i)
            if i > bottom:
                self.plan.append(("up", len(self.ups)))
                self.ups.append(Upsample(channels[i], channels[i - 1], sizes[i - 1]))
        tail: list[nn.Module] = []
        for i in range(bottom, 0, -1):
            tail += [Upsample(channels[i], channels[i - 1], sizes[i - 1])]
            tail += [_block(channels[i - 1], cells)]
        tail += [nn.SiLU(), WNConv2d(channels[0], out_channels, 3)]
        self.tail = nn.Sequential(*tail)


class _Nets(NamedTuple):
    """The networks one computation uses: the live ones, or their moving averages (eval)."""

    encoder: BottomUp
    decoder: TopDown
    likelihood: Likelihood


@dataclass
class _DeepPass:
    """One top-down pass over leading shape ``lead = (*S, B)`` (N = S·B rows). ``z`` ``(*S, B, D)``
    (bottom → top); ``h`` ``(N, ch, h, w)``: the decoder state after the last group; per group in
    generation order ``log_p``/``log_q`` ``(*S, B)`` and ``kl`` ``(B, d_g)`` (KL per element given
    the groups above, averaged over the sample dims). ``log_q``/``kl`` are None for the prior."""

    z: Tensor
    h: Tensor
    lead: torch.Size
    decoder: TopDown
    log_p: list[Tensor]
    log_q: list[Tensor] | None = None
    kl: list[Tensor] | None = None


def _normal_log_prob(u: Tensor, log_scale: Tensor) -> Tensor:
    """Σ over (C, h, w) of log N(z; μ, σ) given u = (z − μ)/σ and log σ, ``(N, …) → (N,)``."""
    return (-0.5 * u.square() - log_scale - _HALF_LOG_2PI).flatten(1).sum(1)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class DeepVAE(VAE):
    """The deep hierarchical image VAE (see the module doc). ``event_shape`` is ``(C, H, W)``.

    Shapes: x ``(B, C, H, W)``; z ``(*S, B, D)`` with D = Σ_g latent_channels·h_g·w_g.
    """

    def __init__(
        self,
        event_shape: tuple[int, int, int],
        likelihood: Likelihood,
        options: DeepOptions,
        *,
        logscale_clamp: float = 7.0,
        config=None,
    ):
        if len(event_shape) != 3:
            raise ValueError(f"a deep image VAE needs images (C, H, W), got {event_shape}")
        o = options
        scales = list(o.deep_scales)
        per_scale = o.groups_per_scale
        per_scale = [per_scale] * len(scales) if isinstance(per_scale, int) else list(per_scale)
        stages = [int(round(math.log2(f))) if f >= 1 else -1 for f in scales]
        if not scales or any(2**s != f for s, f in zip(stages, scales, strict=True)):
            raise ValueError(f"deep_scales must be powers of 2 (1, 2, 4, …), got {scales}")
        if any(a <= b for a, b in zip(stages, stages[1:], strict=False)):
            raise ValueError(f"deep_scales go from the coarsest to the finest, got {scales}")
        if len(per_scale) != len(scales) or min(per_scale) < 1:
            raise ValueError(
                f"groups_per_scale needs one count ≥ 1 per scale {scales}, got {per_scale}"
            )
        widths = [o.deep_channels] if isinstance(o.deep_channels, int) else list(o.deep_channels)
        lc = o.latent_channels
        lc = [lc] * len(scales) if isinstance(lc, int) else list(lc)
        if len(lc) != len(scales):
            raise ValueError(f"latent_channels needs one count or one per scale {scales}, got {lc}")
        if not widths or min(*widths, *lc, o.cells) < 1:
            raise ValueError("deep_channels, latent_channels and cells must be at least 1")
        widths = [widths[min(i, len(widths) - 1)] for i in range(stages[0] + 1)]  # per stage
        if not 0.0 <= o.ema < 1.0:
            raise ValueError(f"ema (a decay) must be in [0, 1), got {o.ema}")
        c, h, w = event_shape
        sizes = _sizes((h, w), stages[0])
        groups = dict(zip(stages, per_scale, strict=True))  # stage → number of groups
        latent_channels = dict(zip(stages, lc, strict=True))  # stage → channels of its groups
        encoder = BottomUp(c, widths, groups, o.cells)
        decoder = TopDown(widths, latent_channels, sizes, groups, o.cells, likelihood.n_params * c)
        # Group shapes in generation order (top first); z holds them bottom → top.
        self._shapes = [(latent_channels[i], *sizes[i]) for i in decoder.group_stage]
        latent_dim = sum(math.prod(s) for s in self._shapes)
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        self.options = o
        self.logscale_clamp = float(logscale_clamp)
        self._group_counts = [groups[i] for i in decoder.group_stage]
        self._last_pass = None  # weakref to the last posterior pass (see DeepPosterior)
        self.ema_decay = float(o.ema)
        self.ema = None
        if self.ema_decay > 0:  # moving averages of every parameter, as buffers (saved, moved)
            self.ema = nn.ModuleDict(
                {k: _frozen_copy(getattr(self, k)) for k in ("encoder", "decoder", "likelihood")}
            )
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    # ---- latent layout ---------------------------------------------------------------------
    @property
    def latent_groups(self) -> list[int]:
        """Sizes of the groups as they sit in z: bottom (finest, last generated) → top."""
        return [math.prod(s) for s in self._shapes][::-1]

    @property
    def group_shapes(self) -> list[tuple[int, int, int]]:
        """``(latent_channels, h, w)`` of each group, in the order of ``latent_groups``."""
        return self._shapes[::-1]

    @property
    def kl_balance_alpha(self) -> Tensor:
        """NVAE's α_g (``kl_balance_coefficients``) in z order: a group's spatial size divided
        by the number of groups at its scale, normalized to min 1 (NVAE's "square" rule)."""
        a = [h * w / n for (_, h, w), n in zip(self._shapes, self._group_counts, strict=True)]
        a = torch.tensor(a[::-1])
        return a / a.min()

    def _split(self, z: Tensor) -> list[Tensor]:
        """``(*S, B, D)`` → per group in generation order ``(N, c, h, w)``."""
        parts = z.split(self.latent_groups, -1)[::-1]
        return [p.reshape(-1, *s) for p, s in zip(parts, self._shapes, strict=True)]

    # ---- moving average of the weights -------------------------------------------------------
    def _nets(self) -> _Nets:
        if self.ema is not None and not self.training:
            return _Nets(self.ema["encoder"], self.ema["decoder"], self.ema["likelihood"])
        return _Nets(self.encoder, self.decoder, self.likelihood)

    @torch.no_grad()
    def update_ema(self) -> float:
        """θ_ema ← d·θ_ema + (1 − d)·θ for every parameter, d = min(ema, (1 + n)/(10 + n)) after
        n updates (a short memory at first, so that early averages are not the initial weights).
        Call after each optimizer step. Returns d (0 without a moving average)."""
        if self.ema is None:
            return 0.0
        n = int(self.ema_updates)
        d = min(self.ema_decay, (1.0 + n) / (10.0 + n))
        for key, avg in self.ema.items():
            buffers = dict(avg.named_buffers())
            for name, p in getattr(self, key).named_parameters():
                buffers[name].lerp_(p.detach(), 1.0 - d)
        self.ema_updates += 1
        return d

    # ---- the top-down pass -------------------------------------------------------------------
    def top_down(
        self,
        feats: list[Tensor] | None,
        lead: torch.Size,
        z: Tensor | None = None,
        *,
        mean: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        nets: _Nets | None = None,
        keep: int | None = None,
    ) -> _DeepPass:
        """One top-down pass over ``lead = (*S, B)``.

        With bottom-up ``feats`` (per group ``(B, ch, h, w)``, or batch 1 for every row) it draws
        z ~ q (global RNG), or takes the given ``z``, or the mean path (``mean=True``), and scores
        q and p; without ``feats`` it is the prior: ancestral draws with every scale multiplied by
        ``temperature`` (from ``generator``), or the given ``z`` scored under p. ``keep``: only
        the first ``keep`` groups in generation order (the top ones) are taken from ``z``; the
        groups below are drawn as without ``z`` (given the kept ones above them).
        """
        nets = nets or self._nets()
        td, c = nets.decoder, self.logscale_clamp
        lead = torch.Size(lead)
        n = lead.numel()
        given = self._split(z) if z is not None else None
        keep = 0 if z is None else len(self._shapes) if keep is None else int(keep)
        if feats is not None:
            feats = [f.expand(*lead, *f.shape[1:]).reshape(n, *f.shape[1:]) for f in feats]
        h = td.h0.expand(n, *td.h0.shape).contiguous(memory_format=_LAYOUT)
        zs, log_p, log_q, kl = [], [], [], []
        for kind, i in td.plan:
            if kind == "block":
                h = td.blocks[i](h)
                continue
            if kind == "up":
                h = td.ups[i](h)
                continue
            group = td.groups[i]
            p_loc, p_ls = group.prior(F.silu(h)).chunk(2, 1)
            p_ls = soft_clamp(p_ls, c)
            if feats is not None:
                d_loc, d_ls = group.posterior(F.silu(torch.cat([h, feats[i]], 1))).chunk(2, 1)
                q_loc, q_ls = p_loc + d_loc, soft_clamp(p_ls + d_ls, c)
                q_scale = q_ls.exp()
                if i < keep:
                    zg = given[i]
                    u = (zg - q_loc) / q_scale
                elif mean:
                    zg, u = q_loc, torch.zeros_like(q_loc)
                else:
                    u = torch.randn_like(q_loc)
                    zg = q_loc + q_scale * u
                log_q.append(_normal_log_prob(u, q_ls).view(lead))
                t, log_r = (q_loc - p_loc) / p_ls.exp(), q_ls - p_ls
                kl_g = 0.5 * (t.square() + (2.0 * log_r).exp() - 1.0) - log_r  # (N, c, h, w)
                kl.append(kl_g.reshape(-1, lead[-1], kl_g[0].numel()).mean(0))  # (B, d_g)
            elif i < keep:
                zg = given[i]
            else:
                eps = torch.randn(p_loc.shape, generator=generator, dtype=p_loc.dtype)
                zg = p_loc + temperature * p_ls.exp() * eps.to(p_loc.device)
            log_p.append(_normal_log_prob((zg - p_loc) / p_ls.exp(), p_ls).view(lead))
            zs.append(zg)
            h = h + group.combine(zg.contiguous(memory_format=_LAYOUT))
        if keep < len(self._shapes):
            z = torch.cat([zg.reshape(*lead, -1) for zg in zs[::-1]], -1)
        if feats is None:
            return _DeepPass(z, h, lead, td, log_p)
        return _DeepPass(z, h, lead, td, log_p, log_q, kl)

    def _likelihood(self, h: Tensor, lead: torch.Size, nets: _Nets) -> Distribution:
        """p(x|z) from the decoder state after the last group: batch ``lead``."""
        params = nets.decoder.tail(h)  # (N, n_params·C, H, W)
        return nets.likelihood(params.view(*lead, -1, *self.event_shape))

    # ---- the VAE interface -------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None, *, check: bool = True) -> DeepPosterior:
        """q(z|x) over the flattened z: batch ``(B,)``, event ``(D,)``."""
        if check:
            self.check(x)
        nets = self._nets()
        feats = nets.encoder(nets.likelihood.encoder_input(x))
        return DeepPosterior(self, feats, nets)

    def top_posterior(self, inputs: Tensor, y: Tensor | None = None):
        raise NotImplementedError("a deep image VAE has its own hierarchical prior (no VampPrior)")

    def prior(self) -> DeepPrior:
        return DeepPrior(self)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x|z) for z ``(*S, B, D)``: batch ``(*S, B)``, event ``(C, H, W)``. Free for the
        tensor the last ``rsample`` returned; otherwise a top-down pass given z."""
        nets = self._nets()
        ref = self._last_pass
        last = ref() if ref is not None else None
        if last is None or last.z is not z or last.decoder is not nets.decoder:
            last = self.top_down(None, z.shape[:-1], z, nets=nets)
        return self._likelihood(last.h, last.lead, nets)

    @property
    def n_top_groups(self) -> int:
        """Groups at the coarsest scale (what the latent tools' ``groups="top"`` edits)."""
        return self._group_counts[0]

    @torch.no_grad()
    def prior_codes(
        self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` ancestral draws of z, every group's prior scale × ``temperature``, ``(n, D)``."""
        lead = torch.Size([n])
        return self.top_down(None, lead, temperature=temperature, generator=generator).z

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
        """Keep the top ``n_top`` groups (generation order) of codes ``z`` ``(*S, B, D)`` and
        fill every group below given them: with images ``x`` ``(B or 1, C, H, W)``, the
        posterior means q(z_g | z_<g, x) (the mean path of x below the edited groups); without,
        prior draws with scales × ``temperature`` (0: the prior means). Returns the completed
        codes ``(*S, B, D)`` and p(x | them), from one top-down pass."""
        if not 1 <= n_top <= len(self._shapes):
            raise ValueError(f"n_top must be in 1..{len(self._shapes)}, got {n_top}")
        nets = self._nets()
        feats = None
        if x is not None:
            feats = nets.encoder(nets.likelihood.encoder_input(x.float()))
        last = self.top_down(
            feats,
            z.shape[:-1],
            z,
            mean=True,
            temperature=temperature,
            generator=generator,
            nets=nets,
            keep=n_top,
        )
        return last.z, self._likelihood(last.h, last.lead, nets)

    def after_step(self) -> None:
        """Move the weights' moving average (``update_ema``) after an optimizer step."""
        self.update_ema()

    def running_buffers(self) -> list[Tensor]:
        """All buffers but the weights' moving average (changed by ``after_step`` alone)."""
        return [b for name, b in self.named_buffers() if not name.startswith("ema.")]

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
        """``n`` ancestral draws x ~ p(x|z), z ~ p(z) with every group's prior scale multiplied
        by ``temperature``; ``mean=True`` returns E[x|z]. ``(n, C, H, W)``."""
        nets = self._nets()
        last = self.top_down(
            None, torch.Size([n]), temperature=temperature, generator=generator, nets=nets
        )
        px_z = self._likelihood(last.h, last.lead, nets)
        if mean:
            return px_z.mean
        if getattr(px_z, "accepts_generator", False):
            return px_z.sample(generator=generator)
        return px_z.sample()


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose parameters are persistent buffers (saved, moved by ``.to``, never seen
    by an optimizer); the copy computes exactly as the original."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                del m._parameters[name]
                m.register_buffer(name, p.detach().clone())
    return twin


class DeepPosterior(Distribution):
    """q(z|x) = Π_g q(z_g | z_<g, x) over the flattened z; batch ``(B,)``, event ``(D,)``.

    ``rsample`` caches its pass, so ``log_prob``, ``kl_per_dim``, the prior's ``log_prob`` and
    the model's ``decode`` of the returned tensor reuse it. ``mean`` is the mean path (each
    group's conditional mean given the means above).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, model: DeepVAE, feats: list[Tensor], nets: _Nets):
        self.model, self.feats, self.nets = model, feats, nets
        self._last: _DeepPass | None = None
        batch = torch.Size(feats[0].shape[:1])
        super().__init__(batch, torch.Size([model.latent_dim]), validate_args=False)

    def _run(self, lead: torch.Size, z: Tensor | None = None, mean: bool = False) -> _DeepPass:
        return self.model.top_down(self.feats, lead, z, mean=mean, nets=self.nets)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        """``(*sample_shape, B, D)`` reparameterized draws (the global RNG)."""
        self._last = self._run(torch.Size(sample_shape) + self.batch_shape)
        self.model._last_pass = weakref.ref(self._last)
        return self._last.z

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Draws without gradient; not cached (a later ``log_prob`` keeps its gradient)."""
        with torch.no_grad():
            return self._run(torch.Size(sample_shape) + self.batch_shape).z

    def _pass(self, z: Tensor) -> _DeepPass:
        if self._last is not None and self._last.z is z:
            return self._last
        return self._run(z.shape[:-1], z)

    def log_prob(self, z: Tensor) -> Tensor:
        """Σ_g log q(z_g | z_<g, x), shape ``z.shape[:-1]``, nats."""
        return torch.stack(self._pass(z).log_q).sum(0)

    def kl_per_dim(self, pz=None, z: Tensor | None = None) -> Tensor:
        """KL per element of each group given the sampled groups above (averaged over the
        sample dims of ``z``), ``(B, D)`` nats in z order; sums to the total KL exactly."""
        if pz is not None and not isinstance(pz, DeepPrior):
            raise ValueError("a deep VAE's posterior KL is taken against its own prior")
        if z is None:
            z = self.rsample((1,))
        return torch.cat(self._pass(z).kl[::-1], -1)

    @property
    def mean(self) -> Tensor:
        return self._run(self.batch_shape, mean=True).z


class DeepPrior(Distribution):
    """p(z) = Π_g p(z_g | z_<g) over the flattened z; batch ``()``, event ``(D,)``."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, model: DeepVAE):
        self.model = model
        super().__init__(torch.Size(), torch.Size([model.latent_dim]), validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """Σ_g log p(z_g | z_<g), shape ``z.shape[:-1]``, nats."""
        ref = self.model._last_pass
        last = ref() if ref is not None else None
        if last is None or last.z is not z or last.decoder is not self.model._nets().decoder:
            last = self.model.top_down(None, z.shape[:-1], z)
        return torch.stack(last.log_p).sum(0)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.model.top_down(None, torch.Size(sample_shape)).z


# --------------------------------------------------------------------------------------------
# KL balancing (NVAE) and the builder
# --------------------------------------------------------------------------------------------


def build_deep(cfg: ModelConfig, info: DataInfo) -> DeepVAE:
    """``kind: deep``: images ``(C, H, W)`` (``info.event_shape``), the likelihood of the config
    (``logistic_mixture`` by default for 8-bit images), the ``DeepOptions`` fields of the config,
    ``logscale_clamp``."""
    if len(info.event_shape or ()) != 3:
        raise ValueError(f"kind deep models images (C, H, W), got shape {info.event_shape}")
    return DeepVAE(
        tuple(info.event_shape),
        likelihood_of(cfg, info),
        DeepOptions.from_config(cfg),
        logscale_clamp=cfg.logscale_clamp,
        config=cfg,
    )
