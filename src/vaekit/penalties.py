"""Objective terms for disentangling VAEs, as pure functions of tensors.

Every function takes the encoder's outputs (posterior means ``loc`` and scales ``scale`` of
q(z|x) = N(loc, diag scale²)) and/or samples ``z``, and returns a scalar tensor for the batch that
is differentiable w.r.t. its inputs. Units are nats unless a docstring says otherwise; the prior
is p(z) = N(0, I). Shapes: ``B`` examples, ``D`` latent dimensions; a single sample per example,
``(B, D)`` (for S samples, call once per sample and average).

- β-TCVAE (Chen et al. 2018): ``tc_decomposition`` splits E_q[log q(z|x) − log p(z)] into index-code
  mutual information + total correlation + dimension-wise KL, estimated on the minibatch.
- InfoVAE / WAE: ``mmd`` between samples of q(z) and p(z).
- DIP-VAE I / II (Kumar et al. 2018): ``dip_penalty`` on the covariance of the encoder means or
  of the aggregate posterior.
- FactorVAE (Kim & Mnih 2018): ``permute_dims``, ``Discriminator``, ``factor_tc_estimate``,
  ``discriminator_loss``.

``PENALTIES`` registers each variant as a term of the training loss (``objective.penalty``); the
configured ``objectives.Objective`` adds it to the (β-)ELBO loss, the reported bound stays the ELBO.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Registry

__all__ = [
    "TCDecomposition",
    "gaussian_log_density_matrix",
    "mss_log_weights",
    "tc_decomposition",
    "mmd",
    "dip_covariance",
    "dip_penalty",
    "permute_dims",
    "Discriminator",
    "factor_tc_estimate",
    "discriminator_loss",
    "PenaltyBatch",
    "Penalty",
    "PENALTIES",
]

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# β-TCVAE: minibatch estimates of the KL decomposition
# --------------------------------------------------------------------------------------------


class TCDecomposition(NamedTuple):
    """Batch means (nats, scalars) of the three terms of E_q[log q(z|x) − log p(z)]:

    ``mi``     = E[log q(z|x) − log q(z)]            index-code mutual information
    ``tc``     = E[log q(z) − Σ_d log q(z_d)]        total correlation
    ``dim_kl`` = E[Σ_d log q(z_d) − Σ_d log p(z_d)]  dimension-wise KL
    They telescope: mi + tc + dim_kl = E[log q(z|x) − log p(z)] on the same samples, exactly.
    """

    mi: Tensor
    tc: Tensor
    dim_kl: Tensor


def gaussian_log_density_matrix(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """M[i, j, d] = log N(z_id; loc_jd, scale_jd²), nats: each sample under every posterior.

    z, loc, scale: (B, D) → (B, B, D); row i is the sample, column j the conditioning example.
    """
    diff = (z.unsqueeze(1) - loc.unsqueeze(0)) / scale.unsqueeze(0)  # (B, B, D)
    return -0.5 * (diff.pow(2) + _LOG_2PI) - scale.log().unsqueeze(0)


def mss_log_weights(batch_size: int, dataset_size: int, *, dtype=torch.float32, device=None):
    """log W (B, B) of minibatch stratified sampling: q(z_i) ≈ Σ_j W_ij q(z_i|x_j).

    With M = B − 1 and N = ``dataset_size``: W_ii = 1/N (z_i's own example), W_i,i+1 (cyclic)
    = (N − M)/(N M) (the stratum element), every other W_ij = 1/M. Each row sums to 1, so the
    estimate of q(z_i) is unbiased. This is the weighting of Chen et al.'s Appendix C.1; their
    reference code (and Pythae, which copies it) strides by B instead of B + 1, so it fills
    columns 0 and 1 instead of the diagonal and gives z_i's own posterior 1/M, like the others
    (rtqichen/beta-tcvae pull request #1): a biased q(z) whose gradient is nearly MWS's.
    """
    n, m = dataset_size, batch_size - 1
    if batch_size < 2 or n < batch_size:
        raise ValueError(f"need 2 <= batch_size <= dataset_size, got {batch_size}, {n}")
    w = torch.full((batch_size, batch_size), 1.0 / m, dtype=torch.float64, device=device)
    idx = torch.arange(batch_size, device=device)
    w[idx, (idx + 1) % batch_size] = (n - m) / (n * m)
    w[idx, idx] = 1.0 / n
    return w.log().to(dtype)


def tc_decomposition(
    z: Tensor,
    qz_x_loc: Tensor,
    qz_x_scale: Tensor,
    dataset_size: int,
    estimator: str = "mws",
) -> TCDecomposition:
    """β-TCVAE decomposition of the KL term, estimated on one minibatch (Chen et al. 2018).

    z (B, D): one sample of q(z|x_i) per example; qz_x_loc, qz_x_scale (B, D): its posterior.
    log q(z_i) and log q(z_id) are estimated from the batch's posteriors:
      ``"mws"`` (minibatch weighted sampling): log q(z_i) ≈ logsumexp_j log q(z_i|x_j) − log(N B).
          A lower bound by construction: each log-density is biased low, by log N when the
          posteriors coincide and by log B when they do not overlap. The reference code's
          default; with overlapping posteriors the bias is constant, (D − 1) log N on ``tc``,
          log N on ``mi``, but in general it depends on the posteriors, and so does its
          gradient: a sample's own posterior weighs 1/(N B) like every other, not 1/N.
      ``"mss"`` (minibatch stratified sampling):
          log q(z_i) ≈ logsumexp_j (log W_ij + log q(z_i|x_j)) with ``mss_log_weights``; each
          q estimate is unbiased (a consistent ``tc``).
    Returns batch means in nats (``TCDecomposition``); the β-TCVAE loss is
    −E log p(x|z) + α·mi + β·tc + γ·dim_kl.
    """
    if z.ndim != 2 or qz_x_loc.shape != z.shape or qz_x_scale.shape != z.shape:
        raise ValueError(
            f"need z, loc and scale of one shape (B, D), got {tuple(z.shape)}, "
            f"{tuple(qz_x_loc.shape)}, {tuple(qz_x_scale.shape)}"
        )
    batch_size = z.shape[0]
    mat = gaussian_log_density_matrix(z, qz_x_loc, qz_x_scale)  # (B, B, D)
    log_qz_x = mat.diagonal(dim1=0, dim2=1).sum(0)  # (B,) log q(z_i|x_i)
    log_pz = (-0.5 * (z.pow(2) + _LOG_2PI)).sum(-1)  # (B,)
    if estimator == "mws":
        log_norm = math.log(batch_size * dataset_size)
        log_qz = torch.logsumexp(mat.sum(-1), dim=1) - log_norm  # (B,)
        log_qz_prod = (torch.logsumexp(mat, dim=1) - log_norm).sum(-1)  # (B,)
    elif estimator == "mss":
        log_w = mss_log_weights(batch_size, dataset_size, dtype=z.dtype, device=z.device)
        log_qz = torch.logsumexp(log_w + mat.sum(-1), dim=1)
        log_qz_prod = torch.logsumexp(log_w.unsqueeze(-1) + mat, dim=1).sum(-1)
    else:
        raise ValueError(f"estimator must be 'mws' or 'mss', got {estimator!r}")
    return TCDecomposition(
        mi=(log_qz_x - log_qz).mean(),
        tc=(log_qz - log_qz_prod).mean(),
        dim_kl=(log_qz_prod - log_pz).mean(),
    )


# --------------------------------------------------------------------------------------------
# MMD (InfoVAE, WAE)
# --------------------------------------------------------------------------------------------


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """‖a_i − b_j‖², (N, D) × (M, D) → (N, M)."""
    d = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1) - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def _kernel(sq: Tensor, kernel: str, scales: Sequence[float]) -> Tensor:
    """Σ over ℓ² in ``scales`` of RBF exp(−r²/(2ℓ²)) or IMQ C/(C + r²) with C = 2ℓ²."""
    if kernel == "rbf":
        return sum(torch.exp(-sq / (2.0 * s)) for s in scales)
    if kernel == "imq":
        return sum((2.0 * s) / (2.0 * s + sq) for s in scales)
    raise ValueError(f"kernel must be 'rbf' or 'imq', got {kernel!r}")


def _off_diagonal_mean(k: Tensor) -> Tensor:
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd(
    x: Tensor,
    y: Tensor,
    kernel: str = "rbf",
    scale: float | Sequence[float] | None = None,
) -> Tensor:
    """Unbiased U-statistic estimate of MMD²(P, Q) from x ~ P (N, D) and y ~ Q (M, D), N, M ≥ 2:

        1/(N(N−1)) Σ_{i≠j} k(x_i, x_j) + 1/(M(M−1)) Σ_{i≠j} k(y_i, y_j) − 2/(NM) Σ_{i,j} k(x_i, y_j)

    Kernels of r = ‖a − b‖ with squared length ℓ² = ``scale`` (default D, so that 2ℓ² = E r² for
    two draws of N(0, I)): ``"rbf"`` exp(−r²/(2ℓ²)); ``"imq"`` C/(C + r²), C = 2ℓ² (WAE's 2Dσ²).
    A sequence of scales sums the kernels (multi-scale). Returns a scalar per batch, in squared
    kernel units (not nats); it is 0 in expectation when P = Q and may then be slightly negative.
    For InfoVAE/WAE: x = samples of q(z) (the batch's z), y = draws of p(z).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd needs (N, D) and (M, D) inputs, got {tuple(x.shape)}, {y.shape}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("mmd's unbiased estimate needs at least 2 samples on each side")
    if scale is None:
        scale = float(x.shape[1])
    scales = [float(scale)] if isinstance(scale, int | float) else [float(s) for s in scale]
    kxx = _kernel(_sq_dists(x, x), kernel, scales)
    kyy = _kernel(_sq_dists(y, y), kernel, scales)
    kxy = _kernel(_sq_dists(x, y), kernel, scales)
    return _off_diagonal_mean(kxx) + _off_diagonal_mean(kyy) - 2.0 * kxy.mean()


# --------------------------------------------------------------------------------------------
# DIP-VAE
# --------------------------------------------------------------------------------------------


def dip_covariance(loc: Tensor, scale: Tensor | None = None, kind: str = "ii") -> Tensor:
    """(D, D) covariance matched to the identity by DIP-VAE, batch estimates (1/B normalisation):

    ``"i"``:  Cov[μ] = E[μ μᵀ] − E[μ] E[μ]ᵀ                 (encoder means; ``scale`` unused)
    ``"ii"``: Cov_q[z] = E[diag σ²] + Cov[μ]                 (aggregate posterior)
    loc, scale: (B, D).
    """
    centred = loc - loc.mean(0, keepdim=True)
    cov = centred.T @ centred / loc.shape[0]
    if kind == "i":
        return cov
    if kind == "ii":
        if scale is None:
            raise ValueError("DIP-VAE-II needs the posterior scales")
        return cov + torch.diag(scale.pow(2).mean(0))
    raise ValueError(f"kind must be 'i' or 'ii', got {kind!r}")


def dip_penalty(
    loc: Tensor,
    scale: Tensor | None = None,
    kind: str = "ii",
    lambda_od: float = 1.0,
    lambda_d: float | None = None,
) -> Tensor:
    """DIP-VAE penalty λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)², C = ``dip_covariance``.

    A scalar per batch (squared covariance units), added to the negative ELBO. ``lambda_d``
    defaults to the paper's choice: 10·λ_od for DIP-VAE-I, λ_od for DIP-VAE-II.
    """
    cov = dip_covariance(loc, scale, kind)
    if lambda_d is None:
        lambda_d = 10.0 * lambda_od if kind == "i" else lambda_od
    diag = cov.diagonal()
    off = cov.pow(2).sum() - diag.pow(2).sum()
    return lambda_od * off + lambda_d * (diag - 1.0).pow(2).sum()


# --------------------------------------------------------------------------------------------
# FactorVAE
# --------------------------------------------------------------------------------------------


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Samples of Π_d q(z_d) from samples of q(z): each column of z (B, D) permuted across the
    batch independently (Kim & Mnih 2018, Alg. 1). Returns (B, D); gradients flow to z (detach
    it for the discriminator step)."""
    b, d = z.shape
    perm = torch.rand(b, d, generator=generator, device=z.device).argsort(dim=0)
    return z.gather(0, perm)


class Discriminator(nn.Module):
    """MLP D → 2 logits for FactorVAE's density-ratio trick: class 0 = "z ~ q(z)", class 1 =
    "z ~ Π_d q(z_d)" (``permute_dims``). LeakyReLU(0.2) hidden layers; the paper uses six of width
    1000 (the default)."""

    def __init__(
        self, latent_dim: int, hidden: Sequence[int] = (1000,) * 6, negative_slope: float = 0.2
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope)]
            width = h
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """z (B, D) → logits (B, 2)."""
        return self.net(z)


def factor_tc_estimate(logits: Tensor) -> Tensor:
    """TC ≈ E_q[log D(z)/(1 − D(z))] = mean(logit_0 − logit_1), nats, per batch; logits (B, 2)
    from ``Discriminator`` on samples of q(z). Exact when the discriminator is Bayes-optimal
    (logit_0 − logit_1 = log q(z) − log Π_d q(z_d))."""
    return (logits[:, 0] - logits[:, 1]).mean()


def discriminator_loss(logits_q: Tensor, logits_perm: Tensor) -> Tensor:
    """Cross-entropy of the FactorVAE discriminator, per batch: labels 0 for ``logits_q`` (on z ~
    q(z)) and 1 for ``logits_perm`` (on ``permute_dims(z)``), averaged over both halves."""
    zeros = torch.zeros(len(logits_q), dtype=torch.long, device=logits_q.device)
    ones = torch.ones(len(logits_perm), dtype=torch.long, device=logits_perm.device)
    return 0.5 * (F.cross_entropy(logits_q, zeros) + F.cross_entropy(logits_perm, ones))


# --------------------------------------------------------------------------------------------
# The variants: each penalty as a term of the training loss (``objective.penalty``)
# --------------------------------------------------------------------------------------------


class PenaltyBatch(NamedTuple):
    """What a penalty reads from one training step: ``z`` (B, D), one draw of q(z|x) per
    example; ``loc``/``scale`` (B, D) of a diagonal-Gaussian q(z|x) (None for other posteriors);
    ``prior_z`` (B, D) draws of p(z) (MMD only, else None); ``dataset_size`` N of the training
    split; ``discriminator`` (FactorVAE only)."""

    z: Tensor
    loc: Tensor | None
    scale: Tensor | None
    prior_z: Tensor | None
    dataset_size: int | None
    discriminator: nn.Module | None


@dataclass(frozen=True)
class Penalty:
    """A registered variant: ``term(batch, cfg, beta) -> (scalar loss term, logged terms)``.

    ``replaces_kl``: the term replaces β·KL in the loss (β-TCVAE's decomposition) instead of
    being added to it; ``gaussian``: it needs a diagonal-Gaussian posterior's loc and scale;
    ``prior_samples``: it compares q(z) with draws of p(z)."""

    term: Callable[[PenaltyBatch, object, float], tuple[Tensor, dict[str, Tensor]]]
    replaces_kl: bool = False
    gaussian: bool = False
    prior_samples: bool = False


def _no_penalty(batch: PenaltyBatch, cfg, beta: float):
    return batch.z.new_zeros(()), {}


def _tc_term(batch: PenaltyBatch, cfg, beta: float):
    """β-TCVAE: α·MI + β·TC + γ·dim-KL (replaces β·KL), minibatch estimates."""
    if batch.dataset_size is None:
        raise ValueError("penalty tc needs the training-set size (objective_from_config(...))")
    parts = tc_decomposition(batch.z, batch.loc, batch.scale, batch.dataset_size, cfg.tc_estimator)
    term = cfg.tc_alpha * parts.mi + beta * parts.tc + cfg.tc_gamma * parts.dim_kl
    return term, {"mi": parts.mi, "tc": parts.tc, "dim_kl": parts.dim_kl}


def _dip_term(kind: str):
    def term(batch: PenaltyBatch, cfg, beta: float):
        """DIP-VAE: λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)² added to −ELBO_β."""
        pen = dip_penalty(batch.loc, batch.scale, kind, cfg.dip_lambda_od, cfg.dip_lambda_d)
        return pen, {"dip": pen}

    return term


def _mmd_term(batch: PenaltyBatch, cfg, beta: float):
    """InfoVAE / WAE: λ·MMD²(q(z), p(z)) added to −(E log p(x|z) − β·KL)."""
    value = mmd(batch.z, batch.prior_z, cfg.mmd_kernel, cfg.mmd_scale)
    return cfg.mmd_lambda * value, {"mmd": value}


def _factor_term(batch: PenaltyBatch, cfg, beta: float):
    """FactorVAE: γ·TC with TC ≈ mean(D(z)_0 − D(z)_1) added to −ELBO_β."""
    tc = factor_tc_estimate(batch.discriminator(batch.z))
    return cfg.factor_gamma * tc, {"tc": tc}


PENALTIES: Registry[Penalty] = Registry("penalty")
PENALTIES.register("none", Penalty(_no_penalty), "the plain (β-)ELBO")
PENALTIES.register(
    "tc",
    Penalty(_tc_term, replaces_kl=True, gaussian=True),
    "β-TCVAE: α·MI + β·TC + γ·dim-KL (tc_alpha, beta, tc_gamma, tc_estimator)",
)
PENALTIES.register(
    "dip-i",
    Penalty(_dip_term("i"), gaussian=True),
    "DIP-VAE-I: covariance of the encoder means → I (dip_lambda_od, dip_lambda_d)",
)
PENALTIES.register(
    "dip-ii",
    Penalty(_dip_term("ii"), gaussian=True),
    "DIP-VAE-II: covariance of q(z) → I (dip_lambda_od, dip_lambda_d)",
)
PENALTIES.register(
    "mmd",
    Penalty(_mmd_term, prior_samples=True),
    "InfoVAE / WAE: λ·MMD(q(z), p(z)) (mmd_lambda, mmd_kernel, mmd_scale; beta on KL)",
)
PENALTIES.register(
    "factor",
    Penalty(_factor_term),
    "FactorVAE: γ·TC from a discriminator with its own Adam (factor_gamma, factor_hidden)",
)
