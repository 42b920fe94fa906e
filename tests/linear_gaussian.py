"""A linear-Gaussian latent model (probabilistic PCA) inside a vaekit VAE, with its closed forms.

p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I)  ⇒  p(x) = N(b, WWᵀ + σ²I),
p(z|x) = N(M⁻¹Wᵀ(x − b), σ²M⁻¹) with M = WᵀW + σ²I. W has orthogonal columns, so M is diagonal and
the exact posterior is a diagonal Gaussian that the linear encoder can represent exactly.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import MultivariateNormal

from vaekit.config import DataInfo, ModelConfig
from vaekit.models import build_model

D_X, D_Z = 5, 2


def make_ppca(seed: int = 0, sigma: float = 0.5, dtype=torch.float64):
    """A VAE whose decoder is exactly pPCA and whose encoder is the exact posterior."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D_X, D_Z, generator=g, dtype=dtype))
    w = q * torch.tensor([2.0, 1.2], dtype=dtype)  # orthogonal columns
    b = torch.randn(D_X, generator=g, dtype=dtype) * 0.3
    cfg = ModelConfig(
        kind="vae",
        arch="mlp",
        hidden=[],
        latent_dim=D_Z,
        likelihood="gaussian",
        gaussian_scale="shared",
    )
    model = build_model(cfg, DataInfo(event_shape=[D_X])).to(dtype)
    dec = model.decoder.net[0]
    enc = model.encoder.net[0]
    m_diag = (w * w).sum(0) + sigma**2  # diagonal of M
    post_std = sigma / m_diag.sqrt()
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
        model.likelihood.log_scale.fill_(math.log(sigma))
        enc.weight.zero_()
        enc.weight[:D_Z] = w.T / m_diag[:, None]  # loc = M⁻¹Wᵀ(x − b)
        enc.bias[:D_Z] = -(w.T / m_diag[:, None]) @ b
        # scale = softplus(raw) + 1e-4  ⇒  raw = softplus⁻¹(std − 1e-4)
        enc.bias[D_Z:] = torch.log(torch.expm1(post_std - 1e-4))
    return model, w, b, sigma


def exact_log_px(x, w, b, sigma):
    cov = w @ w.T + sigma**2 * torch.eye(D_X, dtype=w.dtype)
    return MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


def sample_x(n, w, b, sigma, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, D_Z, generator=g, dtype=w.dtype)
    return z @ w.T + b + sigma * torch.randn(n, D_X, generator=g, dtype=w.dtype)
