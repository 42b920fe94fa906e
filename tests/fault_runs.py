"""Faults injected into a tiny digits run (shared by tests/test_faults.py and benchmarks/faults.py).

Write errors (``OSError(errno)``) are raised from ``checkpoint._write_bytes``, the function every
file of a checkpoint goes through, at chosen writes: a checkpoint writes 9 files (5 into its
folder, ``ckpt/LATEST``, 3 top-level copies), so writes 10..18 are the second checkpoint's.
Non-finite steps come from ``objectives.elbo`` answering NaN at chosen training calls, or from
batches made NaN after ``DataPrep``. Tests run as root, where ``chmod`` stops no write: the
read-only cases inject ``EACCES``/``EROFS`` instead. Each scenario runs ``vaekit`` in process and
returns what it observed; the tests assert on it, the benchmark reports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from vaekit import checkpoint, cli, objectives
from vaekit.checkpoint import latest_checkpoint, load_run
from vaekit.data import DataPrep

WRITES_PER_CHECKPOINT = 9
EPOCHS = 3
STEPS_PER_EPOCH = 15  # 1500 training digits / batch 100 (the digits' train split)
TRAIN = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2"]
TRAIN += ["--epochs", str(EPOCHS), "--batch-size", "100", "--deterministic", "--no-images"]
TRAIN += ["--set", "train.checkpoint_every=1"]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``vaekit argv`` in this process: (exit status, what it wrote to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, err.getvalue()


@contextlib.contextmanager
def failing_writes(fail_at: int, error: int) -> Iterator[list[Path]]:
    """Make the ``fail_at``-th checkpoint file write (1-based) raise ``OSError(error)``; yields
    the paths written (or tried) so far."""
    real = checkpoint._write_bytes
    calls: list[Path] = []

    def write(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == fail_at:
            raise OSError(error, os.strerror(error), str(path))
        real(path, data)

    checkpoint._write_bytes = write
    try:
        yield calls
    finally:
        checkpoint._write_bytes = real


def leftovers(run: Path) -> list[str]:
    """Partial files and folders of interrupted writes in a run directory."""
    return sorted(str(p.relative_to(run)) for p in [*run.rglob(".tmp-*"), *run.rglob("*.tmp")])


def metrics_epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def write_fault(run: Path, fail_at: int, error: int) -> dict:
    """Train into ``run`` with write ``fail_at`` failing with ``error``, then ``--resume`` (or,
    with no checkpoint left to resume, start again with ``--force``); what happened."""
    with failing_writes(fail_at, error) as calls:
        code, err = run_cli([*TRAIN, "--out", str(run)])
    latest = latest_checkpoint(run)
    seen = {
        "fail_at": fail_at,
        "file": calls[-1].name if len(calls) >= fail_at else None,
        "exit": code,
        "message": err.strip(),
        "traceback": "Traceback" in err,
        "leftovers": leftovers(run),
        "kept_step": None
        if latest is None
        else json.loads((latest / "state/trainer.json").read_text())["step"],
    }
    again = ["train", "--resume", str(run)] if latest else [*TRAIN, "--out", str(run), "--force"]
    seen["resume_exit"], resume_err = run_cli(again)
    seen["resume_message"] = resume_err.strip()
    if seen["resume_exit"] == 0:
        seen["model_sha"] = sha(run / "model.safetensors")
        seen["loads"] = load_run(run) is not None
        seen["metrics_epochs"] = metrics_epochs(run)
        seen["ckpt_after"] = sorted(p.name for p in (run / "ckpt").iterdir())
    return seen


@contextlib.contextmanager
def nan_losses(calls: set[int]) -> Iterator[list[int]]:
    """``objectives.elbo`` (what the configured objective calls) returns a NaN loss at the
    training calls numbered in ``calls`` (1-based); yields the calls made."""
    real = objectives.elbo
    made: list[int] = []

    def elbo(model, x, y=None, **kwargs):
        res = real(model, x, y, **kwargs)
        made.append(len(made) + 1)
        if made[-1] in calls:
            res.loss = res.loss * float("nan")
            res.log_px_z = res.log_px_z * float("nan")
        return res

    objectives.elbo = elbo
    try:
        yield made
    finally:
        objectives.elbo = real


@contextlib.contextmanager
def nan_batches(calls: set[int]) -> Iterator[list[int]]:
    """Prepared batches (``DataPrep.__call__``) become NaN at the calls numbered in ``calls``
    (1-based; call 1 is the setup's check of a first batch)."""
    real = DataPrep.__call__
    made: list[int] = []

    def prep(self, raw, generator=None):
        x = real(self, raw, generator)
        made.append(len(made) + 1)
        return x * float("nan") if made[-1] in calls else x

    DataPrep.__call__ = prep
    try:
        yield made
    finally:
        DataPrep.__call__ = real


def finite_state(model: torch.nn.Module) -> bool:
    """Every parameter and buffer of ``model`` finite."""
    tensors = [*model.parameters(), *model.buffers()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
