"""Objectives: functions of (model, x), separate from models.

A *bound* (ELBO, IWAE) is maximized, a *loss* is minimized; both are in nats per example. Each
objective returns an ``ObjectiveResult``: ``loss`` is the scalar the optimizer minimizes (its value
is the β-weighted / free-bits loss, its gradient is the chosen estimator's), while ``bound``,
``log_px_z`` and ``kl`` are the true per-example quantities that are logged — never a surrogate.

Options of the training objective (``ObjectiveConfig``, built by ``objective_from_config``):
β-ELBO, KL warm-up of β (linear, cyclical), free bits, IWAE with K samples, the gradient
estimator of the encoder's parameters (``estimators``: reparam, score, stl, dreg), and the
disentangling variants as combinations (``objective.penalty``, ``penalties.PENALTIES``):

    none     loss = −E log p(x|z) + β·KL                                   (VAE, β-VAE)
    tc       loss = −E log p(x|z) + α·MI + β·TC + γ·dim-KL                 (β-TCVAE)
    dip-i    loss = −E log p(x|z) + β·KL + λ_od Σ_{i≠j} C_ij² + λ_d Σ (C_ii − 1)², C = Cov[μ]
    dip-ii   the same with C = Cov_q[z] = E[diag σ²] + Cov[μ]              (DIP-VAE I / II)
    mmd      loss = −E log p(x|z) + β·KL + λ·MMD²(q(z), p(z))   (InfoVAE; β = 0: WAE-MMD)
    factor   loss = −E log p(x|z) + β·KL + γ·TC_D, TC_D from a discriminator D (FactorVAE)

InfoVAE's (α, λ) of Zhao et al. are β = 1 − α and mmd_lambda = α + λ − 1. FactorVAE's
discriminator is part of the ``Objective`` module (its weights are checkpointed with the
objective's state) and has its own Adam (``Objective.make_aux_optimizer``, created by the run
setup); the trainer calls ``Objective.after_step`` after each optimizer step, which trains D on
the step's detached codes (label 0) against dimension-wise permuted codes of a second batch
(label 1). Every variant reports the true ELBO as ``bound``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from .distributions import KLTerms, kl_terms
from .estimators import (
    BASELINES,
    Baseline,
    detached_posterior,
    score_term,
    square_importance_weights,
    with_gradient_of,
)
from .penalties import (
    PENALTIES,
    Discriminator,
    PenaltyBatch,
    discriminator_loss,
    permute_dims,
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
    "gaussian_parameters",
    "PENALTIES",
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
    z: Tensor | None = None  # (S, B, D) the draws of q(z|x) the estimate used (elbo)
    terms: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # a penalty's, detached

    def metrics(self, loss: float | None = None) -> dict[str, float]:
        """Batch means as floats: ``bound``, ``recon`` (= log p(x|z)), ``kl``, ``loss`` (pass
        ``float(self.loss)`` when the caller already has it: one conversion per training step),
        and a penalty's logged ``terms`` (e.g. ``tc``, ``mmd``)."""
        with torch.no_grad():
            bound, recon, kl = torch.stack((self.bound, self.log_px_z, self.kl)).mean(1).tolist()
        loss = float(self.loss.detach()) if loss is None else loss
        out = {"loss": loss, "bound": bound, "recon": recon, "kl": kl}
        out.update({k: float(v) for k, v in self.terms.items()})
        return out


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
    A posterior with its own training terms (``qz_x.training_loss()``, the VQ-VAE's commitment
    and code-prior NLL) adds them to the loss and logs ``qz_x.training_terms()``.
    """
    if check:
        model.check(x)
    qz_x = model.encode(x, y, check=False) if qz_x is None else qz_x
    pz = model.prior()
    z = qz_x.rsample((n_samples,))  # (S, B, D)
    if estimator == "score":  # no gradient through z (a detached draw: NaN parameters, as in a
        z = z.detach()  # non-finite batch, give NaN draws and a skipped step, not an error)
    log_px_z_s = model.decode(z, y).log_prob(x)  # (S, B)
    log_px_z = log_px_z_s.mean(0)  # (B,)
    # A Monte-Carlo KL (no analytic form) needs reparameterized draws: its own for score.
    kl_t = kl_terms(qz_x, pz, None if estimator == "score" else z)
    kl, kl_d = kl_t.total, kl_t.per_dim  # (B,), (B, D)
    bound = log_px_z - kl
    kl_term = kl if free_bits <= 0 else _floored_kl(kl_t, free_bits, free_bits_groups)
    loss = -(log_px_z - beta * kl_term).mean()
    terms = {}
    own = getattr(qz_x, "training_loss", None)
    if own is not None:  # a posterior's own training terms (VQ-VAE: commitment, code prior)
        loss = loss + own()
        terms = qz_x.training_terms()
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
    return ObjectiveResult(
        loss, bound, log_px_z, kl, kl_d, _layer_kl(model, kl_t), z=z, terms=terms
    )


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
    return group_kl(kl, model.latent_groups) if model.latent_groups else None


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

    A module so that what an objective learns or tracks (the score-function baseline,
    FactorVAE's discriminator) is checkpointed by the trainer through ``state_dict()``. The
    baseline is optimized with the model (``main_parameters``); the discriminator has its own
    optimizer (``make_aux_optimizer``) and is trained in ``after_step``.
    ``dataset_size`` (the training split's N) is needed by the β-TCVAE estimators,
    ``latent_dim`` by FactorVAE's discriminator.
    """

    def __init__(
        self,
        cfg,
        n_inputs: int | None = None,
        *,
        dataset_size: int | None = None,
        latent_dim: int | None = None,
    ):
        super().__init__()
        _validate(cfg)
        self.cfg = cfg
        self.dataset_size = dataset_size
        self.penalty = PENALTIES.get(cfg.penalty)
        self.baseline = None
        if cfg.estimator == "score" and cfg.baseline != "none":
            if cfg.baseline == "learned" and n_inputs is None:
                raise ValueError("a learned baseline needs objective_from_config(cfg, model)")
            self.baseline = Baseline(n_inputs if cfg.baseline == "learned" else None)
        self.discriminator = None
        if cfg.penalty == "factor":
            if latent_dim is None:
                raise ValueError("penalty factor needs objective_from_config(cfg, model)")
            self.discriminator = Discriminator(latent_dim, tuple(cfg.factor_hidden))
        self._codes: list[Tensor] = []  # factor: this step's detached z, (b, D) per micro-batch
        self._codes_step: int | None = None

    def kl_weight(self, step: int | None) -> float:
        return kl_weight(step, self.cfg)

    def main_parameters(self) -> list[nn.Parameter]:
        """Parameters optimized with the model's (a learned baseline); not the discriminator's."""
        return [] if self.baseline is None else list(self.baseline.parameters())

    def make_aux_optimizer(self) -> torch.optim.Optimizer | None:
        """FactorVAE's discriminator Adam (lr ``factor_lr``, betas (0.5, 0.9) as Kim & Mnih), or
        None for objectives that train nothing on their own."""
        if self.discriminator is None:
            return None
        return torch.optim.Adam(
            self.discriminator.parameters(), lr=self.cfg.factor_lr, betas=(0.5, 0.9)
        )

    def forward(
        self, model, x: Tensor, y: Tensor | None = None, step: int | None = None
    ) -> ObjectiveResult:
        c = self.cfg
        if c.name == "iwae":
            return iwae(model, x, y, k=c.n_samples, estimator=c.estimator, check=False)
        beta = self.kl_weight(step)
        plain = c.penalty == "none"
        qz_x = None if plain else model.encode(x, y, check=False)
        res = elbo(
            model,
            x,
            y,
            beta=0.0 if self.penalty.replaces_kl else beta,
            n_samples=c.n_samples,
            free_bits=c.free_bits,
            estimator=c.estimator,
            baseline=self.baseline,
            qz_x=qz_x,
            free_bits_groups=_groups(model) if c.free_bits_per == "group" else None,
            check=False,  # the run setup checked the data; batches are prepared in the support
        )
        if c.kl_balance:
            res = kl_balanced(res, model, beta)
        return res if plain else self._penalized(model, res, qz_x, beta, step)

    def _penalized(
        self, model, res: ObjectiveResult, qz_x, beta: float, step: int | None = None
    ) -> ObjectiveResult:
        """``res`` with the penalty's term (averaged over the S draws) added to its loss."""
        loc = scale = None
        if self.penalty.gaussian:
            loc, scale = gaussian_parameters(qz_x, self.cfg.penalty)
        terms, logged = [], {}
        for z in res.z:  # (B, D) per draw
            prior_z = None
            if self.penalty.prior_samples:
                prior_z = model.prior().sample((len(z),)).to(z)
            batch = PenaltyBatch(z, loc, scale, prior_z, self.dataset_size, self.discriminator)
            term, logged_s = self.penalty.term(batch, self.cfg, beta)
            terms.append(term)
            for k, v in logged_s.items():
                logged[k] = logged.get(k, 0.0) + v.detach() / len(res.z)
        if self.discriminator is not None and torch.is_grad_enabled():  # a training step's z
            if step != self._codes_step:  # a new step (a skipped step leaves its codes behind)
                self._codes, self._codes_step = [], step
            self._codes.append(res.z[0].detach())
        loss = res.loss + torch.stack(terms).mean()
        return dataclasses.replace(res, loss=loss, terms={**res.terms, **logged})

    def after_step(self, model, second_batch, optimizer=None, gather=None) -> dict[str, float]:
        """After the model's optimizer step: FactorVAE's discriminator step (else nothing).

        ``second_batch()`` → ``(x, y)``, another training batch, the whole global batch
        (called only when needed); ``optimizer``: ``make_aux_optimizer()``'s. D learns to tell
        the step's codes z ~ q(z) (label 0, every micro-batch's) from ``permute_dims`` of the
        second batch's codes (label 1, ~ Π_d q(z_d)). ``gather`` (data-parallel training)
        concatenates a tensor over the processes in rank order: every process then takes the
        same step on the same global batch, so the discriminators stay equal without an
        all-reduce. Returns the logged ``disc_loss`` (nats)."""
        if self.discriminator is None or not self._codes:
            return {}
        if optimizer is None:
            raise ValueError("the FactorVAE discriminator needs its optimizer (make_aux_optimizer)")
        codes = torch.cat(self._codes)  # (B, D): this process's micro-batches, in order
        self._codes, self._codes_step = [], None
        if gather is not None:
            codes = gather(codes)
        x2, y2 = second_batch()
        with torch.no_grad():
            z2 = model.encode(x2, y2, check=False).rsample()  # (B, D)
        d = self.discriminator
        for p in d.parameters():  # drop what the model's loss left there
            p.grad = None
        loss = discriminator_loss(d(codes), d(permute_dims(z2)))
        loss.backward()
        optimizer.step()
        return {"disc_loss": float(loss.detach())}


def gaussian_parameters(qz_x, what: str = "this penalty") -> tuple[Tensor, Tensor]:
    """(loc, scale), each (B, D), of a diagonal-Gaussian posterior; a clear error otherwise."""
    base = getattr(qz_x, "base_dist", None)
    if isinstance(qz_x, Independent) and isinstance(base, Normal) and base.loc.dim() == 2:
        return base.loc, base.scale
    raise ValueError(
        f"penalty {what} needs a diagonal-Gaussian posterior q(z|x) (kinds vae/cvae with "
        f"model.posterior gaussian), got {type(qz_x).__name__}"
    )


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
    PENALTIES.get(cfg.penalty)  # a clear error for an unknown penalty
    if cfg.penalty != "none":
        if cfg.name != "elbo" or cfg.estimator != "reparam":
            raise ValueError(
                f"objective.penalty {cfg.penalty} works with objective elbo and the reparam "
                "estimator"
            )
        weights = ("tc_alpha", "tc_gamma", "dip_lambda_od", "mmd_lambda", "factor_gamma")
        if any(getattr(cfg, w) < 0 for w in weights) or (cfg.dip_lambda_d or 0) < 0:
            raise ValueError(f"the penalty weights {', '.join(weights)} must be non-negative")
    if cfg.penalty == "tc" and (cfg.free_bits > 0 or cfg.kl_balance):
        raise ValueError("penalty tc replaces the KL term: no free bits or KL balancing")
    if cfg.tc_estimator not in ("mss", "mws"):
        raise ValueError(f"objective.tc_estimator must be mss or mws, not {cfg.tc_estimator!r}")
    if cfg.mmd_kernel not in ("imq", "rbf"):
        raise ValueError(f"objective.mmd_kernel must be imq or rbf, not {cfg.mmd_kernel!r}")
    if cfg.penalty == "factor" and (
        not cfg.factor_lr > 0 or any(int(h) < 1 for h in cfg.factor_hidden)
    ):
        raise ValueError("penalty factor needs factor_lr > 0 and positive factor_hidden widths")
    if cfg.name == "iwae" and (cfg.beta != 1.0 or cfg.warmup != "none" or cfg.free_bits > 0):
        raise ValueError(
            "the IWAE objective has no KL term to weight: β, warm-up and free bits apply to "
            "objective elbo"
        )


def objective_from_config(cfg, model=None, dataset_size: int | None = None) -> Objective:
    """The training objective ``f(model, x, step=None)`` of an ``ObjectiveConfig``.

    ``model`` sizes a learned score-function baseline (its input is the model's data) and
    FactorVAE's discriminator (its latent size); ``dataset_size`` (the training split's N) is
    what the β-TCVAE estimators of log q(z) need.
    """
    if model is None:
        return Objective(cfg, dataset_size=dataset_size)
    return Objective(cfg, model.n_dims, dataset_size=dataset_size, latent_dim=model.latent_dim)
