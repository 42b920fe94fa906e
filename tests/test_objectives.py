"""Bounds against the exact log p(x) of a linear-Gaussian model; gradients against finite
differences."""

import torch

from linear_gaussian import exact_log_px, make_ppca, sample_x
from vaekit.evaluation import iwae_log_likelihood
from vaekit.objectives import elbo, iwae


def test_with_the_exact_posterior_every_bound_equals_log_px():
    model, w, b, sigma = make_ppca()
    x = sample_x(16, w, b, sigma)
    exact = exact_log_px(x, w, b, sigma)
    # q = p(z|x) makes every importance weight equal p(x): the identity holds sample by sample.
    torch.testing.assert_close(iwae(model, x, k=1).bound, exact)
    torch.testing.assert_close(iwae(model, x, k=7).bound, exact)
    # The ELBO with analytic KL is exact in expectation: Monte-Carlo noise only in E_q log p(x|z).
    res = elbo(model, x, n_samples=20_000)
    assert (res.bound - exact).abs().max() < 0.02


def _perturbed(seed=0):
    model, w, b, sigma = make_ppca(seed)
    with torch.no_grad():
        enc = model.encoder.net[0]
        enc.bias[:2] += 0.6  # shift the posterior mean: q is no longer p(z|x)
        enc.bias[2:] += 0.8  # and widen it
    return model, w, b, sigma


def test_elbo_is_below_log_px_and_iwae_rises_with_k_towards_it():
    model, w, b, sigma = _perturbed()
    x = sample_x(64, w, b, sigma)
    exact = exact_log_px(x, w, b, sigma).mean()
    torch.manual_seed(0)
    with torch.no_grad():
        elbo_value = elbo(model, x, n_samples=2000).bound.mean()
        bounds = [iwae_log_likelihood(model, x, k=k, chunk=500).mean() for k in (1, 10, 100, 5000)]
    assert elbo_value < exact - 0.1
    assert abs(bounds[0] - elbo_value) < 1.0  # K=1 is the ELBO, estimated from 1 draw per example
    assert elbo_value < bounds[1] < bounds[2] < bounds[3] <= exact + 1e-3
    assert exact - bounds[3] < 0.05 * (exact - elbo_value)


def test_reparameterization_gradient_matches_finite_differences():
    model, w, b, sigma = _perturbed()
    x = sample_x(8, w, b, sigma)
    params = [p for p in model.encoder.parameters()]

    def value():
        torch.manual_seed(123)  # the same ε each call: a deterministic function of the params
        return elbo(model, x, n_samples=4).bound.sum()

    grads = torch.autograd.grad(value(), params)
    eps = 1e-6
    for p, g in zip(params, grads, strict=True):
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = value().item()
            flat[i] = old - eps
            down = value().item()
            flat[i] = old
            assert abs((up - down) / (2 * eps) - gflat[i].item()) < 1e-5 * max(1, abs(gflat[i]))
