"""``vaekit sample``, ``reconstruct`` and ``interpolate``: pictures (or sentences) of a run."""

from __future__ import annotations

import torch

from .. import images
from ..checkpoint import load_run
from ..latent import PATHS, n_groups_of
from .options import (
    add_group_options,
    non_negative_float,
    positive_int,
    split_data,
    write_output,
)


def cmd_sample(args) -> int:
    model = load_run(args.run)
    label = None if args.label is None else torch.full((args.n,), args.label)
    x = images.samples(
        model, args.n, label, temperature=args.temperature, seed=args.seed,
        n_top=n_groups_of(model, args.groups), lower_temperature=args.lower_temperature,
    )  # fmt: skip
    write_output(args.output, x, args.nrow, model)
    return 0


def cmd_reconstruct(args) -> int:
    model = load_run(args.run)
    x, y = split_data(model, args, args.split)
    recon = images.reconstructions(model, x[: args.n], None if y is None else y[: args.n])
    write_output(args.output, recon, 8, model)
    return 0


def cmd_interpolate(args) -> int:
    model = load_run(args.run)
    if args.sentences is not None:  # a text model's homotopy between two sentences
        if not model.likelihood.is_text:
            raise ValueError("--sentences needs a text model (kind seqvae)")
        x = model.likelihood.tokenizer.rows(list(args.sentences), model.event_shape[0])
        model.check(x)
        y = None
        a, b = 0, 1
    else:
        if args.from_ is None or args.to is None:
            raise ValueError("interpolate needs --from and --to (or --sentences A B)")
        x, labels = split_data(model, args, args.split)
        for i in (args.from_, args.to):
            if not 0 <= i < len(x):
                raise ValueError(f"index {i} is outside the {args.split} split (0..{len(x) - 1})")
        a, b = args.from_, args.to
        y = None if labels is None else labels[a]  # a conditional model: the start's class
    n_top = n_groups_of(model, args.groups)
    with torch.no_grad():
        path = images.interpolation(
            model, x[a], x[b], args.steps, args.path, y, n_top=n_top,
            temperature=args.lower_temperature,
        )  # fmt: skip
    write_output(args.output, path, args.steps, model)
    return 0


def register(sub) -> None:
    s = sub.add_parser("sample", help="decode prior samples to a PNG grid")
    s.add_argument("run")
    s.add_argument("-n", type=positive_int, default=64)
    s.add_argument("-o", "--output", default="samples.png")
    s.add_argument("--temperature", type=non_negative_float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, help="conditional models: the class to generate")
    s.add_argument("--nrow", type=positive_int)
    add_group_options(s, lower=False)  # groups below the top ones: prior draws
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser("reconstruct", help="inputs above their reconstructions, as a PNG grid")
    r.add_argument("run")
    r.add_argument("-n", type=positive_int, default=32)
    r.add_argument("-o", "--output", default="reconstructions.png")
    r.add_argument("--split", choices=["test", "train"], default="test")
    r.set_defaults(func=cmd_reconstruct)

    i = sub.add_parser("interpolate", help="decode a path between two examples' codes")
    i.add_argument("run")
    i.add_argument("--from", dest="from_", type=int, help="index of the start")
    i.add_argument("--to", type=int, help="index of the end")
    i.add_argument(
        "--sentences",
        nargs=2,
        metavar=("A", "B"),
        help="text models: interpolate between two sentences (instead of --from/--to)",
    )
    i.add_argument("--steps", type=positive_int, default=10)
    i.add_argument("--path", choices=list(PATHS), default="linear")
    i.add_argument("--split", choices=["test", "train"], default="test")
    add_group_options(i, lower=False)  # the groups below: from the prior
    i.add_argument("-o", "--output", default="interpolation.png")
    i.set_defaults(func=cmd_interpolate)
