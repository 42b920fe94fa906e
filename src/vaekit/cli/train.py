"""``vaekit train`` and ``vaekit demo``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from .. import images
from ..checkpoint import latest_checkpoint, load_run
from ..config import load_config
from ..distributed import launch
from ..evaluation import evaluate
from ..train import train
from .options import (
    add_train_options,
    config_from_args,
    config_path,
    non_negative_int,
    positive_int,
    split_data,
)

SCHEDULE_KEYS = ("train.epochs", "train.max_steps", "train.time_limit")


def cmd_train(args) -> int:
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch(args.nproc, _without_nproc(args.argv))
    if args.resume:
        schedule = any(getattr(args, k.split(".")[1]) is not None for k in SCHEDULE_KEYS)
        cfg = config_from_args(args) if schedule else None
        run = train(cfg, args.resume, resume=True, data_dir=args.data_dir)
    else:
        cfg = config_from_args(args)
        name = cfg.data.dataset.split(":")[0].split("?")[0]
        out = Path(args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a run directory")
        if ((out / "manifest.json").exists() or latest_checkpoint(out)) and not args.force:
            raise ValueError(
                f"{out} already holds a run; use --resume {out}, another --out, or --force to "
                "overwrite"
            )
        run = train(cfg, out, data_dir=args.data_dir)
    print(f"run directory: {run}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


DEMO_SHOWN = ("elbo", "recon", "kl", "nll", "nll_stderr", "bpd", "active_units", "n", "k")


def cmd_demo(args) -> int:
    """Train the default MNIST config (or continue it), evaluate it, write pictures."""
    out = Path(args.out)
    cfg = load_config(config_path("mnist"), {"train.epochs": args.epochs})
    torch.set_num_threads(cfg.train.threads)
    ckpt = latest_checkpoint(out)
    trainer = json.loads((ckpt / "state/trainer.json").read_text()) if ckpt else None
    if trainer is not None and trainer["epoch"] >= cfg.train.epochs:
        print(f"{out} is already trained; evaluating it")
    else:
        train(cfg, out, resume=trainer is not None, data_dir=args.data_dir)
    model = load_run(out)
    x, _ = split_data(model, args, "test")
    result = evaluate(model, x, k=args.iw_samples)
    (out / f"eval-test-k{args.iw_samples}.json").write_text(json.dumps(result, indent=2) + "\n")
    pics = images.write_run_pictures(model, x, out)
    pics["interpolation"] = images.save_png(
        out / "interpolation.png", images.grid(images.interpolation(model, x[0], x[1], 10), 10)
    )
    print(json.dumps({k: result[k] for k in DEMO_SHOWN if k in result}, indent=2))
    print("pictures:", *[str(p) for p in pics.values()], sep="\n  ")
    print(f"metrics: {out / 'metrics.jsonl'}   TensorBoard: tensorboard --logdir {out / 'tb'}")
    return 0


def register(sub) -> None:
    t = sub.add_parser("train", help="train a VAE into a run directory")
    t.add_argument("--out", help="run directory (default runs/DATASET-TIME)")
    t.add_argument("--resume", metavar="RUN", help="continue an interrupted run exactly")
    t.add_argument("--force", action="store_true", help="overwrite an existing run at --out")
    t.add_argument(
        "--nproc",
        type=positive_int,
        help="data-parallel processes on this machine (torchrun; gloo on CPUs, nccl on CUDA)",
    )
    add_train_options(t)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="train the MNIST preset, evaluate it, write pictures")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--iw-samples", type=non_negative_int, default=1000)
    d.add_argument("--epochs", type=positive_int, help="override the preset's number of epochs")
    d.set_defaults(func=cmd_demo)
