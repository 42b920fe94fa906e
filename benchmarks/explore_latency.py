"""Explorer responsiveness: latency of one slider move (decode one code, render a PNG, answer).

    python benchmarks/explore_latency.py [RUN ...] [--requests 300]

Without RUN a small digits run is trained into a temporary folder first. For each run it measures
(1) in-process decode + PNG render of one code and (2) the full HTTP round trip of
``POST /api/decode`` against a uvicorn server on 127.0.0.1 (one client, sequential requests, codes
drawn uniformly in the sliders' range [-3, 3]). A hierarchical model's slider move is measured as
the page makes it: item 0's code with the slider dimensions redrawn, sent with ``item: 0``;
``--groups`` is the explorer's option (default all: one top-down pass over the whole code; N: the
top N groups kept and the groups below at their prior means). Prints one JSON object:
p50/p95/mean in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p95": round(float(np.percentile(a, 95)), 2),
        "mean": round(float(a.mean()), 2),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _info(app) -> dict:
    """/api/info of the app, in process."""
    from fastapi.testclient import TestClient

    return TestClient(app).get("/api/info").json()


def measure(run: Path, n_requests: int, data_dir: str | None, groups: str = "all") -> dict:
    import httpx
    import uvicorn

    from vaekit.checkpoint import load_run
    from vaekit.cli.options import split_data as _split_data
    from vaekit.explore import create_app, render
    from vaekit.latent import decode_groups, encode, n_groups_of

    model = load_run(run)
    x, labels = _split_data(model, argparse.Namespace(data_dir=data_dir, limit=1000), "test")
    groups = groups if groups in ("top", "all") else int(groups)
    app = create_app(model, x, labels, name=run.name, groups=groups)
    gen = torch.Generator().manual_seed(0)
    hierarchical = model.n_groups > 1
    n_top = n_groups_of(model, groups)
    if hierarchical:  # item 0's code, its slider dims (the top groups' most used) redrawn
        sliders = torch.tensor(_info(app)["sliders"])
        base = encode(model, x[:1])[0]
        codes = base.expand(n_requests, -1).clone()
        codes[:, sliders] = torch.rand(n_requests, len(sliders), generator=gen) * 6 - 3
        codes = codes.tolist()
    else:
        codes = (torch.rand(n_requests, model.latent_dim, generator=gen) * 6 - 3).tolist()
    item = 0 if hierarchical else None

    local = []
    for z in codes:
        t0 = time.perf_counter()
        render(model, decode_groups(model, torch.tensor([z]), n_top, lower="prior"))
        local.append(1000 * (time.perf_counter() - t0))

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    http = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for z in codes[:10]:  # warm-up
                client.post("/api/decode", json={"z": z, "item": item}).raise_for_status()
            for z in codes:
                t0 = time.perf_counter()
                client.post("/api/decode", json={"z": z, "item": item}).raise_for_status()
                http.append(1000 * (time.perf_counter() - t0))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return {
        "run": str(run),
        "dataset": model.run_config.data.dataset,
        "arch": model.run_config.model.arch,
        "event_shape": list(model.event_shape),
        "latent_dim": model.latent_dim,
        "latent_groups": model.latent_groups,
        "slider_move": f"item 0's code, groups {groups}" if hierarchical else "a whole code",
        "requests": n_requests,
        "decode_render_ms": _percentiles(local),
        "http_round_trip_ms": _percentiles(http),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--data-dir")
    p.add_argument("--groups", default="all", help="the explorer's --groups (all)")
    args = p.parse_args()
    torch.set_num_threads(1)
    runs = list(args.runs)
    tmp = None
    if not runs:
        from vaekit.cli import main as vaekit

        tmp = tempfile.TemporaryDirectory()
        out = Path(tmp.name) / "digits"
        argv = ["train", "--dataset", "digits", "--hidden", "128", "--latent-dim", "8"]
        argv += ["--epochs", "5", "--no-images", "--out", str(out)]
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull
            try:
                vaekit(argv)
            finally:
                sys.stdout = stdout
        runs = [out]
    results = [measure(r, args.requests, args.data_dir, args.groups) for r in runs]
    print(
        json.dumps(
            {
                "benchmark": "explore_latency",
                "torch_threads": 1,
                "load_average_1m": round(os.getloadavg()[0], 2),
                "cores": os.cpu_count(),
                "results": results,
            }
        )
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
