"""ONNX export: both graphs run in onnxruntime and agree with PyTorch; export.json is enough to
rebuild p(x|z); unsupported models are refused; the CLI hook and ``python -m vaekit``."""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Independent, Normal

import vaekit
from builders import INFO_KEYS
from vaekit.checkpoint import save_checkpoint
from vaekit.cli.export import register
from vaekit.config import Config, DataInfo
from vaekit.distributions import DiscretizedLogistic
from vaekit.export import ExportError, export_model, export_onnx

ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-5  # max abs difference, ONNX Runtime vs PyTorch (float32)
EVENT = [1, 8, 8]
CASES = [
    ("mlp", "bernoulli"),
    ("mlp", "gaussian"),
    ("mlp", "categorical"),
    ("conv", "logistic"),
    ("conv", "bernoulli"),
    ("conv", "categorical"),
]


def _run(tmp_path: Path, arch: str, likelihood: str, **model) -> Path:
    """A freshly initialised model (biases randomized too) saved as a run directory."""
    cfg = Config()
    cfg.model.arch, cfg.model.likelihood, cfg.model.latent_dim = arch, likelihood, 3
    cfg.model.kind = "vae"
    cfg.model.hidden, cfg.model.channels = [16], [4, 8]
    cfg.data_info.event_shape, cfg.data_info.levels = list(EVENT), 256
    for key, value in model.items():
        setattr(cfg.model, key, value)
    net = vaekit.build_model(cfg.model, cfg.data_info)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias") or name.endswith("log_scale"):
                p.normal_(0, 0.3)
    run = tmp_path / f"run-{arch}-{likelihood}"
    opt = torch.optim.Adam(net.parameters())
    save_checkpoint(run, cfg, net, opt, {"epoch": 0, "step": 0, "batch_in_epoch": 0}, {})
    return run


def _data(likelihood: str, n: int, g: torch.Generator) -> torch.Tensor:
    shape = (n, *EVENT)
    if likelihood == "bernoulli":
        return torch.randint(0, 2, shape, generator=g).float()
    if likelihood == "gaussian":
        return torch.rand(shape, generator=g)
    return torch.randint(0, 256, shape, generator=g).float()


def _distribution(spec: dict, outputs: dict[str, np.ndarray]):
    """p(x|z) from the decoder's outputs, reading only export.json (as a consumer would)."""
    d = spec["decoder"]["distribution"]
    t = {k: torch.from_numpy(v) for k, v in outputs.items()}
    base = {
        "bernoulli": lambda: Bernoulli(logits=t.get("logits")),
        "normal": lambda: Normal(t.get("loc"), t.get("scale")),
        "categorical": lambda: Categorical(logits=t.get("log_probs")),
        "discretized_logistic": lambda: DiscretizedLogistic(t.get("loc"), t.get("scale")),
    }[d["name"]]()
    return Independent(base, d["event_dims"])


@pytest.mark.parametrize(("arch", "likelihood"), CASES)
def test_onnx_graphs_match_pytorch(tmp_path, arch, likelihood):
    run = _run(tmp_path, arch, likelihood)
    path = export_onnx(run, tmp_path / "onnx")
    spec = json.loads(path.read_text())
    assert spec["model"] == {
        "kind": "vae",
        "arch": arch,
        "likelihood": likelihood,
        "latent_dim": 3,
        "event_shape": EVENT,
    }
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert spec["source"]["model_sha256"] == manifest["model.safetensors"]
    model = vaekit.load(run)
    enc = ort.InferenceSession(str(path.parent / spec["encoder"]["file"]))
    dec = ort.InferenceSession(str(path.parent / spec["decoder"]["file"]))
    assert [i.name for i in enc.get_inputs()] == ["x"]
    assert [o.name for o in dec.get_outputs()] == [o["name"] for o in spec["decoder"]["outputs"]]
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in (1, 7):  # the batch axis is dynamic
        x = _data(likelihood, n, g)
        loc, scale = enc.run(None, {"x": x.numpy()})
        with torch.no_grad():
            q = model.encode(x).base_dist
            z = q.loc + q.scale * torch.randn(q.loc.shape, generator=g)
            px = model.decode(z)
        worst = max(
            worst, *(np.abs(a - b.numpy()).max() for a, b in ((loc, q.loc), (scale, q.scale)))
        )
        names = [o["name"] for o in spec["decoder"]["outputs"]]
        outputs = dict(zip(names, dec.run(None, {"z": z.numpy()}), strict=True))
        for o in spec["decoder"]["outputs"]:
            assert list(outputs[o["name"]].shape) == [n, *o["shape"][1:]]
        onnx_px = _distribution(spec, outputs)
        for name, value in outputs.items():
            ref = getattr(px.base_dist, "logits" if name in ("logits", "log_probs") else name)
            worst = max(worst, float(np.abs(value - ref.numpy()).max()))
        # log p(x|z) rebuilt from export.json alone agrees with the model's
        lp, ref = onnx_px.log_prob(x), px.log_prob(x)
        torch.testing.assert_close(lp, ref, atol=1e-4, rtol=1e-5)
    print(f"{arch}/{likelihood}: max abs difference {worst:.2e}")
    assert worst <= TOLERANCE


def test_exp_scale_head_exports_its_scale(tmp_path):
    """``model.scale_head: exp`` (σ = exp(½h)): the ONNX encoder's scale is the model's, and
    export.json says which formula it is."""
    run = _run(tmp_path, "mlp", "bernoulli", scale_head="exp", init="torch")
    path = export_onnx(run, tmp_path / "onnx")
    spec = json.loads(path.read_text())
    assert "exp(raw / 2)" in spec["encoder"]["outputs"][1]["description"]
    enc = ort.InferenceSession(str(path.parent / spec["encoder"]["file"]))
    x = _data("bernoulli", 5, torch.Generator().manual_seed(0))
    loc, scale = enc.run(None, {"x": x.numpy()})
    with torch.no_grad():
        q = vaekit.load(run).encode(x).base_dist
    np.testing.assert_allclose(loc, q.loc.numpy(), atol=TOLERANCE)
    np.testing.assert_allclose(scale, q.scale.numpy(), atol=TOLERANCE)


def test_gaussian_constants_in_export_json(tmp_path):
    run = _run(tmp_path, "mlp", "gaussian", gaussian_scale="shared")
    spec = json.loads(export_onnx(run, tmp_path / "onnx").read_text())
    c = spec["decoder"]["distribution"]["constants"]
    model = vaekit.load(run)
    assert c["log_scale"] == pytest.approx(float(model.likelihood.log_scale.detach()))
    assert c["log_scale_shape"] == [] and c["nats_offset_per_dim"] == pytest.approx(math.log(256))
    dec = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    _, scale = dec.run(None, {"z": np.zeros((2, 3), np.float32)})
    np.testing.assert_allclose(scale, max(math.exp(c["log_scale"]), c["min_scale"]), rtol=1e-6)
    assert spec["prior"] == {
        "name": "normal",
        "loc": 0.0,
        "scale": 1.0,
        "shape": [3],
        "description": "p(z) = N(0, I)",
    }


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"arch": "resnet"}, "arch 'resnet'"),
        ({"prior": "vamp", "prior_components": 4}, "prior 'vamp'"),
        ({"kind": "ae"}, "model kind 'ae'"),
        (
            {
                "likelihood": "tabular",
                "event_shape": [2],
                "columns": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}],
            },
            "likelihood 'tabular'",
        ),
    ],
)
def test_unsupported_models_are_refused(tmp_path, model, message):
    cfg = Config()
    cfg.model.hidden, cfg.model.latent_dim = [8], 2
    cfg.model.arch, cfg.model.likelihood = "mlp", "bernoulli"
    info = DataInfo(event_shape=list(EVENT), levels=256)
    for key, value in model.items():
        if key in INFO_KEYS:
            setattr(info, key, value)
        else:
            setattr(cfg.model, key, value)
    with pytest.raises(ExportError, match=message):
        export_model(vaekit.build_model(cfg.model, info), tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_graphs(tmp_path):
    pytest.importorskip("onnxscript")
    run = _run(tmp_path, "conv", "logistic")
    a = export_onnx(run, tmp_path / "ts")
    b = export_onnx(run, tmp_path / "dynamo", exporter="dynamo")
    assert json.loads(b.read_text())["source"]["exporter"] == "dynamo"
    z = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    x = np.random.default_rng(1).integers(0, 256, (4, *EVENT)).astype(np.float32)
    for graph, feed in (("encoder.onnx", {"x": x}), ("decoder.onnx", {"z": z})):
        ts = ort.InferenceSession(str(a.parent / graph)).run(None, feed)
        dy = ort.InferenceSession(str(b.parent / graph)).run(None, feed)
        for u, v in zip(ts, dy, strict=True):
            np.testing.assert_allclose(u, v, atol=TOLERANCE, rtol=0)


def test_trained_digits_run_exports(tmp_path):
    """A (very) short real training run on digits, through `vaekit export`."""
    cfg = vaekit.load_config(
        None,
        {
            "data.dataset": "digits",
            "model.hidden": [32],
            "model.latent_dim": 4,
            "train.epochs": 1,
            "train.max_steps": 3,
            "train.images": False,
        },
    )
    run = vaekit.train(cfg, tmp_path / "digits", log=lambda *_: None)
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(["export", str(run), "--format", "onnx", "-o", str(tmp_path / "out")])
    assert args.func(args) == 0
    spec = json.loads((tmp_path / "out" / "export.json").read_text())
    assert spec["model"]["event_shape"] == [1, 8, 8] and spec["opset"] >= 13
    x = np.zeros((3, 1, 8, 8), np.float32)
    loc, _ = ort.InferenceSession(str(tmp_path / "out" / "encoder.onnx")).run(None, {"x": x})
    with torch.no_grad():
        ref = vaekit.load(run).encode(torch.from_numpy(x)).mean.numpy()
    np.testing.assert_allclose(loc, ref, atol=TOLERANCE, rtol=0)
    default = p.parse_args(["export", str(run)])
    assert default.output is None and default.format == "onnx"  # → RUN/onnx


def test_python_dash_m_vaekit_is_the_cli(tmp_path):
    """`python -m vaekit` runs `vaekit.cli.main` (here from a folder outside the repository)."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run(
        [sys.executable, "-m", "vaekit", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: vaekit") and "evaluate" in res.stdout
