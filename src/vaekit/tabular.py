"""Tables with mixed column types: schema inference, encoding, and a mixed-type likelihood head.

A table (CSV file, MATLAB ``.mat``/``.npz`` arrays, a pandas DataFrame, a 2-D NumPy array or a
dict of columns) becomes a float32 tensor ``x`` of shape ``(N, C)``, one entry per column:

- ``numeric`` columns hold their values **in the original units**;
- ``binary`` columns hold 0/1 (the two levels, sorted, map to 0 and 1);
- ``categorical`` columns hold the category's code 0..K-1 (categories sorted);
- a missing value is NaN, in any column.

``TabularLikelihood`` turns decoder outputs into p(x|z) = Π_c p_c(x_c|z) over the observed columns:
numeric N(m + s·loc, (s·σ)²) on the column's transformed value u = T(x), with the standardization
(m, s) of u and a learned σ per column, binary Bernoulli(logits), categorical Categorical(logits).
The density is in the original units: log p(x) = log N((u−m)/s; loc, σ²) − log s + log T'(x).
T is the identity unless the schema was fitted with ``transform="yeo-johnson"``: then
T(x) = YJ_λ((x − c)/r), a Yeo-Johnson power transform of the robustly centred and scaled column
(median c, scaled MAD r), λ fitted by maximum likelihood on the rows that are not outliers of the
transformed column and kept in [0, 2], where T maps the real line onto itself (extreme values stay
extreme, and T has an inverse everywhere). Missing entries contribute exactly 0 nats.
The encoder sees standardized (transformed) numeric values, ±1 for binary, one-hot for
categorical, and 0 (or an all-zero one-hot) where a value is missing.

The schema (column names, types, levels, standardization) is JSON in ``ModelConfig.columns``, so a
run rebuilds its model from ``config.json`` alone.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, constraints

from .data import DataFormatError, DataNotFoundError, Dataset
from .distributions import LIKELIHOODS, Likelihood, SupportError

__all__ = [
    "KINDS",
    "Column",
    "TabularSchema",
    "MixedColumns",
    "TabularLikelihood",
    "as_columns",
    "read_table",
    "table_dataset",
    "split_rows",
    "impute",
    "TRANSFORMS",
    "yeo_johnson",
    "yeo_johnson_inverse",
    "yeo_johnson_log_slope",
    "fit_yeo_johnson",
]

log = logging.getLogger(__name__)

KINDS = ("numeric", "binary", "categorical")
# Cells read as missing (case-insensitive, after stripping spaces); "?" is the UCI convention.
NA_STRINGS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "#n/a", "-nan"})
NUMERIC_MAJORITY = 0.9  # a column whose values are ≥ 90% numbers is numeric: the rest are errors
MAX_CATEGORIES = 100  # more distinct strings than this in one column is an error (an ID column?)
MIN_STD = 1e-8
MIN_SCALE = 1e-3  # smallest numeric σ in standardized units
TRANSFORMS = ("none", "yeo-johnson")  # numeric column transforms (``TabularSchema.fit``)
POWER_RANGE = (0.0, 2.0)  # Yeo-Johnson λ in here: T maps ℝ onto ℝ
POWER_SEARCH = (-4.0, 6.0)  # λ search interval of the robust fit (projected to POWER_RANGE)
OUTLIER_Z = 2.576  # rows beyond this robust z of the transformed column do not fit λ


# ---------------------------------------------------------------------------------------------
# Reading tables: everything becomes {column name: list of cells}
# ---------------------------------------------------------------------------------------------


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
        return _arrays_to_columns(_read_mat(path), path)
    if suffix == ".npz":
        return _arrays_to_columns(_read_npz(path), path)
    return _read_csv(path, sep or ("\t" if suffix == ".tsv" else ","))


def _read_csv(path: Path, sep: str) -> dict[str, list]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=sep))
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e})") from None
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


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        mat = scipy.io.loadmat(path)
    except (MatReadError, ValueError, OSError, NotImplementedError, TypeError) as e:
        raise DataFormatError(f"{path}: not a readable MATLAB file ({e})") from None
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as e:
        raise DataFormatError(f"{path}: not a readable .npz without pickle ({e})") from None


def _arrays_to_columns(arrays: dict[str, np.ndarray], path: Path) -> dict[str, list]:
    x = arrays.get("X", arrays.get("x"))
    if x is None:
        raise DataFormatError(f"{path}: expected an array X (or x); found {sorted(arrays)}")
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise DataFormatError(f"{path}: X must be a 2-D numeric array, got {x.dtype} {x.shape}")
    cols = {f"x{j}": x[:, j].astype(np.float64).tolist() for j in range(x.shape[1])}
    y = arrays.get("y", arrays.get("Y"))
    if y is not None:
        y = np.asarray(y).ravel()
        if len(y) != len(x):
            raise DataFormatError(f"{path}: y has {len(y)} rows, X has {len(x)}")
        cols["y"] = y.tolist()
    return cols


# ---------------------------------------------------------------------------------------------
# The Yeo-Johnson transform of numeric columns
# ---------------------------------------------------------------------------------------------


def _scaled(fn, a: Tensor, lam: Tensor) -> Tensor:
    """fn(λ·a)/λ elementwise, and its λ → 0 limit ``a`` (for fn = expm1 or log1p)."""
    return torch.where(lam.abs() < 1e-6, a, fn(lam * a) / torch.where(lam == 0, 1, lam))


def yeo_johnson(z: Tensor, lam: Tensor) -> Tensor:
    """Yeo-Johnson transform, elementwise (``lam`` broadcasts): ((1+z)^λ − 1)/λ for z ≥ 0,
    −((1−z)^(2−λ) − 1)/(2−λ) for z < 0 (the logarithms at λ = 0 and λ = 2)."""
    pos, neg = torch.log1p(z.clamp_min(0)), torch.log1p((-z).clamp_min(0))
    lam, mu = lam.expand_as(z), (2 - lam).expand_as(z)
    return torch.where(z >= 0, _scaled(torch.expm1, pos, lam), -_scaled(torch.expm1, neg, mu))


def yeo_johnson_inverse(t: Tensor, lam: Tensor) -> Tensor:
    """The inverse of ``yeo_johnson`` for λ in [0, 2], defined on the whole real line."""
    lam, mu = lam.expand_as(t), (2 - lam).expand_as(t)
    up = _scaled(torch.log1p, t.clamp_min(0), lam)
    down = _scaled(torch.log1p, (-t).clamp_min(0), mu)
    return torch.where(t >= 0, torch.expm1(up), -torch.expm1(down))


def yeo_johnson_log_slope(z: Tensor, lam: Tensor) -> Tensor:
    """log dYJ_λ(z)/dz = (λ − 1)·sign(z)·log(1 + |z|)."""
    return (lam - 1) * torch.sign(z) * torch.log1p(z.abs())


def fit_yeo_johnson(v: np.ndarray, rounds: int = 3) -> tuple[float, float, float]:
    """(center, spread, λ) of a column's values ``v``: median and 1.4826·MAD (the std when the
    MAD is 0), and the maximum-likelihood λ (searched in ``POWER_SEARCH``) of the standardized
    values, refitted ``rounds`` times on the rows within ``OUTLIER_Z`` robust z-scores of the
    transformed column, so that outliers in the (contaminated) data do not bend λ towards
    themselves (Raymaekers & Rousseeuw, 2021, "Transforming variables to central normality");
    the result is projected onto ``POWER_RANGE``, where the transform maps ℝ onto ℝ. A column
    whose core (those rows) is a single value, e.g. mostly zeros, keeps λ = 1 (no shape to fit)."""
    from scipy.optimize import minimize_scalar
    from scipy.stats import yeojohnson_llf

    v = np.asarray(v, dtype=np.float64)
    if len(v) < 3 or np.ptp(v) == 0:
        return 0.0, 1.0, 1.0
    center = float(np.median(v))
    spread = float(1.4826 * np.median(np.abs(v - center)))
    if spread <= MIN_STD:
        spread = float(v.std())
    z = (v - center) / spread

    def best(rows: np.ndarray) -> float:
        res = minimize_scalar(
            lambda lam: -yeojohnson_llf(lam, rows), bounds=POWER_SEARCH, method="bounded"
        )
        return float(res.x)

    lam = best(z)
    for _ in range(rounds):
        t = yeo_johnson(torch.from_numpy(z), torch.tensor(lam).double()).numpy()
        mid = np.median(t)
        mad = 1.4826 * np.median(np.abs(t - mid))
        keep = np.abs(t - mid) <= OUTLIER_Z * mad
        if mad <= MIN_STD or keep.sum() < 3 or np.ptp(z[keep]) == 0:
            return center, spread, 1.0  # the core is one value: no shape to fit, identity
        lam = best(z[keep])
    return center, spread, float(np.clip(lam, *POWER_RANGE))


# ---------------------------------------------------------------------------------------------
# The schema: column types, levels and standardization
# ---------------------------------------------------------------------------------------------


@dataclass
class Column:
    """One column: ``kind`` numeric | binary | categorical; ``levels`` of binary/categorical
    columns (code = index); ``mean``/``std`` standardize a numeric column's transformed value
    T(x) = YJ_power((x − center)/spread) (the identity with the defaults power 1, center 0,
    spread 1)."""

    name: str
    kind: str
    levels: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    power: float = 1.0
    center: float = 0.0
    spread: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"column {self.name!r}: type must be one of {KINDS}, got {self.kind!r}"
            )
        if self.kind == "binary" and len(self.levels) != 2:
            raise ValueError(f"binary column {self.name!r} needs 2 levels, got {self.levels}")
        if self.kind == "categorical" and not self.levels:
            raise ValueError(f"categorical column {self.name!r} has no categories")

    @property
    def width(self) -> int:
        """Slots in the network's input / output: K for categorical, else 1."""
        return len(self.levels) if self.kind == "categorical" else 1


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
        for j, c in enumerate(self.columns):
            x[:, j] = _encode_column(c, cols[c.name], unseen)
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


# ---------------------------------------------------------------------------------------------
# Datasets from tables
# ---------------------------------------------------------------------------------------------


def split_rows(n: int, test: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean test mask of ``n`` rows: a seeded random ``test`` fraction (at least one row)."""
    if not 0 < test < 1:
        raise ValueError(f"test fraction must be in (0, 1), got {test}")
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
            "likelihood": TabularLikelihood.name,
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
            raise ValueError(f"bad types entry {item!r}; expected NAME:KIND")
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
    cols = read_table(file, sep)
    if label is None and "y" in cols and file.suffix.lower() in (".mat", ".npz"):
        label = "y"
    return table_dataset(
        cols,
        types=_option_map(types),
        label=label,
        drop=[d.strip() for d in (drop or "").split(",") if d.strip()],
        test=float(test),
        seed=int(seed),
        name=f"{kind}:{path}",
        transform=transform,
    )


def adopt_table_schema(model_cfg, schema: dict, resume: bool) -> None:
    """Give a model config the likelihood and columns that a table dataset brings.

    On resume the saved columns must equal the data's (else the data file changed)."""
    if resume and model_cfg.columns is not None and model_cfg.columns != schema["columns"]:
        raise ValueError(
            "the table's columns or statistics differ from the run's: the data file changed "
            "since training started"
        )
    model_cfg.likelihood = schema["likelihood"]
    model_cfg.columns = schema["columns"]


# ---------------------------------------------------------------------------------------------
# The mixed-type likelihood
# ---------------------------------------------------------------------------------------------


class MixedColumns(Distribution):
    """Independent per-column distributions of a table row: batch shape ``(*batch, C)``.

    ``log_prob(x)`` is ``(*batch, C)`` nats with exactly 0 where ``x`` is NaN (missing).
    Numeric columns: Normal(loc, scale) in original units; binary: Bernoulli(logits);
    categorical: Categorical over the column's K codes (logits padded with −inf to K_max).
    ``loc``/``scale`` are those of the transformed value T(x) (the identity unless fitted).
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(
        self,
        head: TabularLikelihood,
        loc: Tensor,
        scale: Tensor,
        bin_logits: Tensor,
        cat_logits: Tensor,
        batch_shape: torch.Size,
    ):
        self.head = head
        self.loc, self.scale = loc, scale  # (*batch, n_num), (n_num,) in units of T(x)
        self.bin_logits = bin_logits  # (*batch, n_bin)
        self.cat_logits = cat_logits  # (*batch, n_cat, K_max), normalized log-probabilities
        super().__init__((*batch_shape, head.n_columns), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        h = self.head
        value = value.expand(self.batch_shape)
        out = torch.zeros(self.batch_shape, dtype=self.loc.dtype, device=value.device)
        x = value[..., h.num_cols]  # (*batch, n_num)
        seen = ~torch.isnan(x)
        u, log_slope = h.to_normal(torch.where(seen, x, 0.0))
        z = (torch.where(seen, u, self.loc.detach()) - self.loc) / self.scale
        lp = -0.5 * z**2 - self.scale.log() - 0.5 * math.log(2 * math.pi) + log_slope
        out[..., h.num_cols] = torch.where(seen, lp, 0.0)
        x = value[..., h.bin_cols]
        seen = ~torch.isnan(x)
        lp = -F.softplus((1.0 - 2.0 * torch.where(seen, x, 0.0)) * self.bin_logits)
        out[..., h.bin_cols] = torch.where(seen, lp, 0.0)
        x = value[..., h.cat_cols]  # (*batch, n_cat)
        seen = ~torch.isnan(x)
        code = torch.where(seen, x, 0.0).long().unsqueeze(-1)
        lp = self.cat_logits.gather(-1, code).squeeze(-1)
        out[..., h.cat_cols] = torch.where(seen, lp, 0.0)
        return out

    def _combine(self, num: Tensor, binary: Tensor, cat: Tensor) -> Tensor:
        """Per-kind values ``(..., n_kind)`` → one ``(..., C)`` tensor in column order."""
        h = self.head
        out = num.new_empty(*num.shape[:-1], h.n_columns)
        out[..., h.num_cols] = num
        out[..., h.bin_cols] = binary.to(num.dtype)
        out[..., h.cat_cols] = cat.to(num.dtype)
        return out

    @property
    def mean(self) -> Tensor:
        """E[x] of numeric (original units) and binary (a probability) columns; for categorical
        columns, whose codes have no mean, the most probable code. With a transform T the
        numeric value is T⁻¹(loc), the median of the column's distribution."""
        num = self.head.from_normal(self.loc)
        return self._combine(num, torch.sigmoid(self.bin_logits), self.cat_logits.argmax(-1))

    @property
    def mode(self) -> Tensor:
        """The most probable value of every column (numeric: the mean, or T⁻¹(loc))."""
        num = self.head.from_normal(self.loc)
        return self._combine(num, self.bin_logits > 0, self.cat_logits.argmax(-1))

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Draws ``(*sample_shape, *batch, C)``: numbers, 0/1 and category codes."""
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            loc = self.loc.expand(shape + self.loc.shape)
            num = self.head.from_normal(torch.normal(loc, self.scale.expand_as(loc)))
            binary = torch.bernoulli(
                torch.sigmoid(self.bin_logits).expand(shape + self.bin_logits.shape)
            )
            probs = self.cat_logits.exp().expand(shape + self.cat_logits.shape)
            cat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).view(probs.shape[:-1])
            return self._combine(num, binary, cat)


class TabularLikelihood(Likelihood):
    """p(x|z) = Π_c p_c(x_c|z) over a table's observed columns (see the module docstring).

    ``columns`` is the schema's list of column dicts (``TabularSchema.to_dict()["columns"]``).
    The decoder emits ``W = Σ_c width_c`` parameters per row (``network_shape = (W,)``): a
    standardized mean per numeric column, a logit per binary column, K logits per categorical one.
    """

    name = "tabular"
    n_params = 1

    def __init__(self, event_shape: tuple[int, ...], columns: list[dict] | None = None):
        super().__init__(event_shape)
        if not columns:
            raise ValueError(
                "the tabular likelihood needs the table's columns (model.columns); they are "
                "filled from a csv:, mat:, table: or odds: dataset"
            )
        self.schema = TabularSchema([Column(**c) for c in columns])
        cols = self.schema.columns
        if tuple(event_shape) != (len(cols),):
            raise ValueError(f"event shape {event_shape} does not match {len(cols)} columns")
        self.n_columns = len(cols)
        starts = np.cumsum([0] + [c.width for c in cols])[:-1].tolist()
        kinds = [c.kind for c in cols]

        def idx(kind: str, what: list[int]) -> Tensor:
            return torch.tensor(
                [w for w, k in zip(what, kinds, strict=True) if k == kind], dtype=torch.long
            )

        self.num_cols, self.num_slots = (
            idx("numeric", list(range(len(cols)))),
            idx("numeric", starts),
        )
        self.bin_cols, self.bin_slots = idx("binary", list(range(len(cols)))), idx("binary", starts)
        self.cat_cols = idx("categorical", list(range(len(cols))))
        cats = [(s, c.width) for s, c in zip(starts, cols, strict=True) if c.kind == "categorical"]
        k_max = max([k for _, k in cats], default=1)
        # (n_cat, K_max) slot of each category's logit; padded positions point at slot 0, masked.
        self.cat_slots = torch.tensor(
            [[s + i if i < k else 0 for i in range(k_max)] for s, k in cats], dtype=torch.long
        ).view(len(cats), k_max)
        self.cat_valid = torch.tensor(
            [[i < k for i in range(k_max)] for _, k in cats], dtype=torch.bool
        ).view(len(cats), k_max)
        self.cat_width = torch.tensor([k for _, k in cats], dtype=torch.long)
        num = [c for c in cols if c.kind == "numeric"]
        self.register_buffer("mean", torch.tensor([c.mean for c in num]), persistent=False)
        self.register_buffer("std", torch.tensor([c.std for c in num]), persistent=False)
        for key in ("power", "center", "spread"):
            value = torch.tensor([getattr(c, key) for c in num])
            self.register_buffer(key, value, persistent=False)
        self.log_scale = nn.Parameter(torch.full((len(num),), math.log(0.5)))

    @property
    def network_shape(self) -> tuple[int, ...]:
        return (self.schema.width,)

    def dist(self, params: Tensor) -> Distribution:
        p = params.squeeze(-2)  # (*batch, W)
        loc = self.mean + self.std * p[..., self.num_slots]
        scale = self.std * self.log_scale.exp().clamp_min(MIN_SCALE)
        logits = p[..., self.cat_slots].masked_fill(~self.cat_valid, -math.inf)
        cat = torch.log_softmax(logits, -1).masked_fill(~self.cat_valid, -math.inf)
        base = MixedColumns(self, loc, scale, p[..., self.bin_slots], cat, p.shape[:-1])
        return Independent(base, 1, validate_args=False)

    def to_normal(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Numeric values ``(..., n_num)`` in original units → (T(x), log T'(x))."""
        z = (x - self.center) / self.spread
        u = yeo_johnson(z, self.power)
        return u, yeo_johnson_log_slope(z, self.power) - self.spread.log()

    def from_normal(self, u: Tensor) -> Tensor:
        """T⁻¹: transformed numeric values ``(..., n_num)`` → original units."""
        return self.center + self.spread * yeo_johnson_inverse(u, self.power)

    def check(self, x: Tensor) -> None:
        """Missing values (NaN) are allowed; inf is not; binary 0/1, categorical codes 0..K−1."""
        if torch.isinf(x).any():
            raise SupportError("tabular likelihood: data contain inf values")
        for name, cols, ok in (
            ("binary", self.bin_cols, lambda v: (v == 0) | (v == 1)),
            (
                "categorical",
                self.cat_cols,
                lambda v: (v == v.round()) & (v >= 0) & (v < self.cat_width),
            ),
        ):
            v = x[..., cols]
            bad = ~(ok(v) | torch.isnan(v))
            if bad.any():
                j = int(cols[bad.nonzero()[0, -1]])
                raise SupportError(
                    f"tabular likelihood: column {self.schema.columns[j].name!r} is {name} but "
                    f"holds {float(v[bad][0]):g}; encode tables with TabularSchema.encode"
                )

    def encoder_input(self, x: Tensor) -> Tensor:
        """(B, C) → (B, W): standardized numeric, ±1 binary, one-hot categorical; 0 if missing."""
        out = x.new_zeros(*x.shape[:-1], self.schema.width)
        num = (self.to_normal(x[..., self.num_cols])[0] - self.mean) / self.std
        out[..., self.num_slots] = torch.nan_to_num(num, nan=0.0)
        out[..., self.bin_slots] = torch.nan_to_num(2 * x[..., self.bin_cols] - 1, nan=0.0)
        code = x[..., self.cat_cols]
        seen = ~torch.isnan(code)
        onehot = F.one_hot(torch.where(seen, code, 0.0).long(), self.cat_slots.shape[-1] or 1)
        onehot = (onehot * seen.unsqueeze(-1)).to(x.dtype) * self.cat_valid
        out.scatter_add_(
            -1, self.cat_slots.expand(*x.shape[:-1], -1, -1).flatten(-2), onehot.flatten(-2)
        )
        return out


LIKELIHOODS[TabularLikelihood.name] = TabularLikelihood


@torch.no_grad()
def impute(model, x: Tensor, *, k: int = 100, seed: int = 0) -> Tensor:
    """Fill the NaN (missing) entries of a table ``x`` (N, C) from the posterior.

    p(x_mis | x_obs) ≈ Σ_k w_k p(x_mis | z_k), z_k ~ q(z|x_obs), w_k ∝ p(x_obs, z_k) / q(z_k|x_obs)
    (self-normalized importance sampling; Mattei & Frellsen, 2019). Each missing entry gets the
    most probable value of that mixture: the mean for numeric columns, the most probable level for
    binary and categorical ones (with a transform T: T⁻¹ of the mixture's mean of T(x)).
    Observed entries are returned unchanged. Seeded.
    """
    head = model.likelihood
    if not isinstance(head, TabularLikelihood):
        raise TypeError("impute needs a model with the tabular likelihood")
    model.check(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        qz_x = model.encode(x, check=False)
        z = qz_x.sample((k,))  # (K, B, D)
        px_z = model.decode(z)
        w = torch.softmax(px_z.log_prob(x) + model.prior().log_prob(z) - qz_x.log_prob(z), 0)
    cols: MixedColumns = px_z.base_dist
    num = head.from_normal((w.unsqueeze(-1) * cols.loc).sum(0))  # (B, n_num)
    binary = (w.unsqueeze(-1) * torch.sigmoid(cols.bin_logits)).sum(0) > 0.5
    cat = (w[..., None, None] * cols.cat_logits.exp()).sum(0).argmax(-1)  # (B, n_cat)
    fill = cols._combine(num, binary, cat)
    return torch.where(torch.isnan(x), fill.to(x.dtype), x)
