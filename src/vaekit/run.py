"""Run setup, outside the training loop: dataset → resolved config → model, data preparation,
objective, optimizer, and (on resume) the saved state.

``resolve(cfg, ds)`` decides every ``auto`` field and records what the dataset tells the model
(``DataInfo``): first the dataset kind's declared defaults (``data.DATASETS[...].implies``), then
the model layer's fallbacks (``models.resolve_auto``), then the training length
(``default_epochs``). ``setup`` builds everything ``train`` needs, in an order that keeps seeded
runs bit-identical: the objective gets the training-set size (β-TCVAE's estimators) and, for
FactorVAE, its discriminator's own Adam (``Run.aux_optimizer``), checkpointed beside the main one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import load_config_of, load_state, reset_run
from .config import AUTO, Config, ConfigError, DataInfo
from .data import DataPrep, Dataset, load_dataset
from .data.registry import check_trainable
from .devices import autocast, grad_scaler, resolve_device
from .distributed import World, init_world
from .models import VAE, build_model, resolve_auto
from .objectives import Objective, objective_from_config

__all__ = ["Run", "setup", "resolve", "data_info_of", "default_epochs", "DEFAULT_STEPS"]

DEFAULT_STEPS = 10_000  # optimizer steps a run aims at when train.epochs is not given
EPOCH_RANGE = (10, 1000)  # ... within this many epochs
FEW_STEPS = 1_000  # fewer optimizer steps in all than this: the run says so


@dataclass
class Run:
    """Everything the training loop needs, built by ``setup``."""

    cfg: Config
    out: Path
    ds: Dataset
    model: VAE
    prep: DataPrep  # raw batches → values in the likelihood's support
    x_test: Tensor  # the test split, prepared once with a fixed seed
    objective: Objective
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # data order and binarization
    n_batches: int  # optimizer steps per epoch
    device: torch.device = torch.device("cpu")
    scaler: torch.amp.GradScaler | None = None  # float16 training only
    world: World = World()  # this process among the data-parallel processes
    aux_optimizer: torch.optim.Optimizer | None = None  # the objective's own (FactorVAE's D)
    epoch: int = 0  # where the loop starts (a resumed run: where it stopped)
    step: int = 0
    batch_in_epoch: int = 0
    perm: Tensor | None = None  # the interrupted epoch's data order
    nonfinite: int = 0  # steps skipped so far: a non-finite loss or gradient
    grad_skipped: int = 0  # steps skipped so far: a gradient spike (train.grad_skip)


def data_info_of(ds: Dataset) -> DataInfo:
    """What ``ds`` tells a model: event shape, 8-bit levels, table columns, vocabulary, classes."""
    return DataInfo(
        event_shape=list(ds.event_shape),
        levels=256 if ds.discrete else None,
        columns=None if ds.schema is None else ds.schema["columns"],
        vocab=None if ds.vocab is None else list(ds.vocab),
        n_classes=ds.n_classes,
    )


def default_epochs(n_batches: int) -> int:
    """Epochs for about ``DEFAULT_STEPS`` optimizer steps, within ``EPOCH_RANGE``."""
    return int(
        min(max(math.ceil(DEFAULT_STEPS / max(n_batches, 1)), EPOCH_RANGE[0]), EPOCH_RANGE[1])
    )


def resolve(
    cfg: Config, ds: Dataset, saved: DataInfo | None = None, world: World = World()
) -> Config:
    """A copy of ``cfg`` with every ``auto`` decided for ``ds`` and ``data_info`` filled.

    ``saved`` (a resumed run's ``data_info``) must agree with the data: a changed table schema,
    vocabulary or shape means the data changed since training started."""
    cfg = copy.deepcopy(cfg)
    info = data_info_of(ds)
    if saved is not None:
        for f in dataclasses.fields(DataInfo):
            old, new = getattr(saved, f.name), getattr(info, f.name)
            if old is not None and new is not None and old != new:
                raise ValueError(
                    f"the data's {f.name} differs from the run's: the dataset changed since "
                    "training started"
                )
            setattr(info, f.name, old if old is not None else new)
    cfg.data_info = info
    for key, value in ds.implies.items():
        section, _, name = key.partition(".")
        if getattr(getattr(cfg, section), name) == AUTO:
            cfg.set(key, value)
    if cfg.data.augment == AUTO:  # the dataset implied nothing: no augmentation
        cfg.data.augment = "none"
    cfg.model = resolve_auto(cfg.model, info)
    if cfg.train.epochs is None:
        cfg.train.epochs = default_epochs(batches_per_epoch(len(ds.train), cfg.train.batch_size))
    tc = cfg.train
    tc.micro_batches = tc.micro_batches or world.size
    if tc.micro_batches % world.size or tc.batch_size % tc.micro_batches:
        raise ValueError(
            f"train.micro_batches ({tc.micro_batches}) must be a multiple of the number of "
            f"processes ({world.size}) and divide train.batch_size ({tc.batch_size})"
        )
    return cfg


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch: the ragged last batch is dropped (at least one step)."""
    if batch_size < 1:
        raise ValueError(f"train.batch_size must be at least 1, got {batch_size}")
    return max(n // batch_size, 1)


def setup(
    cfg: Config | None,
    out: str | Path,
    *,
    resume: bool = False,
    data_dir=None,
    dataset: Dataset | None = None,
    log=print,
) -> Run:
    """Build a run at ``out``: a new one from ``cfg``, or (``resume``) the saved one, where only
    the schedule length and the stopping rules of ``cfg`` replace the saved values."""
    out = Path(out)
    saved_info = None
    if resume:
        saved = load_config_of(out)
        # A stop that interrupted the run does not carry over.
        saved.train.max_steps = saved.train.time_limit = None
        if saved.data.augment == AUTO:  # saved before augmentation existed: it trained without
            saved.data.augment = "none"
        if cfg is not None:
            saved.train.epochs = cfg.train.epochs or saved.train.epochs
            saved.train.max_steps = cfg.train.max_steps
            saved.train.time_limit = cfg.train.time_limit
        cfg, saved_info = saved, saved.data_info
    cfg.validate()  # a config built or changed in Python skipped ``Config.set``'s checks
    tc = cfg.train
    torch.set_num_threads(tc.threads)
    if torch.are_deterministic_algorithms_enabled() != tc.deterministic:
        torch.use_deterministic_algorithms(tc.deterministic)  # its first call costs ~2 s of imports
    torch.manual_seed(tc.seed)

    device = resolve_device(tc.device)
    autocast(device, tc.precision)  # refuses an unknown precision, or fp16 without CUDA
    world = init_world(device)
    if world.size > 1 and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)

    ds = dataset or load_dataset(  # ``dataset``: in-memory data (e.g. a DataFrame's table)
        cfg.data.dataset, data_dir, train_limit=cfg.data.train_limit, test_limit=cfg.data.test_limit
    )
    check_trainable(ds)
    cfg = resolve(cfg, ds, saved_info, world)
    tc = cfg.train
    oc = cfg.objective
    if oc.free_bits > 0 and oc.free_bits_per == "dim" and cfg.model.prior != "normal":
        raise ConfigError(
            f"per-dimension free bits need a KL that splits over latent dimensions; the "
            f"{cfg.model.prior} prior has none (its per-dim KLs are marginal, see "
            "distributions.kl_terms): set objective.free_bits_per=group or model.prior=normal"
        )
    model = build_model(cfg.model, cfg.data_info)
    prep = DataPrep(model.likelihood, cfg.data.binarize, cfg.data.augment)
    cfg.data.binarize, cfg.data.augment = prep.binarize, prep.augment
    x_test = prep.fixed(ds.test, seed=cfg.data.eval_seed)
    model.check(x_test)  # one clear error up front instead of NaNs later
    model.check(prep(ds.train[: tc.batch_size], torch.Generator().manual_seed(0)))
    # may learn: a baseline (optimized with the model), a discriminator (its own Adam)
    objective = objective_from_config(cfg.objective, model, dataset_size=len(ds.train))
    model.to(device)
    objective.to(device)
    if tc.compile:
        # The whole loss (encode, rsample, decode, log-likelihood, KL) as one graph, in place:
        # parameter names (and so checkpoints) stay as they are. Compiling the encoder and
        # decoder alone was slower than eager on the CPU (benchmarks/step_speed.py).
        objective.compile()
    # fused Adam: one kernel per step on the CPU instead of a Python loop over parameters.
    optimizer = torch.optim.Adam(
        [*model.parameters(), *objective.main_parameters()], lr=tc.lr, fused=True
    )
    run = Run(
        cfg, out, ds, model, prep, x_test, objective, optimizer,
        gen=torch.Generator().manual_seed(tc.seed),
        n_batches=batches_per_epoch(len(ds.train), tc.batch_size),
        device=device,
        scaler=grad_scaler(device, tc.precision),
        world=world,
        aux_optimizer=objective.make_aux_optimizer(),
    )  # fmt: skip
    total = run.n_batches * tc.epochs
    if (total < FEW_STEPS or run.n_batches < 5) and world.main:
        log(
            f"note: this run makes {total} optimizer steps ({run.n_batches} per epoch over "
            f"{len(ds.train)} training examples, batch size {tc.batch_size}); a smaller "
            "--batch-size or more --epochs trains longer"
        )
    if resume:
        _restore(run, log if world.main else _quiet)
    elif world.main:
        out.mkdir(parents=True, exist_ok=True)
        reset_run(out)  # a run started over in an old run's directory must not resume the old one
        cfg.save(out / "config.json")
    world.barrier()
    return run


def _quiet(*args) -> None:
    pass


def _restore(run: Run, log) -> None:
    """Load a resumed run's weights, optimizer, RNG states, data order and counters."""
    aux = {"aux": run.aux_optimizer} if run.aux_optimizer is not None else None
    trainer, tensors = load_state(run.out, run.model, run.optimizer, aux)
    run.epoch, run.step = trainer["epoch"], trainer["step"]
    run.batch_in_epoch = trainer["batch_in_epoch"]
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and run.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], run.device)
    run.gen.set_state(tensors["rng.data"])
    run.perm = tensors.get("data.perm")
    run.nonfinite = int(trainer.get("nonfinite", 0))
    run.grad_skipped = int(trainer.get("grad_skipped", 0))
    run.objective.load_state_dict(
        {k[len("objective.") :]: v for k, v in tensors.items() if k.startswith("objective.")}
    )
    _trim_metrics(run.out / "metrics.jsonl", run.step)
    log(f"resuming {run.out} at epoch {run.epoch + 1}, step {run.step}")


def _trim_metrics(path: Path, step: int) -> None:
    """Drop the rows of ``metrics.jsonl`` written after the checkpoint a run resumes from (and a
    line cut short by a crash), so that the resumed epochs are not listed twice."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step and line.endswith("\n"):
            kept.append(line)
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
