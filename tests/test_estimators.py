"""Gradient estimators against the closed-form ELBO gradient of a linear-Gaussian model; objective
options (β warm-up, free bits) against their formulas; the score-function path trains end to end."""

import math

import pytest
import torch

import vaekit
from linear_gaussian import D_X, D_Z, make_ppca, sample_x
from vaekit.config import ObjectiveConfig
from vaekit.estimators import Baseline
from vaekit.gradvar import bound_of, gradient_moments, gradient_variance, summarize
from vaekit.objectives import elbo, iwae, kl_weight, objective_from_config


def perturbed_ppca(seed=0):
    model, w, b, sigma = make_ppca(seed)
    with torch.no_grad():
        enc = model.encoder.net[0]
        enc.bias[:D_Z] += 0.6  # q is no longer p(z|x): the encoder gradient is not zero
        enc.bias[D_Z:] += 0.8
    return model, w, b, sigma


def exact_elbo(model, x, qz_x=None):
    """Closed form of E_q log N(x; Wz + b, σ²I) − KL(q || N(0, I)), differentiable in φ."""
    qz_x = model.encode(x, check=False) if qz_x is None else qz_x
    m, s = qz_x.base_dist.loc, qz_x.base_dist.scale  # (B, D_Z)
    dec = model.decoder.net[0]
    w, b = dec.weight, dec.bias
    var = torch.exp(2 * model.likelihood.log_scale)
    sq = ((x - m @ w.T - b) ** 2).sum(-1) + (s**2 * (w**2).sum(0)).sum(-1)
    recon = -0.5 * D_X * torch.log(2 * math.pi * var) - sq / (2 * var)
    kl = 0.5 * (m**2 + s**2 - 1 - 2 * s.log()).sum(-1)
    return recon - kl


def _exact_grad(model, x):
    params = list(model.encoder.parameters())
    grads = torch.autograd.grad(exact_elbo(model, x).mean(), params)
    return torch.cat([g.reshape(-1) for g in grads]).double()


def test_closed_form_elbo_matches_the_monte_carlo_elbo():
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(8, w, b, sigma)
    n = 50_000
    qz_x = model.encode(x)
    with torch.no_grad():
        log_px_z = model.decode(qz_x.sample((n,))).log_prob(x)  # (S, B)
        kl = elbo(model, x).kl  # analytic
        mc, stderr = log_px_z.mean(0) - kl, log_px_z.std(0) / math.sqrt(n)
        assert ((mc - exact_elbo(model, x)).abs() < 4 * stderr).all()


@pytest.mark.parametrize("name", ["reparam", "score", "score-learned", "stl"])
def test_every_elbo_estimator_is_unbiased(name):
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(4, w, b, sigma)
    baseline = None
    if name == "score-learned":
        baseline = Baseline(D_X, hidden=8).double()
        with torch.no_grad():  # an x-dependent b(x), far from optimal: unbiased all the same
            baseline.net[2].weight.normal_(0, 3.0)
            baseline.mean.fill_(-5.0)
    fn = bound_of("score" if name.startswith("score") else name, baseline=baseline)
    n = 600
    mean, var = gradient_moments(model, x, fn, n)
    exact = _exact_grad(model, x)
    stderr = (var / n).sqrt()
    assert ((mean - exact).abs() <= 4.5 * stderr + 1e-6).all(), (mean - exact) / stderr


def test_score_function_variance_exceeds_the_pathwise_one_and_baselines_reduce_it():
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(4, w, b, sigma)
    rows = gradient_variance(model, [x], ["reparam", "score", "score-mean"], n=200)
    var = {r["estimator"]: r["mean_variance"] for r in rows}
    assert var["score"] > 10 * var["reparam"]
    assert var["score-mean"] < var["score"]
    assert var["reparam"] > 0


def test_at_the_exact_posterior_stl_and_dreg_have_zero_variance_and_iwae_does_not():
    model, w, b, sigma = make_ppca()  # the encoder is the exact posterior
    x = sample_x(4, w, b, sigma)
    for name in ("stl", "iwae-stl", "dreg"):
        mean, var = gradient_moments(model, x, bound_of(name, k=5), 20)
        assert mean.abs().max() < 1e-10 and var.max() < 1e-18, name
    mean, var = gradient_moments(model, x, bound_of("iwae", k=5), 200)
    assert var.max() > 1e-4  # the pathwise estimator keeps its score-term noise
    assert (mean.abs() <= 4.5 * (var / 200).sqrt() + 1e-9).all()  # but is unbiased for 0


def test_dreg_is_unbiased_for_the_iwae_gradient_and_beats_it_in_snr():
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(4, w, b, sigma)
    n, k = 600, 10
    m_iwae, v_iwae = gradient_moments(model, x, bound_of("iwae", k=k), n)
    m_dreg, v_dreg = gradient_moments(model, x, bound_of("dreg", k=k), n)
    stderr = ((v_iwae + v_dreg) / n).sqrt()
    assert ((m_iwae - m_dreg).abs() <= 4.5 * stderr + 1e-6).all()
    assert summarize(m_dreg, v_dreg)["snr"] > summarize(m_iwae, v_iwae)["snr"]


def test_dreg_changes_only_the_encoder_gradient():
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(6, w, b, sigma)
    grads = {}
    for est in ("reparam", "stl", "dreg"):
        torch.manual_seed(3)
        res = iwae(model, x, k=7, estimator=est)
        grads[est] = torch.autograd.grad(res.loss, list(model.decoder.parameters()))
        grads[est + "_bound"] = res.bound.detach()
    for est in ("stl", "dreg"):
        torch.testing.assert_close(grads[est + "_bound"], grads["reparam_bound"])  # same value
        for g, h in zip(grads[est], grads["reparam"], strict=True):
            torch.testing.assert_close(g, h)  # same decoder gradient, draw by draw


def test_estimators_report_the_same_true_bound_and_loss_value():
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(6, w, b, sigma)
    out = {}
    for est in ("reparam", "score", "stl"):
        torch.manual_seed(5)
        out[est] = elbo(model, x, n_samples=3, estimator=est, baseline=Baseline(D_X).double())
    for est in ("score", "stl"):
        torch.testing.assert_close(out[est].bound, out["reparam"].bound)
        torch.testing.assert_close(out[est].loss, out["reparam"].loss)


def test_free_bits_floor_each_dimension_of_the_batch_mean_kl():
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(16, w, b, sigma)
    torch.manual_seed(1)
    plain = elbo(model, x)
    lam = float(plain.kl_per_dim.detach().mean(0).max()) + 1.0  # above every dimension's KL
    torch.manual_seed(1)
    floored = elbo(model, x, free_bits=lam, beta=2.0)
    expected = -plain.log_px_z.mean() + 2.0 * D_Z * lam
    torch.testing.assert_close(floored.loss, expected)
    torch.testing.assert_close(floored.bound, plain.bound)  # the reported bound is untouched
    # Below the floor the KL has no gradient: only the reconstruction term pulls on the encoder.
    torch.manual_seed(1)
    recon_only = elbo(model, x, beta=0.0)
    params = list(model.encoder.parameters())
    g1 = torch.autograd.grad(floored.loss, params)
    g2 = torch.autograd.grad(recon_only.loss, params)
    for a, c in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, c)


def test_kl_warmup_schedules():
    lin = ObjectiveConfig(beta=2.0, warmup="linear", warmup_steps=100)
    assert [kl_weight(t, lin) for t in (0, 50, 100, 1000)] == [0.0, 1.0, 2.0, 2.0]
    cyc = ObjectiveConfig(warmup="cyclical", warmup_steps=100, warmup_ratio=0.5)
    assert [kl_weight(t, cyc) for t in (0, 25, 50, 99, 100, 125)] == [0, 0.5, 1, 1, 0, 0.5]
    assert kl_weight(None, lin) == 2.0  # after warm-up (evaluation)
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(8, w, b, sigma)
    objective = objective_from_config(lin)
    torch.manual_seed(2)
    res = objective(model, x, step=25)
    expected = -(res.log_px_z - 0.5 * res.kl).mean()
    assert float(res.loss.detach()) == pytest.approx(float(expected.detach()))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"name": "iwae", "estimator": "score"}, "estimator"),
        ({"estimator": "dreg"}, "estimator"),
        ({"name": "iwae", "free_bits": 0.5}, "free bits"),
        ({"warmup": "linear"}, "warmup_steps"),
        ({"warmup": "sometimes", "warmup_steps": 5}, "warmup"),
        ({"estimator": "score", "baseline": "magic"}, "baseline"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_bad_objective_configs_get_a_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        objective_from_config(ObjectiveConfig(**overrides))


def _digits_cfg(**overrides):
    base = {
        "data.dataset": "digits",
        "model.hidden": [64],
        "model.latent_dim": 4,
        "train.epochs": 15,
        "train.batch_size": 64,
        "train.lr": 5e-3,
        "train.images": False,
        "train.eval_every": 1000,  # test ELBO at the end only
    }
    return vaekit.load_config(None, {**base, **overrides})


def _last_metrics(run):
    import json

    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_score_function_estimator_trains_end_to_end(tmp_path):
    runs = {}
    for name, extra in {
        "init": {"train.epochs": 1, "train.lr": 1e-9},
        "reparam": {},
        "score": {"objective.estimator": "score", "objective.baseline": "learned"},
    }.items():
        runs[name] = _last_metrics(vaekit.train(_digits_cfg(**extra), tmp_path / name, log=print))
    elbo_of = {name: row["test_elbo"] for name, row in runs.items()}
    gained = elbo_of["score"] - elbo_of["init"]
    assert gained > 0.8 * (elbo_of["reparam"] - elbo_of["init"]), elbo_of
    assert runs["score"]["test_kl"] > 0.5  # the encoder transmits information (collapsed: ~0)


def test_a_learned_baseline_is_checkpointed_and_resumed_exactly(tmp_path):
    cfg = {"objective.estimator": "score", "train.epochs": 2, "train.deterministic": True}
    full = vaekit.train(_digits_cfg(**cfg), tmp_path / "full", log=lambda *_: None)
    part = vaekit.train(
        _digits_cfg(**cfg, **{"train.max_steps": 30}), tmp_path / "part", log=lambda *_: None
    )
    vaekit.train(_digits_cfg(**cfg), part, resume=True, log=lambda *_: None)
    from safetensors.torch import load_file

    from vaekit.checkpoint import latest_checkpoint

    a = load_file(str(latest_checkpoint(full) / "state/tensors.safetensors"))
    c = load_file(str(latest_checkpoint(part) / "state/tensors.safetensors"))
    assert any(key.startswith("objective.baseline.net") for key in a)
    for key in a:
        if key.startswith("objective."):
            torch.testing.assert_close(a[key], c[key], rtol=0, atol=0)
    wa, wc = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wc[key], rtol=0, atol=0)
