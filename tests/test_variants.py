"""The disentangling variants as combinations in the objective: the loss changes by exactly the
penalty, the reported bound stays the ELBO, FactorVAE's discriminator trains on its own and
resumes exactly, and every model of the contract that a penalty applies to trains with it."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_contract import IMAGE, NAMES, make

import vaekit
from builders import build
from vaekit.checkpoint import latest_checkpoint
from vaekit.cli import build_parser
from vaekit.config import ObjectiveConfig, load_config
from vaekit.objectives import PENALTIES, elbo, gaussian_parameters, objective_from_config
from vaekit.penalties import dip_penalty, mmd, tc_decomposition

SMALL_D = {"factor_hidden": [16, 16]}


def _objective(model, penalty, n=1000, **kw):
    cfg = ObjectiveConfig(penalty=penalty, **{**SMALL_D, **kw})
    return objective_from_config(cfg, model, dataset_size=n)


def _seeded(f, seed=5):
    torch.manual_seed(seed)
    return f()


def test_the_registry_names_every_variant_and_the_cli_offers_them():
    assert list(PENALTIES) == ["none", "tc", "dip-i", "dip-ii", "mmd", "factor"]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    action = next(a for a in sub.choices["train"]._actions if a.dest == "penalty")
    assert list(action.choices) == list(PENALTIES)


@pytest.mark.parametrize("penalty", [p for p in PENALTIES if p != "none"])
def test_bound_is_the_elbo_whatever_the_penalty(penalty):
    model, x, _ = make("vae-mlp")
    obj = _objective(model, penalty, n=50, beta=4.0)
    res = _seeded(lambda: obj(model, x))
    ref = _seeded(lambda: elbo(model, x, check=False))
    torch.testing.assert_close(res.bound, ref.bound)
    torch.testing.assert_close(res.log_px_z, ref.log_px_z)
    torch.testing.assert_close(res.kl, ref.kl)
    assert torch.isfinite(res.loss) and res.terms


def test_tc_loss_with_unit_weights_is_the_monte_carlo_negative_elbo():
    """α = β = γ = 1: MI + TC + dim-KL telescope to E[log q(z|x) − log p(z)] on the same draws,
    so the β-TCVAE loss is −(log p(x|z) + log p(z) − log q(z|x)), batch mean."""
    model, x, _ = make("vae-mlp")
    for est in ("mss", "mws"):
        obj = _objective(model, "tc", n=40, tc_estimator=est, beta=1.0)
        res = _seeded(lambda obj=obj: obj(model, x))
        z = res.z[0]
        qz_x = model.encode(x)
        mc_kl = qz_x.log_prob(z) - model.prior().log_prob(z)
        torch.testing.assert_close(res.loss, -(res.log_px_z - mc_kl).mean(), atol=1e-5, rtol=0)


def test_tc_weights_enter_linearly():
    model, x, _ = make("vae-mlp")
    res = _seeded(lambda: _objective(model, "tc", n=40, tc_alpha=2.0, beta=6.0, tc_gamma=0.5)(
        model, x
    ))  # fmt: skip
    loc, scale = gaussian_parameters(model.encode(x))
    parts = tc_decomposition(res.z[0], loc, scale, 40, "mss")
    expected = -res.log_px_z.mean() + 2.0 * parts.mi + 6.0 * parts.tc + 0.5 * parts.dim_kl
    torch.testing.assert_close(res.loss, expected)
    torch.testing.assert_close(res.terms["tc"], parts.tc.detach())


@pytest.mark.parametrize("penalty", ["dip-i", "dip-ii", "mmd"])
def test_additive_penalties_add_exactly_their_term(penalty):
    model, x, _ = make("vae-mlp")
    kw = {"beta": 2.0, "dip_lambda_od": 3.0, "mmd_lambda": 7.0, "mmd_kernel": "rbf"}
    res = _seeded(lambda: _objective(model, penalty, **kw)(model, x))
    base = _seeded(lambda: elbo(model, x, beta=2.0, check=False))
    loc, scale = gaussian_parameters(model.encode(x))
    if penalty == "mmd":
        torch.manual_seed(5)
        z = model.encode(x).rsample((1,))[0]
        prior_z = model.prior().sample((len(x),))
        term = 7.0 * mmd(z, prior_z, "rbf")
    else:
        term = dip_penalty(loc, scale, penalty[-2:].strip("-"), 3.0)
    torch.testing.assert_close(res.loss, base.loss + term)


def test_zero_weights_give_back_the_beta_elbo_loss():
    model, x, _ = make("vae-mlp")
    for penalty, kw in [("mmd", {"mmd_lambda": 0.0}), ("dip-ii", {"dip_lambda_od": 0.0,
                        "dip_lambda_d": 0.0}), ("factor", {"factor_gamma": 0.0})]:  # fmt: skip
        obj = _objective(model, penalty, beta=3.0, **kw)  # D's initialisation draws too
        res = _seeded(lambda obj=obj: obj(model, x))
        base = _seeded(lambda: elbo(model, x, beta=3.0, check=False))
        torch.testing.assert_close(res.loss, base.loss)


def test_penalty_errors_are_clear():
    model, x, _ = make("vae-mlp")
    with pytest.raises(ValueError, match="unknown penalty"):
        ObjectiveConfig(penalty="nope") and objective_from_config(ObjectiveConfig(penalty="nope"))
    with pytest.raises(ValueError, match="training-set size"):
        objective_from_config(ObjectiveConfig(penalty="tc"), model)(model, x)
    with pytest.raises(ValueError, match="objective elbo"):
        objective_from_config(ObjectiveConfig(name="iwae", penalty="mmd"))
    with pytest.raises(ValueError, match="no free bits"):
        objective_from_config(ObjectiveConfig(penalty="tc", free_bits=0.5))
    with pytest.raises(ValueError, match="non-negative"):
        objective_from_config(ObjectiveConfig(penalty="mmd", mmd_lambda=-1.0))
    ae, x_ae, _ = make("ae")
    with pytest.raises(ValueError, match="diagonal-Gaussian"):
        _objective(ae, "dip-ii")(ae, x_ae)


def _applies(name: str, penalty: str) -> bool:
    """Gaussian-posterior penalties need a one-layer Gaussian q(z|x); MMD and the discriminator
    read samples only (with the autoencoder's point mass, MMD is the WAE)."""
    gaussian = name.startswith(("vae", "cvae", "seqvae")) and not name.endswith(("iaf", "planar"))
    return gaussian or not PENALTIES.get(penalty).gaussian


@pytest.mark.parametrize("penalty", [p for p in PENALTIES if p != "none"])
@pytest.mark.parametrize("name", NAMES)
def test_every_model_of_the_contract_trains_with_each_penalty_or_says_why_not(name, penalty):
    model, x, y = make(name)
    obj = _objective(model, penalty, n=50)
    model.train()
    if not _applies(name, penalty):
        with model.given(y), pytest.raises(ValueError, match="diagonal-Gaussian posterior"):
            obj(model, x, y)
        return
    with model.given(y):
        res = obj(model, x, y)
    assert torch.isfinite(res.loss) and torch.isfinite(res.bound).all()
    res.loss.backward()
    for pname, p in model.named_parameters():
        if name == "ae" and pname.startswith("prior_net"):
            continue  # the autoencoder's Gaussian fit is a moving average, not trained
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


# ------------------------------------------------- the network choices beside Pythae


def test_torch_init_keeps_pytorch_defaults_he_init_zeroes_hidden_biases():
    """``model.init``: he (default) — hidden layers He normal, zero bias; torch — PyTorch's
    default U(±1/√fan_in) on every layer. The last layer is PyTorch's default in both."""
    he, torch_init = build(**IMAGE), build(**IMAGE, init="torch")
    for model, zero in ((he, True), (torch_init, False)):
        layers = [m for m in model.encoder.net if isinstance(m, torch.nn.Linear)]
        assert len(layers) == 2
        first, last = layers
        assert bool((first.bias == 0).all()) is zero
        bound = 1 / math.sqrt(first.in_features)
        assert bool((first.weight.abs() <= bound).all()) is not zero  # He: sd √(2/fan_in)
        assert (last.bias != 0).any() and (last.weight.abs() <= 1 / math.sqrt(32)).all()


def test_exp_scale_head_is_exp_half_log_variance():
    """``model.scale_head``: softplus — σ = softplus(h) + 1e-4; exp — σ = exp(½h), h = log σ²."""
    x = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for head in ("softplus", "exp"):
        model = build(**IMAGE, scale_head=head)
        h = model.encoder(x)
        loc, raw = h.chunk(2, -1)
        q = model.encode(x)
        want = torch.exp(0.5 * raw) if head == "exp" else F.softplus(raw) + 1e-4
        torch.testing.assert_close(q.mean, loc)
        torch.testing.assert_close(q.stddev, want)
    iaf = build(**IMAGE, posterior="iaf", flow_steps=2, scale_head="exp")
    h = iaf.encoder(x)
    torch.testing.assert_close(iaf.encode(x).base.stddev, torch.exp(0.5 * h[:, 3:6]))


def test_init_and_scale_head_errors_are_clear():
    with pytest.raises(ValueError, match="model.init must be one of"):
        build(**IMAGE, init="xavier")
    with pytest.raises(ValueError, match="applies to arch mlp"):
        build(**IMAGE, arch="conv", channels=[8, 16], init="torch")
    with pytest.raises(ValueError, match="model.scale_head must be one of"):
        build(**IMAGE, scale_head="sigmoid")
    with pytest.raises(ValueError, match="for kinds vae and cvae"):
        build(**IMAGE, kind="hvae", latent_dims=[4, 3, 2], scale_head="exp")


# ---------------------------------------------------------------------------- FactorVAE


def test_discriminator_is_part_of_the_objective_and_has_its_own_optimizer():
    model, x, _ = make("vae-mlp")
    obj = _objective(model, "factor")
    assert any(k.startswith("discriminator.") for k in obj.state_dict())
    assert obj.main_parameters() == []  # D is not optimized with the model
    opt = obj.make_aux_optimizer()
    assert opt.param_groups[0]["betas"] == (0.5, 0.9)
    before_d = [p.detach().clone() for p in obj.discriminator.parameters()]
    before_m = [p.detach().clone() for p in model.parameters()]
    res = obj(model, x)
    res.loss.backward()
    logged = obj.after_step(model, lambda: (x, None), opt)
    assert math.isfinite(logged["disc_loss"])
    assert any(
        not torch.equal(a, b) for a, b in zip(before_d, obj.discriminator.parameters(), strict=True)
    )
    assert all(
        torch.equal(a, b) for a, b in zip(before_m, model.parameters(), strict=True)
    )  # untouched
    assert obj.after_step(model, lambda: (x, None), opt) == {}  # once per model step


def test_discriminator_learns_to_tell_correlated_codes_from_permuted_ones():
    """Codes z = (u, u + small noise): q(z) is far from Π q(z_d); D's loss drops below log 2."""
    model, x, _ = make("vae-mlp")
    obj = _objective(model, "factor", factor_lr=3e-3)
    opt = obj.make_aux_optimizer()
    g = torch.Generator().manual_seed(0)

    def codes(n=256):
        u = torch.randn(n, 1, generator=g)
        return torch.cat([u, u + 0.05 * torch.randn(n, 1, generator=g), u], 1)

    class Fake:  # encode(x) → a point "posterior" whose rsample returns correlated codes
        def encode(self, x, y=None, check=False):
            z = codes()
            return type("Q", (), {"rsample": lambda self: z})()

    losses = []
    for _ in range(150):
        obj._codes = [codes()]  # one micro-batch
        losses.append(obj.after_step(Fake(), lambda: (None, None), opt)["disc_loss"])
    assert sum(losses[:10]) / 10 > 0.6 and sum(losses[-10:]) / 10 < 0.45


def _cfg(**overrides):
    base = {
        "data.dataset": "digits",
        "model.hidden": [32],
        "model.latent_dim": 4,
        "objective.penalty": "factor",
        "objective.factor_hidden": [32, 32],
        "objective.factor_gamma": 5.0,
        "train.epochs": 2,
        "train.batch_size": 64,
        "train.deterministic": True,
        "train.images": False,
    }
    return load_config(None, {**base, **overrides})


def test_factor_vae_resumes_exactly_discriminator_and_its_adam_included(tmp_path):
    full = vaekit.train(_cfg(), tmp_path / "full", log=lambda *_: None)
    out = tmp_path / "interrupted"
    vaekit.train(_cfg(**{"train.max_steps": 30}), out, log=lambda *_: None)
    trainer = json.loads((latest_checkpoint(out) / "state/trainer.json").read_text())
    assert trainer["step"] == 30 and "aux" in trainer["optimizers"]
    vaekit.train(None, out, resume=True, log=lambda *_: None)
    for name in ("model.safetensors", "state/tensors.safetensors"):
        a = load_file(str(latest_checkpoint(full) / name))
        b = load_file(str(latest_checkpoint(out) / name))
        assert a.keys() == b.keys(), name
        for key in a:
            assert torch.equal(a[key], b[key]), key
    tensors = load_file(str(latest_checkpoint(full) / "state/tensors.safetensors"))
    assert any(k.startswith("objective.discriminator.") for k in tensors)
    assert any(k.startswith("opt_aux.") and k.endswith("exp_avg") for k in tensors)
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert "train_disc_loss" in rows[-1] and "train_tc" in rows[-1]
    # the saved config rebuilds the same objective
    cfg = vaekit.Config.from_dict(json.loads((full / "config.json").read_text()))
    assert dataclasses.asdict(cfg.objective)["factor_hidden"] == [32, 32]
