"""Likelihood heads and KL: closed forms, normalisation and support checks."""

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal, kl_divergence

from vaekit.distributions import (
    DiscretizedLogistic,
    StandardNormal,
    SupportError,
    diag_gaussian,
    kl_per_dim,
    standard_normal,
)
from vaekit.likelihoods import make_likelihood


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(1)
    loc, scale = torch.randn(4, 3), torch.rand(4, 3) + 0.3
    qz_x, pz = diag_gaussian(loc, scale), standard_normal(3)
    analytic = kl_per_dim(qz_x, pz).sum(-1)
    z = qz_x.sample((200_000,))
    mc = (qz_x.log_prob(z) - pz.log_prob(z)).mean(0)
    # closed form: ½ Σ (σ² + μ² − 1 − log σ²)
    closed = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    torch.testing.assert_close(analytic, closed)
    se = (qz_x.log_prob(z) - pz.log_prob(z)).std(0) / math.sqrt(len(z))
    assert ((mc - analytic).abs() < 4 * se).all()


def test_standard_normal_kl_matches_torch_general_normal_kl():
    """The registered KL(Normal ‖ StandardNormal) equals torch's Normal-Normal KL against N(0, 1),
    values and gradients, and the standard normal behaves as N(0, 1) elsewhere."""
    torch.manual_seed(3)
    loc = torch.randn(6, 4, requires_grad=True)
    raw = torch.randn(6, 4, requires_grad=True)
    q = Normal(loc, torch.nn.functional.softplus(raw))
    ours = kl_divergence(q, StandardNormal((4,)))
    general = kl_divergence(q, Normal(torch.zeros(4), torch.ones(4)))
    torch.testing.assert_close(ours, general)
    g_ours = torch.autograd.grad(ours.sum(), (loc, raw), retain_graph=True)
    g_general = torch.autograd.grad(general.sum(), (loc, raw))
    for a, b in zip(g_ours, g_general, strict=True):
        torch.testing.assert_close(a, b)
    z = torch.randn(5, 4)
    torch.testing.assert_close(StandardNormal((4,)).log_prob(z), Normal(0.0, 1.0).log_prob(z))
    assert standard_normal(4).expand((3,)).batch_shape == (3,)


def test_kl_falls_back_to_monte_carlo_for_unregistered_pairs():
    torch.manual_seed(2)
    qz_x = diag_gaussian(torch.zeros(2, 2), torch.ones(2, 2) * 0.5)
    # A one-component mixture equal to N(0, I): torch registers no KL rule for it.
    pz = MixtureSameFamily(Categorical(logits=torch.zeros(1)), standard_normal(2).expand((1,)))
    with pytest.raises(NotImplementedError):
        kl_divergence(qz_x, pz)
    z = qz_x.rsample((20_000,))
    mc = kl_per_dim(qz_x, pz, z).sum(-1)
    exact = kl_per_dim(qz_x, standard_normal(2)).sum(-1)
    torch.testing.assert_close(mc, exact, atol=0.03, rtol=0)


def test_discretized_logistic_is_normalised_over_256_levels():
    loc = torch.tensor([-1.2, -0.3, 0.0, 0.7, 1.5])
    scale = torch.tensor([0.01, 0.05, 0.3, 1.0, 0.002])
    d = DiscretizedLogistic(loc[:, None], scale[:, None])
    levels = torch.arange(256.0)[None, :]
    total = d.log_prob(levels).exp().sum(-1)
    torch.testing.assert_close(total, torch.ones(5), atol=2e-4, rtol=0)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "categorical", "logistic"])
def test_likelihood_log_prob_is_per_example_and_finite(name):
    lik = make_likelihood(name, (1, 4, 4))
    params = torch.randn(3, lik.n_params, 1, 4, 4)
    raw = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    x = (raw > 127).float() if name == "bernoulli" else lik.prepare(raw)
    lik.check(x)
    lp = lik(params).log_prob(x)
    assert lp.shape == (3,)
    assert torch.isfinite(lp).all()
    if name != "gaussian":  # a probability mass, not a density
        assert (lp <= 0).all()


def test_categorical_log_prob_is_the_sum_of_per_pixel_log_softmax():
    lik = make_likelihood("categorical", (2,))
    params = torch.randn(1, 256, 2)
    x = torch.tensor([[3.0, 200.0]])
    expected = params.log_softmax(1)[0, 3, 0] + params.log_softmax(1)[0, 200, 1]
    torch.testing.assert_close(lik(params).log_prob(x), expected.reshape(1))


def test_gaussian_log_prob_closed_form():
    lik = make_likelihood("gaussian", (3,), scale="shared")
    params = torch.tensor([[[0.1, 0.5, 0.9]]])
    x = torch.tensor([[0.2, 0.5, 0.7]])
    s = lik.log_scale.exp()
    expected = (-0.5 * ((x - params[:, 0]) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum()
    torch.testing.assert_close(lik(params).log_prob(x), expected.reshape(1))


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("bernoulli", torch.tensor([[0.0, 255.0]])),
        ("bernoulli", torch.tensor([[0.0, 0.5]])),
        ("bernoulli", torch.tensor([[0.0, float("nan")]])),
        ("categorical", torch.tensor([[0.0, 256.0]])),
        ("categorical", torch.tensor([[0.0, 1.5]])),
        ("logistic", torch.tensor([[-1.0, 3.0]])),
        ("gaussian", torch.tensor([[0.0, float("inf")]])),
    ],
)
def test_out_of_support_values_are_rejected_with_a_clear_error(name, bad):
    lik = make_likelihood(name, (2,))
    with pytest.raises(SupportError, match=name):
        lik.check(bad)


def test_bernoulli_error_says_how_to_fix_grey_levels():
    lik = make_likelihood("bernoulli", (2,))
    with pytest.raises(SupportError, match="binarize"):
        lik.check(torch.tensor([[0.0, 255.0]]))


def test_unknown_likelihood_lists_the_choices():
    with pytest.raises(ValueError, match="bernoulli"):
        make_likelihood("nosuch", (2,))
