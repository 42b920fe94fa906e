"""The deep hierarchical VAE (``kind: deep``) on dynamically binarized MNIST, Bernoulli head.

Trains for a wall-clock budget (``--minutes``, default 60: the issue's budget) with a complete
learning-rate schedule fitted to it by a speed probe (``model_family.budgeted_train``), KL warm-up
over the first 10 % of the steps with KL balancing, gradient skipping and the weights' moving
average; then the test NLL = −IWAE bound with K = 1000 importance samples (``--limit N``: the
first N test digits only, when there is no time for all 10,000) ± its standard error, and the
training speed (images/s over the optimizer steps alone). Prints one JSON object.

Usage: python benchmarks/mnist_deep.py [--minutes 60] [--k 1000] [--limit 10000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from model_family import budgeted_train, evaluate_run, rounded

import vaekit

MODEL = {
    "model.kind": "deep",
    "model.likelihood": "bernoulli",
    "model.deep_channels": [8, 32, 32],  # 28×28: 8 channels; 14×14 and below: 32
    "model.deep_scales": [8, 4, 2],  # latent maps 4×4, 7×7, 14×14
    "model.groups_per_scale": [1, 1, 1],
    "model.latent_channels": 4,
    "model.cells": 1,
    "model.ema": 0.999,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="training budget (60)")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--limit", type=int, help="evaluate the first N test digits (all 10,000)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--out", default="runs/bench-mnist-deep")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    cfg = vaekit.load_config(
        None,
        {
            "data.dataset": "mnist",
            "data.binarize": "dynamic",
            **MODEL,
            "objective.kl_balance": True,
            "train.batch_size": args.batch_size,
            "train.lr": args.lr,
            "train.lr_final": args.lr / 10,
            "train.clip_norm": 200.0,
            "train.grad_skip": 5000.0,  # typical gradient norms: 60–700
            "train.threads": args.threads,
            "train.images": False,
        },
    )
    t0, c0 = time.perf_counter(), time.process_time()
    run = budgeted_train(cfg, args.out, args.minutes, probe_steps=20, warmup_fraction=0.1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = [json.loads(s) for s in (Path(run["run"]) / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    ev = evaluate_run(run["run"], args.k, limit=args.limit, batch_size=50)
    keys = ("nll", "nll_stderr", "elbo", "kl", "active_units", "eval_seconds", "n", "k")
    print(
        json.dumps(
            {
                "benchmark": "mnist_deep",
                "model": {k.split(".")[1]: v for k, v in MODEL.items()},
                "latent_groups": vaekit.load(run["run"]).latent_groups,
                "budget_minutes": args.minutes,
                **{k: v for k, v in run.items() if k != "run"},
                "wall_s_with_probes": round(wall, 1),
                "cpu_s_with_probes": round(cpu, 1),
                "steps": last["step"],
                "images_per_second": round(last["step"] * args.batch_size / last["step_time_s"], 1),
                "grad_skipped_steps": last["grad_skipped_steps"],
                "threads": args.threads,
                "load_average_1m_at_start": round(load0, 2),
                **rounded(ev, keys, 3),
                "kl_per_group_bottom_to_top": [round(v, 2) for v in ev["kl_per_layer"]],
                "target_nll_at_most": 84.0,
            }
        )
    )


if __name__ == "__main__":
    main()
