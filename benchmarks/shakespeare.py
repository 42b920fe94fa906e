"""Sequence VAE on Tiny Shakespeare lines (characters) against a plain language model with the
same decoder, at equal training time.

VAE: GRU encoder, autoregressive GRU decoder fed z (initial state and every input), word dropout
0.3 and linear KL warm-up over the first 30% of steps, against posterior collapse. Language
model: the same decoder network with z fixed at 0, trained on −log p(x). Test: the first
--test-limit held-out lines; VAE NLL = −IWAE bound (K samples), LM NLL exact; per token = per
character, <eos> included; KL per sentence must stay clearly above 0 (no collapse). Also prints
sentences decoded greedily from z ~ p(z), and the homotopy between two test lines.
Usage: python benchmarks/shakespeare.py [--minutes 6] [--k 100] [--test-limit 500]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from model_family import budgeted_train, evaluate_run, held_out, rounded

import vaekit
from vaekit import images
from vaekit.data import load_dataset
from vaekit.likelihoods.tokens import AutoregressiveCategorical

DATASET = "shakespeare?level=char"


def vae_config():
    return vaekit.load_config(
        None,
        {
            "data.dataset": DATASET,
            "model.kind": "seqvae",
            "model.arch": "gru",
            "model.hidden": [192],
            "model.embed_dim": 64,
            "model.latent_dim": 32,
            "model.word_dropout": 0.3,
            "train.batch_size": 64,
            "train.lr": 2e-3,
            "train.threads": 1,
        },
    )


def train_language_model(model, seconds: float, batch_size: int, lr: float) -> dict:
    """Train ``model.likelihood.net`` (fresh copy) as p(x) = p(x | z = 0) for ``seconds``."""
    torch.manual_seed(0)
    net = type(model.likelihood.net)(**_init_args(model))
    ds = load_dataset(DATASET)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    t0, steps = time.perf_counter(), 0
    zero = torch.zeros(batch_size, model.latent_dim)
    while time.perf_counter() - t0 < seconds:
        for idx in torch.randperm(len(ds.train), generator=gen).split(batch_size):
            if len(idx) < batch_size or time.perf_counter() - t0 >= seconds:
                break
            dist = AutoregressiveCategorical(zero, net, model.event_shape[0])
            loss = -dist.log_prob(ds.train[idx]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 100.0)
            opt.step()
            steps += 1
    return {"net": net.eval(), "steps": steps, "train_seconds": round(time.perf_counter() - t0, 1)}


def _init_args(model) -> dict:
    c = model.config
    return {
        "vocab_size": len(c.vocab),
        "context_dim": c.latent_dim,
        "embed_dim": c.embed_dim,
        "hidden": c.hidden[0],
        "layers": c.seq_layers,
        "word_dropout": 0.0,
    }


@torch.no_grad()
def lm_nll(net, x, latent_dim: int) -> float:
    """Exact −log p(x) of the language model, summed over ``x``'s rows."""
    total = 0.0
    for xb in x.split(100):
        dist = AutoregressiveCategorical(torch.zeros(len(xb), latent_dim), net, x.shape[1])
        total -= float(dist.log_prob(xb).sum())
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--test-limit", type=int, default=500)
    p.add_argument("--out", default="runs/bench-shakespeare")
    args = p.parse_args()
    run = budgeted_train(vae_config(), args.out, args.minutes, probe_steps=30, warmup_fraction=0.3)
    ev = evaluate_run(run["run"], args.k, args.test_limit)
    model, x, _ = held_out(run["run"], args.test_limit)
    lm = train_language_model(model, run["train_seconds"], 64, 2e-3)
    tokens = float(model.likelihood.n_tokens(x).sum())
    lm_per_token = lm_nll(lm["net"], x, model.latent_dim) / tokens
    gen = torch.Generator().manual_seed(0)
    texts = model.likelihood.texts
    keys = ("nll_per_token", "elbo_per_token", "nll", "elbo", "kl", "active_units")
    print(
        json.dumps(
            {
                "benchmark": "shakespeare_sequence_vae",
                "tokens": "characters (<eos> included)",
                "vae": {
                    **{k: v for k, v in run.items() if k != "run"},
                    "k": args.k,
                    "n_test": ev["n"],
                    **rounded(ev, keys, 4),
                    "kl_per_sentence": round(ev["kl"], 3),
                    "eval_seconds": ev["eval_seconds"],
                },
                "language_model": {
                    "nll_per_token": round(lm_per_token, 4),
                    "steps": lm["steps"],
                    "train_seconds": lm["train_seconds"],
                },
                "vae_minus_lm_nats_per_token": round(ev["nll_per_token"] - lm_per_token, 4),
                "bits_per_char": {
                    "vae": round(ev["nll_per_token"] / math.log(2), 4),
                    "lm": round(lm_per_token / math.log(2), 4),
                },
                "samples_greedy": texts(model.sample(8, mean=True, generator=gen)),
                "reconstructions": list(
                    zip(
                        texts(x[:4]),
                        texts(model.decode(model.encode(x[:4]).mean).mean),
                        strict=True,
                    )
                ),
                "homotopy": texts(images.interpolation(model, x[1], x[6], steps=7)),
            }
        )
    )


if __name__ == "__main__":
    main()
