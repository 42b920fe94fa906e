"""Likelihood heads p(x|z), one per data type, and their registry.

Adding a data type is one ``Likelihood`` subclass (``base``) and one ``LIKELIHOODS`` entry here;
the CLI's ``--likelihood`` choices, the model builders and the likelihood contract tests read the
registry.
"""

from __future__ import annotations

from ..registry import Registry, accepted_options
from .base import Likelihood, SupportError
from .counts import NegativeBinomialLikelihood, PoissonLikelihood
from .images import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    LogisticLikelihood,
)
from .mixture import LogisticMixtureLikelihood
from .tabular import TabularLikelihood
from .tokens import TokenLikelihood

__all__ = ["LIKELIHOODS", "Likelihood", "SupportError", "make_likelihood"]

LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")
LIKELIHOODS.register("bernoulli", BernoulliLikelihood, "binary data (0/1)")
LIKELIHOODS.register("gaussian", GaussianLikelihood, "real values; learned scale")
LIKELIHOODS.register("categorical", CategoricalLikelihood, "256 levels, a softmax each")
LIKELIHOODS.register("logistic", LogisticLikelihood, "256 levels, discretized logistic")
LIKELIHOODS.register(
    "logistic_mixture", LogisticMixtureLikelihood, "256 levels, mixture of logistics (RGB coupled)"
)
LIKELIHOODS.register("poisson", PoissonLikelihood, "counts")
LIKELIHOODS.register("negbinomial", NegativeBinomialLikelihood, "counts, learned dispersion")
LIKELIHOODS.register("tabular", TabularLikelihood, "table rows of mixed column types")
LIKELIHOODS.register("tokens", TokenLikelihood, "token rows (text)")


def make_likelihood(name: str, event_shape: tuple[int, ...], **options) -> Likelihood:
    """A likelihood head by registry name; options a head does not take are ignored (e.g.
    ``scale`` for all but gaussian, ``columns`` for all but tabular, ``vocab`` for tokens)."""
    cls = LIKELIHOODS.get(name)
    return cls(tuple(event_shape), **accepted_options(cls, options))
