"""Run configuration: nested dataclasses ↔ YAML/JSON, with ``section.key=value`` overrides.

A resolved config (every ``auto`` field decided, and ``data_info``: what the dataset told the model)
is saved in every run directory as ``config.json`` and is enough to rebuild the model alone.
Fields that say ``auto`` are decided by the run setup (``run.resolve``) from the dataset's declared
defaults (``data.DATASETS``), then from the model layer's fallbacks (``models.resolve_auto``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "AUTO",
    "ModelConfig",
    "DataConfig",
    "DataInfo",
    "ObjectiveConfig",
    "TrainConfig",
    "Config",
    "ConfigError",
    "load_config",
]

AUTO = "auto"  # decided by the run setup from the dataset (see the module docstring)


class ConfigError(ValueError):
    """A config file, key or value that vaekit cannot use."""


@dataclass
class ModelConfig:
    arch: str = AUTO  # networks.ARCHS: mlp | conv | resnet | gru | transformer
    latent_dim: int = 32
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # conv only
    activation: str = "relu"
    init: str = "he"  # mlp hidden layers: he (He normal, zero bias) | torch (PyTorch's default)
    scale_head: str = "softplus"  # q(z|x)'s σ from the encoder's h: softplus (softplus(h) + 1e-4)
    # | exp (exp(½h), h = log σ²: Kingma & Welling's, Pythae's); kinds vae / cvae
    likelihood: str = AUTO  # likelihoods.LIKELIHOODS
    gaussian_scale: str = "per_dim"  # per_dim | shared (gaussian only)
    # The model family (docs/models.md): models.MODELS, vae | cvae | hvae | seqvae | ae
    kind: str = AUTO
    blocks: int = 1  # resnet: residual blocks per stage
    squeeze_excitation: bool = False  # resnet: squeeze-excitation gate in every block
    latent_dims: list[int] = field(default_factory=list)  # hvae: sizes of z_1..z_L, bottom→top
    logscale_clamp: float = 7.0  # hvae: log-scales soft-clamped to (−c, c)
    ladder_width: int = 0  # hvae: width of the bottom-up / top-down networks (0: hidden[-1])
    ladder_merge: str = "residual"  # hvae: q(z_l|z_l+1, x) rule: residual (NVAE) | precision (LVAE)
    prior: str = "normal"  # normal | vamp (mixture of posteriors at learned pseudo-inputs)
    prior_components: int = 500  # vamp: number of pseudo-inputs
    embed_dim: int = 128  # seqvae: token embedding width (hidden[0] is the GRU/Transformer width)
    seq_layers: int = 1  # seqvae: GRU / Transformer layers
    heads: int = 4  # seqvae transformer: attention heads
    word_dropout: float = 0.0  # seqvae: decoder input tokens replaced by UNK (training only)
    # deep (hierarchical image VAE, models/deep.py): cells' channels per stage from full
    # resolution down; latent scales as downsampling factors, coarsest first; groups per scale
    deep_channels: list[int] = field(default_factory=lambda: [32])
    deep_scales: list[int] = field(default_factory=lambda: [16, 8, 4])
    groups_per_scale: list[int] = field(default_factory=lambda: [1, 1, 1])
    latent_channels: int | list[int] = 8  # deep: channels of each latent group's map (or one
    # count per scale, coarsest first)
    cells: int = 1  # deep: residual cells per block
    ema: float = 0.999  # deep: decay of the weights' moving average used to evaluate (0: none)
    mixture_components: int = 10  # logistic_mixture likelihood: logistics per pixel
    # vae / cvae posterior (models/flows.py): gaussian | iaf | planar (a flow of the Gaussian)
    posterior: str = "gaussian"
    flow_steps: int = 4  # iaf / planar: number of flow steps
    flow_hidden: int = 0  # iaf: MADE hidden units (0: max(4·latent_dim, 64))
    # vqvae (models/vqvae.py): one stride-2 conv per ``channels`` entry, then the quantizer
    code_dim: int = 16  # vqvae: dimension E of each codebook vector
    codebook_size: int = 128  # vqvae: number K of codes
    commitment: float = 0.25  # vqvae: weight β of the commitment loss
    codebook_decay: float = 0.99  # vqvae: EMA decay γ of the codebook
    prior_hidden: int = 128  # vqvae: GRU width of the autoregressive code prior


@dataclass
class DataInfo:
    """What a dataset tells the model, recorded in ``config.json`` (section ``data_info``): the
    event shape, whether values are 8-bit levels, a table's column schema, a text vocabulary,
    the number of label classes. Filled by the run setup; the model is built from it."""

    event_shape: list[int] | None = None
    levels: int | None = None  # 256 for 8-bit data (uint8 levels 0..255), None for floats
    columns: list[dict] | None = None  # tables: column types and statistics
    vocab: list[str] | None = None  # text: the token of each id
    n_classes: int | None = None  # labelled data: number of classes (conditional models)


@dataclass
class DataConfig:
    dataset: str = "mnist"  # data.DATASETS: mnist | digits | olivetti | folder:PATH | ...
    binarize: str = "auto"  # auto | dynamic | none ; auto = dynamic for bernoulli on 8-bit data
    augment: str = AUTO  # none | flip (training images mirrored left-right with prob. ½);
    # auto: what the dataset implies (olivetti, folder: flip), else none
    train_limit: int | None = None
    test_limit: int | None = None
    eval_seed: int = 0  # seed of the one fixed binarization/dequantization of the test split


@dataclass
class ObjectiveConfig:
    name: str = "elbo"  # elbo | iwae
    beta: float = 1.0  # weight on KL in the training loss (the reported bound always uses 1)
    n_samples: int = 1  # Monte-Carlo samples of z per example (elbo) / importance samples K (iwae)
    estimator: str = "reparam"  # encoder gradient: reparam | score | stl | dreg (see objectives)
    baseline: str = "learned"  # score-function baseline: none | mean | learned (net(x) + mean)
    warmup: str = "none"  # KL warm-up of β: none | linear | cyclical
    warmup_steps: int = 0  # linear: steps of the 0→β ramp; cyclical: steps per cycle
    warmup_ratio: float = 0.5  # cyclical: fraction of each cycle spent ramping up
    free_bits: float = 0.0  # KL floor per latent dimension (nats, batch-averaged); 0 = off
    free_bits_per: str = "dim"  # dim | group: the floor per latent layer (hierarchical models)
    kl_balance: bool = False  # NVAE's KL balancing of latent groups during warm-up (β < 1)
    # Variants (penalties.PENALTIES): none | tc | dip-i | dip-ii | mmd | factor. The loss changes,
    # the reported bound stays the ELBO. β (``beta``) weights the KL, for tc the TC term.
    penalty: str = "none"
    tc_alpha: float = 1.0  # tc: weight α of the index-code mutual information
    tc_gamma: float = 1.0  # tc: weight γ of the dimension-wise KL
    tc_estimator: str = "mss"  # tc: mss (minibatch stratified) | mws (minibatch weighted)
    dip_lambda_od: float = 10.0  # dip-*: weight of the off-diagonal covariance terms
    dip_lambda_d: float | None = None  # dip-*: diagonal weight (None: 10·λ_od for I, λ_od for II)
    mmd_lambda: float = 100.0  # mmd: weight λ of MMD²(q(z), p(z)) (WAE: beta 0)
    mmd_kernel: str = "imq"  # mmd: imq | rbf
    mmd_scale: float | None = None  # mmd: squared length scale ℓ² (None: the latent dimension)
    factor_gamma: float = 10.0  # factor: weight γ of the discriminator's TC estimate
    factor_hidden: list[int] = field(default_factory=lambda: [1000] * 6)  # factor: widths
    factor_lr: float = 1e-4  # factor: the discriminator's Adam learning rate (betas 0.5, 0.9)


@dataclass
class TrainConfig:
    epochs: int | None = None  # None: from the dataset's size (see ``run.default_epochs``)
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # constant | cosine | exponential
    lr_final: float = 1e-4  # final learning rate of the cosine / exponential schedule
    clip_norm: float = 100.0  # gradient-norm clip; 0 turns it off
    seed: int = 0
    threads: int = 1  # torch intra-op threads
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast of the forward pass; fp16 on CUDA)
    compile: bool = False  # torch.compile the encoder and decoder networks
    micro_batches: int = 0  # parts of each global batch with their own seeded draws (0: one per
    # process); a run keeps its value, so a resume with another number of processes continues it
    deterministic: bool = False  # torch.use_deterministic_algorithms for exact resume
    eval_every: int = 1  # epochs between test-ELBO evaluations
    checkpoint_every: int = 1  # epochs between checkpoints
    checkpoint_every_steps: int = 0  # also a checkpoint every N optimizer steps (0: off)
    checkpoint_minutes: float = 0.0  # also a checkpoint every N minutes of training (0: off)
    max_nonfinite: int = 20  # consecutive non-finite steps that stop the run
    max_steps: int | None = None  # stop (and checkpoint) after this many optimizer steps in all
    time_limit: float | None = None  # minutes of training after which the run stops cleanly
    images: bool = True  # sample / reconstruction PNGs and TensorBoard image grids
    report_iw_samples: int = 0  # K of a final IWAE evaluation written to metrics (0: none)
    grad_skip: float = 0.0  # skip steps whose gradient norm exceeds this (0: off); counted


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data_info: DataInfo = field(default_factory=DataInfo)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        cfg = cls()
        for section, values in _migrate(d or {}).items():
            if not hasattr(cfg, section):
                raise ConfigError(f"unknown config section {section!r}; sections: {_sections()}")
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a mapping of keys")
            for key, value in (values or {}).items():
                cfg.set(f"{section}.{key}", value)
        return cfg

    def set(self, dotted: str, value: Any) -> None:
        """Set ``section.key`` to ``value`` (strings are parsed as YAML scalars/lists)."""
        section, _, key = dotted.partition(".")
        obj = getattr(self, section, None)
        if obj is None or not dataclasses.is_dataclass(obj):
            raise ConfigError(f"unknown config section {section!r}; sections: {_sections()}")
        names = {f.name for f in dataclasses.fields(obj)}
        if key not in names:
            raise ConfigError(f"unknown config key {dotted!r}; {section} has {sorted(names)}")
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError as e:
                problem = _yaml_problem(e)
                raise ConfigError(f"{dotted}: cannot parse {value!r} ({problem})") from None
        setattr(obj, key, _checked(dotted, typing.get_type_hints(type(obj))[key], value))

    def validate(self) -> Config:
        """Check every value against its field's type and range (see ``set``); ConfigError
        naming the first bad key. For configs built or changed in Python, not through ``set``."""
        for section in dataclasses.fields(self):
            obj = getattr(self, section.name)
            hints = typing.get_type_hints(type(obj))
            for f in dataclasses.fields(obj):
                value = _checked(f"{section.name}.{f.name}", hints[f.name], getattr(obj, f.name))
                setattr(obj, f.name, value)
        return self

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


# Keys that older vaekit versions kept in ``model`` and now live in ``data_info``.
_MOVED_TO_DATA_INFO = ("event_shape", "columns", "vocab", "n_classes")


def _migrate(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict of an older run directory in today's layout (values unchanged)."""
    model = d.get("model")
    if not isinstance(model, dict) or not any(k in model for k in _MOVED_TO_DATA_INFO):
        return d
    model = dict(model)
    info = dict(d.get("data_info") or {})
    for key in _MOVED_TO_DATA_INFO:
        if key in model:
            info.setdefault(key, model.pop(key))
    return {**d, "model": model, "data_info": info}


# Numeric keys that must be positive / non-negative (each entry, for lists); None passes.
POSITIVE = {
    "model": ("latent_dim", "hidden", "channels", "blocks", "latent_dims", "prior_components",
              "embed_dim", "seq_layers", "heads", "deep_channels", "cells", "mixture_components",
              "flow_steps", "code_dim", "codebook_size", "prior_hidden"),
    "objective": ("n_samples",),
    "train": ("epochs", "batch_size", "lr", "threads", "eval_every", "checkpoint_every",
              "max_nonfinite", "max_steps", "time_limit"),
}  # fmt: skip
NON_NEGATIVE = {
    "model": ("word_dropout", "ladder_width", "flow_hidden"),
    "data": ("train_limit", "test_limit"),
    "objective": ("beta", "free_bits", "warmup_steps"),
    "train": ("lr_final", "clip_norm", "micro_batches", "checkpoint_every_steps",
              "checkpoint_minutes", "report_iw_samples", "grad_skip"),
}  # fmt: skip
_KINDS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a finite number", "numbers"), str: ("a string", "strings"),
          dict: ("a mapping", "mappings")}  # fmt: skip


def _describe(hint) -> str:
    """``int | None`` → "an integer or null", ``list[int]`` → "a list of integers"."""
    if typing.get_origin(hint) is list:
        return f"a list of {_KINDS[typing.get_args(hint)[0]][1]}"
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    return _KINDS[hint][0] if hint in _KINDS else getattr(hint, "__name__", str(hint))


def _typed(hint, value):
    """``value`` as the type ``hint`` (a float field also takes an int or a number written as
    text, e.g. ``1e-3``, which YAML 1.1 reads as a string); raises TypeError if it is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _typed(a, value)
            except TypeError:
                pass
        raise TypeError
    if origin is list:
        if not isinstance(value, list | tuple):
            raise TypeError
        return [_typed(args[0], v) for v in value] if args else list(value)
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise TypeError from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError
        if not math.isfinite(value):
            raise TypeError
        return value if isinstance(value, int | float) else float(value)
    if hint is int:  # NumPy integers too, as plain ints (config.json is JSON)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError
        return int(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise TypeError
    return value


def _checked(dotted: str, hint, value):
    """``value`` for the key ``dotted`` of type ``hint``, in its range; ConfigError otherwise."""
    try:
        value = _typed(hint, value)
    except TypeError:
        raise ConfigError(f"{dotted} must be {_describe(hint)}, got {value!r}") from None
    section, _, key = dotted.partition(".")
    values = value if isinstance(value, list) else [] if value is None else [value]
    for table, ok, what in ((POSITIVE, lambda v: v > 0, "positive"),
                            (NON_NEGATIVE, lambda v: v >= 0, "non-negative")):  # fmt: skip
        if key in table.get(section, ()) and not all(ok(v) for v in values):
            raise ConfigError(f"{dotted} must be {what}, got {value!r}")
    return value


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where (line, column)."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or ' '.join(str(e).split())}{where}"


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← YAML/JSON file ← ``{"section.key": value}`` overrides (later wins)."""
    cfg = Config()
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse config {path}: {_yaml_problem(e)}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of sections")
        cfg = Config.from_dict(data)
    for key, value in (overrides or {}).items():
        if value is not None:
            cfg.set(key, value)
    return cfg
