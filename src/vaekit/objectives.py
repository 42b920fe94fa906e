"""Objectives: functions of (model, x), separate from models.

A *bound* (ELBO, IWAE) is maximized, a *loss* is minimized; both are in nats per example. Each
objective returns an ``ObjectiveResult``: ``loss`` is the scalar the optimizer minimizes (its value
is the β-weighted / free-bits loss, its gradient is the chosen estimator's), while ``bound``,
``log_px_z`` and ``kl`` are the true per-example quantities that are logged — never a surrogate.

Options of the training objective (``ObjectiveConfig``, built by ``objective_from_config``):
β-ELBO, KL warm-up of β (linear, cyclical), free bits, IWAE with K samples, and the gradient
estimator of the encoder's parameters (``estimators``: reparam, score, stl, dreg).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .distributions import KLTerms, kl_terms
from .estimators import (
    BASELINES,
    Baseline,
    detached_posterior,
    score_term,
    square_importance_weights,
    with_gradient_of,
)
from .registry import Registry

__all__ = [
    "ObjectiveResult",
    "elbo",
    "iwae",
    "log_weights",
    "kl_weight",
    "kl_balanced",
    "kl_balance_coefficients",
    "group_kl",
    "Objective",
    "OBJECTIVES",
    "ESTIMATORS",
    "WARMUPS",
    "objective_from_config",
]


@dataclass
class ObjectiveResult:
    """What an objective optimizes (``loss``) and what it reports (per example, nats)."""

    loss: Tensor  # scalar, minimized
    bound: Tensor  # (B,) lower bound on log p(x), maximized
    log_px_z: Tensor  # (B,) reconstruction term E_q[log p(x|z)]
    kl: Tensor  # (B,) KL(q(z|x) || p(z)) (for IWAE: the single-sample estimate, for logging)
    kl_per_dim: Tensor  # (B, D); for a mixture prior the marginal KLs (see distributions.kl_terms)
    kl_per_group: Tensor | None = None  # (B, G) KL of each latent layer (layered models)

    def metrics(self, loss: float | None = None) -> dict[str, float]:
        """Batch means as floats: ``bound``, ``recon`` (= log p(x|z)), ``kl``, ``loss`` (pass
        ``float(self.loss)`` when the caller already has it: one conversion per training step)."""
        with torch.no_grad():
            bound, recon, kl = torch.stack((self.bound, self.log_px_z, self.kl)).mean(1).tolist()
        loss = float(self.loss.detach()) if loss is None else loss
        return {"loss": loss, "bound": bound, "recon": recon, "kl": kl}


def elbo(
    model,
    x: Tensor,
    y: Tensor | None = None,
    *,
    beta: float = 1.0,
    n_samples: int = 1,
    free_bits: float = 0.0,
    estimator: str = "reparam",
    baseline: Baseline | None = None,
    qz_x=None,
    free_bits_groups: list[int] | None = None,
    check: bool = True,
) -> ObjectiveResult:
    """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) || p(z)), estimated with ``n_samples`` draws of z.

    loss = −mean_B E_q[log p(x|z)] + β·Σ_d max(λ, mean_B KL_d) with λ = ``free_bits`` nats per
    latent dimension (Kingma et al., 2016); the reported bound always uses β = 1 and no floor.
    KL is analytic when torch registers it for (q, p), else Monte-Carlo on the same draws.
    ``estimator``: ``reparam`` (pathwise), ``score`` (REINFORCE on E_q[log p(x|z)] with the
    optional ``baseline``; the analytic KL keeps its exact gradient) or ``stl`` (pathwise on the
    single-sample ELBO log p(x,z) − log q(z|x) with q's parameters held fixed; no free bits).
    ``y`` conditions a conditional model (labels ``(B,)``); ``qz_x`` replaces the encoder's
    posterior (per-example inference, ``inference.refine``).
    ``free_bits_groups`` (sizes of consecutive groups of latent dimensions, e.g. the layers of a
    hierarchical model) puts the floor on each group's KL instead: β·Σ_g max(λ, mean_B KL_g).
    ``check`` validates ``x`` (shape, finiteness, support; one pass) — off where the caller
    already did, as the training loop and ``evaluate``.
    With a prior without a closed-form KL (the VampPrior) the KL is the Monte-Carlo estimate and
    ``kl_per_dim`` are marginal KLs that do not add up to it, so per-dimension free bits are
    refused there (``ValueError``); ``free_bits_groups`` floors the groups' true KLs.
    """
    if check:
        model.check(x)
    qz_x = model.encode(x, y, check=False) if qz_x is None else qz_x
    pz = model.prior()
    draw = qz_x.sample if estimator == "score" else qz_x.rsample  # score: no gradient through z
    z = draw((n_samples,))  # (S, B, D)
    log_px_z_s = model.decode(z, y).log_prob(x)  # (S, B)
    log_px_z = log_px_z_s.mean(0)  # (B,)
    # A Monte-Carlo KL (no analytic form) needs reparameterized draws: its own for score.
    kl_t = kl_terms(qz_x, pz, None if estimator == "score" else z)
    kl, kl_d = kl_t.total, kl_t.per_dim  # (B,), (B, D)
    bound = log_px_z - kl
    kl_term = kl if free_bits <= 0 else _floored_kl(kl_t, free_bits, free_bits_groups)
    loss = -(log_px_z - beta * kl_term).mean()
    if estimator == "score":
        signal = log_px_z_s.detach()  # (S, B)
        b = 0.0
        extra = loss.new_zeros(())
        if baseline is not None:
            x_flat = model.likelihood.encoder_input(x).flatten(1)
            b = baseline(x_flat)  # (B,)
            extra = baseline.loss(signal, b)
            baseline.update(signal)
        surrogate = loss - score_term(signal, qz_x.log_prob(z), b).mean(0).mean()
        loss = with_gradient_of(loss, surrogate + extra)
    elif estimator == "stl":
        if free_bits > 0:
            raise ValueError("free bits need the analytic KL; use estimator reparam or score")
        log_r = pz.log_prob(z) - detached_posterior(qz_x).log_prob(z)  # (S, B)
        loss = with_gradient_of(loss, -(log_px_z_s + beta * log_r).mean())
    elif estimator != "reparam":
        raise ValueError(f"elbo takes estimator reparam, score or stl, not {estimator!r}")
    return ObjectiveResult(loss, bound, log_px_z, kl, kl_d, _layer_kl(model, kl_t))


def _floored_kl(kl: KLTerms, free_bits: float, groups: list[int] | None) -> Tensor:
    """Σ max(λ, mean_B KL) over latent dimensions, or over groups of them (sizes ``groups``)."""
    if groups:
        return group_kl(kl, groups).mean(0).clamp_min(free_bits).sum()
    if not kl.additive:
        raise ValueError(
            "per-dimension free bits need a KL that splits over latent dimensions; this prior "
            "(e.g. the VampPrior) has none: use objective.free_bits_per=group or the normal prior"
        )
    return kl.per_dim.mean(0).clamp_min(free_bits).sum()


def group_kl(kl: KLTerms, groups: list[int]) -> Tensor:
    """KL of consecutive groups of latent dimensions (sizes ``groups``) ``(B, G)``, nats: the
    total for one group, the posterior's own per-layer KLs, or sums of exact per-dim terms."""
    if len(groups) == 1:
        return kl.total.unsqueeze(-1)
    if kl.per_group is not None and kl.per_group.shape[-1] == len(groups):
        return kl.per_group
    if not kl.additive:
        raise ValueError("this KL has no exact per-group decomposition (a mixture prior)")
    return torch.stack([g.sum(-1) for g in kl.per_dim.split(list(groups), -1)], -1)


def _layer_kl(model, kl: KLTerms) -> Tensor | None:
    """The per-layer KL ``(B, G)`` of a model with latent layers, else None."""
    groups = getattr(model, "latent_groups", None)
    return group_kl(kl, groups) if groups else None


def log_weights(model, x: Tensor, qz_x, k: int, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Importance log-weights log p(x|z) + log p(z) − log q(z|x) for k draws z ~ q(z|x).

    Returns ``(log_w, log_px_z)``, each ``(K, B)``, nats.
    """
    z = qz_x.rsample((k,))  # (K, B, D)
    return _log_weights_at(model, x, z, qz_x, y)


def _log_weights_at(model, x: Tensor, z: Tensor, qz_x, y=None) -> tuple[Tensor, Tensor]:
    log_px_z = model.decode(z, y).log_prob(x)  # (K, B)
    log_w = log_px_z + model.prior().log_prob(z) - qz_x.log_prob(z)
    return log_w, log_px_z


def iwae(
    model,
    x: Tensor,
    y: Tensor | None = None,
    *,
    k: int = 5,
    beta: float = 1.0,
    estimator: str = "reparam",
    check: bool = True,
) -> ObjectiveResult:
    """IWAE bound L_K = E[log (1/K) Σ_k w_k], w_k = p(x, z_k)/q(z_k|x) ≥ ELBO (Burda et al., 2015).

    ``estimator``: ``reparam`` (plain pathwise gradient of L_K), ``stl`` (q's parameters held fixed
    in log w; unbiased for K = 1, biased for K > 1) or ``dreg`` (doubly reparameterized, unbiased).
    The bound's value is the same for all three. ``beta`` must be 1 (no β-IWAE).
    """
    if beta != 1.0:
        raise ValueError("the IWAE objective has no β weight; use objective elbo for β-VAE")
    if estimator not in ("reparam", "stl", "dreg"):
        raise ValueError(f"iwae takes estimator reparam, stl or dreg, not {estimator!r}")
    if check:
        model.check(x)
    qz_x = model.encode(x, y, check=False)
    z = qz_x.rsample((k,))  # (K, B, D)
    q_for_weights = qz_x if estimator == "reparam" else detached_posterior(qz_x)
    log_w, log_px_z = _log_weights_at(model, x, z, q_for_weights, y)  # (K, B)
    if estimator == "dreg":
        square_importance_weights(z, log_w)
    bound = torch.logsumexp(log_w, 0) - math.log(k)  # (B,)
    kl_t = kl_terms(qz_x, model.prior())
    return ObjectiveResult(
        -bound.mean(), bound, log_px_z.mean(0), kl_t.total, kl_t.per_dim, _layer_kl(model, kl_t)
    )


def kl_balance_coefficients(kl_groups: Tensor, alpha: Tensor) -> Tensor:
    """NVAE's KL-balancing coefficients, detached: ``kl_groups`` ``(B, G)`` per-example KL of
    each group (nats), ``alpha`` ``(G,)`` → γ ``(G,)`` with mean 1,

        γ_g = G · (k_g / α_g) / Σ_h (k_h / α_h),   k_g = mean_B |KL_g| + 0.01,

    so a group holding more KL than its share α gets a larger weight (its KL is pushed down) and
    a nearly collapsed group a smaller one."""
    k = kl_groups.detach().abs().mean(0) + 0.01
    r = k / alpha.to(k)
    return r / r.mean()


def kl_balanced(res: ObjectiveResult, model, beta: float) -> ObjectiveResult:
    """NVAE's KL balancing of latent groups during warm-up: while β < 1 the loss weights each
    group's KL by γ (``kl_balance_coefficients`` with ``model.kl_balance_alpha``),

        loss = −mean_B [E_q log p(x|z) − β Σ_g γ_g KL_g],

    and from β = 1 on it is the plain loss. ``bound``, ``log_px_z``, ``kl`` stay the true values."""
    if beta >= 1.0:
        return res
    kl_groups = res.kl.unsqueeze(-1) if res.kl_per_group is None else res.kl_per_group  # (B, G)
    gamma = kl_balance_coefficients(kl_groups, model.kl_balance_alpha)  # (G,)
    loss = -(res.log_px_z - beta * (kl_groups * gamma).sum(-1)).mean()
    return dataclasses.replace(res, loss=loss)


def kl_weight(step: int | None, cfg) -> float:
    """β at optimizer step ``step`` under KL warm-up (``None``: after warm-up).

    ``linear``: β·min(1, t/T); ``cyclical`` (Fu et al., 2019): β·min(1, (t mod T)/(R·T)) with T =
    ``warmup_steps`` per cycle and R = ``warmup_ratio``; ``none``: β.
    """
    if cfg.warmup == "none" or step is None:
        return cfg.beta
    t = step if cfg.warmup == "linear" else step % cfg.warmup_steps
    ramp = cfg.warmup_steps if cfg.warmup == "linear" else cfg.warmup_ratio * cfg.warmup_steps
    return cfg.beta * min(1.0, t / ramp)


OBJECTIVES = Registry("objective")
OBJECTIVES.register("elbo", elbo, "evidence lower bound (β, warm-up, free bits)")
OBJECTIVES.register("iwae", iwae, "importance-weighted bound with K samples")
ESTIMATORS = ("reparam", "score", "stl", "dreg")  # encoder-gradient estimators (``estimators``)
_ESTIMATORS_OF = {"elbo": ("reparam", "score", "stl"), "iwae": ("reparam", "stl", "dreg")}
WARMUPS = ("none", "linear", "cyclical")


class Objective(nn.Module):
    """A configured objective ``f(model, x, step=None) -> ObjectiveResult``.

    A module so that what an objective learns or tracks (the score-function baseline) is
    optimized and checkpointed by the trainer through ``parameters()`` and ``state_dict()``.
    """

    def __init__(self, cfg, n_inputs: int | None = None):
        super().__init__()
        _validate(cfg)
        self.cfg = cfg
        self.baseline = None
        if cfg.estimator == "score" and cfg.baseline != "none":
            if cfg.baseline == "learned" and n_inputs is None:
                raise ValueError("a learned baseline needs objective_from_config(cfg, model)")
            self.baseline = Baseline(n_inputs if cfg.baseline == "learned" else None)

    def kl_weight(self, step: int | None) -> float:
        return kl_weight(step, self.cfg)

    def forward(
        self, model, x: Tensor, y: Tensor | None = None, step: int | None = None
    ) -> ObjectiveResult:
        c = self.cfg
        if c.name == "iwae":
            return iwae(model, x, y, k=c.n_samples, estimator=c.estimator, check=False)
        beta = self.kl_weight(step)
        res = elbo(
            model,
            x,
            y,
            beta=beta,
            n_samples=c.n_samples,
            free_bits=c.free_bits,
            estimator=c.estimator,
            baseline=self.baseline,
            free_bits_groups=_groups(model) if c.free_bits_per == "group" else None,
            check=False,  # the run setup checked the data; batches are prepared in the support
        )
        return kl_balanced(res, model, beta) if c.kl_balance else res


def _groups(model) -> list[int]:
    """Free-bits groups of ``free_bits_per: group``: a hierarchical model's layers, else all z."""
    return model.latent_groups or [model.latent_dim]


def _validate(cfg) -> None:
    """Clear errors for an unknown or inconsistent ``ObjectiveConfig``."""
    OBJECTIVES.get(cfg.name)  # a clear error for an unknown name
    if cfg.estimator not in _ESTIMATORS_OF[cfg.name]:
        raise ValueError(
            f"objective {cfg.name} takes estimator {' | '.join(_ESTIMATORS_OF[cfg.name])}, "
            f"not {cfg.estimator!r}"
        )
    if cfg.baseline not in BASELINES:
        raise ValueError(f"unknown baseline {cfg.baseline!r}; choose from {list(BASELINES)}")
    if cfg.warmup not in WARMUPS:
        raise ValueError(f"unknown warmup {cfg.warmup!r}; choose from {list(WARMUPS)}")
    if cfg.warmup != "none" and not cfg.warmup_steps > 0:
        raise ValueError(f"warmup {cfg.warmup} needs objective.warmup_steps > 0")
    if not 0.0 < cfg.warmup_ratio <= 1.0:
        raise ValueError(f"objective.warmup_ratio must be in (0, 1], got {cfg.warmup_ratio}")
    if int(cfg.n_samples) < 1:
        raise ValueError(f"objective.n_samples must be at least 1, got {cfg.n_samples}")
    if cfg.free_bits_per not in ("dim", "group"):
        raise ValueError(f"objective.free_bits_per must be dim or group, not {cfg.free_bits_per!r}")
    if cfg.beta < 0 or cfg.free_bits < 0:
        raise ValueError("objective.beta and objective.free_bits must be non-negative")
    if cfg.kl_balance and (cfg.free_bits > 0 or cfg.estimator != "reparam"):
        raise ValueError("objective.kl_balance works with the reparam estimator and no free bits")
    if cfg.name == "iwae" and (cfg.beta != 1.0 or cfg.warmup != "none" or cfg.free_bits > 0):
        raise ValueError(
            "the IWAE objective has no KL term to weight: β, warm-up and free bits apply to "
            "objective elbo"
        )


def objective_from_config(cfg, model=None) -> Objective:
    """The training objective ``f(model, x, step=None)`` of an ``ObjectiveConfig``.

    ``model`` sizes a learned score-function baseline (its input is the model's data).
    """
    return Objective(cfg, None if model is None else model.n_dims)
