"""The hierarchical VAE: exact against a linear-Gaussian chain, KL per layer, sampling, training
aids (gradient skipping, per-group free bits)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

import vaekit
from builders import build
from vaekit.config import load_config
from vaekit.evaluation import evaluate, iwae_log_likelihood
from vaekit.likelihoods import make_likelihood
from vaekit.models.hierarchical import HierarchicalVAE, precision_merge
from vaekit.networks import MLPDecoder
from vaekit.objectives import elbo, iwae

D_X, D_1 = 3, 2  # x ∈ R³, z_1 ∈ R², z_2 ∈ R


def _linear(weight, bias) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    return lin


def linear_chain(dtype=torch.float64, merge="residual"):
    """p(z_2) = N(0, 1), p(z_1|z_2) = N(a z_2, s² I), p(x|z_1) = N(W z_1 + b, σ² I), built as a
    HierarchicalVAE whose top-down posterior is exactly p(z_2|x) p(z_1|z_2, x), with either
    ``merge`` rule (precision: the bottom-up factor is the likelihood's Gaussian in z_1)."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D_X, D_1, generator=g, dtype=dtype))
    w = q * torch.tensor([2.0, 1.2], dtype=dtype)  # orthogonal columns: diagonal posteriors
    b = torch.randn(D_X, generator=g, dtype=dtype) * 0.3
    a = torch.tensor([0.8, -0.5], dtype=dtype)
    s, sigma = 0.6, 0.5
    # p(z_2 | x): x | z_2 ~ N(W a z_2 + b, C), C = s² W Wᵀ + σ² I.
    wa = w @ a
    c_inv = torch.linalg.inv(s**2 * w @ w.T + sigma**2 * torch.eye(D_X, dtype=dtype))
    prec2 = 1 + wa @ c_inv @ wa
    m2 = c_inv @ wa / prec2
    # p(z_1 | z_2, x): precision Λ = I/s² + WᵀW/σ² (diagonal), mean Λ⁻¹(a z_2/s² + Wᵀ(x−b)/σ²).
    lam = 1 / s**2 + (w * w).sum(0) / sigma**2
    zero = torch.zeros
    decoder = MLPDecoder((D_X,), D_1, 1, hidden=())
    likelihood = make_likelihood("gaussian", (D_X,), scale="shared")
    model = HierarchicalVAE(
        nn.Identity(), decoder, likelihood, [D_1, 1], D_X, logscale_clamp=1e6, merge=merge
    )
    model = model.double()
    model.act = nn.Identity()
    model.up[0] = nn.Identity()  # d_1 = d_2 = x
    top_w = torch.stack([m2, zero(D_X, dtype=dtype)])
    model.q_top = _linear(top_w, torch.stack([-m2 @ b, -0.5 * prec2.log()]))
    model.down[0] = _linear(torch.tensor([[1.0], [0.0], [0.0]], dtype=dtype), zero(3, dtype=dtype))
    p_w = zero(4, 3, dtype=dtype)
    p_w[:2, 0] = a  # loc_p = a z_2 (t = (z_2, 0, 0))
    model.p_head[0] = _linear(p_w, torch.cat([zero(2, dtype=dtype), torch.full((2,), math.log(s))]))
    q_w = zero(4, 6, dtype=dtype)  # reads [x, t]: Δloc = mean − a z_2, Δlog_scale constant
    q_w[:2, :3] = (w / sigma**2 / lam).T
    q_w[:2, 3] = a / s**2 / lam - a
    q_b = torch.cat([-(w.T @ b) / sigma**2 / lam, -0.5 * lam.log() - math.log(s)])
    model.q_head[0] = _linear(q_w, q_b)
    if merge == "precision":  # N(z_1; Λ_x⁻¹ Wᵀ(x − b)/σ², Λ_x⁻¹), Λ_x = WᵀW/σ² (diagonal)
        lam_x = (w * w).sum(0) / sigma**2
        u_w = torch.cat([(w / sigma**2 / lam_x).T, zero(D_1, D_X, dtype=dtype)])
        u_b = torch.cat([-(w.T @ b) / sigma**2 / lam_x, -0.5 * lam_x.log()])
        model.q_head[0] = _linear(u_w, u_b)
    with torch.no_grad():
        decoder.net[0].weight.copy_(w)
        decoder.net[0].bias.copy_(b)
        likelihood.log_scale.fill_(math.log(sigma))
    cov_x = w @ (torch.outer(a, a) + s**2 * torch.eye(D_1, dtype=dtype)) @ w.T
    px = MultivariateNormal(b, covariance_matrix=cov_x + sigma**2 * torch.eye(D_X, dtype=dtype))
    return model, px


def test_with_the_exact_posterior_every_importance_weight_is_log_px():
    model, px = linear_chain()
    x = px.sample((16,))
    exact = px.log_prob(x)
    torch.testing.assert_close(iwae(model, x, k=1).bound, exact)
    torch.testing.assert_close(iwae(model, x, k=9).bound, exact)
    torch.testing.assert_close(iwae_log_likelihood(model, x, k=50, chunk=20), exact)
    # The ELBO with per-layer analytic KL is exact in expectation (noise only from sampling).
    assert (elbo(model, x, n_samples=20_000).bound - exact).abs().max() < 0.03


def test_precision_merge_is_exact_for_linear_gaussian_layers():
    model, px = linear_chain(merge="precision")
    x = px.sample((16,))
    torch.testing.assert_close(iwae(model, x, k=7).bound, px.log_prob(x))


def test_precision_merge_matches_the_product_of_two_normals():
    g = torch.Generator().manual_seed(1)
    u_loc, u_ls, p_loc, p_ls = torch.randn(4, 50, dtype=torch.float64, generator=g)
    loc, scale = precision_merge(u_loc, u_ls, p_loc, p_ls)
    pu, pp = (-2 * u_ls).exp(), (-2 * p_ls).exp()  # precisions
    torch.testing.assert_close(scale, (pu + pp).rsqrt())
    torch.testing.assert_close(loc, (u_loc * pu + p_loc * pp) / (pu + pp))


def test_with_a_worse_posterior_elbo_below_iwae_below_log_px():
    model, px = linear_chain()
    with torch.no_grad():
        model.q_head[0].bias[:2] += 0.7  # shift q(z_1|z_2, x) away from the true posterior
        model.q_top.bias[1] += 0.5  # and widen q(z_2|x)
    x = px.sample((64,))
    exact = px.log_prob(x).mean()
    with torch.no_grad():
        e = elbo(model, x, n_samples=4000).bound.mean()
        bounds = [iwae_log_likelihood(model, x, k=k, chunk=500).mean() for k in (10, 100, 2000)]
    assert e < exact - 0.2
    assert e < bounds[0] < bounds[1] < bounds[2] <= exact + 1e-3
    assert exact - bounds[2] < 0.1 * (exact - e)


def _small(**kw):
    cfg = dict(kind="hvae", event_shape=[1, 8, 8], hidden=[32], latent_dims=[5, 3, 2])
    return build(**{**cfg, **kw})


def test_kl_decomposes_per_layer_and_sums_to_the_total():
    model = _small()
    x = (torch.rand(50, 1, 8, 8) > 0.5).float()
    with torch.no_grad():
        res = elbo(model, x)
        per_layer = torch.stack([g.sum(-1) for g in res.kl_per_dim.split(model.latent_groups, -1)])
        torch.testing.assert_close(per_layer.sum(0), res.kl)  # exact: the layers add up
        ev = evaluate(model, x, k=0)
    assert len(ev["kl_per_layer"]) == 3 and all(v > 0 for v in ev["kl_per_layer"])
    assert sum(ev["kl_per_layer"]) == pytest.approx(ev["kl"], rel=1e-4)
    # Each layer's analytic KL (given the layers above) matches E_q[log q_l − log p_l].
    with torch.no_grad():
        feats = model._features(x)
        p = model.top_down(feats, torch.Size([4000, 50]))
        for layer in range(3):
            mc = (p.log_q[layer] - p.log_p[layer]).mean(0)  # (B,)
            analytic = p.kl[layer].sum(-1)
            se = (p.log_q[layer] - p.log_p[layer]).std(0) / math.sqrt(4000)
            assert ((mc - analytic).abs() < 5 * se + 1e-3).all(), layer


def test_cached_and_fresh_scores_agree():
    model = _small()
    x = (torch.rand(7, 1, 8, 8) > 0.5).float()
    qz_x = model.encode(x)
    z = qz_x.rsample((3,))
    pz = model.prior()
    torch.testing.assert_close(pz.log_prob(z), pz.log_prob(z.clone()))  # cached vs recomputed
    torch.testing.assert_close(qz_x.log_prob(z), qz_x.log_prob(z.clone()))
    torch.testing.assert_close(qz_x.kl_per_dim(pz, z), qz_x.kl_per_dim(pz, z.clone()))


def test_sampling_runs_through_all_layers_with_temperature():
    model = _small()
    cold = [
        model.sample(4, temperature=0.0, mean=True, generator=torch.Generator().manual_seed(s))
        for s in (0, 1)
    ]
    assert torch.equal(*cold)  # temperature 0: every layer at its prior mean
    warm = model.sample(4, mean=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(cold[0], warm)
    z = model.top_down(None, torch.Size([20_000]), temperature=0.5).z
    assert z[:, -2:].std(0).sub(0.5).abs().max() < 0.02  # top layer: N(0, 0.5² I)
    assert model.prior().sample((3,)).shape == (3, 10)


def test_at_least_two_layers():
    with pytest.raises(ValueError, match="≥ 2 latent layers"):
        _small(latent_dims=[4])


def _train_cfg(**overrides):
    base = {
        "data.dataset": "digits",
        "model.kind": "hvae",
        "model.hidden": [32],
        "model.latent_dims": [6, 3],
        "train.epochs": 1,
        "train.batch_size": 100,
        "train.images": False,
    }
    return load_config(None, {**base, **overrides})


def test_gradient_skipping_skips_and_counts(tmp_path):
    run = vaekit.train(_train_cfg(**{"train.grad_skip": 1e-9}), tmp_path / "skip", log=str)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["grad_skipped_steps"] == row["step"] == 15
    from safetensors.torch import load_file

    from vaekit.checkpoint import latest_checkpoint

    state = load_file(str(latest_checkpoint(run) / "state/tensors.safetensors"))
    assert not [k for k in state if k.startswith("opt.")]  # Adam never stepped: no moments
    assert "test_kl_per_layer" in row and len(row["test_kl_per_layer"]) == 2


def test_per_group_free_bits_floor_each_layer():
    model = _small()
    x = (torch.rand(20, 1, 8, 8) > 0.5).float()
    torch.manual_seed(0)
    plain = elbo(model, x)
    torch.manual_seed(0)
    floored = elbo(model, x, free_bits=50.0, free_bits_groups=model.latent_groups)
    torch.testing.assert_close(plain.bound, floored.bound)  # the reported bound is untouched
    # every layer's KL is below 50 nats: the loss counts 3 × 50 in place of the KL
    expected = -plain.log_px_z.mean() + 3 * 50.0
    torch.testing.assert_close(floored.loss, expected)


def test_log_prob_of_plain_samples_keeps_its_gradient():
    """The score-function estimator differentiates log q(z|x) at draws made without gradient."""
    model = _small()
    qz_x = model.encode((torch.rand(8, 1, 8, 8) > 0.5).float())
    z = qz_x.sample((3,))
    assert not z.requires_grad and qz_x.log_prob(z).requires_grad
    elbo(model, (torch.rand(8, 1, 8, 8) > 0.5).float(), estimator="score").loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0
