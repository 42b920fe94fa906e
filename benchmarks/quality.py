"""Quality: train the default MNIST preset, then test NLL (IWAE K=1000, fixed binarization).

Target (issue 2): training ≤ 10 minutes on this 2-core machine and test NLL ≤ 88 nats.
Prints one JSON object. Usage: python benchmarks/quality.py [--out DIR] [--k 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import torch

import vaekit
from vaekit.cli.options import config_path as _config_path
from vaekit.data import DataPrep, load_dataset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/bench-quality")
    p.add_argument("--config", default="mnist")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int)
    args = p.parse_args()
    overrides = {"train.threads": args.threads, "train.epochs": args.epochs}
    cfg = vaekit.load_config(_config_path(args.config), overrides)
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    vaekit.train(cfg, args.out, log=lambda *_: None)
    train_s = time.perf_counter() - t0

    model = vaekit.load(args.out)
    ds = load_dataset(cfg.data.dataset)
    x = DataPrep(model.likelihood, model.run_config.data.binarize).fixed(
        ds.test, cfg.data.eval_seed
    )
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ev = vaekit.evaluate(model, x, k=args.k)
    eval_s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "benchmark": "mnist_quality",
                "config": args.config,
                "epochs": cfg.train.epochs,
                "threads": args.threads,
                "train_seconds": round(train_s, 1),
                "test_nll": round(ev["nll"], 3),
                "test_nll_stderr": round(ev["nll_stderr"], 3),
                "test_elbo": round(ev["elbo"], 3),
                "bpd": round(ev["bpd"], 4),
                "k": args.k,
                "active_units": ev["active_units"],
                "eval_seconds": round(eval_s, 1),
                "target": {"train_seconds_max": 600, "test_nll_max": 88.0},
                "pass": bool(train_s <= 600 and ev["nll"] <= 88.0),
            }
        )
    )


if __name__ == "__main__":
    main()
