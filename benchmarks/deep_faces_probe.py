"""Probe: the deep hierarchical VAE (``kind: deep``) on Olivetti faces with the logistic mixture.

Trains a small configuration for a wall-clock budget on one thread and reports the training
speed (images/s, optimizer steps only) and the trend of the test bits/dim (ELBO, with the moving
average of the weights, on the 40 held-out faces), then the NLL bits/dim = −IWAE_K / (4096 ln 2).
The schedule follows the elapsed fraction p of the budget: learning rate cosine from --lr to
--lr/10, KL warm-up β = min(1, p / 0.3) with NVAE's KL balancing while β < 1; EMA update after
every step. Prints one JSON object.
Usage: python benchmarks/deep_faces_probe.py [--minutes 4] [--k 64]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from vaekit.config import DataInfo, ModelConfig
from vaekit.data import load_dataset
from vaekit.evaluation import evaluate
from vaekit.models import build_model
from vaekit.objectives import elbo, kl_balanced

OPTIONS = dict(
    deep_channels=[16, 16, 32],  # 64×64 and 32×32 stages: 16 channels; 16×16 and below: 32
    deep_scales=[16, 8, 4],  # latent maps 4×4, 8×8, 16×16
    groups_per_scale=[1, 1, 1],
    latent_channels=8,
    cells=1,
    ema=0.999,
    mixture_components=5,
)


def bpd(nats_per_image: float, dims: int = 64 * 64) -> float:
    return nats_per_image / (dims * math.log(2.0))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=4.0, help="training time (evaluation aside)")
    p.add_argument("--k", type=int, default=64, help="importance samples of the final NLL")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=float, default=30.0, help="seconds of training")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    ds = load_dataset("olivetti")
    x_train, x_test = ds.train.float(), ds.test.float()  # levels 0..255, (N, 1, 64, 64)
    cfg = ModelConfig(kind="deep", likelihood="logistic_mixture", **OPTIONS)
    model = build_model(cfg, DataInfo(event_shape=list(ds.event_shape), levels=256))
    model.check(x_test)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    budget = 60.0 * args.minutes

    def test_bpd() -> float:
        ev = evaluate(model, x_test, k=0, batch_size=40, seed=0)
        model.train()
        return round(bpd(-ev["elbo"]), 4)

    trend = [{"train_s": 0.0, "step": 0, "test_elbo_bpd": test_bpd()}]
    train_s, step, images, skipped = 0.0, 0, 0, 0
    window: list[float] = []
    next_eval = args.eval_every
    model.train()
    while train_s < budget:
        perm = torch.randperm(len(x_train), generator=gen)
        for b in range(len(x_train) // args.batch_size):
            if train_s >= budget:
                break
            t0 = time.perf_counter()
            progress = train_s / budget
            for group in opt.param_groups:
                group["lr"] = args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
            beta = min(1.0, progress / 0.3)
            x = x_train[perm[b * args.batch_size : (b + 1) * args.batch_size]]
            res = kl_balanced(elbo(model, x, beta=beta), model, beta)
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 200.0))
            if math.isfinite(norm) and math.isfinite(float(res.loss.detach())):
                opt.step()
                model.update_ema()
            else:
                skipped += 1
            train_s += time.perf_counter() - t0
            step += 1
            images += len(x)
            window.append(float(res.bound.detach().mean()))
            if train_s >= next_eval:
                trend.append(
                    {
                        "train_s": round(train_s, 1),
                        "step": step,
                        "beta": round(beta, 3),
                        "train_elbo_bpd": round(bpd(-sum(window) / len(window)), 4),
                        "test_elbo_bpd": test_bpd(),
                    }
                )
                window, next_eval = [], next_eval + args.eval_every
    t0 = time.perf_counter()
    ev = evaluate(model, x_test, k=args.k, batch_size=10, seed=0)
    eval_s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "benchmark": "deep_faces_probe",
                "model": "deep hierarchical VAE, logistic mixture",
                "options": OPTIONS,
                "latent_dim": model.latent_dim,
                "latent_groups": model.latent_groups,
                "parameters": n_params,
                "batch_size": args.batch_size,
                "threads": 1,
                "steps": step,
                "epochs": round(images / len(x_train), 2),
                "skipped_steps": skipped,
                "train_seconds": round(train_s, 1),
                "images_per_second": round(images / train_s, 2),
                "trend": trend,
                "final": {
                    "k": args.k,
                    "n_test": ev["n"],
                    "nll_bpd": round(ev["bpd"], 4),
                    "nll_stderr_bpd": round(bpd(ev["nll_stderr"]), 4),
                    "elbo_bpd": round(ev["elbo_bpd"], 4),
                    "kl_nats": round(ev["kl"], 2),
                    "kl_per_group_nats": [round(v, 2) for v in ev["kl_per_layer"]],
                    "active_units": ev["active_units"],
                    "eval_seconds": round(eval_s, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
