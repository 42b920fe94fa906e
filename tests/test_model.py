"""The VAE's public surface: shapes, distributions, and clear errors for bad input."""

import pytest
import torch
from torch.distributions import Independent

import vaekit
from builders import build
from vaekit.distributions import SupportError


def _model(**kw):
    return build(**{"hidden": [32], "latent_dim": 3, "event_shape": [1, 8, 8], **kw})


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "categorical", "logistic"])
def test_encode_decode_sample_shapes(arch, likelihood):
    model = _model(arch=arch, likelihood=likelihood, channels=[8, 16])
    x = model.sample(5)
    assert x.shape == (5, 1, 8, 8)
    model.check(x)  # samples lie in the likelihood's support
    qz_x = model.encode(x)
    assert isinstance(qz_x, Independent) and qz_x.mean.shape == (5, 3)
    z = qz_x.rsample((4,))  # (S, B, D)
    px_z = model.decode(z)
    assert px_z.batch_shape == (4, 5) and px_z.event_shape == (1, 8, 8)
    assert px_z.log_prob(x).shape == (4, 5)
    assert vaekit.elbo(model, x).bound.shape == (5,)
    assert vaekit.log_likelihood(model, x, k=8, chunk=3).shape == (5,)


@pytest.mark.parametrize("size", [(1, 28, 28), (3, 17, 23), (1, 64, 64), (3, 5, 6)])
def test_conv_networks_adapt_to_any_image_size(size):
    model = _model(arch="conv", channels=[8, 16, 32], event_shape=list(size))
    x = model.sample(2)
    assert x.shape == (2, *size)
    assert model.decode(model.encode(x).mean).mean.shape == (2, *size)


def test_bad_inputs_raise_clear_errors():
    model = _model()
    good = (torch.rand(4, 1, 8, 8) > 0.5).float()
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 8, 8\)"):
        vaekit.elbo(model, good.view(4, 64))
    with pytest.raises(SupportError, match="NaN"):
        vaekit.elbo(model, torch.where(good > 0, float("nan"), 0.0))
    with pytest.raises(SupportError, match="binary"):
        model.encode(good * 255)
    with pytest.raises(TypeError):
        model.encode(good.numpy())


def test_iwae_estimate_is_at_least_the_elbo_on_average():
    torch.manual_seed(0)
    model = _model()
    x = model.sample(64)
    elbo = vaekit.elbo(model, x, n_samples=50).bound
    assert vaekit.log_likelihood(model, x, k=200).mean() > elbo.mean()


def test_mlp_in_place_relu_gives_the_out_of_place_outputs_and_gradients():
    """The MLPs apply ReLU in place (a memory saving); outputs and every parameter's gradient
    equal those of the same layers with an out-of-place ReLU."""
    import copy

    from vaekit.networks import MLPEncoder

    torch.manual_seed(0)
    enc = MLPEncoder((1, 6, 6), 8, hidden=(16, 12))
    ref = copy.deepcopy(enc)
    for i, layer in enumerate(ref.net):
        if isinstance(layer, torch.nn.ReLU):
            assert enc.net[i].inplace
            ref.net[i] = torch.nn.ReLU()
    x = torch.rand(5, 1, 6, 6)
    out, out_ref = enc(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    (out**2).sum().backward()
    (out_ref**2).sum().backward()
    for p, q in zip(enc.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
