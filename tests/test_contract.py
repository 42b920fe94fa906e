"""One contract every model of the family passes: shapes, bounds, gradients, save/load, seeds.

Models: one-layer VAEs with MLP / conv / ResNet(+SE) networks, the VampPrior, the conditional VAE,
the hierarchical VAE (also with a VampPrior on its top layer), sequence VAEs (GRU, Transformer)
the plain autoencoder (which has no bound: the bound checks assert that it says so), and
flow posteriors (IAF, planar) on the one-layer and the conditional VAE, and the VQ-VAE (no bound,
like the autoencoder).
"""

from __future__ import annotations

import math

import pytest
import torch

import vaekit
from builders import build
from vaekit.checkpoint import load_run, save_checkpoint
from vaekit.config import Config
from vaekit.distributions import kl_terms
from vaekit.evaluation import iwae_log_likelihood
from vaekit.likelihoods.tokens import Tokenizer
from vaekit.objectives import elbo, iwae

SENTENCES = ["the cat sat.", "a dog ran!", "the dog sat, the cat ran.", "a cat?"]
TOKENIZER = Tokenizer.fit(SENTENCES, "word")
IMAGE = dict(event_shape=[1, 8, 8], hidden=[32], latent_dim=3)
TEXT = dict(
    kind="seqvae",
    event_shape=[12],
    hidden=[24],
    embed_dim=8,
    latent_dim=3,
    vocab=TOKENIZER.vocab,
    word_dropout=0.25,
)
MODELS = {
    "vae-mlp": dict(IMAGE),
    "vae-conv": dict(IMAGE, arch="conv", channels=[8, 16]),
    "vae-resnet-se": dict(IMAGE, arch="resnet", channels=[8, 16], squeeze_excitation=True),
    "vae-vamp": dict(IMAGE, prior="vamp", prior_components=5),
    "cvae": dict(IMAGE, kind="cvae", n_classes=4),
    "hvae": dict(IMAGE, kind="hvae", latent_dims=[4, 3, 2]),
    "hvae-vamp": dict(IMAGE, kind="hvae", latent_dims=[4, 2], prior="vamp", prior_components=5),
    "hvae-precision": dict(IMAGE, kind="hvae", latent_dims=[4, 3, 2], ladder_merge="precision"),
    "seqvae-gru": dict(TEXT, arch="gru"),
    "seqvae-transformer": dict(TEXT, arch="transformer", heads=2, seq_layers=2),
    "ae": dict(IMAGE, kind="ae"),
    "vae-iaf": dict(IMAGE, posterior="iaf", flow_steps=2),
    "vae-planar": dict(IMAGE, posterior="planar", flow_steps=3),
    "cvae-iaf": dict(IMAGE, kind="cvae", n_classes=4, posterior="iaf", flow_steps=2),
    "vqvae": dict(
        IMAGE, kind="vqvae", channels=[8, 16], code_dim=4, codebook_size=8, prior_hidden=16
    ),
    "deep": dict(
        IMAGE,
        kind="deep",
        deep_channels=[8],
        deep_scales=[4, 2],
        groups_per_scale=[1, 1],
        latent_channels=2,
        ema=0.9,
    ),
}
NAMES = list(MODELS)


def make(name: str, seed: int = 0):
    """(model, x (B, *event), y labels or None), built under ``seed``."""
    torch.manual_seed(seed)
    model = build(**MODELS[name])
    g = torch.Generator().manual_seed(1)
    if name.startswith("seqvae"):
        x = TOKENIZER.rows(SENTENCES, 12)
    else:
        x = (torch.rand(6, 1, 8, 8, generator=g) > 0.5).float()
    y = torch.arange(len(x)) % 4 if name.startswith("cvae") else None
    return model, x, y


@pytest.mark.parametrize("name", NAMES)
def test_shapes_of_encode_decode_sample(name):
    model, x, y = make(name)
    b, d = len(x), model.latent_dim
    with model.given(y):
        qz_x = model.encode(x)
        assert qz_x.batch_shape == (b,) and qz_x.event_shape == (d,)
        assert qz_x.mean.shape == (b, d)
        z = qz_x.rsample((3,))  # (S, B, D)
        assert z.shape == (3, b, d)
        px_z = model.decode(z)
        assert px_z.batch_shape == (3, b) and px_z.event_shape == model.event_shape
        assert px_z.log_prob(x).shape == (3, b)
        assert model.prior().event_shape == (d,)
        assert model.prior().log_prob(z).shape == (3, b)
    s = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, *model.event_shape)
    model.check(s)  # samples lie in the likelihood's support


@pytest.mark.parametrize("name", NAMES)
def test_bound_is_finite_and_below_the_iwae_bound(name):
    model, x, y = make(name)
    model.eval()
    with model.given(y), torch.no_grad():
        res = elbo(model, x, n_samples=4)
        assert torch.isfinite(res.bound).all() and res.bound.shape == (len(x),)
        torch.testing.assert_close(res.bound, res.log_px_z - res.kl)
        kl_t = kl_terms(model.encode(x), model.prior())
        if kl_t.additive:  # a mixture prior's per-dim KLs are marginal KLs: no such identity
            torch.testing.assert_close(res.kl, res.kl_per_dim.sum(-1))
        if not getattr(model, "has_bound", True):  # ae, vqvae: no density, and they say so
            assert (res.kl == 0).all()
            with pytest.raises(NotImplementedError, match="point mass"):
                vaekit.log_likelihood(model, x, k=2)
            return
        # The package's IWAE bounds against log w computed here from the model's parts, on the
        # same seeded draws: L_K = logsumexp_k log w_k − log K, and per example
        # mean_k log w_k ≤ L_K ≤ max_k log w_k (without the −log K, L_K ≥ max_k log w_k).
        k = 50
        torch.manual_seed(5)
        qz_x = model.encode(x, check=False)
        z = qz_x.rsample((k,))  # (K, B, D)
        log_w = model.decode(z).log_prob(x) + model.prior().log_prob(z) - qz_x.log_prob(z)
        expected = torch.logsumexp(log_w, 0) - math.log(k)
        torch.manual_seed(5)
        objective = iwae(model, x, k=k).bound
        torch.manual_seed(5)
        evaluation = iwae_log_likelihood(model, x, k=k, chunk=k)
        for got in (objective, evaluation):
            torch.testing.assert_close(got, expected)
            assert (log_w.mean(0) <= got + 1e-5).all()
            assert (got < log_w.max(0).values).all()
        # The total KL the bound uses (analytic, per layer given the layers above, or Monte
        # Carlo) agrees with mean log q − log p on 400 draws (a Monte-Carlo KL: other draws).
        qz_x = model.encode(x, check=False)
        z = qz_x.rsample((400,))
        log_ratio = qz_x.log_prob(z) - model.prior().log_prob(z)  # (K, B)
        kl = kl_terms(qz_x, model.prior(), z if kl_t.additive else qz_x.rsample((400,))).total
        se = log_ratio.std(0) / math.sqrt(400)
        assert ((log_ratio.mean(0) - kl).abs() < 7 * se + 0.05).all()
        # IWAE with K = 400 is above the ELBO on average (fresh draws; the ELBO from 400 draws
        # of z ± 3 standard errors: the two can be within noise of each other, as for `deep`).
        big = iwae_log_likelihood(model, x, k=400, chunk=100)
        log_px_z = model.decode(z).log_prob(x)  # (K, B) on the 400 draws above
        elbo_400 = log_px_z.mean(0) - kl
        assert big.mean() > elbo_400.mean() - 3 * log_px_z.std(0).mean() / math.sqrt(400)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model, x, y = make(name)
    model.train()
    with model.given(y):
        elbo(model, x, n_samples=2).loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    model, x, y = make(name)
    model.eval()
    opt = torch.optim.Adam(model.parameters())
    trainer = {"epoch": 0, "step": 0, "batch_in_epoch": 0}
    save_checkpoint(
        tmp_path, Config(model=model.config, data_info=model.data_info), model, opt, trainer, {}
    )
    loaded = load_run(tmp_path)
    assert type(loaded) is type(model)
    saved, back = model.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys()
    for key in saved:
        assert torch.equal(saved[key], back[key]), key
    with model.given(y), loaded.given(y):
        assert torch.equal(model.encode(x).mean, loaded.encode(x).mean)
        z = model.encode(x).mean
        assert torch.equal(model.decode(z).log_prob(x), loaded.decode(z).log_prob(x))
    a = model.sample(4, mean=True, generator=torch.Generator().manual_seed(3))
    b = loaded.sample(4, mean=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_seed(name):
    (m1, x, y), (m2, _, _) = make(name, seed=7), make(name, seed=7)
    m3, _, _ = make(name, seed=8)
    p1, p2, p3 = (torch.cat([p.flatten() for p in m.parameters()]) for m in (m1, m2, m3))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    bounds = []
    for m in (m1, m2):
        torch.manual_seed(11)
        with m.given(y):
            bounds.append(elbo(m, x, n_samples=3).bound)
    assert torch.equal(*bounds)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_gets_a_clear_error(name):
    model, x, y = make(name)
    with model.given(y), pytest.raises(ValueError, match="shape"):
        model.encode(x[:, :-1])
    if y is not None:
        with pytest.raises(ValueError, match="needs y"):
            model.encode(x)


@pytest.mark.parametrize("size", [(1, 28, 28), (3, 17, 23), (3, 5, 6), (1, 64, 64)])
@pytest.mark.parametrize("se", [False, True])
def test_resnet_networks_take_grey_and_rgb_images_of_any_size(size, se):
    cfg = dict(arch="resnet", channels=[8, 16, 32], hidden=[16], latent_dim=2, blocks=2)
    model = build(**cfg, squeeze_excitation=se, event_shape=list(size))
    x = model.sample(2)
    assert x.shape == (2, *size)
    assert model.decode(model.encode(x).mean).mean.shape == (2, *size)
