"""Run configuration: nested dataclasses ↔ YAML/JSON, with ``section.key=value`` overrides.

A resolved config (every field filled, including the data's ``event_shape``) is saved in every run
directory as ``config.json`` and is enough to rebuild the model alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ModelConfig", "DataConfig", "ObjectiveConfig", "TrainConfig", "Config", "load_config"]


@dataclass
class ModelConfig:
    arch: str = "mlp"  # mlp | conv
    latent_dim: int = 32
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # conv only
    activation: str = "relu"
    likelihood: str = "bernoulli"  # bernoulli | gaussian | categorical | logistic
    gaussian_scale: str = "per_dim"  # per_dim | shared (gaussian only)
    event_shape: list[int] | None = None  # filled from the data
    columns: list[dict] | None = None  # tabular likelihood: column types + statistics (from data)
    # Model family (issue 4; see docs/models.md). kind: vae | cvae | hvae | seqvae | ae
    kind: str = "vae"
    blocks: int = 1  # resnet: residual blocks per stage
    squeeze_excitation: bool = False  # resnet: squeeze-excitation gate in every block
    latent_dims: list[int] = field(default_factory=list)  # hvae: sizes of z_1..z_L, bottom→top
    logscale_clamp: float = 7.0  # hvae: log-scales soft-clamped to (−c, c)
    ladder_width: int = 0  # hvae: width of the bottom-up / top-down networks (0: hidden[-1])
    ladder_merge: str = "residual"  # hvae: q(z_l|z_l+1, x) rule: residual (NVAE) | precision (LVAE)
    prior: str = "normal"  # normal | vamp (mixture of posteriors at learned pseudo-inputs)
    prior_components: int = 500  # vamp: number of pseudo-inputs
    n_classes: int | None = None  # cvae: filled from the data's labels
    embed_dim: int = 128  # seqvae: token embedding width (hidden[0] is the GRU/Transformer width)
    seq_layers: int = 1  # seqvae: GRU / Transformer layers
    heads: int = 4  # seqvae transformer: attention heads
    word_dropout: float = 0.0  # seqvae: decoder input tokens replaced by UNK (training only)
    vocab: list[str] | None = None  # seqvae: filled from the text data (saved with the run)


@dataclass
class DataConfig:
    dataset: str = "mnist"  # mnist | digits | olivetti | folder:PATH | npz:PATH
    binarize: str = "auto"  # auto | dynamic | none ; auto = dynamic for bernoulli on 8-bit data
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


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # constant | cosine | exponential
    lr_final: float = 1e-4  # final learning rate of the cosine / exponential schedule
    clip_norm: float = 100.0  # gradient-norm clip; 0 turns it off
    seed: int = 0
    threads: int = 1  # torch intra-op threads
    deterministic: bool = False  # torch.use_deterministic_algorithms for exact resume
    eval_every: int = 1  # epochs between test-ELBO evaluations
    checkpoint_every: int = 1  # epochs between checkpoints
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        cfg = cls()
        for section, values in (d or {}).items():
            if not hasattr(cfg, section):
                raise ValueError(f"unknown config section {section!r}; sections: {_sections()}")
            for key, value in (values or {}).items():
                cfg.set(f"{section}.{key}", value)
        return cfg

    def set(self, dotted: str, value: Any) -> None:
        """Set ``section.key`` to ``value`` (strings are parsed as YAML scalars/lists)."""
        section, _, key = dotted.partition(".")
        obj = getattr(self, section, None)
        if obj is None or not dataclasses.is_dataclass(obj):
            raise ValueError(f"unknown config section {section!r}; sections: {_sections()}")
        names = {f.name for f in dataclasses.fields(obj)}
        if key not in names:
            raise ValueError(f"unknown config key {dotted!r}; {section} has {sorted(names)}")
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else value
        setattr(obj, key, value)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← YAML/JSON file ← ``{"section.key": value}`` overrides (later wins)."""
    cfg = Config()
    if path is not None:
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config {path} must be a mapping of sections")
        cfg = Config.from_dict(data)
    for key, value in (overrides or {}).items():
        if value is not None:
            cfg.set(key, value)
    return cfg
