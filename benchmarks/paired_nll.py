"""Paired test-NLL comparison of two runs on the same data set: which model is better, by how much.

Both runs are scored on the same test examples (the first run's data set, fixed binarization,
labels for a conditional model) with −IWAE_K, each under the same seed. The standard error of the
*paired* difference (per-example NLL_A − NLL_B) is much smaller than either NLL's own standard
error, because most of the spread between examples is shared. Prints one JSON object.

Usage: python benchmarks/paired_nll.py RUN_A RUN_B [--k 1000] [--limit N] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from model_family import held_out

import vaekit
from vaekit.evaluation import iwae_log_likelihood


def per_example_log_px(model, x, y, k: int, seed: int = 0, batch: int = 100) -> torch.Tensor:
    """log p(x) ≈ IWAE_K per example, ``(N,)`` float64 nats, seeded."""
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch):
            yb = None if y is None else y[i : i + batch]
            with model.given(yb):
                out.append(iwae_log_likelihood(model, x[i : i + batch].float(), k=k).double())
    return torch.cat(out)


def nll_summary(lp: torch.Tensor) -> dict:
    """``nll`` = −mean log p(x) and its standard error over examples, nats (3 decimals)."""
    return {
        "nll": round(float(-lp.mean()), 3),
        "nll_stderr": round(float(lp.std() / math.sqrt(len(lp))), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--limit", type=int, help="first N test examples (default all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    _, x, y = held_out(args.run_a, args.limit)
    if not getattr(vaekit.load(args.run_a), "cond_dim", 0):
        y = None
    result = {"benchmark": "paired_nll", "k": args.k, "n": len(x)}
    log_px = {}
    for name, run in (("a", args.run_a), ("b", args.run_b)):
        model = vaekit.load(run)
        model.eval()
        t0 = time.perf_counter()
        log_px[name] = per_example_log_px(model, x, y, args.k)
        result[name] = {
            "run": run,
            **nll_summary(log_px[name]),
            "eval_seconds": round(time.perf_counter() - t0, 1),
        }
    diff = log_px["b"] - log_px["a"]  # NLL_a − NLL_b: positive when b is better
    result["nll_a_minus_b"] = round(float(diff.mean()), 3)
    result["nll_a_minus_b_stderr"] = round(float(diff.std() / math.sqrt(len(diff))), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
