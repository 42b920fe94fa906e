"""ONNX export of a trained run: two graphs and a JSON file that says what their outputs mean.

    vaekit export runs/mnist --format onnx -o runs/mnist/onnx
    vaekit.export.export_onnx("runs/mnist", "runs/mnist/onnx")

writes

    encoder.onnx   x (batch, *event_shape) float32 → loc, scale (batch, D): q(z|x) = N(loc, scale²)
    decoder.onnx   z (batch, D) float32 → the parameters of p(x|z) (see below)
    export.json    inputs, outputs, shapes, and how to turn the outputs into distributions

The batch axis is dynamic in both graphs. ``x`` is data in the likelihood's support, exactly what
``model.encode`` takes (the scaling of 8-bit levels to [0, 1] is inside the graph). Decoder
outputs, already through their link functions, so that p(x|z) needs no further constants:

    bernoulli    logits (batch, *event)          Bernoulli(logits), x ∈ {0, 1}
    gaussian     loc, scale (batch, *event)      Normal(loc, scale); scale = max(e^log_scale, 1e-4)
    categorical  log_probs (batch, *event, 256)  Categorical over levels 0..255 (normalized)
    logistic     loc, scale (batch, *event)      discretized logistic on levels 0..255

log p(x|z) sums over all event dimensions; p(z) = N(0, I). ``export.json`` repeats this, with the
formulas and constants (the Gaussian's learned log-scale, the bits/dim offset). Supported: the
one-latent-layer VAE (``model.kind: vae``) with MLP or conv networks, the standard-normal prior and
the four likelihoods above; anything else is refused with an ``ExportError``.

Exporters: ``exporter="torchscript"`` (default: torch's TorchScript-based ``torch.onnx.export(...,
dynamo=False)``; needs ``onnx``; about 0.1 s a graph) or ``"dynamo"`` (torch.export-based, torch's
default since 2.9; needs ``onnx`` and ``onnxscript``; 3–8 s a graph on a 2-core CPU). Both give the
same graphs to float32 rounding; torch deprecates the first, so switch the default when the pinned
torch drops it. ``onnxruntime`` runs the graphs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import load_run
from .version import __version__

__all__ = [
    "EXPORTERS",
    "ExportError",
    "SUPPORTED_ARCHS",
    "SUPPORTED_LIKELIHOODS",
    "export_model",
    "export_onnx",
]

SUPPORTED_LIKELIHOODS = ("bernoulli", "gaussian", "categorical", "logistic")
SUPPORTED_ARCHS = ("mlp", "conv")
EXPORTERS = ("torchscript", "dynamo")
FORMAT_VERSION = 1

# likelihood → (attributes of p(x|z)'s base distribution, output names)
_OUTPUTS = {
    "bernoulli": (("logits",), ("logits",)),
    "gaussian": (("loc", "scale"), ("loc", "scale")),
    "categorical": (("logits",), ("log_probs",)),  # torch's Categorical normalizes its logits
    "logistic": (("loc", "scale"), ("loc", "scale")),
}


class ExportError(ValueError):
    """A run that cannot be exported (an unsupported model, or the exporter is missing)."""


class _Encoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q = self.model.encode(x, check=False).base_dist
        return q.loc, q.scale


class _Decoder(nn.Module):
    def __init__(self, model, attributes: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.attributes = attributes

    def forward(self, z: Tensor) -> tuple[Tensor, ...]:
        if self.model.config.likelihood == "categorical":
            # Decoder outputs (B, 256, *event) per the Likelihood contract, levels moved last
            # with explicit dims: the TorchScript exporter turns the head's movedim(-4, -1)
            # into an invalid Transpose (perm with a negative entry).
            params = self.model.decoder(z)
            levels_last = params.permute(0, *range(2, params.dim()), 1)
            return (torch.log_softmax(levels_last, -1),)
        base = self.model.decode(z).base_dist
        return tuple(getattr(base, a) for a in self.attributes)


def export_onnx(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    opset: int | None = None,
    exporter: str = "torchscript",
) -> Path:
    """Export the model of a run directory (manifest verified) to ``out_dir``; returns the path
    of ``export.json``. ``opset``: the ONNX opset (default: the exporter's); ``exporter``: see
    the module doc."""
    run_dir = Path(run_dir)
    model = load_run(run_dir)
    source = {"run": str(run_dir)}
    manifest = run_dir / "manifest.json"
    if manifest.is_file():
        files = json.loads(manifest.read_text()).get("files", {})
        source["model_sha256"] = files.get("model.safetensors")
    return export_model(model, out_dir, opset=opset, exporter=exporter, source=source)


def export_model(
    model,
    out_dir: str | Path,
    *,
    opset: int | None = None,
    exporter: str = "torchscript",
    source: dict | None = None,
) -> Path:
    """Export a ``vaekit.VAE`` (``model.config`` set, as built by ``build_model``) to
    ``out_dir``: ``encoder.onnx``, ``decoder.onnx``, ``export.json`` (returned)."""
    cfg = model.config
    _check_supported(cfg)
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    needed = ("onnx", "onnxscript") if exporter == "dynamo" else ("onnx",)
    try:
        for name in needed:
            __import__(name)
    except ImportError as e:
        raise ExportError(
            f"the {exporter} ONNX exporter needs {' and '.join(needed)} ({e}); install the "
            "pinned versions of requirements-dev.txt"
        ) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    attributes, outputs = _OUTPUTS[cfg.likelihood]
    event = list(model.event_shape)
    d = model.latent_dim
    example_x = torch.zeros(2, *event)
    example_z = torch.zeros(2, d)
    encoder, decoder = _Encoder(model), _Decoder(model, attributes)
    validate = torch.distributions.Distribution._validate_args
    # No argument validation inside the graphs: it is data-dependent control flow (and a
    # trained model's parameters are valid by construction).
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        _export(encoder, example_x, out / "encoder.onnx", "x", ["loc", "scale"], opset, exporter)
        _export(decoder, example_z, out / "decoder.onnx", "z", outputs, opset, exporter)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)
    with torch.no_grad():
        shapes = [list(t.shape[1:]) for t in _Decoder(model, attributes)(example_z)]
    spec = _describe(model, cfg, outputs, shapes, out, {**(source or {}), "exporter": exporter})
    path = out / "export.json"
    path.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n")
    return path


def _check_supported(cfg) -> None:
    if cfg is None:
        raise ExportError("the model has no config (build it with vaekit.build_model)")
    problems = []
    if cfg.kind != "vae":
        problems.append(f"model kind {cfg.kind!r} (only 'vae': one latent layer, unconditional)")
    if cfg.arch not in SUPPORTED_ARCHS:
        problems.append(f"arch {cfg.arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})")
    if cfg.likelihood not in SUPPORTED_LIKELIHOODS:
        problems.append(
            f"likelihood {cfg.likelihood!r} (supported: {', '.join(SUPPORTED_LIKELIHOODS)})"
        )
    if cfg.prior != "normal":
        problems.append(f"prior {cfg.prior!r} (only the standard normal)")
    if getattr(cfg, "posterior", "gaussian") != "gaussian":
        problems.append(f"posterior {cfg.posterior!r} (only the diagonal Gaussian)")
    if problems:
        raise ExportError("cannot export this model to ONNX: " + "; ".join(problems))


def _export(
    module: nn.Module, example: Tensor, path: Path, name: str, outputs, opset, exporter: str
) -> None:
    """One graph, input ``name`` with a dynamic batch axis; checked by ``onnx.checker``."""
    names = {"input_names": [name], "output_names": list(outputs), "opset_version": opset}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporters' deprecation and progress notes
        if exporter == "dynamo":
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                dynamic_shapes={name: {0: torch.export.Dim("batch")}},
                external_data=False,
                verbose=False,
                **names,
            )
            program.save(str(path))
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                dynamic_axes={n: {0: "batch"} for n in [name, *outputs]},
                **names,
            )
    import onnx

    onnx.checker.check_model(str(path))


def _describe(model, cfg, outputs, shapes, out: Path, source: dict | None) -> dict:
    import onnx

    event = list(model.event_shape)
    d = model.latent_dim
    opset = next(
        o.version for o in onnx.load(str(out / "encoder.onnx")).opset_import if not o.domain
    )
    tensor = lambda name, shape, what: {  # noqa: E731
        "name": name,
        "dtype": "float32",
        "shape": ["batch", *shape],
        "description": what,
    }
    likelihood = _LIKELIHOOD_SPECS[cfg.likelihood](model)
    head = getattr(model, "scale_head", "softplus")
    scale_of_raw = "exp(raw / 2)" if head == "exp" else "softplus(raw) + 1e-4"
    return {
        "format": "vaekit-onnx",
        "format_version": FORMAT_VERSION,
        "producer": {"vaekit": __version__, "torch": torch.__version__.split("+")[0]},
        "opset": opset,
        "source": source or {},
        "model": {
            "kind": cfg.kind,
            "arch": cfg.arch,
            "likelihood": cfg.likelihood,
            "latent_dim": d,
            "event_shape": event,
        },
        "encoder": {
            "file": "encoder.onnx",
            "sha256": _sha256(out / "encoder.onnx"),
            "inputs": [tensor("x", event, likelihood.pop("encoder_input"))],
            "outputs": [
                tensor("loc", [d], "mean of q(z|x)"),
                tensor("scale", [d], f"standard deviation of q(z|x) ({scale_of_raw})"),
            ],
            "distribution": {
                "name": "normal",
                "parameters": {"loc": "loc", "scale": "scale"},
                "event_dims": 1,
                "description": "q(z|x) = Π_d Normal(z_d; loc_d, scale_d), independent over D",
            },
        },
        "decoder": {
            "file": "decoder.onnx",
            "sha256": _sha256(out / "decoder.onnx"),
            "inputs": [tensor("z", [d], "latent codes (e.g. q(z|x)'s loc, or prior draws)")],
            "outputs": [
                tensor(n, s, likelihood["parameters"][n])
                for n, s in zip(outputs, shapes, strict=True)
            ],
            "distribution": {**likelihood, "event_dims": len(event)},
        },
        "prior": {
            "name": "normal",
            "loc": 0.0,
            "scale": 1.0,
            "shape": [d],
            "description": "p(z) = N(0, I)",
        },
    }


def _bernoulli(model) -> dict:
    return {
        "name": "bernoulli",
        "encoder_input": "binary data: 0.0 or 1.0",
        "parameters": {"logits": "log-odds of x = 1, per element"},
        "support": "{0, 1}",
        "log_prob": "x·logits − softplus(logits), summed over the event",
        "mean": "sigmoid(logits)",
        "constants": {"nats_offset_per_dim": 0.0},
    }


def _gaussian(model) -> dict:
    head = model.likelihood
    log_scale = head.log_scale.detach()
    return {
        "name": "normal",
        "encoder_input": "values in [0, 1] (8-bit levels k were dequantized as (k + u)/256, "
        "u ~ U(0, 1), in training)",
        "parameters": {
            "loc": "mean of x, per element",
            "scale": "standard deviation: max(exp(log_scale), min_scale), the same for every z",
        },
        "support": "real",
        "log_prob": "−(x − loc)²/(2·scale²) − log scale − log(2π)/2, summed over the event",
        "mean": "loc",
        "constants": {
            "log_scale": log_scale.tolist(),
            "log_scale_shape": list(log_scale.shape),  # [] = one scale shared by all elements
            "min_scale": 1e-4,
            "nats_offset_per_dim": math.log(256.0),  # bits/dim of 8-bit data: + log 256 per dim
        },
    }


def _categorical(model) -> dict:
    return {
        "name": "categorical",
        "encoder_input": "integer levels 0..255 as float32 (the graph divides by 255)",
        "parameters": {
            "log_probs": "normalized log-probabilities of the levels 0..255 (last axis)",
        },
        "support": "integers 0..255",
        "log_prob": "log_probs[..., x], summed over the event",
        "mean": "Σ_k k·exp(log_probs[..., k])",
        "constants": {"levels": 256, "nats_offset_per_dim": 0.0},
    }


def _logistic(model) -> dict:
    return {
        "name": "discretized_logistic",
        "encoder_input": "integer levels 0..255 as float32 (the graph divides by 255)",
        "parameters": {
            "loc": "location on [−1, 1] (level k sits at c_k = k/127.5 − 1)",
            "scale": "scale > 0 (softplus(raw) + 0.001, applied)",
        },
        "support": "integers 0..255",
        "log_prob": (
            "c = x/127.5 − 1, plus = (c + 1/255 − loc)/scale, minus = (c − 1/255 − loc)/scale; "
            "x = 0: log σ(plus); x = 255: log(1 − σ(minus)); otherwise log(σ(plus) − σ(minus)), "
            "or, where that difference is below 1e-5, m − log scale − 2·softplus(m) − log 127.5 "
            "with m = (c − loc)/scale; summed over the event"
        ),
        "mean": "round((clamp(loc, −1, 1) + 1)·127.5) (the bin of the location)",
        "constants": {"levels": 256, "bin_half_width": 1 / 255, "nats_offset_per_dim": 0.0},
    }


_LIKELIHOOD_SPECS = {
    "bernoulli": _bernoulli,
    "gaussian": _gaussian,
    "categorical": _categorical,
    "logistic": _logistic,
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
