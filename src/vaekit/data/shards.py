"""Datasets larger than memory: fixed-size ``.npy`` shards and an ``index.json``, read through mmap.

    DIR/train-x-00000.npy, train-x-00001.npy, ...   ``rows_per_shard`` rows each (the last fewer)
    DIR/train-y-00000.npy, ...                       int64 labels over the same row ranges
    DIR/test-x-00000.npy, ...
    DIR/index.json    written last: format, rows per shard, per split its row count and per array
                      dtype, shape and every shard's file, rows and sha256; ``meta`` (the dataset's
                      name, a table schema, a vocabulary, ...)

``pack`` writes shards from any array-like (``np.ndarray``, ``np.memmap``, ``torch.Tensor`` or an
object with ``shape``, ``dtype`` and slicing), one shard in memory at a time, each to a temporary
name, fsynced and renamed; the index goes last, so a directory is a complete pack exactly when it
has an ``index.json``. Packing is deterministic: the same arrays give the same bytes.

``ShardedArray`` reads rows like a tensor: ``len``, ``shape``, ``dtype`` (a torch dtype), and
``x[i]``, ``x[a:b]``, ``x[index_tensor]`` return torch tensors in the order asked. A batch's rows
are read shard by shard in sorted order, never by indexing a whole memmap: an array of at most
``max_resident`` bytes (1 GiB) from read-only memory maps of its shards, as fast as in-memory
indexing; a larger one with ``pread`` into the batch, so that resident memory stays at the batch
however large the data (a memory map's pages stay mapped, and on Linux 6 a fault maps a whole
page-cache folio of up to 2 MiB: mapping an 8 GiB set at random would make it all resident).
Each shard's sha256 is checked when it is first opened (``verify="lazy"``), or all at once
(``"open"``); its size and ``.npy`` header always are. A wrong sha256, a truncated or a missing
shard raises ``ShardError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import fsync_dir, sha256_file
from .dataset import DataFormatError, DataNotFoundError, Dataset

__all__ = [
    "ShardError",
    "ShardedArray",
    "load_packed_dataset",
    "load_shards",
    "open_shards",
    "pack",
    "pack_dataset",
]

FORMAT = "vaekit-shards"
VERSION = 1
INDEX = "index.json"
SHARD_BYTES = 64 << 20  # the default shard size when ``rows_per_shard`` is not given
MAX_RESIDENT = 1 << 30  # arrays up to this size are memory-mapped, larger ones read with pread
_SPLIT = re.compile(r"^[A-Za-z0-9_]+$")
_SHARD_FILE = re.compile(r"^[A-Za-z0-9_]+-[xy]-\d{5,}\.npy$")
_TORCH = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.int64): torch.int64,
}


class ShardError(DataFormatError):
    """A pack that is incomplete, or a shard that is missing, truncated, corrupt or foreign."""


# ---- writing ----------------------------------------------------------------------------------


def _as_numpy(chunk: Any) -> np.ndarray:
    if isinstance(chunk, torch.Tensor):
        return chunk.detach().cpu().numpy()
    return np.asarray(chunk)


def _storage_dtype(dtype: Any, labels: bool) -> np.dtype:
    """uint8 stays uint8 (8-bit images), floats become float32, other integers int64."""
    if isinstance(dtype, torch.dtype):
        dtype = torch.empty(0, dtype=dtype).numpy().dtype
    dtype = np.dtype(dtype)
    if labels:
        if dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got {dtype}")
        return np.dtype(np.int64)
    if dtype == np.uint8 or dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    raise ValueError(f"cannot store {dtype} rows; give uint8, float or integer arrays")


class _HashingWriter:
    """A file wrapper that hashes what ``np.lib.format.write_array`` writes through it."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)


def _write_npy(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as ``.npy`` to a temporary name, fsync, rename to ``path``; its sha256."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            out = _HashingWriter(f)
            np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return out.sha.hexdigest()


def _write_array(out_dir: Path, prefix: str, source: Any, n: int, rps: int, labels: bool) -> dict:
    dtype = _storage_dtype(source.dtype, labels)
    shape = [n, *(int(d) for d in tuple(source.shape)[1:])]
    if labels and len(shape) != 1:
        raise ValueError(f"{prefix}: labels must be one-dimensional, got shape {shape}")
    shards = []
    for k, start in enumerate(range(0, n, rps)):
        chunk = _as_numpy(source[start : min(start + rps, n)])
        if chunk.shape[1:] != tuple(shape[1:]) or len(chunk) != min(rps, n - start):
            raise ValueError(f"{prefix}: rows {start}.. have shape {chunk.shape}, expected {shape}")
        if dtype == np.uint8 and chunk.dtype.kind == "f":
            raise ValueError(f"{prefix}: uint8 storage of float rows")
        name = f"{prefix}-{k:05d}.npy"
        sha = _write_npy(out_dir / name, chunk.astype(dtype, copy=False))
        shards.append({"file": name, "rows": len(chunk), "sha256": sha})
    return {"dtype": dtype.name, "shape": shape, "shards": shards}


def pack(
    splits: Mapping[str, tuple[Any, Any | None]],
    out_dir: str | Path,
    rows_per_shard: int | None = None,
    meta: dict | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``{split: (x, labels or None)}`` as shards into ``out_dir``; return ``out_dir``.

    ``rows_per_shard`` defaults to about 64 MiB of rows. ``meta`` (JSON) is stored in the index.
    An existing pack is replaced only with ``overwrite=True`` (its index is removed first, so a
    crash while packing leaves no index rather than a mixed pack).
    """
    out_dir = Path(out_dir)
    index_path = out_dir / INDEX
    if index_path.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a pack; pass overwrite=True to replace it")
    if not splits:
        raise ValueError("nothing to pack: give at least one split")
    for split, (x, y) in splits.items():
        if not _SPLIT.match(split):
            raise ValueError(f"split names are letters, digits and _, got {split!r}")
        if len(x) == 0 or len(tuple(x.shape)) < 2:
            raise ValueError(f"split {split!r}: x must be (N, ...) with N > 0, got {x.shape}")
        _storage_dtype(x.dtype, labels=False)
        if y is not None:
            _storage_dtype(y.dtype, labels=True)
            if len(y) != len(x) or len(tuple(y.shape)) != 1:
                raise ValueError(f"split {split!r}: {len(y)} labels for {len(x)} rows")
    if rows_per_shard is None:
        x0 = next(iter(splits.values()))[0]
        row_bytes = math.prod(tuple(x0.shape)[1:]) * _storage_dtype(x0.dtype, False).itemsize
        rows_per_shard = max(1, SHARD_BYTES // max(row_bytes, 1))
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    meta = json.loads(json.dumps(meta or {}))  # JSON only, and a copy
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path.unlink(missing_ok=True)
    entries = {}
    for split, (x, y) in splits.items():
        n, rps = len(x), rows_per_shard
        entries[split] = {
            "rows": n,
            "x": _write_array(out_dir, f"{split}-x", x, n, rps, labels=False),
            "y": None if y is None else _write_array(out_dir, f"{split}-y", y, n, rps, labels=True),
        }
    index = {
        "format": FORMAT,
        "version": VERSION,
        "rows_per_shard": rows_per_shard,
        "splits": entries,
        "meta": meta,
    }
    fsync_dir(out_dir)
    tmp = out_dir / f".{INDEX}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(index, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, index_path)
    fsync_dir(out_dir)
    keep = {s["file"] for e in entries.values() for a in (e["x"], e["y"]) if a for s in a["shards"]}
    for path in out_dir.iterdir():  # shards of an earlier pack that this one does not use
        if _SHARD_FILE.match(path.name) and path.name not in keep:
            path.unlink()
    return out_dir


def pack_dataset(
    ds: Dataset, out_dir: str | Path, rows_per_shard: int | None = None, *, overwrite: bool = False
) -> Path:
    """Pack a ``Dataset``: its splits and labels; as meta its name, table schema, vocabulary
    and the config values it implies (``Dataset.implies``), which ``load_packed_dataset`` reads."""
    meta: dict[str, Any] = {"name": ds.name, "implies": dict(ds.implies)}
    if ds.schema is not None:
        meta["schema"] = ds.schema
    if ds.vocab is not None:
        meta["vocab"] = list(ds.vocab)
    splits = {"train": (ds.train, ds.train_labels), "test": (ds.test, ds.test_labels)}
    return pack(splits, out_dir, rows_per_shard, meta, overwrite=overwrite)


# ---- reading ----------------------------------------------------------------------------------


class _Shard:
    """One open shard, its size and ``.npy`` header checked against the index: a read-only memory
    map viewed as an ndarray (``mapped``), or a descriptor and the data's offset for ``pread``."""

    __slots__ = ("fd", "offset", "array")

    def __init__(self, path: Path, rows: int, event: tuple[int, ...], dtype: np.dtype, mapped):
        if not path.is_file():
            raise ShardError(f"shard {path} is missing")
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }[version]
                shape, fortran, found = read_header(f)
            except (ValueError, KeyError, EOFError) as e:
                raise ShardError(f"shard {path} is not a readable .npy file: {e}") from None
            if shape != (rows, *event) or found != dtype or fortran:
                raise ShardError(
                    f"shard {path} holds {found} {shape}, but {INDEX} says {dtype} "
                    f"{(rows, *event)}: it belongs to another pack"
                )
            self.offset, size = f.tell(), os.fstat(f.fileno()).st_size
            count = rows * math.prod(event)
            expected = self.offset + count * dtype.itemsize
            if size != expected:
                raise ShardError(
                    f"shard {path} is truncated or padded: {size} bytes, expected {expected}"
                )
            self.fd, self.array = -1, None
            if mapped:  # what np.load(path, mmap_mode="r") does, from the header read above
                view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self.array = np.frombuffer(view, dtype, count, self.offset).reshape(rows, *event)
            else:
                self.fd = os.dup(f.fileno())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ShardedArray:
    """Rows of one array of a pack, read on demand; indexes like a tensor, returns tensors.

    An array of at most ``max_resident`` bytes (None: any size) is memory-mapped: rows are
    gathered from the maps, whose pages stay mapped, so resident memory grows up to the array's
    size and reads cost what in-memory indexing does. A larger one is read with ``pread`` straight
    into each batch (one call per run of consecutive rows): resident memory stays at the batch,
    and the kernel's page cache (not the process) holds what was read.
    """

    def __init__(
        self,
        root: str | Path,
        entry: dict,
        rows_per_shard: int,
        *,
        name: str = "",
        verify: str = "lazy",
        max_resident: int | None = MAX_RESIDENT,
    ):
        if verify not in ("lazy", "open", "none"):
            raise ValueError(f"verify must be lazy, open or none, got {verify!r}")
        root = Path(root)
        self.name = name or str(root)
        try:
            self._np_dtype = np.dtype(entry["dtype"])
            self.dtype: torch.dtype = _TORCH[self._np_dtype]
            self.shape = torch.Size(int(d) for d in entry["shape"])
            if not self.shape:
                raise ValueError("an array needs a shape (N, ...)")
            shards = entry["shards"]
            self.files = [root / _plain_name(s["file"]) for s in shards]
            self._sha = [str(s["sha256"]) for s in shards]
            rows = [int(s["rows"]) for s in shards]
        except (KeyError, TypeError, ValueError) as e:
            raise ShardError(f"{root / INDEX}: bad entry for {self.name}: {e!r}") from None
        self._rps = int(rows_per_shard)
        n = self.shape[0]
        full = bool(rows) and all(r == self._rps for r in rows[:-1]) and 0 < rows[-1] <= self._rps
        if sum(rows) != n or not full or min(self.shape) < 1:
            raise ShardError(f"{root / INDEX}: shard rows {rows} do not make {n} rows")
        self._rows = rows
        self._event = tuple(self.shape[1:])
        self._row_bytes = math.prod(self._event) * self._np_dtype.itemsize
        self.nbytes = n * self._row_bytes
        self.mapped = max_resident is None or self.nbytes <= max_resident
        self._verify = verify
        self._verified = [False] * len(rows)
        self._open: list[_Shard | None] = [None] * len(rows)
        if verify == "open":
            for k in range(len(rows)):
                self._check(k)

    # ---- tensor-like surface -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        shape, shards = tuple(self.shape), len(self.files)
        return f"ShardedArray({self.name}, shape={shape}, dtype={self.dtype}, shards={shards})"

    def __getitem__(self, key) -> torch.Tensor:
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return torch.from_numpy(self._read_range(start, max(start, stop)))
            key = np.arange(start, stop, step)
        elif isinstance(key, int | np.integer) or (
            isinstance(key, torch.Tensor) and key.ndim == 0 and not key.is_floating_point()
        ):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {n} rows")
            return torch.from_numpy(self._gather(np.array([i % n]))[0])
        idx = key.cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        if idx.dtype == np.bool_:
            if idx.shape != (n,):
                raise IndexError(f"a boolean mask must have shape ({n},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        if idx.dtype.kind not in "iu":
            raise IndexError(f"rows are indexed by integers, slices or a mask, got {idx.dtype}")
        flat = idx.reshape(-1).astype(np.int64, copy=False)
        if flat.size and (flat.min() < -n or flat.max() >= n):
            raise IndexError(f"index out of range for {n} rows")
        rows = self._gather(np.where(flat < 0, flat + n, flat))
        return torch.from_numpy(rows.reshape(*idx.shape, *self._event))

    def to_tensor(self) -> torch.Tensor:
        """The whole array in memory (e.g. a test split), read shard by shard."""
        return self[:]

    def verify(self) -> None:
        """Check every shard's sha256 now."""
        for k in range(len(self.files)):
            self._verified[k] = False
            self._check(k)

    def close(self) -> None:
        """Close the shards (a later read opens them again)."""
        for k, shard in enumerate(getattr(self, "_open", ())):  # also after a failed __init__
            if shard is not None:
                shard.close()
                self._open[k] = None

    def __del__(self) -> None:
        self.close()

    # ---- reading ---------------------------------------------------------------------------------
    def _check(self, k: int) -> None:
        if self._verify != "none" and not self._verified[k]:
            path = self.files[k]
            try:
                sha = sha256_file(path)
            except FileNotFoundError:
                raise ShardError(f"shard {path} is missing") from None
            if sha != self._sha[k]:
                raise ShardError(
                    f"shard {path} does not match its sha256 in {INDEX}: the file is corrupt "
                    "or was modified after packing"
                )
            self._verified[k] = True

    def _shard(self, k: int) -> _Shard:
        shard = self._open[k]
        if shard is None:
            self._check(k)
            args = (self.files[k], self._rows[k], self._event, self._np_dtype, self.mapped)
            shard = self._open[k] = _Shard(*args)
        return shard

    def _pread(self, k: int, row: int, out: memoryview) -> None:
        """Read ``len(out)`` bytes of rows ``row ..`` of shard ``k`` into ``out``."""
        shard = self._open[k] or self._shard(k)
        if os.preadv(shard.fd, [out], shard.offset + row * self._row_bytes) != len(out):
            raise ShardError(f"shard {self.files[k]} was truncated while open")

    def _gather(self, flat: np.ndarray) -> np.ndarray:
        """Rows ``flat`` (in range, any order, repeats allowed), read in sorted order per shard."""
        out = np.empty((len(flat), *self._event), self._np_dtype)
        if not len(flat):
            return out
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        shard_of = ordered // self._rps
        gathered = np.empty_like(out)
        if self.mapped:  # segments of one shard each
            cuts = np.flatnonzero(np.diff(shard_of)) + 1
            for a, b in zip([0, *cuts], [*cuts, len(flat)], strict=True):
                k = int(shard_of[a])
                local = ordered[a:b] - k * self._rps  # in range: "clip" avoids a buffered copy
                np.take(self._shard(k).array, local, axis=0, out=gathered[a:b], mode="clip")
        else:  # runs of consecutive rows within one shard, one pread each
            cuts = (np.flatnonzero((np.diff(ordered) != 1) | (np.diff(shard_of) != 0)) + 1).tolist()
            buf, size, rps = memoryview(gathered).cast("B"), self._row_bytes, self._rps
            starts = [0, *cuts]
            for a, b, first in zip(
                starts, [*cuts, len(flat)], ordered[starts].tolist(), strict=True
            ):
                self._pread(first // rps, first % rps, buf[a * size : b * size])
        out[order] = gathered
        return out

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self._event), self._np_dtype)
        pos = start
        while pos < stop:
            k, row = divmod(pos, self._rps)
            hi = min(stop, (k + 1) * self._rps)
            if self.mapped:
                out[pos - start : hi - start] = self._shard(k).array[row : row + hi - pos]
            else:
                self._pread(k, row, memoryview(out[pos - start : hi - start]).cast("B"))
            pos = hi
        return out


def _plain_name(name: str) -> str:
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"shard file {name!r} is not a plain file name")
    return name


def open_shards(
    path: str | Path, *, verify: str = "lazy", max_resident: int | None = MAX_RESIDENT
) -> tuple[dict[str, tuple[ShardedArray, ShardedArray | None]], dict]:
    """Every split of a pack as ``{split: (x, labels or None)}``, and its ``meta``."""
    path = Path(path)
    try:
        index = json.loads((path / INDEX).read_text())
    except FileNotFoundError:
        raise ShardError(f"{path} has no {INDEX}: not a pack, or packing did not finish") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{path / INDEX} is corrupt: {e}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ShardError(f"{path / INDEX} is not a {FORMAT} index")
    if index.get("version") != VERSION:
        raise ShardError(f"{path / INDEX} has version {index.get('version')}, expected {VERSION}")
    rps, splits, meta = index.get("rows_per_shard"), index.get("splits"), index.get("meta") or {}
    if not isinstance(rps, int) or isinstance(rps, bool) or rps < 1:
        raise ShardError(f"{path / INDEX}: rows_per_shard must be a positive integer, got {rps!r}")
    entries_ok = isinstance(splits, dict) and all(
        isinstance(e, dict) and isinstance(e.get("x"), dict) for e in splits.values()
    )
    if not entries_ok or not isinstance(meta, dict):
        raise ShardError(f"{path / INDEX}: malformed: 'splits' must map each split to its arrays")
    out = {}
    for split, entry in splits.items():
        opts = {"verify": verify, "max_resident": max_resident}
        x = ShardedArray(path, entry["x"], rps, name=f"{path}:{split}/x", **opts)
        y = entry.get("y")
        y = None if y is None else ShardedArray(path, y, rps, name=f"{path}:{split}/y", **opts)
        if len(x) != entry.get("rows") or (y is not None and len(y) != len(x)):
            raise ShardError(f"{path / INDEX}: split {split!r} has inconsistent row counts")
        out[split] = (x, y)
    return out, meta


def load_shards(
    path: str | Path, *, verify: str = "lazy", max_resident: int | None = MAX_RESIDENT
) -> tuple[ShardedArray, ShardedArray, ShardedArray | None, ShardedArray | None, dict]:
    """``(train, test, train_labels, test_labels, meta)`` of a pack with train and test splits.

    ``train``/``test`` index like the in-memory tensors the trainer slices (``ds.train[idx]``);
    labels are ``ShardedArray`` as well (``.to_tensor()`` reads one into memory), or None.
    """
    splits, meta = open_shards(path, verify=verify, max_resident=max_resident)
    missing = [s for s in ("train", "test") if s not in splits]
    if missing:
        raise ShardError(f"{path}: the pack has no {' and '.join(missing)} split")
    (train, train_y), (test, test_y) = splits["train"], splits["test"]
    if train.dtype != test.dtype or train.shape[1:] != test.shape[1:]:
        raise ShardError(f"{path}: train and test rows differ in dtype or shape")
    return train, test, train_y, test_y, meta


def load_packed_dataset(path: str | Path, *, verify: str = "lazy") -> Dataset:
    """A pack as a ``Dataset`` (the ``shards:PATH`` dataset kind): ``train`` stays on disk (a
    ``ShardedArray``, read batch by batch), the test split and the labels are read into memory;
    name, schema, vocabulary and implied config values come from the pack's meta."""
    path = Path(path).expanduser()
    if not (path / INDEX).is_file():
        raise DataNotFoundError(f"no packed dataset at {path}: {path / INDEX} is missing")
    train, test, train_y, test_y, meta = load_shards(path, verify=verify)
    vocab, implies = meta.get("vocab"), meta.get("implies") or {}
    if not (vocab is None or isinstance(vocab, list)) or not isinstance(implies, dict):
        raise ShardError(
            f"{path / INDEX}: malformed meta (vocab must be a list, implies a mapping)"
        )
    return Dataset(
        name=str(meta.get("name") or f"shards:{path}"),
        train=train,  # a ShardedArray: len, shape, dtype and x[idx], like a tensor
        test=test.to_tensor(),
        train_labels=None if train_y is None else train_y.to_tensor(),
        test_labels=None if test_y is None else test_y.to_tensor(),
        event_shape=tuple(train.shape[1:]),
        schema=meta.get("schema"),
        vocab=tuple(meta["vocab"]) if meta.get("vocab") else None,
        implies=dict(meta.get("implies") or {}),
    )
