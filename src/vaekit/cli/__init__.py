"""The ``vaekit`` command line.

One module per command group, each with ``register(subparsers)``; ``COMMANDS`` lists them (one
line per module). Shared option helpers live in ``options``. Configs are YAML presets
(``--config mnist`` or ``--config FILE``) with command-line overrides (named flags, or ``--set
section.key=value``); the resolved config is saved in the run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..data import DataFormatError, DataNotFoundError
from ..distributions import SupportError
from ..train import NonFiniteError
from ..version import __version__
from .options import COMMON_OPTIONS

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS: tuple[str, ...] = (
    "vaekit.cli.train",  # train, demo
    "vaekit.cli.evaluate",  # evaluate (+ refinement gaps, AIS)
    "vaekit.cli.pictures",  # sample, reconstruct, interpolate
    "vaekit.cli.latent",  # encode, traverse, attribute, latent-map, report, explore
    "vaekit.cli.apps",  # anomaly fit|score, denoise, probe
    "vaekit.cli.inference",  # gradvar
    "vaekit.cli.export",  # export (ONNX)
    "vaekit.cli.data",  # pack (shards)
    "vaekit.cli.disentangle",  # disentangle (metrics and traversals on factor datasets)
)

# What a user can get wrong: one line on stderr and exit status 2, never a traceback.
USER_ERRORS = (
    CheckpointError,
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    SupportError,
    NonFiniteError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``vaekit CMD: error: ...``) and
    exit status 2, like every other user error; ``--help`` still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vaekit", description="Variational autoencoders on PyTorch.")
    p.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **kw: _add(
        *a, parents=[COMMON_OPTIONS, *kw.pop("parents", [])], **kw
    )
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # e.g. for `vaekit train --nproc N`, which relaunches itself N times
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"vaekit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
