"""Gradient estimators for the encoder's parameters φ: how the gradient of a bound flows.

An estimator never changes the *value* of a bound, only the surrogate whose gradient the optimizer
follows. The decoder's parameters θ always get the plain pathwise gradient.

- ``reparam`` (pathwise): z = loc + scale·ε, differentiate through z (Kingma & Welling, 2014).
- ``score`` (REINFORCE): ∇φ E_q[f(z)] = E_q[(f(z) − b(x)) ∇φ log q(z|x)] with z held fixed and a
  baseline b(x) that does not depend on z (Williams, 1992; Mnih & Gregor, 2014).
- ``stl`` (sticking the landing): pathwise, but log q(z|x) is evaluated with its parameters held
  fixed, dropping the zero-mean score term (Roeder et al., 2017).
- ``dreg`` (doubly reparameterized IWAE gradient): Σ_k w̃_k² ∂log w_k/∂z_k · ∂z_k/∂φ with
  w̃ = softmax(log w) (Tucker et al., 2018).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from .distributions import diag_gaussian

__all__ = [
    "ESTIMATORS",
    "BASELINES",
    "Baseline",
    "detached_posterior",
    "with_gradient_of",
    "score_term",
    "square_importance_weights",
]

ESTIMATORS = ("reparam", "score", "stl", "dreg")
BASELINES = ("none", "mean", "learned")


def detached_posterior(qz_x: Distribution) -> Independent:
    """q(z|x) with stop-gradient ``loc`` and ``scale``: same density, no gradient to φ through it.

    Only for a diagonal Gaussian ``Independent(Normal)`` posterior (``ValueError`` otherwise).
    """
    base = getattr(qz_x, "base_dist", None)
    if not (isinstance(qz_x, Independent) and isinstance(base, Normal)):
        raise ValueError(
            "the stl and dreg estimators need a diagonal Gaussian posterior Independent(Normal), "
            f"got {type(qz_x).__name__}; use estimator reparam"
        )
    return diag_gaussian(base.loc.detach(), base.scale.detach())


def with_gradient_of(value: Tensor, surrogate: Tensor) -> Tensor:
    """A tensor equal to ``value`` whose gradient is the gradient of ``surrogate``."""
    return value.detach() + (surrogate - surrogate.detach())


def score_term(signal: Tensor, log_qz: Tensor, baseline: Tensor | float = 0.0) -> Tensor:
    """(f − b)·log q(z|x) with f, b held fixed, but with value 0.

    Its gradient is the score-function estimate of ∇φ E_q[f]: ``signal`` f is ``(S, B)`` for fixed
    draws z, ``log_qz`` = log q(z|x) ``(S, B)`` differentiable in φ, ``baseline`` b(x) ``(B,)``.
    """
    advantage = (signal - baseline).detach()
    return advantage * (log_qz - log_qz.detach())


def square_importance_weights(z: Tensor, log_w: Tensor) -> None:
    """DReG: multiply the gradient reaching z ``(K, B, D)`` by w̃ = softmax_K(log w) ``(K, B)``.

    With log q's parameters held fixed, the pathwise IWAE gradient reaching z_k is
    w̃_k ∂log w_k/∂z_k; scaling it by w̃_k gives the doubly reparameterized encoder gradient, while
    the decoder's gradient (which does not pass through z) keeps its weights w̃_k.
    """
    if z.requires_grad:
        weights = torch.softmax(log_w.detach(), 0).unsqueeze(-1)  # (K, B, 1)
        z.register_hook(lambda grad: grad * weights)


class Baseline(nn.Module):
    """Score-function baseline b(x) = c + net(x): a running mean c of the learning signal, plus
    (``n_inputs`` given) a network fit to the residual by least squares (NVIL, Mnih & Gregor 2014).

    ``forward(x_flat)`` → b ``(B,)``; ``loss(signal, b)`` is the network's regression loss; the
    running mean is updated by ``update(signal)`` in training mode only. b never depends on z,
    so the estimator stays unbiased.
    """

    def __init__(self, n_inputs: int | None = None, hidden: int = 100, decay: float = 0.9):
        super().__init__()
        self.decay = decay
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("count", torch.zeros(()))
        self.net = None
        if n_inputs is not None:
            self.net = nn.Sequential(nn.Linear(n_inputs, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            nn.init.zeros_(self.net[2].weight)
            nn.init.zeros_(self.net[2].bias)

    def forward(self, x_flat: Tensor) -> Tensor:
        b = self.mean.expand(x_flat.shape[0])
        if self.net is not None:
            b = b + self.net(x_flat.to(self.mean.dtype)).squeeze(-1)
        return b

    def loss(self, signal: Tensor, b: Tensor) -> Tensor:
        """Mean squared residual (f − b)², f ``(S, B)`` fixed: trains the network only."""
        if self.net is None:
            return b.new_zeros(())
        return (signal.detach() - b).pow(2).mean()

    @torch.no_grad()
    def update(self, signal: Tensor) -> None:
        """Exponential moving average of the batch-mean learning signal (bias-corrected start)."""
        if not self.training:
            return
        self.count += 1
        rate = max(1.0 - self.decay, 1.0 / float(self.count))
        self.mean += rate * (signal.mean() - self.mean)
