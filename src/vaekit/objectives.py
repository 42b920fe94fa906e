"""Objectives: functions of (model, x), separate from models.

A *bound* (ELBO, IWAE) is maximized, a *loss* is minimized; both are in nats per example. Each
objective returns an ``ObjectiveResult``: ``loss`` is the scalar the optimizer minimizes (which may
be a surrogate, e.g. β-weighted), while ``bound``, ``log_px_z`` and ``kl`` are the true per-example
quantities that are logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .distributions import kl_per_dim

__all__ = ["ObjectiveResult", "elbo", "iwae", "log_weights", "OBJECTIVES", "objective_from_config"]


@dataclass
class ObjectiveResult:
    """What an objective optimizes (``loss``) and what it reports (per example, nats)."""

    loss: Tensor  # scalar, minimized
    bound: Tensor  # (B,) lower bound on log p(x), maximized
    log_px_z: Tensor  # (B,) reconstruction term E_q[log p(x|z)]
    kl: Tensor  # (B,) KL(q(z|x) || p(z)) (for IWAE: the single-sample estimate, for logging)
    kl_per_dim: Tensor  # (B, D)

    def metrics(self) -> dict[str, float]:
        """Batch means as floats: ``bound``, ``recon`` (= log p(x|z)), ``kl``, ``loss``."""
        with torch.no_grad():
            return {
                "loss": float(self.loss),
                "bound": float(self.bound.mean()),
                "recon": float(self.log_px_z.mean()),
                "kl": float(self.kl.mean()),
            }


def elbo(model, x: Tensor, *, beta: float = 1.0, n_samples: int = 1) -> ObjectiveResult:
    """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) || p(z)), estimated with ``n_samples`` draws of z.

    The loss is −mean_B(E_q[log p(x|z)] − β·KL); the reported bound always uses β = 1.
    KL is analytic when torch registers it for (q, p), else Monte-Carlo on the same draws.
    """
    qz_x = model.encode(x, check=False)
    z = qz_x.rsample((n_samples,))  # (S, B, D)
    log_px_z = model.decode(z).log_prob(x).mean(0)  # (B,)
    kl_d = kl_per_dim(qz_x, model.prior(), z)  # (B, D)
    kl = kl_d.sum(-1)
    loss = -(log_px_z - beta * kl).mean()
    return ObjectiveResult(loss, log_px_z - kl, log_px_z, kl, kl_d)


def log_weights(model, x: Tensor, qz_x, k: int) -> tuple[Tensor, Tensor]:
    """Importance log-weights log p(x|z) + log p(z) − log q(z|x) for k draws z ~ q(z|x).

    Returns ``(log_w, log_px_z)``, each ``(K, B)``, nats.
    """
    z = qz_x.rsample((k,))  # (K, B, D)
    log_px_z = model.decode(z).log_prob(x)  # (K, B)
    log_w = log_px_z + model.prior().log_prob(z) - qz_x.log_prob(z)
    return log_w, log_px_z


def iwae(model, x: Tensor, *, k: int = 5, beta: float = 1.0) -> ObjectiveResult:
    """IWAE bound L_K = E[log (1/K) Σ_k p(x, z_k) / q(z_k|x)] ≥ ELBO (Burda et al., 2015).

    Trained with the plain pathwise gradient of L_K. ``beta`` must be 1 (no β-IWAE).
    """
    if beta != 1.0:
        raise ValueError("the IWAE objective has no β weight; use objective elbo for β-VAE")
    qz_x = model.encode(x, check=False)
    log_w, log_px_z = log_weights(model, x, qz_x, k)
    bound = torch.logsumexp(log_w, 0) - math.log(k)  # (B,)
    kl_d = kl_per_dim(qz_x, model.prior())
    return ObjectiveResult(-bound.mean(), bound, log_px_z.mean(0), kl_d.sum(-1), kl_d)


OBJECTIVES = {"elbo": elbo, "iwae": iwae}


def objective_from_config(cfg):
    """A function ``f(model, x) -> ObjectiveResult`` from an ``ObjectiveConfig``."""
    try:
        fn = OBJECTIVES[cfg.name]
    except KeyError:
        raise ValueError(
            f"unknown objective {cfg.name!r}; choose from {sorted(OBJECTIVES)}"
        ) from None
    if fn is iwae:
        return lambda model, x: iwae(model, x, k=cfg.n_samples, beta=cfg.beta)
    return lambda model, x: elbo(model, x, beta=cfg.beta, n_samples=cfg.n_samples)
