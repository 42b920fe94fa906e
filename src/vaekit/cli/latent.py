"""``vaekit`` subcommands for the latent space: encode, traverse, attribute, latent-map, report,
explore. Items are indexed within the chosen split (``--split test`` by default)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import images
from ..checkpoint import load_run
from ..data import DataPrep, load_dataset
from ..latent import (
    apply_attribute,
    attribute_vector,
    decode_groups,
    dims_by_kl,
    encode,
    group_dims,
    index_mask,
    n_groups_of,
    restrict_dims,
)
from .options import (
    add_group_options,
    int_list,
    non_negative_int,
    positive_int,
    split_data,
    write_output,
)

__all__ = ["register"]


def _data(model, args):
    """The items to work on: ``DATA`` (a dataset spec, both splits per ``--split``) when given,
    else the run's own split; prepared as in evaluation. Returns (x, labels or None)."""
    spec = getattr(args, "data", None)
    if not spec:
        return split_data(model, args, args.split)
    ds = load_dataset(spec, args.data_dir)
    raw, labels = (ds.test, ds.test_labels) if args.split == "test" else (ds.train, ds.train_labels)
    if args.limit:
        raw, labels = raw[: args.limit], None if labels is None else labels[: args.limit]
    cfg = model.run_config
    return DataPrep(model.likelihood, cfg.data.binarize).fixed(raw, cfg.data.eval_seed), labels


def _factors(model, args):
    """The ground-truth factors ``(N, K)`` of the items ``_data`` returns, and their names, when
    the dataset has them (else ``(None, None)``)."""
    spec = getattr(args, "data", None)
    cfg = model.run_config
    if spec:
        ds = load_dataset(spec, args.data_dir)
    else:
        ds = load_dataset(
            cfg.data.dataset,
            args.data_dir,
            train_limit=cfg.data.train_limit,
            test_limit=cfg.data.test_limit,
        )
    if ds.factors is None:
        return None, None
    f = ds.factors[1] if args.split == "test" else ds.factors[0]
    return (f[: args.limit] if args.limit else f), ds.factor_names


def _check_index(i: int, n: int, split: str) -> None:
    if not 0 <= i < n:
        raise ValueError(f"item {i} is outside the {split} split (0..{n - 1})")


# ---- encode -------------------------------------------------------------------------------------


def cmd_encode(args) -> int:
    model = load_run(args.run)
    x, labels = _data(model, args)
    z = encode(model, x, batch_size=args.batch_size, sample=args.samples, seed=args.seed)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        arrays = {"z": z.numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        np.savez(out, **arrays)
    else:
        np.save(out, z.numpy(), allow_pickle=False)
    what = "draws z ~ q(z|x)" if args.samples else "posterior means"
    print(f"{out}: {what} of {len(z)} items, shape {tuple(z.shape)}")
    if args.tensorboard:
        print(
            f"TensorBoard projector: tensorboard --logdir {_projector(model, x, z, labels, args)}"
        )
    return 0


def _projector(model, x, z, labels, args) -> Path:
    """TensorBoard's embedding projector files for the codes ``z`` with image thumbnails."""
    from torch.utils.tensorboard import SummaryWriter

    logdir = Path(args.tensorboard if args.tensorboard is not True else Path(args.run) / "tb")
    folder = logdir / "projector"
    # Our own previous export (same fixed names): replaced, so entries are not listed twice.
    (folder / "projector_config.pbtxt").unlink(missing_ok=True)
    shutil.rmtree(folder / "00000" / "latent_means", ignore_errors=True)
    thumbs = None
    if images.is_image(model.event_shape):
        side = int(np.ceil(np.sqrt(len(x)))) * max(model.event_shape[1:])
        if side <= 8192:  # the projector's sprite limit
            thumbs = images._to_unit(model, x.float())
        else:
            print(f"({len(x)} thumbnails exceed the projector's 8192-pixel sprite; use --limit)")
    meta = [str(int(v)) for v in labels] if labels is not None else [str(i) for i in range(len(z))]
    writer = SummaryWriter(str(folder))
    writer.add_embedding(z, metadata=meta, label_img=thumbs, tag="latent_means")
    writer.close()
    return logdir


# ---- traverse, attribute, latent map ----------------------------------------------------------


def cmd_traverse(args) -> int:
    from ..report import traversal_pictures

    model = load_run(args.run)
    x, _ = _data(model, args)
    n_top = n_groups_of(model, args.groups)
    order, kl = restrict_dims(*dims_by_kl(model, x), group_dims(model, n_top))
    dims = args.dims if args.dims else order[: args.top].tolist()
    lower, ref = args.lower, None
    if args.item is None:
        z0 = torch.zeros(model.latent_dim)
        lower = "prior"  # no item to take the lower groups from
    else:
        _check_index(args.item, len(x), args.split)
        ref = x[args.item : args.item + 1]
        z0 = encode(model, ref)[0]
    lo, hi = args.range
    if not (np.isfinite([lo, hi]).all() and args.steps >= 2):
        raise ValueError("--range takes two finite numbers and --steps at least 2")
    pics = traversal_pictures(
        model,
        z0,
        dims,
        torch.linspace(lo, hi, args.steps),
        n_top=n_top,
        x=ref,
        lower=lower,
        temperature=args.lower_temperature,
    )
    for d in dims:
        hit = (order == d).nonzero()
        what = f"mean KL {float(kl[hit[0, 0]]):.3f} nats" if len(hit) else "outside --groups"
        print(f"row z{d}: {what}")
    write_output(args.output, _shown(model, pics), args.steps, model)
    return 0


def _shown(model, x: torch.Tensor) -> torch.Tensor:
    """Pictures in [0, 1] for image data, the values themselves otherwise (for .npy)."""
    return images._to_unit(model, x) if images.is_image(model.event_shape) else x


def _mask(n: int, labels, label_values, indices, what: str):
    if indices:
        return index_mask(n, indices)
    if label_values:
        if labels is None:
            raise ValueError(f"{what}: this split has no labels; name indices instead")
        return torch.isin(labels, torch.tensor(label_values))
    return None


def cmd_attribute(args) -> int:
    model = load_run(args.run)
    x, labels = _data(model, args)
    n = len(x)
    pos = _mask(n, labels, args.with_labels, args.with_indices, "--with")
    if pos is None:
        raise ValueError("name the examples with the attribute: --with-labels or --with-indices")
    neg = _mask(n, labels, args.without_labels, args.without_indices, "--without")
    if not np.isfinite(args.alphas).all():
        raise ValueError("--alphas must be finite numbers")
    z = encode(model, x)
    n_top = n_groups_of(model, args.groups)
    v = torch.zeros(z.shape[1])
    dims = group_dims(model, n_top)
    v[dims] = attribute_vector(z[:, dims], pos, neg)  # the edited groups only
    for i in args.items:
        _check_index(i, n, args.split)
    codes = apply_attribute(z[args.items], v, args.alphas)  # (A, B, D)
    pics = decode_groups(
        model, codes, n_top, x=x[args.items], lower=args.lower, temperature=args.lower_temperature
    )  # (A, B, *event)
    pics = pics.transpose(0, 1).reshape(-1, *pics.shape[2:])  # rows = items
    n_neg = int((~pos if neg is None else neg).sum())
    print(f"attribute vector from {int(pos.sum())} with / {n_neg} without: |v| = {v.norm():.3f}")
    if args.vector:
        np.save(args.vector, v.numpy(), allow_pickle=False)
        print(args.vector)
    write_output(args.output, _shown(model, pics), len(args.alphas), model)
    return 0


def cmd_latent_map(args) -> int:
    from ..latent import latent_map
    from ..report import map_figure

    model = load_run(args.run)
    x, labels = _data(model, args)
    z = encode(model, x)
    if args.output.endswith(".npy"):
        np.save(args.output, latent_map(z, args.method), allow_pickle=False)
    else:
        map_figure(z, labels, args.method).savefig(args.output, dpi=120, bbox_inches="tight")
    print(args.output)
    return 0


# ---- report and explorer --------------------------------------------------------------------


def cmd_report(args) -> int:
    from ..evaluation import evaluate
    from ..report import write_report

    model = load_run(args.run)
    x, labels = _data(model, args)
    extra = None
    if args.iw_samples:
        extra = evaluate(model, x, k=args.iw_samples)
        extra["split"] = args.split
    factors, names = _factors(model, args)
    out = write_report(
        args.run, model, x, labels, out=args.output, map_method=args.map, evaluation=extra,
        factors=factors, factor_names=names,
        groups=args.groups, lower=args.lower,
    )  # fmt: skip
    print(out)
    return 0


def cmd_explore(args) -> int:
    try:
        from ..explore import create_app, serve
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise SystemExit(f"vaekit explore needs fastapi and uvicorn: {e}") from None
    torch.set_num_threads(args.threads)
    model = load_run(args.run)
    x, labels = _data(model, args)
    app = create_app(
        model, x, labels, name=Path(args.run).name, n_sliders=args.sliders,
        groups=args.groups, lower=args.lower,
    )  # fmt: skip
    print(f"vaekit explorer on http://{args.host}:{args.port}/  ({len(x)} {args.split} items)")
    print(json.dumps({"url": f"http://{args.host}:{args.port}/"}), flush=True)
    serve(app, args.host, args.port)
    return 0


# ---- parser ---------------------------------------------------------------------------------


def _common(p, limit: int | None) -> None:
    p.add_argument("run")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument(
        "--limit", type=positive_int, default=limit, help=f"use the first N items ({limit})"
    )


def register(sub) -> None:
    e = sub.add_parser("encode", help="posterior means (or draws) of a dataset, as .npy/.npz")
    _common(e, None)
    e.add_argument("data", nargs="?", help="a dataset spec (default: the run's dataset)")
    e.add_argument("-o", "--output", default="latents.npy", help=".npy (z) or .npz (z, labels)")
    e.add_argument("--samples", action="store_true", help="one draw z ~ q(z|x) instead of means")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=positive_int, default=512)
    e.add_argument(
        "--tensorboard",
        nargs="?",
        const=True,
        metavar="LOGDIR",
        help="also export TensorBoard's embedding projector (default LOGDIR: RUN/tb)",
    )
    e.set_defaults(func=cmd_encode)

    t = sub.add_parser("traverse", help="decode one code with single dimensions varied")
    _common(t, 1000)
    t.add_argument("--item", type=int, help="start from this item's code (default: z = 0)")
    t.add_argument("--dims", type=int_list, help="dimensions to vary (default: the most used)")
    t.add_argument("--top", type=positive_int, default=8, help="how many of the most-used dims (8)")
    t.add_argument(
        "--range", type=float, nargs=2, default=[-3.0, 3.0], metavar=("LO", "HI"), help="(-3 3)"
    )
    t.add_argument("--steps", type=int, default=9)
    add_group_options(t)
    t.add_argument("-o", "--output", default="traversal.png")
    t.set_defaults(func=cmd_traverse)

    a = sub.add_parser("attribute", help="z + α·v with v = mean z(with) − mean z(without)")
    _common(a, None)
    a.add_argument("--with-labels", type=int_list, help="labels that have the attribute")
    a.add_argument("--with-indices", type=int_list, help="items that have the attribute")
    a.add_argument("--without-labels", type=int_list, help="(default: all other items)")
    a.add_argument("--without-indices", type=int_list)
    a.add_argument("--items", type=int_list, default=[0, 1, 2, 3], help="items to edit")
    a.add_argument(
        "--alphas", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 1.5, 2.0], metavar="A"
    )
    a.add_argument("--vector", help="also save v as .npy")
    add_group_options(a)
    a.add_argument("-o", "--output", default="attribute.png")
    a.set_defaults(func=cmd_attribute)

    m = sub.add_parser("latent-map", help="2-D map (PCA / t-SNE) of the posterior means")
    _common(m, 2000)
    m.add_argument("--method", choices=["pca", "tsne"], default="pca")
    m.add_argument("-o", "--output", default="latent-map.png", help=".png or .npy (coordinates)")
    m.set_defaults(func=cmd_latent_map)

    r = sub.add_parser("report", help="one self-contained HTML report of a run")
    _common(r, 1000)
    r.add_argument("-o", "--output", help="default RUN/report.html")
    r.add_argument("--map", choices=["pca", "tsne"], default="pca")
    r.add_argument(
        "--iw-samples", type=non_negative_int, default=0, help="also evaluate the IWAE bound now"
    )
    add_group_options(r, temperature=False)
    r.set_defaults(func=cmd_report)

    x = sub.add_parser("explore", help="interactive latent-space explorer in the browser")
    _common(x, 2000)
    x.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    x.add_argument("--port", type=non_negative_int, default=8000)
    x.add_argument(
        "--sliders", type=positive_int, default=12, help="sliders for the most-used dims"
    )
    x.add_argument("--threads", type=positive_int, default=1)
    add_group_options(x, temperature=False)
    x.set_defaults(func=cmd_explore)
