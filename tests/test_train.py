"""Training, checkpoints and exact resume on the small scikit-learn digits set."""

import json

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from vaekit.checkpoint import CheckpointError, latest_checkpoint, load_run
from vaekit.config import load_config


def _cfg(**overrides):
    base = {
        "data.dataset": "digits",
        "model.hidden": [32],
        "model.latent_dim": 4,
        "train.epochs": 2,
        "train.batch_size": 64,
        "train.deterministic": True,
        "train.images": False,
    }
    return load_config(None, {**base, **overrides})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    return vaekit.train(_cfg(), out, log=lambda *_: None)


def test_run_directory_is_self_describing(run):
    for name in ("config.json", "model.safetensors", "manifest.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    ckpt = latest_checkpoint(run)
    assert ckpt.parent == run / "ckpt" and (run / "ckpt/LATEST").read_text().strip() == ckpt.name
    for name in (
        "config.json",
        "model.safetensors",
        "state/trainer.json",
        "state/tensors.safetensors",
    ):
        assert (ckpt / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data_info"]["event_shape"] == [1, 8, 8] and cfg["data"]["binarize"] == "dynamic"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["test_elbo"] > rows[0]["test_elbo"] - 5  # it trains, not diverges
    assert all(name in rows[-1] for name in ("test_recon", "test_kl", "active_units"))
    assert not list(run.rglob("*.tmp"))


def test_checkpoint_round_trip_reproduces_outputs_exactly(run):
    a, b = load_run(run), load_run(run)
    x = (torch.rand(10, 1, 8, 8) > 0.5).float()
    assert torch.equal(a.encode(x).mean, b.encode(x).mean)
    z = torch.randn(3, 4)
    assert torch.equal(a.decode(z).mean, b.decode(z).mean)
    saved = load_file(str(run / "model.safetensors"))
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_resume_after_interruption_matches_an_uninterrupted_run(run, tmp_path):
    out = tmp_path / "interrupted"
    vaekit.train(_cfg(**{"train.max_steps": 30}), out, log=lambda *_: None)  # stops mid-epoch 2
    trainer = json.loads((latest_checkpoint(out) / "state/trainer.json").read_text())
    assert trainer["step"] == 30 and trainer["epoch"] == 1 and trainer["batch_in_epoch"] > 0
    vaekit.train(None, out, resume=True, log=lambda *_: None)
    full, resumed = (
        load_file(str(run / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    opt_a = load_file(str(latest_checkpoint(run) / "state/tensors.safetensors"))
    opt_b = load_file(str(latest_checkpoint(out) / "state/tensors.safetensors"))
    for name in opt_a:
        assert torch.equal(opt_a[name], opt_b[name]), name


def _copy(run, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def test_tampered_weights_are_refused(run, tmp_path):
    dst = _copy(run, tmp_path)
    data = bytearray((dst / "model.safetensors").read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last weight
    (dst / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_run(dst)


def test_truncated_or_missing_files_are_refused(run, tmp_path):
    dst = _copy(run, tmp_path)
    (dst / "model.safetensors").write_bytes((dst / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_run(dst)
    (dst / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest"):
        load_run(dst)
    with pytest.raises(CheckpointError, match="not a run directory"):
        load_run(tmp_path / "nowhere")


def test_a_corrupt_file_with_a_matching_manifest_is_still_refused(run, tmp_path):
    import hashlib

    dst = _copy(run, tmp_path)
    (dst / "model.safetensors").write_bytes(b"\xff" * 64)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = hashlib.sha256(b"\xff" * 64).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_run(dst)


def test_non_finite_steps_are_skipped_then_stop_the_run_naming_the_term(tmp_path, monkeypatch):
    import importlib

    from vaekit import objectives
    from vaekit.objectives import elbo

    train_module = importlib.import_module("vaekit.train")

    def broken(model, x, y=None, **kwargs):
        res = elbo(model, x, y, **kwargs)
        res.log_px_z = res.log_px_z * float("nan")
        res.loss = res.loss * float("nan")
        return res

    monkeypatch.setattr(objectives, "elbo", broken)  # what the configured objective calls
    with pytest.raises(train_module.NonFiniteError, match="reconstruction"):
        vaekit.train(_cfg(**{"train.max_nonfinite": 5}), tmp_path / "nan", log=lambda *_: None)


def test_grey_levels_with_a_bernoulli_likelihood_fail_before_training(tmp_path):
    with pytest.raises(vaekit.SupportError, match="binarize"):
        vaekit.train(_cfg(**{"data.binarize": "none"}), tmp_path / "grey", log=lambda *_: None)


def test_report_iw_samples_appends_the_final_iwae_evaluation(tmp_path):
    """``train.report_iw_samples`` = K: one final row in metrics.jsonl, the very numbers that
    ``evaluate`` gives on the fixed test split with the same K and seed."""
    from vaekit.data import DataPrep, load_dataset
    from vaekit.evaluation import evaluate

    overrides = {"train.epochs": 1, "train.report_iw_samples": 20}
    out = vaekit.train(_cfg(**overrides), tmp_path / "iw", log=lambda *_: None)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("final", False) for r in rows] == [False, True]
    final = rows[-1]
    assert final["iw_samples"] == 20 and final["epoch"] == 1
    model = load_run(out)
    cfg = model.run_config
    x = DataPrep(model.likelihood, cfg.data.binarize).fixed(load_dataset("digits").test, seed=0)
    ev = evaluate(model, x, k=20, seed=cfg.data.eval_seed)
    for key in ("nll", "nll_stderr", "bpd"):
        assert final[f"test_{key}"] == pytest.approx(ev[key], abs=1e-9), key
    logged = []
    ae = _cfg(**overrides, **{"model.kind": "ae"})
    out = vaekit.train(ae, tmp_path / "ae", log=logged.append)  # no bound: said, not written
    assert not any('"final"' in line for line in (out / "metrics.jsonl").read_text().splitlines())
    assert any("no bound" in line for line in logged)
