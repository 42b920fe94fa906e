"""MNIST denoising PSNR at several corruption levels, and linear-probe accuracy of the latents.

Model: the MNIST preset trained for ``--epochs`` (or an existing run, ``--run``). Clean images are
the test set binarized once with the fixed evaluation seed (the model's data); corrupted copies are
denoised by the posterior-mean reconstruction (``mean``) and, for masked blocks, by posterior
inference on the observed pixels (``infer``). PSNR in dB (peak 1), mean over images.
Probe: logistic regression on the posterior means of the first ``--probe-train`` training images,
accuracy on the test set, beside the same regression on raw pixels (grey levels / 255); k-means
adjusted Rand index of both. Prints one JSON object.
Usage: python benchmarks/denoise.py [--epochs 15 | --run RUN] [--n 1000] [--probe-train 10000]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vaekit
from vaekit.applications import corrupt, denoise, kmeans_ari, linear_probe, psnr
from vaekit.cli.options import config_path as _config_path
from vaekit.data import DataPrep, load_dataset
from vaekit.latent import encode

LEVELS = [
    ("gaussian", 0.1),
    ("gaussian", 0.25),
    ("gaussian", 0.5),
    ("gaussian", 0.75),
    ("salt_pepper", 0.1),
    ("salt_pepper", 0.3),
    ("block", 0.3),
    ("block", 0.5),
]


def mean_psnr(x, ref) -> float:
    return round(float(psnr(x, ref).clamp_max(100).mean()), 2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", help="use this trained MNIST run instead of training one")
    p.add_argument("--out", default="runs/bench-denoise")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--n", type=int, default=1000, help="test images to corrupt")
    p.add_argument("--steps", type=int, default=200, help="inference steps for masked blocks")
    p.add_argument("--probe-train", type=int, default=10000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"benchmark": "mnist_denoise_probe"}
    run = args.run
    if run is None:
        overrides = {
            "train.epochs": args.epochs,
            "train.threads": args.threads,
            "train.images": False,
        }
        cfg = vaekit.load_config(_config_path("mnist"), overrides)
        t0 = time.perf_counter()
        run = vaekit.train(cfg, args.out, log=lambda *_: None)
        out["train"] = f"MNIST preset, {args.epochs} epochs, {time.perf_counter() - t0:.0f} s"
    model = vaekit.load(run)
    cfg = model.run_config
    ds = load_dataset("mnist")
    prep = DataPrep(model.likelihood, cfg.data.binarize)
    clean = prep.fixed(ds.test[: args.n], cfg.data.eval_seed)
    out["clean_reconstruction_psnr"] = mean_psnr(denoise(model, clean), clean)
    rows = []
    for kind, level in LEVELS:
        noisy, observed = corrupt(clean, kind, level, seed=0)
        row = {
            "corruption": f"{kind}:{level}",
            "input": mean_psnr(noisy, clean),
            "mean": mean_psnr(denoise(model, noisy), clean),
        }
        if not observed.all():
            t0 = time.perf_counter()
            row["infer"] = mean_psnr(denoise(model, noisy, observed, steps=args.steps), clean)
            row["infer_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    out["psnr_db"] = rows

    n = args.probe_train
    x_tr = prep.fixed(ds.train[:n], cfg.data.eval_seed)
    x_te = prep.fixed(ds.test, cfg.data.eval_seed)
    y_tr, y_te = ds.train_labels[:n].numpy(), ds.test_labels.numpy()
    z_tr, z_te = encode(model, x_tr).numpy(), encode(model, x_te).numpy()
    raw_tr = (ds.train[:n].flatten(1).float() / 255).numpy()
    raw_te = (ds.test.flatten(1).float() / 255).numpy()
    t0 = time.perf_counter()
    out["probe"] = {
        "train_images": n,
        "test_images": len(y_te),
        "latent_accuracy": round(linear_probe(z_tr, y_tr, z_te, y_te), 4),
        "raw_pixel_accuracy": round(linear_probe(raw_tr, y_tr, raw_te, y_te), 4),
        "latent_kmeans_ari": round(kmeans_ari(z_te, y_te), 4),
        "raw_pixel_kmeans_ari": round(kmeans_ari(raw_te, y_te), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
