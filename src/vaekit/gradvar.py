"""How noisy is each gradient estimator? Per-parameter mean and variance of the encoder's gradient.

For one minibatch x, an estimator's gradient g = ∇φ mean_B bound(x) (nats per example) is drawn
``n`` times with fresh z; per parameter p we estimate E[g_p] and Var[g_p] (unbiased) and summarize
over parameters: ``mean_variance`` = mean_p Var[g_p], ``snr`` = mean_p |E[g_p]| / sd[g_p]
(Rainforth et al., 2018) and ``grad_norm`` = ‖E[g]‖. Estimators (``ESTIMATORS``):

    reparam, score, score-mean, stl    the ELBO (K = 1); score-mean has a running-mean baseline
    iwae, iwae-stl, dreg               the IWAE bound with K importance samples
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from .estimators import Baseline
from .objectives import elbo, iwae

__all__ = ["ESTIMATORS", "MULTI_SAMPLE", "bound_of", "gradient_moments", "gradient_variance"]

ESTIMATORS = ("reparam", "score", "score-mean", "stl", "iwae", "iwae-stl", "dreg")
MULTI_SAMPLE = ("iwae", "iwae-stl", "dreg")  # estimators of the IWAE bound: measured per K


def bound_of(name: str, *, k: int = 1, baseline: Baseline | None = None) -> Callable:
    """``f(model, x) -> ObjectiveResult`` of a named estimator (see ``ESTIMATORS``)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
    if name in MULTI_SAMPLE:
        est = {"iwae": "reparam", "iwae-stl": "stl", "dreg": "dreg"}[name]
        return lambda model, x: iwae(model, x, k=k, estimator=est, check=False)
    est = "score" if name.startswith("score") else name
    return lambda model, x: elbo(model, x, estimator=est, baseline=baseline, check=False)


def gradient_moments(
    model, x: Tensor, fn: Callable, n: int, params: list[Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Mean and unbiased variance over ``n`` draws of ∇ mean_B bound w.r.t. ``params``.

    ``fn(model, x)`` returns an ``ObjectiveResult``; the gradient is that of −loss (so an
    estimator's own surrogate, β = 1). ``params`` default to the encoder's. Returns two ``(P,)``
    float64 tensors (P = number of scalar parameters).
    """
    if n < 2:
        raise ValueError(f"need at least 2 gradient draws to estimate a variance, got {n}")
    params = list(model.encoder.parameters()) if params is None else params
    total = sq = None
    for _ in range(n):
        grads = torch.autograd.grad(-fn(model, x).loss, params, materialize_grads=True)
        g = torch.cat([gi.reshape(-1) for gi in grads]).double()
        total = g if total is None else total + g
        sq = g * g if sq is None else sq + g * g
    mean = total / n
    var = ((sq - n * mean * mean) / (n - 1)).clamp_min(0.0)
    return mean, var


def summarize(mean: Tensor, var: Tensor) -> dict[str, float]:
    """``mean_variance``, ``snr`` (mean over parameters of |mean|/sd) and ``grad_norm``."""
    sd = var.sqrt()
    snr = (mean.abs() / sd)[sd > 0]
    return {
        "mean_variance": float(var.mean()),
        "snr": float(snr.mean()) if len(snr) else math.inf,
        "grad_norm": float(mean.norm()),
    }


def _warm_baseline(model, batches: list[Tensor], steps: int = 20) -> Baseline:
    """A running-mean baseline fitted on independent draws, then frozen (eval mode)."""
    baseline = Baseline(None).to(next(model.parameters()).dtype)
    with torch.no_grad():
        for i in range(steps):
            elbo(
                model, batches[i % len(batches)], estimator="score", baseline=baseline, check=False
            )
    return baseline.eval()


def gradient_variance(
    model,
    batches: list[Tensor],
    estimators: Iterable[str] = ESTIMATORS,
    ks: Iterable[int] = (1, 10, 100),
    n: int = 100,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """One row per (estimator, K): its summaries averaged over ``batches``, the same for all.

    Each row: ``estimator``, ``k``, ``mean_variance``, ``snr``, ``grad_norm``, ``draws`` = n.
    ELBO estimators have K = 1; IWAE estimators get one row per K in ``ks``.
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    rows = []
    for name in estimators:
        baseline = _warm_baseline(model, batches) if name == "score-mean" else None
        for k in ks if name in MULTI_SAMPLE else (1,):
            fn = bound_of(name, k=k, baseline=baseline)
            parts = [summarize(*gradient_moments(model, x, fn, n)) for x in batches]
            row = {"estimator": name, "k": k, "draws": n, "batches": len(batches)}
            row.update({key: sum(p[key] for p in parts) / len(parts) for key in parts[0]})
            rows.append(row)
            if progress is not None:
                progress(f"{name} K={k}: variance {row['mean_variance']:.3g}, SNR {row['snr']:.3g}")
    return rows


def plot_gradvar(rows: list[dict], path) -> None:
    """Mean variance and SNR against K (log-log): one line or marker per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    for ax, key, label in zip(
        axes, ("mean_variance", "snr"), ("mean variance", "SNR"), strict=True
    ):
        for name in names:
            series = [r for r in rows if r["estimator"] == name]
            style = "o-" if name in MULTI_SAMPLE else "s"
            ax.plot([r["k"] for r in series], [r[key] for r in series], style, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (importance samples)")
        ax.set_ylabel(f"{label} of the encoder gradient")
    axes[1].legend(fontsize="small")
    fig.suptitle("gradient estimators of the encoder: per-parameter variance and SNR")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
