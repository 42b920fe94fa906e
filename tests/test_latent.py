"""Latent tools: exact identities on the linear-Gaussian model, behaviour on a small trained run."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.linear_model import LogisticRegression

from linear_gaussian import make_ppca, sample_x
from small_runs import digits_run, split
from vaekit import images
from vaekit.cli import main
from vaekit.latent import (
    apply_attribute,
    attribute_vector,
    decode_mean,
    dims_by_kl,
    encode,
    index_mask,
    kl_by_dim,
    latent_map,
    lerp,
    slerp,
    traversal,
)

# ---- exact identities on probabilistic PCA ------------------------------------------------------


def test_encode_in_batches_gives_the_exact_posterior_means():
    model, w, b, sigma = make_ppca()
    x = sample_x(103, w, b, sigma)
    m = (w * w).sum(0) + sigma**2  # M = WᵀW + σ²I is diagonal
    exact = (x - b) @ w / m  # M⁻¹Wᵀ(x − b), (N, D)
    torch.testing.assert_close(encode(model, x, batch_size=10), exact)
    torch.testing.assert_close(encode(model, x, batch_size=1000), exact)


def test_posterior_draws_are_seeded_and_have_the_posterior_spread():
    model, w, b, sigma = make_ppca()
    x = sample_x(1, w, b, sigma).expand(4000, -1)
    a = encode(model, x, sample=True, seed=3)
    torch.testing.assert_close(a, encode(model, x, sample=True, seed=3))
    post_std = sigma / ((w * w).sum(0) + sigma**2).sqrt()
    torch.testing.assert_close(a.std(0), post_std, rtol=0.05, atol=0)
    torch.testing.assert_close(a.mean(0), encode(model, x[:1])[0], rtol=0, atol=0.01)


def test_kl_by_dim_matches_the_closed_form_and_orders_dims_by_use():
    model, w, b, sigma = make_ppca()
    x = sample_x(500, w, b, sigma)
    m = (w * w).sum(0) + sigma**2
    mean, var = (x - b) @ w / m, sigma**2 / m  # exact posterior N(mean, var)
    exact = 0.5 * (var + mean**2 - 1 - var.log()).mean(0)  # KL(N(m, v) ‖ N(0, 1)) per dim
    torch.testing.assert_close(kl_by_dim(model, x, batch_size=64), exact)
    order, kl = dims_by_kl(model, x)
    assert order.tolist() == [0, 1]  # column 0 of W is the longer one (2.0 vs 1.2)
    assert kl[0] > kl[1] > 0


def test_interpolation_endpoints_are_the_codes_themselves():
    z_a, z_b = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    for path in (lerp, slerp):
        p = path(z_a, z_b, 9)
        assert p.shape == (9, 6)
        torch.testing.assert_close(p[0], z_a)
        torch.testing.assert_close(p[-1], z_b)
    torch.testing.assert_close(lerp(z_a, z_b, 3)[1], (z_a + z_b) / 2)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=4, max_size=4),
    st.lists(st.floats(-5, 5), min_size=4, max_size=4),
    st.floats(0.1, 10),
)
def test_slerp_keeps_norms(a, b, radius):
    z_a, z_b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if z_a.norm() < 1e-3 or z_b.norm() < 1e-3:
        return
    z_a, z_b = z_a / z_a.norm() * radius, z_b / z_b.norm() * radius
    torch.testing.assert_close(
        slerp(z_a, z_b, 11).norm(dim=1), torch.full((11,), radius, dtype=torch.float64)
    )


def test_slerp_interpolates_the_norm_linearly_along_a_great_circle():
    z_a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    z_b = torch.tensor([0.0, 3.0], dtype=torch.float64)
    p = slerp(z_a, z_b, 5)
    torch.testing.assert_close(p.norm(dim=1), torch.linspace(1, 3, 5, dtype=torch.float64))
    angles = torch.atan2(p[:, 1], p[:, 0])
    torch.testing.assert_close(angles, torch.linspace(0, torch.pi / 2, 5, dtype=torch.float64))
    # Opposite codes: still a half circle of constant norm, never through the origin.
    half = slerp(z_a * 2, -z_a * 2, 7)
    torch.testing.assert_close(half.norm(dim=1), torch.full((7,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(half[-1], -z_a * 2)


def test_traversal_changes_one_coordinate_per_row():
    z = torch.arange(5.0)
    values = torch.tensor([-2.0, 0.5, 3.0])
    t = traversal(z, [3, 0], values)  # (K, V, D)
    assert t.shape == (2, 3, 5)
    torch.testing.assert_close(t[0, :, 3], values)
    torch.testing.assert_close(t[1, :, 0], values)
    keep = torch.ones(5, dtype=torch.bool)
    keep[3] = False
    torch.testing.assert_close(t[0][:, keep], z[keep].expand(3, -1))
    with pytest.raises(ValueError, match="outside"):
        traversal(z, [5], values)


def test_attribute_vector_is_a_difference_of_means_and_checks_its_sets():
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    v = attribute_vector(z, index_mask(4, [0, 1]))
    torch.testing.assert_close(v, torch.tensor([2.0, -3.0]))
    v2 = attribute_vector(z, index_mask(4, [0]), index_mask(4, [3]))
    torch.testing.assert_close(v2, torch.tensor([1.0, -4.0]))
    moved = apply_attribute(z[:1], v, [0.0, 0.5, 1.0])  # (A, B, D)
    assert moved.shape == (3, 1, 2)
    torch.testing.assert_close(moved[:, 0], z[0] + torch.tensor([0.0, 0.5, 1.0])[:, None] * v)
    with pytest.raises(ValueError, match="empty"):
        attribute_vector(z, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="both"):
        attribute_vector(z, index_mask(4, [0, 1]), index_mask(4, [1, 2]))
    with pytest.raises(ValueError, match="outside"):
        index_mask(4, [4])


def test_pca_map_is_a_projection_and_tsne_is_seeded():
    z = torch.randn(60, 5) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1])
    xy = latent_map(z, "pca")
    assert xy.shape == (60, 2)
    # An orthogonal projection never lengthens distances, and keeps the leading variance.
    d_hi = torch.cdist(z.double(), z.double())
    d_lo = torch.cdist(torch.from_numpy(xy).double(), torch.from_numpy(xy).double())
    assert (d_lo <= d_hi + 1e-4).all()
    assert xy[:, 0].var() >= xy[:, 1].var()
    np.testing.assert_allclose(xy.var(0).sum(), z[:, :2].var(0).sum().item(), rtol=0.3)
    a = latent_map(z[:40], "tsne", seed=1)
    np.testing.assert_array_equal(a, latent_map(z[:40], "tsne", seed=1))
    with pytest.raises(ValueError, match="unknown latent map"):
        latent_map(z, "umap")


# ---- a trained model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return digits_run(tmp_path_factory)


def test_interpolation_endpoints_decode_to_the_endpoints_reconstructions(run):
    model, x, _ = split(run)
    recon = images._to_unit(model, decode_mean(model, encode(model, x[[4, 9]])))
    for path in ("linear", "slerp"):
        frames = images.interpolation(model, x[4], x[9], 6, path)
        torch.testing.assert_close(frames[0], recon[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(frames[-1], recon[1], rtol=0, atol=1e-5)
        assert (frames[2] - frames[0]).abs().max() > 0.01  # the path does move


def test_attribute_vector_from_labels_moves_a_latent_classifier_on_held_out_items(run):
    """v = mean z(7) − mean z(1) from the training split turns held-out 1s into 7s: decode
    z + α·v, encode the (binarized) picture again, and a logistic regression on the codes says 7."""
    model, x_train, y_train = split(run, "train")
    _, x_test, y_test = split(run, "test")
    z_train, z_test = encode(model, x_train), encode(model, x_test)
    probe = LogisticRegression(max_iter=2000).fit(z_train.numpy(), y_train.numpy())
    assert probe.score(z_test.numpy(), y_test.numpy()) > 0.5  # the codes carry the digit
    v = attribute_vector(z_train, y_train == 7, y_train == 1)
    ones = z_test[y_test == 1]
    assert len(ones) >= 20
    seven = list(probe.classes_).index(7)

    def p_seven(alpha: float) -> np.ndarray:
        pictures = decode_mean(model, apply_attribute(ones, v, [alpha])[0])
        codes = encode(model, (pictures > 0.5).float())
        return probe.predict_proba(codes.numpy())[:, seven]

    before, after = p_seven(0.0), p_seven(1.25)
    assert before.mean() < 0.2
    assert after.mean() > 0.5
    assert (after > before).mean() > 0.9


def test_dims_by_kl_agrees_with_the_training_metrics(run):
    model, x, _ = split(run)
    order, kl = dims_by_kl(model, x)
    assert sorted(order.tolist()) == list(range(8))
    assert (kl[:-1] >= kl[1:]).all()
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["kl_per_dim"]
    # Training's last test evaluation used a Monte-Carlo ELBO, but the KL term is analytic.
    np.testing.assert_allclose(kl.numpy(), np.array(logged)[order.numpy()], rtol=1e-3, atol=1e-4)


# ---- command line --------------------------------------------------------------------------


def test_encode_command_writes_means_samples_and_a_projector(run, tmp_path):
    model, x, labels = split(run)
    out = tmp_path / "z.npy"
    assert main(["encode", str(run), "-o", str(out)]) == 0
    z = np.load(out, allow_pickle=False)
    np.testing.assert_allclose(z, encode(model, x).numpy(), rtol=0, atol=1e-6)
    assert main(["encode", str(run), "--samples", "-o", str(tmp_path / "s.npz")]) == 0
    s = np.load(tmp_path / "s.npz", allow_pickle=False)
    assert s["z"].shape == z.shape and not np.allclose(s["z"], z)
    np.testing.assert_array_equal(s["labels"], labels.numpy())
    tb = tmp_path / "tb"
    argv = ["encode", str(run), "--limit", "100", "-o", str(tmp_path / "a.npy")]
    for _ in range(2):  # a second export replaces the first
        assert main([*argv, "--tensorboard", str(tb)]) == 0
    config = (tb / "projector" / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 1 and "sprite" in config
    sprite = next((tb / "projector").rglob("sprite.png"))
    assert Image.open(sprite).size == (80, 80)  # 10 × 10 thumbnails of 8 × 8
    meta = next((tb / "projector").rglob("metadata.tsv")).read_text().split()
    assert meta == [str(int(v)) for v in labels[:100]]


@pytest.mark.parametrize(
    "argv",
    [
        ["traverse", "--item", "3", "--top", "4", "--steps", "7"],
        ["traverse", "--dims", "0,2", "--range", "-2", "2.5"],
        ["attribute", "--with-labels", "7", "--without-labels", "1", "--items", "0,5"],
        ["attribute", "--split", "train", "--with-indices", "3,13,23", "--alphas", "-1", "0", "1"],
        ["latent-map", "--method", "pca"],
    ],
)
def test_picture_commands(run, tmp_path, argv):
    out = tmp_path / "out.png"
    assert main([argv[0], str(run), *argv[1:], "-o", str(out)]) == 0
    assert Image.open(out).size[0] > 20


def test_traverse_grid_has_one_row_per_dimension(run, tmp_path):
    out = tmp_path / "t.npy"
    assert main(["traverse", str(run), "--dims", "1,4", "--steps", "5", "-o", str(out)]) == 0
    assert np.load(out).shape == (10, 1, 8, 8)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attribute", "--with-labels", "7", "--items", "5000"], "outside the test split"),
        (["attribute", "--with-labels", "42"], "positive set of an attribute vector is empty"),
        (["attribute", "--with-indices", "99999"], "outside"),
        (["attribute"], "--with-labels or --with-indices"),
        (["traverse", "--dims", "8"], "outside 0..7"),
    ],
)
def test_bad_requests_get_one_clear_line(run, capsys, argv, message, tmp_path):
    assert main([argv[0], str(run), *argv[1:], "-o", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err


def test_every_output_is_reproducible(run):
    model, x, _ = split(run)
    torch.manual_seed(1)
    a = encode(model, x, sample=True, seed=0)
    state = torch.get_rng_state()
    b = encode(model, x, sample=True, seed=0)
    torch.testing.assert_close(a, b)
    assert torch.equal(state, torch.get_rng_state())  # the global stream is untouched
