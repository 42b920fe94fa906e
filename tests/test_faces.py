"""Faces: flip augmentation (seeded, resume-exact, off for digits), the olivetti preset's structure
scaled down to a tiny face folder, and the latent tools on a tiny deep model (groups option)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from test_deep_image import faces, make

import vaekit
from vaekit import images
from vaekit.cli import main
from vaekit.cli.options import config_path
from vaekit.config import load_config
from vaekit.data import DataPrep, load_dataset
from vaekit.data.prep import flip
from vaekit.latent import (
    decode_groups,
    decode_mean,
    encode,
    group_dims,
    n_groups_of,
)
from vaekit.likelihoods import LIKELIHOODS

# The preset's structure for 16×16 faces: the same sections and switches, smaller numbers.
TINY_MODEL = {
    "deep_channels": [4, 6],
    "deep_scales": [4, 2],  # latent maps 4×4 (1 group) and 8×8 (2 groups)
    "groups_per_scale": [1, 2],
    "latent_channels": 2,
    "mixture_components": 2,
    "ema": 0.9,
}


def _face_folder(root: Path, n: int = 30) -> str:
    """``n`` 16×16 grey face-like PNGs (every 10th is the test split)."""
    folder = root / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(faces(n, size=16, seed=3)):
        Image.fromarray(img[0].to(torch.uint8).numpy(), mode="L").save(folder / f"{i:03d}.png")
    return f"folder:{folder}"


def _tiny_preset(root: Path, dataset: str, **train) -> Path:
    """The olivetti preset with the tiny model, a tiny face folder and a few steps."""
    preset = yaml.safe_load(config_path("olivetti").read_text())
    preset["data"]["dataset"] = dataset
    preset["model"].update(TINY_MODEL)
    preset["objective"]["warmup_steps"] = 4
    preset["train"].update({"epochs": 3, "batch_size": 8, "images": False, **train})
    path = root / "tiny-olivetti.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


# ---- flip augmentation -------------------------------------------------------------------------


def test_flip_mirrors_about_half_the_images_and_is_seeded():
    x = torch.randint(0, 256, (400, 1, 5, 7), dtype=torch.uint8)
    a = flip(x, torch.Generator().manual_seed(4))
    b = flip(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.dtype == torch.uint8
    mirrored = (a == x.flip(-1)).flatten(1).all(1)
    kept = (a == x).flatten(1).all(1)
    assert bool((mirrored | kept).all())  # every image is itself or its mirror image
    assert 150 < int((mirrored & ~kept).sum()) < 250
    assert not torch.equal(a, flip(x, torch.Generator().manual_seed(5)))


def test_data_prep_flips_training_batches_only():
    lik = LIKELIHOODS.get("logistic_mixture")((1, 6, 6), components=2)
    prep = DataPrep(lik, "none", "flip")
    x = torch.randint(0, 256, (64, 1, 6, 6), dtype=torch.uint8)
    batch = prep(x, torch.Generator().manual_seed(0))
    assert not torch.equal(batch, x.float())  # some were mirrored
    torch.testing.assert_close(prep.fixed(x), x.float())  # evaluation data never are
    assert torch.equal(DataPrep(lik, "none")(x, torch.Generator().manual_seed(0)), x.float())
    with pytest.raises(ValueError, match="augment must be one of"):
        DataPrep(lik, "none", "rotate")
    table = LIKELIHOODS.get("gaussian")((5,))
    with pytest.raises(ValueError, match="needs images"):
        DataPrep(table, "none", "flip")


def test_no_augmentation_draws_nothing_from_the_generator():
    lik = LIKELIHOODS.get("bernoulli")((1, 4, 4))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)
    DataPrep(lik, "dynamic", "none")(x, g1)
    DataPrep(lik, "dynamic")(x, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_augmentation_is_implied_by_the_dataset(tmp_path):
    from vaekit.run import resolve

    folder = _face_folder(tmp_path)
    for spec, want in (("digits", "none"), (folder, "flip")):
        cfg = resolve(load_config(None, {"data.dataset": spec}), load_dataset(spec))
        assert cfg.data.augment == want, spec
    cfg = resolve(load_config(None, {"data.augment": "none"}), load_dataset(folder))
    assert cfg.data.augment == "none"  # a config (or --augment) always wins
    assert load_dataset("olivetti", test_limit=1).implies["data.augment"] == "flip"
    assert load_dataset("mnist", train_limit=1, test_limit=1).implies["data.augment"] == "none"


def test_flip_augmented_training_resumes_exactly(tmp_path):
    folder = _face_folder(tmp_path)
    cfg = {
        "data.dataset": folder,
        "model.arch": "mlp",
        "model.hidden": [16],
        "model.latent_dim": 3,
        "train.epochs": 2,
        "train.batch_size": 9,
        "train.deterministic": True,
        "train.images": False,
    }
    full = vaekit.train(load_config(None, cfg), tmp_path / "full", log=lambda *_: None)
    assert json.loads((full / "config.json").read_text())["data"]["augment"] == "flip"
    part = tmp_path / "part"
    vaekit.train(load_config(None, {**cfg, "train.max_steps": 4}), part, log=lambda *_: None)
    vaekit.train(None, part, resume=True, log=lambda *_: None)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    other = vaekit.train(
        load_config(None, {**cfg, "data.augment": "none"}), tmp_path / "plain", log=lambda *_: None
    )
    c = load_file(str(other / "model.safetensors"))
    assert any(not torch.equal(a[name], c[name]) for name in a)  # the flips changed training


# ---- the preset, scaled down -------------------------------------------------------------------


def test_the_olivetti_preset_is_a_deep_face_model():
    cfg = load_config(config_path("olivetti"))
    assert cfg.data.dataset == "olivetti" and cfg.data.augment == "flip"
    assert cfg.model.kind == "deep" and cfg.model.likelihood == "logistic_mixture"
    assert cfg.objective.warmup == "linear" and cfg.objective.kl_balance
    assert cfg.train.grad_skip > 0 and cfg.train.epochs * (360 // cfg.train.batch_size) >= 1000


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    folder = _face_folder(root)
    out = root / "run"
    assert main(["train", "--config", str(_tiny_preset(root, folder)), "--out", str(out)]) == 0
    return out, folder


def test_a_tiny_face_set_trains_through_the_preset_without_nans(deep_run):
    out, _ = deep_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["nonfinite_steps"] == 0
    for row in rows:
        assert all(torch.isfinite(torch.tensor(row[k])) for k in ("train_bound", "test_elbo"))
        assert len(row["test_kl_per_layer"]) == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["kind"] == "deep" and cfg["data"]["augment"] == "flip"
    assert cfg["objective"]["kl_balance"] and cfg["train"]["grad_skip"] > 0
    model = vaekit.load(out)
    assert model.latent_groups == [128, 128, 32] and model.n_top_groups == 1


# ---- latent tools on a tiny deep model ---------------------------------------------------------


def test_groups_option_counts_groups_from_the_top():
    model = make()  # groups bottom → top: 8×8, 8×8, 4×4
    assert model.n_groups == 3 and n_groups_of(model, "top") == 1
    assert n_groups_of(model, "all") == 3 and n_groups_of(model, 2) == 2
    assert n_groups_of(model, "2") == 2
    assert torch.equal(group_dims(model, 1), torch.arange(256, 288))
    assert torch.equal(group_dims(model, 2), torch.arange(128, 288))
    for bad in (0, 4, "bottom"):
        with pytest.raises(ValueError, match="groups must be top, all or a number 1..3"):
            n_groups_of(model, bad)


def test_decode_groups_keeps_the_top_and_fills_the_rest():
    model = make().eval()
    x = faces(3)
    z = encode(model, x)  # the posterior mean path (3, D)
    recon = decode_mean(model, z)
    for n in (1, 2, 3):  # unedited code, lower groups from the item: the reconstruction
        torch.testing.assert_close(decode_groups(model, z, n, x=x, lower="posterior"), recon)
    wide = z[None].expand(2, -1, -1)
    assert decode_groups(model, wide, 1, x=x, lower="posterior").shape == (2, 3, 1, 16, 16)
    edited = z.clone()
    edited[:, group_dims(model, 1)] += 2.0
    full, _ = model.decode_top(edited, 1, x)
    top = group_dims(model, 1)
    assert torch.equal(full[:, top], edited[:, top])  # kept
    assert not torch.allclose(full[:, :256], z[:, :256])  # the lower groups follow the edit
    prior = decode_groups(model, edited, 1, lower="prior")  # prior means: deterministic
    torch.testing.assert_close(prior, decode_groups(model, edited, 1, lower="prior", seed=9))
    warm = decode_groups(model, edited, 1, lower="prior", temperature=1.0, seed=1)
    assert not torch.allclose(warm, prior)
    torch.testing.assert_close(
        warm, decode_groups(model, edited, 1, lower="prior", temperature=1.0, seed=1)
    )
    with pytest.raises(ValueError, match="pass x"):
        decode_groups(model, z, 1, lower="posterior")
    torch.testing.assert_close(decode_groups(model, z, 3), recon)  # all groups: a plain decode
    with pytest.raises(ValueError, match="n_top must be in 1..3"):
        model.decode_top(z, 4)


def test_samples_with_the_lower_groups_at_their_prior_means():
    model = make().eval()
    full = images.samples(model, 5, temperature=0.8, seed=2)
    top = images.samples(model, 5, temperature=0.8, seed=2, n_top=1)
    assert full.shape == top.shape == (5, 1, 16, 16)
    torch.testing.assert_close(top, images.samples(model, 5, temperature=0.8, seed=2, n_top=1))
    assert not torch.allclose(full, top)
    z = model.prior_codes(5, temperature=0.0)
    torch.testing.assert_close(z, model.prior_codes(5, temperature=0.0))  # the prior means
    cold = images.samples(model, 5, temperature=0.0, n_top=1)  # every group at its prior mean
    torch.testing.assert_close(cold, images.samples(model, 5, temperature=0.0))


def test_interpolation_on_the_top_groups_has_the_frames_shape():
    model = make().eval()
    x = faces(2)
    full = images.interpolation(model, x[0], x[1], 5)
    top = images.interpolation(model, x[0], x[1], 5, n_top=1)
    assert full.shape == top.shape == (5, 1, 16, 16)
    assert float(full.min()) >= 0 and float(full.max()) <= 1
    assert not torch.allclose(full, top)


@pytest.mark.parametrize("groups", ["top", "all", "2"])
def test_cli_latent_tools_on_a_deep_run(deep_run, tmp_path, groups, capsys):
    out, folder = deep_run
    run = str(out)
    common = ["--data-dir", str(tmp_path), "--groups", groups]
    png = tmp_path / "t.png"
    assert main(["traverse", run, "--item", "0", "--top", "3", "--steps", "4", *common,
                 "-o", str(png)]) == 0  # fmt: skip
    assert Image.open(png).size == (4 * 18 + 2, 3 * 18 + 2)  # 3 rows × 4 columns of 16×16
    assert main(["traverse", run, "--top", "2", "--steps", "3", *common, "-o", str(png)]) == 0
    assert main(["attribute", run, "--split", "train", "--with-indices", "0,1,2", "--items",
                 "3,4", "--alphas", "0", "1", "2", *common, "--lower", "prior",
                 "-o", str(png)]) == 0  # fmt: skip
    assert Image.open(png).size == (3 * 18 + 2, 2 * 18 + 2)
    assert main(["interpolate", run, "--from", "0", "--to", "1", "--steps", "5", *common,
                 "-o", str(png)]) == 0  # fmt: skip
    assert Image.open(png).size == (5 * 18 + 2, 18 + 2)
    sample = ["sample", run, "-n", "4", "--temperature", "0.6", "--groups", groups]
    assert main([*sample, "--lower-temperature", "0.3", "-o", str(png)]) == 0
    capsys.readouterr()


def test_cli_refuses_a_bad_groups_option(deep_run, tmp_path, capsys):
    out, _ = deep_run
    with pytest.raises(SystemExit):
        main(["traverse", str(out), "--groups", "0", "-o", str(tmp_path / "t.png")])
    assert main(["traverse", str(out), "--groups", "9", "-o", str(tmp_path / "t.png")]) != 0
    assert "groups must be top, all or a number 1..3" in capsys.readouterr().err


def test_report_and_explorer_on_a_deep_run(deep_run, tmp_path):
    from fastapi.testclient import TestClient

    from vaekit.explore import create_app
    from vaekit.report import write_report

    out, folder = deep_run
    model = vaekit.load(out)
    ds = load_dataset(folder)
    x = DataPrep(model.likelihood, "none").fixed(ds.train)
    page = write_report(out, model, x, out=tmp_path / "r.html", groups="top").read_text()
    assert "temperature 0.6" in page and "top 1 of 3 groups" in page
    assert "not available" not in page
    client = TestClient(create_app(model, x, groups="top", lower="posterior"))
    info = client.get("/api/info").json()
    assert info["groups"] == {"edited": 1, "total": 3, "lower": "posterior"}
    assert all(d >= 256 for d in info["sliders"])  # the top group's coordinates
    item = client.get("/api/item/2").json()
    same = client.post("/api/decode", json={"z": item["z"], "item": 2}).json()["output"]
    assert same == item["reconstruction"]  # an unedited code decodes to the item's reconstruction
    assert client.post("/api/decode", json={"z": item["z"]}).status_code == 200  # prior means
    assert client.post("/api/decode", json={"z": item["z"], "item": 99}).status_code == 422
    frames = client.post("/api/interpolate", json={"a": 0, "b": 1, "steps": 3, "top": True})
    assert len(frames.json()["frames"]) == 3
    attr = {"item": 3, "alpha": 1.5, "positive": {"indices": [0, 1]}}
    assert "image" in client.post("/api/attribute", json=attr).json()["output"]
