"""``vaekit gradvar``: variance and signal-to-noise ratio of gradient estimators on a run."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..checkpoint import load_run
from ..gradvar import ESTIMATORS, gradient_variance, plot_gradvar
from .options import positive_int, positive_list, split_data


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in ESTIMATORS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown estimator(s) {', '.join(bad) or text!r}; choose from {', '.join(ESTIMATORS)}"
        )
    return names


def cmd_gradvar(args) -> int:
    torch.set_num_threads(args.threads)
    if args.samples < 2 or args.batches < 1:
        raise ValueError("gradvar needs --samples of at least 2 and --batches of at least 1")
    model = load_run(args.run)
    x, _ = split_data(model, args, args.split)
    need = args.batches * args.batch_size
    if len(x) < need:
        raise ValueError(f"the {args.split} split has {len(x)} examples, fewer than {need}")
    batches = [x[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.batches)]
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        log = None if args.json else print
        rows = gradient_variance(model, batches, args.estimators, args.k, args.samples, log)
    result = {
        "run": str(args.run),
        "split": args.split,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "samples": args.samples,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    result.update(_ratios(rows))
    plot = Path(args.output or Path(args.run) / "gradvar.png")
    plot_gradvar(rows, plot)
    (Path(args.run) / "gradvar.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'estimator':>11} {'K':>4} {'mean variance':>14} {'SNR':>9} {'|E g|':>10}")
        for r in rows:
            print(
                f"{r['estimator']:>11} {r['k']:>4} {r['mean_variance']:>14.4g} "
                f"{r['snr']:>9.4g} {r['grad_norm']:>10.4g}"
            )
        print(f"plot: {plot}; table: {Path(args.run) / 'gradvar.json'}")
    return 0


def _ratios(rows: list[dict]) -> dict:
    """Variance ratio score / reparam (when both were measured)."""
    var = {r["estimator"]: r["mean_variance"] for r in rows if r["k"] == 1}
    out = {}
    for name in ("score", "score-mean"):
        if name in var and var.get("reparam"):
            out[f"variance_ratio_{name.replace('-', '_')}_over_reparam"] = (
                var[name] / var["reparam"]
            )
    return out


def register(sub) -> None:
    g = sub.add_parser("gradvar", help="variance and SNR of gradient estimators on a trained run")
    g.add_argument("run")
    g.add_argument(
        "--estimators",
        type=_names,
        default=list(ESTIMATORS),
        help=f"comma-separated, from {','.join(ESTIMATORS)} (default: all)",
    )
    g.add_argument("--k", type=positive_list, default=[1, 10, 100], help="K of the IWAE estimators")
    g.add_argument("--samples", type=positive_int, default=100, help="gradient draws per minibatch")
    g.add_argument("--batches", type=positive_int, default=2, help="minibatches (the same for all)")
    g.add_argument("--batch-size", type=positive_int, default=32)
    g.add_argument("--split", choices=["test", "train"], default="test")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=positive_int, default=1)
    g.add_argument("-o", "--output", help="plot path (default RUN/gradvar.png)")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_gradvar)
