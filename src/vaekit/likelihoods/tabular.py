"""The mixed-type likelihood head for tables (reading and encoding tables: ``data.tables``).

A table row is a float32 tensor ``x`` of shape ``(C,)``, one entry per column:

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

The schema (column names, types, levels, standardization) is JSON in ``DataInfo.columns``, so a
run rebuilds its model from ``config.json`` alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, constraints

from ..distributions import SupportError
from .base import Likelihood
from .yeo_johnson import yeo_johnson, yeo_johnson_inverse, yeo_johnson_log_slope

__all__ = ["KINDS", "Column", "MixedColumns", "TabularLikelihood"]

KINDS = ("numeric", "binary", "categorical")
MIN_SCALE = 1e-3  # smallest numeric σ in standardized units


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
        """``(*sample, *batch, C)`` nats for values ``(*sample, *batch, C)`` (broadcast)."""
        h = self.head
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        value = value.expand(shape)
        out = torch.zeros(shape, dtype=self.loc.dtype, device=value.device)
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
        cat_logits = self.cat_logits.expand(*code.shape[:-1], self.cat_logits.shape[-1])
        lp = cat_logits.gather(-1, code).squeeze(-1)
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

    ``columns`` is the schema's list of column dicts (``data.tables.TabularSchema``'s, recorded in
    ``DataInfo.columns``).
    The decoder emits ``W = Σ_c width_c`` parameters per row (``network_shape = (W,)``): a
    standardized mean per numeric column, a logit per binary column, K logits per categorical one.
    """

    name = "tabular"
    n_params = 1
    discrete = False  # numeric columns are densities in their own units; no 8-bit constant

    def __init__(self, event_shape: tuple[int, ...], columns: list[dict] | None = None):
        super().__init__(event_shape)
        if not columns:
            raise ValueError(
                "the tabular likelihood needs the table's columns (data_info.columns); they are "
                "filled from a csv:, mat:, table: or odds: dataset"
            )
        self.columns = [Column(**c) for c in columns]
        self.width = sum(c.width for c in self.columns)
        cols = self.columns
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
        return (self.width,)

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
                    f"tabular likelihood: column {self.columns[j].name!r} is {name} but "
                    f"holds {float(v[bad][0]):g}; encode tables with TabularSchema.encode"
                )

    def encoder_input(self, x: Tensor) -> Tensor:
        """(B, C) → (B, W): standardized numeric, ±1 binary, one-hot categorical; 0 if missing."""
        out = x.new_zeros(*x.shape[:-1], self.width)
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
