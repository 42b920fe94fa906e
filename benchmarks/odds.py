"""ODDS outlier detection: the VAE's −log p(x) score beside IsolationForest and PCA reconstruction
error, on the same splits and seeds.

Protocol: for each data set and seed, one seeded random split (``tabular.split_rows``): the VAE,
IsolationForest and PCA are fitted on the same 60% of the rows, inliers and outliers alike
(unsupervised, contaminated training data; labels never seen), and score the other 40%; ROC AUC and
average precision on those held-out rows. Features are standardized on the training rows (the VAE
does this itself). PCA keeps as many components as the VAE has latent dimensions.
Two VAEs, both linear networks (no hidden layer, a factor-analysis-like model) with latent
min(8, max(2, d/2)) and the −log p(x) score (K importance samples): ``vae_default``, the defaults
of ``vaekit anomaly fit`` (numeric columns Yeo-Johnson transformed, robust fit with λ in [0, 2],
density in original units; ~250 steps, at least 10 epochs), and ``vae_previous``, the former
defaults (no transform, ~1000 steps).
Prints one JSON object: per data set the mean ± std over seeds of each metric and method.
Usage: python benchmarks/odds.py [--sets thyroid,cardio,shuttle] [--seeds 0,1,2] [--k 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

import vaekit
from vaekit.applications import anomaly_scores
from vaekit.cli.apps import TABLE_DEFAULTS, TABLE_STEPS
from vaekit.data import load_dataset


def vae_scores(ds, seed: int, k: int, steps: int) -> tuple[np.ndarray, int]:
    """The −log p(x) scores of ds.test under a VAE with the table defaults, ~``steps`` steps."""
    n_cols = ds.train.shape[1]
    latent = min(8, max(2, n_cols // 2))
    batches = max(len(ds.train) // TABLE_DEFAULTS["train.batch_size"], 1)
    epochs = int(min(400, max(10, np.ceil(steps / batches))))
    cfg = vaekit.load_config(
        None,
        {
            **TABLE_DEFAULTS,
            "model.latent_dim": latent,
            "train.epochs": epochs,
            "train.seed": seed,
            "train.threads": 1,
            "train.eval_every": epochs,
            "train.checkpoint_every": epochs,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = vaekit.train(cfg, tmp, dataset=ds, log=lambda *_: None)
        model = vaekit.load(run)
    return anomaly_scores(model, ds.test, method="nll", k=k, seed=seed).numpy(), latent


def baselines(ds, seed: int, n_components: int) -> dict[str, np.ndarray]:
    scaler = StandardScaler().fit(ds.train.numpy())
    xtr, xte = scaler.transform(ds.train.numpy()), scaler.transform(ds.test.numpy())
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(xtr)
    pca = PCA(n_components=min(n_components, xtr.shape[1] - 1), random_state=seed).fit(xtr)
    recon = pca.inverse_transform(pca.transform(xte))
    return {"isolation_forest": -forest.score_samples(xte), "pca": ((xte - recon) ** 2).sum(1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sets", default="thyroid,cardio,shuttle")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--k", type=int, default=200, help="importance samples of the VAE score")
    p.add_argument("--steps", type=int, default=TABLE_STEPS, help="VAE optimizer steps (about)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    out: dict = {
        "benchmark": "odds",
        "protocol": "fit on a seeded random 60% of all rows "
        "(contaminated, unlabelled), score the other 40%",
        "seeds": seeds,
        "sets": {},
    }
    t_all = time.perf_counter()
    for name in args.sets.split(","):
        t0 = time.perf_counter()
        per: dict[str, dict[str, list[float]]] = {}
        for seed in seeds:
            spec = f"odds:{name}?test=0.4&seed={seed}"
            ds = load_dataset(f"{spec}&transform=yeo-johnson")
            raw = load_dataset(spec)  # the same split, untransformed
            y = ds.test_labels.numpy() == 1
            scores, latent = vae_scores(ds, seed, args.k, args.steps)
            previous, _ = vae_scores(raw, seed, args.k, 1000)
            methods = {
                "vae_default": scores,
                "vae_previous": previous,
                **baselines(raw, seed, latent),
            }
            for method, s in methods.items():
                m = per.setdefault(method, {"roc_auc": [], "average_precision": []})
                m["roc_auc"].append(roc_auc_score(y, s))
                m["average_precision"].append(average_precision_score(y, s))
        out["sets"][name] = {
            "n_test": int(len(ds.test)),
            "outliers_test": int(y.sum()),
            **{
                method: {key: f"{np.mean(v):.4f} ± {np.std(v):.4f}" for key, v in metrics.items()}
                for method, metrics in per.items()
            },
            "seconds": round(time.perf_counter() - t0, 1),
        }
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
