"""IWAE(K=50) vs ELBO training on dynamically binarized MNIST: test NLL, wall time, equal time.

Same architecture (by default Burda et al.'s one-stochastic-layer MLP: 200-200 hidden units,
50 latents, Bernoulli; ``--hidden``/``--latent-dim`` change it), optimizer and epochs for both
objectives (the ``--config mnist`` preset's schedule); then an ELBO model trained for the IWAE
run's wall time. Test NLL is −IWAE_K (K = ``--k``) on the first ``--test-n`` test images (fixed
binarization), with the standard error over examples and the paired difference. Burda et al.
(2015) report 86.76 (VAE) vs 84.78 (IWAE, K=50) nats for one stochastic layer after 3,280
epochs; here K=50 training costs minutes per epoch, so only a few epochs are run.
Prints one JSON object.

Usage: python benchmarks/iwae_vs_elbo.py [--epochs 10] [--k-train 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch
from paired_nll import nll_summary, per_example_log_px

import vaekit
from vaekit.cli.options import config_path as _config_path
from vaekit.data import DataPrep


def _train(overrides: dict, out: Path) -> tuple[float, int]:
    cfg = vaekit.load_config(_config_path("mnist"), {"train.images": False, **overrides})
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    vaekit.train(cfg, out, log=lambda *_: None)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return time.perf_counter() - t0, rows[-1]["epoch"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/bench-iwae")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--k-train", type=int, default=50)
    p.add_argument("--hidden", default="200,200", help="hidden units, comma-separated")
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--k", type=int, default=1000, help="importance samples of the test NLL")
    p.add_argument("--test-n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-limit", type=int, help="smoke tests only: first N training images")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.out)
    base = {
        "train.epochs": args.epochs,
        "train.threads": args.threads,
        "data.train_limit": args.train_limit,
        "model.hidden": [int(h) for h in args.hidden.split(",")],
        "model.latent_dim": args.latent_dim,
    }
    runs = {
        "elbo": {**base},
        "iwae": {**base, "objective.name": "iwae", "objective.n_samples": args.k_train},
    }
    results = {}
    for name, overrides in runs.items():
        seconds, epochs = _train(overrides, root / name)
        results[name] = {"train_seconds": round(seconds, 1), "epochs": epochs}
    # ELBO at the IWAE run's wall time: as many epochs as fit (cosine schedule over them), capped.
    budget = results["iwae"]["train_seconds"]
    per_epoch = results["elbo"]["train_seconds"] / args.epochs
    equal = {**base, "train.epochs": max(args.epochs, int(budget / per_epoch))}
    equal["train.time_limit"] = budget / 60.0
    seconds, epochs = _train(equal, root / "elbo_equal_time")
    results["elbo_equal_time"] = {"train_seconds": round(seconds, 1), "epochs": epochs}

    model = vaekit.load(root / "elbo")
    ds = vaekit.load_dataset("mnist", test_limit=args.test_n)
    x = DataPrep(model.likelihood, "dynamic").fixed(ds.test, model.run_config.data.eval_seed)
    lps = {name: per_example_log_px(vaekit.load(root / name), x, None, args.k) for name in results}
    for name, lp in lps.items():
        results[name].update(nll_summary(lp))
    diff = lps["elbo"] - lps["iwae"]  # log p(x) difference; negative: the IWAE model is better
    print(
        json.dumps(
            {
                "benchmark": "iwae_vs_elbo",
                "architecture": f"MLP {args.hidden}, {args.latent_dim} latents, Bernoulli",
                "k_train": args.k_train,
                "eval": {"k": args.k, "test_examples": len(x)},
                "threads": args.threads,
                **results,
                "nll_elbo_minus_iwae": round(float(-diff.mean()), 3),
                "nll_elbo_minus_iwae_stderr": round(float(diff.std() / math.sqrt(len(diff))), 3),
                "nll_elbo_equal_time_minus_iwae": round(
                    float((lps["iwae"] - lps["elbo_equal_time"]).mean()), 3
                ),
                "burda_2015_reference": {"vae": 86.76, "iwae_k50": 84.78, "epochs": 3280},
            }
        )
    )


if __name__ == "__main__":
    main()
