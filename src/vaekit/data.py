"""Datasets: a registry of loaders that return whole datasets as in-memory tensors.

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
- ``npz:PATH``: a NumPy ``.npz`` with ``x_train``/``x_test`` (or ``x``: the last 10% is the test
  set) and optional ``y_train``/``y_test`` (or ``y``). Loaded with ``allow_pickle=False``.

- ``csv:PATH``, ``mat:PATH`` (MATLAB ``X``/``y``), ``table:PATH`` (.csv/.tsv/.mat/.npz by suffix),
  ``odds:NAME`` (``<root>/odds/NAME.mat``): tables with mixed column types, float32 ``(N, C)`` with
  NaN for missing values and ``Dataset.schema`` set; see ``tabular``. Options ``label``, ``types``,
  ``drop``, ``test`` (fraction, default 0.2) and ``seed`` of a seeded random split.
- Every labelled dataset also takes ``classes=0-8`` (keep those classes in both splits) and
  ``train_classes=0-8`` (train split only; e.g. novelty detection).

``<root>`` is ``resolve_data_root(data_dir)``. Everything after a ``?`` in a spec is options
(``key=value`` pairs joined by ``&``), so a path itself may not contain ``?``.
Data are uint8 (levels 0..255, ``Dataset.discrete``) or float32; labels are int64 or None.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch

__all__ = [
    "DATASETS",
    "DataFormatError",
    "DatasetLoader",
    "DataNotFoundError",
    "Dataset",
    "load_dataset",
    "parse_idx",
    "read_idx",
    "resolve_data_root",
    "write_idx",
]

log = logging.getLogger(__name__)

ENV_VAR = "VAEKIT_DATA"
DOWNLOAD_TIMEOUT = 60.0  # seconds, per network operation
_WHERE_HINT = (
    f"Point vaekit at another data folder with --data-dir DIR or the {ENV_VAR} environment "
    "variable (the folder that contains the dataset's sub-folder)."
)


class DataNotFoundError(FileNotFoundError):
    """Data files are missing and could not be (or were not allowed to be) downloaded."""


class DataFormatError(ValueError):
    """A data file or array exists but its content is not what the loader expects."""


# ---------------------------------------------------------------------------------------------
# The dataset container
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Dataset:
    """A whole dataset in memory.

    ``train``/``test`` are ``(N, *event_shape)``: uint8 levels 0..255 for 8-bit data (images are
    ``(C, H, W)``), float32 otherwise (e.g. vectors ``(D,)``). Labels are int64 ``(N,)`` or None.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    event_shape: tuple[int, ...]
    schema: dict | None = None  # tables: column types and statistics (see ``tabular``)
    vocab: tuple[str, ...] | None = None  # text: token of each id (see ``text``)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_shape", tuple(int(d) for d in self.event_shape))
        for split, x, y in (
            ("train", self.train, self.train_labels),
            ("test", self.test, self.test_labels),
        ):
            if tuple(x.shape[1:]) != self.event_shape:
                raise ValueError(
                    f"{self.name}: {split} has shape {tuple(x.shape)}, "
                    f"expected (N, {', '.join(map(str, self.event_shape))})"
                )
            if x.dtype not in (torch.uint8, torch.float32):
                raise ValueError(f"{self.name}: {split} is {x.dtype}, expected uint8 or float32")
            if y is not None and (y.dtype != torch.int64 or tuple(y.shape) != (len(x),)):
                raise ValueError(
                    f"{self.name}: {split} labels must be int64 of shape "
                    f"({len(x)},), got {y.dtype} {tuple(y.shape)}"
                )
        if self.train.dtype != self.test.dtype:
            raise ValueError(
                f"{self.name}: train is {self.train.dtype} but test is {self.test.dtype}"
            )

    @property
    def discrete(self) -> bool:
        """True when the data are uint8 levels 0..255."""
        return self.train.dtype == torch.uint8

    def __repr__(self) -> str:
        labels = "labelled" if self.train_labels is not None else "unlabelled"
        return (
            f"Dataset({self.name!r}, train={tuple(self.train.shape)}, "
            f"test={tuple(self.test.shape)}, {self.train.dtype}, {labels})"
        )


# ---------------------------------------------------------------------------------------------
# Paths, the registry and load_dataset
# ---------------------------------------------------------------------------------------------


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
    """A registry entry: ``load(root, path, download, **options) -> Dataset``."""

    load: Callable[..., Dataset]
    needs_path: bool = False
    options: tuple[str, ...] = ()
    summary: str = ""


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
    name, path, options = _parse_spec(spec)
    entry = DATASETS.get(name)
    if entry is None:
        known = ", ".join(f"{n}:PATH" if e.needs_path else n for n, e in DATASETS.items())
        raise ValueError(f"unknown dataset {name!r} in spec {spec!r}; known: {known}")
    if entry.needs_path and not path:
        raise ValueError(f"dataset {name!r} needs a path: '{name}:PATH'")
    if not entry.needs_path and path:
        raise ValueError(f"dataset {name!r} takes no path, got {spec!r}")
    filters = {k: options.pop(k) for k in CLASS_OPTIONS if k in options}
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        allowed = ", ".join(entry.options) or "none"
        raise ValueError(f"unknown option(s) {unknown} for {name!r}; allowed: {allowed}")
    root = resolve_data_root(data_dir)
    ds = entry.load(root=root, path=path, download=download, **options)
    return _limit(_filter_classes(ds, **filters), train_limit, test_limit)


def _parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"name:path?k=v&k2=v2"`` -> ``(name, path, {k: v, k2: v2})``."""
    body, _, query = spec.strip().partition("?")
    name, _, path = body.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad option {item!r} in {spec!r}; expected key=value")
        options[key.strip()] = value.strip()
    return name.strip().lower(), path.strip(), options


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
        raise ValueError(f"bad class list {text!r}; expected e.g. 0-8 or 1,3,5") from None
    if not out:
        raise ValueError(f"empty class list {text!r}")
    return out


def _filter_classes(ds: Dataset, classes: str | None = None, train_classes: str | None = None):
    """Keep rows whose label is in ``classes`` (both splits) / ``train_classes`` (train only)."""
    if classes is None and train_classes is None:
        return ds
    if ds.train_labels is None:
        raise ValueError(f"{ds.name}: has no labels, so classes cannot be selected")
    parts, schema = {}, dict(ds.schema) if ds.schema is not None else None
    for split, x, y in (("train", ds.train, ds.train_labels), ("test", ds.test, ds.test_labels)):
        texts = [t for t in (classes, train_classes if split == "train" else None) if t]
        if not texts:
            continue
        allowed = sorted(set.intersection(*map(_parse_classes, texts)))
        mask = torch.isin(y, torch.tensor(allowed, dtype=y.dtype))
        if not mask.any():
            raise ValueError(f"{ds.name}: no {split} rows of classes {allowed}")
        parts[split], parts[f"{split}_labels"] = x[mask], y[mask]
        if schema is not None and f"{split}_rows" in schema:
            rows = schema[f"{split}_rows"]
            schema[f"{split}_rows"] = [r for r, m in zip(rows, mask.tolist(), strict=True) if m]
    return dataclasses.replace(ds, schema=schema, **parts)


def _limit(ds: Dataset, train_limit: int | None, test_limit: int | None) -> Dataset:
    """Keep the first ``train_limit``/``test_limit`` rows (copies, so the rest can be freed)."""
    for lim in (train_limit, test_limit):
        if lim is not None and lim < 0:
            raise ValueError(f"limits must be >= 0, got {lim}")

    def cut(t: torch.Tensor | None, n: int | None) -> torch.Tensor | None:
        return t if t is None or n is None or n >= len(t) else t[:n].clone()

    return dataclasses.replace(
        ds,
        train=cut(ds.train, train_limit),
        test=cut(ds.test, test_limit),
        train_labels=cut(ds.train_labels, train_limit),
        test_labels=cut(ds.test_labels, test_limit),
    )


def _make_dataset(name: str, x: np.ndarray, y: np.ndarray | None, test: np.ndarray) -> Dataset:
    """Split arrays ``x`` (N, ...) and labels ``y`` by the boolean mask ``test`` into a Dataset."""
    train = ~test

    def labels(mask: np.ndarray) -> torch.Tensor | None:
        return None if y is None else torch.from_numpy(y[mask].astype(np.int64))

    return Dataset(
        name=name,
        train=torch.from_numpy(np.ascontiguousarray(x[train])),
        test=torch.from_numpy(np.ascontiguousarray(x[test])),
        train_labels=labels(train),
        test_labels=labels(test),
        event_shape=x.shape[1:],
    )


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes: magic ``00 00 <type> <ndim>``, ndim big-endian uint32 dims, then data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFormatError(f"{source}: not an IDX file (bad magic number {data[:4].hex()!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{source}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(dims, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataFormatError(
            f"{source}: IDX file {what}: {len(data)} bytes, expected {expected} for shape {dims}"
        )
    arr = np.frombuffer(data, dtype, count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not, detected from its content) into a numpy array."""
    return parse_idx(_read_maybe_gzip(Path(path)), str(path))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends with ``.gz``)."""
    arr = np.asarray(array)
    codes = {np.dtype(dt).newbyteorder("="): c for c, dt in _IDX_DTYPES.items()}
    code = codes.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    data = header + arr.astype(_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def _read_maybe_gzip(path: Path) -> bytes:
    """File content, decompressed if it is gzip (magic ``1f 8b``)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(
            f"{path}: corrupt or truncated gzip file ({e}); delete it and download it again"
        ) from e


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` into the file ``dest``."""
    req = urllib.request.Request(url, headers={"User-Agent": "vaekit"})
    with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT) as resp, open(dest, "wb") as f:
        shutil.copyfileobj(resp, f)


def _download(urls: Sequence[str], dest: Path, verify: Callable[[Path], None]) -> None:
    """Try each URL: fetch to a temp file beside ``dest``, ``verify`` it, rename it into place.

    Raises OSError listing every failure; leaves no partial file (nor a folder it created).
    """
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    errors = []
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for url in urls:
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{dest.name}.", suffix=".part", dir=dest.parent
            )
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                log.info("downloading %s", url)
                _fetch(url, tmp)
                verify(tmp)
                tmp.chmod(0o644)  # mkstemp makes it owner-only
                os.replace(tmp, dest)
                return
            except (OSError, ValueError, EOFError, zlib.error) as e:
                errors.append(f"{url}: {e}")
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as e:  # e.g. a read-only data folder
        errors.append(f"cannot write {dest}: {e}")
    for d in created:  # innermost first; only folders this call made and left empty
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    raise OSError("download failed:\n  " + "\n  ".join(errors))


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------------------------
# mnist
# ---------------------------------------------------------------------------------------------

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# uncompressed file name -> (md5 of the uncompressed bytes, shape)
MNIST_FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", (60000, 28, 28)),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", (60000,)),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", (10000,)),
}


def _mnist_missing_message(folder: Path, missing: list[str], reason: str) -> str:
    files = "\n".join(f"  {n}.gz" for n in MNIST_FILES)
    mirrors = "\n".join(f"  {m}" for m in MNIST_MIRRORS)
    return (
        f"MNIST files missing from {folder}: {', '.join(missing)} ({reason}).\n"
        f"Put these four files in {folder} (gzipped, or uncompressed without .gz):\n{files}\n"
        f"They can be obtained from:\n{mirrors}\n{_WHERE_HINT}"
    )


def _verify_mnist_download(name: str) -> Callable[[Path], None]:
    md5 = MNIST_FILES[name][0]

    def verify(tmp: Path) -> None:
        got = _md5(_read_maybe_gzip(tmp))
        if got != md5:
            raise DataFormatError(f"checksum mismatch for {name}: md5 {got}, expected {md5}")

    return verify


def _read_mnist_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    arr = read_idx(path)
    if arr.dtype != np.uint8 or arr.shape != shape:
        raise DataFormatError(
            f"{path}: expected uint8 IDX of shape {shape}, got {arr.dtype} "
            f"{arr.shape}; replace it with the canonical MNIST file"
        )
    return arr


def _load_mnist(root: Path, path: str, download: bool) -> Dataset:
    """MNIST from ``<root>/mnist/``: uint8 (N, 1, 28, 28), 60,000 train / 10,000 test."""
    folder = root / "mnist"

    def find(name: str) -> Path | None:
        return next((p for p in (folder / f"{name}.gz", folder / name) if p.is_file()), None)

    missing = [n for n in MNIST_FILES if find(n) is None]
    if missing and not download:
        raise DataNotFoundError(_mnist_missing_message(folder, missing, "download=False"))
    errors = []
    for name in missing:
        urls = [m + f"{name}.gz" for m in MNIST_MIRRORS]
        try:
            _download(urls, folder / f"{name}.gz", _verify_mnist_download(name))
        except OSError as e:
            errors.append(str(e))
    still_missing = [n for n in MNIST_FILES if find(n) is None]
    if still_missing:
        raise DataNotFoundError(_mnist_missing_message(folder, still_missing, "; ".join(errors)))

    x_train, y_train, x_test, y_test = (
        _read_mnist_array(find(name), shape) for name, (_, shape) in MNIST_FILES.items()
    )
    for y in (y_train, y_test):
        if y.max() > 9:
            raise DataFormatError(f"{folder}: MNIST labels must be 0-9, found {y.max()}")
    return Dataset(
        name="mnist",
        train=torch.from_numpy(x_train[:, None]),
        test=torch.from_numpy(x_test[:, None]),
        train_labels=torch.from_numpy(y_train.astype(np.int64)),
        test_labels=torch.from_numpy(y_test.astype(np.int64)),
        event_shape=(1, 28, 28),
    )


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------

DIGITS_TEST_SIZE = 297


def _load_digits(root: Path, path: str, download: bool) -> Dataset:
    """scikit-learn digits: uint8 (N, 1, 8, 8) = round(v * 255 / 16); the last 297 are test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    test = np.arange(len(x)) >= len(x) - DIGITS_TEST_SIZE
    return _make_dataset("digits", x, bunch.target, test)


# ---------------------------------------------------------------------------------------------
# olivetti
# ---------------------------------------------------------------------------------------------

OLIVETTI_URL = "https://ndownloader.figshare.com/files/5976027"
OLIVETTI_SHA256 = "b612fb967f2dc77c9c62d3e1266e0c73d5fca46a4b8906c18e454d41af987794"  # download


def _read_olivetti_faces(path: Path) -> np.ndarray:
    """The ``faces`` array of shape (4096, 400) from ``olivettifaces.mat``."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        faces = scipy.io.loadmat(path)["faces"]
    except (MatReadError, ValueError, OSError, NotImplementedError, TypeError, KeyError) as e:
        raise DataFormatError(
            f"{path}: not a readable olivettifaces.mat with a 'faces' array ({e!r})"
        ) from e
    if faces.shape != (4096, 400):
        raise DataFormatError(f"{path}: 'faces' has shape {faces.shape}, expected (4096, 400)")
    return faces


def _verify_olivetti_download(tmp: Path) -> None:
    got = hashlib.sha256(tmp.read_bytes()).hexdigest()
    if got != OLIVETTI_SHA256:
        raise DataFormatError(f"checksum mismatch: sha256 {got}, expected {OLIVETTI_SHA256}")
    _read_olivetti_faces(tmp)


def _to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """Image values as uint8: floats in [0, 1] are scaled by 255, other values must be 0..255."""
    if arr.dtype == np.uint8:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataFormatError(f"{what}: expected numeric image values, got {arr.dtype}")
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataFormatError(f"{what}: contains NaN or inf")
    if np.issubdtype(arr.dtype, np.floating) and a.min() >= 0 and a.max() <= 1:
        a = a * 255.0
    if a.min() < 0 or a.max() > 255:
        raise DataFormatError(f"{what}: values span {a.min()}..{a.max()}, expected 0..255 or 0..1")
    return np.rint(a).astype(np.uint8)


def _load_olivetti(root: Path, path: str, download: bool) -> Dataset:
    """Olivetti faces: uint8 (N, 1, 64, 64), labels = person 0-39; image 9 of each is test."""
    mat = root / "olivetti" / "olivettifaces.mat"
    if not mat.is_file():
        reason = "download=False"
        if download:
            try:
                _download([OLIVETTI_URL], mat, _verify_olivetti_download)
                reason = ""
            except OSError as e:
                reason = str(e)
        if reason:
            raise DataNotFoundError(
                f"Olivetti faces missing: {mat} ({reason}).\n"
                f"Put olivettifaces.mat (a MATLAB file with 'faces' of shape (4096, 400)) in "
                f"{mat.parent}; it can be obtained from {OLIVETTI_URL} (the file scikit-learn's "
                f"fetch_olivetti_faces uses).\n{_WHERE_HINT}"
            )
    faces = _read_olivetti_faces(mat)
    x = faces.T.reshape(400, 64, 64).transpose(0, 2, 1)
    x = _to_uint8(x, str(mat))[:, None]
    index = np.arange(400)
    return _make_dataset("olivetti", x, index // 10, index % 10 == 9)


# ---------------------------------------------------------------------------------------------
# folder:PATH
# ---------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _parse_size(size: str) -> tuple[int, int]:
    """``"64"`` -> (64, 64); ``"48x64"`` -> (48, 64) as (height, width)."""
    try:
        parts = [int(p) for p in size.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise ValueError(f"bad size {size!r}: expected S or HxW with positive integers")
    return parts[0], parts[1]


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, skipping hidden entries), sorted by path."""
    files = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _open_image(path: Path):  # -> PIL.Image.Image, header read only
    from PIL import Image

    try:
        return Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataFormatError(f"cannot read image {path}: {e}") from e


def _read_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Decode ``path`` in PIL ``mode`` resized to ``size`` = (width, height): uint8 (H, W[, C])."""
    from PIL import Image

    with _open_image(path) as im:
        try:
            out = im.convert(mode)
            if out.size != size:
                out = out.resize(size, Image.Resampling.LANCZOS)
            return np.asarray(out, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataFormatError(f"cannot read image {path}: {e}") from e


def _load_folder(root: Path, path: str, download: bool, size: str | None = None) -> Dataset:
    """Images under PATH: uint8 (N, C, H, W); labels from top-level subfolders; every 10th test.

    All images become grey ('L', C=1) if every one is grey, else 'RGB' (C=3), and are resized to
    ``size`` (H, W) or else the first image's size. Labels are the sorted names of the immediate
    subfolders of PATH (as ints) when every image sits in one, else None.
    """
    target = _parse_size(size) if size else None  # (height, width)
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"image folder not found: {folder}")
    files = _image_files(folder)
    if not files:
        raise DataNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")

    modes, sizes = set(), []
    for p in files:  # headers only: decide the common mode and size
        with _open_image(p) as im:
            modes.add(im.mode)
            sizes.append(im.size)
    mode = "L" if modes <= _GREY_MODES else "RGB"
    height, width = target or (sizes[0][1], sizes[0][0])
    arrays = [_read_image(p, mode, (width, height)) for p in files]
    x = np.stack(arrays)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)

    rel = [p.relative_to(folder).parts for p in files]
    y = None
    if all(len(parts) > 1 for parts in rel):
        classes = sorted({parts[0] for parts in rel})
        y = np.array([classes.index(parts[0]) for parts in rel], dtype=np.int64)
    test = np.arange(len(x)) % 10 == 9
    return _make_dataset(f"folder:{folder}", x, y, test)


# ---------------------------------------------------------------------------------------------
# npz:PATH
# ---------------------------------------------------------------------------------------------


def _npz_features(arr: np.ndarray, key: str) -> np.ndarray:
    """uint8 stays uint8 (images to channels-first); other numbers become finite float32."""
    if arr.ndim == 0:
        raise DataFormatError(f"array {key!r} is a scalar; expected (N, ...)")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.dtype == np.uint8:
        if arr.ndim == 3:  # (N, H, W)
            return arr[:, None]
        if arr.ndim == 4 and arr.shape[-1] in (1, 3, 4):  # (N, H, W, C)
            return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        return arr
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise DataFormatError(f"array {key!r} has dtype {arr.dtype}; expected real numbers")
    out = arr.astype(np.float32)
    bad = int((~np.isfinite(out)).sum())
    if bad:
        raise DataFormatError(
            f"array {key!r} contains {bad} NaN/inf value(s) (or values too large for float32)"
        )
    return out


def _npz_labels(arr: np.ndarray, key: str, n: int) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.integer) or arr.shape != (n,):
        raise DataFormatError(
            f"array {key!r} must be integer labels of shape ({n},), got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.int64)


def _load_npz(root: Path, path: str, download: bool) -> Dataset:
    """Arrays ``x_train``/``x_test`` (or ``x``: last 10% is test), optional ``y_*``/``y``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataNotFoundError(f"npz file not found: {file}")
    try:
        with np.load(file, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DataFormatError(f"{file}: a single .npy array, not an .npz archive")
            arrays = {k: npz[k] for k in npz.files}
    except DataFormatError:
        raise
    except ValueError as e:  # object arrays need pickle, which is never allowed
        raise DataFormatError(
            f"{file}: cannot load without pickle ({e}); store plain numeric arrays"
        ) from e
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(f"{file}: not a readable .npz file ({e})") from e

    if "x_train" in arrays and "x_test" in arrays:
        keys = [("x_train", "y_train"), ("x_test", "y_test")]
    elif "x" in arrays:
        keys = [("x", "y")]
    else:
        raise DataFormatError(
            f"{file}: expected arrays x_train and x_test, or x; found {sorted(arrays)}"
        )
    xs, ys = [], []
    for xk, yk in keys:
        xs.append(_npz_features(arrays[xk], xk))
        ys.append(_npz_labels(arrays[yk], yk, len(xs[-1])) if yk in arrays else None)
    if len(xs) == 2 and (ys[0] is None) != (ys[1] is None):
        raise DataFormatError(f"{file}: give both y_train and y_test, or neither")
    if len(xs) == 2 and (xs[0].dtype != xs[1].dtype or xs[0].shape[1:] != xs[1].shape[1:]):
        raise DataFormatError(
            f"{file}: x_train {xs[0].dtype} {xs[0].shape[1:]} and x_test "
            f"{xs[1].dtype} {xs[1].shape[1:]} must have the same dtype and "
            "event shape"
        )
    x = np.concatenate(xs)
    y = None if ys[0] is None else np.concatenate(ys)
    n_test = len(xs[1]) if len(xs) == 2 else max(1, len(x) // 10)
    if len(xs) == 1 and len(x) < 2:
        raise DataFormatError(f"{file}: 'x' needs at least 2 rows to split")
    test = np.arange(len(x)) >= len(x) - n_test
    return _make_dataset(f"npz:{file}", x, y, test)


def _load_text(root: Path, path: str, download: bool, **options) -> Dataset:
    """``text:PATH``: one sentence per line (see ``text.load_text``)."""
    from .text import load_text

    return load_text(Path(path), f"text:{path}", **options)


def _load_shakespeare(root: Path, path: str, download: bool, **options) -> Dataset:
    """``shakespeare``: the lines of ``<root>/text/tinyshakespeare.txt``."""
    from .text import load_text

    return load_text(root / "text" / "tinyshakespeare.txt", "shakespeare", **options)


def _table_loader(kind: str) -> Callable[..., Dataset]:
    def load(root: Path, path: str, download: bool, **options) -> Dataset:
        from .tabular import load_table_dataset

        return load_table_dataset(kind, root, path, **options)

    return load


# ---------------------------------------------------------------------------------------------
# The registry: the one place that maps dataset names to loaders
# ---------------------------------------------------------------------------------------------

DATASETS: dict[str, DatasetLoader] = {
    "mnist": DatasetLoader(_load_mnist, summary="MNIST digits, 1x28x28 uint8, 60k/10k"),
    "digits": DatasetLoader(_load_digits, summary="scikit-learn 8x8 digits, 1x8x8 uint8"),
    "olivetti": DatasetLoader(_load_olivetti, summary="Olivetti faces, 1x64x64 uint8, 360/40"),
    "folder": DatasetLoader(
        _load_folder,
        needs_path=True,
        options=("size",),
        summary="a folder of images; ?size=S or ?size=HxW",
    ),
    "npz": DatasetLoader(_load_npz, needs_path=True, summary="a NumPy .npz of arrays"),
    "text": DatasetLoader(
        _load_text,
        needs_path=True,
        options=("level", "max_len", "max_vocab", "min_count"),
        summary="one sentence per line; ?level=char|word&max_len=T&max_vocab=V&min_count=N",
    ),
    "shakespeare": DatasetLoader(
        _load_shakespeare,
        options=("level", "max_len", "max_vocab", "min_count"),
        summary="Tiny Shakespeare lines (<root>/text/tinyshakespeare.txt), as text:PATH",
    ),
    **{  # tables (see ``tabular``): mixed column types, seeded random test split
        kind: DatasetLoader(
            _table_loader(kind),
            needs_path=True,
            options=("label", "types", "drop", "test", "seed", "sep", "transform"),
            summary=summary,
        )
        for kind, summary in (
            ("csv", "a CSV table; ?label=COL&types=COL:KIND,..&drop=COL,..&test=0.2&seed=0"),
            ("mat", "a MATLAB .mat with X (n x d) and y (as ODDS ships); ?test=0.2&seed=0"),
            ("table", "a .csv, .tsv, .mat or .npz table, by suffix"),
            ("odds", "an ODDS benchmark <root>/odds/NAME.mat: odds:thyroid, odds:cardio, ..."),
        )
    },
}
