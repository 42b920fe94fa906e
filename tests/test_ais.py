"""AIS against the exact log p(x) of a linear-Gaussian model, and against the IWAE estimate."""

import math

import pytest
import torch
from test_estimators import perturbed_ppca

from linear_gaussian import exact_log_px, make_ppca, sample_x
from vaekit.ais import ais_log_likelihood, sigmoid_schedule
from vaekit.evaluation import iwae_log_likelihood


def test_schedule_runs_from_zero_to_one_increasing():
    betas = sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()


def test_started_at_the_exact_posterior_every_chain_weighs_exactly_p_x():
    model, w, b, sigma = make_ppca()  # the encoder is p(z|x): log p(x, z) − log q(z|x) = log p(x)
    x = sample_x(8, w, b, sigma)
    log_px, _ = ais_log_likelihood(model, x, steps=5, chains=3, leapfrog=2, init="encoder")
    torch.testing.assert_close(log_px, exact_log_px(x, w, b, sigma))


def test_ais_from_the_prior_approaches_the_exact_log_px():
    model, w, b, sigma = make_ppca()
    x = sample_x(32, w, b, sigma)
    exact = exact_log_px(x, w, b, sigma)
    torch.manual_seed(0)
    short, _ = ais_log_likelihood(model, x, steps=10, chains=8, leapfrog=5)
    long, stats = ais_log_likelihood(model, x, steps=200, chains=8, leapfrog=5)
    gap_short, gap_long = float((exact - short).mean()), float((exact - long).mean())
    assert 0 < gap_long < 0.4 * gap_short  # a stochastic lower bound whose bias falls like 1/T
    assert gap_long < 0.15
    assert 0.5 < stats["accept_rate"] < 0.95


def test_ais_and_iwae_agree_within_their_error_bars():
    model, w, b, sigma = perturbed_ppca()  # a poor encoder: IWAE needs its many samples
    x = sample_x(32, w, b, sigma)
    torch.manual_seed(1)
    ais, _ = ais_log_likelihood(model, x, steps=200, chains=8, leapfrog=5)
    iw = iwae_log_likelihood(model, x, k=5000, chunk=1000)
    diff = (ais - iw).double()
    stderr = float(diff.std() / math.sqrt(len(diff)))
    assert abs(float(diff.mean())) < 3 * stderr + 0.01


def test_bad_settings_get_a_clear_error():
    model, w, b, sigma = make_ppca()
    x = sample_x(2, w, b, sigma)
    with pytest.raises(ValueError, match="init"):
        ais_log_likelihood(model, x, init="posterior")
    with pytest.raises(ValueError, match="steps"):
        ais_log_likelihood(model, x, steps=0)
