"""Honest evaluation: ELBO terms, IWAE log-likelihood ± standard error, bits/dim, active units.

All numbers are per example in nats unless the name says ``bpd``. Evaluation runs under its own
seeded RNG (``torch.random.fork_rng``) so it never disturbs a training run's random stream.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .objectives import elbo, log_weights

__all__ = [
    "iwae_log_likelihood",
    "log_likelihood",
    "evaluate",
    "bits_per_dim",
    "standard_error",
    "as_model_input",
    "PRECISIONS",
]


PRECISIONS = ("fp32", "bf16")
ROWS_PER_PASS = 1024  # decoder rows per pass: an efficient GEMM, activations stay in cache


def as_model_input(model, x: Tensor) -> Tensor:
    """``x`` as floats of the model's dtype (uint8 levels, float32 data for a float64 model)."""
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return x if x.dtype == dtype else x.to(dtype)


def standard_error(values: Tensor) -> float:
    """Standard error of the mean of ``values`` ``(N,)``: sd / √N with the unbiased (N − 1) sd;
    NaN for N < 2."""
    n = len(values)
    return float(values.double().std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan


def draws_per_pass(batch: int, k: int, chunk: int | None = None) -> int:
    """How many of the K draws to decode at once: ``chunk``, or ≈ ROWS_PER_PASS / batch."""
    return max(1, min(k, chunk if chunk else ROWS_PER_PASS // max(batch, 1)))


@torch.no_grad()
def iwae_log_likelihood(
    model,
    x: Tensor,
    y: Tensor | None = None,
    *,
    k: int = 1000,
    chunk: int | None = None,
    precision: str = "fp32",
) -> Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k)/q(z_k|x), z_k ~ q(z|x); ``(B,)`` nats.

    The K draws are made ``chunk`` at a time (default: about ``ROWS_PER_PASS`` decoder rows per
    pass, which measured fastest on a 2-core CPU and bounds memory).
    A lower bound in expectation that tightens as K grows. ``precision="bf16"`` runs the decoder's
    matrix products in bfloat16 (CPU autocast; log-probabilities stay float32): about 2× faster
    on CPUs with AVX512-BF16, at a cost in accuracy that ``benchmarks/eval_speed.py`` measures.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    qz_x = model.encode(x, y, check=False)
    chunk = draws_per_pass(len(x), k, chunk)
    parts = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for start in range(0, k, chunk):
            log_w, _ = log_weights(model, x, qz_x, min(chunk, k - start), y)
            parts.append(log_w)
    return torch.logsumexp(torch.cat(parts), 0) - math.log(k)


def log_likelihood(
    model, x: Tensor, y: Tensor | None = None, *, k: int = 1000, chunk: int | None = None
) -> Tensor:
    """IWAE estimate of log p(x) with ``k`` importance samples, ``(B,)`` nats; ``x`` is checked
    (shape, finiteness, the likelihood's support) first."""
    model.check(x)
    return iwae_log_likelihood(model, as_model_input(model, x), y, k=k, chunk=chunk)


def bits_per_dim(nll_nats: float, n_dims: int, offset_per_dim: float = 0.0) -> float:
    """bits/dim = (NLL / D + offset) / ln 2; ``offset`` converts a density to discrete levels
    (``Likelihood.nats_offset_per_dim``: log 256 for a density on dequantized 8-bit data)."""
    return (nll_nats / n_dims + offset_per_dim) / math.log(2.0)


@torch.no_grad()
def evaluate(
    model,
    x: Tensor,
    *,
    k: int = 1000,
    batch_size: int = 100,
    chunk: int | None = None,
    seed: int = 0,
    kl_threshold: float = 0.01,
    progress=None,
    labels: Tensor | None = None,
    precision: str = "fp32",
    check: bool = True,
    per_example: bool = False,
) -> dict:
    """Evaluate ``model`` on ``x`` (values in the likelihood's support), seeded.

    Returns ``elbo``, ``recon``, ``kl`` (means, nats), ``nll`` = −IWAE_K bound and its standard
    error ``nll_stderr`` = sd/√N over the N examples, ``bpd`` and ``elbo_bpd``
    (``bits_per_dim``), ``active_units`` (dims whose mean KL exceeds ``kl_threshold`` nats),
    ``kl_per_dim``, ``k`` and ``n``. ``k=0`` skips the IWAE estimate. For a prior without a
    closed-form KL (VampPrior) ``kl`` is Monte Carlo and ``kl_per_dim`` are the marginal KLs of
    ``distributions.kl_terms``, which do not sum to ``kl``.
    ``precision`` (fp32 | bf16) applies to the IWAE estimate (see ``iwae_log_likelihood``).
    ``labels`` condition a conditional model (its NLL is then the conditional −log p(x|y)).
    A hierarchical model adds ``kl_per_layer`` (bottom → top); a text model ``nll_per_token`` and
    ``elbo_per_token`` (nats per token, ``<eos>`` included). A model without a bound
    (``has_bound = False``: the autoencoder, the VQ-VAE) reports ``recon`` only — no ``elbo``,
    ``kl``, ``elbo_bpd`` or IWAE — plus what its kind adds (``model.evaluation_extras``: the
    VQ-VAE's PSNR and code bits). ``check`` validates every row of ``x`` first (one vectorized
    pass; off where the caller already did). ``per_example`` adds ``per_example``: ``{"elbo":
    (N,), "log_px": (N,)}`` float64 tensors (log_px: the IWAE estimate behind ``nll``), for paired
    comparisons on the same examples.
    """
    if not model.has_bound:
        k = 0
    model.eval()
    if check:
        model.check(x)
    device = model.device
    sums = {"bound": 0.0, "recon": 0.0, "kl": 0.0}
    kl_dims = torch.zeros(model.latent_dim, dtype=torch.float64)
    kl_layers = None
    log_px, bounds = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            xb = as_model_input(model, x[start : start + batch_size].to(device))
            yb = None if labels is None else labels[start : start + batch_size].to(device)
            res, lp = _evaluate_batch(model, xb, yb, k, chunk, precision)
            if lp is not None:
                log_px.append(lp)
            if per_example:
                bounds.append(res.bound.double())
            sums["bound"] += float(res.bound.sum())
            sums["recon"] += float(res.log_px_z.sum())
            sums["kl"] += float(res.kl.sum())
            kl_dims += res.kl_per_dim.sum(0).double()
            if res.kl_per_group is not None:
                layers = res.kl_per_group.sum(0).double()
                kl_layers = layers if kl_layers is None else kl_layers + layers
            if progress is not None:
                progress(len(xb))
    n = len(x)
    out = {
        "elbo": sums["bound"] / n,
        "recon": sums["recon"] / n,
        "kl": sums["kl"] / n,
        "k": k,
        "n": n,
    }
    offset = model.likelihood.nats_offset_per_dim
    if log_px:
        lp = torch.cat(log_px)
        out["nll"] = float(-lp.mean())
        out["nll_stderr"] = standard_error(lp)
        out["bpd"] = bits_per_dim(out["nll"], model.n_dims, offset)
    if model.has_bound:  # an autoencoder's "elbo" is its reconstruction term: no bound, no bpd
        out["elbo_bpd"] = bits_per_dim(-out["elbo"], model.n_dims, offset)
    kl_mean = (kl_dims / n).float()
    out["active_units"] = int((kl_mean > kl_threshold).sum())
    out["kl_per_dim"] = [round(float(v), 5) for v in kl_mean]
    if kl_layers is not None:
        out["kl_per_layer"] = [round(float(v), 5) for v in kl_layers / n]
    if not model.has_bound:  # nothing here is a bound on log p(x): say only what it is
        for key in ("elbo", "kl", "elbo_bpd", "active_units", "kl_per_dim"):
            out.pop(key, None)
    with torch.random.fork_rng(devices=[]):  # a kind's own measures (VQ-VAE), seeded
        torch.manual_seed(seed)
        out.update(model.evaluation_extras(x, batch_size))
    units = model.likelihood.units(x)
    if units is not None:
        tokens = float(units.sum()) / n
        out["tokens_per_example"] = tokens
        if "elbo" in out:
            out["elbo_per_token"] = out["elbo"] / tokens
        if "nll" in out:
            out["nll_per_token"] = out["nll"] / tokens
    if per_example:
        out["per_example"] = {
            "elbo": torch.cat(bounds),
            "log_px": torch.cat(log_px) if log_px else None,
        }
    return out


def _evaluate_batch(model, xb: Tensor, yb, k: int, chunk: int | None, precision: str = "fp32"):
    """The ELBO result and (k > 0) the IWAE log-likelihood ``(B,)`` float64 of one batch."""
    res = elbo(model, xb, yb, check=False)
    lp = None
    if k > 0:
        lp = iwae_log_likelihood(model, xb, yb, k=k, chunk=chunk, precision=precision).double()
    return res, lp
