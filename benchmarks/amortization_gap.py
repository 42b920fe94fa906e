"""Amortization and approximation gaps on MNIST test images for a trained model (nats).

For the first ``--n`` test images (fixed binarization): the encoder's ELBO, the ELBO after
per-example refinement from the encoder's output (semi-amortized) and from the prior
(non-amortized), log p(x) ≈ IWAE_K, and an AIS estimate on the first ``--ais-n`` images as an
independent check (Cremer et al. 2018: gaps). Prints one JSON object.

Usage: python benchmarks/amortization_gap.py RUN [--n 500] [--steps 100] [--k 1000]
(RUN: a run of the default ``--config mnist`` preset, e.g. from ``benchmarks/quality.py``)
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import vaekit
from vaekit.ais import ais_log_likelihood
from vaekit.cli.options import split_data as _split_data
from vaekit.evaluation import iwae_log_likelihood
from vaekit.inference import amortization_gap


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    return round(float(v.mean()), 3), round(float(v.std() / math.sqrt(len(v))), 3)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--prior-steps", type=int, default=300)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--ais-n", type=int, default=50)
    p.add_argument("--ais-steps", type=int, default=300)
    p.add_argument("--ais-init", choices=["prior", "encoder"], default="encoder")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = vaekit.load(args.run)
    x, _ = _split_data(model, argparse.Namespace(data_dir=None, limit=args.n), "test")
    t0 = time.perf_counter()
    semi = amortization_gap(model, x, steps=args.steps)
    non = amortization_gap(model, x, steps=args.prior_steps, init="prior")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        log_px = torch.cat([iwae_log_likelihood(model, xb, k=args.k) for xb in x.split(100)])
        xa = x[: args.ais_n]
        ais, stats = ais_log_likelihood(
            model, xa, steps=args.ais_steps, chains=8, leapfrog=5, init=args.ais_init
        )
        iw_a = log_px[: args.ais_n]
    ais_diff = _mean_se((ais - iw_a).double())
    print(
        json.dumps(
            {
                "benchmark": "amortization_gap",
                "run": args.run,
                "test_examples": len(x),
                "elbo_amortized": round(semi["elbo_amortized"], 3),
                "elbo_refined_from_encoder": round(semi["elbo_refined"], 3),
                "elbo_refined_from_prior": round(non["elbo_refined"], 3),
                "log_px_iwae": _mean_se(log_px.double())[0],
                "k": args.k,
                "amortization_gap": round(semi["amortization_gap"], 3),
                "amortization_gap_stderr": round(semi["amortization_gap_stderr"], 3),
                "amortization_gap_from_prior_refinement": round(non["amortization_gap"], 3),
                "approximation_gap": round(float(log_px.mean()) - semi["elbo_refined"], 3),
                "refine": {
                    "steps": args.steps,
                    "prior_steps": args.prior_steps,
                    "lr": semi["refine_lr"],
                    "samples": semi["refine_samples"],
                },
                "ais": {
                    "examples": len(xa),
                    "steps": args.ais_steps,
                    "chains": 8,
                    "leapfrog": 5,
                    "init": args.ais_init,
                    "accept_rate": round(stats["accept_rate"], 3),
                    "ais_minus_iwae": ais_diff[0],
                    "ais_minus_iwae_stderr": ais_diff[1],
                },
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
