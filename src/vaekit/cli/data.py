"""``vaekit pack``: a dataset into fixed-size shards, which ``shards:PATH`` streams from disk."""

from __future__ import annotations

import json

from ..data import load_dataset
from ..data.shards import open_shards, pack_dataset
from .options import positive_int


def cmd_pack(args) -> int:
    ds = load_dataset(args.dataset, args.data_dir)
    out = pack_dataset(ds, args.out, args.rows_per_shard, overwrite=args.force)
    splits, _ = open_shards(out)
    summary = {"dataset": ds.name, "out": str(out), "spec": f"shards:{out}"}
    summary.update({name: list(x.shape) for name, (x, _) in splits.items()})
    print(json.dumps(summary))
    return 0


def register(sub) -> None:
    p = sub.add_parser("pack", help="write a dataset into .npy shards (train with shards:OUT)")
    p.add_argument("dataset", help="any dataset spec the registry loads (mnist, folder:, csv:, …)")
    p.add_argument("out", help="the folder of shards and index.json")
    p.add_argument("--rows-per-shard", type=positive_int, help="default: about 64 MiB of rows")
    p.add_argument("--force", action="store_true", help="replace an existing pack")
    p.set_defaults(func=cmd_pack)
