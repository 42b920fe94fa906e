"""Annealed importance sampling (Neal, 2001) of log p(x) with HMC transitions (Wu et al., 2017).

Intermediate targets f_t(z) = π0(z)^(1−β_t) p(x, z)^β_t with 0 = β_0 < … < β_T = 1 (sigmoid
schedule) and π0 the prior p(z) (independent of the encoder) or the encoder's q(z|x). Each chain
carries log w = Σ_t (β_t − β_{t−1}) [log p(x, z_{t−1}) − log π0(z_{t−1})], then moves z by one HMC
transition leaving f_t invariant.

Unbiasedness: with transitions fixed in advance (``adapt=False``: a constant step size), E[w] =
p(x) exactly, so log (1/C) Σ_c w_c is a stochastic lower bound on log p(x) (Jensen) that becomes
exact as T grows. By default (``adapt=True``, as in Wu et al.) the step size of each example is
multiplied by 1.02 or 0.98 after every transition, towards an acceptance rate of 0.65 averaged
over that example's chains: the transition at step t then depends on the chains' own history, so
the extended-space argument behind E[w] = p(x) no longer holds exactly. Each transition still
leaves f_t invariant, and the bias this adds is small in practice (tested against the exact
log p(x) of a linear-Gaussian model), but the estimate is not exactly unbiased, nor exactly a
lower bound in expectation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ais_log_likelihood", "sigmoid_schedule", "AIS_INITS"]

AIS_INITS = ("prior", "encoder")


def sigmoid_schedule(steps: int, delta: float = 4.0) -> Tensor:
    """β_0 = 0 < … < β_T = 1, dense at both ends: rescaled σ(δ(2t/T − 1)), ``(T + 1,)``."""
    s = torch.sigmoid(delta * (2 * torch.arange(steps + 1, dtype=torch.float64) / steps - 1))
    return (s - s[0]) / (s[-1] - s[0])


def _terms(model, x: Tensor, z: Tensor, pi0) -> tuple[Tensor, ...]:
    """log π0(z), log p(x, z) ``(C, B)`` and their gradients in z ``(C, B, D)``."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_joint = model.decode(z).log_prob(x) + model.prior().log_prob(z)  # (C, B)
        log_pi0 = pi0.log_prob(z)  # (C, B)
        (g_joint,) = torch.autograd.grad(log_joint.sum(), z)
        (g_pi0,) = torch.autograd.grad(log_pi0.sum(), z)
    return log_pi0.detach(), log_joint.detach(), g_pi0, g_joint


def _energy(terms, beta: float) -> tuple[Tensor, Tensor]:
    """U = −log f_β = −(1−β) log π0 − β log p(x, z) ``(C, B)`` and ∂U/∂z ``(C, B, D)``."""
    log_pi0, log_joint, g_pi0, g_joint = terms
    return -((1 - beta) * log_pi0 + beta * log_joint), -((1 - beta) * g_pi0 + beta * g_joint)


def _hmc(model, x, z, terms, pi0, beta: float, eps: Tensor, leapfrog: int):
    """One HMC transition leaving f_β invariant: new z, its terms, acceptance ``(C, B)``."""
    u0, grad = _energy(terms, beta)
    p0 = torch.randn_like(z)
    z1, terms1 = z, terms
    p1 = p0 - 0.5 * eps * grad
    for i in range(leapfrog):
        z1 = z1 + eps * p1
        terms1 = _terms(model, x, z1, pi0)
        u1, grad = _energy(terms1, beta)
        p1 = p1 - (eps if i < leapfrog - 1 else 0.5 * eps) * grad
    log_accept = (u0 + 0.5 * (p0 * p0).sum(-1)) - (u1 + 0.5 * (p1 * p1).sum(-1))
    accept = torch.rand_like(u0).log() < log_accept.nan_to_num(-math.inf)  # (C, B)
    a = accept.unsqueeze(-1)
    new_terms = tuple(
        torch.where(a if t.dim() == z.dim() else accept, t1, t)
        for t, t1 in zip(terms, terms1, strict=True)
    )
    return torch.where(a, z1, z), new_terms, accept


@torch.no_grad()
def ais_log_likelihood(
    model,
    x: Tensor,
    *,
    steps: int = 500,
    chains: int = 16,
    leapfrog: int = 10,
    step_size: float = 0.05,
    init: str = "prior",
    target_accept: float = 0.65,
    adapt: bool = True,
) -> tuple[Tensor, dict]:
    """AIS estimate of log p(x) for a batch ``x`` ``(B, ...)``: ``(B,)`` nats and statistics.

    ``steps`` intermediate distributions T, ``chains`` independent chains per example, ``leapfrog``
    steps per HMC transition. ``adapt``: step sizes follow the acceptance rate (see the module
    doc: then not exactly unbiased); ``adapt=False`` keeps ``step_size`` fixed, E[w] = p(x)
    exactly. Statistics: mean acceptance rate and final mean step size. ``x`` is not checked
    here (``vaekit evaluate`` checks the split once).
    """
    if init not in AIS_INITS:
        raise ValueError(f"AIS init must be one of {AIS_INITS}, got {init!r}")
    if steps < 1 or chains < 1 or leapfrog < 1:
        raise ValueError("AIS needs steps, chains and leapfrog of at least 1")
    pz = model.prior()
    pi0 = pz if init == "prior" else model.encode(x, check=False)
    z = pz.sample((chains, len(x))) if init == "prior" else pi0.sample((chains,))  # (C, B, D)
    betas = sigmoid_schedule(steps).tolist()
    eps = torch.full((1, len(x), 1), step_size, dtype=z.dtype)  # per example
    log_w = torch.zeros(z.shape[:-1], dtype=torch.float64)  # (C, B)
    terms = _terms(model, x, z, pi0)
    accepted = 0.0
    for t in range(1, steps + 1):
        log_pi0, log_joint = terms[0], terms[1]
        log_w += (betas[t] - betas[t - 1]) * (log_joint - log_pi0).double()
        if t == steps:
            break  # the last transition would not change the weights
        z, terms, accept = _hmc(model, x, z, terms, pi0, betas[t], eps, leapfrog)
        rate = accept.to(z.dtype).mean(0).view(1, -1, 1)
        if adapt:
            eps = eps * torch.where(rate > target_accept, 1.02, 0.98)
        accepted += float(accept.double().mean())
    log_px = torch.logsumexp(log_w, 0) - math.log(chains)  # (B,)
    stats = {"accept_rate": accepted / max(steps - 1, 1), "step_size": float(eps.mean())}
    return log_px, stats
