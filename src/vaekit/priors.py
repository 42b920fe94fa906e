"""Priors p(z) over a model's (top) latent layer, as modules that build a torch distribution.

A prior module has ``forward(model) -> Distribution`` (event shape ``(D,)``) and
``sample(model, n, temperature, generator) -> (n, D)``. ``StandardNormalPrior`` is N(0, I).
``VampPrior`` is the mixture of the model's own posteriors at K learned pseudo-inputs,
p(z) = (1/K) Σ_k q(z | u_k) (Tomczak & Welling, 2018). KL(q ‖ VampPrior) has no closed form, so
objectives estimate it by Monte Carlo on their samples (``distributions.kl_per_dim``).

A model that accepts a VampPrior exposes ``top_posterior(u)``: the posterior of its top latent
layer for a batch ``u`` of encoder inputs (shape ``model.encoder_input_shape``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from .distributions import standard_normal
from .registry import Registry

__all__ = ["StandardNormalPrior", "VampPrior", "PRIORS", "make_prior"]


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I) over ``model.top_dim`` dimensions (no parameters). The distribution is built
    once per (size, device, dtype) and reused: it is immutable."""

    def __init__(self):
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # follows .to()
        self._cache: dict = {}

    def forward(self, model) -> Distribution:
        key = (model.top_dim, self._anchor.device, self._anchor.dtype)
        if key not in self._cache:
            self._cache[key] = standard_normal(key[0], device=key[1], dtype=key[2])
        return self._cache[key]

    def sample(self, model, n: int, temperature: float = 1.0, generator=None) -> Tensor:
        """``(n, D)`` draws from N(0, temperature² I)."""
        p = next(model.parameters())
        eps = torch.randn(n, model.top_dim, generator=generator, dtype=p.dtype)
        return eps.to(p.device) * temperature


class VampPrior(nn.Module):
    """p(z) = (1/K) Σ_k q(z | u_k), pseudo-inputs ``u`` of shape ``(K, *input_shape)`` learned
    with the model (initialised near 0.5, the middle of the [0, 1] range images are fed in)."""

    def __init__(self, input_shape, n_components: int = 500):
        super().__init__()
        if n_components < 1:
            raise ValueError(f"a VampPrior needs at least 1 component, got {n_components}")
        self.pseudo_inputs = nn.Parameter(0.5 + 0.05 * torch.randn(n_components, *input_shape))

    def components(self, model):
        """q(z | u_k) for every pseudo-input: batch shape ``(K,)``, event shape ``(D,)``."""
        return model.top_posterior(self.pseudo_inputs)

    def forward(self, model) -> Distribution:
        comps = self.components(model)
        k = self.pseudo_inputs.shape[0]
        mix = Categorical(logits=torch.zeros(k, device=self.pseudo_inputs.device))
        return MixtureSameFamily(mix, comps, validate_args=False)

    def sample(self, model, n: int, temperature: float = 1.0, generator=None) -> Tensor:
        """``(n, D)``: a uniform component k, then loc_k + temperature·scale_k·ε."""
        comps = self.components(model)
        base = comps.base_dist
        k = torch.randint(self.pseudo_inputs.shape[0], (n,), generator=generator)
        eps = torch.randn(n, base.loc.shape[-1], generator=generator, dtype=base.loc.dtype)
        return base.loc[k] + temperature * base.scale[k] * eps.to(base.loc.device)


PRIORS: Registry = Registry("prior")
PRIORS.register("normal", lambda input_shape, n: StandardNormalPrior(), "N(0, I)")
PRIORS.register("vamp", VampPrior, "mixture of posteriors at learned pseudo-inputs")


def make_prior(name: str, input_shape, n_components: int = 500) -> nn.Module:
    """A prior module by name: ``normal`` or ``vamp`` (pseudo-inputs of ``input_shape``)."""
    return PRIORS.get(name)(input_shape, n_components)
