"""Moving through latent space: codes, paths, traversals, attribute vectors and 2-D maps.

Works for every model family through ``model.encode`` / ``decode`` / ``prior`` only. Data ``x`` are
``(N, *event_shape)`` in the likelihood's support; codes are posterior means ``(N, D)``; paths are
``(steps, D)``; several codes for several inputs are ``(S, B, D)``, sample dimension first.

Hierarchical models (``hvae``, ``deep``): a code is the posterior *mean path* (each group's
mean given the means above). The tools can act on the top groups only (``groups``: ``"all"``,
the default; ``"top"``, the groups at the coarsest scale; or the top N groups in generation
order): the edited groups are kept and every group below is filled given them
(``decode_groups``) — ``lower="prior"`` (default): the prior at ``temperature`` (0: its means),
``lower="posterior"``: the posterior means of the edited item's own bottom-up features given the
edited groups (on the Olivetti preset this re-infers the original face: the edit disappears).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .distributions import kl_per_dim
from .evaluation import as_model_input

__all__ = [
    "lerp",
    "slerp",
    "PATHS",
    "encode",
    "decode_mean",
    "kl_by_dim",
    "dims_by_kl",
    "traversal",
    "index_mask",
    "attribute_vector",
    "apply_attribute",
    "latent_map",
    "MAPS",
    "GROUPS",
    "LOWER",
    "n_groups_of",
    "group_dims",
    "restrict_dims",
    "decode_groups",
]

GROUPS = ("top", "all")  # or an integer N: the top N groups in generation order
LOWER = ("posterior", "prior")  # how decode_groups fills the groups below the edited ones


# ---- paths ---------------------------------------------------------------------------------------


def lerp(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """z(t) = (1 − t)·z_a + t·z_b at ``steps`` evenly spaced t ∈ [0, 1]; ``(steps, D)``."""
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype).unsqueeze(1)
    return (1 - t) * z_a + t * z_b


def slerp(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """Spherical interpolation: the great-circle path between the directions of z_a and z_b,
    with the norm interpolated linearly (so endpoints are exact); ``(steps, D)``.

    direction(t) = cos(tω)·u_a + sin(tω)·u_⊥, ω = ∠(z_a, z_b), u_⊥ the unit vector towards z_b
    orthogonal to u_a (any orthogonal one when z_b = −c·z_a, where the great circle is not unique).
    """
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype).unsqueeze(1)
    na, nb = z_a.norm(), z_b.norm()
    if na < 1e-12 or nb < 1e-12 or z_a.numel() < 2:
        return lerp(z_a, z_b, steps)
    ua, ub = z_a / na, z_b / nb
    cos = (ua * ub).sum().clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega < 1e-4:
        return lerp(z_a, z_b, steps)
    perp = ub - cos * ua
    if perp.norm() < 1e-6:  # antipodal: go through the axis least aligned with u_a
        axis = torch.zeros_like(ua)
        axis[ua.abs().argmin()] = 1.0
        perp = axis - (axis * ua).sum() * ua
    perp = perp / perp.norm()
    direction = torch.cos(t * omega) * ua + torch.sin(t * omega) * perp
    path = direction * ((1 - t) * na + t * nb)
    path[-1] = z_b  # exact endpoint (the formula is exact up to rounding)
    return path


PATHS = {"linear": lerp, "slerp": slerp}


# ---- encoding a dataset ----------------------------------------------------------------------


def _batches(model, x: Tensor, batch_size: int):
    """q(z|x) for consecutive ``batch_size`` slices of ``x`` (every row checked once, up front:
    shape, finiteness, the likelihood's support; ``SupportError`` otherwise)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(x) == 0:
        raise ValueError("no examples to encode")
    model.eval()
    model.check(x)
    for start in range(0, len(x), batch_size):
        yield model.encode(as_model_input(model, x[start : start + batch_size]), check=False)


@torch.no_grad()
def encode(
    model, x: Tensor, *, batch_size: int = 512, sample: bool = False, seed: int = 0
) -> Tensor:
    """Posterior means E_q[z|x] of every row of ``x`` (any N, ``batch_size`` rows at a time), or
    with ``sample=True`` one draw z ~ q(z|x) per row (seeded; the global RNG is left alone);
    ``(N, D)``."""
    if not sample:
        return torch.cat([qz_x.mean for qz_x in _batches(model, x, batch_size)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([qz_x.sample() for qz_x in _batches(model, x, batch_size)])


@torch.no_grad()
def kl_by_dim(model, x: Tensor, *, batch_size: int = 512, seed: int = 0) -> Tensor:
    """Mean over ``x`` of KL(q(z|x) ‖ p(z)) per latent dimension (``distributions.kl_per_dim``:
    analytic where torch knows the pair; for a mixture prior such as the VampPrior the KL of each
    coordinate's marginals, Monte Carlo, seeded); ``(D,)`` nats."""
    total, pz = 0.0, model.prior()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for qz_x in _batches(model, x, batch_size):
            total = total + kl_per_dim(qz_x, pz).sum(0)
    return total / len(x)


def dims_by_kl(model, x: Tensor, *, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Latent dimensions ordered by use: (indices by decreasing mean KL ``(D,)``, that KL).

    Ties (e.g. collapsed dimensions, all at KL 0) are broken by the variance of the posterior
    means over ``x``, the other usual measure of use."""
    kl = kl_by_dim(model, x, batch_size=batch_size)
    by_var = torch.argsort(encode(model, x, batch_size=batch_size).var(0), descending=True)
    order = by_var[torch.argsort(kl[by_var], descending=True, stable=True)]
    return order, kl[order]


# ---- traversals and attributes ---------------------------------------------------------------


def traversal(z: Tensor, dims: Sequence[int], values: Tensor) -> Tensor:
    """Copies of one code ``z`` ``(D,)`` with coordinate ``dims[k]`` set to ``values[v]``.

    Returns ``(K, V, D)``: one row per traversed dimension, one column per value.
    """
    if z.dim() != 1:
        raise ValueError(f"traversal takes one code of shape (D,), got {tuple(z.shape)}")
    d = z.shape[0]
    for dim in dims:
        if not 0 <= dim < d:
            raise ValueError(f"latent dimension {dim} is outside 0..{d - 1}")
    values = torch.as_tensor(values, dtype=z.dtype)
    out = z.expand(len(dims), len(values), d).clone()
    for k, dim in enumerate(dims):
        out[k, :, dim] = values
    return out


def index_mask(n: int, indices: Sequence[int]) -> Tensor:
    """A boolean mask ``(n,)`` that is True at ``indices`` (each checked to lie in 0..n−1)."""
    mask = torch.zeros(n, dtype=torch.bool)
    for i in indices:
        if not 0 <= int(i) < n:
            raise ValueError(f"index {i} is outside 0..{n - 1}")
        mask[int(i)] = True
    return mask


def attribute_vector(z: Tensor, positive: Tensor, negative: Tensor | None = None) -> Tensor:
    """v = mean(z[positive]) − mean(z[negative]); ``(D,)``.

    ``z`` are codes ``(N, D)``; ``positive`` / ``negative`` boolean masks ``(N,)`` (e.g.
    ``labels == 7`` or ``index_mask(N, [3, 17])``). ``negative`` defaults to "not positive", so v
    points from examples without the attribute to examples with it.
    """
    positive = torch.as_tensor(positive, dtype=torch.bool)
    negative = ~positive if negative is None else torch.as_tensor(negative, dtype=torch.bool)
    for name, mask in (("positive", positive), ("negative", negative)):
        if mask.shape != z.shape[:1]:
            raise ValueError(f"{name} mask has shape {tuple(mask.shape)}, expected ({len(z)},)")
        if not mask.any():
            raise ValueError(f"the {name} set of an attribute vector is empty")
    if (positive & negative).any():
        raise ValueError("an example cannot be both with and without the attribute")
    return z[positive].mean(0) - z[negative].mean(0)


def apply_attribute(z: Tensor, vector: Tensor, alphas: Sequence[float] | Tensor) -> Tensor:
    """z + α·v for every α: codes ``(B, D)``, v ``(D,)``, α ``(A,)`` → ``(A, B, D)``."""
    alphas = torch.as_tensor(alphas, dtype=z.dtype).reshape(-1, 1, 1)  # (A, 1, 1)
    return z.unsqueeze(0) + alphas * vector


# ---- 2-D maps --------------------------------------------------------------------------------


def _pca(z: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(z)


def _tsne(z: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(z) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)


MAPS = {"pca": _pca, "tsne": _tsne}


def latent_map(z: Tensor, method: str = "pca", *, seed: int = 0) -> np.ndarray:
    """A 2-D picture of codes ``(N, D)`` by PCA or t-SNE (scikit-learn); ``(N, 2)`` float32."""
    if method not in MAPS:
        raise ValueError(f"unknown latent map {method!r}; choose one of {sorted(MAPS)}")
    if len(z) < 3:
        raise ValueError(f"a latent map needs at least 3 codes, got {len(z)}")
    z = z.detach().cpu().double().numpy()
    if z.shape[1] == 1:  # one latent dimension: plot it against zero
        return np.concatenate([z, np.zeros_like(z)], 1).astype(np.float32)
    return MAPS[method](z, seed).astype(np.float32)


@torch.no_grad()
def decode_mean(model, z: Tensor) -> Tensor:
    """E[x|z] for codes ``(*S, B, D)``: ``(*S, B, *event_shape)`` in the likelihood's support."""
    return model.decode(z).mean


# ---- hierarchical models: acting on the top groups ------------------------------------------


def n_groups_of(model, groups: str | int = "all") -> int:
    """How many groups, counted from the top, the tools edit: ``"all"``, ``"top"`` (the groups at
    the coarsest scale, ``model.n_top_groups``) or an integer N in 1..``model.n_groups``."""
    total = model.n_groups
    if groups == "all":
        return total
    if groups == "top":
        return model.n_top_groups
    problem = f"groups must be top, all or a number 1..{total}, got {groups!r}"
    try:
        n = int(groups)
    except (TypeError, ValueError):
        raise ValueError(problem) from None
    if not 1 <= n <= total:
        raise ValueError(problem)
    return n


def group_dims(model, n_top: int) -> Tensor:
    """Indices of the coordinates of z ``(D,)`` that belong to the top ``n_top`` groups (z holds
    the groups bottom → top, so these are its last coordinates); ``(d,)`` int64."""
    sizes = model.latent_groups or [model.latent_dim]
    d = sum(sizes[len(sizes) - n_top :])
    return torch.arange(model.latent_dim - d, model.latent_dim)


def restrict_dims(order: Tensor, values: Tensor, dims: Tensor) -> tuple[Tensor, Tensor]:
    """The entries of a ``dims_by_kl`` ordering (``order``, ``values``) that lie in ``dims``."""
    keep = torch.isin(order, dims)
    return order[keep], values[keep]


@torch.no_grad()
def decode_groups(
    model,
    z: Tensor,
    n_top: int | None = None,
    *,
    x: Tensor | None = None,
    lower: str = "prior",
    temperature: float = 0.0,
    seed: int = 0,
) -> Tensor:
    """E[x | z'] for codes ``z`` ``(*S, B, D)`` where z' keeps the top ``n_top`` groups of z
    (default: all, a plain ``decode_mean``) and fills the groups below given them:
    ``lower="posterior"`` from the items ``x`` ``(B or 1, *event)`` (their posterior means
    below the edit), ``"prior"`` from p(z_g | z_<g) at ``temperature`` (seeded; 0: its means).
    ``(*S, B, *event)``."""
    if lower not in LOWER:
        raise ValueError(f"lower must be one of {LOWER}, got {lower!r}")
    if n_top is None or n_top >= model.n_groups:
        return decode_mean(model, z)
    if lower == "posterior" and x is None:
        raise ValueError("lower='posterior' fills the lower groups from items: pass x")
    gen = torch.Generator().manual_seed(seed)
    ref = x if lower == "posterior" else None
    _, px_z = model.decode_top(z, n_top, ref, temperature=temperature, generator=gen)
    return px_z.mean
