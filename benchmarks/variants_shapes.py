"""Disentangling variants on ``shapes``: VAE, β-VAE, β-TCVAE, FactorVAE, DIP-VAE-II, InfoVAE.

Same data, networks, optimizer and number of steps for every variant; only
``objective.penalty`` and its weights change. Per run: MIG, FactorVAE score, DCI, SAP
(``vaekit disentangle``'s ``measure``: ``evaluate_codes`` on fresh factors) and the test
reconstruction E_q log p(x|z) (nats per image). Prints one JSON object: every run and the
mean ± sd over seeds per variant. Resumable: a run whose ``bench.json`` exists is not redone, so
the script can be called again with more seeds.

    nice -n 10 python benchmarks/variants_shapes.py --out runs/bench-variants --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import vaekit
from vaekit.cli.disentangle import measure

DATA = "shapes?n=16000&test=2000"  # a seeded subset of the 737,280 combinations
NET = {
    "model.arch": "mlp",
    "model.hidden": [256, 256],
    "model.latent_dim": 10,
    "model.likelihood": "bernoulli",
}
TRAIN = {
    "train.epochs": 4,  # 250 steps of 64 per epoch: 1,000 optimizer steps
    "train.batch_size": 64,
    "train.lr": 1e-3,
    "train.lr_schedule": "constant",
    "train.threads": 1,
    "train.images": False,
}
VARIANTS = {
    "vae": {},
    "beta-vae": {"objective.beta": 4.0},
    "beta-tcvae": {"objective.penalty": "tc", "objective.beta": 6.0},
    "factorvae": {
        "objective.penalty": "factor",
        "objective.factor_gamma": 35.0,
        "objective.factor_hidden": [256, 256, 256],
    },
    "dip-vae-ii": {"objective.penalty": "dip-ii", "objective.dip_lambda_od": 10.0},
    "infovae": {"objective.penalty": "mmd", "objective.mmd_lambda": 1000.0},
    # diagnostics beside Pythae (which clips no gradients): vaekit's default clip_norm=100 off
    "beta-tcvae-noclip": {"objective.penalty": "tc", "objective.beta": 6.0, "train.clip_norm": 0},
    # ... and Pythae's network choices: PyTorch's default init, σ = exp(½ log σ²)
    "beta-tcvae-pythae-net": {
        "objective.penalty": "tc",
        "objective.beta": 6.0,
        "model.init": "torch",
        "model.scale_head": "exp",
    },
}
DIAGNOSTICS = ("beta-tcvae-noclip", "beta-tcvae-pythae-net")
MAIN = [v for v in VARIANTS if v not in DIAGNOSTICS]  # the table's variants
METRICS = ("mig", "factor_vae", "dci_disentanglement", "dci_completeness", "sap", "recon")
EVAL = {"n": 5000, "n_test": 2000, "votes": 500, "eval_votes": 250}


def run_one(name: str, seed: int, out: Path) -> dict:
    run = out / f"{name}-s{seed}"
    done = run / "bench.json"
    if done.exists():
        return json.loads(done.read_text())
    overrides = {"data.dataset": DATA, **NET, **TRAIN, **VARIANTS[name], "train.seed": seed}
    cfg = vaekit.load_config(None, overrides)
    t0 = time.perf_counter()
    vaekit.train(cfg, run, log=lambda *_: None)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    t1 = time.perf_counter()
    metrics = measure(run, seed=0, pictures=seed == 0, **EVAL)
    res = {
        "variant": name,
        "seed": seed,
        "overrides": VARIANTS[name],
        "train_seconds": round(wall, 1),
        "step_seconds_per_epoch": round(rows[-1]["step_time_s"] / len(rows), 2),
        "metric_seconds": round(time.perf_counter() - t1, 1),
        "recon": rows[-1]["test_recon"],
        "test_elbo": rows[-1]["test_elbo"],
        "active_units": rows[-1]["active_units"],
        **{k: metrics[k] for k in METRICS if k in metrics},
    }
    done.write_text(json.dumps(res, indent=2) + "\n")
    return res


def summarize(results: list[dict]) -> dict:
    """mean ± sd over seeds per variant, for each metric."""
    table = {}
    for name in VARIANTS:
        rows = [r for r in results if r["variant"] == name]
        if not rows:
            continue
        entry = {"seeds": len(rows)}
        for key in (*METRICS, "test_elbo", "step_seconds_per_epoch"):
            values = [r[key] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            entry[key] = [round(statistics.fmean(values), 4), round(sd, 4)]
        table[name] = entry
    return table


def markdown(table: dict) -> str:
    keys = ("mig", "factor_vae", "dci_disentanglement", "sap", "recon", "test_elbo")
    head = "| variant | seeds | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 2)]
    for name, e in table.items():
        cells = [f"{e[k][0]:.3f} ± {e[k][1]:.3f}" for k in keys]
        lines.append(f"| {name} | {e['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-variants")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=MAIN, choices=list(VARIANTS))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    results = []
    for seed in args.seeds:  # every variant once before the next seed
        for name in args.variants:
            res = run_one(name, seed, out)
            print(json.dumps(res), file=sys.stderr, flush=True)
            results.append(res)
    table = summarize(results)
    report = {
        "data": DATA,
        "networks": NET,
        "training": TRAIN,
        "evaluation": EVAL,
        "runs": results,
        "summary": table,
    }
    print(json.dumps(report, indent=2))
    print(markdown(table), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
