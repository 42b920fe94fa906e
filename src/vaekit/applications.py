"""What VAEs are used for: anomaly scores, denoising, and representations for other tasks.

Anomaly scores are per example, higher = more anomalous, in nats:

- ``nll``: −log p(x), importance-sampled with K samples (``evaluation.iwae_log_likelihood``);
- ``elbo``: −ELBO(x), with K Monte-Carlo draws of z;
- ``recon``: −log p(x | z = E_q[z|x]), the reconstruction error in the model's own likelihood
  (for a Gaussian column (x − x̂)²/2σ² + const, for binary/categorical data the cross-entropy).

A threshold comes from a rate on training scores: a contamination rate c (flag the top c of all
training rows) or a false-positive rate α (flag α of the training rows known or assumed normal).

Denoising works on images in the model's support scaled to [0, peak]: corruptions (Gaussian noise,
salt and pepper, masked blocks), reconstruction E[x | z = E_q[z|x]], or per-example posterior
inference that ignores masked pixels; quality in PSNR (dB) against clean images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Independent

from .distributions import SupportError, diag_gaussian, kl_terms
from .evaluation import iwae_log_likelihood
from .latent import encode
from .likelihoods.tabular import MixedColumns, TabularLikelihood
from .objectives import elbo

__all__ = [
    "impute",
    "SCORES",
    "anomaly_scores",
    "threshold_at_rate",
    "detection_metrics",
    "AnomalyDetector",
    "CORRUPTIONS",
    "corrupt",
    "psnr",
    "masked_log_prob",
    "check_inputs",
    "reconstruct",
    "infer_posterior",
    "denoise",
    "linear_probe",
    "kmeans_ari",
    "probe",
]


# ---------------------------------------------------------------------------------------------
# Anomaly scores
# ---------------------------------------------------------------------------------------------


def _score_nll(model, x: Tensor, k: int) -> Tensor:
    return -iwae_log_likelihood(model, x, k=k)


def _score_elbo(model, x: Tensor, k: int) -> Tensor:
    return -elbo(model, x, n_samples=k).bound


def _score_recon(model, x: Tensor, k: int) -> Tensor:
    return -model.decode(model.encode(x, check=False).mean).log_prob(x)


# name → f(model, x (B, ...), k) → (B,) nats; higher = more anomalous
SCORES: dict[str, Callable[..., Tensor]] = {
    "nll": _score_nll,
    "elbo": _score_elbo,
    "recon": _score_recon,
}


@torch.no_grad()
def anomaly_scores(
    model, x: Tensor, *, method: str = "nll", k: int = 1000, batch_size: int = 100, seed: int = 0
) -> Tensor:
    """Per-example anomaly scores ``(N,)`` float64 nats (see module doc), seeded and batched.

    ``x`` is ``(N, *event_shape)`` in the likelihood's support (tables may hold NaN = missing).
    """
    try:
        fn = SCORES[method]
    except KeyError:
        raise ValueError(f"unknown score {method!r}; choose from {sorted(SCORES)}") from None
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    model.eval()
    model.check(x)
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            out.append(fn(model, _floating(x[start : start + batch_size]), k).double())
    return torch.cat(out)


def _floating(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.float()


def threshold_at_rate(scores, rate: float) -> float:
    """The threshold t with exactly ⌊rate·n⌋ of ``scores`` above it (fewer when tied): rows with
    score > t are flagged. ``rate`` in [0, 1)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    if len(s) == 0:
        raise ValueError("no scores to set a threshold from")
    return float(s[int(math.floor(rate * len(s) + 1e-9))])


def detection_metrics(scores, is_anomaly, threshold: float | None = None) -> dict:
    """ROC AUC and average precision of ``scores`` for the boolean ``is_anomaly`` (scikit-learn),
    and with a ``threshold`` the precision, recall and false-positive rate of ``score > t``.

    With only one class present, AUC and AP are None (undefined)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_anomaly, dtype=bool)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    out: dict = {"n": int(len(y)), "anomalies": int(y.sum())}
    both = 0 < y.sum() < len(y)
    out["roc_auc"] = float(roc_auc_score(y, s)) if both else None
    out["average_precision"] = float(average_precision_score(y, s)) if both else None
    if threshold is not None:
        flag = s > threshold
        out["flagged"] = int(flag.sum())
        out["precision"] = float((flag & y).sum() / flag.sum()) if flag.any() else None
        out["recall"] = float((flag & y).sum() / y.sum()) if y.any() else None
        out["false_positive_rate"] = float((flag & ~y).sum() / (~y).sum()) if (~y).any() else None
    return out


@dataclass
class AnomalyDetector:
    """A fitted scoring rule, saved as ``RUN/anomaly.json``: flag rows whose ``method`` score
    (K = ``k``) exceeds ``threshold``, set at ``rule`` (contamination | fpr) = ``rate`` on the
    training rows. ``anomaly_labels``: the label values that mean "anomaly" (for metrics)."""

    method: str
    k: int
    threshold: float
    rule: str
    rate: float
    anomaly_labels: list[int] | None = None
    label: str | None = None  # tables: the label column
    label_levels: list[str] | None = None  # tables with text labels: code = index
    seed: int = 0

    FILE = "anomaly.json"

    @classmethod
    def fit(
        cls,
        train_scores,
        *,
        method: str,
        k: int,
        contamination: float | None = None,
        fpr: float | None = None,
        train_is_anomaly=None,
        **extra,
    ) -> AnomalyDetector:
        """Threshold from a contamination rate (all training rows) or a false-positive rate
        (training rows labelled normal when labels are given, else all)."""
        if (contamination is None) == (fpr is None):
            raise ValueError("give exactly one of contamination and fpr")
        s = np.asarray(train_scores, dtype=np.float64)
        if fpr is not None and train_is_anomaly is not None:
            s = s[~np.asarray(train_is_anomaly, dtype=bool)]
        rule, rate = ("fpr", fpr) if fpr is not None else ("contamination", contamination)
        return cls(method, k, threshold_at_rate(s, rate), rule, rate, **extra)

    def save(self, run: str | Path) -> Path:
        path = Path(run) / self.FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, run: str | Path) -> AnomalyDetector:
        path = Path(run) / cls.FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: fit a detector with `vaekit anomaly fit`")
        return cls(**json.loads(path.read_text()))

    def is_anomaly(self, labels) -> np.ndarray | None:
        """Boolean anomaly truth from labels (label ∈ ``anomaly_labels``), or None."""
        if labels is None or self.anomaly_labels is None:
            return None
        return np.isin(np.asarray(labels), self.anomaly_labels)


# ---------------------------------------------------------------------------------------------
# Denoising
# ---------------------------------------------------------------------------------------------


def _gaussian(x: Tensor, level: float, g: torch.Generator, peak: float) -> tuple[Tensor, Tensor]:
    noisy = x + level * peak * torch.randn(x.shape, generator=g)
    return noisy.clamp(0, peak), torch.ones_like(x, dtype=torch.bool)


def _salt_pepper(x: Tensor, level: float, g: torch.Generator, peak: float):
    hit = torch.rand(x.shape, generator=g) < level
    salt = (torch.rand(x.shape, generator=g) < 0.5).to(x.dtype) * peak
    return torch.where(hit, salt, x), torch.ones_like(x, dtype=torch.bool)


def _block(x: Tensor, level: float, g: torch.Generator, peak: float):
    """One square block per image, of side ⌈level·min(H, W)⌉, zeroed at a random place."""
    if x.dim() < 3:
        raise ValueError(f"masked blocks need images (N, [C,] H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    side = max(1, min(math.ceil(level * min(h, w)), h, w))
    observed = torch.ones_like(x, dtype=torch.bool)
    tops = torch.randint(0, h - side + 1, (len(x),), generator=g)
    lefts = torch.randint(0, w - side + 1, (len(x),), generator=g)
    for i, (t, left) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True)):
        observed[i, ..., t : t + side, left : left + side] = False
    return torch.where(observed, x, torch.zeros_like(x)), observed


# kind → f(x, level, generator, peak) → (corrupted x, observed mask); x in [0, peak]
CORRUPTIONS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "gaussian": _gaussian,  # level = noise std as a fraction of peak; clipped to [0, peak]
    "salt_pepper": _salt_pepper,  # level = fraction of entries set to 0 or peak
    "block": _block,  # level = block side as a fraction of the image side; masked
}


def corrupt(
    x: Tensor, kind: str, level: float, *, seed: int = 0, peak: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Corrupt ``x`` (values in [0, peak]): returns (corrupted, observed) where ``observed`` is
    False only for masked entries (``block``); the other kinds hide where they struck."""
    try:
        fn = CORRUPTIONS[kind]
    except KeyError:
        raise ValueError(
            f"unknown corruption {kind!r}; choose from {sorted(CORRUPTIONS)}"
        ) from None
    if level < 0:
        raise ValueError(f"corruption level must be >= 0, got {level}")
    return fn(x.float(), level, torch.Generator().manual_seed(seed), peak)


def psnr(x: Tensor, reference: Tensor, *, peak: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, 10·log10(peak² / MSE) dB, ``(N,)`` (inf if equal)."""
    if x.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(reference.shape)}")
    mse = (x.double() - reference.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse)


def masked_log_prob(px_z: Distribution, x: Tensor, observed: Tensor) -> Tensor:
    """log p(x_obs | z) = Σ over observed entries of the per-entry log-probabilities; ``(*S, B)``.

    ``px_z`` is an ``Independent`` likelihood; masked entries of ``x`` are never evaluated."""
    if not isinstance(px_z, Independent):
        raise TypeError("masked_log_prob needs an Independent likelihood")
    lp = px_z.base_dist.log_prob(torch.where(observed, x, torch.zeros_like(x)))
    lp = torch.where(observed, lp, torch.zeros_like(lp))
    return lp.flatten(-px_z.reinterpreted_batch_ndims).sum(-1)


def check_inputs(model, x: Tensor, observed: Tensor | None = None) -> None:
    """Every row of (possibly corrupted) inputs, one pass: the model's event shape and finite
    values (NaN allowed where a table marks a missing entry); values may leave the support.
    ``observed``: only those entries must be finite. ``ValueError`` / ``SupportError``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[1:]) != tuple(model.event_shape):
        shape = ", ".join(map(str, model.event_shape))
        raise ValueError(f"expected data of shape (batch, {shape}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        return
    bad = torch.isinf(x) if isinstance(model.likelihood, TabularLikelihood) else ~torch.isfinite(x)
    if observed is not None:
        bad = bad & observed
    if bad.any():
        raise SupportError("inputs contain NaN or inf values")


@torch.no_grad()
def reconstruct(model, x: Tensor, *, batch_size: int = 500) -> Tensor:
    """E[x | z = E_q[z|x]] for every row of ``x`` (values need not be in the support: corrupted
    inputs; shape and finiteness are checked, ``check_inputs``)."""
    check_inputs(model, x)
    model.eval()
    parts = [
        model.decode(model.encode(_floating(x[i : i + batch_size]), check=False).mean).mean
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts)


def infer_posterior(
    model,
    x: Tensor,
    observed: Tensor,
    *,
    steps: int = 200,
    lr: float = 0.05,
    n_samples: int = 4,
    seed: int = 0,
) -> Independent:
    """Per-example q(z) = N(loc, diag scale²) maximizing the ELBO of the observed entries only,
    E_q[log p(x_obs|z)] − KL(q ‖ p), by Adam from the encoder's guess (masked entries → 0).

    The model is not changed. Returns a posterior with batch shape ``(B,)``."""
    if observed.shape != x.shape:
        raise ValueError(f"mask shape {tuple(observed.shape)} differs from {tuple(x.shape)}")
    check_inputs(model, x, observed)
    model.eval()
    x = x.float()
    filled = torch.where(observed, x, torch.zeros_like(x))
    with torch.no_grad():
        q0 = model.encode(filled, check=False)
    loc = q0.mean.clone().requires_grad_(True)
    log_scale = q0.stddev.log().clone().requires_grad_(True)
    opt = torch.optim.Adam([loc, log_scale], lr=lr)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            for _ in range(steps):
                q = diag_gaussian(loc, log_scale.exp())
                z = q.rsample((n_samples,))  # (S, B, D)
                bound = masked_log_prob(model.decode(z), x, observed).mean(0)
                bound = bound - kl_terms(q, model.prior(), z).total
                opt.zero_grad()
                (-bound.sum()).backward()
                opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return diag_gaussian(loc.detach(), log_scale.detach().exp())


def denoise(
    model, x: Tensor, observed: Tensor | None = None, *, steps: int = 200, seed: int = 0
) -> Tensor:
    """Clean estimates of corrupted ``x``.

    Without ``observed``: the reconstruction E[x | z = E_q[z|x]]. With a boolean ``observed``
    mask: posterior inference on the observed entries only (``infer_posterior``, ``steps``), the
    masked entries filled with E[x | z = the inferred mean] and the observed ones kept."""
    if observed is None:
        return reconstruct(model, x)
    if observed.shape != x.shape:
        raise ValueError(f"mask shape {tuple(observed.shape)} differs from {tuple(x.shape)}")
    q = infer_posterior(model, x, observed.bool(), steps=steps, seed=seed)
    with torch.no_grad():
        fill = model.decode(q.mean).mean
    return torch.where(observed.bool(), x.float(), fill)


# ---------------------------------------------------------------------------------------------
# Representations
# ---------------------------------------------------------------------------------------------


def linear_probe(z_train, y_train, z_test, y_test, *, max_iter: int = 1000) -> float:
    """Test accuracy of a logistic regression (on standardized features) fitted on train."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    clf.fit(np.asarray(z_train), np.asarray(y_train))
    return float(clf.score(np.asarray(z_test), np.asarray(y_test)))


def kmeans_ari(z, y, *, n_clusters: int | None = None, seed: int = 0) -> float:
    """Adjusted Rand index between k-means clusters of ``z`` (k = number of classes) and ``y``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    y = np.asarray(y)
    k = n_clusters or len(np.unique(y))
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.asarray(z))
    return float(adjusted_rand_score(y, pred))


def probe(model, x_train, y_train, x_test, y_test, *, seed: int = 0) -> dict:
    """Linear-probe accuracy (train → test) and k-means ARI (test) of the posterior means."""
    if y_train is None or y_test is None:
        raise ValueError("probing needs labels on both splits")
    z_train, z_test = encode(model, x_train).numpy(), encode(model, x_test).numpy()
    return {
        "probe_accuracy": linear_probe(z_train, y_train, z_test, y_test),
        "kmeans_ari": kmeans_ari(z_test, y_test, seed=seed),
        "n_train": len(z_train),
        "n_test": len(z_test),
        "latent_dim": int(z_train.shape[1]),
        "classes": int(len(np.unique(np.asarray(y_train)))),
    }


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
