"""Disentanglement metrics on constructed codes whose answer is known."""

import math

import numpy as np
import pytest

from vaekit.data.shapes import FactorDataset, Shapes
from vaekit.disentangle import (
    dci,
    dci_from_importance,
    discretize,
    evaluate_codes,
    factor_vae_score,
    importance_matrix,
    mig,
    mig_per_factor,
    mutual_info_matrix,
    sap,
    sap_score_matrix,
)


class Grid:
    """A FactorDataset whose observations are the factor values themselves (as floats)."""

    def __init__(self, sizes):
        self.factor_sizes = tuple(sizes)

    def sample_factors(self, n, rng):
        return rng.integers(0, self.factor_sizes, size=(n, len(self.factor_sizes)))

    def render(self, factors):
        return np.asarray(factors, dtype=np.float64)


GRID = Grid((1, 3, 6, 10, 8))  # a constant factor first, as dSprites' colour
PERM = [3, 0, 2, 1]  # code j reads varying factor PERM[j]


def perfect(obs):
    """Each code a monotone function of one factor, in permuted order (bins stay distinct)."""
    v = obs[:, 1:][:, PERM]
    return np.stack([3 * v[:, 0] + np.sin(v[:, 0]), -v[:, 1], 0.1 * v[:, 2] + 5, -2 * v[:, 3]], 1)


def _data(encode, n=3000, n_test=1000, seed=0):
    rng = np.random.default_rng(seed)
    f, ft = GRID.sample_factors(n, rng), GRID.sample_factors(n_test, rng)
    return encode(GRID.render(f)), f, encode(GRID.render(ft)), ft


def _noise_encoder(seed, d=4):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.normal(size=(len(obs), d))


def test_grid_is_a_factor_dataset():
    assert isinstance(GRID, FactorDataset)


# ---------------------------------------------------------------------------- MIG


def test_mig_hand_computed_case():
    """v = (0,0,1,1); z_1 = v gives I = log 2 = H(v); z_2 = (0,0,0,1) gives
    I = H(¾, ¼) − ½ log 2 ≈ 0.2158 nats; MIG = 1 − I₂ / log 2 = 1.5 − H_bits(¼) ≈ 0.68872."""
    codes = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    factors = np.array([[0, 0], [0, 0], [0, 1], [0, 1]])  # the first factor is constant
    h_quarter = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mi = mutual_info_matrix(codes, factors)
    np.testing.assert_allclose(mi[:, 1], [math.log(2), h_quarter - 0.5 * math.log(2)])
    per_factor = mig_per_factor(codes, factors)
    assert np.isnan(per_factor[0])
    h_bits = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert mig(codes, factors) == pytest.approx(1.5 - h_bits, abs=1e-12)
    assert mig(codes, factors) == pytest.approx(0.688722, abs=1e-6)


def test_discretize_equal_width_bins():
    codes = np.array([[0.0, 5.0], [0.5, 5.0], [0.99, 5.0], [1.0, 5.0]])
    np.testing.assert_array_equal(discretize(codes, 4), [[0, 0], [2, 0], [3, 0], [3, 0]])


# ---------------------------------------------------------------------------- known answers


def test_perfect_code_scores_one():
    c, f, ct, ft = _data(perfect)
    assert mig(c, f) > 0.97
    result = dci(c, f, ct, ft)
    assert result.importance.shape == (4, 4)
    np.testing.assert_array_equal(result.importance.argmax(0), np.argsort(PERM))
    assert result.disentanglement > 0.97 and result.completeness > 0.97
    assert result.informativeness == 1.0
    assert sap(c, f, ct, ft) > 0.75  # gap ≈ 1 − (chance of the second best)
    score = factor_vae_score(perfect, GRID, batch_size=32, n_train=300, n_eval=300, n_variance=2000)
    assert score == (1.0, 1.0, 4)


def test_noise_codes_score_near_zero():
    c, f, ct, ft = _data(_noise_encoder(1), n=1500, n_test=1000)
    assert mig(c, f) < 0.02
    result = dci(c, f, ct, ft)
    assert result.disentanglement < 0.1 and result.completeness < 0.1
    chance = np.mean([1 / 3, 1 / 6, 1 / 10, 1 / 8])
    assert result.informativeness == pytest.approx(chance, abs=0.05)
    assert sap(c, f, ct, ft) < 0.03
    score = factor_vae_score(
        _noise_encoder(2), GRID, batch_size=32, n_train=500, n_eval=1000, n_variance=2000
    )
    assert score.eval_accuracy == pytest.approx(1 / 4, abs=0.05)  # chance over 4 factors


def test_duplicated_dimension_reduces_completeness_only():
    def duplicated(obs):
        z = perfect(obs)
        return np.c_[z, np.exp(z[:, 1])]  # a second, monotone copy of factor PERM[1]'s code

    c, f, ct, ft = _data(duplicated, n=1500)
    base = dci(*_data(perfect, n=1500))
    result = dci(c, f, ct, ft)
    factor = PERM[1]
    split = result.importance[[1, 4], factor]
    assert split.min() > 0.2  # both copies used
    per_factor_c = 1 - (-(split / split.sum()) @ np.log(split / split.sum())) / math.log(5)
    assert per_factor_c < 0.7
    assert result.completeness < base.completeness - 0.05
    assert result.disentanglement > 0.95  # each code still serves a single factor


def test_dci_sap_invariant_to_monotone_transforms():
    c, f, ct, ft = _data(perfect, n=800, n_test=400)
    warp = np.exp  # strictly increasing: same partitions, same trees
    np.testing.assert_array_equal(
        sap_score_matrix(c, f, ct, ft), sap_score_matrix(warp(c), f, warp(ct), ft)
    )
    r, acc = importance_matrix(c, f, ct, ft)
    r_warp, acc_warp = importance_matrix(warp(c), f, warp(ct), ft)
    np.testing.assert_allclose(r, r_warp, atol=1e-12)
    np.testing.assert_array_equal(acc, acc_warp)


def test_gradient_boosted_importances_agree():
    grid = Grid((3, 4))
    rng = np.random.default_rng(3)
    f, ft = grid.sample_factors(300, rng), grid.sample_factors(200, rng)
    codes = lambda x: np.c_[x[:, 1] ** 3, -x[:, 0]]  # noqa: E731
    result = dci(codes(f), f, codes(ft), ft, model="gbt")
    np.testing.assert_array_equal(result.importance.argmax(0), [1, 0])
    assert result.disentanglement > 0.95 and result.informativeness == 1.0
    with pytest.raises(ValueError):
        dci(codes(f), f, codes(ft), ft, model="lasso")


def test_dci_from_importance_closed_forms():
    assert dci_from_importance(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert dci_from_importance(np.ones((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-12)
    # factor 0 split over codes 0 and 1: completeness ½(1 − log 2 / log 3) + ½·1
    r = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    d, c = dci_from_importance(r)
    assert d == pytest.approx(1.0)
    assert c == pytest.approx(0.5 * (1 - math.log(2) / math.log(3)) + 0.5)
    # an unused code carries no weight in disentanglement
    assert dci_from_importance(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))[0] == 1.0


def test_factor_vae_prunes_collapsed_dimensions():
    def with_collapsed(obs):
        z = perfect(obs)
        return np.c_[np.full(len(z), 0.3), z, 0.01 * np.random.default_rng(0).normal(size=len(z))]

    score = factor_vae_score(
        with_collapsed, GRID, batch_size=16, n_train=200, n_eval=200, n_variance=1000
    )
    assert score == (1.0, 1.0, 4)
    zeros = lambda obs: np.zeros((len(obs), 3))  # noqa: E731
    collapsed = factor_vae_score(zeros, GRID, n_train=10, n_eval=10, n_variance=100)
    assert collapsed == (0.0, 0.0, 0)


def test_factor_vae_score_is_seeded():
    enc = _noise_encoder  # fresh generator each time: the score is a function of both seeds
    kw = dict(batch_size=16, n_train=200, n_eval=200, n_variance=500, seed=5)
    assert factor_vae_score(enc(0), GRID, **kw) == factor_vae_score(enc(0), GRID, **kw)


def test_metrics_reject_bad_input():
    c, f = np.zeros((4, 2)), np.zeros((4, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="constant"):
        mig(c, f)
    with pytest.raises(ValueError, match="NaN"):
        mig(np.full((4, 2), np.nan), f + np.arange(4)[:, None])
    with pytest.raises(ValueError, match="integer"):
        mig(c, f.astype(float))
    with pytest.raises(ValueError):
        mig(c[:3], f)


# ---------------------------------------------------------------------------- on Shapes


def _centroid_encoder(images):
    """Codes (column, row, pixel count) of each sprite: they read posX, posY, scale and shape."""
    mask = images[:, 0] > 0
    grid = np.arange(64.0)
    count = mask.sum((1, 2))
    col = (mask.sum(1) * grid).sum(1) / count
    row = (mask.sum(2) * grid).sum(1) / count
    return np.stack([col, row, count], 1)


def test_evaluate_codes_on_shapes_is_reproducible_and_sensible():
    shapes = Shapes()
    kw = dict(n=400, n_test=200, seed=0, batch_size=16)
    first = evaluate_codes(_centroid_encoder, shapes, **kw)
    assert first == evaluate_codes(_centroid_encoder, shapes, **kw)
    keys = "mig factor_vae factor_vae_train factor_vae_active_dims sap"
    keys += " dci_disentanglement dci_completeness dci_informativeness"
    assert set(first) == set(keys.split())
    assert first["factor_vae_active_dims"] == 3
    for key, value in first.items():
        assert key == "factor_vae_active_dims" or 0.0 <= value <= 1.0, (key, value)
    # posX and posY are read exactly (votes for them always pick their code), the shape and the
    # orientation are not: the FactorVAE score is at least 2/5
    assert first["factor_vae"] >= 0.4
    rng = np.random.default_rng(1)
    f = shapes.sample_factors(2000, rng)
    per_factor = mig_per_factor(_centroid_encoder(shapes.render(f)), f)
    assert np.isnan(per_factor[0])
    assert per_factor[4] > 0.7 and per_factor[5] > 0.7  # posX, posY
    assert per_factor[3] < 0.1  # orientation (the pixel count does tell shapes apart: ≈ 0.57)
