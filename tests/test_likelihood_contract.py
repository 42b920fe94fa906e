"""One contract every registered likelihood passes (beside the model contract, test_contract.py):
shapes, normalisation over a small support, samples inside the support, support errors, 8-bit
preparation and the bits/dim constant. A new ``LIKELIHOODS`` entry supplies two hooks below:
how to build it for one data element, and its support (enumerated, or a grid to integrate on)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vaekit.data import DataPrep
from vaekit.distributions import SupportError
from vaekit.likelihoods import LIKELIHOODS, make_likelihood
from vaekit.likelihoods.tokens import SPECIALS
from vaekit.networks import GRUDecoder

VOCAB = [*SPECIALS, "a", "b"]
TOKENS_T = 3
TABLE = [
    {"name": "x", "kind": "numeric", "mean": 1.0, "std": 2.0},
    {"name": "b", "kind": "binary", "levels": ["n", "y"]},
    {"name": "c", "kind": "categorical", "levels": ["p", "q", "r"]},
]


def _grid(lo: float, hi: float, n: int = 20001) -> torch.Tensor:
    return torch.linspace(lo, hi, n, dtype=torch.float64)


def _token_rows() -> torch.Tensor:
    """Every row of T ids: tokens from the vocabulary (not pad/bos), then <eos>, then <pad>."""
    rows = []
    for k in range(TOKENS_T):
        for ids in itertools.product(range(3, len(VOCAB)), repeat=k):
            rows.append([*ids, 2] + [0] * (TOKENS_T - k - 1))
    return torch.tensor(rows, dtype=torch.float64)


# name -> (event shape, options, support of the event: (values (N, *event), "sum" | "integral"))
HOOKS = {
    "bernoulli": ((1,), {}, lambda: (torch.tensor([[0.0], [1.0]]), "sum")),
    "gaussian": ((1,), {"scale": "shared"}, lambda: (_grid(-12, 12)[:, None], "integral")),
    "categorical": ((1,), {}, lambda: (torch.arange(256.0)[:, None], "sum")),
    "logistic": ((1,), {}, lambda: (torch.arange(256.0)[:, None], "sum")),
    "logistic_mixture": (
        (1, 1, 1),
        {"components": 3},
        lambda: (torch.arange(256.0)[:, None, None, None], "sum"),
    ),
    "poisson": ((1,), {}, lambda: (torch.arange(400.0)[:, None], "sum")),
    "negbinomial": ((1,), {}, lambda: (torch.arange(4000.0)[:, None], "sum")),
    "tabular": ((3,), {"columns": TABLE}, None),  # a product of columns: checked per column below
    "tokens": ((TOKENS_T,), {"vocab": VOCAB}, lambda: (_token_rows(), "sum")),
}
BAD = {  # one value outside each support (NaN is refused by all but tabular, where it is missing)
    "bernoulli": 0.5,
    "categorical": 256.0,
    "logistic": -1.0,
    "logistic_mixture": 0.5,
    "poisson": 1.5,
    "negbinomial": -2.0,
    "tokens": 9.0,
}
EIGHT_BIT = {
    "bernoulli", "gaussian", "categorical", "logistic", "logistic_mixture", "poisson", "negbinomial"
}  # fmt: skip
NAMES = LIKELIHOODS.choices()


def make(name: str, seed: int = 0):
    """(likelihood, distribution p(x|z) of batch (S=2, B=3), decoder outputs)."""
    shape, options, _ = HOOKS[name]
    torch.manual_seed(seed)
    lik = make_likelihood(name, shape, **options).double()
    if lik.is_text:
        net = GRUDecoder(len(VOCAB), 4, embed_dim=4, hidden=8).double()
        return lik, lik.autoregressive(torch.randn(2, 3, 4, dtype=torch.float64), net), None
    params = torch.randn(2, 3, lik.n_params, *lik.network_shape, dtype=torch.float64)
    return lik, lik(params), params


def test_every_registered_likelihood_has_hooks():
    assert set(HOOKS) == set(NAMES), "add the new likelihood's hooks to HOOKS"


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_samples_inside_the_support(name):
    lik, px_z, _ = make(name)
    assert px_z.batch_shape == (2, 3) and px_z.event_shape == lik.event_shape
    x = px_z.sample()
    assert x.shape == (2, 3, *lik.event_shape)
    flat = x.reshape(-1, *lik.event_shape)
    lik.check(flat)  # samples are in the support
    lp = px_z.log_prob(x)
    assert lp.shape == (2, 3) and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", [n for n in NAMES if HOOKS[n][2] is not None])
def test_normalised_over_the_support(name):
    lik, px_z, _ = make(name)
    values, how = HOOKS[name][2]()
    values = values.to(torch.float64)
    lp = px_z.log_prob(values[:, None, None])  # (N, S, B): every value under every p(x|z)
    p = lp.exp()
    total = p.sum(0) if how == "sum" else torch.trapezoid(p, values[:, 0], dim=0)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


def test_tabular_is_a_product_of_normalised_columns():
    lik, px_z, _ = make("tabular")
    base = px_z.base_dist  # per-column log-probabilities, (S, B, C)
    nan = float("nan")
    grid = _grid(-60, 60)
    rows = torch.stack([grid, torch.full_like(grid, nan), torch.full_like(grid, nan)], -1)
    numeric = torch.trapezoid(base.log_prob(rows[:, None, None])[..., 0].exp(), grid, dim=0)
    torch.testing.assert_close(numeric, torch.ones(2, 3, dtype=torch.float64), atol=1e-6, rtol=0)
    for col, k in ((1, 2), (2, 3)):
        rows = torch.full((k, 3), nan, dtype=torch.float64)
        rows[:, col] = torch.arange(k)
        mass = base.log_prob(rows[:, None, None])[..., col].exp().sum(0)
        torch.testing.assert_close(mass, torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(BAD))
def test_values_outside_the_support_are_refused(name):
    lik, px_z, _ = make(name)
    x = px_z.sample().reshape(-1, *lik.event_shape).clone()
    lik.check(x)
    x.view(-1)[-1] = BAD[name]  # the last value of the last row: every row is checked
    with pytest.raises(SupportError):
        lik.check(x)
    x.view(-1)[-1] = float("nan")
    with pytest.raises(SupportError):
        lik.check(x)


@pytest.mark.parametrize("name", sorted(EIGHT_BIT))
def test_8bit_data_are_prepared_into_the_support(name):
    lik, _, _ = make(name)
    raw = torch.randint(0, 256, (50, *lik.event_shape), dtype=torch.uint8)
    prep = DataPrep(lik, "auto")
    lik.check(prep.fixed(raw, seed=0))
    lik.check(prep(raw, torch.Generator().manual_seed(1)))
    assert prep.binarize == ("dynamic" if lik.binary else "none")


@pytest.mark.parametrize("name", NAMES)
def test_bits_per_dim_constant(name):
    lik, _, _ = make(name)
    expected = 0.0 if lik.discrete or name == "tabular" else math.log(256)
    assert lik.nats_offset_per_dim == pytest.approx(expected)


def test_a_gaussian_on_real_valued_data_adds_no_8bit_constant():
    assert make_likelihood("gaussian", (3,), levels=None).nats_offset_per_dim == 0.0
    assert make_likelihood("gaussian", (3,), levels=256).nats_offset_per_dim == math.log(256)


def test_count_log_probabilities_are_the_closed_forms():
    lik = make_likelihood("poisson", (1,)).double()
    eta = torch.tensor([[[0.7]]], dtype=torch.float64)
    k = torch.tensor([[3.0]], dtype=torch.float64)
    rate = math.exp(0.7)
    expected = 3 * 0.7 - rate - math.log(6)
    assert float(lik(eta).log_prob(k)) == pytest.approx(expected, abs=1e-12)
    nb = make_likelihood("negbinomial", (1,)).double()
    with torch.no_grad():
        nb.log_dispersion.fill_(math.log(2.5))
    mu, theta = rate, 2.5
    expected = (
        math.lgamma(3 + theta) - math.lgamma(theta) - math.log(6)
        + theta * math.log(theta / (theta + mu)) + 3 * math.log(mu / (theta + mu))
    )  # fmt: skip
    assert float(nb(eta).log_prob(k)) == pytest.approx(expected, abs=1e-10)
    assert float(nb(eta).base_dist.mean) == pytest.approx(mu)
