"""Conv VAE on Olivetti faces: bits/dim on the 40 held-out faces (image 9 of every person) and
interpolation pictures between two expressions of one person.

ResNet encoder/decoder (squeeze-excitation), discretized-logistic likelihood on the 8-bit levels,
32 latents, trained for a fixed time budget. bits/dim = NLL / (4096 ln 2), NLL = −IWAE bound.
Pictures in --out: samples.png, reconstructions.png, interpolation.png (one row per person: a
training face of that person → that person's held-out face). Prints one JSON object.
Usage: python benchmarks/olivetti_conv.py [--minutes 5] [--k 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from model_family import budgeted_train, evaluate_run, held_out, rounded

import vaekit
from vaekit import images
from vaekit.data import DataPrep, load_dataset

PERSONS = (0, 7, 13, 21, 34)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--out", default="runs/bench-olivetti")
    args = p.parse_args()
    cfg = vaekit.load_config(
        None,
        {
            "data.dataset": "olivetti",
            "data.binarize": "none",
            "model.arch": "resnet",
            "model.channels": [32, 64, 128, 128],
            "model.hidden": [256],
            "model.squeeze_excitation": True,
            "model.likelihood": "logistic",
            "model.latent_dim": 32,
            "train.batch_size": 20,
            "train.lr": 1e-3,
            "train.threads": 1,
        },
    )
    run = budgeted_train(cfg, args.out, args.minutes, probe_steps=20)
    ev = evaluate_run(run["run"], args.k, batch_size=10)
    model, x_test, y_test = held_out(run["run"])
    ds = load_dataset("olivetti")
    x_train = DataPrep(model.likelihood, "none").fixed(ds.train, 0)
    rows = []
    for person in PERSONS:  # a training expression → the held-out expression of the same person
        a = x_train[int((ds.train_labels == person).nonzero()[0])]
        b = x_test[int((y_test == person).nonzero()[0])]
        rows.append(images.interpolation(model, a, b, steps=8))
    pic = images.save_png(Path(args.out) / "interpolation.png", images.grid(torch.cat(rows), 8))
    keys = ("nll", "nll_stderr", "bpd", "elbo", "elbo_bpd", "kl", "active_units", "eval_seconds")
    print(
        json.dumps(
            {
                "benchmark": "olivetti_conv_vae",
                "model": "resnet+se, logistic likelihood, 32 latents",
                **{k: v for k, v in run.items() if k != "run"},
                "k": args.k,
                "n_test": ev["n"],
                **rounded(ev, keys, 4),
                "pictures": [str(pic), str(Path(args.out) / "samples.png")],
            }
        )
    )


if __name__ == "__main__":
    main()
