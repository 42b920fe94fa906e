"""Extension in one place: every (model kind, likelihood) pair that makes sense builds and
trains a step; count likelihoods train end to end from npz: and csv: files; every dataset kind
trains with no flag but ``--dataset``; old run directories still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_likelihood_contract import TABLE, VOCAB

import vaekit
from builders import split_fields
from vaekit.cli import main
from vaekit.config import DataInfo, ModelConfig
from vaekit.data import DATASETS, DataPrep
from vaekit.likelihoods import LIKELIHOODS
from vaekit.models import MODELS, build_model
from vaekit.objectives import elbo

# What each likelihood's data look like: (DataInfo fields, a batch of 6 rows in the support)


def _levels(g):
    return torch.randint(0, 256, (6, 1, 6, 6), generator=g).float()


def _counts(g):
    return torch.poisson(torch.full((6, 7), 3.0), generator=g)


IMAGES = {"event_shape": [1, 6, 6], "levels": 256}
NAN = float("nan")
# What each likelihood's data look like: (DataInfo fields, a batch of 6 rows in the support)
DATA = {
    "bernoulli": (IMAGES, lambda g: torch.rand(6, 1, 6, 6, generator=g).round()),
    "gaussian": ({"event_shape": [5]}, lambda g: torch.randn(6, 5, generator=g)),
    "categorical": (IMAGES, _levels),
    "logistic": (IMAGES, _levels),
    "logistic_mixture": (IMAGES, _levels),
    "poisson": ({"event_shape": [7]}, _counts),
    "negbinomial": ({"event_shape": [7]}, _counts),
    "tabular": (
        {"event_shape": [3], "columns": TABLE},
        lambda g: torch.tensor([[0.5, 1.0, 2.0], [NAN, 0.0, 1.0]] * 3),
    ),
    "tokens": (
        {"event_shape": [4], "vocab": VOCAB},
        lambda g: torch.tensor([[4.0, 5.0, 2.0, 0.0], [2.0, 0.0, 0.0, 0.0]] * 3),
    ),
}
KIND_OPTIONS = {
    "vqvae": {"channels": [4], "code_dim": 2, "codebook_size": 4, "prior_hidden": 4},
    "hvae": {"latent_dims": [3, 2]},
    "cvae": {"n_classes": 3},
    "seqvae": {"arch": "gru"},
    "deep": {
        "deep_channels": [4],
        "deep_scales": [2],
        "groups_per_scale": [1],
        "latent_channels": 1,
    },
}


def _pairs():
    for kind in MODELS:
        for lik in LIKELIHOODS:
            if (kind == "seqvae") != LIKELIHOODS.get(lik).is_text:
                continue  # token rows need a sequence model, and it needs them
            if kind in ("deep", "vqvae") and len(DATA[lik][0]["event_shape"]) != 3:
                continue  # spatial latent maps and code grids model images
            yield kind, lik


def test_every_likelihood_has_data_here():
    assert set(DATA) == set(LIKELIHOODS)


@pytest.mark.parametrize("kind, likelihood", list(_pairs()))
def test_every_kind_likelihood_pair_builds_and_trains_a_step(kind, likelihood):
    info_fields, draw = DATA[likelihood]
    cfg, info = split_fields(
        kind=kind,
        likelihood=likelihood,
        hidden=[8],
        latent_dim=2,
        embed_dim=4,
        **KIND_OPTIONS.get(kind, {}),
        **info_fields,
    )
    model = build_model(cfg, info)
    x = draw(torch.Generator().manual_seed(0))
    model.check(x)
    y = torch.arange(6) % 3 if kind == "cvae" else None
    res = elbo(model, x, y)
    res.loss.backward()
    assert torch.isfinite(res.loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_pairs_that_make_no_sense_say_so():
    info = DataInfo(event_shape=[4], vocab=VOCAB)
    with pytest.raises(ValueError, match="token rows need kind seqvae"):
        build_model(ModelConfig(kind="vae", likelihood="tokens"), info)
    with pytest.raises(ValueError, match="seqvae"):
        build_model(ModelConfig(kind="seqvae", likelihood="gaussian"), DataInfo(event_shape=[4]))


@pytest.mark.parametrize("likelihood", ["poisson", "negbinomial"])
def test_counts_train_end_to_end_from_npz_and_csv(tmp_path, likelihood):
    rng = np.random.default_rng(0)
    rate = np.exp(rng.normal(1.0, 0.5, (1, 6))) * rng.gamma(2.0, 0.5, (300, 1))
    counts = rng.poisson(rate).astype(np.int64)
    np.savez(tmp_path / "counts.npz", x=counts)
    header = ",".join(f"g{j}" for j in range(6))
    np.savetxt(tmp_path / "counts.csv", counts, fmt="%d", delimiter=",", header=header, comments="")
    for spec in (f"npz:{tmp_path / 'counts.npz'}", f"csv:{tmp_path / 'counts.csv'}"):
        out = tmp_path / f"run-{spec[:3]}"
        argv = ["train", "--dataset", spec, "--likelihood", likelihood, "--hidden", "16"]
        argv += ["--latent-dim", "2", "--epochs", "30", "--batch-size", "30", "--out", str(out)]
        assert main(argv) == 0
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["test_elbo"] > rows[0]["test_elbo"] + 1.0  # it learned
        model = vaekit.load(out)
        assert model.likelihood.name == likelihood and model.likelihood.discrete
        assert main(["evaluate", str(out), "--iw-samples", "20", "--json"]) == 0


def test_npz_counts_imply_the_negative_binomial(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.arange(60).reshape(20, 3) % 7)
    np.savez(tmp_path / "f.npz", x=np.linspace(-1, 1, 60).reshape(20, 3))
    assert vaekit.load_dataset(f"npz:{tmp_path / 'c.npz'}").implies["model.likelihood"] == (
        "negbinomial"
    )
    assert vaekit.load_dataset(f"npz:{tmp_path / 'f.npz'}").implies["model.likelihood"] == (
        "gaussian"
    )


def _text(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(["the cat sat.", "a dog ran!", "we know.", "so it goes."] * 10))
    return f"text:{path}"


def _table(tmp_path):
    path = tmp_path / "t.csv"
    rows = ["a,b,c"] + [f"{i % 7},{'xy'[i % 2]},{i * 0.1}" for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    return f"csv:{path}"


def _folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    return f"folder:{folder}"


def _npz(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.random.default_rng(0).normal(size=(40, 3)))
    return f"npz:{tmp_path / 'a.npz'}"


SPECS = {  # one spec per dataset kind; every kind must be here
    "digits": lambda t: "digits?classes=0-1",
    "folder": _folder,
    "npz": lambda t: _npz(t),
    "text": _text,
    "csv": _table,
    "odds": lambda t: "odds:thyroid",
    "shapes": lambda t: "shapes?n=300&test=40",
}  # fmt: skip
SKIPPED = {  # kinds whose data are too big to train in a unit test, or a spelling of another
    "mnist": "60,000 images (its defaults are the digits'; the quality benchmark trains it)",
    "olivetti": "its defaults are folder:'s (conv + logistic); benchmarks/olivetti_conv.py",
    "shakespeare": "its defaults are text:'s; benchmarks/shakespeare.py",
    "mat": "odds: is a mat: file",
    "table": "csv: by suffix",
    "shards": "a pack of another kind: test_shards.py packs digits and trains from it alone",
}


def test_every_dataset_kind_is_covered():
    assert set(SPECS) | set(SKIPPED) == set(DATASETS)


@pytest.mark.parametrize("kind", list(SPECS))
def test_a_dataset_alone_is_enough_to_train(tmp_path, kind, capsys):
    spec = SPECS[kind](tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--dataset", spec, "--max-steps", "3", "--no-images", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    implied = vaekit.load_dataset(spec).implies
    for key, value in implied.items():
        section, name = key.split(".")
        assert cfg[section][name] == value
    assert "auto" not in (cfg["model"]["kind"], cfg["model"]["arch"], cfg["model"]["likelihood"])
    assert cfg["train"]["epochs"] >= 10


def test_few_optimizer_steps_are_announced(tmp_path, capsys):
    folder = _folder(tmp_path)
    argv = ["train", "--dataset", folder, "--epochs", "2", "--no-images"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "this run makes 2 optimizer steps (1 per epoch over 18 training examples" in out


def test_a_run_saved_before_data_info_still_loads(tmp_path):
    out = tmp_path / "r"
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2",
                 "--max-steps", "2", "--no-images", "--out", str(out)]) == 0  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    legacy = dict(cfg, model={**cfg["model"], "event_shape": [1, 8, 8]})
    legacy.pop("data_info")
    migrated = vaekit.Config.from_dict(legacy)
    assert migrated.data_info.event_shape == [1, 8, 8]
    model = build_model(migrated.model, migrated.data_info)
    x = DataPrep(model.likelihood, "dynamic").fixed(
        torch.full((2, 1, 8, 8), 200, dtype=torch.uint8)
    )
    assert vaekit.elbo(model, x).bound.shape == (2,)
