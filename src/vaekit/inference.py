"""Non-amortized and semi-amortized inference: fit q(z|x_i) = N(loc_i, diag scale_i²) to each
example by gradient ascent on its own ELBO, the decoder held fixed.

``init="encoder"`` starts from the encoder's output (semi-amortized, Kim et al. 2018);
``init="prior"`` starts from N(0, I) (classic per-data-point variational inference). Adam adapts
each coordinate separately, so optimizing a batch is the same as optimizing every example alone.

Gaps (Cremer et al., 2018), per example in nats, with ELBO*(x) the refined ELBO:
    amortization gap  = ELBO*(x) − ELBO_φ(x)   (what the encoder leaves on the table)
    approximation gap = log p(x) − ELBO*(x)     (what the Gaussian family cannot reach)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .distributions import MIN_SCALE, diag_gaussian
from .estimators import detached_posterior
from .evaluation import as_model_input, standard_error
from .objectives import elbo

__all__ = ["refine", "elbo_of", "amortization_gap", "INITS"]

INITS = ("encoder", "prior")


def _inverse_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


def refine(
    model,
    x: Tensor,
    *,
    steps: int = 100,
    lr: float = 0.02,
    n_samples: int = 8,
    init: str = "encoder",
    check: bool = True,
):
    """Per-example variational parameters maximizing the ELBO of ``x`` ``(B, ...)``.

    ``steps`` Adam steps on the ``n_samples``-sample reparameterized ELBO (analytic KL). Returns
    the refined posterior ``Independent(Normal)``, batch ``(B,)``, event ``(D,)``, detached.
    The model's parameters get no gradient. ``check`` validates every row of ``x`` first.
    """
    if init not in INITS:
        raise ValueError(f"refine init must be one of {INITS}, got {init!r}")
    if steps < 0:
        raise ValueError(f"refine steps must be non-negative, got {steps}")
    if check:
        model.check(x)
    q0 = detached_posterior(model.encode(x, check=False))  # checks: a diagonal Gaussian
    loc, scale = q0.base_dist.loc, q0.base_dist.scale
    if init == "prior":
        loc, scale = torch.zeros_like(loc), torch.ones_like(scale)
    loc = loc.clone().requires_grad_(True)
    raw = _inverse_softplus((scale - MIN_SCALE).clamp_min(1e-6)).requires_grad_(True)
    optimizer = torch.optim.Adam([loc, raw], lr=lr)
    for _ in range(steps):
        qz_x = diag_gaussian(loc, F.softplus(raw) + MIN_SCALE)
        bound = elbo(model, x, n_samples=n_samples, qz_x=qz_x, check=False).bound  # (B,)
        loc.grad, raw.grad = torch.autograd.grad(-bound.sum(), [loc, raw])
        optimizer.step()
    return diag_gaussian(loc.detach(), F.softplus(raw.detach()) + MIN_SCALE)


@torch.no_grad()
def elbo_of(model, x: Tensor, qz_x=None, *, n_samples: int = 100, check: bool = True) -> Tensor:
    """ELBO of ``x`` under the posterior ``qz_x`` (default: the encoder's), ``(B,)`` nats."""
    return elbo(model, x, n_samples=n_samples, qz_x=qz_x, check=check).bound


def amortization_gap(
    model,
    x: Tensor,
    *,
    steps: int = 100,
    lr: float = 0.02,
    n_samples: int = 8,
    init: str = "encoder",
    eval_samples: int = 100,
    batch_size: int = 100,
    seed: int = 0,
    log_px: Tensor | None = None,
    check: bool = True,
) -> dict:
    """Amortized vs refined ELBO of every example of ``x``, seeded and RNG-isolated.

    Returns means (nats per example) ``elbo_amortized``, ``elbo_refined``, ``amortization_gap``
    and its standard error over examples ``amortization_gap_stderr`` (sd/√N of the per-example
    differences), with the settings. Both ELBOs use ``eval_samples`` draws of z and the analytic
    KL. ``log_px`` ``(N,)``: an estimate of log p(x) of the same examples (the IWAE values behind
    ``evaluate``'s ``nll``) adds the paired ``approximation_gap`` = mean(log p(x) − ELBO*(x)) and
    its ``approximation_gap_stderr``. ``check`` validates every row of ``x`` first.
    """
    if check:
        model.check(x)
    if log_px is not None and len(log_px) != len(x):
        raise ValueError(f"log_px has {len(log_px)} values for {len(x)} examples")
    model.eval()
    before, after = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            xb = as_model_input(model, x[start : start + batch_size])
            q = refine(model, xb, steps=steps, lr=lr, n_samples=n_samples, init=init, check=False)
            before.append(elbo_of(model, xb, n_samples=eval_samples, check=False).double())
            after.append(elbo_of(model, xb, q, n_samples=eval_samples, check=False).double())
    before, after = torch.cat(before), torch.cat(after)
    gap = after - before
    out = {
        "elbo_amortized": float(before.mean()),
        "elbo_refined": float(after.mean()),
        "amortization_gap": float(gap.mean()),
        "amortization_gap_stderr": standard_error(gap),
    }
    if log_px is not None:
        approx = log_px.double() - after  # paired: the same examples
        out["approximation_gap"] = float(approx.mean())
        out["approximation_gap_stderr"] = standard_error(approx)
    out.update(refine_steps=steps, refine_init=init, refine_lr=lr, refine_samples=n_samples)
    return out
