"""Conditional VAE on dynamically binarized MNIST: conditional test NLL −log p(x|y) (IWAE, K
samples, on the first --test-limit test digits) and a grid of conditional samples per class.

MLP networks 784-512-512 with the label (one-hot) joining the encoder's features and the
decoder's input; 16 latents (fewer than the preset's 32, so the decoder leans on y); fixed time
budget. Whether samples respect their label is checked by
a logistic-regression classifier fitted on real training digits (accuracy per class).
Pictures in --out: class_samples.png (row c: ten samples of class c). Prints one JSON object.
Usage: python benchmarks/cvae_mnist.py [--minutes 5] [--k 1000] [--test-limit 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from model_family import budgeted_train, evaluate_run, rounded
from sklearn.linear_model import LogisticRegression

import vaekit
from vaekit import images
from vaekit.cli.options import config_path as _config_path
from vaekit.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--test-limit", type=int, default=1000)
    p.add_argument("--out", default="runs/bench-cvae")
    args = p.parse_args()
    overrides = {"model.kind": "cvae", "model.latent_dim": 16, "train.threads": 1}
    cfg = vaekit.load_config(_config_path("mnist"), overrides)
    run = budgeted_train(cfg, args.out, args.minutes, probe_steps=300)
    ev = evaluate_run(run["run"], args.k, args.test_limit)
    model = vaekit.load(run["run"])
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(10)
    with model.given(labels):
        x = model.sample(100, mean=True, generator=gen)  # E[x | z, y], z ~ N(0, I)
    pic = images.save_png(Path(args.out) / "class_samples.png", images.grid(x, nrow=10))
    ds = load_dataset("mnist", train_limit=10_000)
    clf = LogisticRegression(max_iter=300).fit(ds.train.flatten(1).numpy() / 255.0, ds.train_labels)
    with model.given(torch.arange(10).repeat_interleave(100)):
        many = model.sample(1000, mean=True, generator=gen)
    hits = torch.from_numpy(clf.predict(many.flatten(1).numpy())) == torch.arange(
        10
    ).repeat_interleave(100)
    keys = ("nll", "nll_stderr", "elbo", "kl", "active_units", "eval_seconds")
    print(
        json.dumps(
            {
                "benchmark": "cvae_mnist",
                **{k: v for k, v in run.items() if k != "run"},
                "k": args.k,
                "n_test": ev["n"],
                "conditional": {**rounded(ev, keys)},
                "label_accuracy_of_samples": round(float(hits.float().mean()), 4),
                "label_accuracy_per_class": [
                    round(float(h.float().mean()), 3) for h in hits.view(10, 100)
                ],
                "pictures": [str(pic)],
            }
        )
    )


if __name__ == "__main__":
    main()
