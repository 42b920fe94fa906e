"""PyOD's detectors on one train/test split; run by ``benchmarks/odds.py`` inside its own venv.

This file imports only PyOD, numpy and the standard library: it runs in the separate virtual
environment that ``odds.py`` makes (``benchmarks/pyod-requirements.txt``), never in vaekit's.

Input: an .npz with ``x_train`` and ``x_test`` (rows × features, no labels). Features are
standardized as PyOD's own benchmark (``notebooks/benchmark.py``) does: ``standardizer(X_train,
X_test)``, a z-score fitted on the training rows. Each detector is built with its defaults, except
``random_state=SEED`` where the constructor takes one (as PyOD's benchmark seeds IForest, PCA...)
and ``verbose=0`` (progress output only). ``contamination`` is left at its default: it sets the
label threshold, not ``decision_function``. Each detector is fitted on the training rows and
scores the test rows with ``decision_function`` (higher = more anomalous).

Output on stdout: one JSON object ``{"pyod": version, "torch": version or null, "detectors":
{NAME: {"params": {...}, "seconds": ..., "scores": [...]}}}``, seconds = wall time of construct +
fit + score (the import excluded); a detector that raises or gives non-finite scores gets
``"error"`` instead of ``"scores"``. Whatever the detectors print goes to stderr.

Usage: python pyod_worker.py SPLIT.npz --detectors VAE,ECOD --seed 0 [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import sys
import time
import warnings

import numpy as np

# name → (module, class): PyOD's import paths.
DETECTORS = {
    "VAE": ("pyod.models.vae", "VAE"),
    "AutoEncoder": ("pyod.models.auto_encoder", "AutoEncoder"),
    "ECOD": ("pyod.models.ecod", "ECOD"),
    "COPOD": ("pyod.models.copod", "COPOD"),
    "IForest": ("pyod.models.iforest", "IForest"),
    "KNN": ("pyod.models.knn", "KNN"),
    "LOF": ("pyod.models.lof", "LOF"),
    "HBOS": ("pyod.models.hbos", "HBOS"),
    "PCA": ("pyod.models.pca", "PCA"),
    "OCSVM": ("pyod.models.ocsvm", "OCSVM"),
}


def detector_class(name: str):
    module, cls = DETECTORS[name]
    return getattr(importlib.import_module(module), cls)


def build(detector_cls, seed: int):
    accepted = inspect.signature(detector_cls.__init__).parameters
    kwargs = {}
    if "random_state" in accepted:
        kwargs["random_state"] = seed
    if "verbose" in accepted:
        kwargs["verbose"] = 0
    return detector_cls(**kwargs), kwargs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("split", help=".npz with x_train and x_test")
    p.add_argument("--detectors", default=",".join(list(DETECTORS)[:7]))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    names = [n for n in args.detectors.split(",") if n]
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        p.error(f"unknown detector(s) {unknown}; known: {', '.join(DETECTORS)}")

    import pyod
    from pyod.utils.utility import standardizer

    try:
        import torch

        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None

    with np.load(args.split) as f:
        x_train, x_test = f["x_train"].astype(np.float64), f["x_test"].astype(np.float64)
    x_train, x_test = standardizer(x_train, x_test)

    out: dict = {"pyod": pyod.__version__, "torch": torch_version, "detectors": {}}
    warnings.filterwarnings("ignore")
    for name in names:
        entry: dict = {}
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                detector_cls = detector_class(name)  # the import is not timed
                t0 = time.perf_counter()
                detector, entry["params"] = build(detector_cls, args.seed)
                detector.fit(x_train)
                scores = np.asarray(detector.decision_function(x_test), dtype=np.float64)
            if not np.isfinite(scores).all():
                raise ValueError(f"{int((~np.isfinite(scores)).sum())} non-finite scores")
            entry["scores"] = scores.tolist()
        except Exception as e:  # reported, not fatal: the other detectors still run
            entry["error"] = f"{type(e).__name__}: {e}"
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        out["detectors"][name] = entry
        print(
            f"{name}: {entry['seconds']:.1f} s {entry.get('error', '')}",
            file=sys.stderr,
            flush=True,
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
