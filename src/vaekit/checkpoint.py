"""Run directories: self-describing, pickle-free, atomically written, verified on load.

    RUN/config.json           fully resolved config (enough to rebuild the model alone)
    RUN/model.safetensors     weights
    RUN/state/tensors.safetensors  optimizer moments, RNG states, the epoch's data order
    RUN/state/trainer.json    epoch, step, optimizer hyper-parameters, counters
    RUN/manifest.json         sha256 of every file above, written last

Every file is written to a temporary name and renamed into place; the manifest goes last, so a
checkpoint is complete exactly when its manifest matches. ``load_run`` refuses a run whose files do
not match their manifest (corrupt, truncated or tampered) with a ``CheckpointError``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import Config
from .models import VAE, build_model

__all__ = ["CheckpointError", "save_checkpoint", "load_run", "load_state", "verify_manifest"]

MANIFEST = "manifest.json"
CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "state/tensors.safetensors",
    "state/trainer.json",
)


class CheckpointError(RuntimeError):
    """A run directory that is missing, incomplete, corrupt or tampered with."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then fsync and rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(path, lambda p: save_file(clean, str(p)))


def _split_optimizer_state(
    state: dict, prefix: str = "opt"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer ``state_dict`` → (tensors keyed ``<prefix>.<param>.<name>``, JSON-able rest)."""
    tensors, scalars = {}, {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict, prefix="opt") -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(f"{prefix}."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run: Path,
    cfg: Config,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    trainer: dict,
    tensors: dict[str, torch.Tensor],
    extra_optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> None:
    """Write config, weights, optimizer + trainer state and RNG tensors, then the manifest.

    ``extra_optimizers`` (name → optimizer, e.g. FactorVAE's discriminator Adam) are saved beside
    the main one: tensors ``opt_<name>.<param>.<state>``, the rest under ``optimizers.<name>``."""
    run = Path(run)
    opt_tensors, opt_meta = _split_optimizer_state(optimizer.state_dict())
    extra_meta = {}
    for name, opt in (extra_optimizers or {}).items():
        t, extra_meta[name] = _split_optimizer_state(opt.state_dict(), f"opt_{name}")
        opt_tensors.update(t)
    trainer = {**trainer, "optimizer": opt_meta}
    if extra_meta:
        trainer["optimizers"] = extra_meta
    _write_json(run / "config.json", cfg.to_dict())
    _write_tensors(run / "model.safetensors", model.state_dict())
    _write_tensors(run / "state/tensors.safetensors", {**opt_tensors, **tensors})
    _write_json(run / "state/trainer.json", trainer)
    _write_json(run / MANIFEST, {"files": {f: _sha256(run / f) for f in CHECKPOINT_FILES}})


def verify_manifest(run: Path, files=("config.json", "model.safetensors")) -> None:
    """Check that ``files`` exist and match the manifest's sha256, or raise ``CheckpointError``."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"{run} is not a run directory")
    try:
        manifest = json.loads((run / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{run} has no {MANIFEST}: not a finished checkpoint") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{run / MANIFEST} is corrupt: {e}") from None
    for name in files:
        path = run / name
        if not path.exists():
            raise CheckpointError(f"{path} is missing")
        if manifest.get(name) != _sha256(path):
            raise CheckpointError(
                f"{path} does not match its sha256 in {MANIFEST}: the file is corrupt or was "
                "modified after it was written"
            )


def load_config_of(run: Path) -> Config:
    try:
        return Config.from_dict(json.loads((Path(run) / "config.json").read_text()))
    except (OSError, json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{run}/config.json is not a valid vaekit config: {e}") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def _load_weights(run: Path, model: VAE) -> None:
    try:
        model.load_state_dict(_load_tensors(run / "model.safetensors"), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{run}/model.safetensors does not fit its config: {e}") from None


def load_run(run: str | Path) -> VAE:
    """The trained model of a run directory (manifest verified), in eval mode, on the CPU.

    The run's resolved config is attached as ``model.run_config``.
    """
    run = Path(run)
    verify_manifest(run)
    cfg = load_config_of(run)
    model = build_model(cfg.model, cfg.data_info)
    _load_weights(run, model)
    model.run_config = cfg
    return model.eval()


def load_state(
    run: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    extra_optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> tuple[dict, dict]:
    """Restore weights and optimizers (the main one and ``extra_optimizers`` saved by name);
    return (trainer JSON, the other tensors) of a checkpoint."""
    run = Path(run)
    verify_manifest(run, CHECKPOINT_FILES)
    _load_weights(run, model)
    trainer = json.loads((run / "state/trainer.json").read_text())
    tensors = _load_tensors(run / "state/tensors.safetensors")
    optimizer.load_state_dict(_join_optimizer_state(tensors, trainer.pop("optimizer")))
    saved = trainer.pop("optimizers", {})
    for name, opt in (extra_optimizers or {}).items():
        if name not in saved:
            raise CheckpointError(f"{run}: the checkpoint has no state of optimizer {name!r}")
        opt.load_state_dict(_join_optimizer_state(tensors, saved[name], f"opt_{name}"))
    return trainer, {k: v for k, v in tensors.items() if not k.startswith(("opt.", "opt_"))}
