"""Normalizing-flow posteriors: log-determinants against autograd Jacobians, MADE's
autoregressive masks, the density of the posterior's own samples, and IWAE with flows."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from builders import build
from vaekit.evaluation import iwae_log_likelihood
from vaekit.models.flows import IAF, MADE, FlowPosterior, PlanarFlow
from vaekit.objectives import elbo

D = 4


def _params(flow, b, g):
    n = flow.n_params(D)
    return torch.randn(b, n, generator=g, dtype=torch.float64)


def _flows():
    torch.manual_seed(0)
    iaf = IAF(D, steps=3, context=5, hidden=16).double()
    with torch.no_grad():  # random MADE outputs far from the identity
        for p in iaf.parameters():
            p.normal_(0, 0.5)
    return {"iaf": iaf, "planar": PlanarFlow(D, steps=3)}


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_log_determinant_matches_the_autograd_jacobian(kind):
    flow = _flows()[kind]
    g = torch.Generator().manual_seed(1)
    params = _params(flow, 3, g)
    z0 = torch.randn(2, 3, D, generator=g, dtype=torch.float64)  # (S, B, D)
    _, logdet = flow(z0, params)
    for s in range(2):
        for b in range(3):
            jac = jacobian(lambda v, b=b: flow(v.view(1, D), params[b : b + 1])[0][0], z0[s, b])
            sign, ref = torch.linalg.slogdet(jac)
            assert sign > 0 or kind == "planar"
            torch.testing.assert_close(logdet[s, b], ref, rtol=1e-7, atol=1e-7)


def test_iaf_jacobian_is_triangular_in_each_step():
    made = MADE(D, 3, 12).double()
    with torch.no_grad():
        for p in made.parameters():
            p.normal_()
    z, h = torch.randn(D, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    for out in (0, 1):  # m, s: output i depends on z_<i only
        jac = jacobian(lambda v, out=out: made(v, h)[out], z)
        assert torch.equal(jac.triu(), torch.zeros_like(jac)), jac
        assert jac.tril(-1).abs().sum() > 0  # and does depend on them


def test_planar_flow_stays_invertible_whatever_the_encoder_says():
    """û makes wᵀû ≥ −1, so 1 + ûᵀψ > 0: the map is monotone along w."""
    flow = PlanarFlow(D, steps=1)
    g = torch.Generator().manual_seed(2)
    u = -10 * torch.randn(1, D, generator=g, dtype=torch.float64)
    w = torch.randn(1, D, generator=g, dtype=torch.float64)
    params = torch.cat([u, w, torch.zeros(1, 1, dtype=torch.float64)], -1)
    t = torch.linspace(-20, 20, 2001, dtype=torch.float64)[:, None]
    z0 = t * w / w.norm()  # a line along w
    z, _ = flow(z0, params)
    proj = (z @ w.T).squeeze(-1)
    assert (proj.diff() > 0).all()


def _posterior(kind):
    flow = _flows()[kind]
    g = torch.Generator().manual_seed(3)
    loc = torch.randn(5, D, generator=g, dtype=torch.float64)
    scale = 0.5 + torch.rand(5, D, generator=g, dtype=torch.float64)
    from vaekit.distributions import diag_gaussian

    return FlowPosterior(diag_gaussian(loc, scale), flow, _params(flow, 5, g))


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_log_prob_of_own_samples_is_the_change_of_variables(kind):
    q = _posterior(kind)
    torch.manual_seed(4)
    z = q.rsample((7,))
    torch.manual_seed(4)
    z0 = q.base.rsample((7,))
    _, logdet = q.transform(z0)
    torch.testing.assert_close(q.log_prob(z), q.base.log_prob(z0) - logdet)
    assert q.log_prob(z).shape == (7, 5)
    with pytest.raises(ValueError, match="own last rsample"):
        q.log_prob(z.clone())
    with pytest.raises(ValueError, match="own last rsample"):
        q.log_prob(q.sample((2,)))


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_flow_density_integrates_to_one_in_two_dimensions(kind):
    """E_{z~q}[p(z)/q(z)] = 1 for any normalized p: checks log q(z) of the samples as a density
    (a wrong log-determinant biases this ratio), with p = N(0, 2² I)."""
    torch.manual_seed(5)
    flow = IAF(2, 2, 3, 8).double() if kind == "iaf" else PlanarFlow(2, 2)
    from vaekit.distributions import diag_gaussian

    g = torch.Generator().manual_seed(6)
    base = diag_gaussian(torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2).double())
    q = FlowPosterior(base, flow, torch.randn(1, flow.n_params(2), generator=g).double())
    z = q.rsample((200_000,))
    p = torch.distributions.Normal(0.0, 2.0).log_prob(z).sum(-1)
    ratio = (p - q.log_prob(z)).exp()
    se = ratio.std() / math.sqrt(len(ratio))
    assert abs(ratio.mean() - 1.0) < 4 * se + 1e-3


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_flow_vae_elbo_and_iwae_are_consistent(kind):
    torch.manual_seed(0)
    model = build(event_shape=[1, 6, 6], hidden=[16], latent_dim=3, posterior=kind, flow_steps=2)
    x = (torch.rand(8, 1, 6, 6) > 0.5).float()
    model.eval()
    with torch.no_grad():
        res = elbo(model, x, n_samples=64)
        ll = iwae_log_likelihood(model, x, k=256)
    assert torch.isfinite(res.bound).all()
    assert ll.mean() > res.bound.mean()  # IWAE ≥ ELBO on average
    model.train()
    elbo(model, x).loss.backward()
    assert all(p.grad is not None for p in model.flow.parameters())


def test_flow_options_are_checked():
    with pytest.raises(ValueError, match="posterior must be one of"):
        build(event_shape=[1, 6, 6], hidden=[8], latent_dim=2, posterior="glow")
    with pytest.raises(ValueError, match="kinds vae and cvae"):
        build(event_shape=[1, 6, 6], hidden=[8], kind="hvae", latent_dims=[2, 2], posterior="iaf")
    with pytest.raises(ValueError, match="standard normal prior"):
        build(event_shape=[1, 6, 6], hidden=[8], latent_dim=2, posterior="iaf", prior="vamp")


def test_a_flow_run_trains_resumes_and_evaluates_from_the_command_line(tmp_path, capsys):
    from vaekit.cli import main

    out = tmp_path / "iaf"
    argv = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--posterior"]
    argv += ["iaf", "--flow-steps", "2", "--epochs", "3", "--batch-size", "50", "--no-images"]
    assert main([*argv, "--max-steps", "40", "--out", str(out)]) == 0
    assert main(["train", "--resume", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--iw-samples", "64", "--json"]) == 0
    import json

    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["nll"] < -ev["elbo"] + 0.05  # the IWAE bound (with log-determinants) ≥ the ELBO
    assert ev["active_units"] == 4 and len(ev["kl_per_dim"]) == 4
