"""The procedural dSprites-style dataset: determinism, factor grid, geometry of the renderer."""

import numpy as np
import pytest

from vaekit.data.shapes import HUES, FactorDataset, Shapes

GREY = Shapes()


def _one(shape=0, scale=5, orientation=0, pos_x=15, pos_y=15, color=0):
    return np.array([[color, shape, scale, orientation, pos_x, pos_y]])


def _centroid(mask):
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def test_factor_sizes_match_dsprites():
    assert GREY.factor_names == ("color", "shape", "scale", "orientation", "posX", "posY")
    assert GREY.factor_sizes == (1, 3, 6, 40, 32, 32)
    assert GREY.n_combinations == 737_280
    assert Shapes(color=True).factor_sizes == (6, 3, 6, 40, 32, 32)
    assert isinstance(GREY, FactorDataset)
    np.testing.assert_allclose(GREY.SCALES, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert GREY.ORIENTATIONS[0] == 0 and GREY.ORIENTATIONS[-1] < 2 * np.pi


def test_index_round_trip_over_the_complete_grid():
    grid = np.indices(GREY.factor_sizes).reshape(6, -1).T  # all 737,280 combinations, row-major
    idx = GREY.index(grid)
    np.testing.assert_array_equal(idx, np.arange(737_280))
    np.testing.assert_array_equal(GREY.factors_of(idx), grid)
    with pytest.raises(ValueError):
        GREY.factors_of([737_280])
    with pytest.raises(ValueError):
        GREY.index(_one(pos_x=32))


def test_same_seed_same_bytes_and_disjoint_splits():
    a = GREY.load(300, 100, seed=3)
    b = GREY.load(300, 100, seed=3)
    for u, v in zip(a, b, strict=True):
        assert u.tobytes() == v.tobytes()
    x_train, y_train, x_test, y_test = a
    assert x_train.shape == (300, 1, 64, 64) and x_train.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.shape == (100, 6)
    assert set(np.unique(x_train)) == {0, 255}
    flat = np.concatenate([GREY.index(y_train), GREY.index(y_test)])
    assert len(np.unique(flat)) == 400  # distinct combinations, train ∩ test = ∅
    assert GREY.load(300, 100, seed=4)[0].tobytes() != x_train.tobytes()
    np.testing.assert_array_equal(GREY.render(y_test), x_test)


def test_sample_factors_is_seeded_and_covers_each_range():
    f = GREY.sample_factors(5000, np.random.default_rng(0))
    np.testing.assert_array_equal(f, GREY.sample_factors(5000, np.random.default_rng(0)))
    assert f.dtype == np.int64
    np.testing.assert_array_equal(f.max(0) + 1, GREY.factor_sizes)
    assert f.min() == 0


def test_template_paste_equals_full_grid_inside_test():
    f = GREY.sample_factors(300, np.random.default_rng(1))
    np.testing.assert_array_equal(GREY.masks(f), GREY._render_reference(f))


def test_sprites_fit_their_templates_and_the_image():
    t = GREY.templates  # (3, 6, 40, 33, 33); every paste offset 0..31 keeps it inside 64×64
    assert t.shape == (3, 6, 40, 33, 33)
    border = t[..., 0, :] | t[..., -1, :] | t[..., :, 0] | t[..., :, -1]
    assert not border.any()  # nothing clipped at any scale or orientation
    corner = GREY.masks(_one(shape=2, pos_x=31, pos_y=31))[0]
    assert corner.sum() == GREY.masks(_one(shape=2))[0].sum() and corner[-1].any() is np.False_


def test_shapes_differ():
    masks = GREY.masks(np.concatenate([_one(shape=s) for s in range(3)]))
    for i in range(3):
        for j in range(i + 1, 3):
            assert (masks[i] != masks[j]).sum() > 0.15 * masks[i].sum()


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_pixel_count_increases_with_scale(shape):
    for orientation in (0, 7, 23):
        f = np.concatenate([_one(shape, s, orientation) for s in range(6)])
        counts = GREY.masks(f).sum((1, 2))
        assert (np.diff(counts) > 0).all(), counts
        # area ∝ scale²: the largest sprite has about 4× the pixels of the smallest
        assert 3.3 < counts[-1] / counts[0] < 4.8


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_translation_moves_the_centroid_by_whole_pixels(shape):
    base = _centroid(GREY.masks(_one(shape, 3, 11, 4, 9))[0])
    moved = _centroid(GREY.masks(_one(shape, 3, 11, 4 + 20, 9 + 7))[0])
    assert moved[0] - base[0] == pytest.approx(7)  # posY → rows, downwards
    assert moved[1] - base[1] == pytest.approx(20)  # posX → columns, rightwards
    row, col = _centroid(GREY.masks(_one(shape=1, pos_x=0, pos_y=31))[0])
    assert (row, col) == pytest.approx((16 + 31, 16))  # the ellipse's centre is its centroid


def test_quarter_turn_of_a_square_is_the_same_image():
    turns = [_one(shape=0, orientation=o) for o in (0, 10, 5)]  # 0, 90° and 45°
    square, quarter, eighth = GREY.masks(np.concatenate(turns))
    assert (square != quarter).sum() <= 2
    assert (square != eighth).sum() > 50  # 45°: a diamond


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_rotation_turns_the_sprite_about_its_centre_pixel(shape):
    """Orientation k + 10 is the template of k turned by 90° counter-clockwise (np.rot90 of the
    33×33 template is exact: pixel centres map onto pixel centres); float ties may flip a pixel."""
    t = GREY.templates[shape, 3]
    for k in (0, 4, 17):
        assert (t[k + 10] != np.rot90(t[k])).sum() <= 2
        assert (t[(k + 20) % 40] != np.rot90(t[k], 2)).sum() <= 2
    if shape > 0:  # not a trivial check: ellipses and hearts change under a quarter turn
        assert (t[10] != t[0]).sum() > 50
    if shape == 2:  # and a heart under a half turn
        assert (t[20] != t[0]).sum() > 50


def test_heart_points_down_at_orientation_zero():
    rows, _ = np.nonzero(GREY.masks(_one(shape=2))[0])
    centre = 16 + 15
    assert rows.max() - centre > centre - rows.min()  # the tip is farther than the lobes


def test_colour_variant_hues_are_binary_per_channel():
    colour = Shapes(color=True)
    f = np.concatenate([_one(shape=1, color=c) for c in range(6)])
    x = colour.render(f)
    assert x.shape == (6, 3, 64, 64)
    mask = GREY.masks(f[:1])[0]
    for c in range(6):
        for ch in range(3):
            expected = mask * HUES[c, ch]
            np.testing.assert_array_equal(x[c, ch], expected)
    assert len({tuple(h) for h in HUES}) == 6 and set(np.unique(HUES)) == {0, 255}
    with pytest.raises(ValueError):
        GREY.render(_one(color=1))  # grey images have a single colour value
