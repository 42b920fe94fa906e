"""Devices and precision: device names resolve (auto is the CPU here), every part runs on the
chosen device, bf16 training stays finite and close to fp32, fp16 needs CUDA."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vaekit
from vaekit.cli import main
from vaekit.devices import autocast, grad_scaler, resolve_device

ARGV = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--no-images"]
ARGV += ["--batch-size", "50", "--lr", "3e-3", "--set", "train.eval_every=1000"]


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="no MPS device"):
            resolve_device("mps")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


def test_precisions():
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast(cpu, "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast(cpu, "fp8")
    assert grad_scaler(cpu, "bf16") is None


def _train(tmp_path, name, *extra):
    out = tmp_path / name
    assert main([*ARGV, "--epochs", "2", *extra, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, rows[-1]


def test_bf16_training_is_finite_and_close_to_fp32(tmp_path):
    fp32, last32 = _train(tmp_path, "fp32", "--device", "cpu")
    bf16, last16 = _train(tmp_path, "bf16", "--device", "auto", "--precision", "bf16")
    cfg = json.loads((bf16 / "config.json").read_text())
    assert cfg["train"]["precision"] == "bf16" and cfg["train"]["device"] == "auto"
    assert math.isfinite(last16["train_bound"]) and last16["nonfinite_steps"] == 0
    # 60 steps of bfloat16 matmuls: the same optimization, to within a few per cent of the ELBO
    assert last16["train_bound"] == pytest.approx(last32["train_bound"], rel=0.03)
    model = vaekit.load(bf16)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_fp16_is_refused_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    argv = [*ARGV, "--max-steps", "1", "--precision", "fp16", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err


def test_posterior_and_likelihood_stay_float32_under_autocast():
    from builders import build

    model = build(event_shape=[1, 8, 8], hidden=[16], latent_dim=3)
    x = (torch.rand(4, 1, 8, 8) > 0.5).float()
    with autocast(torch.device("cpu"), "bf16"):
        res = vaekit.elbo(model, x)
        qz_x = model.encode(x)
    assert qz_x.mean.dtype == torch.float32
    assert res.bound.dtype == torch.float32 and res.kl.dtype == torch.float32


_COMPILE_CHECK = r"""
import json, sys, tempfile
import torch, torch._dynamo as dynamo
import vaekit
from vaekit.cli import main
from vaekit.run import setup

torch.set_num_threads(1)
out = {}
for arch in ("mlp", "conv"):
    cfg = vaekit.load_config(None, {"data.dataset": "digits", "model.arch": arch,
                                    "model.latent_dim": 4, "train.batch_size": 32})
    run = setup(cfg, tempfile.mkdtemp(), log=lambda *a: None)
    x = run.prep(run.ds.train[:32], run.gen)
    ex = dynamo.explain(lambda x: run.objective(run.model, x, None, step=3).loss)(x)
    out[arch] = [ex.graph_count, ex.graph_break_count]
argv = json.loads(sys.argv[1])
for name, extra in (("eager", []), ("compiled", ["--compile"])):
    assert main([*argv, "--max-steps", "8", *extra, "--out", sys.argv[2] + "/" + name]) == 0
    out[name] = [p.detach().flatten() for p in vaekit.load(sys.argv[2] + "/" + name).parameters()]
diff = max(float((a - b).abs().max()) for a, b in zip(out.pop("eager"), out.pop("compiled")))
print(json.dumps({**out, "max_abs_diff": diff}))
"""


def test_compile_traces_the_whole_loss_without_graph_breaks_and_trains_like_eager(tmp_path):
    """``--compile`` compiles the objective (encode → rsample → decode → log p(x|z) → KL): one
    graph on the MLP and conv paths, and 8 compiled steps land on eager's weights up to float
    rounding. In a subprocess: a first ``torch.compile`` changes process-wide settings."""
    import subprocess
    import sys

    args = [sys.executable, "-c", _COMPILE_CHECK, json.dumps(ARGV), str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["mlp"] == [1, 0] and res["conv"] == [1, 0]  # [graphs, graph breaks]
    assert res["max_abs_diff"] < 1e-4
