"""Reliability and honesty: every entry point checks every row once, bits/dim constants, KL per
dimension under a VampPrior, paired gaps, and values pinned by hand (not only shapes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Laplace, Normal, kl_divergence

import vaekit
from builders import build
from linear_gaussian import D_X, exact_log_px, make_ppca, sample_x
from vaekit import applications, latent
from vaekit.ais import ais_log_likelihood
from vaekit.config import ConfigError, DataInfo, ModelConfig, ObjectiveConfig, load_config
from vaekit.data import DataPrep, Dataset
from vaekit.data.prep import binarize, binarize_fast, flip
from vaekit.distributions import (
    SupportError,
    diag_gaussian,
    kl_per_dim,
    kl_terms,
    marginal_kl_per_dim,
)
from vaekit.estimators import Baseline, detached_posterior, score_term
from vaekit.evaluation import bits_per_dim, evaluate, iwae_log_likelihood, standard_error
from vaekit.inference import amortization_gap, refine
from vaekit.likelihoods import make_likelihood
from vaekit.likelihoods.images import GaussianLikelihood
from vaekit.models import build_model
from vaekit.objectives import (
    elbo,
    gaussian_parameters,
    iwae,
    kl_balanced,
    objective_from_config,
)
from vaekit.penalties import PenaltyBatch

LN2 = math.log(2.0)
IMAGE = dict(event_shape=[1, 8, 8], hidden=[16], latent_dim=3)


def _binary(n: int = 12, seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


# ---- 1. every public entry point checks every row, once --------------------------------------


def _grey_last_row(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[-1, 0, 3, 3] = 0.5  # one grey value in the last row: a check of x[:1] misses it
    return x


ENTRY_POINTS = {
    "vaekit.elbo": lambda m, x: vaekit.elbo(m, x),
    "vaekit.iwae": lambda m, x: vaekit.iwae(m, x, k=2),
    "vaekit.evaluate": lambda m, x: vaekit.evaluate(m, x, k=2, batch_size=4),
    "vaekit.log_likelihood": lambda m, x: vaekit.log_likelihood(m, x, k=2),
    "latent.encode": lambda m, x: latent.encode(m, x, batch_size=4),
    "latent.kl_by_dim": lambda m, x: latent.kl_by_dim(m, x, batch_size=4),
    "anomaly_scores": lambda m, x: applications.anomaly_scores(m, x, k=2, batch_size=4),
    "refine": lambda m, x: refine(m, x, steps=1),
    "amortization_gap": lambda m, x: amortization_gap(m, x, steps=1, batch_size=4),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_public_entry_points_refuse_a_bad_last_row(name):
    model = build(**IMAGE)
    with pytest.raises(SupportError, match="binary"):
        ENTRY_POINTS[name](model, _grey_last_row(_binary()))


def test_raw_8bit_levels_given_to_a_bernoulli_model_are_refused():
    model = build(**IMAGE)
    raw = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(SupportError, match="binarize"):
        vaekit.evaluate(model, raw, k=2)


def test_evaluate_checks_all_rows_in_one_call_and_training_does_not_check():
    model = build(**IMAGE)
    calls = []
    original = model.likelihood.check
    model.likelihood.check = lambda x: (calls.append(len(x)), original(x))[1]
    x = _binary(10)
    evaluate(model, x, k=2, batch_size=3)
    assert calls == [10]  # one vectorized pass over every row, not one per batch or per row
    calls.clear()
    evaluate(model, x, k=0, check=False)
    cfg = load_config(None, {}).objective
    objective_from_config(cfg, model)(model, x)  # the training step
    assert calls == []


def test_corrupted_inputs_are_checked_for_shape_and_finiteness():
    model = build(**IMAGE)
    x = _binary(4) * 0.7  # off the Bernoulli support: allowed for denoising
    assert applications.reconstruct(model, x).shape == x.shape
    x[-1, 0, 0, 0] = float("nan")
    with pytest.raises(SupportError, match="NaN"):
        applications.reconstruct(model, x)
    observed = torch.ones_like(x, dtype=torch.bool)
    observed[-1, 0, 0, 0] = False  # the NaN is masked: fine
    applications.infer_posterior(model, x, observed, steps=1)
    with pytest.raises(ValueError, match="shape"):
        applications.reconstruct(model, x[:, :, :4])


# ---- 2. bits/dim: log 256 for a density on 8-bit data only ---------------------------------------

OFFSETS = {  # nats added per dimension before converting to bits (pinned)
    ("bernoulli", 256): 0.0,
    ("gaussian", 256): 5.545177444479562,  # log 256: dequantized 8-bit data
    ("gaussian", None): 0.0,  # real-valued data keep their density
    ("categorical", 256): 0.0,
    ("logistic", 256): 0.0,
    ("logistic_mixture", 256): 0.0,
    ("poisson", None): 0.0,
    ("negbinomial", None): 0.0,
}


@pytest.mark.parametrize(("name", "levels"), sorted(OFFSETS, key=str))
def test_bits_per_dim_constant_is_pinned_per_likelihood(name, levels):
    shape = [1, 2, 2] if name == "logistic_mixture" else [4]
    cfg = ModelConfig(likelihood=name, hidden=[8], latent_dim=2, arch="mlp", kind="vae")
    model = build_model(cfg, DataInfo(event_shape=shape, levels=levels))
    assert model.likelihood.nats_offset_per_dim == OFFSETS[(name, levels)]


def test_bits_per_dim_formula_is_pinned():
    assert bits_per_dim(1000.0, 100) == pytest.approx(14.426950408889634, abs=1e-12)
    assert bits_per_dim(1000.0, 100, math.log(256)) == pytest.approx(22.426950408889635, abs=1e-12)


def test_real_valued_evaluation_has_no_8bit_constant_and_a_direct_stderr():
    """pPCA (float64, real-valued data, exact posterior): every importance weight is p(x), so
    evaluate's numbers are closed forms: nll = −mean log p(x), stderr = sd/√n,
    bpd = nll/(D ln 2)."""
    model, w, b, sigma = make_ppca()
    assert model.likelihood.nats_offset_per_dim == 0.0
    x = sample_x(40, w, b, sigma)
    exact = exact_log_px(x, w, b, sigma)
    for data in (x, x.float()):  # float32 data into a float64 model: cast, no crash
        ev = evaluate(model, data, k=7, batch_size=16)
        tol = 1e-9 if data.dtype == torch.float64 else 1e-4
        assert ev["nll"] == pytest.approx(float(-exact.mean()), abs=tol)
        direct = float(exact.std(unbiased=True)) / math.sqrt(40)
        assert ev["nll_stderr"] == pytest.approx(direct, abs=tol)
        assert ev["bpd"] == pytest.approx(ev["nll"] / D_X / LN2, abs=1e-12)
        assert ev["elbo_bpd"] == pytest.approx(-ev["elbo"] / D_X / LN2, abs=1e-12)


def test_standard_error_is_sd_over_root_n():
    v = torch.tensor([1.0, 2.0, 4.0, 7.0])  # mean 3.5, unbiased variance 7
    assert standard_error(v) == pytest.approx(math.sqrt(7.0) / 2.0, abs=1e-12)
    assert math.isnan(standard_error(v[:1]))


# ---- 3. KL per dimension under a VampPrior -------------------------------------------------------


def _vamp_with_a_dead_dimension():
    """A VampPrior VAE whose latent dimension 0 ignores the input: q(z_0|x) = N(0, 1) for every x
    and for every pseudo-input, so z_0's posterior marginal is the prior's: KL_0 = 0."""
    torch.manual_seed(0)
    model = build(**IMAGE, prior="vamp", prior_components=5)
    head = model.encoder.net[-1]  # Linear → (loc, raw scale), 2·D outputs
    d = model.latent_dim
    with torch.no_grad():
        head.weight[[0, d]] = 0.0
        head.bias[0] = 0.0
        head.bias[d] = math.log(math.expm1(1.0 - 1e-4))  # softplus(raw) + 1e-4 = 1
        head.weight[1:d] *= 20.0  # the other dimensions carry the input
    return model.eval()


def test_vamp_kl_per_dim_is_per_dimension_not_spread_evenly():
    model = _vamp_with_a_dead_dimension()
    x = _binary(16)
    with torch.no_grad():
        kl = kl_terms(model.encode(x), model.prior())
        res = elbo(model, x, n_samples=2)
    assert not kl.additive
    assert kl.per_dim[:, 0].abs().max() < 1e-5  # the dead dimension
    assert (kl.per_dim[:, 1:].mean(0) > 0.05).all()
    assert (res.kl_per_dim[:, 0].abs() < 1e-5).all() and res.kl_per_dim.shape == (16, 3)
    ev = evaluate(model, x, k=0)
    assert ev["active_units"] == 2 and abs(ev["kl_per_dim"][0]) < 1e-4
    order, values = latent.dims_by_kl(model, x)
    assert int(order[-1]) == 0 and abs(float(values[-1])) < 1e-5


def test_marginal_kl_matches_quadrature_of_the_1d_mixture():
    """KL(q_d ‖ p_d) with p_d the 1-D marginal of a mixture of diagonal Gaussians, against a
    trapezoid integral on a grid."""
    from torch.distributions import Categorical, MixtureSameFamily, Normal

    loc = torch.tensor([[-1.0, 0.5], [2.0, 0.0], [0.0, -0.5]], dtype=torch.float64)
    scale = torch.tensor([[0.5, 1.0], [0.8, 0.3], [1.5, 0.7]], dtype=torch.float64)
    pz = MixtureSameFamily(Categorical(logits=torch.zeros(3, dtype=torch.float64)),
                           diag_gaussian(loc, scale))  # fmt: skip
    q_loc = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    q_scale = torch.tensor([[0.4, 0.9]], dtype=torch.float64)
    qz_x = diag_gaussian(q_loc, q_scale)
    torch.manual_seed(0)
    mc = marginal_kl_per_dim(qz_x, pz, qz_x.sample((200_000,)))[0]
    grid = torch.linspace(-12, 12, 40001, dtype=torch.float64)
    for d in range(2):
        q = Normal(q_loc[0, d], q_scale[0, d])
        p = Normal(loc[:, d, None], scale[:, d, None]).log_prob(grid).exp().mean(0)
        integrand = q.log_prob(grid).exp() * (q.log_prob(grid) - p.log())
        assert float(mc[d]) == pytest.approx(float(torch.trapezoid(integrand, grid)), abs=0.01)
    total = kl_terms(qz_x, pz, qz_x.sample((200_000,))).total
    assert float(total) != pytest.approx(float(mc.sum()), abs=1e-3)  # not a decomposition


def test_vamp_refuses_per_dimension_free_bits_but_floors_its_total(tmp_path):
    model = _vamp_with_a_dead_dimension()
    x = _binary(4)
    with pytest.raises(ValueError, match="free_bits_per"):
        elbo(model, x, free_bits=0.5)
    with torch.no_grad():
        floored = elbo(model, x, free_bits=1e4, free_bits_groups=[model.latent_dim])
    assert float(floored.loss) == pytest.approx(float(-floored.log_px_z.mean() + 1e4), rel=1e-6)
    raw = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    ds = Dataset("tiny", raw, raw[:5], None, None, (1, 8, 8))
    overrides = {"model.prior": "vamp", "objective.free_bits": 0.5, "train.epochs": 1}
    with pytest.raises(ConfigError, match="free_bits_per"):
        vaekit.train(load_config(None, overrides), tmp_path / "run", dataset=ds, log=print)


def test_hierarchical_vamp_reports_each_layers_total_kl():
    torch.manual_seed(0)
    model = build(**IMAGE | {"kind": "hvae", "latent_dims": [4, 2]}, prior="vamp",
                  prior_components=5).eval()  # fmt: skip
    x = _binary(8)
    res = elbo(model, x)
    assert res.kl_per_group.shape == (8, 2)
    torch.testing.assert_close(res.kl_per_group.sum(-1), res.kl)
    ev = evaluate(model, x, k=0)
    assert sum(ev["kl_per_layer"]) == pytest.approx(ev["kl"], abs=1e-4)


def test_a_standard_prior_kl_per_dim_is_the_closed_form():
    loc, scale = torch.tensor([[0.5, -1.0]]), torch.tensor([[2.0, 0.5]])
    expected = 0.5 * (loc**2 + scale**2) - scale.log() - 0.5  # nats per dimension
    model = build(**IMAGE | {"latent_dim": 2})
    torch.testing.assert_close(kl_per_dim(diag_gaussian(loc, scale), model.prior()), expected)


# ---- 4. paired gaps ------------------------------------------------------------------------------


def test_approximation_gap_is_paired_per_example():
    model, w, b, sigma = make_ppca()
    x = sample_x(20, w, b, sigma)
    exact = exact_log_px(x, w, b, sigma)
    rep = amortization_gap(model, x, steps=20, batch_size=8, eval_samples=50, log_px=exact)
    assert rep["approximation_gap"] == pytest.approx(float(exact.mean()) - rep["elbo_refined"])
    assert rep["approximation_gap_stderr"] > 0
    with pytest.raises(ValueError, match="log_px"):
        amortization_gap(model, x, steps=1, log_px=exact[:3])


def test_evaluate_returns_the_per_example_values_behind_its_means():
    model, w, b, sigma = make_ppca()
    x = sample_x(12, w, b, sigma)
    ev = evaluate(model, x, k=5, batch_size=5, per_example=True)
    per = ev["per_example"]
    assert float(-per["log_px"].mean()) == pytest.approx(ev["nll"], abs=1e-12)
    assert float(per["elbo"].mean()) == pytest.approx(ev["elbo"], abs=1e-9)
    assert standard_error(per["log_px"]) == pytest.approx(ev["nll_stderr"], abs=1e-12)


# ---- 5. the autoencoder has no bound, float64 models, AIS without adaptation ---------------------


def test_autoencoder_evaluation_reports_no_bound_in_bits():
    model = build(**IMAGE, kind="ae")
    ev = evaluate(model, _binary(6), k=10)
    assert "elbo_bpd" not in ev and "bpd" not in ev and "nll" not in ev


def test_ais_without_adaptation_keeps_its_step_size_and_is_exact_at_the_posterior():
    model, w, b, sigma = make_ppca()
    x = sample_x(4, w, b, sigma)
    log_px, stats = ais_log_likelihood(
        model, x, steps=5, chains=2, leapfrog=2, init="encoder", step_size=0.07, adapt=False
    )
    assert stats["step_size"] == pytest.approx(0.07, abs=1e-12)
    torch.testing.assert_close(log_px, exact_log_px(x, w, b, sigma))
    _, adapted = ais_log_likelihood(model, x, steps=5, chains=2, leapfrog=2, step_size=0.07)
    assert adapted["step_size"] != pytest.approx(0.07, abs=1e-6)


# ---- 6. values pinned by hand ------------------------------------------------------------------


def test_bernoulli_log_prob_is_the_hand_computed_value():
    lik = make_likelihood("bernoulli", (2,))
    params = torch.tensor([[[0.3, -1.2]]], dtype=torch.float64)  # logits (B=1, n_params=1, 2)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # log σ(0.3) + log(1 − σ(−1.2)) = log σ(0.3) + log σ(1.2)
    assert float(lik(params).log_prob(x)) == pytest.approx(-0.8176377118065583, abs=1e-12)
    assert float(lik(params).base_dist.mean[0, 0]) == pytest.approx(1 / (1 + math.exp(-0.3)))


def test_gaussian_dequantization_divides_by_256():
    lik = make_likelihood("gaussian", (6,))
    raw = torch.tensor([[0, 1, 127, 128, 254, 255]], dtype=torch.uint8)
    x = lik.prepare(raw, torch.Generator().manual_seed(3))
    u = torch.rand(raw.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x, (raw.float() + u) / 256.0, rtol=0, atol=0)
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), raw) and float(x.max()) < 1.0


def test_binarization_probability_is_level_over_255():
    levels = torch.tensor([0, 51, 255], dtype=torch.uint8).repeat(40_000, 1)
    for fn in (binarize, binarize_fast):
        p = fn(levels, torch.Generator().manual_seed(0)).mean(0)
        assert float(p[0]) == 0.0 and float(p[2]) == 1.0
        assert float(p[1]) == pytest.approx(0.2, abs=4 * math.sqrt(0.2 * 0.8 / 40_000))
    # the fixed test split: 1[255·u < k] with the generator's u, pinned
    k = torch.tensor([[10, 100, 200, 250]], dtype=torch.uint8)
    u = torch.rand(k.shape, generator=torch.Generator().manual_seed(5))
    expected = (255.0 * u < k.float()).float()
    assert torch.equal(binarize(k, torch.Generator().manual_seed(5)), expected)
    prep = DataPrep(make_likelihood("bernoulli", (4,)), "auto")
    assert torch.equal(prep.fixed(k, seed=5), expected)


def test_iwae_subtracts_log_k():
    """With the exact posterior every weight is p(x): log (1/K) Σ w = log p(x) for any K, so a
    missing −log K is off by log K."""
    model, w, b, sigma = make_ppca()
    x = sample_x(6, w, b, sigma)
    exact = exact_log_px(x, w, b, sigma)
    for k in (1, 7, 64):
        torch.testing.assert_close(iwae_log_likelihood(model, x, k=k, chunk=5), exact)
        torch.testing.assert_close(vaekit.iwae(model, x, k=k).bound, exact)


def test_log_likelihood_is_the_iwae_estimate_of_checked_data():
    model, w, b, sigma = make_ppca()
    x = sample_x(5, w, b, sigma)
    exact = exact_log_px(x, w, b, sigma)
    torch.testing.assert_close(vaekit.log_likelihood(model, x, k=3), exact)
    torch.testing.assert_close(vaekit.log_likelihood(model, x.float(), k=3, chunk=2), exact)


def _logistic_bin_probability(k: float, loc: float, s: float) -> float:
    """P(x = k) of the discretized logistic by hand: the logistic CDF over the bin of k on [−1, 1]
    (centre 2k/255 − 1, half width 1/255), the edge bins taking the tails."""
    cdf = lambda t: 1.0 / (1.0 + math.exp(-(t - loc) / s))  # noqa: E731
    c = 2.0 * k / 255.0 - 1.0
    upper = 1.0 if k == 255 else cdf(c + 1.0 / 255.0)
    lower = 0.0 if k == 0 else cdf(c - 1.0 / 255.0)
    return upper - lower


def test_discretized_logistic_probabilities_are_the_hand_computed_bins():
    from vaekit.distributions import DiscretizedLogistic

    loc, s = 0.1, 0.2
    f64 = dict(dtype=torch.float64)
    d = DiscretizedLogistic(torch.tensor(loc, **f64), torch.tensor(s, **f64))
    for k in (0, 1, 140, 254, 255):
        expected = math.log(_logistic_bin_probability(k, loc, s))
        got = float(d.log_prob(torch.tensor(float(k), dtype=torch.float64)))
        assert got == pytest.approx(expected, abs=1e-9), k
    # far in the tail the CDF difference underflows: density × bin width (2/255) instead
    loc, s, k = -0.9, 0.05, 200.0
    tail = DiscretizedLogistic(torch.tensor(loc, **f64), torch.tensor(s, **f64))
    mid = (2 * k / 255 - 1 - loc) / s
    expected = -mid - math.log(s) - 2 * math.log1p(math.exp(-mid)) + math.log(2 / 255)
    assert float(tail.log_prob(torch.tensor(k, **f64))) == pytest.approx(expected, abs=1e-9)
    assert float(tail.mean) == round((loc + 1) * 127.5)


def test_discretized_logistic_samples_follow_its_probabilities():
    from vaekit.distributions import DiscretizedLogistic

    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.full((40_000,), 0.2), torch.full((40_000,), 0.03))
    x = d.sample()
    levels = torch.arange(256.0)
    p = d.log_prob(levels[:, None].expand(256, 1)).exp()[:, 0].double()  # (256,)
    freq = torch.bincount(x.long(), minlength=256).double() / len(x)
    sd = (p * (1 - p) / len(x)).sqrt()
    assert ((freq - p).abs() <= 5 * sd + 1e-4).all()
    assert float(x.min()) >= 0 and float(x.max()) <= 255 and torch.equal(x, x.round())


def test_group_kl_sums_exact_terms_takes_a_posteriors_layers_and_refuses_marginals():
    from vaekit.distributions import KLTerms
    from vaekit.objectives import group_kl

    per_dim = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 0.0, 1.0, 0.0, 2.0]])
    total = per_dim.sum(-1)
    exact = KLTerms(total, per_dim)
    expected = torch.tensor([[3.0, 12.0], [0.5, 3.0]])
    torch.testing.assert_close(group_kl(exact, [2, 3]), expected)
    torch.testing.assert_close(group_kl(exact, [5]), total[:, None])
    layered = KLTerms(total + 1, per_dim, False, torch.tensor([[7.0, 9.0], [1.0, 3.5]]))
    torch.testing.assert_close(group_kl(layered, [2, 3]), layered.per_group)
    torch.testing.assert_close(group_kl(layered, [5]), (total + 1)[:, None])
    marginal = KLTerms(total + 1, per_dim, additive=False)
    torch.testing.assert_close(group_kl(marginal, [5]), (total + 1)[:, None])
    with pytest.raises(ValueError, match="decomposition"):
        group_kl(marginal, [2, 3])
    with pytest.raises(ValueError, match="decomposition"):  # per_group of other sizes
        group_kl(KLTerms(total, per_dim, False, torch.ones(2, 3)), [2, 3])


def test_logistic_head_reads_loc_then_softplus_scale():
    from vaekit.distributions import DiscretizedLogistic

    lik = make_likelihood("logistic", (3,)).double()
    params = torch.tensor([[[0.2, -0.5, 0.9], [-1.0, 0.3, 2.0]]], dtype=torch.float64)
    x = torch.tensor([[0.0, 100.0, 255.0]], dtype=torch.float64)
    scale = torch.nn.functional.softplus(params[:, 1]) + 1e-3
    expected = DiscretizedLogistic(params[:, 0], scale).log_prob(x).sum(-1)
    torch.testing.assert_close(lik(params).log_prob(x), expected, rtol=0, atol=1e-12)


def test_count_heads_check_integer_tensors_and_clamp_the_dispersion():
    from vaekit.likelihoods.counts import MAX_LOG_RATE, check_counts

    check_counts("poisson", torch.tensor([[0, 3, 7]]))  # integer tensors: zeros are counts
    with pytest.raises(SupportError, match="non-negative integer"):
        check_counts("poisson", torch.tensor([[0, -1, 7]]))
    for name in ("poisson", "negbinomial"):
        with pytest.raises(SupportError, match=name):
            make_likelihood(name, (2,)).check(torch.tensor([[0.0, 0.5]]))
    nb = make_likelihood("negbinomial", (2,))
    assert torch.equal(nb.log_dispersion, torch.zeros(2))  # θ = 1 at the start
    eta = torch.zeros(1, 1, 2)
    with torch.no_grad():
        nb.log_dispersion.copy_(torch.tensor([3 * MAX_LOG_RATE, -3 * MAX_LOG_RATE]))
    theta = nb(eta).base_dist.total_count[0]
    torch.testing.assert_close(theta.log(), torch.tensor([MAX_LOG_RATE, -MAX_LOG_RATE]))


def test_marginal_log_prob_is_the_1d_mixture_for_any_leading_shape_and_refuses_others():
    from torch.distributions import Categorical, Gamma, Independent, MixtureSameFamily, Normal

    from vaekit.distributions import marginal_log_prob

    loc, scale = torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[1.0, 0.5], [0.3, 2.0]])
    pz = MixtureSameFamily(Categorical(logits=torch.tensor([0.0, 1.0])), diag_gaussian(loc, scale))
    w = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    z = torch.tensor([[0.5, -0.2], [1.5, 3.0], [-2.0, 0.0]])  # (B, D): no sample dimension
    by_hand = (w[:, None, None] * Normal(loc[:, None], scale[:, None]).log_prob(z).exp()).sum(0)
    torch.testing.assert_close(marginal_log_prob(pz, z), by_hand.log())
    torch.testing.assert_close(marginal_log_prob(pz, z[None, None]), by_hand.log()[None, None])
    mix = Categorical(logits=torch.zeros(2))
    for comps in (
        Normal(torch.zeros(2), torch.ones(2)),
        Independent(Gamma(torch.ones(2, 3), 1.0), 1),
    ):
        with pytest.raises(ValueError, match="no per-dimension KL"):
            marginal_log_prob(MixtureSameFamily(mix, comps), z)


def test_standard_normal_expands_keeping_its_dtype():
    from vaekit.distributions import standard_normal

    p = standard_normal(3, dtype=torch.float64).base_dist.expand((4, 3))
    assert p.batch_shape == (4, 3) and p.loc.dtype == torch.float64
    assert torch.equal(p.loc, torch.zeros(4, 3, dtype=torch.float64))


def test_dreg_hook_scales_the_gradient_reaching_each_draw_by_its_normalized_weight():
    from vaekit.estimators import square_importance_weights

    z = torch.randn(3, 2, 4, requires_grad=True)  # (K, B, D)
    log_w = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
    square_importance_weights(z, log_w)
    c = torch.randn(3, 2, 4)
    (g,) = torch.autograd.grad((z * c).sum(), z)
    torch.testing.assert_close(g, c * torch.softmax(log_w, 0)[..., None])


def test_draws_per_pass_is_about_1024_decoder_rows():
    from vaekit.evaluation import draws_per_pass

    assert draws_per_pass(3, 1000) == 341 and isinstance(draws_per_pass(3, 1000), int)
    assert draws_per_pass(1, 5000) == 1024 and draws_per_pass(5000, 1000) == 1
    assert draws_per_pass(100, 1) == 1 and draws_per_pass(10, 50, chunk=7) == 7


def test_robust_power_fit_is_the_likelihood_maximizer_pinned():
    from scipy.stats import yeojohnson_llf

    from vaekit.likelihoods.yeo_johnson import fit_yeo_johnson

    c, r, lam = fit_yeo_johnson(np.array([1.0, 2.0, 4.0]))  # no outliers: λ = argmax llf
    assert (c, r) == (2.0, 1.4826) and lam == pytest.approx(0.2866317, abs=1e-4)
    z = (np.array([1.0, 2.0, 4.0]) - c) / r
    assert yeojohnson_llf(lam, z) > max(
        yeojohnson_llf(lam - 0.02, z), yeojohnson_llf(lam + 0.02, z)
    )
    assert fit_yeo_johnson(np.array([1.0, 2.0])) == (0.0, 1.0, 1.0)  # < 3 rows: identity
    # MAD 0 (mostly zeros): the spread is the standard deviation, the shape stays the identity
    assert fit_yeo_johnson(np.r_[np.zeros(6), 1, 2, 3, 4]) == (0.0, math.sqrt(2.0), 1.0)
    rng = np.random.default_rng(3)  # 300 log-normal rows and 3 gross outliers, pinned
    c, r, lam = fit_yeo_johnson(np.r_[rng.lognormal(0.5, 0.6, 300), [40.0, 55.0, -30.0]])
    assert c == pytest.approx(1.6747684218726409, abs=1e-12)
    assert r == pytest.approx(0.9715244169553201, abs=1e-12)
    assert lam == pytest.approx(0.18722607, abs=1e-4)


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
def test_iwae_result_and_encoder_gradient_are_the_formulas(estimator):
    """On the same seeded draws: L_K, E log p(x|z), the analytic KL, and the encoder gradient of
    −mean L_K for each estimator, with w̃ = softmax_k log w_k and log w at q's parameters held
    fixed (stl, dreg): reparam ∇L_K, stl Σ_k w̃_k ∇log w_k, dreg Σ_k w̃_k² ∇log w_k."""
    from test_estimators import perturbed_ppca

    from vaekit.estimators import detached_posterior

    model, w, b, sigma = perturbed_ppca()
    x = sample_x(4, w, b, sigma)
    enc = list(model.encoder.parameters())
    torch.manual_seed(0)
    res = vaekit.iwae(model, x, k=5, estimator=estimator)
    got = torch.autograd.grad(res.loss, enc)
    torch.manual_seed(0)
    qz_x = model.encode(x)
    z = qz_x.rsample((5,))
    log_px_z = model.decode(z).log_prob(x)
    q = qz_x if estimator == "reparam" else detached_posterior(qz_x)
    log_w = log_px_z + model.prior().log_prob(z) - q.log_prob(z)
    bound = torch.logsumexp(log_w, 0) - math.log(5)
    torch.testing.assert_close(res.bound, bound)
    torch.testing.assert_close(float(res.loss.detach()), float(-bound.detach().mean()))
    torch.testing.assert_close(res.log_px_z, log_px_z.mean(0))
    torch.testing.assert_close(res.kl, kl_per_dim(qz_x, model.prior()).sum(-1))
    assert res.kl_per_dim.shape == (4, 2) and res.kl_per_group is None
    wt = torch.softmax(log_w.detach(), 0)
    surrogate = {"reparam": bound, "stl": (wt * log_w).sum(0), "dreg": (wt**2 * log_w).sum(0)}
    expected = torch.autograd.grad(-surrogate[estimator].mean(), enc)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e)


def test_conditional_bounds_pass_the_labels_through():
    torch.manual_seed(0)
    model = build(**IMAGE, kind="cvae", n_classes=3).eval()
    x, y = _binary(6), torch.arange(6) % 3
    torch.manual_seed(1)
    got = vaekit.iwae(model, x, y, k=4).bound
    torch.manual_seed(1)
    qz_x = model.encode(x, y)
    z = qz_x.rsample((4,))
    log_w = model.decode(z, y).log_prob(x) + model.prior().log_prob(z) - qz_x.log_prob(z)
    torch.testing.assert_close(got, torch.logsumexp(log_w, 0) - math.log(4))
    torch.manual_seed(1)
    assert not torch.allclose(vaekit.iwae(model, x, (y + 1) % 3, k=4).bound, got)


def test_iwae_reports_each_layers_kl_and_metrics_are_batch_means():
    torch.manual_seed(0)
    model = build(**IMAGE | {"kind": "hvae", "latent_dims": [4, 2]}).eval()
    x = _binary(5)
    with torch.no_grad():
        res = vaekit.iwae(model, x, k=3)
    assert res.kl_per_group.shape == (5, 2)
    torch.testing.assert_close(res.kl_per_group.sum(-1), res.kl)
    m = res.metrics()
    assert m["loss"] == pytest.approx(float(res.loss)) and m["kl"] == pytest.approx(
        float(res.kl.mean())
    )
    assert m["bound"] == pytest.approx(float(res.bound.mean()))
    assert m["recon"] == pytest.approx(float(res.log_px_z.mean()))
    assert res.metrics(loss=1.5)["loss"] == 1.5
    assert standard_error(torch.tensor([1.0, 3.0])) == pytest.approx(1.0, abs=1e-12)


def test_data_prep_draws_from_the_generator_it_is_given():
    raw = torch.randint(0, 256, (3, 5), dtype=torch.uint8)
    dyn = DataPrep(make_likelihood("bernoulli", (5,)), "auto")
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    assert torch.equal(dyn(raw, g()), binarize_fast(raw, g()))
    assert torch.equal(dyn.fixed(raw), binarize(raw, torch.Generator().manual_seed(0)))
    binary = (raw > 127).float()
    assert torch.equal(dyn.fixed(binary), binary)  # float data pass unchanged
    gauss = DataPrep(make_likelihood("gaussian", (5,)), "auto")
    lik = gauss.likelihood
    assert torch.equal(gauss(raw, g()), lik.prepare(raw, g()))
    assert torch.equal(gauss.fixed(raw, seed=4), lik.prepare(raw, g()))


# ---- 7. survivors of the last mutation pass, pinned (docs/reliability.md) ------------------------


def _chunked_iwae_by_hand(model, x, y, chunks: list[int]) -> torch.Tensor:
    """log (1/K) Σ_k w_k with the K draws made ``chunks`` at a time, from the formula."""
    qz_x = model.encode(x, y)
    parts = []
    for c in chunks:
        z = qz_x.rsample((c,))
        decoded = model.decode(z) if y is None else model.decode(z, y)
        parts.append(decoded.log_prob(x) + model.prior().log_prob(z) - qz_x.log_prob(z))
    return torch.logsumexp(torch.cat(parts), 0) - math.log(sum(chunks))


def test_log_likelihood_defaults_to_1000_draws_on_an_inexact_posterior():
    """With q ≠ p(z|x) the estimate depends on K and on the draws: the default is K = 1000 in
    chunks of about 1024 decoder rows (256, 256, 256, 232 for 4 rows), close to the exact log p(x)
    yet not equal to it; an explicit K and chunk are used as given."""
    from test_estimators import perturbed_ppca

    model, w, b, sigma = perturbed_ppca()
    x = sample_x(4, w, b, sigma)
    torch.manual_seed(0)
    got = vaekit.log_likelihood(model, x)
    torch.manual_seed(0)
    torch.testing.assert_close(got, _chunked_iwae_by_hand(model, x, None, [256, 256, 256, 232]))
    exact = exact_log_px(x, w, b, sigma)
    assert (got - exact).abs().max() < 0.1 and not torch.allclose(got, exact, atol=1e-3)
    torch.manual_seed(0)
    got = vaekit.log_likelihood(model, x, k=12, chunk=5)
    torch.manual_seed(0)
    torch.testing.assert_close(got, _chunked_iwae_by_hand(model, x, None, [5, 5, 2]))


def test_log_likelihood_of_a_conditional_model_uses_the_labels():
    torch.manual_seed(0)
    model = build(**IMAGE, kind="cvae", n_classes=3).eval()
    x, y = _binary(6), torch.arange(6) % 3
    with torch.no_grad():
        torch.manual_seed(1)
        got = vaekit.log_likelihood(model, x, y, k=7, chunk=3)
        torch.manual_seed(1)
        torch.testing.assert_close(got, _chunked_iwae_by_hand(model, x, y, [3, 3, 1]))
        torch.manual_seed(1)
        assert not torch.allclose(vaekit.log_likelihood(model, x, (y + 1) % 3, k=7, chunk=3), got)


def test_iwae_defaults_to_five_draws():
    from test_estimators import perturbed_ppca

    model, w, b, sigma = perturbed_ppca()
    x = sample_x(4, w, b, sigma)
    torch.manual_seed(0)
    got = vaekit.iwae(model, x).bound
    torch.manual_seed(0)
    torch.testing.assert_close(got, _chunked_iwae_by_hand(model, x, None, [5]))


def test_log_weights_of_a_conditional_model_use_the_labels():
    from vaekit.objectives import log_weights

    torch.manual_seed(0)
    model = build(**IMAGE, kind="cvae", n_classes=3).eval()
    x, y = _binary(5), torch.arange(5) % 3
    with torch.no_grad():
        qz_x = model.encode(x, y)
        torch.manual_seed(2)
        log_w, log_px_z = log_weights(model, x, qz_x, 4, y)
        torch.manual_seed(2)
        z = qz_x.rsample((4,))
        expected = model.decode(z, y).log_prob(x)
    torch.testing.assert_close(log_px_z, expected)
    torch.testing.assert_close(log_w, expected + model.prior().log_prob(z) - qz_x.log_prob(z))


def test_yeo_johnson_log_slope_closed_forms_at_zero_and_one():
    """log YJ'(z): 0 at z = 0 for every λ (the slope there is 1); λ = 0 is log(1 + z) for z ≥ 0
    (slope ½ at z = 1) and λ = 2 is −log(1 − z) for z < 0 (slope ½ at z = −1)."""
    from vaekit.likelihoods.yeo_johnson import yeo_johnson_log_slope

    z = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    for lam, expected in ((0.0, [LN2, 0.0, -LN2]), (1.0, [0.0, 0.0, 0.0]), (2.0, [-LN2, 0, LN2])):
        got = yeo_johnson_log_slope(z, torch.tensor(lam, dtype=torch.float64))
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_robust_power_fit_of_degenerate_cores():
    """The degenerate-core rule, column by column: a core of 2 rows keeps the identity; a core of
    exactly 3 rows is fitted (here λ hits the range's end, 0); a 5-row core whose robust z-scores
    span exactly 1 (the scale is 1.4826 · 1: z = v / 1.4826) is fitted too (λ hits 2)."""
    from vaekit.likelihoods.yeo_johnson import fit_yeo_johnson

    # [0, 1, 1e4]: z = (−0.67, 0, 6744); even after the λ fit the far row is an outlier
    assert fit_yeo_johnson(np.array([0.0, 1.0, 1e4])) == (1.0, 1.4826, 1.0)
    assert fit_yeo_johnson(np.array([0.0, 1.0, 10.0])) == (1.0, 1.4826, 0.0)  # all 3 kept
    core = [-1.0, -0.3, 0.0, 0.2, 0.4826]  # the largest deviation 1 is the MAD of all 9 rows
    v = np.array([-1000.0, -900.0, *core, 900.0, 1000.0])
    assert np.ptp(np.array(core) / 1.4826) == 1.0
    assert fit_yeo_johnson(v) == (0.0, 1.4826, 2.0)


def test_binarize_fast_is_the_exact_integer_comparison_at_every_draw():
    """x = 1[s·255 < 65536·k] for the generator's 16-bit draws s: the level just above each draw's
    threshold gives 1 everywhere, the level at it 0 (a constant off by 2⁻¹⁶ shifts thresholds)."""
    n = 4096
    words = torch.empty(n // 4, dtype=torch.int64)
    words.random_(-(2**63), None, generator=torch.Generator().manual_seed(3))
    s = words.view(torch.int16).long() + 32768  # the draws binarize_fast makes from seed 3
    top = s * 255 // 65536 + 1  # the smallest k with s·255 < 65536·k
    assert (top <= 255).all() and (top >= 1).all()
    ones = binarize_fast(top.to(torch.uint8), torch.Generator().manual_seed(3))
    zeros = binarize_fast((top - 1).to(torch.uint8), torch.Generator().manual_seed(3))
    assert torch.equal(ones, torch.ones(n)) and torch.equal(zeros, torch.zeros(n))


# ---- 8. survivors of the full mutation run (pass 3), pinned (docs/reliability.md) -------------


def test_score_term_is_zero_valued_with_advantage_times_score_as_gradient():
    theta = torch.tensor([0.3, -0.2], requires_grad=True)
    log_qz = (theta * torch.tensor([1.0, 2.0])).unsqueeze(0)  # (S=1, B=2), ∂/∂θ_b = (1, 2)
    signal = torch.tensor([[5.0, -1.0]])
    term = score_term(signal, log_qz)  # the default baseline is 0
    assert torch.equal(term, torch.zeros(1, 2))
    term.sum().backward()
    assert torch.equal(theta.grad, torch.tensor([5.0, -2.0]))  # f · ∂log q
    theta.grad = None
    log_qz = (theta * torch.tensor([1.0, 2.0])).unsqueeze(0)
    score_term(signal, log_qz, torch.tensor([1.0, 2.0])).sum().backward()
    assert torch.equal(theta.grad, torch.tensor([4.0, -6.0]))  # (f − b) · ∂log q


def test_baseline_is_a_bias_corrected_running_mean_plus_a_least_squares_network():
    learned = Baseline(3)
    assert learned.net[0].out_features == 100 and learned.decay == 0.9  # the documented defaults
    torch.manual_seed(0)
    torch.nn.init.normal_(learned.net[2].weight)
    torch.nn.init.constant_(learned.net[2].bias, 0.5)
    x = torch.randn(4, 3, dtype=torch.float64)  # float64 input: read in the baseline's float32
    b = learned(x)
    expected = learned.net(x.float()).squeeze(-1)  # running mean 0 + net(x)
    assert b.shape == (4,) and torch.equal(b, expected)
    signal = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(learned.loss(signal, b), (signal - b).pow(2).mean())
    plain = Baseline()
    assert plain.net is None and float(plain.loss(signal, plain(x))) == 0.0
    values = [2.0, 4.0, *map(float, range(10))]  # 12 updates: rate max(0.1, 1/n)
    mean = 0.0
    for n, v in enumerate(values, start=1):
        plain.update(torch.tensor([v]))
        mean += max(0.1, 1.0 / n) * (v - mean)
    assert float(plain.mean) == pytest.approx(mean, abs=1e-6) and mean != pytest.approx(4.5)
    plain.eval()
    plain.update(torch.tensor([100.0]))  # evaluation does not move it
    assert float(plain.mean) == pytest.approx(mean, abs=1e-6)


def _cvae():
    torch.manual_seed(0)
    return build(**IMAGE, kind="cvae", n_classes=3), _binary(6), torch.arange(6) % 3


def test_the_configured_iwae_objective_is_iwae_with_its_k_estimator_and_labels():
    model, x, y = _cvae()
    objective = objective_from_config(ObjectiveConfig(name="iwae", n_samples=3, estimator="dreg"))

    def gradient(f):
        torch.manual_seed(5)
        model.zero_grad()
        res = f()
        res.loss.backward()
        return res.loss.detach(), [p.grad.clone() for p in model.encoder.parameters()]

    got = gradient(lambda: objective(model, x, y))
    want = gradient(lambda: iwae(model, x, y, k=3, estimator="dreg"))
    plain = gradient(lambda: iwae(model, x, y, k=3))  # the pathwise gradient differs
    assert torch.equal(got[0], want[0])
    assert all(torch.equal(a, b) for a, b in zip(got[1], want[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(got[1], plain[1], strict=True))
    other = gradient(lambda: objective(model, x, (y + 1) % 3))
    assert not torch.equal(other[0], got[0])  # the labels reach the bound


def test_objective_parameters_baseline_with_the_model_discriminator_at_factor_lr():
    model = build(**IMAGE)
    score = objective_from_config(ObjectiveConfig(estimator="score"), model)
    assert [id(p) for p in score.main_parameters()] == [id(p) for p in score.baseline.parameters()]
    factor = objective_from_config(ObjectiveConfig(penalty="factor", factor_lr=3e-4), model)
    assert factor.make_aux_optimizer().param_groups[0]["lr"] == 3e-4


def test_the_discriminator_step_takes_every_micro_batch_and_gathers_them():
    torch.manual_seed(0)
    model = build(**IMAGE)
    objective = objective_from_config(ObjectiveConfig(penalty="factor", factor_hidden=[8]), model)
    opt = objective.make_aux_optimizer()
    x = _binary(12)
    seen = []

    def gather(codes):
        seen.append(codes.shape)
        return torch.cat([codes, codes])  # as if a second process held the same rows

    objective(model, x[:3], step=1)  # a skipped step: no discriminator step follows
    objective(model, x[:4], step=2)  # step 2: two micro-batches
    objective(model, x[4:9], step=2)
    logged = objective.after_step(model, lambda: (x, None), opt, gather=gather)
    assert seen == [(9, 3)] and math.isfinite(logged["disc_loss"])
    with torch.no_grad():
        objective(model, x, step=3)  # evaluation leaves no codes behind
    assert objective.after_step(model, lambda: (x, None), opt) == {}


def test_penalty_logs_are_means_over_the_draws():
    torch.manual_seed(0)
    model = build(**IMAGE)
    cfg = ObjectiveConfig(penalty="tc", n_samples=2)
    objective = objective_from_config(cfg, model, dataset_size=100)
    x = _binary(8)
    torch.manual_seed(3)
    res = objective(model, x)
    qz_x = model.encode(x)
    loc, scale = qz_x.base_dist.loc, qz_x.base_dist.scale
    torch.manual_seed(3)
    draws = elbo(model, x, n_samples=2, qz_x=qz_x).z  # (S, B, D): the same two draws
    logged = {}
    for z in draws:
        _, terms = objective.penalty.term(PenaltyBatch(z, loc, scale, None, 100, None), cfg, 1.0)
        for key, v in terms.items():
            logged[key] = logged.get(key, 0.0) + float(v) / 2
    assert set(logged) <= set(res.terms) and logged
    for key, v in logged.items():
        assert float(res.terms[key]) == pytest.approx(v, abs=1e-5), key


def test_gaussian_parameters_refuse_other_or_unflattened_posteriors():
    loc, scale = torch.zeros(2, 3), torch.ones(2, 3)
    assert gaussian_parameters(Independent(Normal(loc, scale), 1))[0] is loc
    for q in (Independent(Laplace(loc, scale), 1), Independent(Normal(loc[None], scale[None]), 1)):
        with pytest.raises(ValueError, match="this penalty needs a diagonal-Gaussian"):
            gaussian_parameters(q)


def test_kl_balancing_of_one_group_is_the_beta_elbo_loss():
    torch.manual_seed(0)
    model = build(**IMAGE)
    x = _binary(8)
    res = elbo(model, x, beta=0.3)
    balanced = kl_balanced(res, model, 0.3)  # one group: γ = 1
    torch.testing.assert_close(balanced.loss, -(res.log_px_z - 0.3 * res.kl).mean())


def test_data_prep_auto_augments_nothing_and_flips_with_its_generator():
    lik = make_likelihood("bernoulli", (1, 4, 4))
    assert DataPrep(lik, "dynamic", "auto").augment == "none"
    raw = torch.randint(0, 256, (16, 1, 4, 4), dtype=torch.uint8)
    prep = DataPrep(lik, "none", "flip")
    torch.manual_seed(1)
    a = prep(raw, torch.Generator().manual_seed(7))
    torch.manual_seed(2)  # the global generator plays no part
    b = prep(raw, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(a, flip(raw, torch.Generator().manual_seed(7)).float())


def test_evaluate_passes_labels_k_and_chunks_through():
    model, x, y = _cvae()
    model.eval()
    got = evaluate(model, x, k=7, chunk=3, labels=y, seed=4, batch_size=6, per_example=True)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(4)
        elbo(model, x, y)  # evaluate's ELBO draw comes first
        by_hand = _chunked_iwae_by_hand(model, x, y, [3, 3, 1]).double()
    torch.testing.assert_close(got["per_example"]["log_px"], by_hand)
    other = evaluate(model, x, k=7, chunk=3, labels=(y + 1) % 3, seed=4)
    assert other["elbo"] != got["elbo"]
    ppca, w, b, sigma = make_ppca()
    x_ppca = sample_x(20, w, b, sigma)
    one = evaluate(ppca, x_ppca, k=1)  # K = 1 still gives the IWAE estimate: exact here
    assert one["nll"] == pytest.approx(float(-exact_log_px(x_ppca, w, b, sigma).mean()), abs=1e-6)


ACCEPTED = [
    dict(warmup="linear", warmup_steps=1),
    dict(warmup="cyclical", warmup_steps=10, warmup_ratio=1.0),
    dict(free_bits_per="group", free_bits=0.5),
    dict(beta=0.0),
    dict(beta=0.5, free_bits=0.0),
    dict(kl_balance=True),
    dict(penalty="factor", factor_lr=1e-9, factor_hidden=[1]),
    dict(penalty="tc", factor_lr=0.0, factor_hidden=[0]),  # factor's settings, unused
    dict(penalty="dip-i", dip_lambda_d=0.0),
    dict(name="iwae", n_samples=2),
]
REFUSED = [
    dict(warmup="cyclical", warmup_steps=10, warmup_ratio=0.0),
    dict(beta=-0.5),
    dict(free_bits=-0.5),
    dict(kl_balance=True, free_bits=0.5),
    dict(kl_balance=True, estimator="stl"),
    dict(penalty="factor", factor_lr=0.0),
    dict(penalty="factor", factor_hidden=[8, 0]),
    dict(name="iwae", beta=2.0),
    dict(name="iwae", warmup="linear", warmup_steps=10),
    dict(name="iwae", free_bits=0.5),
    dict(penalty="dip-ii", dip_lambda_d=-1.0),
    dict(warmup="cyclical", warmup_steps=10, warmup_ratio=1.5),
]


@pytest.mark.parametrize("kw", ACCEPTED, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_objective_settings_on_the_edge_of_valid_are_accepted(kw):
    model = build(**IMAGE)
    objective_from_config(ObjectiveConfig(**kw), model, dataset_size=10)


@pytest.mark.parametrize("kw", REFUSED, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_objective_settings_just_outside_valid_are_refused(kw):
    model = build(**IMAGE)
    with pytest.raises(ValueError):
        objective_from_config(ObjectiveConfig(**kw), model, dataset_size=10)


def test_gaussian_head_starts_at_scale_one_tenth_per_dimension_or_shared():
    per_dim, shared = GaussianLikelihood((1, 2, 3)), GaussianLikelihood((1, 2, 3), scale="shared")
    assert per_dim.log_scale.shape == (1, 2, 3) and shared.log_scale.shape == ()
    loc = torch.zeros(4, 1, 2, 3)
    for head in (per_dim, shared):
        torch.testing.assert_close(head.dist(loc).base_dist.scale, torch.full_like(loc, 0.1))


def test_a_posteriors_own_training_terms_are_added_to_the_loss_and_logged():
    torch.manual_seed(0)
    model = build(event_shape=[1, 8, 8], kind="vqvae", channels=[8, 8], latent_dim=4).eval()
    x = _binary(5)
    qz_x = model.encode(x)
    res = elbo(model, x, qz_x=qz_x)
    own = qz_x.training_loss()
    assert float(own) > 1.0  # commitment + code-prior NLL: far from 0, so its sign shows
    torch.testing.assert_close(res.loss, -(res.log_px_z - res.kl).mean() + own)
    assert {k: float(v) for k, v in res.terms.items()} == {
        k: float(v) for k, v in qz_x.training_terms().items()
    }


def test_score_estimator_gradients_are_the_formulas_with_and_without_a_baseline():
    torch.manual_seed(0)
    model = build(**IMAGE)
    x = _binary(6)
    baseline = Baseline(64)
    torch.nn.init.normal_(baseline.net[2].weight, std=0.5)
    enc = list(model.encoder.parameters())

    def grads(loss, params):
        return torch.autograd.grad(loss, params, allow_unused=True)

    for b in (None, baseline):
        torch.manual_seed(4)
        res = elbo(model, x, n_samples=3, estimator="score", baseline=b)
        params = enc + ([] if b is None else list(b.net.parameters()))
        got = grads(res.loss, params)
        torch.manual_seed(4)
        qz_x = model.encode(x)
        z = qz_x.rsample((3,)).detach()  # (S, B, D)
        f = model.decode(z).log_prob(x)  # (S, B)
        kl = kl_divergence(qz_x, model.prior())  # (B,)
        if b is not None:
            b.mean.zero_()  # the running mean before the step's update (it started at 0)
        b_x = 0.0 if b is None else b(model.likelihood.encoder_input(x).flatten(1))
        advantage = (f - b_x).detach()
        want_loss = -f.mean(0).mean() + kl.mean() - (advantage * qz_x.log_prob(z)).mean()
        if b is not None:
            want_loss = want_loss + (f.detach() - b_x).pow(2).mean()
        want = grads(want_loss, params)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_kl_terms_use_the_draws_they_are_given_monte_carlo_and_layered():
    vamp = build(**IMAGE, prior="vamp", prior_components=5).eval()
    x = _binary(6)
    qz_x, pz = vamp.encode(x), vamp.prior()
    z = qz_x.rsample((3,))  # (S, B, D)
    terms = kl_terms(qz_x, pz, z)
    torch.testing.assert_close(terms.total, (qz_x.log_prob(z) - pz.log_prob(z)).mean(0))
    assert terms.additive is False
    torch.manual_seed(2)
    fresh = kl_terms(qz_x, pz)  # no draws given: one fresh draw
    torch.manual_seed(2)
    one = qz_x.rsample((1,))
    torch.testing.assert_close(fresh.total, (qz_x.log_prob(one) - pz.log_prob(one)).mean(0))
    torch.manual_seed(0)
    hvae = build(**IMAGE, kind="hvae", latent_dims=[3, 2]).eval()
    q = hvae.encode(x)
    z1, z2 = q.rsample((1,)), q.rsample((1,))
    given = kl_terms(q, hvae.prior(), z1)
    torch.testing.assert_close(given.total, q.kl_terms(hvae.prior(), z1).total)
    assert not torch.allclose(given.total, kl_terms(q, hvae.prior(), z2).total)


def test_the_configured_elbo_objective_passes_labels_groups_balancing_and_baseline_through():
    def same(objective, model, args, want, step=None):
        torch.manual_seed(3)
        got = objective(model, *args, step=step)
        torch.manual_seed(3)
        torch.testing.assert_close(got.loss, want().loss)
        return got

    cvae, x, y = _cvae()
    plain = objective_from_config(ObjectiveConfig(), cvae)
    same(plain, cvae, (x, y), lambda: elbo(cvae, x, y))
    torch.manual_seed(0)
    hvae = build(**IMAGE, kind="hvae", latent_dims=[3, 2])
    grouped = objective_from_config(ObjectiveConfig(free_bits=2.0, free_bits_per="group"), hvae)
    groups = hvae.latent_groups
    same(grouped, hvae, (x,), lambda: elbo(hvae, x, free_bits=2.0, free_bits_groups=groups))
    balanced = objective_from_config(
        ObjectiveConfig(kl_balance=True, warmup="linear", warmup_steps=10), hvae
    )
    same(balanced, hvae, (x,), lambda: kl_balanced(elbo(hvae, x, beta=0.3), hvae, 0.3), step=3)
    score = objective_from_config(ObjectiveConfig(estimator="score"), cvae)
    res = score(cvae, x, y)
    res.loss.backward()
    grads = [p.grad for p in score.main_parameters()]  # the baseline learns with the model
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_detached_posteriors_only_of_diagonal_gaussians_and_dataset_size_without_a_model():
    loc = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="diagonal Gaussian posterior"):
        detached_posterior(Independent(Laplace(loc, torch.ones(2, 3)), 1))
    tc = objective_from_config(ObjectiveConfig(penalty="tc"), dataset_size=100)
    assert tc.dataset_size == 100


def test_baselines_free_bits_below_one_nat_and_the_vamp_kl_at_the_elbos_own_draws():
    model = build(**IMAGE)
    make = lambda **kw: objective_from_config(ObjectiveConfig(estimator="score", **kw), model)  # noqa: E731
    assert make(baseline="none").baseline is None
    assert make(baseline="mean").baseline.net is None
    assert make(baseline="learned").baseline.net is not None
    assert objective_from_config(ObjectiveConfig(estimator="score", baseline="mean")).baseline
    with pytest.raises(ValueError, match="learned baseline needs"):
        objective_from_config(ObjectiveConfig(estimator="score", baseline="learned"))
    x = _binary(8)
    torch.manual_seed(1)
    res = elbo(model, x, free_bits=0.5)  # a floor below 1 nat per dimension
    floor = res.kl_per_dim.mean(0).clamp_min(0.5).sum()
    assert bool((res.kl_per_dim.mean(0) < 0.5).any())  # some dimensions sit on the floor
    torch.testing.assert_close(res.loss, -(res.log_px_z.mean() - floor))
    per_dim = objective_from_config(ObjectiveConfig(free_bits=0.5), model)
    torch.manual_seed(1)
    torch.testing.assert_close(per_dim(model, x).loss, res.loss)
    vamp = build(**IMAGE, prior="vamp", prior_components=5)
    torch.manual_seed(2)
    res = elbo(vamp, x, n_samples=2)
    z = res.z  # (S, B, D): the draws of the reconstruction term
    qz_x, pz = vamp.encode(x), vamp.prior()
    torch.testing.assert_close(res.kl, (qz_x.log_prob(z) - pz.log_prob(z)).mean(0))


def test_penalties_on_a_conditional_model_and_stl_refusals():
    cvae, x, y = _cvae()  # its encoder refuses to run without labels
    for penalty in ("tc", "factor"):
        cfg = ObjectiveConfig(penalty=penalty, factor_hidden=[8])
        objective = objective_from_config(cfg, cvae, dataset_size=100)
        res = objective(cvae, x, y, step=1)
        assert torch.isfinite(res.loss)
        if penalty == "factor":
            opt = objective.make_aux_optimizer()
            assert math.isfinite(objective.after_step(cvae, lambda: (x, y), opt)["disc_loss"])
    with pytest.raises(ValueError, match="free bits need the analytic KL"):
        elbo(build(**IMAGE), x, estimator="stl", free_bits=0.5)
    torch.manual_seed(0)
    hvae = build(**IMAGE, kind="hvae", latent_dims=[3, 2])

    with pytest.raises(ValueError, match="diagonal Gaussian posterior"):
        detached_posterior(hvae.encode(x))  # a layered posterior has no base_dist
