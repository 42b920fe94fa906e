"""Gradient-estimator variance on a trained MNIST model (``vaekit gradvar`` as a benchmark).

Reports the variance ratio score-function / reparameterization of the encoder's ELBO gradient,
and the encoder-gradient SNR of plain IWAE vs DReG as K grows (Rainforth et al. 2018: the IWAE
encoder SNR falls like 1/√K; Tucker et al. 2018: DReG's does not). Prints one JSON object.

Usage: python benchmarks/gradvar.py RUN [--samples 100] [--batches 2] [--batch-size 32]
(RUN: a run of the default ``--config mnist`` preset, e.g. from ``benchmarks/quality.py``)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vaekit
from vaekit.cli.inference import _ratios
from vaekit.cli.options import split_data as _split_data
from vaekit.gradvar import gradient_variance


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = vaekit.load(args.run)
    ns = argparse.Namespace(data_dir=None, limit=args.batches * args.batch_size)
    x, _ = _split_data(model, ns, "test")
    batches = list(x.split(args.batch_size))
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        rows = gradient_variance(
            model,
            batches,
            ["reparam", "score", "score-mean", "iwae", "dreg"],
            (1, 10, 100),
            args.samples,
        )
    snr = {
        name: {r["k"]: round(r["snr"], 4) for r in rows if r["estimator"] == name}
        for name in ("iwae", "dreg")
    }
    var = {r["estimator"]: r["mean_variance"] for r in rows if r["k"] == 1}
    print(
        json.dumps(
            {
                "benchmark": "gradvar",
                "run": args.run,
                "samples": args.samples,
                "batches": args.batches,
                "batch_size": args.batch_size,
                "mean_variance_k1": {k: float(f"{v:.4g}") for k, v in var.items()},
                **{k: round(v, 1) for k, v in _ratios(rows).items()},
                "encoder_snr_by_k": snr,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
