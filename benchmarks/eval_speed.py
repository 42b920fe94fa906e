"""Evaluation speed: IWAE K=1000 over the 10,000 MNIST test images, MLP 784-400-20 (Bernoulli).

Issue 2 target: ≤ 60 s on this 2-core machine. Trains the MLP briefly first (the time of the
IWAE evaluation does not depend on how well it is trained), or uses ``--run``. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

import vaekit
from vaekit.transforms import DataPrep


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", help="an existing run of that MLP (default: train one for 1 epoch)")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--chunk", type=int, default=100)
    p.add_argument("--limit", type=int, help="first N test images (default all 10,000)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        run = args.run
        if run is None:
            cfg = vaekit.load_config(
                None,
                {
                    "data.dataset": "mnist",
                    "model.hidden": [400],
                    "model.latent_dim": 20,
                    "train.epochs": 1,
                    "train.threads": args.threads,
                    "train.images": False,
                },
            )
            run = vaekit.train(cfg, tmp / "run", log=lambda *_: None)
        model = vaekit.load(run)
        ds = vaekit.load_dataset("mnist", test_limit=args.limit)
        x = DataPrep(model.likelihood, "dynamic").fixed(ds.test, 0)
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        ev = vaekit.evaluate(model, x, k=args.k, batch_size=args.batch_size, chunk=args.chunk)
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "iwae_eval_speed_mlp_784_400_20",
                "k": args.k,
                "n": ev["n"],
                "threads": args.threads,
                "seconds": round(seconds, 1),
                "decoder_gflop": round(2 * (20 * 400 + 400 * 784) * args.k * ev["n"] / 1e9, 1),
                "nll": round(ev["nll"], 3),
                "nll_stderr": round(ev["nll_stderr"], 3),
                "target_seconds_max": 60,
                "pass": seconds <= 60,
            }
        )
    )


if __name__ == "__main__":
    main()
