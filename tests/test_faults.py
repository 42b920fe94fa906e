"""Faults while training: disk full and read-only at each file of a checkpoint and outside one,
non-finite steps (a NaN loss, a NaN batch), through ``vaekit train`` in process. The SIGKILL and
run-lock cases are in test_checkpoint_crash.py; the injections are in fault_runs.py."""

from __future__ import annotations

import errno
import importlib
import json
import os

import pytest
from fault_runs import (
    STEPS_PER_EPOCH,
    TRAIN,
    WRITES_PER_CHECKPOINT,
    failing_writes,
    finite_state,
    metrics_epochs,
    nan_batches,
    nan_losses,
    run_cli,
    sha,
    write_fault,
)

import vaekit
from vaekit.checkpoint import load_run
from vaekit.config import load_config

train_module = importlib.import_module("vaekit.train")  # ``vaekit.train`` is the function


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    """The final weights' sha256 of an uninterrupted run."""
    run = tmp_path_factory.mktemp("faults") / "reference"
    assert run_cli([*TRAIN, "--out", str(run)])[0] == 0
    return sha(run / "model.safetensors")


def _assert_survived(seen: dict, reference: str, reason: str) -> None:
    where = seen["fail_at"]
    assert seen["exit"] == 2 and not seen["traceback"], seen
    assert seen["message"].startswith("vaekit: error: ") and "\n" not in seen["message"], seen
    assert reason in seen["message"] and seen["file"] in seen["message"], seen
    assert seen["leftovers"] == [], seen
    assert seen["resume_exit"] == 0, seen["resume_message"]
    assert seen["model_sha"] == reference, where  # resumed exactly, as if nothing had happened
    assert seen["loads"] and seen["metrics_epochs"] == [1, 2, 3], seen  # each epoch once
    assert len(seen["ckpt_after"]) == 2 and seen["ckpt_after"][1] == "LATEST", seen


def test_disk_full_at_each_file_of_a_checkpoint_stops_clearly_then_resumes_exactly(
    reference, tmp_path
):
    """Every write of the second checkpoint, and the first write of the first."""
    second = range(WRITES_PER_CHECKPOINT + 1, 2 * WRITES_PER_CHECKPOINT + 1)
    for fail_at in [1, *second]:
        seen = write_fault(tmp_path / f"full-{fail_at}", fail_at, errno.ENOSPC)
        _assert_survived(seen, reference, "the disk is full")
        committed = fail_at > WRITES_PER_CHECKPOINT + 6  # after the ckpt/LATEST switch
        if fail_at == 1:
            assert seen["kept_step"] is None and "no earlier checkpoint" in seen["message"]
        elif committed:
            assert seen["kept_step"] == 2 * STEPS_PER_EPOCH and "was saved" in seen["message"]
        else:
            assert seen["kept_step"] == STEPS_PER_EPOCH and "is intact" in seen["message"]
            assert "--resume" in seen["message"]


@pytest.mark.parametrize(
    "error, reason",
    [(errno.EACCES, "not writable"), (errno.EROFS, "read-only")],
    ids=["permission-denied", "read-only-filesystem"],
)
def test_a_read_only_run_directory_mid_checkpoint_stops_clearly_then_resumes(
    reference, tmp_path, error, reason
):
    """Injected, not chmod: tests may run as root, whom a read-only mode does not stop."""
    for fail_at in (10, 15, 16):  # the folder's first file, ckpt/LATEST, a top-level copy
        _assert_survived(write_fault(tmp_path / f"ro-{fail_at}", fail_at, error), reference, reason)


def test_disk_full_outside_a_checkpoint_is_one_clear_error_too(reference, tmp_path, monkeypatch):
    """metrics.jsonl of epoch 2 cannot be written: exit 2, the epoch-1 checkpoint resumes."""
    real, calls = train_module._log_epoch, []

    def log_epoch(out, *args, **kwargs):
        calls.append(out)
        if len(calls) == 2:
            path = out / "metrics.jsonl"
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(out, *args, **kwargs)

    monkeypatch.setattr(train_module, "_log_epoch", log_epoch)
    run = tmp_path / "run"
    code, err = run_cli([*TRAIN, "--out", str(run)])
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "training stopped: could not write" in err and "metrics.jsonl" in err
    assert "disk is full" in err and "000001-step-000000015 is intact" in err
    monkeypatch.setattr(train_module, "_log_epoch", real)
    assert run_cli(["train", "--resume", str(run)])[0] == 0
    assert sha(run / "model.safetensors") == reference and metrics_epochs(run) == [1, 2, 3]


def test_the_api_raises_a_checkpoint_error_and_releases_the_run(tmp_path):
    cfg = load_config(
        None,
        {"data.dataset": "digits", "model.hidden": [16], "model.latent_dim": 2,
         "train.epochs": 2, "train.batch_size": 100, "train.images": False},
    )  # fmt: skip
    run = tmp_path / "api"
    full = failing_writes(WRITES_PER_CHECKPOINT + 2, errno.ENOSPC)  # epoch 2's weights
    with full, pytest.raises(vaekit.CheckpointError, match="disk is full.*is intact"):
        vaekit.train(cfg, run, log=lambda *_: None)
    assert vaekit.train(None, run, resume=True, log=lambda *_: None) == run  # lock released
    assert finite_state(load_run(run))


def _nonfinite(run) -> list[int]:
    rows = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    return [row["nonfinite_steps"] for row in rows]


def test_non_finite_steps_are_skipped_counted_and_the_count_survives_a_resume(tmp_path):
    run = tmp_path / "nan"
    with nan_losses({3, 4, 20}) as made:
        assert run_cli([*TRAIN, "--out", str(run)])[0] == 0
    assert len(made) == 3 * STEPS_PER_EPOCH  # every step ran, three were skipped
    assert _nonfinite(run) == [2, 3, 3] and finite_state(load_run(run))
    stopped = tmp_path / "stopped"
    with nan_losses({3, 20}):
        assert run_cli([*TRAIN, "--out", str(stopped), "--max-steps", "25"])[0] == 0
    assert run_cli(["train", "--resume", str(stopped)])[0] == 0
    assert _nonfinite(stopped) == [1, 2, 2]  # the count before the stop carried over


def test_too_many_consecutive_non_finite_steps_stop_with_one_clear_line(tmp_path):
    with nan_losses(set(range(5, 100))):
        code, err = run_cli([*TRAIN, "--out", str(tmp_path / "r"), "--set",
                                "train.max_nonfinite=5"])  # fmt: skip
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "5 consecutive steps had a non-finite reconstruction" in err and "step 8" in err


@pytest.mark.parametrize("kind", ["vqvae", "ae", "score"])
def test_a_nan_batch_leaves_running_statistics_alone(tmp_path, kind):
    """A VQ-VAE's EMA codebook and an autoencoder's Gaussian fit move in the forward pass: two
    NaN batches used to poison them (the run then died of NaN, or of a failed Cholesky). The
    score-function estimator's learned baseline also moves; its draw used to raise instead."""
    argv = [*TRAIN, "--epochs", "1", "--out", str(tmp_path / kind)]
    argv += {
        "vqvae": ["--model", "vqvae", "--channels", "16,16"],
        "ae": ["--set", "model.kind=ae"],
        "score": ["--set", "objective.estimator=score"],
    }[kind]
    with nan_batches({4, 5}):  # call 1 is the setup's check: steps 3 and 4
        code, err = run_cli(argv)
    assert code == 0, err
    assert _nonfinite(tmp_path / kind) == [2] and finite_state(load_run(tmp_path / kind))
