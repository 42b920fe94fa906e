"""Speed: `vaekit train` vs a plain PyTorch loop, side by side in one run (issue 2 target ≥ 1.0×).

MLP 784-400-20, Bernoulli, batch 128, fp32, MNIST in memory; the baseline is
``benchmarks/plain_loop.py``. ``vaekit`` times the whole `train()` call on the data already in
memory: setup, the test ELBO after the last epoch, metrics, TensorBoard and the checkpoint, which
the plain loop does not do. ``*_steps_only`` times its optimizer steps alone (batch preparation,
forward, backward, clipping, Adam), like the plain loop's timer.

This VM's speed drifts by ±15 % over seconds, so two ways of pairing runs are offered:

- ``--mode sequential`` (default): pairs of runs one after the other with ``--threads`` each, in
  ABBA order (plain then vaekit, then vaekit then plain, …) so that a drift favours neither side.
- ``--mode concurrent``: both loops at the same time, one process per core, 1 thread each, cores
  swapped every round; both see the same machine at the same moment. The one that finishes first
  leaves the other alone for its last stretch, which pulls the ratio slightly toward 1.

Reported: medians over runs, the median of the pairs' ratios (the target) and every run.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
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
    n = (len(ds.train) // 128) * 128 * epochs
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return n / elapsed, n / rows[-1]["step_time_s"]


def _warm_up(ds, threads: int, out: Path) -> None:
    """One-time costs (imports such as torch._dynamo on the first optimizer, allocator growth)
    paid before any timed run."""
    small = dataclasses.replace(
        ds,
        train=ds.train[:2560],
        train_labels=ds.train_labels[:2560],
        test=ds.test[:500],
        test_labels=ds.test_labels[:500],
    )
    run_vaekit(small, 1, threads, out)
    run_plain(small.train, 1)


def _run(side: str, ds, epochs: int, threads: int, out: Path) -> tuple[float, float | None]:
    if side == "plain":
        return run_plain(ds.train, epochs), None
    return run_vaekit(ds, epochs, threads, out)


def _concurrent_worker(side, core, epochs, barrier, results) -> None:
    try:
        os.sched_setaffinity(0, {core})
        torch.set_num_threads(1)
        ds = vaekit.load_dataset("mnist")
        with tempfile.TemporaryDirectory() as tmp:
            _warm_up(ds, 1, Path(tmp) / "warm")
            barrier.wait(timeout=600)
            results.put((side, _run(side, ds, epochs, 1, Path(tmp) / "run")))
    except Exception as e:  # the parent reports it instead of waiting forever
        barrier.abort()
        results.put((side, f"{type(e).__name__}: {e}"))


def sequential(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    ds = vaekit.load_dataset("mnist")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        _warm_up(ds, args.threads, Path(tmp) / "warm")
        for r in range(args.repeats):
            pair = {}
            for side in ("plain", "vaekit") if r % 2 == 0 else ("vaekit", "plain"):
                pair[side] = _run(side, ds, args.epochs, args.threads, Path(tmp) / "run")
            runs.append(pair)
    return runs


def concurrent(args) -> list[dict]:
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        raise SystemExit("--mode concurrent needs two cores")
    ctx = mp.get_context("spawn")
    runs = []
    for r in range(args.repeats):
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(
                target=_concurrent_worker,
                args=(side, cores[(i + r) % 2], args.epochs, barrier, results),
            )
            for i, side in enumerate(("plain", "vaekit"))
        ]
        for proc in procs:
            proc.start()
        pair = dict(results.get(timeout=3600) for _ in procs)
        for proc in procs:
            proc.join()
        failed = {side: r for side, r in pair.items() if isinstance(r, str)}
        if failed:
            raise SystemExit(f"concurrent run failed: {failed}")
        runs.append(pair)
    return runs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("sequential", "concurrent"), default="sequential")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run")
    p.add_argument("--repeats", type=int, default=8, help="pairs of runs (even: balanced ABBA)")
    p.add_argument("--threads", type=int, default=2, help="sequential mode (concurrent: 1)")
    args = p.parse_args()
    runs = sequential(args) if args.mode == "sequential" else concurrent(args)
    plain = [run["plain"][0] for run in runs]
    ours = [run["vaekit"][0] for run in runs]
    ours_steps = [run["vaekit"][1] for run in runs]
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    ratios_steps = [o / p for o, p in zip(ours_steps, plain, strict=True)]
    print(
        json.dumps(
            {
                "benchmark": "train_speed_mlp_784_400_20",
                "mode": args.mode,
                "threads": args.threads if args.mode == "sequential" else 1,
                "epochs_per_run": args.epochs,
                "pairs": args.repeats,
                "plain_images_per_s": round(statistics.median(plain), 1),
                "vaekit_images_per_s": round(statistics.median(ours), 1),
                "ratio": round(statistics.median(ratios), 3),
                "vaekit_steps_only_images_per_s": round(statistics.median(ours_steps), 1),
                "ratio_steps_only": round(statistics.median(ratios_steps), 3),
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
