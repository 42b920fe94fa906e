"""Readers of image data: IDX files (MNIST), scikit-learn's digits, the Olivetti faces, folders of
images and NumPy ``.npz`` arrays. Each ``load_*`` returns a ``Dataset`` of uint8 levels (or float32
for float arrays); the registry (``data.registry``) maps dataset names to them."""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..files import sha256_file
from . import download as _dl
from .dataset import DataFormatError, DataNotFoundError, Dataset, make_dataset

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "parse_idx",
    "read_idx",
    "write_idx",
    "load_mnist",
    "load_digits",
    "load_olivetti",
    "load_folder",
    "load_npz",
    "read_mat",
    "read_npz",
]

_WHERE_HINT = _dl.WHERE_HINT


def _download(urls, dest, verify) -> None:
    """``download.download`` looked up at call time (tests replace ``download.fetch``)."""
    _dl.download(urls, dest, verify)


IDX_MAX_DIMS = 32  # numpy's least maximum number of array dimensions
# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes: magic ``00 00 <type> <ndim>``, ndim big-endian uint32 dims, then data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFormatError(f"{source}: not an IDX file (bad magic number {data[:4].hex()!r})")
    ndim = data[3]
    if not 1 <= ndim <= IDX_MAX_DIMS:
        raise DataFormatError(f"{source}: IDX file with {ndim} dimensions (1..{IDX_MAX_DIMS})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{source}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = math.prod(dims)  # exact: a forged header cannot overflow it
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
        got = _dl.md5(_read_maybe_gzip(tmp))
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


def load_mnist(root: Path, path: str, download: bool) -> Dataset:
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


def load_digits(root: Path, path: str, download: bool) -> Dataset:
    """scikit-learn digits: uint8 (N, 1, 8, 8) = round(v * 255 / 16); the last 297 are test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    test = np.arange(len(x)) >= len(x) - DIGITS_TEST_SIZE
    return make_dataset("digits", x, bunch.target, test)


# ---------------------------------------------------------------------------------------------
# olivetti
# ---------------------------------------------------------------------------------------------

OLIVETTI_URL = "https://ndownloader.figshare.com/files/5976027"
OLIVETTI_SHA256 = "b612fb967f2dc77c9c62d3e1266e0c73d5fca46a4b8906c18e454d41af987794"  # download


def read_mat(path: Path) -> dict[str, np.ndarray]:
    """The variables of a MATLAB ``.mat`` file (not ``__header__`` and the like); DataFormatError
    for a file scipy cannot parse."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # noqa: BLE001 - scipy's parser raises anything on corrupt bytes
        raise DataFormatError(
            f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})"
        ) from None
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def _read_olivetti_faces(path: Path) -> np.ndarray:
    """The ``faces`` array of shape (4096, 400) from ``olivettifaces.mat``."""
    faces = read_mat(path).get("faces")
    if not isinstance(faces, np.ndarray):
        raise DataFormatError(f"{path}: not an olivettifaces.mat (no 'faces' array)")
    if faces.shape != (4096, 400):
        raise DataFormatError(f"{path}: 'faces' has shape {faces.shape}, expected (4096, 400)")
    return faces


def _verify_olivetti_download(tmp: Path) -> None:
    got = sha256_file(tmp)
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


def load_olivetti(root: Path, path: str, download: bool) -> Dataset:
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
    return make_dataset("olivetti", x, index // 10, index % 10 == 9)


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
        raise ConfigError(f"bad size {size!r}: expected S or HxW with positive integers")
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


def load_folder(root: Path, path: str, download: bool, size: str | None = None) -> Dataset:
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
    return make_dataset(f"folder:{folder}", x, y, test)


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
    with np.errstate(over="ignore"):  # values beyond float32 become inf, counted below
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
    if n and arr.min() < 0:
        raise DataFormatError(f"array {key!r}: labels must be >= 0, found {arr.min()}")
    return arr.astype(np.int64)


def read_npz(file: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, loaded with ``allow_pickle=False`` (an object array is
    refused, never unpickled); DataFormatError for anything that is not a readable archive."""
    with open(file, "rb") as f:
        magic = f.read(6)
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise DataFormatError(f"{file}: not an .npz archive (it starts with {magic!r})")
    try:
        npz = np.load(file, allow_pickle=False)
    except ValueError as e:  # a bare .npy of objects: pickle, never allowed
        raise DataFormatError(f"{file}: cannot load without pickle ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataFormatError(f"{file}: not a readable .npz file ({e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataFormatError(f"{file}: a single .npy array, not an .npz archive")
    try:
        with npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as e:  # object arrays need pickle, which is never allowed
        raise DataFormatError(
            f"{file}: cannot load without pickle ({e}); store plain numeric arrays"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataFormatError(f"{file}: not a readable .npz file ({e})") from None


def load_npz(root: Path, path: str, download: bool) -> Dataset:
    """Arrays ``x_train``/``x_test`` (or ``x``: last 10% is test), optional ``y_*``/``y``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataNotFoundError(f"npz file not found: {file}")
    arrays = read_npz(file)

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
    return make_dataset(f"npz:{file}", x, y, test)
