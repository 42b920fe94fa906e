"""Encoder and decoder networks.

An encoder maps a batch ``(N, *event_shape)`` to features ``(N, out_features)``; a decoder maps
``(N, in_features)`` to likelihood parameters ``(N, n_params, *event_shape)``. Networks know
nothing about distributions: the model turns encoder features into q(z|x) and decoder outputs into
p(x|z) through its likelihood head.
"""

from __future__ import annotations

import inspect
import math

from torch import Tensor, nn

__all__ = [
    "MLPEncoder",
    "MLPDecoder",
    "ConvEncoder",
    "ConvDecoder",
    "make_networks",
    "accepted_options",
    "ARCHS",
]

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "elu": nn.ELU}


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of the given widths with an activation after every layer but the last."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten → [Linear → act] × len(hidden) → Linear(out_features)."""

    def __init__(self, event_shape, out_features: int, hidden=(512, 512), activation="relu"):
        super().__init__()
        self.net = _mlp([math.prod(event_shape), *hidden, out_features], activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """Linear → [act → Linear] … → reshape to ``(N, n_params, *event_shape)``."""

    def __init__(
        self, event_shape, in_features: int, n_params: int, hidden=(512, 512), activation="relu"
    ):
        super().__init__()
        self.out_shape = (n_params, *event_shape)
        self.net = _mlp([in_features, *reversed(hidden), math.prod(self.out_shape)], activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.out_shape)


def _spatial_sizes(size: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """Sizes after each stride-2 conv with kernel 4, padding 1: s → floor(s/2)."""
    sizes = [size]
    for _ in range(n):
        h, w = sizes[-1]
        sizes.append((max(h // 2, 1), max(w // 2, 1)))
    return sizes


class ConvEncoder(nn.Module):
    """[Conv 4×4 stride 2 → act] per channel count → flatten → Linear(out_features).

    Works for any ``(C, H, W)``; the number of downsamplings stops before a side reaches 1.
    """

    def __init__(
        self,
        event_shape,
        out_features: int,
        channels=(32, 64, 128),
        hidden=(256,),
        activation="relu",
    ):
        super().__init__()
        c, h, w = _image_shape(event_shape)
        channels = _fit_depth(channels, (h, w))
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        for c_in, c_out in zip((c, *channels[:-1]), channels, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), act()]
        self.conv = nn.Sequential(*layers)
        hh, ww = _spatial_sizes((h, w), len(channels))[-1]
        self.event_shape = (c, h, w)
        self.head = _mlp([channels[-1] * hh * ww, *hidden, out_features], activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x.view(-1, *self.event_shape)).flatten(1))


class ConvDecoder(nn.Module):
    """Linear → reshape → [ConvTranspose 4×4 stride 2 → act] … → Conv 3×3 to n_params·C channels.

    Output padding is chosen per layer so the output matches the encoder's sizes exactly.
    """

    def __init__(
        self,
        event_shape,
        in_features: int,
        n_params: int,
        channels=(32, 64, 128),
        hidden=(256,),
        activation="relu",
    ):
        super().__init__()
        c, h, w = _image_shape(event_shape)
        channels = _fit_depth(channels, (h, w))
        act = ACTIVATIONS[activation]
        sizes = _spatial_sizes((h, w), len(channels))
        hh, ww = sizes[-1]
        self.start = (channels[-1], hh, ww)
        self.fc = nn.Sequential(
            _mlp([in_features, *hidden, channels[-1] * hh * ww], activation), act()
        )
        layers: list[nn.Module] = []
        rev = list(reversed(channels))
        for i, (c_in, c_out) in enumerate(zip(rev, rev[1:] + [rev[-1]], strict=True)):
            (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
            pad = (h_out - 2 * h_in, w_out - 2 * w_in)
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, output_padding=pad), act()]
        layers.append(nn.Conv2d(rev[-1], n_params * c, 3, padding=1))
        self.deconv = nn.Sequential(*layers)
        self.out_shape = (n_params, c, h, w)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(-1, *self.start)
        return self.deconv(h).view(-1, *self.out_shape)


def _image_shape(event_shape) -> tuple[int, int, int]:
    if len(event_shape) == 2:
        return (1, *event_shape)
    if len(event_shape) != 3:
        raise ValueError(f"conv networks need image data (C, H, W) or (H, W), got {event_shape}")
    return tuple(event_shape)


def _fit_depth(channels, size) -> list[int]:
    """Keep only as many stride-2 stages as the image allows (each side stays ≥ 2)."""
    depth = 0
    h, w = size
    while depth < len(channels) and h // 2 >= 2 and w // 2 >= 2:
        h, w, depth = h // 2, w // 2, depth + 1
    if depth == 0:
        raise ValueError(f"image of size {size} is too small for a conv network; use --arch mlp")
    return list(channels[:depth])


ARCHS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder)}


def make_networks(arch: str, event_shape, latent_dim: int, n_params: int, **options):
    """(encoder with 2·latent_dim outputs, decoder) for an architecture name and options."""
    try:
        enc_cls, dec_cls = ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}") from None
    encoder = enc_cls(event_shape, 2 * latent_dim, **accepted_options(enc_cls, options))
    decoder = dec_cls(event_shape, latent_dim, n_params, **accepted_options(dec_cls, options))
    return encoder, decoder


def accepted_options(cls, options: dict) -> dict:
    """The subset of ``options`` that ``cls.__init__`` takes (e.g. ``channels`` only for conv)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
