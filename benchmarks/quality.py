"""Quality: train the default MNIST preset, then test NLL (IWAE K=1000, fixed binarization).

Target (issue 2): training ≤ 10 minutes on this 2-core machine and test NLL ≤ 88 nats.
Prints one JSON object. Usage: python benchmarks/quality.py [--out DIR] [--k 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import torch

import vaekit
from vaekit.cli.options import config_path as _config_path
from vaekit.cli.options import parse_sets
from vaekit.data import DataPrep, load_dataset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/bench-quality")
    p.add_argument("--config", default="mnist")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args()
    overrides = {"train.threads": args.threads, "train.epochs": args.epochs}
    overrides.update(parse_sets(args.set))
    cfg = vaekit.load_config(_config_path(args.config), overrides)
    shutil.rmtree(args.out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    vaekit.train(cfg, args.out, log=lambda *_: None)
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0

    load_at_end = os.getloadavg()[0]
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
                "overrides": parse_sets(args.set),
                "batch_size": cfg.train.batch_size,
                "lr": cfg.train.lr,
                "load_average_1m_at_end_of_training": round(load_at_end, 2),
                "train_seconds": round(train_s, 1),
                "train_cpu_seconds": round(train_cpu_s, 1),
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
