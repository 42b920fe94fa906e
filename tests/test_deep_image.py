"""The deep hierarchical image VAE (``kind: deep``): the VAE interface and its shapes, bounds,
gradients, KL per group, KL balancing, the moving average of the weights, batch independence,
seeds, and a few training steps on small face-like images with the logistic mixture."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from builders import build
from vaekit.config import ModelConfig
from vaekit.distributions import SupportError, kl_per_dim
from vaekit.evaluation import evaluate, iwae_log_likelihood
from vaekit.models.deep import DeepOptions, DeepPosterior, DeepPrior
from vaekit.objectives import elbo, kl_balance_coefficients, kl_balanced

TINY = dict(
    deep_channels=[4, 6],
    deep_scales=[4, 2],  # 16×16 images: latent maps 4×4 (1 group) and 8×8 (2 groups)
    groups_per_scale=[1, 2],
    latent_channels=2,
    cells=1,
    ema=0.9,
    mixture_components=2,
)


def make(event_shape=(1, 16, 16), seed: int = 0, likelihood="logistic_mixture", **deep):
    """A tiny deep VAE built under ``seed`` from a ModelConfig carrying the deep fields."""
    torch.manual_seed(seed)
    shape = list(event_shape)
    return build(kind="deep", event_shape=shape, levels=256, likelihood=likelihood, **TINY | deep)


def kl_balanced_elbo(model, x, *, beta: float):
    """The training objective with ``kl_balance: true``: the ELBO, its loss KL-balanced."""
    return kl_balanced(elbo(model, x, beta=beta), model, beta)


def faces(n: int = 6, size: int = 16, channels: int = 1, seed: int = 1) -> torch.Tensor:
    """Face-like 8-bit images ``(n, C, size, size)``: a bright oval on a darker background, two
    dark eyes and a mouth, with per-image jitter and pixel noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        j = lambda s=0.08: float(torch.randn((), generator=g)) * s  # noqa: E731
        face = ((xx / (0.65 + j())) ** 2 + ((yy - j()) / (0.85 + j())) ** 2 < 1).float()
        img = 60 + 120 * face
        for ex in (-0.35, 0.35):  # eyes
            img -= 90 * torch.exp(-((xx - ex - j()) ** 2 + (yy + 0.25 + j()) ** 2) / 0.01)
        img -= 70 * torch.exp(-((xx - j()) ** 2 / 0.06 + (yy - 0.45 - j()) ** 2 / 0.005))  # mouth
        img = img + 8 * torch.randn(size, size, generator=g)
        out.append(img.clamp(0, 255).round().expand(channels, size, size))
    return torch.stack(out)


def test_shapes_of_encode_decode_sample_and_the_latent_layout():
    model = make()
    x = faces(5)
    b, d = len(x), model.latent_dim
    assert model.latent_groups == [128, 128, 32]  # z bottom → top: two 8×8 groups, one 4×4
    assert model.group_shapes == [(2, 8, 8), (2, 8, 8), (2, 4, 4)]
    assert d == sum(model.latent_groups) and model.n_dims == 256
    assert model.event_shape == (1, 16, 16)
    qz_x = model.encode(x)
    assert isinstance(qz_x, DeepPosterior)
    assert qz_x.batch_shape == (b,) and qz_x.event_shape == (d,)
    assert qz_x.mean.shape == (b, d)
    z = qz_x.rsample((3,))  # (S, B, D)
    assert z.shape == (3, b, d)
    assert qz_x.log_prob(z).shape == (3, b)
    px_z = model.decode(z)
    assert px_z.batch_shape == (3, b) and px_z.event_shape == model.event_shape
    assert px_z.log_prob(x).shape == (3, b)
    pz = model.prior()
    assert isinstance(pz, DeepPrior) and pz.event_shape == (d,)
    assert pz.log_prob(z).shape == (3, b)
    assert kl_per_dim(qz_x, pz, z).shape == (b, d)
    assert model.prior().sample((2, 4)).shape == (2, 4, d)
    s = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 1, 16, 16)
    model.check(s)  # samples lie in the support: integer levels 0..255
    assert model.sample(2, mean=True).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("shape", [(3, 12, 10), (1, 9, 16)])
def test_grey_and_rgb_images_of_any_size(shape):
    model = make(shape, deep_scales=[4, 2], groups_per_scale=1)
    x = model.sample(2)
    assert x.shape == (2, *shape)
    assert model.decode(model.encode(x).mean).mean.shape == (2, *shape)
    # ⌈12/2⌉ = 6 → ⌈6/2⌉ = 3 and ⌈10/2⌉ = 5 → 3: the group maps follow the conv arithmetic
    if shape == (3, 12, 10):
        assert model.group_shapes == [(2, 6, 5), (2, 3, 3)]
        assert model.likelihood.coupled  # RGB: the coupled PixelCNN++ channels by default


def test_cached_pass_equals_a_fresh_pass():
    """decode / prior.log_prob / q.log_prob reuse the rsample pass; recomputing from a copy of z
    (a tensor the cache has never seen) gives the same numbers."""
    model = make()
    x = faces(3)
    qz_x = model.encode(x)
    z = qz_x.rsample((2,))
    fresh = z.clone()
    torch.testing.assert_close(model.decode(z).log_prob(x), model.decode(fresh).log_prob(x))
    torch.testing.assert_close(model.prior().log_prob(z), model.prior().log_prob(fresh))
    torch.testing.assert_close(qz_x.log_prob(z), qz_x.log_prob(fresh))
    torch.testing.assert_close(qz_x.kl_per_dim(None, z), qz_x.kl_per_dim(None, fresh))


def test_elbo_is_below_the_iwae_bound_and_kl_is_consistent():
    model = make()
    model.eval()
    x = faces(4)
    with torch.no_grad():
        res = elbo(model, x, n_samples=4)
        assert torch.isfinite(res.bound).all() and res.bound.shape == (4,)
        torch.testing.assert_close(res.bound, res.log_px_z - res.kl)
        torch.testing.assert_close(res.kl, res.kl_per_dim.sum(-1))
        # the package's IWAE bound against log w from the model's parts on the same seeded
        # draws: mean_k log w_k ≤ L_K ≤ max_k log w_k (the upper fails without the −log K)
        torch.manual_seed(3)
        qz_x = model.encode(x, check=False)
        z = qz_x.rsample((200,))
        log_w = model.decode(z).log_prob(x) + model.prior().log_prob(z) - qz_x.log_prob(z)
        torch.manual_seed(3)
        iwae_k = iwae_log_likelihood(model, x, k=200, chunk=200)
        torch.testing.assert_close(iwae_k, torch.logsumexp(log_w, 0) - math.log(200))
        assert (log_w.mean(0) - 1e-4 <= iwae_k).all() and (iwae_k < log_w.max(0).values).all()
        # analytic KL (given the groups above) against log q − log p on the same draws
        z = qz_x.rsample((200,))
        log_ratio = qz_x.log_prob(z) - model.prior().log_prob(z)  # (K, B)
        kl = qz_x.kl_per_dim(model.prior(), z).sum(-1)
        se = log_ratio.std(0) / math.sqrt(200)
        assert ((log_ratio.mean(0) - kl).abs() < 5 * se + 0.05).all()
        big = iwae_log_likelihood(model, x, k=200, chunk=50)
        assert big.mean() > elbo(model, x, n_samples=50).bound.mean()


def test_kl_per_group_sums_to_the_total_and_matches_each_groups_log_ratio():
    model = make()
    model.eval()
    x = faces(3)
    with torch.no_grad():
        qz_x = model.encode(x)
        z = qz_x.rsample((300,))
        kl_d = qz_x.kl_per_dim(model.prior(), z)  # (B, D), z order
        per_group = torch.stack([g.sum(-1) for g in kl_d.split(model.latent_groups, -1)], -1)
        res = elbo(model, x)
        torch.testing.assert_close(
            torch.stack([g.sum(-1) for g in res.kl_per_dim.split(model.latent_groups, -1)]).sum(0),
            res.kl,
        )
        pass_ = qz_x._pass(z)  # the cached pass: per group (generation order) log q, log p
        ratios = [(q - p) for q, p in zip(pass_.log_q, pass_.log_p, strict=True)][::-1]
        for g, r in enumerate(ratios):  # (K, B) per group, now in z order
            se = r.std(0) / math.sqrt(300)
            assert ((r.mean(0) - per_group[:, g]).abs() < 5 * se + 0.02).all(), g
        assert (per_group > 0).all()  # every group carries some KL at initialization
        ev = evaluate(model, x, k=0, batch_size=3)
        assert len(ev["kl_per_layer"]) == 3
        assert abs(sum(ev["kl_per_layer"]) - ev["kl"]) < 1e-3


def test_gradients_reach_every_parameter():
    model = make(likelihood="logistic_mixture")
    model.train()
    elbo(model, faces(3), n_samples=2).loss.backward()
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("ema.") for n in names)  # the averages are not parameters
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_kl_balancing_coefficients_and_loss():
    kl = torch.tensor([[4.0, 1.0, 0.0], [2.0, 3.0, 0.0]])  # (B, G)
    alpha = torch.tensor([2.0, 2.0, 1.0])
    gamma = kl_balance_coefficients(kl, alpha)
    k = torch.tensor([3.01, 2.01, 0.01]) / alpha
    torch.testing.assert_close(gamma, 3 * k / k.sum())
    assert abs(float(gamma.mean()) - 1) < 1e-6
    model = make()
    torch.testing.assert_close(model.kl_balance_alpha, torch.tensor([2.0, 2.0, 1.0]))  # 64/2, 16
    x = faces(4)
    torch.manual_seed(3)
    plain = elbo(model, x, beta=0.3)
    torch.manual_seed(3)
    balanced = kl_balanced_elbo(model, x, beta=0.3)
    torch.testing.assert_close(balanced.bound, plain.bound)  # the bound is the true one
    assert float((balanced.loss - plain.loss).detach().abs()) > 1e-3  # the loss weights the groups
    kl_g = torch.stack([g.sum(-1) for g in plain.kl_per_dim.split(model.latent_groups, -1)], -1)
    gamma = kl_balance_coefficients(kl_g, model.kl_balance_alpha)
    want = -(plain.log_px_z - 0.3 * (kl_g * gamma).sum(-1)).mean()
    torch.testing.assert_close(balanced.loss, want)
    torch.manual_seed(3)
    after = kl_balanced_elbo(model, x, beta=1.0)  # after warm-up: the plain ELBO loss
    torch.manual_seed(3)
    torch.testing.assert_close(after.loss, elbo(model, x).loss)


def _train(model, x, steps: int, lr: float = 3e-3, warmup: int = 5) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for step in range(steps):
        res = kl_balanced_elbo(model, x, beta=min(1.0, (step + 1) / warmup))
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        model.update_ema()
        losses.append(float(res.loss.detach()))
        assert torch.isfinite(res.loss) and torch.isfinite(res.bound).all(), step
    return losses


def test_ema_weights_differ_from_live_weights_and_drive_eval(tmp_path):
    model = make()
    x = faces(4)
    live0 = {n: p.detach().clone() for n, p in model.decoder.named_parameters()}
    ema = dict(model.ema["decoder"].named_buffers())
    for n, v in live0.items():  # at the start the averages are the weights
        assert torch.equal(ema[n], v), n
    _train(model, x, 1)
    # the first update has d = min(0.9, 1/10) = 0.1: ema = 0.1·θ_0 + 0.9·θ_1
    for n, p in model.decoder.named_parameters():
        torch.testing.assert_close(ema[n], 0.1 * live0[n] + 0.9 * p.detach()), n
    _train(model, x, 4)
    assert int(model.ema_updates) == 5
    differ = [not torch.allclose(ema[n], p) for n, p in model.decoder.named_parameters()]
    assert all(differ)
    # eval() computes with the averages: equal to a model whose weights are the averages
    twin = make()
    with torch.no_grad():
        for key in ("encoder", "decoder", "likelihood"):
            avg = dict(model.ema[key].named_buffers())
            for n, p in getattr(twin, key).named_parameters():
                p.copy_(avg[n])
    twin.ema = None  # no averaging: eval uses its (averaged) weights as they are
    model.eval()
    twin.eval()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(
        model.sample(3, mean=True, generator=g()), twin.sample(3, mean=True, generator=g())
    )
    assert torch.equal(model.encode(x).mean, twin.encode(x).mean)
    model.train()
    assert not torch.equal(
        model.sample(3, mean=True, generator=g()), twin.sample(3, mean=True, generator=g())
    )
    # the averages are saved with the weights (buffers), in the checkpoints' safetensors format
    state = model.state_dict()
    assert any(k.startswith("ema.decoder.") for k in state) and "ema_updates" in state
    path = tmp_path / "model.safetensors"
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
    fresh = make(seed=9)
    fresh.load_state_dict(load_file(str(path)), strict=True)
    assert int(fresh.ema_updates) == 5
    fresh.eval()
    model.eval()
    a = fresh.sample(3, mean=True, generator=g())
    assert torch.equal(a, model.sample(3, mean=True, generator=g()))


def test_a_tiny_model_learns_faces_with_the_logistic_mixture():
    model = make(deep_channels=8, mixture_components=3)
    x = faces(8)
    model.eval()
    before = float(-elbo(model, x).bound.mean())
    losses = _train(model, x, 25, lr=5e-3)
    model.eval()
    after = float(-elbo(model, x).bound.mean())  # with the averaged weights
    assert math.isfinite(after) and after < before - 200  # nats per image (≈ 1600 at the start)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    s = model.sample(4, temperature=0.8, generator=torch.Generator().manual_seed(0))
    model.check(s)


def test_temperature_scales_the_prior_draws():
    model = make()
    model.eval()
    with torch.no_grad():
        g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
        cold = model.top_down(None, torch.Size([2]), temperature=0.0, generator=g()).z
        cold2 = model.top_down(None, torch.Size([2]), temperature=0.0, generator=None).z
        assert torch.equal(cold, cold2)  # t = 0: the prior's mean path, no randomness
        top = slice(model.latent_dim - model.latent_groups[-1], model.latent_dim)  # top group
        spread = [
            (model.top_down(None, torch.Size([400]), temperature=t, generator=g()).z[:, top]).std()
            for t in (0.5, 1.0)
        ]
        assert 1.8 < float(spread[1] / spread[0]) < 2.2  # the top group's scale is t·σ_p


def test_outputs_never_depend_on_the_rest_of_the_batch():
    model = make()
    x = faces(5)
    full = model.encode(x).mean
    alone = torch.cat([model.encode(x[i : i + 1]).mean for i in range(len(x))])
    torch.testing.assert_close(full, alone, atol=1e-5, rtol=1e-5)
    z = full[None]
    torch.testing.assert_close(
        model.decode(z).log_prob(x)[0],
        torch.cat([model.decode(z[:, i : i + 1]).log_prob(x[i : i + 1])[0] for i in range(5)]),
    )


def test_deterministic_under_a_seed():
    m1, m2, m3 = make(seed=7), make(seed=7), make(seed=8)
    p1, p2, p3 = (torch.cat([p.flatten() for p in m.parameters()]) for m in (m1, m2, m3))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    x = faces(3)
    bounds = []
    for m in (m1, m2):
        torch.manual_seed(11)
        bounds.append(elbo(m, x, n_samples=2).bound)
    assert torch.equal(*bounds)
    a = m1.sample(3, generator=torch.Generator().manual_seed(4))
    b = m2.sample(3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_bad_input_and_bad_options_get_clear_errors():
    model = make()
    x = faces(2)
    with pytest.raises(ValueError, match="shape"):
        model.encode(x[:, :, :-1])
    with pytest.raises(SupportError):
        model.encode(x + 0.5)
    with pytest.raises(ValueError, match="powers of 2"):
        make(deep_scales=[3])
    with pytest.raises(ValueError, match="coarsest"):
        make(deep_scales=[2, 4])
    with pytest.raises(ValueError, match="groups_per_scale"):
        make(groups_per_scale=[1])
    with pytest.raises(ValueError, match="images"):
        make(event_shape=(16, 16))
    defaults = DeepOptions.from_config(ModelConfig())  # no deep fields yet: the defaults
    assert defaults == DeepOptions()


def test_other_likelihood_heads_plug_in():
    model = make(likelihood="logistic")
    x = faces(2)
    res = elbo(model, x)
    assert torch.isfinite(res.bound).all()
    assert model.sample(2).shape == (2, 1, 16, 16)
