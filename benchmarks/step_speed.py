"""Training-step speed: eager fp32 vs ``--compile`` vs bf16 autocast, side by side in one process.

MLP 784-400-20, Bernoulli, dynamically binarized MNIST, fused Adam: the step of ``vaekit train``
(batch → binarize → objective → backward → Adam), built by ``vaekit.run.setup`` exactly as a run
builds it. Variants:

- ``eager``: today's fp32 step;
- ``compile``: ``train.compile`` (the whole objective compiled by ``torch.compile``, inductor);
- ``compile_modules``: the encoder and decoder compiled instead (the previous design);
- ``bf16`` / ``compile_bf16``: the same under bfloat16 autocast.

Every variant is warmed up (compilation excluded), then timed in ``--rounds`` rounds, each round
running every variant for ``--steps`` steps in turn (rotating order), so that the machine's drift
hits all of them alike. Reported: median images/s per variant and the median of the per-round
ratios to eager (the target: ≥ 1.5× at batch 128 with ``--compile``). ``profile``: where eager's
step time goes (torch.profiler self time); matrix products and the fused Adam kernel are single
library kernels that compilation does not speed up, so 1 / (their share) bounds any speed-up a
compiler can give this step (Amdahl). Prints one JSON object.

Usage: python benchmarks/step_speed.py [--threads 2] [--batch-sizes 128 1024] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import torch

import vaekit
from vaekit.devices import autocast
from vaekit.run import setup

VARIANTS = {  # name: (train.compile, compile the modules instead, precision)
    "eager": (False, False, "fp32"),
    "compile": (True, False, "fp32"),
    "compile_modules": (False, True, "fp32"),
    "bf16": (False, False, "bf16"),
    "compile_bf16": (True, False, "bf16"),
}
LIBRARY_KERNELS = ("aten::mm", "aten::addmm", "aten::_fused_adam_")


def make_step(ds, batch_size: int, threads: int, variant: str):
    """A closure running one optimizer step of the run ``variant`` describes."""
    compile_, modules, precision = VARIANTS[variant]
    cfg = vaekit.load_config(
        None,
        {
            "data.dataset": "mnist",
            "model.hidden": [400],
            "model.latent_dim": 20,
            "train.batch_size": batch_size,
            "train.threads": threads,
            "train.compile": compile_,
            "train.precision": precision,
        },
    )
    run = setup(cfg, tempfile.mkdtemp(), dataset=ds, log=lambda *_: None)
    if modules:
        run.model.encoder.compile()
        run.model.decoder.compile()
    amp = autocast(run.device, precision)
    n, step = len(ds.train), [0]

    def one_step() -> None:
        idx = torch.randint(0, n, (batch_size,), generator=run.gen)
        x = run.prep(ds.train[idx], run.gen)
        with amp:
            res = run.objective(run.model, x, None, step=step[0])
        run.optimizer.zero_grad(set_to_none=True)
        res.loss.backward()
        run.optimizer.step()
        res.metrics()  # the loop's one host sync per step
        step[0] += 1

    return one_step


def kernel_share(one_step, steps: int) -> dict:
    """Share of eager's self CPU time in matrix products and the fused Adam kernel."""
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(steps):
            one_step()
    times = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(times.values())
    share = {k: round(times.get(k, 0) / total, 3) for k in LIBRARY_KERNELS}
    fixed = sum(share.values())
    return {"self_time_share": share, "compile_speedup_bound": round(1 / fixed, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--images", type=int, default=25600, help="images per variant per round")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = vaekit.load_dataset("mnist")
    out = {
        "benchmark": "step_speed",
        "model": "MLP 784-400-20, Bernoulli, fused Adam",
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "results": {},
    }
    for bs in args.batch_sizes:
        steps = max(args.images // bs, 10)
        fns, warm = {}, {}
        for v in args.variants:
            fns[v] = make_step(ds, bs, args.threads, v)
            t0 = time.perf_counter()
            for _ in range(20):  # compilation (and its recompile for a dynamic step) happens here
                fns[v]()
            warm[v] = round(time.perf_counter() - t0, 1)
        rates = {v: [] for v in fns}
        for r in range(args.rounds):
            order = args.variants[r % len(fns) :] + args.variants[: r % len(fns)]
            for v in order:
                t0 = time.perf_counter()
                for _ in range(steps):
                    fns[v]()
                rates[v].append(steps * bs / (time.perf_counter() - t0))
        eager = rates.get("eager")
        ratios = {
            v: round(statistics.median(a / b for a, b in zip(r, eager, strict=True)), 3)
            for v, r in rates.items()
            if v != "eager" and eager
        }
        out["results"][str(bs)] = {
            "steps_per_round": steps,
            "warmup_seconds_20_steps": warm,
            "images_per_second": {v: round(statistics.median(r)) for v, r in rates.items()},
            "ratio_to_eager": ratios,
            "profile_eager": kernel_share(fns["eager"], steps) if "eager" in fns else None,
        }
    res128 = out["results"].get("128", {}).get("ratio_to_eager", {})
    out["target"] = {"compile_ratio_at_128_at_least": 1.5, "met": res128.get("compile", 0) >= 1.5}
    out["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
