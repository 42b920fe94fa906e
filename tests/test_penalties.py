"""Disentangling objective terms: closed forms, brute force and fixed-seed statistical checks."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from vaekit.penalties import (
    Discriminator,
    dip_covariance,
    dip_penalty,
    discriminator_loss,
    factor_tc_estimate,
    gaussian_log_density_matrix,
    mmd,
    mss_log_weights,
    permute_dims,
    tc_decomposition,
)

# ---------------------------------------------------------------------------- β-TCVAE


def _posterior_batch(b, d, seed, spread=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    loc = spread * torch.randn(b, d, generator=g, dtype=dtype)
    scale = 0.3 + torch.rand(b, d, generator=g, dtype=dtype)
    z = loc + scale * torch.randn(b, d, generator=g, dtype=dtype)
    return z, loc, scale


def test_log_density_matrix_matches_elementwise_normal():
    z, loc, scale = _posterior_batch(5, 3, seed=0)
    mat = gaussian_log_density_matrix(z, loc, scale)
    assert mat.shape == (5, 5, 3)
    for i in range(5):
        for j in range(5):
            torch.testing.assert_close(mat[i, j], Normal(loc[j], scale[j]).log_prob(z[i]))


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_decomposition_sums_to_kl_estimate_on_same_samples(estimator):
    z, loc, scale = _posterior_batch(64, 4, seed=1)
    parts = tc_decomposition(z, loc, scale, dataset_size=1000, estimator=estimator)
    log_q = Normal(loc, scale).log_prob(z).sum(-1)
    log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
    total = parts.mi + parts.tc + parts.dim_kl
    torch.testing.assert_close(total, (log_q - log_p).mean(), rtol=0, atol=1e-12)


def test_mss_weights_rows_sum_to_one_with_self_weight_one_over_n():
    w = mss_log_weights(6, 100, dtype=torch.float64).exp()
    torch.testing.assert_close(w.sum(1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(w.diagonal(), torch.full((6,), 0.01, dtype=torch.float64))
    assert torch.isclose(w[2, 3], torch.tensor((100 - 5) / (100 * 5), dtype=torch.float64))
    assert torch.isclose(w[2, 0], torch.tensor(1 / 5, dtype=torch.float64))
    with pytest.raises(ValueError):
        mss_log_weights(1, 100)
    with pytest.raises(ValueError):
        mss_log_weights(10, 5)


def test_identical_posteriors_mss_exact_zero_mws_known_bias():
    """q(z|x) the same for every x: q(z) = q(z|x) factorises, so MI = TC = 0 exactly. MSS's
    weights sum to one and recover that; MWS's lower bound loses log N per log-density."""
    b, d, n = 32, 3, 500
    g = torch.Generator().manual_seed(2)
    loc = (0.5 * torch.randn(1, d, generator=g, dtype=torch.float64)).expand(b, d)
    scale = torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64).expand(b, d)
    z = loc + scale * torch.randn(b, d, generator=g, dtype=torch.float64)
    kl = (Normal(loc, scale).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1).mean()
    mss = tc_decomposition(z, loc, scale, n, "mss")
    torch.testing.assert_close(mss.mi, torch.tensor(0.0, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(mss.tc, torch.tensor(0.0, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(mss.dim_kl, kl)
    mws = tc_decomposition(z, loc, scale, n, "mws")
    assert mws.mi.item() == pytest.approx(math.log(n), abs=1e-9)
    assert mws.tc.item() == pytest.approx((d - 1) * math.log(n), abs=1e-9)


def _gaussian_aggregate_batch(b, rho, s, seed):
    """Posteriors N(μ_n, s² I) with μ ~ N(0, (1 − s²) R), R = [[1, ρ], [ρ, 1]] ⊕ 1: the aggregate
    posterior of an unbounded dataset is N(0, (1 − s²) R + s² I), unit variances, correlation
    r = (1 − s²) ρ between z_1 and z_2, so TC = −½ log(1 − r²)."""
    g = torch.Generator().manual_seed(seed)
    cov = torch.eye(3, dtype=torch.float64)
    cov[0, 1] = cov[1, 0] = rho
    chol = torch.linalg.cholesky(cov * (1 - s**2))
    loc = torch.randn(b, 3, generator=g, dtype=torch.float64) @ chol.T
    scale = torch.full_like(loc, s)
    z = loc + scale * torch.randn(b, 3, generator=g, dtype=torch.float64)
    return z, loc, scale


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_tc_of_gaussian_aggregate_matches_closed_form(rho):
    n, s = 10**6, 0.6
    true_tc = -0.5 * math.log(1 - ((1 - s**2) * rho) ** 2)  # 0 or 0.152
    estimates = {"mss": [], "mws": []}
    for seed in range(2):
        z, loc, scale = _gaussian_aggregate_batch(1024, rho, s, seed)
        for est in estimates:
            estimates[est].append(tc_decomposition(z, loc, scale, n, est).tc.item())
    mss, mws = np.mean(estimates["mss"]), np.mean(estimates["mws"])
    assert mss == pytest.approx(true_tc, abs=0.02)
    assert mws - 2 * math.log(n) == pytest.approx(true_tc, abs=0.02)  # MWS: + (D − 1) log N


def test_decomposition_is_differentiable():
    z, loc, scale = _posterior_batch(16, 2, seed=3, dtype=torch.float32)
    loc.requires_grad_(True)
    parts = tc_decomposition(z, loc, scale, 100, "mss")
    (grad,) = torch.autograd.grad(parts.tc, loc)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError):
        tc_decomposition(z, loc, scale, 100, "unknown")
    with pytest.raises(ValueError):
        tc_decomposition(z.unsqueeze(0), loc, scale, 100)


# ---------------------------------------------------------------------------- MMD


def _brute_force_mmd(x, y, k):
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_matches_double_loop(kernel):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 3, generator=g, dtype=torch.float64) + 0.5
    scales = (0.5, 3.0)

    def k(a, b):
        r2 = float(((a - b) ** 2).sum())
        if kernel == "rbf":
            return sum(math.exp(-r2 / (2 * s)) for s in scales)
        return sum(2 * s / (2 * s + r2) for s in scales)

    assert mmd(x, y, kernel, scale=scales).item() == pytest.approx(_brute_force_mmd(x, y, k))
    one = _brute_force_mmd(x, y, lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / 6.0))
    assert mmd(x, y, "rbf").item() == pytest.approx(one)  # default ℓ² = D = 3


def test_mmd_rbf_closed_form_two_point_sets():
    """x = {(0,0), (1,0)}, y = {(0,1), (1,1)}, k = exp(−r²): e⁻¹ + e⁻¹ − ½(2e⁻¹ + 2e⁻²)."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert mmd(x, y, "rbf", scale=0.5).item() == pytest.approx(math.exp(-1) - math.exp(-2))


def test_mmd_statistics_zero_for_same_distribution_closed_form_for_shift():
    """E MMD²_u = 0 for P = Q; for N(0, I) vs N(μ, I) with RBF ℓ²:
    2 (ℓ²/(ℓ² + 2))^{D/2} (1 − exp(−‖μ‖²/(2(ℓ² + 2))))."""
    g = torch.Generator().manual_seed(5)
    d, n, ell2 = 2, 1500, 2.0
    mu = torch.tensor([1.0, 0.0], dtype=torch.float64)
    same, shifted = [], []
    for _ in range(3):
        x, y, w = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(3))
        same.append(mmd(x, y, "rbf", ell2).item())
        shifted.append(mmd(x, w + mu, "rbf", ell2).item())
    closed = 2 * (ell2 / (ell2 + 2)) ** (d / 2) * (1 - math.exp(-1.0 / (2 * (ell2 + 2))))
    assert abs(np.mean(same)) < 2e-3
    assert np.mean(shifted) == pytest.approx(closed, abs=6e-3)  # closed ≈ 0.118
    assert mmd(x, w + mu, "imq").item() > 0.02


def test_mmd_rejects_bad_inputs():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError):
        mmd(x, torch.zeros(3, 4))
    with pytest.raises(ValueError):
        mmd(x, torch.zeros(1, 2))
    with pytest.raises(ValueError):
        mmd(x, x, kernel="laplace")


# ---------------------------------------------------------------------------- DIP-VAE


def _numpy_dip(loc, scale, kind, lod, ld):
    b, d = loc.shape
    mean = loc.mean(0)
    cov = np.zeros((d, d))
    for n in range(b):
        cov += np.outer(loc[n] - mean, loc[n] - mean) / b
    if kind == "ii":
        cov += np.diag((scale**2).mean(0))
    off = sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return cov, lod * off + ld * sum((cov[i, i] - 1) ** 2 for i in range(d))


@pytest.mark.parametrize("kind", ["i", "ii"])
def test_dip_penalty_matches_numpy(kind):
    rng = np.random.default_rng(6)
    loc = rng.normal(size=(20, 4)) @ rng.normal(size=(4, 4))
    scale = rng.uniform(0.1, 1.0, size=(20, 4))
    cov, pen = _numpy_dip(loc, scale, kind, 2.0, 5.0)
    t_loc, t_scale = torch.from_numpy(loc), torch.from_numpy(scale)
    np.testing.assert_allclose(dip_covariance(t_loc, t_scale, kind).numpy(), cov, rtol=1e-12)
    np.testing.assert_allclose(np.cov(loc.T, bias=True), _numpy_dip(loc, scale, "i", 1, 1)[0])
    got = dip_penalty(t_loc, t_scale, kind, lambda_od=2.0, lambda_d=5.0).item()
    assert got == pytest.approx(pen, rel=1e-12)
    default_ld = 10.0 * 2.0 if kind == "i" else 2.0
    assert dip_penalty(t_loc, t_scale, kind, lambda_od=2.0).item() == pytest.approx(
        _numpy_dip(loc, scale, kind, 2.0, default_ld)[1], rel=1e-12
    )


def test_dip_penalty_zero_at_whitened_codes():
    rng = np.random.default_rng(7)
    loc = rng.normal(size=(50, 3))
    loc -= loc.mean(0)
    loc = loc @ np.linalg.inv(np.linalg.cholesky(np.cov(loc.T, bias=True))).T  # Cov = I
    assert dip_penalty(torch.from_numpy(loc), kind="i").item() == pytest.approx(0.0, abs=1e-20)
    # II: Cov[μ] = ½ I plus E σ² = ½ gives the identity again.
    scale = torch.full((50, 3), math.sqrt(0.5), dtype=torch.float64)
    half = torch.from_numpy(loc) * math.sqrt(0.5)
    assert dip_penalty(half, scale, "ii").item() == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(ValueError):
        dip_penalty(half, None, "ii")


# ---------------------------------------------------------------------------- FactorVAE


def test_permute_dims_permutes_each_column_independently():
    g = torch.Generator().manual_seed(8)
    base = torch.randn(500, 1, generator=g)
    z = base.expand(500, 3).clone()  # three identical columns
    out = permute_dims(z, torch.Generator().manual_seed(9))
    again = permute_dims(z, torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, again)
    for d in range(3):  # each column a permutation of its own values
        torch.testing.assert_close(out[:, d].sort().values, z[:, d].sort().values)
    corr = np.corrcoef(out.T.numpy())
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.15  # was exactly 1
    assert not torch.equal(out[:, 0], z[:, 0])


def test_discriminator_widths_and_output():
    disc = Discriminator(5, hidden=(7, 11))
    linears = [m for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 7), (7, 11), (11, 2)]
    assert disc(torch.zeros(4, 5)).shape == (4, 2)
    assert len([m for m in Discriminator(3).modules() if isinstance(m, torch.nn.Linear)]) == 7


def _correlated(n, rho, g):
    x = torch.randn(n, 2, generator=g)
    return torch.stack([x[:, 0], rho * x[:, 0] + math.sqrt(1 - rho**2) * x[:, 1]], 1)


def test_factor_tc_estimate_with_bayes_optimal_logits_is_the_tc():
    """logit_0 − logit_1 = log q(z) − log q(z_1) q(z_2) ⇒ the estimate is TC = −½ log(1 − ρ²)."""
    rho, g = 0.8, torch.Generator().manual_seed(10)
    z = _correlated(200_000, rho, g)
    cov = torch.tensor([[1.0, rho], [rho, 1.0]])
    joint = torch.distributions.MultivariateNormal(torch.zeros(2), cov).log_prob(z)
    prod = Normal(0.0, 1.0).log_prob(z).sum(-1)
    logits = torch.stack([joint, prod], 1) + 3.0  # a common offset cancels
    assert factor_tc_estimate(logits).item() == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.01)


def test_trained_discriminator_estimates_tc():
    torch.manual_seed(11)
    rho, g = 0.8, torch.Generator().manual_seed(11)
    disc = Discriminator(2, hidden=(32, 32))
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    for _ in range(300):
        z = _correlated(256, rho, g)
        loss = discriminator_loss(disc(z), disc(permute_dims(z, g)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tc = factor_tc_estimate(disc(_correlated(20_000, rho, g))).item()
    assert tc == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.12)  # ≈ 0.51
    assert loss.item() < math.log(2) - 0.05  # better than chance


def test_discriminator_loss_label_convention():
    sure = torch.tensor([[10.0, -10.0]])
    assert discriminator_loss(sure, sure.flip(1)).item() < 1e-6
    assert discriminator_loss(sure.flip(1), sure).item() > 10
