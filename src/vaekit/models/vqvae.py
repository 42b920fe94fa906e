"""VQ-VAE (van den Oord et al., 2017) in the same harness (``kind: vqvae``), with a learned
autoregressive prior over its codes so that it samples.

    x ──conv encoder──▶ z_e (E, h, w) ──nearest code──▶ z_q = e_k ──conv decoder──▶ p(x|z_q)

- **Straight-through**: the decoder reads z_e + sg(z_q − z_e), so its gradient reaches the
  encoder as if quantization were the identity.
- **Commitment**: β Σ_positions ‖z_e − sg(z_q)‖² per image (``model.commitment`` β, 0.25).
- **EMA codebook** (training mode, no gradient): per code k, counts N_k ← γN_k + (1−γ)n_k and
  sums m_k ← γm_k + (1−γ)Σ z_e assigned to k, e_k = m_k / Ñ_k with Laplace-smoothed counts
  (γ = ``model.codebook_decay``, 0.99). The codebook starts as encoder outputs of the first
  batch.
- **Dead-code restarts**: a code whose EMA count falls below 1 (fewer than one assignment per
  step) is moved onto a random encoder output of the current batch.
- **Code prior**: a GRU over the h·w code indices in raster order, p(k) = Π_t p(k_t | k_<t),
  trained jointly on the (detached) indices; its NLL per image is added to the training loss
  and only reaches the prior's parameters. ``fit_prior(x)`` trains it further, alone, on the
  final codes of a dataset (cheap: no convolutions).

The latent z of the VAE interface is the flattened grid of code vectors, D = E·h·w
(``latent_dim``; ``model.latent_dim`` of the config is not used). ``encode(x)`` is a point mass
at z_q (``VQPosterior``, a ``PointMass``: no density, KL reported as 0); ``prior()`` is the code
prior as a distribution over such grids (``log_prob`` of z on the codebook lattice, ``sample``).

**What it reports** (``has_bound = False``): no ELBO, no NLL, no bits/dim of x. Evaluation
reports the reconstruction term E log p(x|z_q) (nats per image; not a bound), the reconstruction
PSNR (dB, means E[x|z_q] against x in [0, 1]), the code prior's NLL of the test codes (nats per
image) and ``bits_per_code`` = that NLL / (h·w ln 2) (the uniform prior's is log2 K), the
codebook's perplexity and the number of codes used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ..config import DataInfo, ModelConfig
from ..networks import ACTIVATIONS
from .autoencoder import PointMass
from .vae import VAE, likelihood_of

__all__ = ["VQPosterior", "CodePrior", "CodePriorNet", "VQVAE", "build_vqvae"]


def _grid_sizes(size: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """Sizes after each stride-2 conv (kernel 4, padding 1): s → floor(s/2)."""
    sizes = [size]
    for _ in range(n):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


class VQPosterior(PointMass):
    """δ(z − z_q) with the straight-through z_q, batch ``(B,)``, event ``(D,)``. Carries the
    training terms of the step: ``training_loss()`` = mean_B [β·commitment + code-prior NLL]."""

    def __init__(self, z_st: Tensor, commitment: Tensor, prior_nll: Tensor, indices: Tensor):
        super().__init__(z_st)
        self.commitment, self.prior_nll, self.indices = commitment, prior_nll, indices

    def training_loss(self) -> Tensor:
        """Scalar: the batch mean of β Σ‖z_e − sg(z_q)‖² + (−log p_prior(k)) (nats)."""
        return (self.commitment + self.prior_nll).mean()

    def training_terms(self) -> dict[str, Tensor]:
        return {
            "commitment": self.commitment.detach().mean(),
            "code_nll": self.prior_nll.detach().mean(),
        }


class CodePriorNet(nn.Module):
    """GRU over code indices k_1 … k_T (raster order): logits of p(k_t | k_<t), (B, T, K)."""

    def __init__(self, n_codes: int, hidden: int, length: int):
        super().__init__()
        self.n_codes, self.length = n_codes, length
        self.embed = nn.Embedding(n_codes + 1, hidden)  # index K: the start token
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_codes)

    def log_prob(self, indices: Tensor) -> Tensor:
        """log p(k) = Σ_t log p(k_t | k_<t), nats, indices (B, T) → (B,)."""
        start = torch.full_like(indices[:, :1], self.n_codes)
        h, _ = self.gru(self.embed(torch.cat([start, indices[:, :-1]], 1)))
        logits = self.out(h)  # (B, T, K)
        return -F.cross_entropy(logits.transpose(1, 2), indices, reduction="none").sum(1)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator=None) -> Tensor:
        """``n`` index grids (n, T), ancestral sampling with logits / temperature."""
        device = self.out.weight.device
        token = torch.full((n, 1), self.n_codes, dtype=torch.long, device=device)
        state, out = None, []
        for _ in range(self.length):
            h, state = self.gru(self.embed(token), state)
            probs = F.softmax(self.out(h[:, -1]) / max(temperature, 1e-6), -1)
            token = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
            out.append(token)
        return torch.cat(out, 1)


class CodePrior(Distribution):
    """The code prior as a distribution over flattened code-vector grids z (event ``(D,)``):
    ``log_prob(z)`` maps each position to its nearest codebook vector and scores the indices
    with the GRU (exact for z on the codebook lattice, e.g. ``encode(x).mean``); ``sample``."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, model: VQVAE):
        self.model = model
        super().__init__(torch.Size(), torch.Size([model.latent_dim]), validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        idx = self.model.quantize(self.model.unflatten(z.reshape(-1, z.shape[-1])))[1]
        return self.model.code_prior.log_prob(idx).view(lead)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        n = int(torch.Size(sample_shape).numel())
        z = self.model.codes_to_z(self.model.code_prior.sample(n))
        return z.view(*sample_shape, -1)


class VQVAE(VAE):
    """Conv encoder → vector quantizer (K codes of E dims, EMA) → conv decoder, + code prior."""

    has_bound = False  # no density over x: reconstruction, PSNR and the codes' bits (module doc)

    def __init__(
        self,
        likelihood,
        config: ModelConfig,
        *,
        channels: list[int],
        code_dim: int,
        n_codes: int,
        commitment: float,
        decay: float,
        prior_hidden: int,
        activation: str = "relu",
    ):
        c, h, w = likelihood.network_shape
        sizes = _grid_sizes((h, w), len(channels))
        if min(sizes[-1]) < 1:
            raise ValueError(f"{len(channels)} downsamplings are too many for {h}x{w} images")
        gh, gw = sizes[-1]
        act = ACTIVATIONS[activation]
        enc: list[nn.Module] = []
        for c_in, c_out in zip((c, *channels[:-1]), channels, strict=True):
            enc += [nn.Conv2d(c_in, c_out, 4, 2, 1), act()]
        enc += [nn.Conv2d(channels[-1], channels[-1], 3, padding=1), act()]
        enc.append(nn.Conv2d(channels[-1], code_dim, 1))
        dec: list[nn.Module] = [nn.Conv2d(code_dim, channels[-1], 3, padding=1), act()]
        rev = list(reversed(channels))
        for i, (c_in, c_out) in enumerate(zip(rev, rev[1:] + [rev[-1]], strict=True)):
            (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
            pad = (h_out - 2 * h_in, w_out - 2 * w_in)
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, output_padding=pad), act()]
        dec.append(nn.Conv2d(rev[-1], likelihood.n_params * c, 3, padding=1))
        super().__init__(
            nn.Sequential(*enc), nn.Sequential(*dec), likelihood, code_dim * gh * gw, config
        )
        self.grid = (code_dim, gh, gw)
        self.n_codes, self.commitment, self.decay = n_codes, commitment, decay
        self.out_shape = (likelihood.n_params, c, h, w)
        self.register_buffer("codebook", torch.randn(n_codes, code_dim))
        self.register_buffer("ema_count", torch.ones(n_codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.code_prior = CodePriorNet(n_codes, prior_hidden, gh * gw)  # ``prior()``

    # ---- quantization ---------------------------------------------------------------------------
    def unflatten(self, z: Tensor) -> Tensor:
        """(N, D) → (N, E, h, w)."""
        return z.view(-1, *self.grid)

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest codebook vectors of z_e (N, E, h, w): (z_q (N, E, h, w), indices (N, h·w))."""
        e, gh, gw = self.grid
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, e)  # (N·h·w, E)
        d = (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ self.codebook.T
            + self.codebook.pow(2).sum(1)
        )
        idx = d.argmin(1)
        z_q = self.codebook[idx].view(-1, gh, gw, e).permute(0, 3, 1, 2)
        return z_q, idx.view(-1, gh * gw)

    def codes_to_z(self, indices: Tensor) -> Tensor:
        """Index grids (N, h·w) → flattened code vectors (N, D)."""
        e, gh, gw = self.grid
        return (
            self.codebook[indices].view(-1, gh, gw, e).permute(0, 3, 1, 2).reshape(len(indices), -1)
        )

    @torch.no_grad()
    def _ema_update(self, z_e: Tensor, indices: Tensor) -> None:
        """EMA step of the codebook towards the batch's assignments; dead codes restart."""
        e = self.grid[0]
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, e)
        if not bool(self.initialized):  # the first batch's encoder outputs
            pick = torch.randint(len(flat), (self.n_codes,), device=flat.device)
            self.codebook.copy_(flat[pick])
            self.ema_sum.copy_(flat[pick])
            self.initialized.fill_(True)
            return
        onehot = F.one_hot(indices.reshape(-1), self.n_codes).to(flat.dtype)  # (M, K)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (n + self.n_codes * 1e-5) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        dead = self.ema_count < 1.0
        if dead.any():
            pick = torch.randint(len(flat), (int(dead.sum()),), device=flat.device)
            self.codebook[dead] = flat[pick]
            self.ema_sum[dead] = flat[pick]
            self.ema_count[dead] = 1.0

    # ---- the VAE interface ----------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None, *, check: bool = True) -> VQPosterior:
        """δ(z − z_q(x)), z of shape (B, D); training mode also steps the EMA codebook."""
        if check:
            self.check(x)
        return self.top_posterior(self.likelihood.encoder_input(x), y)

    def top_posterior(self, inputs: Tensor, y: Tensor | None = None) -> VQPosterior:
        z_e = self.encoder(inputs.view(-1, *self.out_shape[1:]))
        if self.training:
            _, idx = self.quantize(z_e.detach())
            self._ema_update(z_e.detach(), idx)
        z_q, idx = self.quantize(z_e.detach())
        commitment = self.commitment * (z_e - z_q).pow(2).flatten(1).sum(1)  # (B,)
        z_st = z_e + (z_q - z_e).detach()
        prior_nll = -self.code_prior.log_prob(idx)  # (B,), reaches only the prior's weights
        return VQPosterior(z_st.flatten(1), commitment, prior_nll, idx)

    def prior(self) -> CodePrior:
        return CodePrior(self)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x|z) for flattened code grids z ``(*S, B, D)``: batch ``(*S, B)``."""
        lead = z.shape[:-1]
        params = self.decoder(self.unflatten(z.reshape(-1, z.shape[-1])))
        return self.likelihood(params.view(*lead, *self.out_shape))

    @torch.no_grad()
    def sample(self, n, y=None, *, temperature=1.0, mean=False, generator=None) -> Tensor:
        """Index grids from the code prior (logits / ``temperature``), decoded."""
        z = self.codes_to_z(self.code_prior.sample(n, temperature, generator))
        px_z = self.decode(z)
        return px_z.mean if mean else px_z.sample()

    @property
    def top_dim(self) -> int:
        return self.latent_dim

    def fit_prior(
        self,
        x: Tensor,
        *,
        steps: int = 1000,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> list[float]:
        """Train the code prior alone on the codes of ``x`` (encoder and codebook fixed): Adam on
        −log p(k) for ``steps`` batches of ``batch_size`` index grids drawn with ``seed``. Its
        joint training follows codes that move while the VQ-VAE learns; this fits it to the
        final ones. Returns the loss of every step (nats per image)."""
        self.eval()
        with torch.no_grad():
            idx = torch.cat(
                [self.encode(x[i : i + 256].float().to(self.codebook.device), check=False).indices
                 for i in range(0, len(x), 256)]
            )  # fmt: skip
        opt = torch.optim.Adam(self.code_prior.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(steps):
            batch = idx[torch.randint(len(idx), (batch_size,), generator=g)]
            loss = -self.code_prior.log_prob(batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    @torch.no_grad()
    def evaluation_extras(self, x: Tensor, batch_size: int = 100) -> dict:
        """Reconstruction PSNR (dB), the code prior's NLL (nats per image) and bits per code,
        codebook perplexity exp(H(usage)) and codes used, over ``x`` (see the module doc)."""
        self.eval()
        sq, nll, counts = 0.0, 0.0, torch.zeros(self.n_codes, dtype=torch.float64)
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].float().to(self.codebook.device)
            q = self.encode(xb, check=False)
            recon = self.likelihood.display(self.decode(q.mean).mean)
            sq += float((recon - self.likelihood.display(xb)).pow(2).flatten(1).mean(1).sum())
            nll += float(q.prior_nll.sum())
            counts += torch.bincount(q.indices.flatten(), minlength=self.n_codes).double().cpu()
        n, positions = len(x), self.grid[1] * self.grid[2]
        p = counts / counts.sum()
        entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
        mse = sq / n
        return {
            "psnr": 10 * math.log10(1.0 / mse) if mse > 0 else float("inf"),
            "code_nll": nll / n,
            "bits_per_code": nll / n / positions / math.log(2),
            "uniform_bits_per_code": math.log2(self.n_codes),
            "codebook_perplexity": math.exp(entropy),
            "codes_used": int((counts > 0).sum()),
            "code_grid": [self.grid[1], self.grid[2]],
        }


def build_vqvae(cfg: ModelConfig, info: DataInfo) -> VQVAE:
    """``kind: vqvae`` for images: ``channels`` (one stride-2 conv per entry), ``code_dim`` E,
    ``codebook_size`` K, ``commitment`` β, ``codebook_decay`` γ, ``prior_hidden`` (the GRU)."""
    likelihood = likelihood_of(cfg, info)
    if len(likelihood.network_shape) != 3:
        raise ValueError(f"a vqvae models images (C, H, W), got {likelihood.network_shape}")
    if cfg.prior != "normal" or cfg.posterior != "gaussian":
        raise ValueError("a vqvae has its own code prior and posterior: leave prior/posterior")
    return VQVAE(
        likelihood,
        cfg,
        channels=list(cfg.channels),
        code_dim=cfg.code_dim,
        n_codes=cfg.codebook_size,
        commitment=cfg.commitment,
        decay=cfg.codebook_decay,
        prior_hidden=cfg.prior_hidden,
        activation=cfg.activation,
    )
