"""ODDS outlier detection: the VAE's −log p(x) score beside IsolationForest and PCA reconstruction
error, on the same splits and seeds.

Protocol: for each data set and seed, one seeded random split (``tabular.split_rows``): the VAE,
IsolationForest and PCA are fitted on the same 60% of the rows, inliers and outliers alike
(unsupervised, contaminated training data; labels never seen), and score the other 40%; ROC AUC and
average precision on those held-out rows. Features are standardized on the training rows (the VAE
does this itself). PCA keeps as many components as the VAE has latent dimensions.
Two VAEs, both linear networks (no hidden layer, a factor-analysis-like model) with latent
min(8, max(2, d/2)) and the −log p(x) score (K importance samples): ``vae_default``, the defaults
of ``vaekit anomaly fit`` (numeric columns Yeo-Johnson transformed, robust fit with λ in [0, 2],
density in original units; ~250 steps, at least 10 epochs), and ``vae_previous``, the former
defaults (no transform, ~1000 steps).
PyOD side by side (``--pyod``, default VAE, AutoEncoder, ECOD, COPOD, IForest, KNN, LOF): the
same raw training and test rows are written to an .npz (no labels) and scored by
``benchmarks/pyod_worker.py`` in a separate virtual environment with a pinned PyOD
(``benchmarks/pyod-requirements.txt``; made under ``--pyod-venv``, default
``benchmarks/.venvs/pyod``, on first use and reused while the requirements file is unchanged).
PyOD is never imported here: it is no vaekit dependency. The worker standardizes as PyOD's own
benchmark does (``pyod.utils.utility.standardizer``: a z-score fitted on the training rows) and
uses each detector's defaults, seeded with ``random_state=SEED`` where it takes one.
Prints one JSON object: per data set the mean ± std over seeds of each metric and method, and the
mean wall seconds of one fit + score (``seconds``; the VAE's includes its K-sample scoring).
Usage: python benchmarks/odds.py [--sets thyroid,cardio,shuttle] [--seeds 0,1,2] [--k 200]
       [--pyod VAE,ECOD,...|none] [--pyod-skip shuttle:VAE,...] [--pyod-venv DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

import vaekit
from vaekit.applications import anomaly_scores
from vaekit.cli.apps import TABLE_DEFAULTS, TABLE_STEPS
from vaekit.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pyod_worker import DETECTORS  # noqa: E402  (names only: the worker imports no PyOD here)

HERE = Path(__file__).resolve().parent
PYOD_REQUIREMENTS = HERE / "pyod-requirements.txt"
PYOD_WORKER = HERE / "pyod_worker.py"
PYOD_DEFAULT = "VAE,AutoEncoder,ECOD,COPOD,IForest,KNN,LOF"
GPU_PACKAGES = ("nvidia-", "triton", "cuda-")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def vae_scores(ds, seed: int, k: int, steps: int) -> tuple[np.ndarray, int]:
    """The −log p(x) scores of ds.test under a VAE with the table defaults, ~``steps`` steps."""
    n_cols = ds.train.shape[1]
    latent = min(8, max(2, n_cols // 2))
    batches = max(len(ds.train) // TABLE_DEFAULTS["train.batch_size"], 1)
    epochs = int(min(400, max(10, np.ceil(steps / batches))))
    cfg = vaekit.load_config(
        None,
        {
            **TABLE_DEFAULTS,
            "model.latent_dim": latent,
            "train.epochs": epochs,
            "train.seed": seed,
            "train.threads": 1,
            "train.eval_every": epochs,
            "train.checkpoint_every": epochs,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = vaekit.train(cfg, tmp, dataset=ds, log=lambda *_: None)
        model = vaekit.load(run)
    return anomaly_scores(model, ds.test, method="nll", k=k, seed=seed).numpy(), latent


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def baselines(ds, seed: int, n_components: int) -> dict[str, tuple[np.ndarray, float]]:
    """IsolationForest and PCA reconstruction error: (test scores, fit + score seconds)."""

    def forest(xtr, xte):
        return -IsolationForest(n_estimators=200, random_state=seed).fit(xtr).score_samples(xte)

    def pca(xtr, xte):
        fitted = PCA(n_components=min(n_components, xtr.shape[1] - 1), random_state=seed)
        fitted.fit(xtr)
        return ((xte - fitted.inverse_transform(fitted.transform(xte))) ** 2).sum(1)

    scaler = StandardScaler().fit(ds.train.numpy())
    xtr, xte = scaler.transform(ds.train.numpy()), scaler.transform(ds.test.numpy())
    return {"isolation_forest": timed(forest, xtr, xte), "pca": timed(pca, xtr, xte)}


def pyod_python(venv: Path) -> tuple[Path, str]:
    """The venv's interpreter and its pinned pyod version; the venv is made on first use.

    Reused while its stamp holds the sha256 of the requirements file. Before installing, pip's
    plan is checked (``--dry-run --report``): any CUDA package or a ``+cu`` torch is refused."""
    python = venv / "bin" / "python"
    stamp = venv / ".vaekit-installed"
    want = hashlib.sha256(PYOD_REQUIREMENTS.read_bytes()).hexdigest()
    if not (python.exists() and stamp.exists() and stamp.read_text().strip() == want):
        log(f"pyod venv: making {venv} from {PYOD_REQUIREMENTS.name} (once; minutes)")
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "plan.json"
            subprocess.run(
                [*pip, "install", "-q", "--dry-run", "--report", str(report)]
                + ["-r", str(PYOD_REQUIREMENTS)],
                check=True,
            )
            plan = {
                i["metadata"]["name"].lower(): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]
            }
        gpu = sorted(n for n in plan if n.startswith(GPU_PACKAGES))
        if gpu or "+cu" in plan.get("torch", ""):
            raise SystemExit(
                f"pyod venv: pip would install a CUDA torch (torch {plan.get('torch')}, "
                f"{', '.join(gpu[:5])}...); make a CPU torch 2.13.0 wheel available to pip "
                f"(PIP_FIND_LINKS or an extra index) and run again"
            )
        subprocess.run([*pip, "install", "-q", "-r", str(PYOD_REQUIREMENTS)], check=True)
        stamp.write_text(want + "\n")
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('pyod'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return python, version


def pyod_scores(
    python: Path, ds, seed: int, detectors: list[str], threads: int
) -> tuple[dict[str, tuple[np.ndarray, float]], dict]:
    """PyOD's test scores and fit + score seconds per detector, from the worker in its venv."""
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split.npz"
        np.savez(split, x_train=ds.train.numpy(), x_test=ds.test.numpy())  # no labels
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": ""}
        cmd = [str(python), str(PYOD_WORKER), str(split), "--seed", str(seed)]
        cmd += ["--detectors", ",".join(detectors), "--threads", str(threads)]
        proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
    res = json.loads(proc.stdout)
    out, errors = {}, {}
    for name, entry in res["detectors"].items():
        if "error" in entry:
            errors[name] = entry["error"]
        else:
            out[f"pyod_{name.lower()}"] = (np.asarray(entry["scores"]), entry["seconds"])
    return out, {"torch": res["torch"], "errors": errors}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sets", default="thyroid,cardio,shuttle")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--k", type=int, default=200, help="importance samples of the VAE score")
    p.add_argument("--steps", type=int, default=TABLE_STEPS, help="VAE optimizer steps (about)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--pyod", default=PYOD_DEFAULT, help="PyOD detectors (pyod_worker.py names) or 'none'"
    )
    p.add_argument(
        "--pyod-skip", default="", help="SET:DETECTOR,... not to run (say why when you cut)"
    )
    p.add_argument("--pyod-venv", type=Path, default=HERE / ".venvs" / "pyod")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    detectors = [] if args.pyod.lower() == "none" else [d for d in args.pyod.split(",") if d]
    skip = {tuple(item.split(":", 1)) for item in args.pyod_skip.split(",") if item}
    known = list(DETECTORS)
    if bad := [d for d in detectors if d not in known]:
        p.error(f"--pyod: unknown detector(s) {bad}; known: {','.join(known)}")
    if bad := [":".join(s) for s in skip if len(s) != 2 or s[1] not in known]:
        p.error(f"--pyod-skip takes SET:DETECTOR,...; not {bad}")
    out: dict = {
        "benchmark": "odds",
        "protocol": "fit on a seeded random 60% of all rows "
        "(contaminated, unlabelled), score the other 40%",
        "seeds": seeds,
        "sets": {},
    }
    python = None
    if detectors:
        python, version = pyod_python(args.pyod_venv)
        out["pyod"] = {
            "version": version,
            "detectors": detectors,
            "skipped": sorted(":".join(s) for s in skip),
            "standardization": "pyod.utils.utility.standardizer (z-score fitted on the "
            "training rows), as PyOD's notebooks/benchmark.py",
            "params": "defaults; random_state=seed where accepted, verbose=0",
        }
    t_all = time.perf_counter()
    for name in args.sets.split(","):
        t0 = time.perf_counter()
        per: dict[str, dict[str, list[float]]] = {}
        notes: dict = {}
        for seed in seeds:
            spec = f"odds:{name}?test=0.4&seed={seed}"
            ds = load_dataset(f"{spec}&transform=yeo-johnson")
            raw = load_dataset(spec)  # the same split, untransformed
            y = ds.test_labels.numpy() == 1
            (scores, latent), t_default = timed(vae_scores, ds, seed, args.k, args.steps)
            (previous, _), t_previous = timed(vae_scores, raw, seed, args.k, 1000)
            methods = {
                "vae_default": (scores, t_default),
                "vae_previous": (previous, t_previous),
                **baselines(raw, seed, latent),
            }
            run_here = [d for d in detectors if (name, d) not in skip]
            if run_here:
                log(f"{name} seed {seed}: PyOD {','.join(run_here)}")
                found, info = pyod_scores(python, raw, seed, run_here, args.threads)
                methods.update(found)
                out["pyod"]["torch"] = info["torch"]
                for det, err in info["errors"].items():
                    notes.setdefault("pyod_errors", {})[f"{det} seed {seed}"] = err
            for method, (s, seconds) in methods.items():
                m = per.setdefault(method, {"roc_auc": [], "average_precision": [], "sec": []})
                m["roc_auc"].append(roc_auc_score(y, s))
                m["average_precision"].append(average_precision_score(y, s))
                m["sec"].append(seconds)
            log(f"{name} seed {seed}: done, {time.perf_counter() - t0:.0f} s")
        out["sets"][name] = {
            "n_test": int(len(ds.test)),
            "outliers_test": int(y.sum()),
            **{
                method: {
                    "roc_auc": f"{np.mean(m['roc_auc']):.4f} ± {np.std(m['roc_auc']):.4f}",
                    "average_precision": f"{np.mean(m['average_precision']):.4f} ± "
                    f"{np.std(m['average_precision']):.4f}",
                    "seconds": round(float(np.mean(m["sec"])), 2),
                    **({"seeds": len(m["sec"])} if len(m["sec"]) != len(seeds) else {}),
                }
                for method, m in per.items()
            },
            **notes,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
