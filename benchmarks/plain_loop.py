"""The baseline: a plain hand-written PyTorch VAE loop over in-memory tensors (no vaekit).

MLP 784-400-20 with a Bernoulli likelihood, dynamic binarization, Adam, batch 128, fp32 — the same
work per step as `vaekit train` with that config. Used by speed.py.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


class PlainVAE(nn.Module):
    def __init__(self, d_x=784, hidden=400, d_z=20):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d_x, hidden), nn.ReLU(), nn.Linear(hidden, 2 * d_z))
        self.dec = nn.Sequential(nn.Linear(d_z, hidden), nn.ReLU(), nn.Linear(hidden, d_x))

    def loss(self, x):
        mu, logvar = self.enc(x).chunk(2, -1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return (rec + kl) / len(x)


def run_plain(images_u8: torch.Tensor, epochs: int, batch_size: int = 128, seed: int = 0) -> float:
    """Train for ``epochs`` and return images per second."""
    torch.manual_seed(seed)
    x_all = images_u8.view(len(images_u8), -1)
    model = PlainVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n_batches = len(x_all) // batch_size
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x_all))
        for b in range(n_batches):
            x = torch.bernoulli(x_all[perm[b * batch_size : (b + 1) * batch_size]].float() / 255)
            loss = model.loss(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return epochs * n_batches * batch_size / (time.perf_counter() - t0)
