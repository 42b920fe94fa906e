"""Shared steps of the model-family benchmarks (issue 4): time-budgeted training, test splits.

Not a benchmark itself; imported by hierarchical_vs_single.py, olivetti_conv.py, shakespeare.py
and cvae_mnist.py (run them as ``python benchmarks/NAME.py``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch

import vaekit
from vaekit.data import DataPrep, load_dataset


def budgeted_train(
    cfg,
    out: str | Path,
    minutes: float,
    probe_steps: int = 100,
    warmup_fraction: float = 0.0,
    cap: float = 1.25,
) -> dict:
    """Train ``cfg`` for about ``minutes`` of wall-clock time with a complete lr schedule.

    Probe runs measure the speed (on this machine, now), the epochs are set to fit the budget,
    and ``train.time_limit`` stops the run at ``cap`` × the budget should the machine slow down.
    ``warmup_fraction`` > 0: linear KL warm-up over that fraction of the planned steps.
    Returns the run directory, epochs, steps, and seconds of the real run.
    """
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    ds = load_dataset(cfg.data.dataset, train_limit=cfg.data.train_limit)
    n_batches = max(len(ds.train) // cfg.train.batch_size, 1)
    step_s = _seconds_per_step(cfg, probe_steps) * 1.05  # + per-epoch test ELBO, checkpoints
    cfg.train.epochs = max(1, int(60 * minutes / (step_s * n_batches)))
    cfg.train.time_limit = cap * minutes
    if warmup_fraction > 0:
        cfg.objective.warmup = "linear"
        cfg.objective.warmup_steps = max(1, int(warmup_fraction * cfg.train.epochs * n_batches))
    t0 = time.perf_counter()
    vaekit.train(cfg, out, log=lambda *_: None)
    seconds = time.perf_counter() - t0
    metrics = out / "metrics.jsonl"
    rows = metrics.read_text().splitlines() if metrics.exists() else []
    return {
        "run": out,
        "epochs_planned": cfg.train.epochs,
        "epochs_done": len(rows),
        "train_seconds": round(seconds, 1),
        "probe_step_seconds": round(step_s, 4),
    }


def _seconds_per_step(cfg, steps: int) -> float:
    """Training seconds per step, from two short probe runs (10 and 10 + ``steps`` steps), so
    that loading data and building the model do not count."""
    times = []
    for n in (10, 10 + steps):
        probe = type(cfg).from_dict(cfg.to_dict())
        probe.train.max_steps, probe.train.images = n, False
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            vaekit.train(probe, Path(tmp) / "probe", log=lambda *_: None)
            times.append(time.perf_counter() - t0)
    return max((times[1] - times[0]) / steps, 1e-4)


def held_out(run, limit: int | None = None):
    """(model, x, labels) of a run's test split, prepared as in training's evaluation."""
    model = vaekit.load(run)
    cfg = model.run_config
    ds = load_dataset(cfg.data.dataset, test_limit=limit)
    x = DataPrep(model.likelihood, cfg.data.binarize).fixed(ds.test, cfg.data.eval_seed)
    return model, x, ds.test_labels


def evaluate_run(run, k: int, limit: int | None = None, batch_size: int = 100) -> dict:
    """``vaekit.evaluate`` on a run's test split (labels passed: conditional NLL for a cvae)."""
    model, x, y = held_out(run, limit)
    t0 = time.perf_counter()
    ev = vaekit.evaluate(model, x, k=k, batch_size=batch_size, labels=y)
    ev["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return ev


def rounded(d: dict, keys, digits: int = 3) -> dict:
    return {k: round(d[k], digits) if isinstance(d[k], float) else d[k] for k in keys if k in d}


torch.set_num_threads(1)
