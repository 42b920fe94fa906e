"""The deep hierarchical VAE on Olivetti faces: the ``olivetti`` preset, measured.

Trains the preset (``--set KEY=VALUE`` overrides it; ``--run DIR`` evaluates an existing run),
then on the 40 held-out faces (image 9 of every person):

- bits/dim: NLL = −IWAE bound (K importance samples) / (4096 ln 2), and the ELBO;
- reconstruction PSNR of the posterior mean path, E[x | z = mean], beside PCA-32 / PCA-64
  fitted to the same 360 training faces (mean of per-image PSNR, and of the pooled MSE);
- training speed (images/s over the optimizer steps alone), wall and CPU seconds;
- pictures in --img: samples at temperatures 0.6 / 0.8 / 1.0, each beside its nearest training
  face (L2 over the 360 faces and their mirror images), with every group drawn at T and with
  only the top ``--sample-groups`` at T (the rest at their prior means); reconstructions;
  interpolations between held-out faces (all groups, and the top ``--groups`` only); glasses and
  smile vectors from ten named training faces (``docs/latent.md``) applied to held-out people
  (all groups; the top ``--groups`` with the rest at their prior means or their posterior means).

Prints one JSON object. Usage:
    python benchmarks/olivetti_deep.py [--out runs/bench-olivetti-deep] [--k 1000] [--set ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

import vaekit
from vaekit import images
from vaekit.cli.options import config_path, parse_sets
from vaekit.data import DataPrep, load_dataset
from vaekit.latent import (
    apply_attribute,
    attribute_vector,
    decode_groups,
    decode_mean,
    encode,
    group_dims,
    index_mask,
    n_groups_of,
)

# Train-split indices (item j = person j // 9, image j % 9), one face per person (docs/latent.md).
GLASSES = [9, 27, 45, 57, 108, 162, 171, 234, 270, 323]
SMILE = [24, 36, 105, 193, 211, 280, 290, 306, 347, 354]  # persons 2 4 11 21 23 31 32 34 38 39
EDITED = [0, 14, 22, 28]  # held-out faces (test items = persons) without glasses, not smiling
PAIRS = [(0, 7), (14, 34), (22, 4), (28, 11)]  # held-out faces of different people
TEMPERATURES = (0.6, 0.8, 1.0)
ALPHAS = (0.0, 1.0, 2.0, 3.0)


def psnr(x: np.ndarray, y: np.ndarray) -> dict:
    """PSNR (dB, peak 255) of images ``(N, D)``: mean over images, and of the pooled MSE."""
    per = ((x - y) ** 2).mean(1)
    return {
        "mean_db": round(float(np.mean(10 * np.log10(255.0**2 / per))), 2),
        "pooled_db": round(float(10 * math.log10(255.0**2 / per.mean())), 2),
    }


def pca_psnr(train: np.ndarray, test: np.ndarray, k: int) -> dict:
    from sklearn.decomposition import PCA

    pca = PCA(k, random_state=0).fit(train)
    return psnr(test, pca.inverse_transform(pca.transform(test)))


def bpd(nats: float) -> float:
    return nats / (64 * 64 * math.log(2.0))


def train(args) -> tuple[Path, dict]:
    cfg = vaekit.load_config(config_path(args.config), parse_sets(args.set))
    out = Path(args.out)
    t0, c0 = time.perf_counter(), time.process_time()
    vaekit.train(cfg, out, log=lambda *a: print(*a, flush=True) if args.verbose else None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def speed(run: Path) -> dict:
    rows = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if s]
    cfg = json.loads((run / "config.json").read_text())
    last = rows[-1]
    batch = cfg["train"]["batch_size"]
    return {
        "epochs": last["epoch"],
        "steps": last["step"],
        "step_seconds": last["step_time_s"],
        "images_per_second": round(last["step"] * batch / last["step_time_s"], 1),
        "grad_skipped_steps": last["grad_skipped_steps"],
        "nonfinite_steps": last["nonfinite_steps"],
        "train_elbo_bpd_last_epoch": round(bpd(-last["train_bound"]), 4),
    }


def pairs_grid(samples: torch.Tensor, train_unit: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Each sample ``(N, 1, H, W)`` in [0, 1] followed by its nearest face in ``train_unit``."""
    d = torch.cdist(samples.flatten(1), train_unit.flatten(1))  # (N, M)
    dist, idx = d.min(1)
    rms = (dist / math.sqrt(samples[0].numel()) * 255).tolist()
    return torch.stack([samples, train_unit[idx]], 1).flatten(0, 1), rms


@torch.no_grad()
def pictures(model, x_train, x_test, folder: Path, groups: str, sample_groups: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    unit = images._to_unit
    train_unit = unit(model, x_train.float())
    mirrors = torch.cat([train_unit, train_unit.flip(-1)])
    out, info = {}, {}

    rows, nn_rms = [], {}
    for t in TEMPERATURES:  # 8 samples per temperature, each beside its nearest training face
        s = images.samples(model, 8, temperature=t, seed=1)
        grid, rms = pairs_grid(s, mirrors)
        rows.append(grid)
        nn_rms[str(t)] = round(float(np.mean(rms)), 2)
    path = folder / "olivetti-deep-samples.png"
    out["samples"] = str(images.save_png(path, images.grid(torch.cat(rows), nrow=16)))
    rows, nn_top = [], {}
    for t in TEMPERATURES:  # the top groups at t, the groups below at their prior means
        s = images.samples(model, 8, temperature=t, seed=1, n_top=sample_groups)
        grid, rms = pairs_grid(s, mirrors)
        rows.append(grid)
        nn_top[str(t)] = round(float(np.mean(rms)), 2)
    path = folder / "olivetti-deep-samples-top.png"
    out["samples_top"] = str(images.save_png(path, images.grid(torch.cat(rows), nrow=16)))
    info["samples_top_groups"] = sample_groups
    info["sample_top_nearest_train_rms_levels"] = nn_top
    _, test_rms = pairs_grid(unit(model, x_test.float()), mirrors)
    info["sample_nearest_train_rms_levels"] = nn_rms
    info["held_out_nearest_train_rms_levels"] = round(float(np.mean(test_rms)), 2)

    recon = images.reconstructions(model, x_test[:16].float())
    path = folder / "olivetti-deep-reconstructions.png"
    out["reconstructions"] = str(images.save_png(path, images.grid(recon, nrow=8)))

    n_top = n_groups_of(model, groups)
    rows = []
    for top in (None, n_top):  # all groups, then the top n_top (the rest: prior means)
        for a, b in PAIRS:
            rows.append(images.interpolation(model, x_test[a], x_test[b], 8, n_top=top))
    path = folder / "olivetti-deep-interpolation.png"
    out["interpolation"] = str(images.save_png(path, images.grid(torch.cat(rows), nrow=8)))

    z_train, z_test = encode(model, x_train), encode(model, x_test)
    dims = group_dims(model, n_top)
    targets = x_test[EDITED].float()
    for name, named in (("glasses", GLASSES), ("smile", SMILE)):
        pos = index_mask(len(z_train), named)
        blocks = []
        for label, top, lower in (
            ("all groups", None, "prior"),
            (f"top {n_top} groups, lower prior", n_top, "prior"),
            (f"top {n_top} groups, lower posterior", n_top, "posterior"),
        ):
            v = torch.zeros(z_train.shape[1])
            used = dims if top is not None else torch.arange(z_train.shape[1])
            v[used] = attribute_vector(z_train[:, used], pos)
            codes = apply_attribute(z_test[EDITED], v, ALPHAS)  # (A, B, D)
            pics = decode_groups(model, codes, top, x=targets, lower=lower)  # (A, B, …)
            pics = torch.cat([targets[None], pics]).transpose(0, 1)  # (B, 1 + A, …)
            blocks.append(unit(model, pics.flatten(0, 1)))
            info[f"{name}_vector_norm_{label.replace(' ', '_').replace(',', '')}"] = round(
                float(v.norm()), 3
            )
        path = folder / f"olivetti-deep-{name}.png"
        grid = images.grid(torch.cat(blocks), nrow=1 + len(ALPHAS))
        out[name] = str(images.save_png(path, grid))
    return {"pictures": out, **info}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="olivetti", help="preset or YAML (olivetti)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--run", help="evaluate this run directory instead of training")
    p.add_argument("--out", default="runs/bench-olivetti-deep")
    p.add_argument("--k", type=int, default=1000, help="importance samples of the NLL")
    p.add_argument("--img", default="docs/img", help="folder of the pictures")
    p.add_argument("--groups", default="3", help="the restricted edits: top N groups, or top (3)")
    p.add_argument(
        "--sample-groups", type=int, default=2, help="second sample grid: top groups drawn (2)"
    )
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    timing = {}
    if args.run:
        run = Path(args.run)
    else:
        run, timing = train(args)
    model = vaekit.load(run)
    model.eval()
    cfg = model.run_config
    ds = load_dataset("olivetti")
    prep = DataPrep(model.likelihood, "none")
    x_train, x_test = prep.fixed(ds.train), prep.fixed(ds.test)

    t0 = time.perf_counter()
    ev = vaekit.evaluate(model, x_test, k=args.k, batch_size=10, chunk=10, seed=0)
    eval_s = time.perf_counter() - t0
    recon = decode_mean(model, encode(model, x_test)).flatten(1).double().numpy()
    tr = ds.train.flatten(1).double().numpy()
    te = ds.test.flatten(1).double().numpy()
    result = {
        "benchmark": "olivetti_deep",
        "run": str(run),
        "model": {
            k: getattr(cfg.model, k)
            for k in (
                "deep_channels",
                "deep_scales",
                "groups_per_scale",
                "latent_channels",
                "cells",
                "ema",
                "mixture_components",
            )
        },  # fmt: skip
        "parameters": sum(p.numel() for p in model.parameters()),
        "latent_dim": model.latent_dim,
        "latent_groups": model.latent_groups,
        "train": {
            "batch_size": cfg.train.batch_size,
            "threads": cfg.train.threads,
            "augment": cfg.data.augment,
            **timing,
            **speed(run),
            "load_average_1m_at_start": round(load0, 2),
            "cores": os.cpu_count(),
        },
        "test": {
            "n": ev["n"],
            "k": args.k,
            "nll_bpd": round(ev["bpd"], 4) if "bpd" in ev else None,  # --k 0: none
            "nll_stderr_bpd": round(bpd(ev["nll_stderr"]), 4) if "bpd" in ev else None,
            "elbo_bpd": round(ev["elbo_bpd"], 4),
            "nll_nats": round(ev["nll"], 1) if "bpd" in ev else None,
            "kl_nats": round(ev["kl"], 1),
            "kl_per_group_nats_bottom_to_top": [round(v, 1) for v in ev["kl_per_layer"]],
            "eval_seconds": round(eval_s, 1),
        },
        "psnr_test": {
            "deep_posterior_mean": psnr(te, recon),
            "pca32": pca_psnr(tr, te, 32),
            "pca64": pca_psnr(tr, te, 64),
        },
        "targets": {"nll_bpd_at_most": 5.0, "psnr_mean_db_above_pca64": True},
    }
    result.update(pictures(model, x_train, x_test, Path(args.img), args.groups, args.sample_groups))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
