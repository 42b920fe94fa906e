"""``vaekit`` subcommands for applications: ``anomaly fit``, ``anomaly score``, ``denoise``,
``probe`` (see docs/applications.md)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import torch

from .. import images
from ..applications import (
    CORRUPTIONS,
    SCORES,
    AnomalyDetector,
    anomaly_scores,
    corrupt,
    denoise,
    detection_metrics,
    probe,
    psnr,
)
from ..checkpoint import load_run
from ..config import load_config
from ..data import DATASETS, DataPrep, load_dataset
from ..data.tables import TRANSFORMS, TabularSchema, read_table
from ..train import train
from .options import (
    COMMON_OPTIONS,
    config_path,
    fraction,
    parse_sets,
    positive_float,
    positive_int,
    positive_list,
    split_data,
    write_output,
)

__all__ = ["register", "as_spec"]

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".mat": "mat", ".npz": "table"}
# Model defaults for tables when no --config is given: numeric columns Yeo-Johnson transformed
# (robust fit, λ in [0, 2]; the density stays in original units), linear networks (a
# factor-analysis-like VAE with the mixed-type likelihood) trained ~250 steps (at least 10
# epochs). Training data are contaminated: longer fits absorb the anomalies (on ODDS 1000 and
# 3000 steps scored lower than 250). See benchmarks/odds.py and docs/applications.md;
# `--hidden 128,128` gives a nonlinear model for tables with nonlinear structure.
TABLE_DEFAULTS = {"model.hidden": [], "train.batch_size": 128, "train.images": False}
TABLE_STEPS = 250  # default training length for tables: about this many optimizer steps


def as_spec(data: str, transform: str | None = None, **options) -> str:
    """A dataset spec from a spec or a file path (``x.csv`` → ``csv:x.csv``), with table options
    (``label``, ``types``, ``drop``, ``test``) appended when given; ``transform`` only for
    tables and when the spec does not set one."""
    name = data.split(":", 1)[0].split("?", 1)[0].lower()
    if name not in DATASETS or (":" not in data and Path(data).exists()):
        kind = TABLE_SUFFIXES.get(Path(data.split("?", 1)[0]).suffix.lower())
        if kind is None:
            raise ValueError(
                f"{data!r} is neither a dataset spec ({', '.join(DATASETS)}) nor a .csv, .tsv, "
                ".mat or .npz file"
            )
        data = f"{kind}:{data}"
    entry = DATASETS.get(data.split(":", 1)[0].split("?", 1)[0].lower())
    takes_transform = entry is not None and "transform" in entry.options  # the table kinds
    if transform is not None and takes_transform and "transform=" not in data:
        options["transform"] = transform
    extra = "&".join(f"{k}={v}" for k, v in options.items() if v is not None)
    return data + ("&" if "?" in data else "?") + extra if extra else data


# ---- anomaly fit ---------------------------------------------------------------------------------


def _fit_config(args, ds):
    overrides: dict = {"data.dataset": args.spec}
    if ds.schema is not None and args.config is None:
        n_batches = max(len(ds.train) // TABLE_DEFAULTS["train.batch_size"], 1)
        overrides.update(TABLE_DEFAULTS)
        overrides["model.latent_dim"] = min(8, max(2, len(ds.schema["columns"]) // 2))
        overrides["train.epochs"] = int(min(400, max(10, math.ceil(TABLE_STEPS / n_batches))))
    overrides.update(parse_sets(args.set))
    flags = {
        "epochs": "train.epochs",
        "latent_dim": "model.latent_dim",
        "hidden": "model.hidden",
        "batch_size": "train.batch_size",
        "lr": "train.lr",
        "seed": "train.seed",
        "threads": "train.threads",
    }
    overrides.update(
        {k: getattr(args, f) for f, k in flags.items() if getattr(args, f) is not None}
    )
    cfg = load_config(config_path(args.config), overrides)
    if ds.schema is not None and args.config is None:  # long runs of short epochs: log less often
        for key in ("eval_every", "checkpoint_every"):
            if f"train.{key}" not in overrides:
                setattr(cfg.train, key, max(1, cfg.train.epochs // 10))
    return cfg


def _anomaly_labels(values: list[str] | None, labels, schema: dict | None) -> list[int] | None:
    """The label codes meaning "anomaly": given values (text mapped through the label levels),
    else 1 when labels are 0/1, else None (no metrics)."""
    levels = (schema or {}).get("label_levels")
    if values:
        if levels:
            unknown = [v for v in values if v not in levels]
            if unknown:
                raise ValueError(f"--anomaly-label {unknown} not among the labels {levels}")
            return [levels.index(v) for v in values]
        try:
            return [int(v) for v in values]
        except ValueError:
            raise ValueError(f"--anomaly-label must be integer labels, got {values}") from None
    if labels is not None and set(torch.unique(labels).tolist()) <= {0, 1}:
        return [1]
    return None


def cmd_anomaly_fit(args) -> int:
    torch.set_num_threads(args.threads or 1)
    args.spec = as_spec(
        args.data,
        args.transform,
        label=args.labels,
        types=args.types,
        drop=args.drop,
        test=args.test,
    )
    ds = load_dataset(args.spec, args.data_dir)
    cfg = _fit_config(args, ds)
    if cfg.data.train_limit is not None or cfg.data.test_limit is not None:
        ds = load_dataset(
            args.spec,
            args.data_dir,
            train_limit=cfg.data.train_limit,
            test_limit=cfg.data.test_limit,
        )
    out = Path(args.out or f"runs/anomaly-{Path(args.spec.split(':', 1)[-1]).stem.split('?')[0]}")
    if (out / "manifest.json").exists() and not args.force:
        raise ValueError(f"{out} already holds a run; use another --out or --force")
    train(cfg, out, data_dir=args.data_dir, dataset=ds)
    model = load_run(out)
    positive = _anomaly_labels(args.anomaly_label, ds.train_labels, ds.schema)
    parts = {}
    for split in ("train", "test"):
        x, y = split_data(model, argparse.Namespace(data_dir=args.data_dir), split)
        s = anomaly_scores(model, x, method=args.score, k=args.k, seed=args.seed or 0)
        parts[split] = (s.numpy(), None if y is None else y.numpy())
    det_labels = parts["train"][1] if positive is not None else None
    detector = AnomalyDetector.fit(
        parts["train"][0],
        method=args.score,
        k=args.k,
        contamination=args.contamination,
        fpr=None if args.contamination is not None else args.fpr,
        train_is_anomaly=None if det_labels is None else np.isin(det_labels, positive),
        anomaly_labels=positive,
        label=(ds.schema or {}).get("label"),
        label_levels=(ds.schema or {}).get("label_levels"),
        seed=args.seed or 0,
    )
    detector.save(out)
    rows = {s: _row_ids(ds, s, len(parts[s][0])) for s in parts}
    summary = _report(detector, parts, rows, args.output or out / "scores.csv")
    _print(summary, args.json)
    return 0


def _row_ids(ds, split: str, n: int) -> list[int]:
    """Rows of the original table for a table, else positions within the split."""
    rows = (ds.schema or {}).get(f"{split}_rows")
    return list(rows[:n]) if rows is not None else list(range(n))


def _report(detector: AnomalyDetector, parts: dict, rows: dict, path) -> dict:
    """Write one CSV line per row (split, row, score, anomaly[, label]); return the summary."""
    summary = {
        "threshold": detector.threshold,
        "rule": detector.rule,
        "rate": detector.rate,
        "score": detector.method,
        "k": detector.k,
        "scores": str(path),
    }
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "row", "score", "anomaly", "label"])
        for split, (s, y) in parts.items():
            flag = s > detector.threshold
            for i, (r, v) in enumerate(zip(rows[split], s, strict=True)):
                w.writerow([split, r, f"{v:.6g}", int(flag[i]), "" if y is None else int(y[i])])
            truth = detector.is_anomaly(y)
            summary[split] = (
                detection_metrics(s, truth, detector.threshold)
                if truth is not None
                else {"n": len(s), "flagged": int(flag.sum())}
            )
    return summary


def _print(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    print(
        f"threshold {summary['threshold']:.4f} ({summary['score']} score, {summary['rule']} "
        f"{summary['rate']}); scores written to {summary['scores']}"
    )
    for split in ("train", "test", "data"):
        if split in summary:
            m = summary[split]
            line = f"{split:>6}: {m['n']} rows, {m['flagged']} flagged"
            if m.get("roc_auc") is not None:
                line += (
                    f", {m['anomalies']} labelled anomalies: ROC AUC {m['roc_auc']:.4f}, "
                    f"average precision {m['average_precision']:.4f}"
                )
            print(line)


# ---- anomaly score -------------------------------------------------------------------------------


def cmd_anomaly_score(args) -> int:
    torch.set_num_threads(args.threads)
    model = load_run(args.run)
    detector = AnomalyDetector.load(args.run)
    cfg = model.run_config
    if cfg.data_info.columns is not None:  # a table run: read DATA with the run's own schema
        schema = TabularSchema.from_dict(
            {
                "columns": cfg.data_info.columns,
                "label": detector.label,
                "label_levels": detector.label_levels,
            }
        )
        x, y = schema.encode(read_table(args.data), unseen=args.unseen)
        rows = list(range(len(x)))
        split = "data"
    else:
        ds = load_dataset(as_spec(args.data), args.data_dir)
        split = args.split
        raw, y = (ds.test, ds.test_labels) if split == "test" else (ds.train, ds.train_labels)
        x = DataPrep(model.likelihood, cfg.data.binarize).fixed(raw, cfg.data.eval_seed)
        rows = list(range(len(x)))
    s = anomaly_scores(
        model, x, method=detector.method, k=args.k or detector.k, seed=detector.seed
    ).numpy()
    parts = {split: (s, None if y is None else y.numpy())}
    _print(_report(detector, parts, {split: rows}, args.output), args.json)
    return 0


# ---- denoise -------------------------------------------------------------------------------------


def _peak(model) -> float:
    """The data value that feeds the encoder as 1.0 (1 for binary/continuous, 255 for levels)."""
    one = torch.ones(1, *model.event_shape)
    return float(1.0 / model.likelihood.encoder_input(one).flatten()[0])


def _load_npy(path: str, model, what: str) -> torch.Tensor:
    arr = np.load(path, allow_pickle=False)
    if arr.shape == tuple(model.event_shape):
        arr = arr[None]
    if arr.shape[1:] != tuple(model.event_shape):
        raise ValueError(f"{what} {path} has shape {arr.shape}; expected (N, {model.event_shape})")
    return torch.from_numpy(arr)


def _noise(text: str) -> tuple[str, float]:
    kind, _, level = text.partition(":")
    if kind not in CORRUPTIONS or not level:
        raise argparse.ArgumentTypeError(
            f"expected KIND:LEVEL with KIND in {sorted(CORRUPTIONS)}, e.g. gaussian:0.3"
        )
    return kind, float(level)


def cmd_denoise(args) -> int:
    model = load_run(args.run)
    if not images.is_image(model.event_shape):
        raise ValueError(f"denoise works on images; this run's data have shape {model.event_shape}")
    peak = _peak(model)
    clean = None
    if args.input in ("test", "train"):
        if args.noise is None:
            raise ValueError("with the run's own split as INPUT, give --noise KIND:LEVEL")
        clean = split_data(
            model, argparse.Namespace(data_dir=args.data_dir, limit=args.n), args.input
        )[0]
        noisy, observed = corrupt(clean, *args.noise, seed=args.seed, peak=peak)
    else:
        noisy = _load_npy(args.input, model, "input").float()
        observed = None
        if args.noise is not None:
            noisy, observed = corrupt(noisy, *args.noise, seed=args.seed, peak=peak)
        if args.clean:
            clean = _load_npy(args.clean, model, "clean data").float()
    if args.mask:
        observed = _load_npy(args.mask, model, "mask") != 0
    use_mask = args.method == "infer" or (
        args.method is None and observed is not None and not bool(observed.all())
    )
    if use_mask and observed is None:
        raise ValueError("--method infer needs a mask (--mask FILE.npy or --noise block:LEVEL)")
    out = denoise(model, noisy, observed if use_mask else None, steps=args.steps, seed=args.seed)
    result = {"n": len(out), "method": "infer" if use_mask else "mean"}
    if clean is not None:
        if clean.shape != noisy.shape:
            raise ValueError(
                f"clean data {tuple(clean.shape)} differ from input {tuple(noisy.shape)}"
            )
        result["psnr_input"] = float(psnr(noisy, clean, peak=peak).clamp_max(100).mean())
        result["psnr_denoised"] = float(psnr(out, clean, peak=peak).clamp_max(100).mean())
    if args.output.endswith(".npy"):
        write_output(args.output, out, None, model)
    else:
        rows = [noisy, out] + ([clean] if clean is not None else [])
        k = min(len(out), 8)
        grid = torch.cat([r[:k].float() / peak for r in rows])
        write_output(args.output, grid, k, model)
    print(json.dumps(result) if args.json else "  ".join(f"{k}: {v}" for k, v in result.items()))
    return 0


# ---- probe ---------------------------------------------------------------------------------------


def cmd_probe(args) -> int:
    torch.set_num_threads(args.threads)
    model = load_run(args.run)
    ns = argparse.Namespace(data_dir=args.data_dir, limit=args.limit)
    x_train, y_train = split_data(model, ns, "train")
    x_test, y_test = split_data(model, ns, "test")
    result = probe(model, x_train, y_train, x_test, y_test, seed=args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"linear probe accuracy {result['probe_accuracy']:.4f}  k-means ARI "
            f"{result['kmeans_ari']:.4f}  ({result['n_train']} train / {result['n_test']} test, "
            f"{result['latent_dim']}-d latents, {result['classes']} classes)"
        )
    return 0


# ---- parser --------------------------------------------------------------------------------------


def register(sub) -> None:
    a = sub.add_parser("anomaly", help="anomaly detection: fit a detector, score new data")
    asub = a.add_subparsers(dest="anomaly_command", required=True)
    f = asub.add_parser(
        "fit",
        parents=[COMMON_OPTIONS],
        help="train a VAE on DATA and set a threshold; score every row",
    )
    f.add_argument("data", help="a dataset spec, or a .csv/.tsv/.mat/.npz table file")
    f.add_argument("--labels", metavar="COL", help="table column of labels (not a feature)")
    f.add_argument(
        "--anomaly-label",
        nargs="+",
        metavar="V",
        help="label value(s) meaning anomaly (default 1 for 0/1 labels)",
    )
    f.add_argument(
        "--types", metavar="COL:KIND,..", help="column types: numeric|binary|categorical"
    )
    f.add_argument("--drop", metavar="COL,..", help="table columns to ignore")
    f.add_argument(
        "--transform",
        choices=list(TRANSFORMS),
        default="yeo-johnson",
        help="transform of numeric table columns before the Gaussian (default yeo-johnson)",
    )
    f.add_argument("--test", type=fraction, help="held-out fraction of a table (default 0.2)")
    f.add_argument(
        "--score",
        choices=sorted(SCORES),
        default="nll",
        help="nll = −log p(x) by importance sampling; elbo = −ELBO; recon",
    )
    f.add_argument("-k", type=positive_int, default=1000, help="importance / Monte-Carlo samples")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--contamination", type=fraction, help="flag this fraction of training rows")
    g.add_argument(
        "--fpr",
        type=fraction,
        default=0.05,
        help="false-positive rate on (normal) training rows (default 0.05)",
    )
    f.add_argument("--out", help="run directory (default runs/anomaly-NAME)")
    f.add_argument("--force", action="store_true", help="overwrite a run at --out")
    f.add_argument("-o", "--output", help="scores CSV (default RUN/scores.csv)")
    f.add_argument("--config", help="a preset or YAML file (default: small tabular model)")
    f.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key")
    f.add_argument("--epochs", type=positive_int)
    f.add_argument("--latent-dim", type=positive_int)
    f.add_argument("--hidden", type=positive_list)
    f.add_argument("--batch-size", type=positive_int)
    f.add_argument("--lr", type=positive_float)
    f.add_argument("--seed", type=int)
    f.add_argument("--threads", type=positive_int)
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=cmd_anomaly_fit)

    s = asub.add_parser(
        "score", parents=[COMMON_OPTIONS], help="score DATA with a fitted run; one CSV line per row"
    )
    s.add_argument("run")
    s.add_argument("data", help="a table file (table runs) or a dataset spec")
    s.add_argument(
        "--split",
        choices=["test", "train"],
        default="test",
        help="which split of a dataset spec (tables: every row)",
    )
    s.add_argument("-k", type=positive_int, help="samples (default: as fitted)")
    s.add_argument(
        "--unseen",
        choices=["missing", "error"],
        default="missing",
        help="a category never seen in training: treat as missing, or fail",
    )
    s.add_argument("-o", "--output", default="scores.csv")
    s.add_argument("--threads", type=positive_int, default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_anomaly_score)

    d = sub.add_parser("denoise", help="reconstruct corrupted images; PSNR against clean ones")
    d.add_argument("run")
    d.add_argument("input", help="'test' or 'train' (the run's split, with --noise), or a .npy")
    d.add_argument(
        "--noise",
        type=_noise,
        metavar="KIND:LEVEL",
        help="corrupt INPUT first: gaussian:STD, salt_pepper:FRACTION, block:SIDE",
    )
    d.add_argument("--clean", help=".npy of clean images (for PSNR)")
    d.add_argument("--mask", help=".npy, nonzero = observed (for --method infer)")
    d.add_argument(
        "--method",
        choices=["mean", "infer"],
        help="posterior-mean reconstruction, or inference ignoring masked pixels "
        "(default: infer when some pixels are masked)",
    )
    d.add_argument("--steps", type=positive_int, default=200, help="optimization steps of infer")
    d.add_argument("-n", type=positive_int, default=500, help="images of the split to use")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-o", "--output", default="denoised.png", help=".png grid or .npy values")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_denoise)

    p = sub.add_parser("probe", help="linear-probe accuracy and k-means ARI of the latents")
    p.add_argument("run")
    p.add_argument("--limit", type=positive_int, help="use the first N examples of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)
