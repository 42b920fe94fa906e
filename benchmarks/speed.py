"""Speed: `vaekit train` vs a plain PyTorch loop, side by side in one run (issue 2 target ≥ 1.0×).

MLP 784-400-20, Bernoulli, batch 128, fp32, MNIST in memory. ``vaekit_images_per_s`` times the
whole `train()` call on the data already in memory: it includes setup, the test ELBO after the
last epoch, metrics, TensorBoard and the checkpoint, which the plain loop does not do.
``*_steps_only`` times its optimizer steps alone (batch preparation, forward, backward, clipping,
Adam), like the plain loop's timer. Runs come in pairs (plain then vaekit, then vaekit then
plain, …, so that a drift of the machine's speed favours neither); reported: the medians over
runs, the median of the pairs' ratios (the target), and every run. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from plain_loop import run_plain  # noqa: E402

import vaekit  # noqa: E402


def run_vaekit(ds, epochs: int, threads: int, out: Path) -> tuple[float, float]:
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
    vaekit.train(cfg, out, log=lambda *_: None, dataset=ds)  # both sides start from memory
    elapsed = time.perf_counter() - t0
    n = (60_000 // 128) * 128 * epochs
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return n / elapsed, n / rows[-1]["step_time_s"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("--repeats", type=int, default=6, help="pairs of runs (plain, vaekit)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = vaekit.load_dataset("mnist")
    plain, ours, ours_steps = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        run_vaekit(ds, 1, args.threads, Path(tmp) / "warmup")  # one-time imports and allocations
        run_plain(ds.train, 1)
        for r in range(args.repeats):
            # ABBA order: a slow drift of the machine's speed does not favour either side
            for side in ("plain", "vaekit") if r % 2 == 0 else ("vaekit", "plain"):
                if side == "plain":
                    plain.append(run_plain(ds.train, args.epochs))
                else:
                    whole, steps = run_vaekit(ds, args.epochs, args.threads, Path(tmp) / "run")
                    ours.append(whole)
                    ours_steps.append(steps)
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    ratios_steps = [o / p for o, p in zip(ours_steps, plain, strict=True)]
    print(
        json.dumps(
            {
                "benchmark": "train_speed_mlp_784_400_20",
                "threads": args.threads,
                "epochs_per_run": args.epochs,
                "pairs": args.repeats,
                "plain_images_per_s": round(statistics.median(plain), 1),
                "vaekit_images_per_s": round(statistics.median(ours), 1),
                "ratio": round(statistics.median(ratios), 3),
                "vaekit_steps_only_images_per_s": round(statistics.median(ours_steps), 1),
                "ratio_steps_only": round(statistics.median(ratios_steps), 3),
                "ratio_of_best_runs": round(max(ours) / max(plain), 3),
                "pair_ratios": [round(v, 3) for v in ratios],
                "all_plain": [round(v) for v in plain],
                "all_vaekit": [round(v) for v in ours],
                "target_ratio_min": 1.0,
                "pass": statistics.median(ratios) >= 1.0,
            }
        )
    )


if __name__ == "__main__":
    main()
