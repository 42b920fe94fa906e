"""Speed: `vaekit train` vs a plain PyTorch loop, side by side in one run (issue 2 target ≥ 1.0×).

MLP 784-400-20, Bernoulli, batch 128, fp32, MNIST in memory. ``vaekit_images_per_s`` times the
whole `train()` call after the data are loaded: it includes the per-epoch test ELBO, metrics,
TensorBoard and checkpoint writing, which the plain loop does not do. ``*_steps_only`` times its
optimizer steps alone (batch preparation, forward, backward, clipping, Adam), like the plain
loop's timer. Runs alternate (plain, vaekit, …); the best of ``--repeats`` is reported for each.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from plain_loop import run_plain  # noqa: E402

import vaekit  # noqa: E402
from vaekit import data as data_module  # noqa: E402


def run_vaekit(epochs: int, threads: int, out: Path) -> tuple[float, float]:
    """(images/s of the whole ``train()`` call, images/s of its optimizer steps alone)."""
    cfg = vaekit.load_config(
        None,
        {
            "data.dataset": "mnist",
            "model.hidden": [400],
            "model.latent_dim": 20,
            "train.epochs": epochs,
            "train.batch_size": 128,
            "train.threads": threads,
            "train.eval_every": epochs,
            "train.checkpoint_every": epochs,
            "train.images": False,
        },
    )
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    vaekit.train(cfg, out, log=lambda *_: None)
    elapsed = time.perf_counter() - t0
    n = (60_000 // 128) * 128 * epochs
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return n / elapsed, n / rows[-1]["step_time_s"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = vaekit.load_dataset("mnist")
    cache = data_module.load_dataset
    data_module.load_dataset = lambda *a, **k: ds  # both sides start from data in memory
    import vaekit.train as train_module

    train_module.load_dataset = data_module.load_dataset
    plain, ours, ours_steps = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            plain.append(run_plain(ds.train, args.epochs))
            whole, steps = run_vaekit(args.epochs, args.threads, Path(tmp) / "run")
            ours.append(whole)
            ours_steps.append(steps)
    data_module.load_dataset = cache
    print(
        json.dumps(
            {
                "benchmark": "train_speed_mlp_784_400_20",
                "threads": args.threads,
                "epochs_per_run": args.epochs,
                "repeats": args.repeats,
                "plain_images_per_s": round(max(plain), 1),
                "vaekit_images_per_s": round(max(ours), 1),
                "ratio": round(max(ours) / max(plain), 3),
                "vaekit_steps_only_images_per_s": round(max(ours_steps), 1),
                "ratio_steps_only": round(max(ours_steps) / max(plain), 3),
                "all_plain": [round(v) for v in plain],
                "all_vaekit": [round(v) for v in ours],
                "target_ratio_min": 1.0,
            }
        )
    )


if __name__ == "__main__":
    main()
