"""Tables with mixed column types: reading, schema inference, encoding, and table datasets.

A table (CSV file, MATLAB ``.mat``/``.npz`` arrays, a pandas DataFrame, a 2-D NumPy array or a
dict of columns) becomes a float32 tensor ``x`` of shape ``(N, C)``, one entry per column:

- ``numeric`` columns hold their values **in the original units**;
- ``binary`` columns hold 0/1 (the two levels, sorted, map to 0 and 1);
- ``categorical`` columns hold the category's code 0..K-1 (categories sorted);
- a missing value is NaN, in any column.

The schema (``TabularSchema``: column types, levels, the numeric transform and standardization
fitted on the training rows) is what the tabular likelihood (``likelihoods.tabular``) is built
from; it travels to the model as ``DataInfo.columns``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import ConfigError
from ..likelihoods.tabular import KINDS as COLUMN_KINDS
from ..likelihoods.tabular import Column
from ..likelihoods.yeo_johnson import MIN_STD, fit_yeo_johnson, yeo_johnson
from .dataset import DataFormatError, DataNotFoundError, Dataset, read_text, spec_option
from .images import read_mat, read_npz

__all__ = [
    "TRANSFORMS",
    "TabularSchema",
    "as_columns",
    "read_table",
    "table_dataset",
    "load_table_dataset",
    "split_rows",
]

log = logging.getLogger(__name__)

# Cells read as missing (case-insensitive, after stripping spaces); "?" is the UCI convention.
NA_STRINGS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "#n/a", "-nan"})
NUMERIC_MAJORITY = 0.9  # a column whose values are ≥ 90% numbers is numeric: the rest are errors
MAX_CATEGORIES = 100  # more distinct strings than this in one column is an error (an ID column?)
TRANSFORMS = ("none", "yeo-johnson")  # numeric column transforms (``TabularSchema.fit``)


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip().lower() in NA_STRINGS
    if isinstance(v, (float, np.floating)):
        return bool(np.isnan(v))
    return False


def _label(v: Any) -> str:
    """A cell as a category label: strings stripped; 3, 3.0 and "3" are all "3"; True is "true"."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)


def _number(v: Any) -> float:
    """A cell as a finite float; raises ValueError for text that is not a number, or inf."""
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    f = float(v.strip()) if isinstance(v, str) else float(v)
    if not math.isfinite(f):
        raise ValueError(f"{v!r} is not finite")
    return f


def as_columns(data: Any) -> dict[str, list]:
    """A table as ``{name: cells}``: a path, a pandas DataFrame, a 2-D array, or a dict of lists.

    Array columns are named ``x0, x1, ...``. All columns must have the same length.
    """
    if isinstance(data, (str, Path)):
        return read_table(data)
    if hasattr(data, "columns") and hasattr(data, "__getitem__") and not isinstance(data, dict):
        cols = {str(c): list(data[c].tolist()) for c in data.columns}  # pandas (duck-typed)
    elif isinstance(data, (np.ndarray, Tensor)):
        arr = np.asarray(data)
        if arr.ndim != 2:
            raise DataFormatError(f"a table array must be 2-D (rows, columns), got {arr.shape}")
        cols = {f"x{j}": arr[:, j].tolist() for j in range(arr.shape[1])}
    elif isinstance(data, dict):
        cols = {str(k): list(np.asarray(v).tolist()) for k, v in data.items()}
    else:
        raise TypeError(f"cannot read a table from {type(data).__name__}")
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise DataFormatError(f"table columns have different lengths: {sorted(lengths)}")
    if not cols:
        raise DataFormatError("the table has no columns")
    return cols


def read_table(path: str | Path, sep: str | None = None) -> dict[str, list]:
    """Read ``.csv``/``.tsv`` (header row required), ``.mat`` (``X`` [+ ``y``]) or ``.npz``
    (``x``/``X`` [+ ``y``]) into ``{name: cells}``; array labels become a column ``y``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"table file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return _arrays_to_columns(read_mat(path), path)
    if suffix == ".npz":
        return _arrays_to_columns(read_npz(path), path)
    return _read_csv(path, sep or ("\t" if suffix == ".tsv" else ","))


def _read_csv(path: Path, sep: str) -> dict[str, list]:
    text = read_text(path, "CSV text", encoding="utf-8-sig")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    except csv.Error as e:
        raise DataFormatError(f"{path}: malformed CSV ({e})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]  # blank lines
    if not rows:
        raise DataFormatError(f"{path}: the file is empty (a header row and data rows expected)")
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        raise DataFormatError(f"{path}: the file has a header but no data rows")
    if len(set(header)) != len(header) or "" in header:
        raise DataFormatError(f"{path}: column names must be unique and non-empty: {header}")
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise DataFormatError(
                f"{path}, line {i}: {len(r)} fields, but the header has {len(header)}"
            )
    return {name: [r[j] for r in rows[1:]] for j, name in enumerate(header)}


def _arrays_to_columns(arrays: dict[str, np.ndarray], path: Path) -> dict[str, list]:
    x = arrays.get("X", arrays.get("x"))
    if x is None:
        raise DataFormatError(f"{path}: expected an array X (or x); found {sorted(arrays)}")
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise DataFormatError(f"{path}: X must be a 2-D real array, got {x.dtype} {x.shape}")
    if np.isinf(x).any():
        raise DataFormatError(f"{path}: X holds {int(np.isinf(x).sum())} inf value(s)")
    cols = {f"x{j}": x[:, j].astype(np.float64).tolist() for j in range(x.shape[1])}
    y = arrays.get("y", arrays.get("Y"))
    if y is not None:
        y = np.asarray(y).ravel()
        if y.dtype.kind not in "biufUS" or (y.dtype.kind == "f" and not np.isfinite(y).all()):
            raise DataFormatError(f"{path}: y must hold finite real numbers or text, got {y.dtype}")
        if len(y) != len(x):
            raise DataFormatError(f"{path}: y has {len(y)} rows, X has {len(x)}")
        cols["y"] = y.tolist()
    return cols


@dataclass
class TabularSchema:
    """The columns of a table, in order, and the optional label column (not a feature)."""

    columns: list[Column]
    label: str | None = None
    label_levels: list[str] | None = None  # text labels: code = index (set by ``encode``)

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def infer(
        cls,
        data: Any,
        *,
        types: dict[str, str] | None = None,
        label: str | None = None,
        drop: tuple[str, ...] | list[str] = (),
        max_categories: int = MAX_CATEGORIES,
    ) -> TabularSchema:
        """Column types from the cells, overridden by ``types`` ({name: kind}).

        Rules: booleans and columns with exactly two distinct values are binary; columns of
        numbers are numeric; text columns are categorical. A column of ≥ 90% numbers with some
        text is an error naming the first bad cell (declare it categorical to keep it).
        Standardization starts at (0, 1); ``fit`` sets it from training rows.
        """
        cols = as_columns(data)
        types = dict(types or {})
        for name in [*types, *drop, *([label] if label else [])]:
            if name not in cols:
                raise DataFormatError(f"no column {name!r}; columns: {list(cols)}")
        columns = [
            _infer_column(name, cells, types.get(name), max_categories)
            for name, cells in cols.items()
            if name not in drop and name != label
        ]
        if not columns:
            raise DataFormatError("the table has no feature columns")
        return cls(columns, label)

    @classmethod
    def from_dict(cls, d: dict) -> TabularSchema:
        return cls([Column(**c) for c in d["columns"]], d.get("label"), d.get("label_levels"))

    def to_dict(self) -> dict:
        return {
            "columns": [asdict(c) for c in self.columns],
            "label": self.label,
            "label_levels": self.label_levels,
        }

    def fit(self, x: Tensor, transform: str = "none") -> TabularSchema:
        """Set each numeric column's transform (``"none"`` or ``"yeo-johnson"``, see the module
        doc; ``fit_yeo_johnson``) and the (mean, std) of its transformed values from the
        observed entries of ``x`` (N, C)."""
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        for j, c in enumerate(self.columns):
            if c.kind == "numeric":
                v = x[:, j][~torch.isnan(x[:, j])].double()
                c.center, c.spread, c.power = (
                    fit_yeo_johnson(v.numpy()) if transform != "none" else (0.0, 1.0, 1.0)
                )
                v = yeo_johnson((v - c.center) / c.spread, torch.tensor(c.power).double())
                c.mean = float(v.mean()) if len(v) else 0.0
                std = float(v.std(unbiased=False)) if len(v) > 1 else 0.0
                c.std = std if std > MIN_STD else 1.0
        return self

    # ---- encoding ------------------------------------------------------------------------
    def encode(self, data: Any, *, unseen: str = "missing") -> tuple[Tensor, Tensor | None]:
        """Cells → ``(x, labels)``: ``x`` float32 ``(N, C)`` (NaN = missing), labels or None.

        A binary/categorical value not among the column's levels is ``unseen``: ``"missing"``
        (default: it is treated as a missing value, with a warning) or ``"error"``. A cell of a
        numeric column that is not a number is always an error naming column, row and value.
        Labels: integer cells as they are; text labels as codes of ``label_levels`` (set here
        from the sorted values when None; a label outside them is then an error).
        """
        if unseen not in ("missing", "error"):
            raise ValueError(f"unseen must be 'missing' or 'error', got {unseen!r}")
        cols = as_columns(data)
        absent = [c.name for c in self.columns if c.name not in cols]
        if absent:
            raise DataFormatError(f"the table lacks column(s) {absent} of the model's schema")
        n = len(next(iter(cols.values())))
        if n == 0:
            raise DataFormatError("the table has no rows")
        x = np.empty((n, len(self.columns)), dtype=np.float32)
        with np.errstate(over="ignore"):
            for j, c in enumerate(self.columns):
                x[:, j] = _encode_column(c, cols[c.name], unseen)
        if np.isinf(x).any():  # finite float64 cells beyond float32's range
            j = int(np.isinf(x).any(0).argmax())
            raise DataFormatError(
                f"column {self.columns[j].name!r} holds values too large for float32 "
                f"(|v| > {np.finfo(np.float32).max:.3g}); rescale it"
            )
        labels = None
        if self.label is not None and self.label in cols:
            codes, self.label_levels = _encode_labels(
                self.label, cols[self.label], self.label_levels
            )
            labels = torch.from_numpy(codes)
        return torch.from_numpy(x), labels

    def decode(self, x: Tensor) -> dict[str, list]:
        """``x`` (N, C) → ``{name: cells}``: numbers in original units, levels as their labels,
        None where missing. The inverse of ``encode`` (up to float32 rounding)."""
        out: dict[str, list] = {}
        for j, c in enumerate(self.columns):
            v = x[:, j].tolist()
            if c.kind == "numeric":
                out[c.name] = [None if math.isnan(a) else a for a in v]
            else:
                out[c.name] = [None if math.isnan(a) else c.levels[int(round(a))] for a in v]
        return out

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)


def _infer_column(name: str, cells: list, kind: str | None, max_categories: int) -> Column:
    present = [(i, v) for i, v in enumerate(cells) if not _is_missing(v)]
    if not present:
        raise DataFormatError(f"column {name!r} has no values; drop it (drop={name})")
    if kind is None:
        kind = _guess_kind(name, present, max_categories)
    if kind == "numeric":
        for i, v in present:
            _checked_number(name, i, v)
        return Column(name, "numeric")
    levels = sorted({_label(v) for _, v in present}, key=_level_order)
    if kind == "binary" and len(levels) != 2:
        raise DataFormatError(
            f"column {name!r} was declared binary but has {len(levels)} distinct value(s): "
            f"{levels[:10]}"
        )
    return Column(name, kind, levels=levels)


def _level_order(s: str) -> tuple:
    """Numbers in numeric order before text in alphabetical order."""
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)


def _guess_kind(name: str, present: list[tuple[int, Any]], max_categories: int) -> str:
    distinct = {_label(v) for _, v in present}
    if len(distinct) == 2:
        return "binary"
    bad = []
    for i, v in present:
        try:
            _number(v)
        except (TypeError, ValueError):
            bad.append((i, v))
            if _is_infinite(v):
                raise DataFormatError(
                    f"column {name!r}, row {i + 1}: {v!r} is not a finite number; empty the cell "
                    "for a missing value"
                ) from None
    if not bad:
        return "numeric"
    if len(bad) <= (1 - NUMERIC_MAJORITY) * len(present):
        i, v = bad[0]
        raise DataFormatError(
            f"column {name!r} looks numeric but row {i + 1} holds {v!r} ({len(bad)} such "
            f"cell(s)); fix or empty those cells, or declare the column categorical "
            f"(types={name}:categorical)"
        )
    if len(distinct) > max_categories:
        raise DataFormatError(
            f"column {name!r} has {len(distinct)} distinct text values (more than "
            f"{max_categories}); drop it (drop={name}) or declare its type (types={name}:...)"
        )
    return "categorical"


def _is_infinite(v: Any) -> bool:
    """A cell that reads as ±inf (``inf``, ``-Infinity``, a float inf, ...)."""
    try:
        return math.isinf(float(v.strip() if isinstance(v, str) else v))
    except (TypeError, ValueError):
        return False


def _checked_number(name: str, i: int, v: Any) -> float:
    try:
        return _number(v)
    except (TypeError, ValueError):
        raise DataFormatError(
            f"column {name!r} is numeric but row {i + 1} holds {v!r}; fix the cell, leave it "
            f"empty for a missing value, or declare the column categorical"
        ) from None


def _encode_column(c: Column, cells: list, unseen: str) -> np.ndarray:
    out = np.full(len(cells), np.nan, dtype=np.float64)
    if c.kind == "numeric":
        for i, v in enumerate(cells):
            if not _is_missing(v):
                out[i] = _checked_number(c.name, i, v)
        return out
    index = {level: k for k, level in enumerate(c.levels)}
    new: dict[str, int] = {}
    for i, v in enumerate(cells):
        if _is_missing(v):
            continue
        k = index.get(_label(v))
        if k is None:
            new[_label(v)] = new.get(_label(v), 0) + 1
            if unseen == "error":
                raise DataFormatError(
                    f"column {c.name!r}, row {i + 1}: {v!r} is not one of the levels the model "
                    f"was trained on ({c.levels[:20]}); pass unseen='missing' to treat it as "
                    "missing"
                )
        else:
            out[i] = k
    if new:
        log.warning("column %r: unseen value(s) %s treated as missing", c.name, new)
    return out


def _encode_labels(
    name: str, cells: list, levels: list[str] | None
) -> tuple[np.ndarray, list[str] | None]:
    """Label cells → (int64 codes, text levels or None for integer labels)."""
    if any(_is_missing(v) for v in cells):
        raise DataFormatError(f"label column {name!r} has missing values")
    if levels is None:
        try:
            f = np.array([_number(v) for v in cells])
            if np.all(f == np.round(f)):
                return f.astype(np.int64), None
        except (TypeError, ValueError):
            pass
        levels = sorted({_label(v) for v in cells}, key=_level_order)
    index = {s: k for k, s in enumerate(levels)}
    unknown = sorted({_label(v) for v in cells} - set(index))
    if unknown:
        raise DataFormatError(f"label column {name!r}: unknown label(s) {unknown[:10]}")
    return np.array([index[_label(v)] for v in cells], dtype=np.int64), levels


def split_rows(n: int, test: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean test mask of ``n`` rows: a seeded random ``test`` fraction (at least one row)."""
    if not 0 < test < 1:
        raise ConfigError(f"test fraction must be in (0, 1), got {test}")
    if n < 2:
        raise DataFormatError(f"a table needs at least 2 rows to split, got {n}")
    n_test = min(max(1, round(test * n)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    mask = np.zeros(n, dtype=bool)
    mask[perm[:n_test]] = True
    return mask


def table_dataset(
    data: Any,
    *,
    types: dict[str, str] | None = None,
    label: str | None = None,
    drop: tuple[str, ...] | list[str] = (),
    test: float = 0.2,
    seed: int = 0,
    name: str = "table",
    transform: str = "none",
) -> Dataset:
    """A ``Dataset`` from a table: schema inferred (``types`` override), numeric ``transform``
    (``TabularSchema.fit``) and standardization fitted on the training rows, a seeded random
    ``test`` fraction held out.

    ``dataset.schema`` is the schema dict (``likelihood``, ``columns``, ``label``) plus the row
    numbers of each split (``train_rows``, ``test_rows``) in the original table.
    """
    cols = as_columns(data)
    schema = TabularSchema.infer(cols, types=types, label=label, drop=drop)
    x, y = schema.encode(cols)
    is_test = split_rows(len(x), test, seed)
    schema.fit(x[torch.from_numpy(~is_test)], transform)
    rows = np.arange(len(x))

    def part(t: Tensor | None, mask: np.ndarray) -> Tensor | None:
        return None if t is None else t[torch.from_numpy(mask)]

    return Dataset(
        name=name,
        train=part(x, ~is_test),
        test=part(x, is_test),
        train_labels=part(y, ~is_test),
        test_labels=part(y, is_test),
        event_shape=(x.shape[1],),
        schema={
            **schema.to_dict(),
            "train_rows": rows[~is_test].tolist(),
            "test_rows": rows[is_test].tolist(),
        },
    )


def _option_map(text: str | None) -> dict[str, str]:
    """``"a:numeric,b:binary"`` → ``{"a": "numeric", "b": "binary"}``."""
    out = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition(":")
        if not sep:
            raise ConfigError(f"bad types entry {item!r}; expected NAME:KIND")
        out[key.strip()] = value.strip()
    return out


def load_table_dataset(
    kind: str,
    root: Path,
    path: str,
    *,
    label: str | None = None,
    types: str | None = None,
    drop: str | None = None,
    test: str = "0.2",
    seed: str = "0",
    sep: str | None = None,
    transform: str = "none",
) -> Dataset:
    """The ``csv:PATH``, ``mat:PATH``, ``table:PATH`` and ``odds:NAME`` dataset loaders.

    Options: ``label=COL`` (labels, not a feature; arrays' ``y`` is the label by default),
    ``types=COL:KIND,...``, ``drop=COL,...``, ``test=0.2`` and ``seed=0`` (the split), ``sep``,
    ``transform=none|yeo-johnson`` (of numeric columns, fitted on the training rows).
    """
    file = root / "odds" / f"{path}.mat" if kind == "odds" else Path(path).expanduser()
    if kind == "odds" and not file.is_file():
        raise DataNotFoundError(
            f"ODDS file missing: {file}. Put NAME.mat (with arrays X and y) in {file.parent}."
        )
    if sep is not None:
        spec_option("sep", sep, str, lambda v: len(v) == 1, "one character")
    if transform not in TRANSFORMS:
        raise ConfigError(f"dataset option transform={transform!r}: expected one of {TRANSFORMS}")
    kinds = _option_map(types)
    bad = {k: v for k, v in kinds.items() if v not in COLUMN_KINDS}
    if bad:
        raise ConfigError(f"dataset option types: unknown kind(s) {bad}; kinds: {COLUMN_KINDS}")
    test_fraction = spec_option("test", test, float, lambda v: 0 < v < 1, "a fraction in (0, 1)")
    seed_ = spec_option("seed", seed, int, what="an integer")
    cols = read_table(file, sep)
    if label is None and "y" in cols and file.suffix.lower() in (".mat", ".npz"):
        label = "y"
    return table_dataset(
        cols,
        types=kinds,
        label=label,
        drop=[d.strip() for d in (drop or "").split(",") if d.strip()],
        test=test_fraction,
        seed=seed_,
        name=f"{kind}:{path}",
        transform=transform,
    )
