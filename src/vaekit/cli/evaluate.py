"""``vaekit evaluate``: ELBO terms, NLL = −IWAE bound ± standard error, bits/dim, active units;
with ``--refine-steps`` the amortization and approximation gaps, with ``--ais`` an AIS estimate.

Every comparison is paired on the same examples, against the very IWAE values behind the printed
``nll``: approximation gap = mean_i(log p̂(x_i) − ELBO*(x_i)), AIS − IWAE = mean_i(log p̂_AIS(x_i) −
log p̂_IWAE(x_i)), each ± sd/√N of the per-example differences."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..ais import AIS_INITS, ais_log_likelihood
from ..checkpoint import load_run
from ..evaluation import PRECISIONS, as_model_input, evaluate, standard_error
from ..inference import INITS, amortization_gap
from .options import non_negative_int, positive_int, split_data

SHOWN = ["elbo", "recon", "kl", "nll", "nll_stderr", "bpd", "active_units", "n", "k"]
SHOWN += ["psnr", "code_nll", "bits_per_code", "uniform_bits_per_code", "codes_used"]  # vqvae


def cmd_evaluate(args) -> int:
    torch.set_num_threads(args.threads)
    model = load_run(args.run)
    x, y = split_data(model, args, args.split)
    t0 = time.perf_counter()
    result = evaluate(
        model,
        x,
        k=args.iw_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        labels=y,
        precision=args.precision,
        per_example=True,
    )
    log_px = result.pop("per_example")["log_px"]  # (N,) the IWAE values behind ``nll``
    result["precision"] = args.precision
    shown = SHOWN + evaluate_inference(model, x, args, result, log_px)
    result["split"] = args.split
    result["seconds"] = round(time.perf_counter() - t0, 2)
    out = Path(args.run) / f"eval-{args.split}-k{args.iw_samples}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        for key in shown:
            if key in result:
                v = result[key]
                print(f"{key:>13}: {v:.4f}" if isinstance(v, float) else f"{key:>13}: {v}")
        print(f"(nats per example; written to {out})")
    return 0


def evaluate_inference(model, x, args, result: dict, log_px=None) -> list[str]:
    """The ``vaekit evaluate`` hook: refinement gaps and AIS, added to ``result``; ``log_px``
    ``(N,)`` are the per-example IWAE estimates behind ``result["nll"]`` (None: no IWAE)."""
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
                log_px=log_px,  # the approximation gap, paired with the printed nll's values
                check=False,  # evaluate checked x
            )
        )
        shown += ["elbo_amortized", "elbo_refined", "amortization_gap", "amortization_gap_stderr"]
        shown += ["approximation_gap", "approximation_gap_stderr"]
    if args.ais:
        result.update(_ais(model, x, args, log_px))
        shown += ["ais_nll", "ais_nll_stderr", "ais_minus_iwae", "ais_minus_iwae_stderr"]
    return shown


def _ais(model, x, args, log_px=None) -> dict:
    """AIS log p(x) over ``x`` (seeded): mean NLL ± stderr, and paired with the IWAE values
    ``log_px`` of the same examples (those behind the printed ``nll``) when given."""
    parts, accept = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        for start in range(0, len(x), args.batch_size):
            xb = as_model_input(model, x[start : start + args.batch_size])
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
    lp = torch.cat(parts)
    out = {
        "ais_nll": float(-lp.mean()),
        "ais_nll_stderr": standard_error(lp),
        "ais_steps": args.ais_steps,
        "ais_chains": args.ais_chains,
        "ais_leapfrog": args.ais_leapfrog,
        "ais_init": args.ais_init,
        "ais_accept_rate": sum(accept) / len(accept),
    }
    if log_px is not None:  # paired with the IWAE values behind ``nll``, example by example
        diff = lp - log_px.double()
        out["ais_minus_iwae"] = float(diff.mean())
        out["ais_minus_iwae_stderr"] = standard_error(diff)
    return out


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="ELBO, IWAE NLL ± stderr, bits/dim, active units")
    e.add_argument("run")
    e.add_argument(
        "--iw-samples", type=non_negative_int, default=1000, help="K importance samples (0: skip)"
    )
    e.add_argument("--split", choices=["test", "train"], default="test")
    e.add_argument("--limit", type=positive_int, help="evaluate the first N examples only")
    e.add_argument("--batch-size", type=positive_int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=positive_int, default=1)
    e.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="decoder matmuls of the IWAE estimate in bfloat16: faster, slightly less exact",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument(
        "--refine-steps", type=non_negative_int, default=0, help="optimize each q(z|x) N steps"
    )
    e.add_argument("--refine-init", choices=INITS, default="encoder", help="start of refinement")
    e.add_argument("--refine-lr", type=float, default=0.02)
    e.add_argument("--refine-samples", type=positive_int, default=8, help="z draws per step")
    e.add_argument("--ais", action="store_true", help="AIS (HMC) estimate of log p(x) as well")
    e.add_argument("--ais-steps", type=positive_int, default=500, help="intermediate distributions")
    e.add_argument("--ais-chains", type=positive_int, default=16)
    e.add_argument("--ais-leapfrog", type=positive_int, default=10)
    e.add_argument("--ais-init", choices=AIS_INITS, default="prior")
    e.set_defaults(func=cmd_evaluate)
