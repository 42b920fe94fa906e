"""Command-line options of the model family (issue 4), added to the existing subcommands.

``vaekit train``: ``--model vae|cvae|hvae|seqvae|ae``, ``--latent-dims 64,32`` (hvae),
``--blocks``/``--squeeze-excitation`` (resnet), ``--prior normal|vamp``, ``--prior-components``,
``--word-dropout`` (seqvae), ``--grad-skip`` (skip steps with a larger gradient norm).
``vaekit interpolate RUN --sentences "A" "B"``: a text model's homotopy between two sentences.
(``vaekit sample RUN --label 3`` lives in ``cli``.)
"""

from __future__ import annotations

import argparse

import torch

from . import cli, images
from .checkpoint import load_run
from .model import MODELS
from .priors import PRIORS

MODEL_FLAGS = {
    "model_kind": "model.kind",
    "latent_dims": "model.latent_dims",
    "blocks": "model.blocks",
    "squeeze_excitation": "model.squeeze_excitation",
    "prior": "model.prior",
    "prior_components": "model.prior_components",
    "word_dropout": "model.word_dropout",
    "grad_skip": "train.grad_skip",
}


def register(sub) -> None:
    cli.TRAIN_FLAGS.update(MODEL_FLAGS)
    t = sub.choices["train"]
    t.add_argument("--model", dest="model_kind", choices=MODELS, help="the kind of model")
    t.add_argument(
        "--latent-dims", type=cli._int_list, help="hvae: sizes of z_1..z_L, bottom→top, e.g. 64,32"
    )
    t.add_argument("--blocks", type=int, help="resnet: residual blocks per stage")
    t.add_argument(
        "--squeeze-excitation", action="store_const", const=True, help="resnet: SE gates"
    )
    t.add_argument("--prior", choices=PRIORS, help="normal or vamp (learned pseudo-inputs)")
    t.add_argument("--prior-components", type=int, help="vamp: number of pseudo-inputs")
    t.add_argument("--word-dropout", type=float, help="seqvae: decoder inputs → <unk> rate")
    t.add_argument("--grad-skip", type=float, help="skip steps whose gradient norm exceeds this")

    i = sub.choices["interpolate"]
    i.add_argument(
        "--sentences",
        nargs=2,
        metavar=("A", "B"),
        help="text models: interpolate between two sentences (instead of --from/--to)",
    )
    for action in i._actions:  # --from/--to become optional: --sentences replaces them
        if action.dest in ("from_", "to"):
            action.required = False
    i.set_defaults(func=_interpolate(i.get_default("func")))


def _interpolate(original):
    def run(args: argparse.Namespace) -> int:
        if args.sentences is None:
            if args.from_ is None or args.to is None:
                raise SystemExit("vaekit: interpolate needs --from and --to (or --sentences A B)")
            return original(args)
        model = load_run(args.run)
        tokenizer = getattr(model.likelihood, "tokenizer", None)
        if tokenizer is None:
            raise SystemExit("vaekit: --sentences needs a text model (kind seqvae)")
        x = tokenizer.rows(list(args.sentences), model.event_shape[0])
        model.check(x)
        with torch.no_grad():
            path = images.interpolation(model, x[0], x[1], args.steps, args.path)
        cli._write_output(args.output, path, args.steps, model)
        return 0

    return run
