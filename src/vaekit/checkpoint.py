"""Run directories: self-describing, pickle-free, crash-safe, verified on load.

    RUN/ckpt/000003-step-000000045/    one complete checkpoint (serial 3, optimizer step 45)
        config.json                    fully resolved config (enough to rebuild the model alone)
        model.safetensors              weights
        state/tensors.safetensors      optimizer moments, RNG states, the epoch's data order
        state/trainer.json             epoch, step, optimizer hyper-parameters, counters
        manifest.json                  sha256 of the four files above
    RUN/ckpt/LATEST                    the name of the current checkpoint folder
    RUN/config.json, RUN/model.safetensors   copies of the current checkpoint's, for users/tools
    RUN/manifest.json                  their sha256 and the checkpoint they were copied from
    RUN/.lock                          held (flock) by the process training the run

A checkpoint is written completely into ``ckpt/.tmp-NAME/`` (every file and folder fsynced),
renamed to ``ckpt/NAME``, and committed by atomically replacing ``ckpt/LATEST``; only then are the
top-level copies replaced (each atomically) and the previous folders deleted. A crash at any
instant leaves one complete, verifiable checkpoint: ``--resume`` (``load_state``) reads only
``ckpt/`` (LATEST, else the newest complete folder, with a warning), and ``load_run`` reads the
top-level copies, falling back to ``ckpt/LATEST`` only when they are provably stale (their
manifest names another checkpoint). Runs written before ``ckpt/`` existed (the four files and the
manifest at the top level) still load and resume. Tests kill the writer between any two file
operations through ``file_op_hook`` or ``VAEKIT_TEST_KILL_AFTER_WRITE=N``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .config import Config
from .files import fsync_dir, sha256_file
from .models import VAE, build_model

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "acquire_run_lock",
    "latest_checkpoint",
    "load_config_of",
    "load_run",
    "load_state",
    "reset_run",
    "run_write_error",
    "save_checkpoint",
    "verify_manifest",
]

MANIFEST = "manifest.json"
CKPT = "ckpt"
LATEST = "LATEST"
LOCK = ".lock"
PUBLISHED = ("config.json", "model.safetensors")  # the top-level copies users and tools read
CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "state/tensors.safetensors",
    "state/trainer.json",
)
_NAME = re.compile(r"^(\d{6,})-step-(\d{9,})$")  # serial, step
KILL_ENV = "VAEKIT_TEST_KILL_AFTER_WRITE"

# Test hook: called as ``file_op_hook(kind, path)`` after every file operation of a checkpoint
# write (kind: mkdir, write, rename, switch, delete); ``VAEKIT_TEST_KILL_AFTER_WRITE=N`` SIGKILLs
# the process right after its N-th operation.
file_op_hook: Callable[[str, Path], None] | None = None
_ops_done = 0


class CheckpointError(RuntimeError):
    """A run directory that is missing, incomplete, corrupt, tampered with, locked or unwritable."""


class CheckpointWarning(UserWarning):
    """A fallback was taken: an older checkpoint or the ``ckpt/`` copy instead of the top level."""


# ---- low-level file operations (each one a point where a test may kill the process) ------------


def _did(kind: str, path: Path) -> None:
    global _ops_done
    _ops_done += 1
    if file_op_hook is not None:
        file_op_hook(kind, path)
    kill_at = os.environ.get(KILL_ENV)
    if kill_at and _ops_done == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


def _write_bytes(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` and fsync it (tests monkeypatch this to inject OSErrors)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write(path: Path, data: bytes) -> None:
    _write_bytes(path, data)
    _did("write", path)


def _replace(src: Path, dst: Path, kind: str = "rename") -> None:
    os.replace(src, dst)
    fsync_dir(dst.parent)
    _did(kind, dst)


def _atomic_write(path: Path, data: bytes, kind: str = "rename") -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write(tmp, data)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _replace(tmp, path, kind)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


# ---- optimizer state <-> safetensors + JSON -----------------------------------------------------


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


# ---- writing ------------------------------------------------------------------------------------


def _folders(ckpt: Path) -> list[tuple[int, str]]:
    """(serial, name) of the checkpoint folders in ``ckpt`` (complete or not), newest first."""
    if not ckpt.is_dir():
        return []
    found = [(int(m[1]), p.name) for p in ckpt.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def _read_latest(ckpt: Path) -> str | None:
    try:
        name = (ckpt / LATEST).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _NAME.match(name) else None


def save_checkpoint(
    run: Path,
    cfg: Config,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    trainer: dict,
    tensors: dict[str, torch.Tensor],
    extra_optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> None:
    """Write a complete checkpoint folder, switch ``ckpt/LATEST`` to it, publish the top-level
    config and weights, delete the previous folders. On an ``OSError`` (disk full, read-only
    directory) raise ``CheckpointError``; the previous checkpoint stays intact and loadable.

    ``extra_optimizers`` (name → optimizer, e.g. FactorVAE's discriminator Adam) are saved beside
    the main one: tensors ``opt_<name>.<param>.<state>``, the rest under ``optimizers.<name>``."""
    run = Path(run)
    ckpt = run / CKPT
    opt_tensors, opt_meta = _split_optimizer_state(optimizer.state_dict())
    extra_meta = {}
    for key, opt in (extra_optimizers or {}).items():
        t, extra_meta[key] = _split_optimizer_state(opt.state_dict(), f"opt_{key}")
        opt_tensors.update(t)
    trainer = {**trainer, "optimizer": opt_meta}
    if extra_meta:
        trainer["optimizers"] = extra_meta
    files = {
        "config.json": _json_bytes(cfg.to_dict()),
        "model.safetensors": _tensor_bytes(model.state_dict()),
        "state/tensors.safetensors": _tensor_bytes({**opt_tensors, **tensors}),
        "state/trainer.json": _json_bytes(trainer),
    }
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    previous = _read_latest(ckpt)
    serial = max([s for s, _ in _folders(ckpt)] + [0]) + 1
    name = f"{serial:06d}-step-{int(trainer.get('step', 0)):09d}"
    tmp = ckpt / f".tmp-{name}"
    committed = False
    try:
        ckpt.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "state").mkdir(parents=True)
        _did("mkdir", tmp)
        for rel, data in files.items():
            _write(tmp / rel, data)
        _write(tmp / MANIFEST, _json_bytes({"files": sha, "serial": serial}))
        fsync_dir(tmp / "state")
        fsync_dir(tmp)
        _replace(tmp, ckpt / name)
        _atomic_write(ckpt / LATEST, f"{name}\n".encode(), kind="switch")  # the commit point
        committed = True
        _publish(run, name, {f: files[f] for f in PUBLISHED})
    except OSError as e:
        if not committed:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(_write_failure(run, name, previous, committed, e)) from e
    _delete_except(ckpt, keep={name, LATEST})
    legacy = run / "state"
    if legacy.is_dir():  # a run that began before ckpt/: its top-level state is superseded
        shutil.rmtree(legacy, ignore_errors=True)
        _did("delete", legacy)


def _publish(run: Path, name: str, files: dict[str, bytes]) -> None:
    """Replace the top-level copies (each atomically), then their manifest naming ``name``."""
    for rel, data in files.items():
        _atomic_write(run / rel, data)
    sha = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    _atomic_write(run / MANIFEST, _json_bytes({"files": sha, "checkpoint": name}))


def _delete_except(ckpt: Path, keep: set[str]) -> None:
    """Delete earlier checkpoints and leftovers of interrupted ones (failures only warn)."""
    for path in sorted(ckpt.iterdir()):
        if path.name in keep or not (_NAME.match(path.name) or path.name.startswith(".tmp-")):
            continue
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError as e:
            warnings.warn(f"could not delete old checkpoint {path}: {e}", CheckpointWarning, 3)
            continue
        _did("delete", path)


_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "the run directory is not writable",
    errno.EPERM: "the run directory is not writable",
}


def _write_failure(run: Path, name: str, previous: str | None, committed: bool, e) -> str:
    reason = _REASONS.get(e.errno, "a write failed")
    detail = f"{e.strerror or e} ({e.filename})" if e.filename else str(e)
    if committed:
        return (
            f"checkpoint {run / CKPT / name} was saved, but replacing {run}/config.json and "
            f"model.safetensors failed because {reason}: {detail}. `--resume {run}` continues "
            "from the saved checkpoint and repairs them"
        )
    if previous is not None:
        kept = f"the previous checkpoint {run / CKPT / previous} is intact"
    elif (run / MANIFEST).exists():
        kept = f"the previous checkpoint in {run} is intact"
    else:
        kept = "there is no earlier checkpoint"
    if previous is not None or (run / MANIFEST).exists():
        kept += f": `vaekit train --resume {run}` continues from it once the cause is fixed"
    return f"could not write checkpoint {name} into {run / CKPT} because {reason}: {detail}; {kept}"


def run_write_error(run: str | Path, e: OSError) -> CheckpointError | None:
    """The ``CheckpointError`` for a write into a run directory that failed outside a checkpoint
    (metrics.jsonl, TensorBoard, pictures) because the disk is full or the directory read-only;
    None for any other ``OSError``."""
    if e.errno not in _REASONS:
        return None
    run = Path(run)
    where = e.filename or run
    latest = latest_checkpoint(run)
    kept = (
        f"the last checkpoint {latest} is intact: `vaekit train --resume {run}` continues from "
        "it once the cause is fixed"
        if latest is not None
        else "there is no checkpoint yet: start the run again once the cause is fixed"
    )
    return CheckpointError(
        f"training stopped: could not write {where} because {_REASONS[e.errno]} "
        f"({e.strerror or e}); {kept}"
    )


def reset_run(run: str | Path) -> None:
    """Remove a run's checkpoints (``ckpt/``, the top-level manifest and legacy ``state/``) and
    its curves (``metrics.jsonl``, ``tb/``), so a fresh run written into an old run's directory
    can neither resume the old one nor list its epochs beside the old ones."""
    run = Path(run)
    for name in (MANIFEST, "metrics.jsonl"):
        (run / name).unlink(missing_ok=True)
    for sub in (CKPT, "state", "tb"):
        shutil.rmtree(run / sub, ignore_errors=True)


# ---- reading ------------------------------------------------------------------------------------


def verify_manifest(run: Path, files=PUBLISHED) -> None:
    """Check that ``files`` exist and match the manifest's sha256, or raise ``CheckpointError``."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"{run} is not a run directory")
    try:
        manifest = json.loads((run / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{run} has no {MANIFEST}: not a finished checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{run / MANIFEST} is corrupt: {e}") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{run / MANIFEST} is corrupt: 'files' is not a mapping")
    for name in files:
        path = run / name
        if not path.exists():
            raise CheckpointError(f"{path} is missing")
        if manifest.get(name) != sha256_file(path):
            raise CheckpointError(
                f"{path} does not match its sha256 in {MANIFEST}: the file is corrupt or was "
                "modified after it was written"
            )


def _checkpoint_dir(run: Path, warn: bool = True) -> Path:
    """The folder ``--resume`` reads: ``ckpt/LATEST``, else the newest complete ``ckpt/`` folder
    (with a warning), else a run in the layout before ``ckpt/`` (the run directory itself)."""
    if not run.is_dir():
        raise CheckpointError(f"{run} is not a run directory")
    ckpt = run / CKPT
    problems = []
    latest = _read_latest(ckpt)
    if latest is not None:
        try:
            verify_manifest(ckpt / latest, CHECKPOINT_FILES)
            return ckpt / latest
        except CheckpointError as e:
            problems.append(f"{CKPT}/{LATEST} points to {latest}, which is unusable ({e})")
    elif ckpt.is_dir():
        problems.append(f"{ckpt / LATEST} is missing or corrupt")
    for _, name in _folders(ckpt):
        if name == latest:
            continue
        try:
            verify_manifest(ckpt / name, CHECKPOINT_FILES)
        except CheckpointError as e:
            problems.append(f"{CKPT}/{name} is incomplete or corrupt ({e})")
            continue
        if warn:
            warnings.warn(
                f"{'; '.join(problems)}; resuming from the newest complete checkpoint "
                f"{ckpt / name} instead",
                CheckpointWarning,
                stacklevel=3,
            )
        return ckpt / name
    try:  # a run written before ckpt/ existed, or a crash during its first new-layout checkpoint
        verify_manifest(run, CHECKPOINT_FILES)
        return run
    except CheckpointError as e:
        if not problems:
            raise
        raise CheckpointError(
            f"{run} has no complete checkpoint to resume from ({'; '.join(problems)}; {e}); "
            "a run stopped before its first checkpoint must be started again"
        ) from None


def latest_checkpoint(run: str | Path) -> Path | None:
    """The verified checkpoint folder ``--resume`` would continue from, or None when there is
    none yet (e.g. a run stopped before its first checkpoint). Holds ``state/trainer.json``."""
    try:
        return _checkpoint_dir(Path(run), warn=False)
    except CheckpointError:
        return None


def _read_config(path: Path) -> Config:
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: not a run directory") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid vaekit config: {e}") from None


def load_config_of(run: Path) -> Config:
    """The resolved config a run resumes with (its latest complete checkpoint's), else the
    top-level ``config.json`` a run writes when it starts."""
    run = Path(run)
    source = latest_checkpoint(run) or run
    return _read_config(source / "config.json")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def _load_weights(source: Path, model: VAE) -> None:
    try:
        model.load_state_dict(_load_tensors(source / "model.safetensors"), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source}/model.safetensors does not fit its config: {e}") from None


def _published_from(run: Path) -> str | None:
    """The checkpoint the top-level copies say they came from (None: legacy or unreadable)."""
    try:
        name = json.loads((run / MANIFEST).read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def load_run(run: str | Path) -> VAE:
    """The trained model of a run directory (manifest verified), in eval mode, on the CPU.

    Reads the top-level ``config.json`` and ``model.safetensors``; a tampered or corrupt one is
    refused, unless a checkpoint was interrupted while replacing them (their manifest names an
    older checkpoint than ``ckpt/LATEST``): then ``ckpt/LATEST`` is read, with a warning. The
    run's resolved config is attached as ``model.run_config``.
    """
    run = Path(run)
    source = run
    try:
        verify_manifest(run)
    except CheckpointError as e:
        latest = _read_latest(run / CKPT)
        if latest is None or not (run / MANIFEST).exists() or _published_from(run) == latest:
            raise
        try:
            verify_manifest(run / CKPT / latest)
        except CheckpointError:
            raise e from None
        source = run / CKPT / latest
        warnings.warn(
            f"{e}; the top-level copies are from an earlier checkpoint (one was interrupted while "
            f"replacing them): loading {source} instead",
            CheckpointWarning,
            stacklevel=2,
        )
    cfg = _read_config(source / "config.json")
    model = build_model(cfg.model, cfg.data_info)
    _load_weights(source, model)
    model.run_config = cfg
    return model.eval()


def load_state(
    run: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    extra_optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> tuple[dict, dict]:
    """Restore weights and optimizers (the main one and ``extra_optimizers`` saved by name) from
    the latest complete checkpoint; return (trainer JSON, the other tensors). Also re-publishes
    the top-level copies when a crash left them stale."""
    run = Path(run)
    source = _checkpoint_dir(run)
    _load_weights(source, model)
    try:
        trainer = json.loads((source / "state/trainer.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{source}/state/trainer.json is corrupt: {e}") from None
    tensors = _load_tensors(source / "state/tensors.safetensors")
    try:
        optimizer.load_state_dict(_join_optimizer_state(tensors, trainer.pop("optimizer")))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{source}: optimizer state does not fit the model: {e}") from None
    saved = trainer.pop("optimizers", {})
    for key, opt in (extra_optimizers or {}).items():
        if key not in saved:
            raise CheckpointError(f"{source}: the checkpoint has no state of optimizer {key!r}")
        opt.load_state_dict(_join_optimizer_state(tensors, saved[key], f"opt_{key}"))
    if source != run:
        _repair_published(run, source)
        if source.name == _read_latest(run / CKPT):  # committed: leftovers of a crash can go
            _delete_except(run / CKPT, keep={source.name, LATEST})
    return trainer, {k: v for k, v in tensors.items() if not k.startswith(("opt.", "opt_"))}


def _repair_published(run: Path, source: Path) -> None:
    """Make the top-level copies equal ``source``'s if a crash (or an edit) left them otherwise."""
    try:
        if _published_from(run) == source.name:
            verify_manifest(run)
            return
    except CheckpointError:
        pass
    try:
        _publish(run, source.name, {f: (source / f).read_bytes() for f in PUBLISHED})
    except OSError as e:
        raise CheckpointError(
            f"could not restore {run}/config.json and model.safetensors from {source}: {e}"
        ) from e


# ---- one trainer per run directory --------------------------------------------------------------

_HELD: dict[Path, list[int]] = {}  # run (resolved) -> [descriptor, reference count, owner pid]


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``, held until ``release()`` or process exit."""

    def __init__(self, path: Path):
        self.path = path
        self._held = True

    def release(self) -> None:
        held = _HELD.get(self.path)
        if not self._held or held is None or held[2] != os.getpid():
            return
        self._held = False
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self.path]
            os.close(held[0])  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_run_lock(run: str | Path) -> RunLock:
    """Lock a run directory for one training process, or raise ``CheckpointError`` naming the
    process that holds it. Re-entrant within a process; released on exit, even on SIGKILL."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"{run} is not a run directory")
    key = run.resolve()
    if key in _HELD and _HELD[key][2] == os.getpid():  # not a lock inherited through fork()
        _HELD[key][1] += 1
        return RunLock(key)
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise CheckpointError(f"cannot lock {run / LOCK}: {e}") from e
        raise CheckpointError(
            f"{run} is in use: another vaekit process ({holder}) is training it; wait for it "
            "to finish, stop it, or train into another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    _HELD[key] = [fd, 1, os.getpid()]
    return RunLock(key)
