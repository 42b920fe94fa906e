"""``vaekit export RUN --format onnx -o DIR``: a trained run as ONNX graphs (see ``export``)."""

from __future__ import annotations

import json
from pathlib import Path

from .options import positive_int

__all__ = ["register"]

FORMATS = ("onnx",)


def cmd_export(args) -> int:
    from ..export import export_onnx  # the exporter imports onnx: only when exporting

    out = Path(args.output) if args.output else Path(args.run) / "onnx"
    path = export_onnx(args.run, out, opset=args.opset, exporter=args.exporter)
    spec = json.loads(path.read_text())
    if args.json:
        print(
            json.dumps(
                {
                    "export": str(path),
                    "files": [str(out / "encoder.onnx"), str(out / "decoder.onnx")],
                    "opset": spec["opset"],
                }
            )
        )
    else:
        m = spec["model"]
        print(
            f"wrote {out}/encoder.onnx (x {m['event_shape']} → loc, scale [{m['latent_dim']}]), "
            f"{out}/decoder.onnx (z → {m['likelihood']} parameters), {path} (opset "
            f"{spec['opset']})"
        )
    return 0


def register(sub) -> None:
    e = sub.add_parser("export", help="export a trained run (ONNX: encoder, decoder, export.json)")
    e.add_argument("run")
    e.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (the only one)")
    e.add_argument("-o", "--output", metavar="DIR", help="output folder (default RUN/onnx)")
    e.add_argument("--opset", type=positive_int, help="ONNX opset (default: the exporter's)")
    e.add_argument(
        "--exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="torch's ONNX exporter: torchscript (fast) or dynamo (needs onnxscript)",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_export)
