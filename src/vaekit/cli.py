"""The ``vaekit`` command line: train, evaluate, sample, reconstruct, interpolate, demo.

Configs are YAML presets (``--config mnist`` or ``--config FILE``) with command-line overrides
(named flags, or ``--set section.key=value``); the resolved config is saved in the run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from . import images
from .checkpoint import CheckpointError, load_run
from .config import load_config
from .data import DataNotFoundError, load_dataset
from .distributions import SupportError
from .evaluation import evaluate
from .train import NonFiniteError, train
from .transforms import DataPrep

# Flags of `vaekit train` and the config keys they set.
TRAIN_FLAGS = {
    "dataset": "data.dataset",
    "binarize": "data.binarize",
    "train_limit": "data.train_limit",
    "test_limit": "data.test_limit",
    "arch": "model.arch",
    "hidden": "model.hidden",
    "channels": "model.channels",
    "latent_dim": "model.latent_dim",
    "likelihood": "model.likelihood",
    "objective": "objective.name",
    "beta": "objective.beta",
    "n_samples": "objective.n_samples",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "seed": "train.seed",
    "threads": "train.threads",
    "max_steps": "train.max_steps",
    "time_limit": "train.time_limit",
}


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _config_path(name: str | None) -> Path | None:
    """A preset name (``mnist``) from the package's configs, or a file path."""
    if name is None:
        return None
    path = Path(name)
    if path.exists():
        return path
    preset = resources.files("vaekit") / "configs" / f"{name}.yaml"
    if preset.is_file():
        return Path(str(preset))
    raise SystemExit(f"vaekit: no config file or preset named {name!r}; presets: {_presets()}")


def _presets() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in (resources.files("vaekit") / "configs").iterdir()
        if p.name.endswith(".yaml")
    )


def _resolve_config(args):
    overrides = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items()}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"vaekit: --set takes section.key=value, got {item!r}")
        overrides[key] = value
    if args.deterministic:
        overrides["train.deterministic"] = True
    if args.no_images:
        overrides["train.images"] = False
    return load_config(_config_path(args.config), overrides)


# ---- subcommands ---------------------------------------------------------------------------------


def cmd_train(args) -> int:
    if args.resume:
        cfg = _resolve_config(args) if _any_schedule_flag(args) else None
        run = train(cfg, args.resume, resume=True, data_dir=args.data_dir)
    else:
        cfg = _resolve_config(args)
        out = Path(
            args.out or f"runs/{cfg.data.dataset.split(':')[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        if (out / "manifest.json").exists() and not args.force:
            raise SystemExit(
                f"vaekit: {out} already holds a run; use --resume {out}, another "
                "--out, or --force to overwrite"
            )
        run = train(cfg, out, data_dir=args.data_dir)
    print(f"run directory: {run}")
    return 0


def _any_schedule_flag(args) -> bool:
    return any(getattr(args, f) is not None for f in ("epochs", "max_steps", "time_limit"))


def _split_data(model, args, split: str):
    """The run's dataset split, prepared as in training's evaluation (fixed seed), and labels."""
    cfg = model.run_config
    ds = load_dataset(
        cfg.data.dataset,
        args.data_dir,
        train_limit=cfg.data.train_limit,
        test_limit=cfg.data.test_limit,
    )
    raw, labels = (ds.test, ds.test_labels) if split == "test" else (ds.train, ds.train_labels)
    limit = getattr(args, "limit", None)
    if limit:
        raw = raw[:limit]
        labels = None if labels is None else labels[:limit]
    return DataPrep(model.likelihood, cfg.data.binarize).fixed(raw, cfg.data.eval_seed), labels


def cmd_evaluate(args) -> int:
    torch.set_num_threads(args.threads)
    model = load_run(args.run)
    x, y = _split_data(model, args, args.split)
    t0 = time.perf_counter()
    result = evaluate(
        model,
        x,
        k=args.iw_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        labels=y,
        precision=args.precision,
    )
    result["precision"] = args.precision
    shown = ["elbo", "recon", "kl", "nll", "nll_stderr", "bpd", "active_units", "n", "k"]
    for hook in getattr(args, "evaluate_hooks", ()):  # options added by commands_* modules
        shown += hook(model, x, args, result)
    result["split"] = args.split
    result["seconds"] = round(time.perf_counter() - t0, 2)
    out = Path(args.run) / f"eval-{args.split}-k{args.iw_samples}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        for key in shown:
            if key in result:
                v = result[key]
                print(f"{key:>13}: {v:.4f}" if isinstance(v, float) else f"{key:>13}: {v}")
        print(f"(nats per example; written to {out})")
    return 0


def _write_output(path: str, x: torch.Tensor, nrow: int | None, model) -> None:
    """A PNG grid for image data, or a .npy array of the values; text models print sentences."""
    texts = getattr(model.likelihood, "texts", None)
    if texts is not None and not path.endswith(".npy"):
        lines = texts(x)
        if path.endswith(".txt"):
            Path(path).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    if path.endswith(".npy"):
        np.save(path, x.numpy(), allow_pickle=False)
    elif images.is_image(model.event_shape):
        images.save_png(path, images.grid(x, nrow=nrow))
    else:
        raise SystemExit(
            f"vaekit: data of shape {model.event_shape} are not images; write a .npy file instead"
        )
    print(path)


def cmd_sample(args) -> int:
    model = load_run(args.run)
    label = None if args.label is None else torch.tensor([args.label])
    with model.given(label):  # a conditional model: --label picks the class
        x = images.samples(model, args.n, temperature=args.temperature, seed=args.seed)
    _write_output(args.output, x, args.nrow, model)
    return 0


def cmd_reconstruct(args) -> int:
    model = load_run(args.run)
    x, y = _split_data(model, args, args.split)
    recon = images.reconstructions(model, x[: args.n], None if y is None else y[: args.n])
    _write_output(args.output, recon, 8, model)
    return 0


def cmd_interpolate(args) -> int:
    model = load_run(args.run)
    x, y = _split_data(model, args, args.split)
    for i in (args.from_, args.to):
        if not 0 <= i < len(x):
            raise SystemExit(
                f"vaekit: index {i} is outside the {args.split} split (0..{len(x) - 1})"
            )
    with model.given(None if y is None else y[args.from_ : args.from_ + 1]):  # the start's class
        path = images.interpolation(model, x[args.from_], x[args.to], args.steps, args.path)
    _write_output(args.output, path, args.steps, model)
    return 0


def cmd_demo(args) -> int:
    """Train the default MNIST config (or continue it), evaluate it, write pictures."""
    out = Path(args.out)
    cfg = load_config(_config_path("mnist"), {"train.epochs": args.epochs})
    torch.set_num_threads(cfg.train.threads)
    trainer_json = out / "state" / "trainer.json"
    if trainer_json.exists() and json.loads(trainer_json.read_text())["epoch"] >= cfg.train.epochs:
        print(f"{out} is already trained; evaluating it")
    else:
        train(cfg, out, resume=trainer_json.exists(), data_dir=args.data_dir)
    model = load_run(out)
    ns = argparse.Namespace(data_dir=args.data_dir, limit=None)
    x, _ = _split_data(model, ns, "test")
    result = evaluate(model, x, k=args.iw_samples)
    (out / f"eval-test-k{args.iw_samples}.json").write_text(json.dumps(result, indent=2) + "\n")
    pics = images.write_run_pictures(model, x, out)
    pics["interpolation"] = images.save_png(
        out / "interpolation.png", images.grid(images.interpolation(model, x[0], x[1], 10), 10)
    )
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "elbo",
                    "recon",
                    "kl",
                    "nll",
                    "nll_stderr",
                    "bpd",
                    "active_units",
                    "n",
                    "k",
                )
            },
            indent=2,
        )
    )
    print("pictures:", *[str(p) for p in pics.values()], sep="\n  ")
    print(f"metrics: {out / 'metrics.jsonl'}   TensorBoard: tensorboard --logdir {out / 'tb'}")
    return 0


# ---- parser --------------------------------------------------------------------------------------


# Options every subcommand takes; nested subcommands pass ``parents=[COMMON_OPTIONS]``.
COMMON_OPTIONS = argparse.ArgumentParser(add_help=False)
COMMON_OPTIONS.add_argument(
    "--data-dir", help="data root (default: $VAEKIT_DATA, else the user cache)"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaekit", description="Variational autoencoders on PyTorch.")
    sub = p.add_subparsers(dest="command", required=True)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **kw: _add(*a, parents=[COMMON_OPTIONS], **kw)

    t = sub.add_parser("train", help="train a VAE into a run directory")
    t.add_argument("--config", help="a preset name (mnist, digits, olivetti) or a YAML file")
    t.add_argument("--out", help="run directory (default runs/DATASET-TIME)")
    t.add_argument("--resume", metavar="RUN", help="continue an interrupted run exactly")
    t.add_argument("--force", action="store_true", help="overwrite an existing run at --out")
    t.add_argument("--dataset", help="mnist | digits | olivetti | folder:PATH | npz:PATH")
    t.add_argument("--binarize", choices=["auto", "dynamic", "none"])
    t.add_argument("--train-limit", type=int, help="use the first N training examples")
    t.add_argument("--test-limit", type=int, help="use the first N test examples")
    t.add_argument("--arch", choices=["mlp", "conv", "resnet", "gru", "transformer"])
    t.add_argument("--hidden", type=_int_list, help="hidden widths, e.g. 512,512")
    t.add_argument("--channels", type=_int_list, help="conv channels, e.g. 32,64,128")
    t.add_argument("--latent-dim", type=int)
    t.add_argument("--likelihood", choices=["bernoulli", "gaussian", "categorical", "logistic"])
    t.add_argument("--objective", choices=["elbo", "iwae"])
    t.add_argument("--beta", type=float, help="KL weight in the training loss")
    t.add_argument("--n-samples", type=int, help="z samples per example (K for iwae)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, help="torch threads (default 1)")
    t.add_argument("--max-steps", type=int, help="stop with a checkpoint after N steps")
    t.add_argument("--time-limit", type=float, help="stop with a checkpoint after N minutes")
    t.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    t.add_argument("--no-images", action="store_true", help="skip PNGs and image summaries")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any config key, e.g. --set train.clip_norm=10 (repeatable)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="ELBO, IWAE NLL ± stderr, bits/dim, active units")
    e.add_argument("run")
    e.add_argument("--iw-samples", type=int, default=1000, help="K importance samples (0: skip)")
    e.add_argument("--split", choices=["test", "train"], default="test")
    e.add_argument("--limit", type=int, help="evaluate the first N examples only")
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="decoder matmuls of the IWAE estimate in bfloat16: faster, slightly less exact",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="decode prior samples to a PNG grid")
    s.add_argument("run")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("-o", "--output", default="samples.png")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, help="conditional models: the class to generate")
    s.add_argument("--nrow", type=int)
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser("reconstruct", help="inputs above their reconstructions, as a PNG grid")
    r.add_argument("run")
    r.add_argument("-n", type=int, default=32)
    r.add_argument("-o", "--output", default="reconstructions.png")
    r.add_argument("--split", choices=["test", "train"], default="test")
    r.set_defaults(func=cmd_reconstruct)

    i = sub.add_parser("interpolate", help="decode a path between two examples' codes")
    i.add_argument("run")
    i.add_argument("--from", dest="from_", type=int, required=True, help="index of the start")
    i.add_argument("--to", type=int, required=True, help="index of the end")
    i.add_argument("--steps", type=int, default=10)
    i.add_argument("--path", choices=["linear", "slerp"], default="linear")
    i.add_argument("--split", choices=["test", "train"], default="test")
    i.add_argument("-o", "--output", default="interpolation.png")
    i.set_defaults(func=cmd_interpolate)

    d = sub.add_parser("demo", help="train the MNIST preset, evaluate it, write pictures")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--iw-samples", type=int, default=1000)
    d.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    d.set_defaults(func=cmd_demo)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


# Further subcommand groups: each module has ``register(subparsers)`` adding its commands (and
# may extend existing ones through ``sub.choices[name]``). One line per module.
COMMAND_MODULES: tuple[str, ...] = (
    "vaekit.commands_latent",
    "vaekit.commands_apps",
    "vaekit.commands_models",
    "vaekit.commands_inference",
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, DataNotFoundError, SupportError, NonFiniteError, ValueError) as e:
        print(f"vaekit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
