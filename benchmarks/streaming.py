"""Streaming: random batches sliced from shards on disk vs from the in-memory tensor (MNIST).

Packs MNIST's training images into ``.npy`` shards (``vaekit.shards.pack``), then times slicing
random batches of 128 rows — the trainer's ``ds.train[perm[b:b+128]]`` — from the in-memory
tensor and from the ``ShardedArray``, side by side in one process, in alternating rounds (memory
first in even rounds, shards first in odd ones) so that a drift of the machine favours neither.
The shards are read from the page cache (just written, and verified once before timing); the
sha256 verification and the packing are timed separately.

``--train-rounds R`` (default 4) also trains the ``mnist`` preset for one epoch from memory and
from the shards (``shards:PATH``), R times each in alternating order, and compares the images/s
of their optimizer steps (metrics.jsonl's ``step_time_s``; target: shards ≥ 0.95× memory).

``--big`` also packs an augmented set of at least ``--big-gib`` GiB (each MNIST image shifted by
up to ±7 pixels, one shift per copy of the training set) and reads one epoch of it in random
batches, reporting throughput and resident memory (VmRSS sampled every 256 batches, and VmHWM);
then ``vaekit train`` trains one epoch on it in a fresh process (``--big-model``: a small MLP, so
that the epoch's ~11 M images take minutes) and its peak RSS (the child's ru_maxrss) is reported
beside the data size (target: < 1.5 GiB for ≥ 8 GiB of data).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import vaekit
from vaekit.cli.options import config_path
from vaekit.data import load_dataset
from vaekit.data.shards import load_shards, open_shards, pack


def _status(key: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM, RssAnon, RssFile)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith(key + ":"))


def _images_per_s(x, batches: list[torch.Tensor]) -> float:
    t0 = time.perf_counter()
    for idx in batches:
        x[idx]
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def compare(x_mem: torch.Tensor, x_disk, batch: int, rounds: int, per_round: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    speeds: dict[str, list[float]] = {"memory": [], "shards": []}
    _images_per_s(x_disk, [torch.randperm(len(x_mem), generator=gen)[:batch] for _ in range(50)])
    for r in range(rounds):
        perm = torch.randperm(len(x_mem), generator=gen)
        batches = [perm[i * batch : (i + 1) * batch] for i in range(per_round)]
        order = ("memory", "shards") if r % 2 == 0 else ("shards", "memory")
        for name in order:
            speeds[name].append(_images_per_s(x_mem if name == "memory" else x_disk, batches))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    return {
        "batch": batch,
        "rounds": rounds,
        "batches_per_round": per_round,
        "memory_images_per_s": round(med["memory"]),
        "shards_images_per_s": round(med["shards"]),
        "shards_over_memory": round(med["shards"] / med["memory"], 3),
        "us_per_batch": {k: round(batch / v * 1e6, 1) for k, v in med.items()},
        "per_round_images_per_s": {k: [round(s) for s in v] for k, v in speeds.items()},
    }


class Shifted:
    """``copies`` copies of ``images`` (N, 1, H, W), copy c shifted by its own (dy, dx)."""

    def __init__(self, images: np.ndarray, copies: int):
        self.images, self.copies = images, copies
        self.shape = (len(images) * copies, *images.shape[1:])
        self.dtype = images.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def _shift(self, c: int) -> tuple[int, int]:
        return (c // 15) % 15 - 7, c % 15 - 7

    def __getitem__(self, rows: slice) -> np.ndarray:
        n = len(self.images)
        out = np.empty((rows.stop - rows.start, *self.shape[1:]), self.dtype)
        pos = rows.start
        while pos < rows.stop:
            c, i = divmod(pos, n)
            hi = min(rows.stop, (c + 1) * n)
            dy, dx = self._shift(c)
            out[pos - rows.start : hi - rows.start] = np.roll(
                self.images[i : i + hi - pos], (dy, dx), axis=(2, 3)
            )
            pos = hi
        return out


def big(images: np.ndarray, test: np.ndarray, gib: float, folder: Path, batch: int) -> dict:
    row_bytes = images[0].nbytes
    copies = math.ceil(gib * 2**30 / (row_bytes * len(images)))
    source = Shifted(images, copies)
    t0 = time.perf_counter()
    pack({"train": (source, None), "test": (test, None)}, folder, meta={"name": "mnist-shifted"})
    pack_s = time.perf_counter() - t0
    x = open_shards(folder)[0]["train"][0]
    size = sum(p.stat().st_size for p in x.files)
    t0 = time.perf_counter()
    x.verify()
    verify_s = time.perf_counter() - t0
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    rss0, hwm0 = _status("VmRSS"), _status("VmHWM")
    peak, checked = rss0, 0
    t0 = time.perf_counter()
    for k, b in enumerate(range(0, len(x) - batch + 1, batch)):
        idx = perm[b : b + batch]
        out = x[idx]
        if k % 256 == 0:
            peak = max(peak, _status("VmRSS"))
            if k % 8192 == 0:  # spot-check content against the generator
                i = int(idx[0])
                assert torch.equal(out[0], torch.from_numpy(source[slice(i, i + 1)][0]))
                checked += 1
    epoch_s = time.perf_counter() - t0
    return {
        "rows": len(x),
        "bytes": size,
        "gib": round(size / 2**30, 2),
        "shards": len(x.files),
        "pack_s": round(pack_s, 1),
        "pack_mb_per_s": round(size / pack_s / 1e6),
        "verify_s": round(verify_s, 1),
        "verify_gb_per_s": round(size / verify_s / 1e9, 2),
        "epoch_s": round(epoch_s, 1),
        "epoch_images_per_s": round((len(x) // batch) * batch / epoch_s),
        "rss_before_epoch_mib": round(rss0 / 2**20),
        "rss_peak_during_epoch_mib": round(peak / 2**20),
        "rss_growth_mib": round((peak - rss0) / 2**20),
        "hwm_before_mib": round(hwm0 / 2**20),
        "hwm_after_mib": round(_status("VmHWM") / 2**20),
        "permutation_mib": round(perm.numel() * 8 / 2**20),
        "content_checks": checked,
    }


def _epoch_images_per_s(ds, out: Path) -> float:
    """Images/s of the optimizer steps of one epoch of the ``mnist`` preset on ``ds``."""
    cfg = vaekit.load_config(config_path("mnist"), {"train.epochs": 1, "train.images": False})
    shutil.rmtree(out, ignore_errors=True)
    vaekit.train(cfg, out, log=lambda *_: None, dataset=ds)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return (len(ds.train) // cfg.train.batch_size) * cfg.train.batch_size / row["step_time_s"]


def train_compare(ds_mem, pack_dir: Path, rounds: int, out: Path) -> dict:
    """The preset trained for an epoch from memory and from the pack, alternating."""
    ds_disk = load_dataset(f"shards:{pack_dir}")
    _epoch_images_per_s(ds_mem, out)  # warm-up: imports, allocator
    speeds: dict[str, list[float]] = {"memory": [], "shards": []}
    for r in range(rounds):
        for name in ("memory", "shards") if r % 2 == 0 else ("shards", "memory"):
            speeds[name].append(_epoch_images_per_s(ds_mem if name == "memory" else ds_disk, out))
    ratios = [s / m for s, m in zip(speeds["shards"], speeds["memory"], strict=True)]
    return {
        "preset": "mnist (MLP 784-512-512-32, batch 128, 1 thread)",
        "rounds": rounds,
        "memory_images_per_s": round(statistics.median(speeds["memory"])),
        "shards_images_per_s": round(statistics.median(speeds["shards"])),
        "shards_over_memory_median_of_pairs": round(statistics.median(ratios), 3),
        "pairs": [round(r, 3) for r in ratios],
        "target_at_least": 0.95,
    }


def train_big(folder: Path, out: Path, model: list[str]) -> dict:
    """One epoch of ``vaekit train`` on the big pack in a fresh process: wall time, peak RSS."""
    argv = [sys.executable, "-m", "vaekit", "train", "--dataset", f"shards:{folder}", *model]
    argv += ["--epochs", "1", "--no-images", "--threads", "1", "--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ))
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"big training failed:\n{done.stderr[-2000:]}")
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    # KiB on Linux. An upper bound: a child's maxrss includes its parent's RSS at the fork.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss << 10
    return {
        "argv": " ".join(argv[3:]),
        "wall_s": round(wall, 1),
        "steps": row["step"],
        "images_per_s": round(
            row["step"] * int(model[model.index("--batch-size") + 1]) / row["step_time_s"]
        ),
        "train_bound_last": row.get("train_bound"),
        "test_bound": row.get("test_bound"),
        "peak_rss_mib": round(peak / 2**20),
        "peak_rss_is_upper_bound_including_parent_at_fork": True,
        "target_peak_rss_mib_below": 1536,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="where to write the shards (default: a temporary folder)")
    p.add_argument("--rows-per-shard", type=int, default=8192)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batches-per-round", type=int, default=400)
    p.add_argument("--big", action="store_true", help="also an augmented pack of --big-gib GiB")
    p.add_argument("--big-gib", type=float, default=8.0)
    p.add_argument("--keep", action="store_true", help="keep the shards")
    p.add_argument("--train-rounds", type=int, default=4, help="preset epochs per side (0: none)")
    p.add_argument(
        "--big-model",
        default="--hidden 64 --latent-dim 8 --batch-size 1024",
        help="vaekit train flags of the big epoch ('' : read the epoch only)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(args.dir or tempfile.mkdtemp(prefix="vaekit-streaming-"))
    try:
        ds = load_dataset("mnist")
        t0 = time.perf_counter()
        pack({"train": (ds.train, ds.train_labels), "test": (ds.test, ds.test_labels)},
             root / "mnist", rows_per_shard=args.rows_per_shard, meta={"name": ds.name},
             overwrite=True)  # fmt: skip
        pack_s = time.perf_counter() - t0
        train = load_shards(root / "mnist")[0]
        size = sum(f.stat().st_size for f in train.files)
        t0 = time.perf_counter()
        train.verify()
        verify_s = time.perf_counter() - t0
        assert torch.equal(train[:], ds.train)  # what is timed reads the right bytes
        result = {
            "dataset": "mnist",
            "rows": len(train),
            "row_bytes": ds.train[0].numel(),
            "rows_per_shard": args.rows_per_shard,
            "shards": len(train.files),
            "pack_s": round(pack_s, 3),
            "verify_s": round(verify_s, 3),
            "verify_gb_per_s": round(size / verify_s / 1e9, 2),
            "random_batches": compare(
                ds.train, train, args.batch, args.rounds, args.batches_per_round
            ),
            "train": None,
            "big": None,
        }
        if args.train_rounds:
            result["train"] = train_compare(ds, root / "mnist", args.train_rounds, root / "run")
        if args.big:
            result["big"] = big(
                ds.train.numpy(), ds.test.numpy(), args.big_gib, root / "big", args.batch
            )
            if args.big_model:
                result["big"]["train"] = train_big(
                    root / "big", root / "big-run", args.big_model.split()
                )
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
