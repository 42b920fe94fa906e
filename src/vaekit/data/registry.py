"""The dataset registry: the one place that maps dataset names to loaders, their options and
the model defaults each kind implies. Loaders return whole datasets as in-memory tensors.

``load_dataset(spec)`` understands these specs (see ``DATASETS``):

- ``mnist``: the four canonical IDX files in ``<root>/mnist/`` (gzipped or not); downloaded from
  public mirrors when missing, verified by the md5 of the decompressed content. 60,000 train /
  10,000 test, uint8 ``(N, 1, 28, 28)``, labels 0-9.
- ``digits``: scikit-learn's bundled 8x8 digits (levels 0..16 rescaled to 0..255). The last 297
  of the 1,797 images are the test set: 1,500 train / 297 test, uint8 ``(N, 1, 8, 8)``.
- ``olivetti``: ``<root>/olivetti/olivettifaces.mat`` (40 people x 10 images). Image 9 (of 0..9)
  of every person is the test set: 360 train / 40 test, uint8 ``(N, 1, 64, 64)``, labels 0-39.
- ``folder:PATH``: the images under PATH (recursive, sorted by relative path). Every 10th image in
  that order (index % 10 == 9) is the test set. Options: ``?size=S`` or ``?size=HxW`` (resize to
  S x S or H x W; default: the first image's size). uint8 ``(N, C, H, W)``, C = 1 (all grey) or 3.
- ``shapes``: procedural dSprites-style sprites (``shapes.Shapes``), 64x64, values 0/255,
  distinct factor combinations drawn with a seed; ``?color=1`` (RGB), ``n`` (train size, 60,000),
  ``test`` (10,000), ``seed`` (0). Labels are the shape class; ``Dataset.factors`` holds all six
  factors (color, shape, scale, orientation, posX, posY), int64 ``(N, 6)``, and
  ``Dataset.factor_source`` the generator (``vaekit disentangle`` renders new images with it).
- ``npz:PATH``: a NumPy ``.npz`` with ``x_train``/``x_test`` (or ``x``: the last 10% is the test
  set) and optional ``y_train``/``y_test`` (or ``y``). Loaded with ``allow_pickle=False``.
- ``shards:PATH``: a dataset packed into ``.npy`` shards by ``shards.pack_dataset`` (data larger
  than memory): the training split stays on disk and is read batch by batch; the test split and
  the labels are read into memory; name, schema, vocabulary and implied defaults are the pack's.

- ``csv:PATH``, ``mat:PATH`` (MATLAB ``X``/``y``), ``table:PATH`` (.csv/.tsv/.mat/.npz by suffix),
  ``odds:NAME`` (``<root>/odds/NAME.mat``): tables with mixed column types, float32 ``(N, C)`` with
  NaN for missing values and ``Dataset.schema`` set; see ``tables``. Options ``label``, ``types``,
  ``drop``, ``test`` (fraction, default 0.2) and ``seed`` of a seeded random split.
- Every labelled dataset also takes ``classes=0-8`` (keep those classes in both splits) and
  ``train_classes=0-8`` (train split only; e.g. novelty detection).

``<root>`` is ``resolve_data_root(data_dir)``. Everything after a ``?`` in a spec is options
(``key=value`` pairs joined by ``&``), so a path itself may not contain ``?``.
Data are uint8 (levels 0..255, ``Dataset.discrete``) or float32; labels are int64 or None.

What each kind implies for a config that leaves ``model.kind`` / ``model.arch`` /
``model.likelihood`` at ``auto``: ``mnist``/``digits`` → MLP + Bernoulli (dynamic binarization);
``olivetti``/``folder:`` → conv + discretized logistic and ``data.augment: flip`` (every other
kind: ``none``); ``shapes`` → conv + Bernoulli; ``npz:`` → by its arrays (8-bit images: conv +
logistic, other 8-bit arrays: MLP + logistic, non-negative integers: MLP + negative binomial,
other floats: MLP + Gaussian); ``text:``/``shakespeare`` → ``seqvae`` + GRU + tokens; tables →
MLP + tabular.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import torch

from ..config import ConfigError
from .dataset import DataFormatError, Dataset, spec_option
from .download import ENV_VAR
from .images import load_digits, load_folder, load_mnist, load_npz, load_olivetti
from .shapes import Shapes
from .shards import load_packed_dataset
from .tables import load_table_dataset
from .text import load_text

__all__ = [
    "DATASETS",
    "DatasetLoader",
    "check_trainable",
    "load_dataset",
    "resolve_data_root",
    "parse_spec",
]


def resolve_data_root(data_dir: str | Path | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$VAEKIT_DATA``, else the user cache dir."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("vaekit"))


@dataclass(frozen=True)
class DatasetLoader:
    """A registry entry: ``load(root, path, download, **options) -> Dataset``; ``implies``: the
    config values the dataset implies where a config says ``auto`` (a dict, or a function of the
    loaded dataset for kinds whose arrays decide, e.g. ``npz:``)."""

    load: Callable[..., Dataset]
    needs_path: bool = False
    options: tuple[str, ...] = ()
    summary: str = ""
    implies: dict | Callable[[Dataset], dict] = field(default_factory=dict)

    def implied(self, ds: Dataset) -> dict:
        return dict(self.implies(ds) if callable(self.implies) else self.implies)


def load_dataset(
    spec: str,
    data_dir: str | Path | None = None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    download: bool = True,
) -> Dataset:
    """Load a dataset by spec (``"mnist"``, ``"folder:PATH?size=64"``, ...; see module doc).

    ``train_limit``/``test_limit`` keep only the first N rows of each split.
    """
    for lim in (train_limit, test_limit):
        if lim is not None and lim < 0:
            raise ConfigError(f"limits must be >= 0, got {lim}")
    name, path, options = parse_spec(spec)
    entry = DATASETS.get(name)
    if entry is None:
        known = ", ".join(f"{n}:PATH" if e.needs_path else n for n, e in DATASETS.items())
        raise ConfigError(f"unknown dataset {name!r} in spec {spec!r}; known: {known}")
    if entry.needs_path and not path:
        raise ConfigError(f"dataset {name!r} needs a path: '{name}:PATH'")
    if not entry.needs_path and path:
        raise ConfigError(f"dataset {name!r} takes no path, got {spec!r}")
    filters = {k: options.pop(k) for k in CLASS_OPTIONS if k in options}
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        allowed = ", ".join(entry.options) or "none"
        raise ConfigError(f"unknown option(s) {unknown} for {name!r}; allowed: {allowed}")
    root = resolve_data_root(data_dir)
    ds = entry.load(root=root, path=path, download=download, **options)
    _check_nonempty(ds)
    ds = dataclasses.replace(ds, implies=entry.implied(ds))
    return _limit(_filter_classes(ds, **filters), train_limit, test_limit)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"name:path?k=v&k2=v2"`` -> ``(name, path, {k: v, k2: v2})``."""
    body, _, query = spec.strip().partition("?")
    name, _, path = body.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad option {item!r} in {spec!r}; expected key=value")
        options[key.strip()] = value.strip()
    return name.strip().lower(), path.strip(), options


def check_trainable(ds: Dataset) -> None:
    """DataFormatError unless both splits have rows (what training needs; a reader may return
    an empty split, e.g. a folder of fewer than 10 images to encode)."""
    for split, x in (("train", ds.train), ("test", ds.test)):
        if len(x) == 0:
            raise DataFormatError(
                f"{ds.name}: the {split} split is empty ({len(ds.train)} train / {len(ds.test)} "
                "test rows); give more data (an image folder or a text file: every 10th item is "
                "a test item)"
            )


def _check_nonempty(ds: Dataset) -> None:
    """Every loader's result: rows have values (DataFormatError)."""
    if 0 in ds.event_shape:
        raise DataFormatError(f"{ds.name}: rows have no values (shape {ds.event_shape})")


# Options every labelled dataset takes: keep only some classes (e.g. ``mnist?train_classes=0-8``
# trains on digits 0-8 and keeps the whole test set, the usual novelty-detection protocol).
CLASS_OPTIONS = ("classes", "train_classes")


def _parse_classes(text: str) -> set[int]:
    """``"0-8"``, ``"1,3,5"`` or ``"0-3,7"`` → a set of class labels."""
    out: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, sep, hi = part.partition("-")
            out.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise ConfigError(f"bad class list {text!r}; expected e.g. 0-8 or 1,3,5") from None
    if not out:
        raise ConfigError(f"empty class list {text!r}")
    return out


def _filter_classes(ds: Dataset, classes: str | None = None, train_classes: str | None = None):
    """Keep rows whose label is in ``classes`` (both splits) / ``train_classes`` (train only)."""
    if classes is None and train_classes is None:
        return ds
    if ds.train_labels is None:
        raise ValueError(f"{ds.name}: has no labels, so classes cannot be selected")
    parts, schema = {}, dict(ds.schema) if ds.schema is not None else None
    factors = list(ds.factors) if ds.factors is not None else None
    for i, (split, x, y) in enumerate(
        (("train", ds.train, ds.train_labels), ("test", ds.test, ds.test_labels))
    ):
        texts = [t for t in (classes, train_classes if split == "train" else None) if t]
        if not texts:
            continue
        allowed = sorted(set.intersection(*map(_parse_classes, texts)))
        mask = torch.isin(y, torch.tensor(allowed, dtype=y.dtype))
        if not mask.any():
            raise ValueError(f"{ds.name}: no {split} rows of classes {allowed}")
        parts[split], parts[f"{split}_labels"] = x[mask], y[mask]
        if factors is not None:
            factors[i] = factors[i][mask]
        if schema is not None and f"{split}_rows" in schema:
            rows = schema[f"{split}_rows"]
            schema[f"{split}_rows"] = [r for r, m in zip(rows, mask.tolist(), strict=True) if m]
    if factors is not None:
        parts["factors"] = tuple(factors)
    return dataclasses.replace(ds, schema=schema, **parts)


def _limit(ds: Dataset, train_limit: int | None, test_limit: int | None) -> Dataset:
    """Keep the first ``train_limit``/``test_limit`` rows (copies, so the rest can be freed)."""

    def cut(t: torch.Tensor | None, n: int | None) -> torch.Tensor | None:
        return t if t is None or n is None or n >= len(t) else t[:n].clone()

    factors = ds.factors
    if factors is not None:
        factors = (cut(factors[0], train_limit), cut(factors[1], test_limit))
    return dataclasses.replace(
        ds,
        train=cut(ds.train, train_limit),
        test=cut(ds.test, test_limit),
        train_labels=cut(ds.train_labels, train_limit),
        test_labels=cut(ds.test_labels, test_limit),
        factors=factors,
    )


def _load_text(root: Path, path: str, download: bool, **options) -> Dataset:
    """``text:PATH``: one sentence per line (see ``text.load_text``)."""
    return load_text(Path(path), f"text:{path}", **options)


def _load_shakespeare(root: Path, path: str, download: bool, **options) -> Dataset:
    """``shakespeare``: the lines of ``<root>/text/tinyshakespeare.txt``."""
    return load_text(root / "text" / "tinyshakespeare.txt", "shakespeare", **options)


def _load_shapes(
    root: Path, path: str, download: bool, color="0", n="60000", test="10000", seed="0"
) -> Dataset:
    """``shapes``: a seeded sample of the procedural dSprites-style sprites (``shapes.Shapes``),
    distinct factor combinations, train and test disjoint. Options ``color=1`` (RGB, 6 hues),
    ``n`` training images (default 60,000), ``test`` images (10,000), ``seed`` (0). Labels: the
    shape class (0 square, 1 ellipse, 2 heart); ``factors``: all six, int64 (N, 6)."""
    colour = spec_option("color", color, _flag, what="0 or 1")
    n_train = spec_option("n", n, int, lambda v: v >= 1, "a positive integer")
    n_test = spec_option("test", test, int, lambda v: v >= 1, "a positive integer")
    seed_ = spec_option("seed", seed, int, what="an integer")
    gen = Shapes(color=colour)
    x, f, xt, ft = gen.load(n_train, n_test, seed_)
    shape = gen.factor_names.index("shape")
    name = "shapes" + ("?color=1" if colour else "")
    return Dataset(
        name=name,
        train=torch.from_numpy(x),
        test=torch.from_numpy(xt),
        train_labels=torch.from_numpy(f[:, shape].copy()),
        test_labels=torch.from_numpy(ft[:, shape].copy()),
        event_shape=x.shape[1:],
        factors=(torch.from_numpy(f), torch.from_numpy(ft)),
        factor_names=gen.factor_names,
        factor_source=gen,
    )


def _flag(text: str) -> bool:
    if str(text).lower() in ("1", "true", "yes"):
        return True
    if str(text).lower() in ("0", "false", "no"):
        return False
    raise ConfigError(f"expected 0 or 1, got {text!r}")


def _table_loader(kind: str) -> Callable[..., Dataset]:
    def load(root: Path, path: str, download: bool, **options) -> Dataset:
        return load_table_dataset(kind, root, path, **options)

    return load


DIGITS = {
    "model.kind": "vae",
    "model.arch": "mlp",
    "model.likelihood": "bernoulli",
    "data.augment": "none",  # a mirrored digit is another symbol
}
PHOTOS = {
    "model.kind": "vae",
    "model.arch": "conv",
    "model.likelihood": "logistic",
    "data.augment": "flip",  # a mirrored face is still a face: twice the training images
}
TEXT = {"model.kind": "seqvae", "model.arch": "gru", "model.likelihood": "tokens"}
TABLE = {"model.kind": "vae", "model.arch": "mlp", "model.likelihood": "tabular"}


def _load_shards(root: Path, path: str, download: bool) -> Dataset:
    return load_packed_dataset(path)


def _array_defaults(ds: Dataset) -> dict:
    """What an ``npz:`` dataset implies: decided by its arrays (see the module docstring)."""
    if ds.discrete:
        image = len(ds.event_shape) == 3 and ds.event_shape[0] in (1, 3) and ds.event_shape[1] >= 8
        return {
            "model.kind": "vae",
            "model.arch": "conv" if image else "mlp",
            "model.likelihood": "logistic",
        }
    x = ds.train
    counts = bool(len(x)) and bool(((x >= 0) & (x == x.round())).all())
    return {
        "model.kind": "vae",
        "model.arch": "mlp",
        "model.likelihood": "negbinomial" if counts else "gaussian",
    }


TEXT_OPTIONS = ("level", "max_len", "max_vocab", "min_count")
DATASETS: dict[str, DatasetLoader] = {
    "mnist": DatasetLoader(
        load_mnist, summary="MNIST digits, 1x28x28 uint8, 60k/10k", implies=DIGITS
    ),
    "digits": DatasetLoader(
        load_digits, summary="scikit-learn 8x8 digits, 1x8x8 uint8", implies=DIGITS
    ),
    "olivetti": DatasetLoader(
        load_olivetti, summary="Olivetti faces, 1x64x64 uint8, 360/40", implies=PHOTOS
    ),
    "folder": DatasetLoader(
        load_folder,
        needs_path=True,
        options=("size",),
        summary="a folder of images; ?size=S or ?size=HxW",
        implies=PHOTOS,
    ),
    "shapes": DatasetLoader(
        _load_shapes,
        options=("color", "n", "test", "seed"),
        summary="procedural dSprites-style sprites with known factors, 1x64x64 (color=1: 3x64x64)"
        " 0/255; ?color=1&n=60000&test=10000&seed=0",
        implies={"model.kind": "vae", "model.arch": "conv", "model.likelihood": "bernoulli"},
    ),
    "npz": DatasetLoader(
        load_npz, needs_path=True, summary="a NumPy .npz of arrays", implies=_array_defaults
    ),
    "shards": DatasetLoader(
        _load_shards,
        needs_path=True,
        summary="a dataset packed into .npy shards (shards.pack_dataset), read from disk",
        implies=lambda ds: ds.implies,  # the packed dataset's own, restored from the pack
    ),
    "text": DatasetLoader(
        _load_text,
        needs_path=True,
        options=TEXT_OPTIONS,
        summary="one sentence per line; ?level=char|word&max_len=T&max_vocab=V&min_count=N",
        implies=TEXT,
    ),
    "shakespeare": DatasetLoader(
        _load_shakespeare,
        options=TEXT_OPTIONS,
        summary="Tiny Shakespeare lines (<root>/text/tinyshakespeare.txt), as text:PATH",
        implies=TEXT,
    ),
    **{  # tables (see ``tables``): mixed column types, seeded random test split
        kind: DatasetLoader(
            _table_loader(kind),
            needs_path=True,
            options=("label", "types", "drop", "test", "seed", "sep", "transform"),
            summary=summary,
            implies=TABLE,
        )
        for kind, summary in (
            ("csv", "a CSV table; ?label=COL&types=COL:KIND,..&drop=COL,..&test=0.2&seed=0"),
            ("mat", "a MATLAB .mat with X (n x d) and y (as ODDS ships); ?test=0.2&seed=0"),
            ("table", "a .csv, .tsv, .mat or .npz table, by suffix"),
            ("odds", "an ODDS benchmark <root>/odds/NAME.mat: odds:thyroid, odds:cardio, ..."),
        )
    },
}
