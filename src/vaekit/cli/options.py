"""Option helpers shared by the command modules: the common ``--data-dir``, list parsers, presets,
the one ``--set`` parser, the table of ``vaekit train`` flags (whose choices come from the
registries), and reading a run's data split."""

from __future__ import annotations

import argparse
import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .. import images
from ..config import Config, load_config
from ..data import AUGMENT, BINARIZE, DATASETS, DataPrep, load_dataset
from ..devices import PRECISIONS
from ..likelihoods import LIKELIHOODS
from ..models import MODELS, POSTERIORS
from ..networks import ARCHS, SEQUENCE_ARCHS
from ..objectives import ESTIMATORS, OBJECTIVES, PENALTIES, WARMUPS
from ..priors import PRIORS

__all__ = [
    "COMMON_OPTIONS",
    "TRAIN_OPTIONS",
    "add_train_options",
    "config_from_args",
    "add_group_options",
    "config_path",
    "groups_arg",
    "int_list",
    "non_negative_float",
    "non_negative_int",
    "parse_sets",
    "positive_float",
    "positive_int",
    "positive_list",
    "fraction",
    "split_data",
    "write_output",
]

# Options every subcommand takes; ``cli.build_parser`` adds them to each subcommand.
COMMON_OPTIONS = argparse.ArgumentParser(add_help=False)
COMMON_OPTIONS.add_argument(
    "--data-dir", help="data root (default: $VAEKIT_DATA, else the user cache)"
)


def int_list(text: str) -> list[int]:
    """``"512,512"`` → ``[512, 512]`` (for argparse)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _number(kind, ok, what: str):
    """An argparse type: a finite ``kind(text)`` that satisfies ``ok`` (NaN and inf refused)."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v

    return parse


def _positive(kind):
    return _number(kind, lambda v: v > 0, "positive")


def _non_negative(kind):
    return _number(kind, lambda v: v >= 0, "non-negative")


positive_int, positive_float = _positive(int), _positive(float)
non_negative_int, non_negative_float = _non_negative(int), _non_negative(float)
fraction = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")


def positive_list(text: str) -> list[int]:
    values = int_list(text)
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return values


def _presets() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in (resources.files("vaekit") / "configs").iterdir()
        if p.name.endswith(".yaml")
    )


def config_path(name: str | None) -> Path | None:
    """A preset name (``mnist``) from the package's configs, or a file path."""
    if name is None:
        return None
    path = Path(name)
    if path.is_file():
        return path
    preset = resources.files("vaekit") / "configs" / f"{name}.yaml"
    if preset.is_file():
        return Path(str(preset))
    raise ValueError(f"no config file or preset named {name!r}; presets: {', '.join(_presets())}")


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["section.key=value", ...]`` → ``{"section.key": "value"}`` (values: YAML, later)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set takes section.key=value, got {item!r}")
        out[key.strip()] = value
    return out


def _arch_choices() -> list[str]:
    return [*ARCHS.choices(), *SEQUENCE_ARCHS.choices()]


# ``vaekit train`` flags: (flag, config key, argparse keywords). Choices come from the registries.
TRAIN_OPTIONS: list[tuple[str, str, dict]] = [
    ("--dataset", "data.dataset", {"help": "dataset spec: " + ", ".join(
        f"{n}:PATH" if e.needs_path else n for n, e in DATASETS.items())}),
    ("--binarize", "data.binarize", {"choices": BINARIZE}),
    ("--augment", "data.augment", {"choices": AUGMENT,
                                   "help": "flip: mirror training images (auto: by dataset)"}),
    ("--train-limit", "data.train_limit", {"type": non_negative_int,
                                           "help": "use the first N training examples"}),
    ("--test-limit", "data.test_limit", {"type": non_negative_int,
                                         "help": "use the first N test examples"}),
    ("--model", "model.kind", {"choices": MODELS.choices(), "help": MODELS.help()}),
    ("--arch", "model.arch", {"choices": _arch_choices()}),
    ("--hidden", "model.hidden", {"type": positive_list, "help": "hidden widths, e.g. 512,512"}),
    ("--channels", "model.channels", {"type": positive_list, "help": "conv channels, e.g. 32,64"}),
    ("--latent-dim", "model.latent_dim", {"type": positive_int}),
    ("--latent-dims", "model.latent_dims", {"type": positive_list,
                                            "help": "hvae: sizes of z_1..z_L, bottom→top"}),
    ("--likelihood", "model.likelihood", {"choices": LIKELIHOODS.choices(),
                                          "help": LIKELIHOODS.help()}),
    ("--blocks", "model.blocks", {"type": positive_int, "help": "resnet: blocks per stage"}),
    ("--squeeze-excitation", "model.squeeze_excitation", {"action": "store_const", "const": True,
                                                          "help": "resnet: SE gates"}),
    ("--prior", "model.prior", {"choices": PRIORS.choices(), "help": PRIORS.help()}),
    ("--posterior", "model.posterior", {"choices": POSTERIORS,
                                        "help": "vae/cvae: q(z|x) Gaussian or a flow of it"}),
    ("--flow-steps", "model.flow_steps", {"type": positive_int, "help": "iaf / planar steps"}),
    ("--prior-components", "model.prior_components", {"type": positive_int,
                                                      "help": "vamp: pseudo-inputs"}),
    ("--word-dropout", "model.word_dropout", {"type": non_negative_float,
                                              "help": "seqvae: decoder inputs → <unk> rate"}),
    ("--objective", "objective.name", {"choices": OBJECTIVES.choices(),
                                       "help": OBJECTIVES.help()}),
    ("--beta", "objective.beta", {"type": non_negative_float,
                                  "help": "KL weight in the loss (penalty tc: the TC weight)"}),
    ("--penalty", "objective.penalty", {"choices": PENALTIES.choices(),
                                        "help": PENALTIES.help()}),
    ("--n-samples", "objective.n_samples", {"type": positive_int,
                                            "help": "z samples per example (K for iwae)"}),
    ("--estimator", "objective.estimator", {"choices": ESTIMATORS}),
    ("--baseline", "objective.baseline", {"choices": ["none", "mean", "learned"],
                                          "help": "score-function baseline"}),
    ("--warmup", "objective.warmup", {"choices": WARMUPS, "help": "KL warm-up of β"}),
    ("--warmup-steps", "objective.warmup_steps", {"type": positive_int,
                                                  "help": "warm-up length (cyclical: cycle)"}),
    ("--free-bits", "objective.free_bits", {"type": non_negative_float,
                                            "help": "KL floor per latent dimension, nats"}),
    ("--epochs", "train.epochs", {"type": positive_int,
                                  "help": "default: about 10,000 steps (10..1000 epochs)"}),
    ("--batch-size", "train.batch_size", {"type": positive_int}),
    ("--lr", "train.lr", {"type": positive_float}),
    ("--seed", "train.seed", {"type": int}),
    ("--threads", "train.threads", {"type": positive_int, "help": "torch threads (default 1)"}),
    ("--max-steps", "train.max_steps", {"type": positive_int,
                                        "help": "stop with a checkpoint after N steps"}),
    ("--time-limit", "train.time_limit", {"type": positive_float,
                                          "help": "stop with a checkpoint after N minutes"}),
    ("--device", "train.device", {"help": "auto (cuda, mps, then cpu) | cpu | cuda[:N] | mps"}),
    ("--precision", "train.precision", {"choices": PRECISIONS,
                                        "help": "autocast of the forward pass (fp16: CUDA)"}),
    ("--compile", "train.compile", {"action": "store_const", "const": True,
                                    "help": "torch.compile the encoder and decoder"}),
    ("--grad-skip", "train.grad_skip", {"type": non_negative_float,
                                        "help": "skip steps whose gradient norm exceeds this"}),
]  # fmt: skip


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The ``TRAIN_OPTIONS`` flags plus ``--config``, ``--set``, ``--deterministic``,
    ``--no-images``."""
    parser.add_argument("--config", help="a preset name (" + ", ".join(_presets()) + ") or YAML")
    for flag, _key, kwargs in TRAIN_OPTIONS:
        parser.add_argument(flag, dest=_dest(flag), **kwargs)
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    parser.add_argument("--no-images", action="store_true", help="skip PNGs and image summaries")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any config key, e.g. --set train.clip_norm=10 (repeatable)",
    )


def train_overrides(args) -> dict:
    """The config keys that ``vaekit train``'s flags set (flags left out set nothing)."""
    overrides = {key: getattr(args, _dest(flag)) for flag, key, _ in TRAIN_OPTIONS}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.update(parse_sets(args.set))
    if args.deterministic:
        overrides["train.deterministic"] = True
    if args.no_images:
        overrides["train.images"] = False
    return overrides


def config_from_args(args) -> Config:
    """Defaults ← ``--config`` ← flags ← ``--set``."""
    return load_config(config_path(args.config), train_overrides(args))


def split_data(model, args, split: str):
    """The run's dataset split, prepared as in training's evaluation (fixed seed), and labels."""
    cfg = model.run_config
    ds = load_dataset(
        cfg.data.dataset,
        getattr(args, "data_dir", None),
        train_limit=cfg.data.train_limit,
        test_limit=cfg.data.test_limit,
    )
    raw, labels = (ds.test, ds.test_labels) if split == "test" else (ds.train, ds.train_labels)
    limit = getattr(args, "limit", None)
    if limit:
        raw = raw[:limit]
        labels = None if labels is None else labels[:limit]
    return DataPrep(model.likelihood, cfg.data.binarize).fixed(raw, cfg.data.eval_seed), labels


def groups_arg(text: str) -> str | int:
    """``--groups``: ``top``, ``all`` or a positive number of groups from the top."""
    if text in ("top", "all"):
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected top, all or a number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"the number of groups must be positive, got {text}")
    return n


def add_group_options(
    parser: argparse.ArgumentParser,
    default: str = "all",
    lower: bool = True,
    temperature: bool = True,
) -> None:
    """``--groups`` (and ``--lower``, ``--lower-temperature``) of the latent tools on
    hierarchical models (see ``vaekit.latent``)."""
    parser.add_argument(
        "--groups",
        type=groups_arg,
        default=default,
        help="hierarchical models: act on all groups (default), the top ones (those at the "
        "coarsest scale) or the top N",
    )
    if lower:
        parser.add_argument(
            "--lower",
            choices=["prior", "posterior"],
            default="prior",
            help="fill the groups below the edited ones from the prior (its means; default) or "
            "from the item's posterior means given the edit",
        )
    if not temperature:
        return
    parser.add_argument(
        "--lower-temperature",
        type=non_negative_float,
        default=0.0,
        help="--lower prior: temperature of the lower groups (0, their means)",
    )


def write_output(path: str, x: torch.Tensor, nrow: int | None, model) -> None:
    """A PNG grid for image data, or a .npy array of the values; text models print sentences."""
    if model.likelihood.is_text and not path.endswith(".npy"):
        lines = model.likelihood.texts(x)
        if path.endswith(".txt"):
            Path(path).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    if path.endswith(".npy"):
        np.save(path, x.numpy(), allow_pickle=False)
    elif images.is_image(model.event_shape):
        images.save_png(path, images.grid(x, nrow=nrow))
    else:
        raise ValueError(
            f"data of shape {model.event_shape} are not images; write a .npy file instead"
        )
    print(path)
