"""The explorer under load: concurrent clients sending valid and malformed requests.

    python benchmarks/explore_load.py [--clients 8] [--duration 30] [--items 1000]

A server process (uvicorn on 127.0.0.1, a free port) serves ``create_app`` for the MNIST preset's
MLP VAE, untrained (load needs no trained weights), on the first ``--items`` MNIST test digits
(random binary images where MNIST is absent). ``--clients`` threads, each with its own httpx
client, then send requests for ``--duration`` seconds: about 60 % valid (decode a random code,
interpolate, sample, attribute, item, info, map) and 40 % malformed, one class at a time (bad
JSON, wrong types, wrong code length, NaN, huge numbers, extra fields, unknown routes, wrong
methods, bodies of 3 MB with and without a Content-Length). Prints one JSON object: responses by
status class and by request class, the 5xx count (required: 0), transport errors, p50/p99
latency of the valid requests, and the server's RSS after a 5 s warm-up under the same load (its
thread pool and allocator arenas grown), every 5 s, at the end and its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from explore_latency import _free_port

LATENT = 32  # the MNIST preset's latent_dim
BIG = 3 << 20  # bytes of an oversized body (the explorer accepts 1 MiB)
WARM_UP_S = 5.0  # of load before the RSS baseline is read


def _serve(port: int, items: int) -> None:
    """The server process: build the app and run uvicorn until killed."""
    import torch

    from vaekit.cli.options import config_path
    from vaekit.config import DataInfo, load_config
    from vaekit.explore import create_app, serve
    from vaekit.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_config(config_path("mnist"))
    model = build_model(cfg.model, DataInfo(event_shape=[1, 28, 28], levels=256))
    try:
        from vaekit.data import DataPrep, load_dataset

        ds = load_dataset("mnist", train_limit=items, test_limit=items)
        x = DataPrep(model.likelihood, "dynamic").fixed(ds.test, seed=0)
        labels = ds.test_labels
    except Exception:  # no MNIST here: random digits-shaped binary images
        x = (torch.rand(items, 1, 28, 28) > 0.8).float()
        labels = torch.randint(0, 10, (items,))
    serve(create_app(model, x, labels, name="mnist-untrained"), port=port)


def _valid(rng: random.Random, items: int) -> tuple[str, str, str, dict]:
    """(class, method, path, httpx keyword arguments) of one valid request."""
    kind = rng.choices(
        ["decode", "interpolate", "sample", "attribute", "item", "info", "map"],
        weights=[50, 10, 10, 10, 10, 5, 5],
    )[0]
    if kind == "decode":
        z = [rng.uniform(-3, 3) for _ in range(LATENT)]
        return kind, "POST", "/api/decode", {"json": {"z": z}}
    if kind == "interpolate":
        body = {"a": rng.randrange(items), "b": rng.randrange(items), "steps": 8}
        return kind, "POST", "/api/interpolate", {"json": body}
    if kind == "sample":
        body = {"n": 4, "temperature": rng.uniform(0, 1.5), "seed": rng.randrange(1000)}
        return kind, "POST", "/api/sample", {"json": body}
    if kind == "attribute":
        body = {"item": rng.randrange(items), "alpha": 1.5, "positive": {"labels": [7]}}
        return kind, "POST", "/api/attribute", {"json": body}
    if kind == "item":
        return kind, "GET", f"/api/item/{rng.randrange(items)}", {}
    return kind, "GET", "/api/info" if kind == "info" else "/api/map", {}


JSON = {"content-type": "application/json"}


def _chunks(size: int):
    """A body of ``size`` bytes sent without a Content-Length (chunked)."""
    block = b"0," * (1 << 15)
    for _ in range(size // len(block)):
        yield block


MALFORMED = {
    "bad_json": lambda: ("POST", "/api/decode", {"content": b'{"z": [0, 0,', "headers": JSON}),
    "not_utf8": lambda: ("POST", "/api/decode", {"content": b"\xff\xfe\x00", "headers": JSON}),
    "wrong_type": lambda: ("POST", "/api/decode", {"json": {"z": "zeros"}}),
    "wrong_length": lambda: ("POST", "/api/decode", {"json": {"z": [0.0] * (LATENT - 1)}}),
    "nan": lambda: (
        "POST",
        "/api/decode",
        {"content": b'{"z": [NaN' + b", 0" * (LATENT - 1) + b"]}", "headers": JSON},
    ),
    "huge_float": lambda: ("POST", "/api/decode", {"json": {"z": [1e308] * LATENT}}),
    "huge_int": lambda: (
        "POST",
        "/api/sample",
        {"content": b'{"n": ' + b"9" * 5000 + b"}", "headers": JSON},
    ),
    "out_of_range": lambda: ("POST", "/api/interpolate", {"json": {"a": 0, "b": 10**12}}),
    "extra_field": lambda: ("POST", "/api/sample", {"json": {"n": 2, "evil": True}}),
    "deep_nesting": lambda: (
        "POST",
        "/api/decode",
        {"content": b'{"z": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "headers": JSON},
    ),
    "unknown_route": lambda: ("GET", "/api/nothing-here", {}),
    "wrong_method": lambda: ("GET", "/api/decode", {}),
    "bad_item": lambda: ("GET", "/api/item/not-a-number", {}),
    "oversized": lambda: ("POST", "/api/decode", {"content": b"0" * BIG, "headers": JSON}),
    "oversized_chunked": lambda: ("POST", "/api/decode", {"content": _chunks(BIG)}),
}
RARE = {"oversized", "oversized_chunked", "deep_nesting"}  # heavy for the client: 1 in 4 as often


def _rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _client(url: str, deadline: float, seed: int, items: int, out: list) -> None:
    """One client thread: requests until ``deadline``; appends (class, status, seconds)."""
    import httpx

    rng = random.Random(seed)
    names = list(MALFORMED)
    weights = [1 if n in RARE else 4 for n in names]
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            if rng.random() < 0.6:
                kind, method, path, kw = _valid(rng, items)
                kind = f"valid:{kind}"
            else:
                kind = rng.choices(names, weights)[0]
                method, path, kw = MALFORMED[kind]()
            t0 = time.perf_counter()
            try:
                status = client.request(method, path, **kw).status_code
            except httpx.TransportError as e:  # e.g. the server closed an oversized upload
                status = type(e).__name__
            out.append((kind, status, time.perf_counter() - t0))


def _clients(url: str, seconds: float, n: int, seed: int, items: int, out: list):
    """``n`` client threads started, sending requests for ``seconds``."""
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_client, args=(url, deadline, seed + i, items, out))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    return threads


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the explorer server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/info", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the explorer server did not start")
        time.sleep(0.2)


def run_load(clients: int = 8, duration: float = 30.0, items: int = 1000, seed: int = 0) -> dict:
    """Start the server, load it for ``duration`` seconds with ``clients`` threads, stop it;
    the figures (see the module doc)."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, __file__, "--serve", str(port), "--items", str(items)]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        for t in _clients(url, WARM_UP_S, clients, seed + 10_000, items, []):  # not counted
            t.join()  # the server's thread pool and allocator arenas grow to their working size
        rss_start = _rss_mb(proc.pid)
        rss_peak = rss_start
        rows: list = []
        t0 = time.monotonic()
        threads = _clients(url, duration, clients, seed, items, rows)
        timeline = [round(rss_start, 1)]  # every 5 s
        while any(t.is_alive() for t in threads):
            rss_peak = max(rss_peak, _rss_mb(proc.pid))
            if time.monotonic() - t0 >= 5 * len(timeline):
                timeline.append(round(_rss_mb(proc.pid), 1))
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        rss_end = _rss_mb(proc.pid)
        alive = proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    rss = {"after_warmup": rss_start, "end": rss_end, "peak": rss_peak, "every_5s": timeline}
    return _summary(rows, clients, duration, elapsed, items, rss, alive)


def _status_class(status) -> str:
    return f"{status // 100}xx" if isinstance(status, int) else "transport_error"


def _summary(rows, clients, duration, elapsed, items, rss: dict, alive: bool) -> dict:
    by_class = Counter(_status_class(s) for _, s, _ in rows)
    per_kind: dict[str, Counter] = {}
    for kind, status, _ in rows:
        per_kind.setdefault(kind, Counter())[str(status)] += 1
    valid_ms = np.array([1000 * dt for kind, s, dt in rows if kind.startswith("valid:")])
    decode_ms = np.array([1000 * dt for kind, s, dt in rows if kind == "valid:decode"])
    valid_ok = sum(1 for kind, s, _ in rows if kind.startswith("valid:") and s == 200)
    n_valid = int(len(valid_ms))
    return {
        "benchmark": "explore_load",
        "model": "MNIST preset MLP VAE (784-512-512-32), untrained",
        "items": items,
        "clients": clients,
        "duration_s": duration,
        "elapsed_s": round(elapsed, 1),
        "requests": len(rows),
        "requests_per_s": round(len(rows) / elapsed, 1),
        "by_status_class": dict(sorted(by_class.items())),
        "server_errors_5xx": by_class.get("5xx", 0),
        "valid_requests": n_valid,
        "valid_answered_200": valid_ok,
        "valid_latency_ms": _quantiles(valid_ms),
        "decode_latency_ms": _quantiles(decode_ms),
        "by_request": {k: dict(sorted(v.items())) for k, v in sorted(per_kind.items())},
        "server_rss_mb": {
            **{k: round(v, 1) for k, v in rss.items() if k != "every_5s"},
            "growth": round(rss["end"] - rss["after_warmup"], 1),
            "every_5s": rss["every_5s"],
        },
        "server_alive_at_end": alive,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
    }


def _quantiles(ms: np.ndarray) -> dict:
    if not len(ms):
        return {}
    return {
        "p50": round(float(np.percentile(ms, 50)), 1),
        "p99": round(float(np.percentile(ms, 99)), 1),
        "max": round(float(ms.max()), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    p.add_argument("--items", type=int, default=1000, help="MNIST test digits served")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        _serve(args.serve, args.items)
        return
    result = run_load(args.clients, args.duration, args.items, args.seed)
    print(json.dumps(result))
    if result["server_errors_5xx"] or not result["server_alive_at_end"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
