"""Applications: anomaly scores and thresholds, denoising, probes, and their commands."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import vaekit
from linear_gaussian import exact_log_px, make_ppca, sample_x
from vaekit.applications import (
    AnomalyDetector,
    anomaly_scores,
    corrupt,
    denoise,
    detection_metrics,
    masked_log_prob,
    probe,
    psnr,
    threshold_at_rate,
)
from vaekit.cli import main
from vaekit.data import DataPrep, load_dataset

# ---- anomaly scores ------------------------------------------------------------------------------


def test_scores_are_exact_when_the_posterior_is_exact():
    """With q(z|x) = p(z|x), every importance weight equals p(x), so −log p(x) is exact for any
    K; the ELBO equals log p(x) too, up to the Monte-Carlo error of its K-sample estimate."""
    model, w, b, sigma = make_ppca()
    x = sample_x(50, w, b, sigma)
    exact = -exact_log_px(x, w, b, sigma)
    torch.testing.assert_close(anomaly_scores(model, x, method="nll", k=3), exact)
    torch.testing.assert_close(
        anomaly_scores(model, x, method="elbo", k=4000), exact, atol=0.05, rtol=0
    )
    recon = -model.decode(model.encode(x).mean).log_prob(x)
    torch.testing.assert_close(anomaly_scores(model, x, method="recon"), recon.double())
    with pytest.raises(ValueError, match="unknown score"):
        anomaly_scores(model, x, method="nope")


def test_scores_rank_injected_outliers_above_inliers():
    model, w, b, sigma = make_ppca()
    inliers = sample_x(300, w, b, sigma, seed=2)
    g = torch.Generator().manual_seed(3)
    outliers = b + 4.0 * torch.randn(15, 5, generator=g, dtype=w.dtype)  # off the subspace
    x = torch.cat([inliers, outliers])
    truth = np.r_[np.zeros(300), np.ones(15)].astype(bool)
    for method in ("nll", "elbo", "recon"):
        s = anomaly_scores(model, x, method=method, k=10).numpy()
        assert roc_auc_score(truth, s) > 0.97, method


def test_threshold_flags_exactly_the_rate():
    s = np.random.default_rng(0).normal(size=1000)
    for rate in (0.0, 0.01, 0.05, 0.333):
        t = threshold_at_rate(s, rate)
        assert (s > t).sum() == int(np.floor(rate * 1000))
    labels = np.r_[np.zeros(900), np.ones(100)].astype(bool)
    s[labels] += 5
    det = AnomalyDetector.fit(s, method="nll", k=1, fpr=0.1, train_is_anomaly=labels)
    assert (s[~labels] > det.threshold).sum() == 90  # 10% of the normal rows
    det_c = AnomalyDetector.fit(s, method="nll", k=1, contamination=0.1)
    assert (s > det_c.threshold).sum() == 100
    with pytest.raises(ValueError, match="exactly one"):
        AnomalyDetector.fit(s, method="nll", k=1)


def test_detection_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.random(200) < 0.1
    s = rng.normal(size=200) + 2 * y
    m = detection_metrics(s, y, threshold=1.0)
    assert m["roc_auc"] == roc_auc_score(y, s)
    assert m["average_precision"] == average_precision_score(y, s)
    assert m["flagged"] == (s > 1).sum() and m["recall"] == (y & (s > 1)).sum() / y.sum()
    assert detection_metrics(s, np.zeros(200, bool))["roc_auc"] is None


# ---- denoising -----------------------------------------------------------------------------------


def test_psnr_corruptions_and_masked_likelihood():
    x = torch.rand(4, 1, 8, 8) * 0.5
    torch.testing.assert_close(psnr(x + 0.1, x), torch.full((4,), 20.0, dtype=torch.float64))
    same, mask = corrupt(x, "gaussian", 0.0)
    assert torch.equal(same, x) and mask.all()
    sp, _ = corrupt(torch.full((20, 1, 28, 28), 0.5), "salt_pepper", 0.2, seed=1)
    hit = sp != 0.5
    assert abs(float(hit.float().mean()) - 0.2) < 0.01 and set(sp[hit].tolist()) <= {0.0, 1.0}
    blocked, observed = corrupt(torch.ones(3, 1, 10, 10), "block", 0.3)
    assert (~observed).flatten(1).sum(1).tolist() == [9, 9, 9]
    assert torch.equal(blocked == 0, ~observed)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "fog", 0.1)
    # masked log-likelihood: all observed = the full one; masked values are never looked at
    model, w, b, sigma = make_ppca()
    xs = sample_x(6, w, b, sigma)
    px_z = model.decode(model.encode(xs).mean)
    ones = torch.ones_like(xs, dtype=torch.bool)
    torch.testing.assert_close(masked_log_prob(px_z, xs, ones), px_z.log_prob(xs))
    m = ones.clone()
    m[:, :2] = False
    other = xs.clone()
    other[:, :2] = 1e6
    torch.testing.assert_close(masked_log_prob(px_z, xs, m), masked_log_prob(px_z, other, m))


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("apps") / "mnist"
    cfg = vaekit.load_config(
        None,
        {
            "data.dataset": "mnist",
            "data.train_limit": 4000,
            "data.test_limit": 300,
            "model.hidden": [128],
            "model.latent_dim": 8,
            "train.epochs": 4,
            "train.batch_size": 100,
            "train.images": False,
        },
    )
    return vaekit.train(cfg, out, log=lambda *a: None)


def test_denoising_beats_the_corrupted_input(mnist_run):
    model = vaekit.load(mnist_run)
    ds = load_dataset("mnist", test_limit=200, train_limit=0)
    clean = DataPrep(model.likelihood).fixed(ds.test)
    noisy, _ = corrupt(clean, "gaussian", 0.5, seed=0)
    gain = psnr(denoise(model, noisy), clean).mean() - psnr(noisy, clean).mean()
    assert gain > 1.0  # dB
    holed, observed = corrupt(clean, "block", 0.4, seed=0)
    filled = denoise(model, holed, observed, steps=60)
    assert torch.equal(filled[observed], clean[observed])
    hidden = ~observed
    mse_filled = (filled - clean)[hidden].pow(2).mean()
    assert mse_filled < 0.8 * (holed - clean)[hidden].pow(2).mean()  # better than the zeros


def test_probe_finds_digit_classes_in_the_latents(mnist_run):
    model = vaekit.load(mnist_run)
    ds = load_dataset("mnist", train_limit=2000, test_limit=300)
    prep = DataPrep(model.likelihood)
    result = probe(
        model, prep.fixed(ds.train), ds.train_labels, prep.fixed(ds.test), ds.test_labels
    )
    assert result["probe_accuracy"] > 0.45  # chance is 0.1; about 0.6 for this small model
    assert result["kmeans_ari"] > 0.1 and result["latent_dim"] == 8 and result["classes"] == 10


# ---- commands ------------------------------------------------------------------------------------


def _table(path, n, seed, outliers=0, unseen=False):
    rng = np.random.default_rng(seed)
    lines = ["temp,pressure,valve,mode,is_bad"]
    for i in range(n):
        t = rng.normal(20, 2)
        p = 3 * t + rng.normal(0, 0.5)
        mode = "abc"[int(t > 20) + int(t > 22)]
        valve = "open" if t > 19 else "shut"
        bad = i < outliers
        if bad:
            p = 3 * t + rng.choice([-1, 1]) * rng.uniform(12, 16)
        if unseen and i == n - 1:
            mode = "zzz"
        lines.append(
            f"{t:.3f},{'' if i % 11 == 5 and not bad else f'{p:.3f}'},{valve},{mode},{int(bad)}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_anomaly_commands_on_a_mixed_type_csv(tmp_path, capsys):
    data = _table(tmp_path / "train.csv", 600, 0, outliers=40)
    run = tmp_path / "run"
    argv = [
        "anomaly",
        "fit",
        str(data),
        "--labels",
        "is_bad",
        "--out",
        str(run),
        "-k",
        "50",
        "--epochs",
        "150",
        "--batch-size",
        "64",
        "--latent-dim",
        "1",
        "--set",
        "train.checkpoint_every=1000",
        "--set",
        "train.eval_every=1000",
        "--hidden",
        "32",
        "--json",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["test"]["roc_auc"] > 0.9 and summary["train"]["roc_auc"] > 0.9
    lines = (run / "scores.csv").read_text().splitlines()
    assert len(lines) == 601 and lines[0] == "split,row,score,anomaly,label"
    assert sorted(int(r.split(",")[1]) for r in lines[1:]) == list(range(600))
    det = AnomalyDetector.load(run)
    assert det.rule == "fpr" and det.label == "is_bad" and det.anomaly_labels == [1]

    new = _table(tmp_path / "new.csv", 50, 1, outliers=5, unseen=True)
    out = tmp_path / "scores.csv"
    assert main(["anomaly", "score", str(run), str(new), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["data"]["n"] == 50 and summary["data"]["roc_auc"] > 0.9
    assert main(["anomaly", "score", str(run), str(new), "--unseen", "error"]) == 2
    assert "'zzz' is not one of the levels" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("")
    assert main(["anomaly", "score", str(run), str(tmp_path / "empty.csv")]) == 2
    assert "empty" in capsys.readouterr().err


def test_denoise_and_probe_commands(mnist_run, tmp_path, capsys):
    out = tmp_path / "d.png"
    argv = [
        "denoise",
        str(mnist_run),
        "test",
        "--noise",
        "gaussian:0.5",
        "-n",
        "50",
        "-o",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["psnr_denoised"] > result["psnr_input"] and out.exists()
    argv = [
        "denoise",
        str(mnist_run),
        "test",
        "--noise",
        "block:0.4",
        "-n",
        "20",
        "--steps",
        "30",
        "-o",
        str(tmp_path / "d.npy"),
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["method"] == "infer" and np.load(tmp_path / "d.npy").shape == (20, 1, 28, 28)
    assert main(["probe", str(mnist_run), "--limit", "1000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_train"] == 1000 and 0.5 < result["probe_accuracy"] <= 1


def test_anomaly_fit_uses_table_defaults_unless_told_otherwise(tmp_path, capsys):
    data = _table(tmp_path / "t.csv", 200, 2, outliers=10)
    run = tmp_path / "run"
    argv = ["anomaly", "fit", str(data), "--labels", "is_bad", "--out", str(run), "-k", "5"]
    assert main([*argv, "--contamination", "0.1"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["hidden"] == [] and cfg["model"]["latent_dim"] == 2
    assert cfg["model"]["likelihood"] == "tabular" and cfg["train"]["epochs"] == 250
    assert "transform=yeo-johnson" in cfg["data"]["dataset"]
    assert all(0 <= c["power"] <= 2 for c in cfg["data_info"]["columns"] if c["kind"] == "numeric")
    assert AnomalyDetector.load(run).rule == "contamination"
    argv += ["--transform", "none"]
    assert main([*argv, "--hidden", "8", "--epochs", "3", "--force"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["hidden"] == [8] and cfg["train"]["epochs"] == 3
    assert {c.get("power", 1.0) for c in cfg["data_info"]["columns"]} == {1.0}
    assert main(argv) == 2  # refuses to overwrite without --force
    assert "already holds a run" in capsys.readouterr().err


def test_anomaly_score_applies_the_fitted_transform_identically(tmp_path, capsys):
    """`anomaly score` rebuilds the Yeo-Johnson transform from config.json: scoring the training
    file again reproduces the fit's scores row by row (deterministic ``recon`` score)."""
    rng = np.random.default_rng(4)
    n = 300
    a = rng.lognormal(0, 0.8, n)
    b = a * np.exp(rng.normal(0, 0.1, n))
    bad = np.arange(n) < 12
    b[bad] = a[bad] * 6  # off the a ≈ b relation, inside both marginal ranges
    lines = ["a,b,y"] + [f"{a[i]:.5f},{b[i]:.5f},{int(bad[i])}" for i in range(n)]
    data = tmp_path / "skewed.csv"
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    argv = ["anomaly", "fit", str(data), "--labels", "y", "--out", str(run), "--score", "recon"]
    assert main([*argv, "--latent-dim", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train"]["roc_auc"] > 0.8  # chance is 0.5
    columns = json.loads((run / "config.json").read_text())["data_info"]["columns"]
    assert all(c["power"] < 0.8 for c in columns)  # log-like: the columns are right-skewed
    fitted = {}
    for line in (run / "scores.csv").read_text().splitlines()[1:]:
        _, row, score, *_ = line.split(",")
        fitted[int(row)] = float(score)
    out = tmp_path / "again.csv"
    assert main(["anomaly", "score", str(run), str(data), "-o", str(out), "--json"]) == 0
    again = [float(r.split(",")[2]) for r in out.read_text().splitlines()[1:]]
    np.testing.assert_allclose(again, [fitted[i] for i in range(n)], rtol=1e-4, atol=1e-4)
