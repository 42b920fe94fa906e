"""The conditional VAE: labels reach encoder and decoder, samples respect the label, the
conditional NLL, and the command line's ``--label``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

import vaekit
from builders import build
from vaekit.cli import main
from vaekit.config import load_config
from vaekit.data import DataPrep, load_dataset
from vaekit.evaluation import evaluate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A CVAE on scikit-learn's 8×8 digits (about 5 s)."""
    cfg = load_config(
        None,
        {
            "data.dataset": "digits",
            "model.kind": "cvae",
            "model.hidden": [128],
            "model.latent_dim": 4,
            "train.epochs": 20,
            "train.batch_size": 50,
            "train.lr": 3e-3,
            "train.images": False,
        },
    )
    return vaekit.train(cfg, tmp_path_factory.mktemp("cvae") / "digits", log=str)


def test_samples_respect_the_label(run):
    model = vaekit.load(run)
    assert model.cond_dim == 10 and model.data_info.n_classes == 10
    ds = load_dataset("digits")
    clf = LogisticRegression(max_iter=2000).fit(
        ds.train.flatten(1).numpy() / 255.0, ds.train_labels
    )
    gen = torch.Generator().manual_seed(0)
    accuracy = []
    for label in range(10):
        with model.given(torch.tensor([label])):
            x = model.sample(50, mean=True, generator=gen)  # E[x|z, y], z ~ p(z)
        accuracy.append((clf.predict(x.flatten(1).numpy()) == label).mean())
    assert np.mean(accuracy) > 0.85, accuracy
    assert min(accuracy) > 0.5, accuracy


def test_conditional_nll_prefers_the_true_label(run):
    model = vaekit.load(run)
    ds = load_dataset("digits")
    x = DataPrep(model.likelihood).fixed(ds.test)
    true = evaluate(model, x, k=50, labels=ds.test_labels)
    wrong = evaluate(model, x, k=50, labels=(ds.test_labels + 1) % 10)
    assert true["nll"] < wrong["nll"] - 5 * (true["nll_stderr"] + wrong["nll_stderr"])
    assert true["elbo"] <= -true["nll"] + 3 * true["nll_stderr"]
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_elbo"] == pytest.approx(true["elbo"], abs=0.5)  # trained on y too


def test_labels_and_one_hot_vectors_are_the_same_condition():
    model = build(
        kind="cvae", n_classes=3, event_shape=[4], hidden=[8], likelihood="gaussian", latent_dim=2
    )
    x = torch.rand(5, 4)
    y = torch.tensor([0, 2, 1, 1, 0])
    with model.given(y):
        a = model.encode(x).mean
    with model.given(torch.nn.functional.one_hot(y, 3).float()):
        b = model.encode(x).mean
    torch.testing.assert_close(a, b)
    with model.given(torch.tensor([1])):  # a batch of one broadcasts
        z = torch.zeros(2, 5, 2)
        assert model.decode(z).batch_shape == (2, 5)
    with pytest.raises(ValueError, match="classes 0..2"), model.given(torch.tensor([3])):
        pass
    with pytest.raises(ValueError, match="needs y"):
        model.encode(x)
    # Outside ``given`` a conditional model's samples cycle through the classes.
    torch.manual_seed(0)
    cycled = model.sample(6, mean=True, generator=torch.Generator().manual_seed(1))
    with model.given(torch.arange(6) % 3):
        explicit = model.sample(6, mean=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(cycled, explicit)


def test_the_label_changes_the_decoder_output():
    model = build(kind="cvae", n_classes=4, event_shape=[1, 8, 8], hidden=[16], latent_dim=2)
    z = torch.randn(3, 2)
    outs = []
    for label in range(4):
        with model.given(torch.tensor([label])):
            outs.append(model.decode(z).mean)
    assert all(not torch.allclose(outs[0], o) for o in outs[1:])


def test_cli_sample_label_and_evaluate(run, tmp_path, capsys):
    out = tmp_path / "three.png"
    assert main(["sample", str(run), "--label", "3", "-n", "16", "-o", str(out)]) == 0
    assert Image.open(out).size[0] > 30
    assert main(["sample", str(run), "--label", "12", "-o", str(out)]) == 2
    assert "classes 0..9" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iw-samples", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 297 and result["nll"] > 0
    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.random.default_rng(0).random((20, 3)).astype(np.float32))
    argv = ["train", "--dataset", f"npz:{unlabelled}", "--model", "cvae", "--out", str(tmp_path)]
    assert main([*argv, "--likelihood", "gaussian"]) == 2
    assert "needs labelled data" in capsys.readouterr().err
