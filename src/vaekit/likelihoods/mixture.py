"""Mixture of discretized logistics on the 8-bit levels 0..255 (PixelCNN++, NVAE).

Level k ∈ {0, …, 255} sits at c_k = 2k/255 − 1 ∈ [−1, 1] with bin [c_k − 1/255, c_k + 1/255]; the
edge bins take all the mass below −1 + 1/255 (k = 0) and above 1 − 1/255 (k = 255). One component
with location μ and scale s gives, with F(t) = σ((t − μ)/s),

    P(k) = F(c_k + 1/255) − F(c_k − 1/255),  P(0) = F(c_0 + 1/255),  P(255) = 1 − F(c_255 − 1/255),

and a pixel (channel) is a mixture Σ_j π_j P_j(k) of K components, π = softmax(logits).

RGB can be *coupled* (Salimans et al., 2017): a pixel's three channels share one mixture
component and, within component j, are autoregressive through linear terms in the observed
values, μ'_G = μ_G + α c_R and μ'_B = μ_B + β c_R + γ c_G (α, β, γ ∈ (−1, 1)), so

    p(x_R, x_G, x_B) = Σ_j π_j P_j(x_R) P_j(x_G | x_R) P_j(x_B | x_R, x_G).

Numerics: the interior bin is computed without cancellation from the identity
σ(a) − σ(b) = σ(a) σ(−b) (1 − e^{−(a−b)}), a > b, so

    log P(k) = log σ(a) + log σ(−b) + log(−expm1(−(a − b))),   a − b = 2/(255 s),

which is exact in every regime (both tails, tiny or wide scales) and replaces PixelCNN++'s
"tiny probability" branch (density × bin width below 1e−5, an approximation with a jump); the edge
bins are log σ(a) and log σ(−b); the mixture is a log-sum-exp over components. Log-scales are
clamped to [−7, 7] (PixelCNN++ clamps at −7 from below; the upper bound keeps 1/s finite).
All log-probabilities are in nats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints

from ..distributions import SupportError
from .base import Likelihood

__all__ = ["DiscretizedLogisticMixture", "LogisticMixtureLikelihood", "LOG_SCALE_RANGE"]

LOG_SCALE_RANGE = (-7.0, 7.0)  # log s is clamped to this range
_HALF_BIN = 1.0 / 255.0  # half the width of a bin on [−1, 1]


def _log_bin_prob(value: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """log P(k) of one discretized logistic per element (broadcast), nats.

    ``value``: levels 0..255 (floats); ``loc`` on the [−1, 1] scale; ``log_scale`` already clamped.
    """
    c = value / 127.5 - 1.0
    inv_s = torch.exp(-log_scale)
    centered = c - loc
    plus = inv_s * (centered + _HALF_BIN)  # a
    minus = inv_s * (centered - _HALF_BIN)  # b
    log_cdf_plus = F.logsigmoid(plus)  # log F(c + 1/255): the k = 0 bin
    log_sf_minus = F.logsigmoid(-minus)  # log(1 − F(c − 1/255)): the k = 255 bin
    interior = log_cdf_plus + log_sf_minus + torch.log(-torch.expm1(-2.0 * _HALF_BIN * inv_s))
    return torch.where(
        value < 0.5, log_cdf_plus, torch.where(value > 254.5, log_sf_minus, interior)
    )


def _gumbel(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)
    return -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))


def _logistic_noise(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)
    u = u.clamp(1e-6, 1.0 - 1e-6)
    return torch.log(u) - torch.log1p(-u)


def _to_level(y: Tensor) -> Tensor:
    """A continuous value on [−1, 1] scale → its bin's level 0..255 (edges absorb the tails)."""
    return torch.round((y.clamp(-1.0, 1.0) + 1.0) * 127.5)


class DiscretizedLogisticMixture(Distribution):
    """Per-pixel mixture of K discretized logistics on the levels 0..255 (see module doc).

    Parameters (component axis at dim −4, images channel-first):

    - ``loc``, ``log_scale``: ``(*batch, K, C, H, W)``, locations on the [−1, 1] scale and log
      scales (clamped to ``LOG_SCALE_RANGE``);
    - independent channels (``coeffs=None``): ``logits`` ``(*batch, K, C, H, W)``, one mixture per
      pixel channel; batch shape ``(*batch, C, H, W)``, event shape ``()``;
    - coupled RGB: ``logits`` ``(*batch, K, H, W)`` (one mixture per pixel, shared by its channels)
      and ``coeffs`` ``(*batch, K, 3, H, W)`` holding (α, β, γ) in (−1, 1) along dim −3; batch
      shape ``(*batch, H, W)``, event shape ``(3,)`` — the channel axis, which in values sits at
      dim −3 (images stay ``(*, C, H, W)``).

    ``log_prob(x)`` takes levels ``(*, C, H, W)`` (floats or ints, broadcast against ``*batch``)
    and returns one log-probability per pixel channel ``(*, C, H, W)``, or per pixel position
    ``(*, H, W)`` when coupled, in nats.
    """

    arg_constraints: dict = {}
    support = constraints.integer_interval(0, 255)
    has_rsample = False

    def __init__(
        self,
        logits: Tensor,
        loc: Tensor,
        log_scale: Tensor,
        coeffs: Tensor | None = None,
        validate_args: bool | None = False,
    ):
        if loc.dim() < 4 or loc.shape != log_scale.shape:
            raise ValueError(
                f"loc and log_scale must be (*batch, K, C, H, W) of one shape, got "
                f"{tuple(loc.shape)} and {tuple(log_scale.shape)}"
            )
        k, c = loc.shape[-4], loc.shape[-3]
        self.coupled = coeffs is not None
        if self.coupled:
            if c != 3 or coeffs.shape != loc.shape:
                raise ValueError(f"coupled RGB needs C = 3 and coeffs of shape {tuple(loc.shape)}")
            want = loc.shape[:-3] + loc.shape[-2:]
        else:
            want = loc.shape
        if logits.shape != want:
            raise ValueError(f"logits must have shape {tuple(want)}, got {tuple(logits.shape)}")
        self.logits, self.loc, self.coeffs = logits, loc, coeffs
        self.log_scale = log_scale.clamp(*LOG_SCALE_RANGE)
        self.n_components, self.n_channels = k, c
        lead = loc.shape[:-4]
        if self.coupled:
            batch, event = lead + loc.shape[-2:], torch.Size([3])
        else:
            batch, event = lead + loc.shape[-3:], torch.Size()
        super().__init__(batch, event, validate_args=validate_args)

    # ---- probabilities ---------------------------------------------------------------------
    def _coupled_loc(self, c: Tensor) -> Tensor:
        """Channel locations given the observed values ``c`` ``(*, 1, 3, H, W)`` on [−1, 1]:
        μ_R, μ_G + α c_R, μ_B + β c_R + γ c_G; ``(*, K, 3, H, W)``."""
        mu, a = self.loc.unbind(-3), self.coeffs.unbind(-3)
        c_r, c_g = c[..., 0, :, :], c[..., 1, :, :]
        locs = (mu[0], mu[1] + a[0] * c_r, mu[2] + a[1] * c_r + a[2] * c_g)
        return torch.stack(torch.broadcast_tensors(*locs), -3)

    def channel_log_probs(self, value: Tensor) -> Tensor:
        """log P_j(x_c | x_<c) of every component j and channel c, ``(*, K, C, H, W)``, nats
        (independent channels: log P_j(x_c)). Each is a normalized distribution over x_c."""
        value = torch.as_tensor(value, dtype=self.loc.dtype, device=self.loc.device)
        v = value.unsqueeze(-4)  # (*, 1, C, H, W)
        loc = self._coupled_loc(v / 127.5 - 1.0) if self.coupled else self.loc
        return _log_bin_prob(v, loc, self.log_scale)

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(x) per pixel channel ``(*, C, H, W)`` (coupled: per pixel ``(*, H, W)``), nats."""
        lp = self.channel_log_probs(value)  # (*, K, C, H, W)
        if self.coupled:
            return torch.logsumexp(lp.sum(-3) + F.log_softmax(self.logits, -3), -3)
        return torch.logsumexp(lp + F.log_softmax(self.logits, -4), -4)

    # ---- draws -------------------------------------------------------------------------------
    def sample(
        self, sample_shape: torch.Size = torch.Size(), generator: torch.Generator | None = None
    ) -> Tensor:
        """Exact draws ``(*sample_shape, *batch, C, H, W)`` of levels (floats 0..255).

        A component j ~ π (Gumbel-max), then per channel a logistic draw μ + s·log(u/(1−u)),
        binned; coupled channels use the *binned* values of the channels before them, exactly
        the conditionals that ``log_prob`` scores."""
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            lead = shape + self.loc.shape[:-4]
            img = self.loc.shape[-3:]  # (C, H, W)
            logits = self.logits.expand(shape + self.logits.shape)
            g = _gumbel(logits.shape, logits, generator)
            comp_dim = -3 if self.coupled else -4
            j = torch.argmax(logits + g, comp_dim, keepdim=True)  # component per pixel (channel)
            if self.coupled:
                j = j.unsqueeze(-3).expand(*lead, 1, *img)
            loc, log_scale = (
                t.expand(shape + t.shape).gather(-4, j).squeeze(-4)
                for t in (self.loc, self.log_scale)
            )
            noise = _logistic_noise(loc.shape, loc, generator)
            if not self.coupled:
                return _to_level(loc + log_scale.exp() * noise)
            a = self.coeffs.expand(shape + self.coeffs.shape).gather(-4, j).squeeze(-4)
            s = log_scale.exp()
            r = _to_level(loc[..., 0, :, :] + s[..., 0, :, :] * noise[..., 0, :, :])
            c_r = r / 127.5 - 1.0
            g_loc = loc[..., 1, :, :] + a[..., 0, :, :] * c_r
            gr = _to_level(g_loc + s[..., 1, :, :] * noise[..., 1, :, :])
            c_g = gr / 127.5 - 1.0
            b_loc = loc[..., 2, :, :] + a[..., 1, :, :] * c_r + a[..., 2, :, :] * c_g
            b = _to_level(b_loc + s[..., 2, :, :] * noise[..., 2, :, :])
            return torch.stack((r, gr, b), -3)

    @property
    def mean(self) -> Tensor:
        """Approximate E[x], levels ``(*batch, C, H, W)``, rounded: Σ_j π_j m_j with m_j the
        component's clamped location (coupled: m_G = μ_G + α m_R, m_B = μ_B + β m_R + γ m_G, each
        clamped to [−1, 1]); exact as the scales go to 0 (cf. ``DiscretizedLogistic.mean``)."""
        if self.coupled:
            m_r = self.loc[..., 0, :, :].clamp(-1, 1)
            a = self.coeffs.unbind(-3)
            m_g = (self.loc[..., 1, :, :] + a[0] * m_r).clamp(-1, 1)
            m_b = (self.loc[..., 2, :, :] + a[1] * m_r + a[2] * m_g).clamp(-1, 1)
            m = torch.stack((m_r, m_g, m_b), -3)  # (*, K, 3, H, W)
            w = torch.softmax(self.logits, -3).unsqueeze(-3)
        else:
            m = self.loc.clamp(-1, 1)
            w = torch.softmax(self.logits, -4)
        return _to_level((w * m).sum(-4))


class _Image(Distribution):
    """A per-pixel distribution summed over the image: batch ``(*batch,)``, event ``(C, H, W)``.

    ``log_prob(x)`` = Σ over the pixels of ``base.log_prob(x)`` (``n_summed`` trailing dims), nats.
    """

    arg_constraints: dict = {}
    support = constraints.integer_interval(0, 255)
    has_rsample = False
    accepts_generator = True  # ``sample(..., generator=g)`` (models use it for seeded pictures)

    def __init__(self, base: DiscretizedLogisticMixture, image_shape: torch.Size):
        self.base = base
        self.n_summed = 2 if base.coupled else 3
        batch = base.loc.shape[:-4]
        super().__init__(batch, torch.Size(image_shape), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value).flatten(-self.n_summed).sum(-1)

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> Tensor:
        return self.base.sample(sample_shape, generator=generator)

    @property
    def mean(self) -> Tensor:
        return self.base.mean


class LogisticMixtureLikelihood(Likelihood):
    """p(x|z) = Π_pixels DiscretizedLogisticMixture on the levels 0..255, for ``(C, H, W)`` images.

    Decoder outputs ``(*batch, n_params, C, H, W)`` per pixel channel, K = ``components``:

    - independent channels (grey, or RGB with ``coupled=False``): ``n_params = 3K``, read as
      ``(3, K)``: mixture logits, locations, raw log-scales of that channel;
    - coupled RGB (``coupled=True`` and C = 3): ``n_params = 4K``, read as ``(4, K)`` per channel:
      logit contributions (summed over the 3 channels into one mixture per pixel), locations, raw
      log-scales, and one raw coupling coefficient (tanh; channel R's slot is α for G|R, G's is β
      for B|R, B's is γ for B|G).

    Data: integer levels 0..255 (``prepare`` keeps raw uint8 levels as floats);
    ``encoder_input`` = x/255 ∈ [0, 1] or, with ``centered=True``, 2x/255 − 1 ∈ [−1, 1];
    a discrete likelihood: ``nats_offset_per_dim = 0``.
    """

    name = "logistic_mixture"
    discrete = True
    nats_offset_per_dim = 0.0

    def __init__(
        self,
        event_shape: tuple[int, ...],
        components: int = 10,
        coupled: bool = True,
        centered: bool = False,
    ):
        super().__init__(event_shape)
        if len(self.event_shape) != 3:
            raise ValueError(f"logistic_mixture needs images (C, H, W), got {self.event_shape}")
        if components < 1:
            raise ValueError(f"logistic_mixture needs at least 1 component, got {components}")
        self.components = int(components)
        self.coupled = bool(coupled) and self.event_shape[0] == 3
        self.centered = bool(centered)
        self.n_params = (4 if self.coupled else 3) * self.components

    def dist(self, params: Tensor) -> _Image:
        """``params`` ``(*batch, n_params, C, H, W)`` → p(x|z), batch ``(*batch,)``, event
        ``(C, H, W)``."""
        k = self.components
        img = params.shape[-3:]
        parts = params.unflatten(-4, (self.n_params // k, k))  # (*, P, K, C, H, W)
        if self.coupled:
            logits, loc, raw_scale, raw_coeff = parts.unbind(-5)
            base = DiscretizedLogisticMixture(logits.sum(-3), loc, raw_scale, torch.tanh(raw_coeff))
        else:
            logits, loc, raw_scale = parts.unbind(-5)
            base = DiscretizedLogisticMixture(logits, loc, raw_scale)
        return _Image(base, img)

    def check(self, x: Tensor) -> None:
        super().check(x)
        if x.is_floating_point() and not (x == x.round()).all():
            raise SupportError(
                f"{self.name} likelihood needs integer levels 0..255, got fractional values"
            )
        if (x < 0).any() or (x > 255).any():
            raise SupportError(
                f"{self.name} likelihood needs integer levels 0..255, got values in "
                f"[{float(x.min()):g}, {float(x.max()):g}]"
            )

    def encoder_input(self, x: Tensor) -> Tensor:
        return x * (2.0 / 255.0) - 1.0 if self.centered else x / 255.0

    def display(self, x: Tensor) -> Tensor:
        """Levels → [0, 1] for pictures (whatever ``encoder_input`` feeds the network)."""
        return (x / 255.0).clamp(0.0, 1.0)
