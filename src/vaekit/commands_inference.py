"""``vaekit gradvar`` and the inference options of ``vaekit evaluate`` (``--refine-steps``,
``--ais``) and ``vaekit train`` (``--estimator``, ``--baseline``, ``--warmup``, ``--free-bits``)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from . import cli
from .ais import AIS_INITS, ais_log_likelihood
from .checkpoint import load_run
from .gradvar import ESTIMATORS, gradient_variance, plot_gradvar
from .inference import INITS, amortization_gap

TRAIN_FLAGS = {
    "estimator": "objective.estimator",
    "baseline": "objective.baseline",
    "warmup": "objective.warmup",
    "warmup_steps": "objective.warmup_steps",
    "free_bits": "objective.free_bits",
}


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
    x, _ = cli._split_data(model, args, args.split)
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


def evaluate_inference(model, x, args, result: dict) -> list[str]:
    """The ``vaekit evaluate`` hook: refinement gaps and AIS, added to ``result``."""
    shown = []
    if args.refine_steps:
        result.update(
            amortization_gap(
                model,
                x,
                steps=args.refine_steps,
                lr=args.refine_lr,
                n_samples=args.refine_samples,
                init=args.refine_init,
                batch_size=args.batch_size,
                seed=args.seed,
            )
        )
        if "nll" in result:  # log p(x) ≈ −NLL (IWAE) beside the refined ELBO
            result["approximation_gap"] = -result["nll"] - result["elbo_refined"]
        shown += ["elbo_amortized", "elbo_refined", "amortization_gap", "amortization_gap_stderr"]
        shown += ["approximation_gap"]
    if args.ais:
        result.update(_ais(model, x, args, result))
        shown += ["ais_nll", "ais_nll_stderr", "ais_minus_iwae", "ais_minus_iwae_stderr"]
    return shown


def _ais(model, x, args, result: dict) -> dict:
    """AIS log p(x) over ``x`` (seeded): mean NLL ± stderr, and paired with IWAE when present."""
    from .evaluation import iwae_log_likelihood

    parts, iw, accept = [], [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        for start in range(0, len(x), args.batch_size):
            xb = x[start : start + args.batch_size]
            xb = xb if xb.is_floating_point() else xb.float()
            lp, stats = ais_log_likelihood(
                model,
                xb,
                steps=args.ais_steps,
                chains=args.ais_chains,
                leapfrog=args.ais_leapfrog,
                init=args.ais_init,
            )
            parts.append(lp.double())
            accept.append(stats["accept_rate"])
            if args.iw_samples:
                iw.append(iwae_log_likelihood(model, xb, k=args.iw_samples).double())
    lp = torch.cat(parts)
    n = len(lp)
    out = {
        "ais_nll": float(-lp.mean()),
        "ais_nll_stderr": float(lp.std() / math.sqrt(n)) if n > 1 else math.nan,
        "ais_steps": args.ais_steps,
        "ais_chains": args.ais_chains,
        "ais_leapfrog": args.ais_leapfrog,
        "ais_init": args.ais_init,
        "ais_accept_rate": sum(accept) / len(accept),
    }
    if iw:  # paired with the IWAE estimate of the same examples (its own seeded draws)
        diff = lp - torch.cat(iw)
        out["ais_minus_iwae"] = float(diff.mean())
        out["ais_minus_iwae_stderr"] = float(diff.std() / math.sqrt(n)) if n > 1 else math.nan
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
    g.add_argument("--k", type=cli._int_list, default=[1, 10, 100], help="K of the IWAE estimators")
    g.add_argument("--samples", type=int, default=100, help="gradient draws per minibatch")
    g.add_argument("--batches", type=int, default=2, help="minibatches (the same for all)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--split", choices=["test", "train"], default="test")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("-o", "--output", help="plot path (default RUN/gradvar.png)")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_gradvar)

    e = sub.choices["evaluate"]
    e.add_argument("--refine-steps", type=int, default=0, help="optimize each q(z|x) N steps: gaps")
    e.add_argument("--refine-init", choices=INITS, default="encoder", help="start of refinement")
    e.add_argument("--refine-lr", type=float, default=0.02)
    e.add_argument("--refine-samples", type=int, default=8, help="z draws per refinement step")
    e.add_argument("--ais", action="store_true", help="AIS (HMC) estimate of log p(x) as well")
    e.add_argument("--ais-steps", type=int, default=500, help="intermediate distributions")
    e.add_argument("--ais-chains", type=int, default=16)
    e.add_argument("--ais-leapfrog", type=int, default=10)
    e.add_argument("--ais-init", choices=AIS_INITS, default="prior")
    hooks = e.get_default("evaluate_hooks") or []
    e.set_defaults(evaluate_hooks=[*hooks, evaluate_inference])

    t = sub.choices["train"]
    t.add_argument("--estimator", choices=["reparam", "score", "stl", "dreg"])
    t.add_argument("--baseline", choices=["none", "mean", "learned"], help="score baseline")
    t.add_argument("--warmup", choices=["none", "linear", "cyclical"], help="KL warm-up of β")
    t.add_argument("--warmup-steps", type=int, help="warm-up length (cyclical: cycle length)")
    t.add_argument("--free-bits", type=float, help="KL floor per latent dimension, nats")
    cli.TRAIN_FLAGS.update(TRAIN_FLAGS)
