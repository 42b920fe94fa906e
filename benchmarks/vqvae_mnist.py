"""VQ-VAE on MNIST grey levels: reconstruction PSNR, the learned code prior's bits per code,
codebook use, and pictures of samples from the prior and of reconstructions (``docs/img/``).

Model: ``kind: vqvae``, convs 32 → 64 (stride 2 each: a 7 × 7 grid of codes), 128 codes of 16
dimensions, commitment 0.25, EMA decay 0.99, GRU code prior (128 units) trained jointly;
discretized-logistic likelihood on the 8-bit levels (``--binarize none``). Nothing here is a
bound on log p(x): the model has none (``has_bound = False``).

    nice -n 10 python benchmarks/vqvae_mnist.py --epochs 6 --train-limit 12800
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import vaekit
from vaekit import images
from vaekit.checkpoint import load_run
from vaekit.cli.options import split_data
from vaekit.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-vqvae")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-limit", type=int, default=20000)
    p.add_argument("--test", type=int, default=2000, help="first N test images")
    p.add_argument("--img", default=str(ROOT / "docs" / "img"))
    p.add_argument("--prior-steps", type=int, default=1500, help="fit_prior steps after training")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    overrides = {
        "data.dataset": "mnist",
        "data.binarize": "none",
        "data.train_limit": args.train_limit,
        "data.test_limit": args.test,
        "model.kind": "vqvae",
        "model.likelihood": "logistic",
        "model.channels": [32, 64],
        "model.code_dim": 16,
        "model.codebook_size": 128,
        "train.epochs": args.epochs,
        "train.batch_size": 128,
        "train.seed": 0,
        "train.images": False,
    }
    t0 = time.perf_counter()
    if not (out / "manifest.json").exists():
        vaekit.train(vaekit.load_config(None, overrides), out, log=lambda *_: None)
    seconds = time.perf_counter() - t0
    model = load_run(out)
    x, _ = split_data(model, argparse.Namespace(limit=args.test, data_dir=None), "test")
    joint = evaluate(model, x, k=0, seed=0)  # the prior as trained jointly
    trainer = json.loads((out / "state" / "trainer.json").read_text())
    t1 = time.perf_counter()
    x_train, _ = split_data(model, argparse.Namespace(limit=None, data_dir=None), "train")
    losses = model.fit_prior(x_train, steps=args.prior_steps, seed=0)
    prior_seconds = time.perf_counter() - t1
    ev = evaluate(model, x, k=0, seed=0)
    img = Path(args.img)
    g = torch.Generator().manual_seed(0)
    samples = images._to_unit(model, model.sample(64, mean=True, generator=g))
    images.save_png(img / "vqvae-mnist-samples.png", images.grid(samples, nrow=8))
    images.save_png(
        img / "vqvae-mnist-reconstructions.png",
        images.grid(images.reconstructions(model, x[:32]), nrow=8),
    )
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    print(
        json.dumps(
            {
                "protocol": {**overrides, "test_images": len(x)},
                "train_seconds": round(seconds, 1),
                "trained_steps": trainer["step"],
                "trained_epochs": trainer["epoch"] + trainer["batch_in_epoch"] / 100,
                "jointly_trained_prior": {
                    k: joint[k] for k in ("code_nll", "bits_per_code", "psnr")
                },
                "fit_prior": {
                    "steps": args.prior_steps,
                    "seconds": round(prior_seconds, 1),
                    "last_loss": sum(losses[-50:]) / 50,
                },  # fmt: skip
                "step_seconds_per_epoch": round(rows[-1]["step_time_s"] / len(rows), 2),
                "evaluation": {k: v for k, v in ev.items() if k != "kl_per_dim"},
                "pictures": [
                    str(img / "vqvae-mnist-samples.png"),
                    str(img / "vqvae-mnist-reconstructions.png"),
                ],  # fmt: skip
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
