"""Data-parallel training on this machine: 2 processes × 1 thread (gloo, ``--nproc 2``) against
1 process × 2 threads, on the MNIST preset's model for a fixed number of steps; images/s of each
(their optimizer steps alone, from metrics.jsonl's step_time_s, and the whole run's wall time),
and the equivalence error: max |θ_ddp − θ_one| against one process with the same 2 micro-batches.

    python benchmarks/ddp.py --steps 400      # prints one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def _train(out: Path, steps: int, *extra: str) -> dict:
    argv = [sys.executable, "-m", "vaekit", "train", "--config", "mnist", "--no-images"]
    argv += ["--max-steps", str(steps), "--epochs", "60", "--out", str(out), *extra]
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo")
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    trainer = json.loads((sorted((out / "ckpt").glob("0*"))[-1] / "state/trainer.json").read_text())
    return {"wall_s": round(wall, 1), "steps": trainer["step"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args()
    batch = 128
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = _train(tmp / "one", args.steps, "--threads", "2")
        ddp = _train(tmp / "ddp", args.steps, "--threads", "1", "--nproc", "2")
        ref = _train(tmp / "ref", args.steps, "--threads", "1", "--set", "train.micro_batches=2")
        a, b = (
            load_file(str(tmp / "ddp/model.safetensors")),
            load_file(str(tmp / "ref/model.safetensors")),
        )
        err = max(float((a[k] - b[k]).abs().max()) for k in a)
    result = {
        "steps": args.steps,
        "batch": batch,
        "one_process_2_threads_images_per_s": round(args.steps * batch / one["wall_s"], 1),
        "two_processes_1_thread_images_per_s": round(args.steps * batch / ddp["wall_s"], 1),
        "wall_s": {
            "one_2_threads": one["wall_s"],
            "ddp_2x1": ddp["wall_s"],
            "one_2_micro": ref["wall_s"],
        },
        "ddp_over_one": round(one["wall_s"] / ddp["wall_s"], 3),
        "max_abs_param_diff_ddp_vs_one_process_same_micro_batches": err,
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
