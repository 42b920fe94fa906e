"""VQ-VAE: nearest-code quantization, the straight-through gradient, EMA codebook updates,
dead-code restarts, a normalized autoregressive code prior, and an evaluation that reports
reconstruction and code bits, never a bound it does not have."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import vaekit
from builders import build
from vaekit.cli import main
from vaekit.evaluation import evaluate
from vaekit.models.vqvae import CodePriorNet
from vaekit.objectives import elbo


def _model(**kw):
    torch.manual_seed(0)
    opts = dict(kind="vqvae", event_shape=[1, 8, 8], channels=[8, 16], code_dim=3,
                codebook_size=6, prior_hidden=16)  # fmt: skip
    return build(**{**opts, **kw})


def _x(n=16, seed=1):
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def test_quantize_picks_the_nearest_code_by_brute_force():
    model = _model()
    z_e = torch.randn(5, 3, 2, 2)
    z_q, idx = model.quantize(z_e)
    for n, i, j in itertools.product(range(5), range(2), range(2)):
        d = (model.codebook - z_e[n, :, i, j]).pow(2).sum(1)
        assert idx[n, i * 2 + j] == d.argmin()
        assert torch.equal(z_q[n, :, i, j], model.codebook[d.argmin()])
    assert torch.equal(model.codes_to_z(idx), z_q.flatten(1))


def test_straight_through_passes_the_decoder_gradient_to_the_encoder_unchanged():
    model = _model()
    model.eval()
    x = _x()
    q = model.encode(x)
    z = q.rsample()
    z.retain_grad()
    model.decode(z).log_prob(x).sum().backward()
    enc_out = model.encoder[-1]
    assert enc_out.weight.grad is not None and enc_out.weight.grad.abs().sum() > 0
    # d/dz_e of the decoder term is d/dz_q: check on a fresh graph
    z_e = model.encoder(x).detach().requires_grad_(True)
    z_q, _ = model.quantize(z_e.detach())
    st = z_e + (z_q - z_e).detach()
    torch.testing.assert_close(st, z_q)
    g_st = torch.autograd.grad(model.decode(st.flatten(1)).log_prob(x).sum(), z_e)[0]
    zq = z_q.clone().requires_grad_(True)
    g_q = torch.autograd.grad(model.decode(zq.flatten(1)).log_prob(x).sum(), zq)[0]
    torch.testing.assert_close(g_st, g_q)


def test_ema_with_zero_decay_moves_each_used_code_to_its_cluster_mean():
    model = _model(codebook_decay=0.0)
    model.train()
    model.encode(_x())  # the first training batch initialises the codebook
    assert bool(model.initialized)
    x = _x(seed=2)
    z_e = model.encoder(x).detach()
    _, idx = model.quantize(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    model._ema_update(z_e, idx)
    for k in idx.unique():
        members = flat[idx.reshape(-1) == k]
        torch.testing.assert_close(model.codebook[k], members.mean(0), rtol=1e-4, atol=1e-4)


def test_dead_codes_restart_on_encoder_outputs():
    model = _model(codebook_size=6)
    model.train()
    model.encode(_x())
    with torch.no_grad():
        model.codebook[5] = 1e6  # far from everything: never assigned
        model.ema_sum[5] = 1e6
    for _ in range(300):  # its EMA count decays below 1
        model.encode(_x())
    flat = model.encoder(_x()).detach().permute(0, 2, 3, 1).reshape(-1, 3)
    assert model.codebook[5].abs().max() < 1e3
    assert (flat - model.codebook[5]).pow(2).sum(1).min() < 10.0


def test_code_prior_is_a_normalized_distribution_over_index_grids():
    prior = CodePriorNet(n_codes=3, hidden=8, length=3)
    grids = torch.tensor(list(itertools.product(range(3), repeat=3)))
    total = prior.log_prob(grids).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0), rtol=1e-5, atol=1e-5)
    s = prior.sample(50, generator=torch.Generator().manual_seed(0))
    assert s.shape == (50, 3) and s.min() >= 0 and s.max() < 3


def test_the_prior_distribution_scores_the_encoders_codes():
    model = _model()
    model.eval()
    q = model.encode(_x())
    torch.testing.assert_close(model.prior().log_prob(q.mean), -q.prior_nll)
    z = model.prior().sample((4,))
    assert z.shape == (4, model.latent_dim)
    assert torch.equal(model.quantize(model.unflatten(z))[0].flatten(1), z)  # on the lattice


def test_loss_is_reconstruction_commitment_and_code_nll_with_zero_kl():
    model = _model()
    model.eval()
    x = _x()
    res = elbo(model, x)
    q = model.encode(x)
    expected = -res.log_px_z.mean() + (q.commitment + q.prior_nll).mean()
    torch.testing.assert_close(res.loss, expected)
    assert (res.kl == 0).all() and set(res.terms) == {"commitment", "code_nll"}
    with pytest.raises(NotImplementedError, match="point mass"):
        vaekit.log_likelihood(model, x, k=2)


def test_evaluation_reports_reconstruction_and_code_bits_never_a_bound():
    model = _model()
    ev = evaluate(model, _x(), k=100)
    for key in ("elbo", "kl", "nll", "bpd", "elbo_bpd", "active_units"):
        assert key not in ev, key
    assert ev["recon"] < 0 and math.isfinite(ev["psnr"])
    assert ev["bits_per_code"] > 0 and ev["uniform_bits_per_code"] == pytest.approx(math.log2(6))
    assert 1 <= ev["codes_used"] <= 6 and ev["code_grid"] == [2, 2]


def test_vqvae_trains_and_samples_from_its_prior(tmp_path, capsys):
    out = tmp_path / "vq"
    argv = ["train", "--dataset", "digits", "--model", "vqvae", "--channels", "16,16"]
    argv += ["--set", "model.codebook_size=16", "--set", "model.code_dim=4"]
    argv += ["--epochs", "6", "--batch-size", "50", "--lr", "3e-3", "--out", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "test_elbo" not in rows[-1] and "test_psnr" in rows[-1]
    assert rows[-1]["test_recon"] > rows[0]["test_recon"]  # it learned to reconstruct
    assert rows[-1]["test_bits_per_code"] < math.log2(16)  # the prior beats a uniform one
    assert rows[-1]["train_code_nll"] < rows[0]["train_code_nll"]
    assert (out / "samples.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--iw-samples", "10"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "nll" not in ev and "elbo" not in ev
    assert ev["psnr"] == pytest.approx(rows[-1]["test_psnr"], rel=1e-6) and ev["psnr"] > 5
    model = vaekit.load(out)
    s = model.sample(8, generator=torch.Generator().manual_seed(0))
    model.check(s)


def test_fit_prior_lowers_the_code_nll_and_leaves_the_rest_alone():
    model = _model()
    x = _x(64)
    model.eval()  # (a training-mode encode steps the EMA codebook)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("code_")}
    nll0 = float(model.encode(x).prior_nll.detach().mean())
    losses = model.fit_prior(x, steps=150, batch_size=32, lr=1e-2)
    assert len(losses) == 150 and sum(losses[-10:]) / 10 < nll0 - 0.5
    assert float(model.encode(x).prior_nll.detach().mean()) < nll0 - 0.5
    for k, v in model.state_dict().items():
        if k in before:
            assert torch.equal(v, before[k]), k
