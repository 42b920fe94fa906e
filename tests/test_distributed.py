"""Data-parallel training: 2 gloo processes (torchrun, launched by ``vaekit train --nproc 2``)
follow the trajectory of 1 process with the same global batch cut into the same 2 micro-batches;
a run started on 2 processes and resumed on 1 continues it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from small_runs import split
from vaekit.checkpoint import latest_checkpoint
from vaekit.evaluation import evaluate

ARGV = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--no-images"]
ARGV += ["--batch-size", "100", "--lr", "3e-3", "--epochs", "2", "--deterministic"]
ARGV += ["--set", "train.micro_batches=2"]


def _vaekit(*argv, env=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "vaekit", *argv], env=env, capture_output=True, text=True
    )


def _close(a, b, atol=2e-5):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=1e-4, msg=k)


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, the global batch of 100 in two seeded micro-batches of 50."""
    out = tmp_path_factory.mktemp("ddp") / "single"
    done = _vaekit(*ARGV, "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.parametrize("kind", ["vae", "hvae"])
def test_two_processes_follow_one(single, tmp_path, kind):
    extra = [] if kind == "vae" else ["--model", "hvae", "--latent-dims", "4,2"]
    ref = single
    if kind != "vae":
        ref = tmp_path / "single"
        done = _vaekit(*ARGV, *extra, "--out", str(ref))
        assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "ddp"
    done = _vaekit(*ARGV, *extra, "--nproc", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    _close(ref, out)
    rows, ref_rows = _rows(out), _rows(ref)
    assert len(rows) == 2  # rank 0 alone writes
    for r, q in zip(rows, ref_rows, strict=True):  # the all-reduced training bound agrees
        assert r["train_bound"] == pytest.approx(q["train_bound"], abs=1e-3)
    # The test ELBO: each process scored its half (its own seeded draws) and the sums were
    # all-reduced: the same as scoring the two halves here and weighting them by their sizes.
    model, x, y = split(out)
    halves = [(0, len(x) // 2), (len(x) // 2, len(x))]
    parts = [
        evaluate(model, x[a:b], k=0, batch_size=1000, seed=0)["elbo"] * (b - a) for a, b in halves
    ]
    assert rows[-1]["test_elbo"] == pytest.approx(sum(parts) / len(x), abs=1e-4)


def _objective_state(run):
    """The objective's tensors (FactorVAE's discriminator) in the run's last checkpoint."""
    tensors = load_file(str(latest_checkpoint(run) / "state" / "tensors.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith("objective.")}


def test_factor_vae_on_two_processes_follows_one(tmp_path):
    """The discriminator has its own Adam: each process gathers the step's codes of all the
    micro-batches and takes the same discriminator step, so two processes still follow one."""
    argv = [*ARGV, "--epochs", "1", "--set", "objective.penalty=factor"]
    argv += ["--set", "objective.factor_hidden=[16,16]", "--set", "objective.factor_gamma=5"]
    ref, out = tmp_path / "single", tmp_path / "ddp"
    for run, extra in ((ref, []), (out, ["--nproc", "2"])):
        done = _vaekit(*argv, *extra, "--out", str(run))
        assert done.returncode == 0, done.stderr[-3000:]
    _close(ref, out)
    d_ref, d_out = _objective_state(ref), _objective_state(out)
    assert any("discriminator" in k for k in d_ref) and d_ref.keys() == d_out.keys()
    for k in d_ref:
        torch.testing.assert_close(d_ref[k], d_out[k], atol=2e-5, rtol=1e-4, msg=k)
    rows, ref_rows = _rows(out), _rows(ref)
    assert rows[-1]["train_disc_loss"] == pytest.approx(ref_rows[-1]["train_disc_loss"], abs=1e-4)


def test_a_run_on_two_processes_resumes_on_one(single, tmp_path):
    out = tmp_path / "resumed"
    done = _vaekit(*ARGV, "--nproc", "2", "--max-steps", "20", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["train"]["micro_batches"] == 2
    done = _vaekit("train", "--resume", str(out))  # one process, the same micro-batches
    assert done.returncode == 0, done.stderr[-2000:]
    _close(single, out)


def test_micro_batches_must_divide_the_batch(tmp_path, capsys):
    from vaekit.cli import main

    argv = [*ARGV[:-2], "--batch-size", "100", "--set", "train.micro_batches=3"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert "must be a multiple of the number of processes" in capsys.readouterr().err
