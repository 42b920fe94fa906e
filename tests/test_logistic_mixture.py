"""The discretized logistic mixture: normalization over the 256 levels (grey, independent RGB,
coupled RGB per channel and exhaustively), agreement with ``DiscretizedLogistic``, exact tails,
sampling, finite gradients at extreme parameters, and the likelihood head."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.distributions import DiscretizedLogistic, SupportError
from vaekit.likelihoods import make_likelihood
from vaekit.likelihoods.mixture import DiscretizedLogisticMixture, LogisticMixtureLikelihood

LEVELS = torch.arange(256, dtype=torch.float64)


def random_mixture(batch=(2,), k=3, c=1, hw=(2, 3), coupled=False, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, k, c, *hw)

    def rnd(*s, scale=1.0, shift=0.0):
        return (torch.randn(s, generator=g, dtype=torch.float64) * scale + shift).to(dtype)

    loc = rnd(*shape, scale=0.7)
    log_scale = rnd(*shape, scale=1.5, shift=-3.0)  # scales from ~0.002 to ~1
    if coupled:
        logits = rnd(*batch, k, *hw, scale=2.0)
        coeffs = torch.tanh(rnd(*shape, scale=1.5))
        return DiscretizedLogisticMixture(logits, loc, log_scale, coeffs)
    return DiscretizedLogisticMixture(rnd(*shape, scale=2.0), loc, log_scale)


def all_levels(c: int, hw) -> torch.Tensor:
    """``(256, 1, c, *hw)``: every pixel channel at level 0, 1, …, 255 (batch dims broadcast)."""
    return LEVELS.view(256, 1, 1, 1, 1).expand(256, 1, c, *hw)


@pytest.mark.parametrize("c", [1, 3])
def test_independent_channels_sum_to_one_over_the_256_levels(c):
    d = random_mixture(c=c)
    lp = d.log_prob(all_levels(c, (2, 3)))  # (256, B, C, H, W)
    assert lp.shape == (256, 2, c, 2, 3)
    total = torch.logsumexp(lp, 0)
    torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-9, rtol=0)
    # Each component on its own is normalized as well.
    comp = d.channel_log_probs(all_levels(c, (2, 3)))  # (256, B, K, C, H, W)
    per_component = torch.logsumexp(comp, 0)
    assert per_component.shape == (2, 3, c, 2, 3)
    torch.testing.assert_close(per_component, torch.zeros_like(per_component), atol=1e-9, rtol=0)


def test_coupled_rgb_channel_conditionals_sum_to_one():
    """P_j(x_R), P_j(x_G | x_R), P_j(x_B | x_R, x_G) are each normalized, for arbitrary
    observed values of the channels they condition on."""
    d = random_mixture(c=3, coupled=True)
    g = torch.Generator().manual_seed(5)
    fixed = torch.randint(0, 256, (2, 3, 2, 3), generator=g).double()  # the other channels
    for ch in range(3):
        v = fixed.expand(256, *fixed.shape).clone()
        v[:, :, ch] = LEVELS.view(256, 1, 1, 1)
        lp = d.channel_log_probs(v)[..., ch, :, :]  # (256, B, K, H, W)
        total = torch.logsumexp(lp, 0)  # (B, K, H, W)
        assert total.shape == (2, 3, 2, 3)
        torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-9, rtol=0)
        # the conditional really depends on the earlier channels (coupling is on)
        if ch > 0:
            w = v.clone()
            w[:, :, 0] = 255 - w[:, :, 0]
            assert not torch.allclose(d.channel_log_probs(w)[..., ch, :, :], lp)


WINDOWS = ((0, 50), (190, 256), (90, 200))  # levels of R, G, B holding all but < 1e-9 of p


@pytest.fixture(scope="module")
def coupled_pixel():
    """One coupled RGB pixel (K = 2, narrow scales, strong coupling: R at the bottom edge, G at
    the top edge, B inside) and its exact joint on the box ``WINDOWS`` of levels (float64), which
    holds all of its mass but < 1e-9. Returns (distribution, joint (256, 256, 256) with the
    probabilities inside the box, zeros outside)."""
    f64 = dict(dtype=torch.float64)
    alpha, beta, gamma = (torch.tensor(v, **f64) for v in ([0.6, -0.4], [0.3, 0.5], [-0.5, 0.4]))
    # locations such that, given R ≈ 0 and G ≈ 250, the conditional locations sit at these levels
    loc_r = torch.tensor([-1.0, -0.97], **f64)
    loc_g = torch.tensor([1.0, 0.98], **f64) + alpha
    loc_b = torch.tensor([0.1, 0.14], **f64) + beta - 0.95 * gamma
    loc = torch.stack([loc_r, loc_g, loc_b], 1).view(2, 3, 1, 1)
    log_scale = torch.tensor([0.008, 0.012], **f64).log().view(2, 1, 1, 1).expand(2, 3, 1, 1)
    coeffs = torch.stack([alpha, beta, gamma], 1).view(2, 3, 1, 1)
    d = DiscretizedLogisticMixture(
        torch.tensor([0.3, -0.2], **f64).view(2, 1, 1), loc, log_scale, coeffs
    )
    axes = [LEVELS[lo:hi] for lo, hi in WINDOWS]
    v = torch.cartesian_prod(*axes)  # (n, 3): every (R, G, B) in the box
    joint = torch.zeros(256, 256, 256, **f64)
    box = tuple(slice(lo, hi) for lo, hi in WINDOWS)
    joint[box] = d.log_prob(v.view(-1, 3, 1, 1)).exp().view(*(len(a) for a in axes))
    return d, joint


def test_coupled_rgb_exhaustive_joint_sums_to_one(coupled_pixel):
    """Σ over the box ≤ 1 (probabilities are exact and positive) and ≥ 1 − 1e-9 (the box
    holds the mass): the joint of the coupled channels is normalized, edge bins included."""
    _, joint = coupled_pixel
    total = float(joint.sum())
    assert 1 - 1e-9 < total <= 1 + 1e-12
    assert joint[0].sum() > 0.2 and joint[:, 255].sum() > 0.2  # the edge bins carry mass


def test_coupled_rgb_samples_follow_the_exact_marginals(coupled_pixel):
    d, joint = coupled_pixel
    n = 20_000
    x = d.sample((n,), generator=torch.Generator().manual_seed(0)).view(n, 3).long()
    for ch, dims in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1))):
        exact = joint.sum(dims)  # the marginal of channel ch
        empirical = torch.bincount(x[:, ch], minlength=256).double() / n
        tv = 0.5 * (exact - empirical).abs().sum()
        assert tv < 0.03, (ch, float(tv))
    # a wrong sampler (coupling ignored) is detected by the same comparison
    uncoupled = DiscretizedLogisticMixture(d.logits, d.loc, d.log_scale, torch.zeros_like(d.coeffs))
    y = uncoupled.sample((n,), generator=torch.Generator().manual_seed(0)).view(n, 3).long()
    empirical = torch.bincount(y[:, 2], minlength=256).double() / n
    assert 0.5 * (joint.sum((0, 1)) - empirical).abs().sum() > 0.5


def test_one_component_equals_the_discretized_logistic():
    """K = 1 is ``DiscretizedLogistic`` wherever that one computes the bin exactly (its
    CDF-difference branch, P > 1e-5 in float32); in its tiny-probability branch (density × bin
    width) this class is the exact value instead, checked against float64."""
    g = torch.Generator().manual_seed(1)
    loc = torch.rand(4, 1, 5, 6, generator=g) * 2.4 - 1.2
    scale = torch.nn.functional.softplus(torch.randn(4, 1, 5, 6, generator=g) - 2) + 0.01
    x = torch.randint(0, 256, (4, 1, 5, 6), generator=g).float()
    x[0, 0, 0], x[1, 0, 0] = 0.0, 255.0  # both edge bins
    ref = DiscretizedLogistic(loc, scale).log_prob(x)
    mix = DiscretizedLogisticMixture(torch.zeros(4, 1, 1, 5, 6), loc[:, None], scale.log()[:, None])
    got = mix.log_prob(x)
    c = x / 127.5 - 1
    delta = torch.sigmoid((c + 1 / 255 - loc) / scale) - torch.sigmoid((c - 1 / 255 - loc) / scale)
    exact_branch = (delta > 1e-4) | (x == 0) | (x == 255)
    assert exact_branch.float().mean() > 0.5  # most entries are compared with the reference
    torch.testing.assert_close(got[exact_branch], ref[exact_branch], atol=1e-4, rtol=1e-4)
    exact = _log_bin_prob_float64(x, loc, scale)
    torch.testing.assert_close(got.double(), exact, atol=1e-4, rtol=1e-5)
    # coupled RGB with zero coefficients: the sum of three independent channels
    loc3 = torch.rand(4, 3, 5, 6, generator=g) * 2 - 1
    scale3 = torch.full((4, 3, 5, 6), 0.3)
    x3 = torch.randint(0, 256, (4, 3, 5, 6), generator=g).float()
    ref3 = DiscretizedLogistic(loc3, scale3).log_prob(x3).sum(1)
    coupled = DiscretizedLogisticMixture(
        torch.zeros(4, 1, 5, 6), loc3[:, None], scale3.log()[:, None], torch.zeros(4, 1, 3, 5, 6)
    )
    torch.testing.assert_close(coupled.log_prob(x3), ref3, atol=1e-4, rtol=1e-4)


def _log_bin_prob_float64(x, loc, scale):
    """log P(k) of a discretized logistic in float64 from CDF differences below the location
    and survival-function differences above it (no cancellation in either tail)."""
    x, loc, scale = x.double(), loc.double(), scale.double()
    c = x / 127.5 - 1
    a, b = (c + 1 / 255 - loc) / scale, (c - 1 / 255 - loc) / scale
    upper = torch.sigmoid(-b) - torch.sigmoid(-a)  # = F(a) − F(b), precise when c > loc
    lower = torch.sigmoid(a) - torch.sigmoid(b)
    p = torch.where(c > loc, upper, lower)
    p = torch.where(x == 0, torch.sigmoid(a), torch.where(x == 255, torch.sigmoid(-b), p))
    return p.log()


def test_tails_are_exact_in_float32():
    """Far in a tail (σ(a) and σ(b) both ≈ 1 in float32) the CDF difference cancels; the
    log-domain identity still matches a float64 reference, where the plain formula fails."""
    loc = torch.tensor([-1.0, -1.0, 1.0])
    scale = torch.tensor([0.02, 0.01, 0.03])
    x = torch.tensor([100.0, 60.0, 150.0])  # 20–40 scales from the location
    mix = DiscretizedLogisticMixture(
        torch.zeros(1, 1, 1, 3), loc.view(1, 1, 1, 3), scale.log().view(1, 1, 1, 3)
    )
    got = mix.log_prob(x.view(1, 1, 3)).view(3)
    ref = _log_bin_prob_float64(x, loc, scale)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)
    c = x / 127.5 - 1
    naive = torch.log(
        torch.sigmoid((c + 1 / 255 - loc) / scale) - torch.sigmoid((c - 1 / 255 - loc) / scale)
    )
    assert not torch.allclose(naive.double(), ref, rtol=1e-3, atol=1e-2)  # what it avoids
    assert (got > -80).all() and torch.isfinite(got).all()


@pytest.mark.parametrize("coupled", [False, True])
def test_samples_stay_in_the_support_and_match_probabilities(coupled):
    d = random_mixture(batch=(3,), c=3 if coupled else 1, coupled=coupled, dtype=torch.float32)
    s = d.sample((50,), generator=torch.Generator().manual_seed(0))
    assert s.shape == (50, 3, 3 if coupled else 1, 2, 3)
    assert (s == s.round()).all() and s.min() >= 0 and s.max() <= 255
    assert torch.isfinite(d.log_prob(s)).all()
    if not coupled:  # histogram of one pixel against its 256 probabilities
        n = 30_000
        one = random_mixture(batch=(), k=3, c=1, hw=(1, 1), seed=4)
        x = one.sample((n,), generator=torch.Generator().manual_seed(1)).view(n).long()
        p = one.log_prob(all_levels(1, (1, 1)).squeeze(1)).view(256).exp()
        tv = 0.5 * (torch.bincount(x, minlength=256).double() / n - p).abs().sum()
        assert tv < 0.04


def test_seeded_sampling_is_reproducible():
    d = random_mixture(c=3, coupled=True, dtype=torch.float32)
    a = d.sample((4,), generator=torch.Generator().manual_seed(9))
    b = d.sample((4,), generator=torch.Generator().manual_seed(9))
    c = d.sample((4,), generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mean_of_narrow_components_is_the_average_of_samples():
    g = torch.Generator().manual_seed(2)
    loc = torch.rand(1, 3, 1, 4, 4, generator=g) * 1.6 - 0.8
    logits = torch.randn(1, 3, 1, 4, 4, generator=g)
    d = DiscretizedLogisticMixture(logits, loc, torch.full_like(loc, -7.0))
    m = d.mean  # (1, 1, 4, 4)
    avg = d.sample((4000,), generator=g).mean(0)
    assert m.shape == (1, 1, 4, 4)
    assert (m - avg).abs().max() < 3.0  # within rounding and Monte-Carlo error, in levels
    # a single narrow component: the mean is the level at its location
    one = DiscretizedLogisticMixture(logits[:, :1], loc[:, :1], torch.full_like(loc[:, :1], -7.0))
    torch.testing.assert_close(one.mean, torch.round((loc[:, 0] + 1) * 127.5))


@pytest.mark.parametrize("coupled", [False, True])
def test_gradients_are_finite_at_extreme_parameters(coupled):
    c = 3 if coupled else 1
    head = LogisticMixtureLikelihood((c, 2, 3), components=3, coupled=coupled)
    x = torch.tensor([0.0, 255.0, 128.0, 1.0, 254.0, 37.0]).view(1, 2, 3).expand(c, 2, 3)
    for magnitude in (30.0, 1e3, 1e6):
        g = torch.Generator().manual_seed(int(magnitude) % 1000)
        raw = torch.randn(2, head.n_params, c, 2, 3, generator=g).sign() * magnitude
        raw.requires_grad_(True)
        lp = head(raw).log_prob(x.unsqueeze(0))
        assert torch.isfinite(lp).all(), magnitude
        lp.sum().backward()
        assert torch.isfinite(raw.grad).all(), magnitude


def test_head_layout_support_and_registration():
    grey = LogisticMixtureLikelihood((1, 4, 5), components=10)
    rgb = LogisticMixtureLikelihood((3, 4, 5), components=10)
    flat = LogisticMixtureLikelihood((3, 4, 5), components=10, coupled=False)
    assert (grey.n_params, rgb.n_params, flat.n_params) == (30, 40, 30)
    assert rgb.coupled and not flat.coupled and not grey.coupled
    assert grey.nats_offset_per_dim == 0
    params = torch.randn(7, 2, rgb.n_params, 3, 4, 5)
    px = rgb(params)
    assert px.batch_shape == (7, 2) and px.event_shape == (3, 4, 5)
    x = torch.randint(0, 256, (2, 3, 4, 5)).float()
    assert px.log_prob(x).shape == (7, 2)
    torch.testing.assert_close(px.log_prob(x), px.base.log_prob(x).sum((-2, -1)))
    assert px.sample().shape == (7, 2, 3, 4, 5) and px.mean.shape == (7, 2, 3, 4, 5)
    # log p(x) per image is below 0 and the mixture is a proper probability
    assert (px.log_prob(x) < 0).all()
    # the support: integer levels 0..255
    grey.check(torch.tensor([[[[0.0, 255.0]]]]))
    for bad in (256.0, -1.0, 0.5, float("nan")):
        with pytest.raises(SupportError):
            grey.check(torch.tensor([[[[bad]]]]))
    torch.testing.assert_close(
        grey.encoder_input(torch.tensor([0.0, 255.0])), torch.tensor([0.0, 1.0])
    )
    centred = LogisticMixtureLikelihood((1, 4, 5), centered=True)
    torch.testing.assert_close(
        centred.encoder_input(torch.tensor([0.0, 255.0])), torch.tensor([-1.0, 1.0])
    )
    made = make_likelihood("logistic_mixture", (1, 4, 5), scale="per_dim")
    assert isinstance(made, LogisticMixtureLikelihood) and made.components == 10
    with pytest.raises(ValueError, match="images"):
        LogisticMixtureLikelihood((16,))


def test_units_are_nats_per_pixel_channel():
    """An interior bin of a wide component is its density times the bin width 2/255 (nats);
    the narrowest component (log-scale −7) at the data puts 97 % of its mass in the observed bin
    (the clamp's floor: about 0.04 bits per pixel channel)."""
    x = torch.randint(1, 255, (1, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    s = 0.5
    wide = DiscretizedLogisticMixture(
        torch.zeros(1, 1, 1, 8, 8),
        torch.zeros(1, 1, 1, 8, 8),
        torch.full((1, 1, 1, 8, 8), math.log(s)),
    )
    t = (x / 127.5 - 1) / s
    log_density = -t - math.log(s) - 2 * torch.nn.functional.softplus(-t)  # logistic pdf
    torch.testing.assert_close(wide.log_prob(x), log_density + math.log(2 / 255), atol=1e-4, rtol=0)
    at_data = DiscretizedLogisticMixture(
        torch.zeros(1, 1, 1, 8, 8), (x / 127.5 - 1)[:, None], torch.full((1, 1, 1, 8, 8), -9.0)
    )
    nll = -at_data.log_prob(x)
    expected = -math.log(math.tanh(math.exp(7.0) / 510))  # σ(a) − σ(−a) = tanh(a/2), a = 1/(255 s)
    torch.testing.assert_close(nll, torch.full_like(nll, expected))
    assert expected < 0.03
