"""IAF posterior vs the diagonal Gaussian on MNIST: same networks, data, epochs and seed; paired
test NLL difference (IWAE, K importance samples) ± its standard error.

Both models: MLP 784 → 512 → 512 → latent 32 (decoder mirrored), Bernoulli likelihood on
dynamically binarized MNIST, Adam 1e-3 with the cosine schedule, batch 128. The IAF posterior
adds ``flow_steps`` MADE steps (context: 64 more encoder outputs). The NLL of each of the first
``--test`` test images (the fixed binarization every run uses) is estimated by both models with
the same seed; the difference is paired by image: mean(NLL_iaf − NLL_gauss) ± sd/√n.

    nice -n 10 python benchmarks/flows_mnist.py --epochs 10 --test 1000 --k 1000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import vaekit
from vaekit.checkpoint import load_run
from vaekit.evaluation import iwae_log_likelihood
from vaekit.latent import kl_by_dim


def train(posterior: str, out: Path, args) -> Path:
    if (out / "manifest.json").exists() and (out / "metrics.jsonl").exists():
        rows = (out / "metrics.jsonl").read_text().splitlines()
        if len(rows) >= args.epochs:
            return out
    overrides = {
        "data.dataset": "mnist",
        "data.train_limit": args.train_limit,
        "model.arch": "mlp",
        "model.hidden": [512, 512],
        "model.latent_dim": 32,
        "model.likelihood": "bernoulli",
        "model.posterior": posterior,
        "model.flow_steps": args.flow_steps,
        "train.epochs": args.epochs,
        "train.batch_size": 128,
        "train.seed": 0,
        "train.images": False,
    }
    vaekit.train(vaekit.load_config(None, overrides), out, log=lambda *_: None)
    return out


def nll(run: Path, x: torch.Tensor, k: int) -> torch.Tensor:
    """−log p(x) per image (IWAE with k samples), seeded, (N,) float64."""
    model = load_run(run)
    parts = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for start in range(0, len(x), 50):
            parts.append(-iwae_log_likelihood(model, x[start : start + 50], k=k).double())
    return torch.cat(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-flows")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--test", type=int, default=1000, help="first N test images")
    p.add_argument("--k", type=int, default=1000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    res = {"protocol": vars(args)}
    runs = {}
    for posterior in ("gaussian", "iaf"):
        t0 = time.perf_counter()
        runs[posterior] = train(posterior, out / posterior, args)
        rows = [json.loads(r) for r in (runs[posterior] / "metrics.jsonl").read_text().splitlines()]
        res[posterior] = {
            "train_seconds": round(time.perf_counter() - t0, 1),
            "test_elbo_full": rows[-1]["test_elbo"],
            "step_seconds_per_epoch": round(rows[-1]["step_time_s"] / len(rows), 2),
        }
    model = load_run(runs["gaussian"])
    cfg = model.run_config
    ds = vaekit.load_dataset("mnist")
    from vaekit.data import DataPrep

    x = DataPrep(model.likelihood, cfg.data.binarize).fixed(ds.test, cfg.data.eval_seed)
    x = x[: args.test]
    nlls = {}
    for posterior, run in runs.items():
        t0 = time.perf_counter()
        nlls[posterior] = nll(run, x, args.k)
        m = load_run(run)
        res[posterior].update(
            nll=float(nlls[posterior].mean()),
            nll_stderr=float(nlls[posterior].std() / math.sqrt(len(x))),
            iwae_seconds=round(time.perf_counter() - t0, 1),
            active_units=int((kl_by_dim(m, x) > 0.01).sum()),
        )
    diff = nlls["iaf"] - nlls["gaussian"]
    res["paired_nll_difference_iaf_minus_gaussian"] = {
        "mean": float(diff.mean()),
        "stderr": float(diff.std() / math.sqrt(len(diff))),
        "n": len(diff),
        "k": args.k,
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
