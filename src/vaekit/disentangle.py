"""Disentanglement metrics on codes and ground-truth factors (numpy + scikit-learn).

Inputs: ``codes`` float (N, D), one representation per observation (e.g. the posterior mean);
``factors`` int (N, K), the discrete ground-truth factor values (indices 0..size−1, as a
``FactorDataset`` such as ``vaekit.shapes.Shapes`` produces them). Factors that take a single value
(dSprites' colour) carry no information and are left out of every metric. Scores are in [0, 1],
higher is more disentangled; mutual information is in nats.

- ``mig``: Mutual Information Gap (Chen et al. 2018).
- ``factor_vae_score``: majority-vote accuracy of Kim & Mnih (2018); it renders its own batches, so
  it needs ``encode(observations) -> codes`` and the dataset.
- ``dci``: disentanglement, completeness, informativeness (Eastwood & Williams 2018), importances
  from scikit-learn random forests (default) or gradient-boosted trees (disentanglement_lib's).
- ``sap``: Separated Attribute Predictability (Kumar et al. 2018), threshold classifiers per code.
- ``evaluate_codes``: all four with fixed seeds.

scikit-learn is imported where a metric needs it, so importing this module (and ``data``, which
re-exports ``FactorDataset``) stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "FactorDataset",
    "Encoder",
    "discretize",
    "factor_entropy",
    "mutual_info_matrix",
    "mig_per_factor",
    "mig",
    "FactorVAEScore",
    "factor_vae_score",
    "DCIResult",
    "importance_matrix",
    "dci_from_importance",
    "dci",
    "sap_score_matrix",
    "sap",
    "evaluate_codes",
    "evaluate_stored",
    "dims_by_factor",
]

Encoder = Callable[[np.ndarray], np.ndarray]  # observations (N, ...) → codes (N, D)


@runtime_checkable
class FactorDataset(Protocol):
    """A dataset generated from discrete, independent factors: factor k takes values
    0..factor_sizes[k]−1. ``sample_factors(n, rng)`` → int64 (N, K), ``render(factors)`` →
    observations (N, ...) as the encoder of a metric expects them (``data.shapes.Shapes`` is
    one; ``Dataset.factor_source`` holds a dataset's)."""

    @property
    def factor_sizes(self) -> tuple[int, ...]: ...

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def render(self, factors: np.ndarray) -> np.ndarray: ...


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, f = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    if c.ndim != 2 or f.ndim != 2 or len(c) != len(f):
        raise ValueError(f"need codes (N, D) and factors (N, K), got {c.shape} and {f.shape}")
    if not np.isfinite(c).all():
        raise ValueError("codes contain NaN or inf values")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"factors must be integer indices, got {f.dtype}")
    return c, f


def _varying(factors: np.ndarray) -> np.ndarray:
    """bool (K,): factors that take more than one value in ``factors`` (N, K)."""
    varying = (factors != factors[:1]).any(0)
    if not varying.any():
        raise ValueError("every factor is constant: nothing to measure")
    return varying


# --------------------------------------------------------------------------------------------
# MIG
# --------------------------------------------------------------------------------------------


def discretize(codes: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """int (N, D): each code dimension cut into ``n_bins`` equal-width bins between its min and
    max (disentanglement_lib's histogram discretisation); a constant dimension is all bin 0."""
    c = np.asarray(codes, dtype=np.float64)
    lo, width = c.min(0), np.ptp(c, axis=0)
    safe = np.where(width > 0, width, 1.0)
    return np.clip(np.floor((c - lo) / safe * n_bins), 0, n_bins - 1).astype(np.int64)


def factor_entropy(factors: np.ndarray) -> np.ndarray:
    """H(v_k) of each factor's empirical distribution, nats, (K,)."""
    out = []
    for col in np.asarray(factors).T:
        p = np.unique(col, return_counts=True)[1] / len(col)
        out.append(float(-(p * np.log(p)).sum()))
    return np.array(out)


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """I(z_j; v_k) in nats, (D, K), between discretised codes and factors (plug-in estimate)."""
    from sklearn.metrics import mutual_info_score

    c, f = _check(codes, factors)
    binned = discretize(c, n_bins)
    return np.array([[mutual_info_score(v, z) for v in f.T] for z in binned.T])


def mig_per_factor(codes: np.ndarray, factors: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """(I(z_(1); v_k) − I(z_(2); v_k)) / H(v_k) per factor, (K,): the gap between the two codes
    with the most information about v_k (the second is 0 when D = 1); NaN for constant factors."""
    c, f = _check(codes, factors)
    mi = np.sort(mutual_info_matrix(c, f, n_bins), axis=0)[::-1]  # (D, K), descending
    second = mi[1] if len(mi) > 1 else np.zeros(mi.shape[1])
    entropy = factor_entropy(f)
    gap = np.full(f.shape[1], np.nan)
    v = _varying(f)
    gap[v] = (mi[0, v] - second[v]) / entropy[v]
    return gap


def mig(codes: np.ndarray, factors: np.ndarray, n_bins: int = 20) -> float:
    """Mutual Information Gap: the mean of ``mig_per_factor`` over the varying factors.

    With equal-width bins a factor with more values than ``n_bins`` cannot reach 1: on ``Shapes``
    the exact factor values as codes score 0.85 for the 32 positions and 0.81 for the 40
    orientations (20 bins), 0.90 overall."""
    return float(np.nanmean(mig_per_factor(codes, factors, n_bins)))


# --------------------------------------------------------------------------------------------
# FactorVAE score
# --------------------------------------------------------------------------------------------


class FactorVAEScore(NamedTuple):
    """``eval_accuracy`` (the score), ``train_accuracy`` of the majority-vote classifier, and the
    number of code dimensions kept (std over the data ≥ the pruning threshold)."""

    eval_accuracy: float
    train_accuracy: float
    active_dims: int


def _encode(encode: Encoder, observations: np.ndarray, chunk: int) -> np.ndarray:
    parts = [
        np.asarray(encode(observations[i : i + chunk])) for i in range(0, len(observations), chunk)
    ]
    codes = np.concatenate(parts).astype(np.float64)
    if codes.ndim != 2 or len(codes) != len(observations):
        raise ValueError(f"encode must return (N, D) codes, got {codes.shape}")
    return codes


def _votes(
    encode: Encoder,
    dataset: FactorDataset,
    n_votes: int,
    batch_size: int,
    std: np.ndarray,
    active: np.ndarray,
    rng: np.random.Generator,
    chunk: int,
) -> np.ndarray:
    """int (n_votes, 2): (fixed factor k, argmin_j Var[z_j / std_j] over a batch with v_k fixed),
    j counted among the active dimensions."""
    candidates = np.flatnonzero(np.array(dataset.factor_sizes) > 1)
    per_call = max(1, chunk // batch_size)
    out = []
    for start in range(0, n_votes, per_call):
        n = min(per_call, n_votes - start)
        k = rng.choice(candidates, size=n)
        f = dataset.sample_factors(n * batch_size, rng).reshape(n, batch_size, -1)
        f[np.arange(n), :, k] = f[np.arange(n), :1, k]  # factor k shared within each batch
        codes = _encode(encode, dataset.render(f.reshape(n * batch_size, -1)), chunk)
        local = codes.reshape(n, batch_size, -1).var(axis=1, ddof=1)[:, active] / std[active] ** 2
        out.append(np.stack([k, local.argmin(1)], 1))
    return np.concatenate(out)


def _vote_table(votes: np.ndarray, n_factors: int, n_dims: int) -> np.ndarray:
    table = np.zeros((n_factors, n_dims), dtype=np.int64)
    np.add.at(table, (votes[:, 0], votes[:, 1]), 1)
    return table


def factor_vae_score(
    encode: Encoder,
    dataset: FactorDataset,
    *,
    batch_size: int = 64,
    n_train: int = 10_000,
    n_eval: int = 5_000,
    n_variance: int = 10_000,
    prune_threshold: float = 0.05,
    seed: int = 0,
    chunk: int = 4096,
) -> FactorVAEScore:
    """FactorVAE score (Kim & Mnih 2018), with disentanglement_lib's default sizes.

    1. std_j of each code dimension over ``n_variance`` random observations; dimensions with
       std_j < ``prune_threshold`` (collapsed) are dropped.
    2. A vote: pick a varying factor k, render ``batch_size`` observations sharing v_k (the other
       factors random), encode, and vote (k, argmin_j Var[z_j / std_j]) (unbiased variance).
    3. Majority-vote classifier: each dimension predicts the factor it was most often the argmin
       for, on ``n_train`` votes; accuracy on those (train) and on ``n_eval`` new votes (the score).
    Renders (n_train + n_eval)·batch_size + n_variance observations, ``chunk`` at a time.
    No active dimension gives 0 accuracies.
    """
    rng = np.random.default_rng(seed)
    obs = dataset.render(dataset.sample_factors(n_variance, rng))
    std = _encode(encode, obs, chunk).std(0, ddof=1)
    active = std >= prune_threshold
    if not active.any():
        return FactorVAEScore(0.0, 0.0, 0)
    k, d = len(dataset.factor_sizes), int(active.sum())
    args = (encode, dataset)
    train = _vote_table(_votes(*args, n_train, batch_size, std, active, rng, chunk), k, d)
    evaluation = _vote_table(_votes(*args, n_eval, batch_size, std, active, rng, chunk), k, d)
    classifier = train.argmax(0)  # (d,): the factor each active dimension stands for
    dims = np.arange(d)
    return FactorVAEScore(
        eval_accuracy=float(evaluation[classifier, dims].sum() / evaluation.sum()),
        train_accuracy=float(train[classifier, dims].sum() / train.sum()),
        active_dims=d,
    )


# --------------------------------------------------------------------------------------------
# DCI
# --------------------------------------------------------------------------------------------


class DCIResult(NamedTuple):
    """Disentanglement, completeness, informativeness (mean test accuracy over factors), and the
    (D, K') importance matrix over the K' varying factors (columns sum to 1)."""

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray


def _classifier(model: str, seed: int):
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    if model == "forest":  # all features at every split: importance goes to the informative code
        return RandomForestClassifier(
            n_estimators=50, max_features=None, min_samples_leaf=2, random_state=seed, n_jobs=1
        )
    if model == "gbt":  # disentanglement_lib's choice: slow for factors with many values
        return GradientBoostingClassifier(random_state=seed)
    raise ValueError(f"model must be 'forest' or 'gbt', got {model!r}")


def importance_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    model: str = "forest",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """R (D, K') and test accuracies (K',) for the K' varying factors: one classifier per factor
    predicting v_k from all codes; R[j, k] = its impurity-based importance of z_j (sums to 1)."""
    c, f = _check(codes_train, factors_train)
    ct, ft = _check(codes_test, factors_test)
    columns, accuracy = [], []
    for k in np.flatnonzero(_varying(f)):
        clf = _classifier(model, seed).fit(c, f[:, k])
        columns.append(np.abs(clf.feature_importances_))
        accuracy.append(float((clf.predict(ct) == ft[:, k]).mean()))
    return np.stack(columns, 1), np.array(accuracy)


def _one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """1 − H_base(p) for each column of p (rows are the outcomes, columns sum to 1)."""
    if base < 2:
        return np.ones(p.shape[1])
    logs = np.log(np.where(p > 0, p, 1.0))
    return 1.0 + (p * logs).sum(0) / np.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) from R (D, K), importances ≥ 0:

    disentanglement = Σ_j ρ_j (1 − H_K(P_j·)), P_jk = R_jk / Σ_k R_jk, ρ_j = Σ_k R_jk / Σ R;
    completeness    = Σ_k ρ̃_k (1 − H_D(P̃_·k)), P̃_jk = R_jk / Σ_j R_jk, ρ̃_k = Σ_j R_jk / Σ R.
    Entropies in base K (resp. D), so each term is in [0, 1]; codes with no importance get ρ_j = 0.
    """
    r = np.asarray(importance, dtype=np.float64)
    d, k = r.shape
    total = r.sum()
    code_mass, factor_mass = r.sum(1), r.sum(0)
    per_code = _one_minus_entropy((r / np.where(code_mass > 0, code_mass, 1.0)[:, None]).T, k)
    per_factor = _one_minus_entropy(r / np.where(factor_mass > 0, factor_mass, 1.0), d)
    return float((code_mass / total) @ per_code), float((factor_mass / total) @ per_factor)


def dci(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    model: str = "forest",
    seed: int = 0,
) -> DCIResult:
    """DCI (Eastwood & Williams 2018) from ``importance_matrix`` and ``dci_from_importance``;
    informativeness = mean test accuracy of the per-factor classifiers."""
    r, accuracy = importance_matrix(
        codes_train, factors_train, codes_test, factors_test, model, seed
    )
    disentanglement, completeness = dci_from_importance(r)
    return DCIResult(disentanglement, completeness, float(accuracy.mean()), r)


# --------------------------------------------------------------------------------------------
# SAP
# --------------------------------------------------------------------------------------------


def sap_score_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
) -> np.ndarray:
    """S (D, K'): test accuracy of predicting varying factor v_k from code z_j alone with
    thresholds on z_j (a one-feature decision tree with as many leaves as v_k has values), the
    discrete-factor score of Kumar et al. (2018); invariant to monotone transforms of z_j."""
    from sklearn.tree import DecisionTreeClassifier

    c, f = _check(codes_train, factors_train)
    ct, ft = _check(codes_test, factors_test)
    cols = np.flatnonzero(_varying(f))
    s = np.zeros((c.shape[1], len(cols)))
    for i, k in enumerate(cols):
        leaves = max(2, len(np.unique(f[:, k])))
        for j in range(c.shape[1]):
            tree = DecisionTreeClassifier(max_leaf_nodes=leaves, random_state=0)
            tree.fit(c[:, j : j + 1], f[:, k])
            s[j, i] = (tree.predict(ct[:, j : j + 1]) == ft[:, k]).mean()
    return s


def sap(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
) -> float:
    """SAP: mean over varying factors of the gap between the two best codes' scores in
    ``sap_score_matrix`` (the second is 0 when D = 1)."""
    s = np.sort(sap_score_matrix(codes_train, factors_train, codes_test, factors_test), axis=0)
    second = s[-2] if len(s) > 1 else np.zeros(s.shape[1])
    return float((s[-1] - second).mean())


# --------------------------------------------------------------------------------------------
# All four
# --------------------------------------------------------------------------------------------


def evaluate_codes(
    encode: Encoder,
    dataset: FactorDataset,
    n: int = 10_000,
    n_test: int = 5_000,
    seed: int = 0,
    batch_size: int = 64,
    dci_model: str = "forest",
    chunk: int = 4096,
    n_votes: int | None = None,
    n_eval_votes: int | None = None,
) -> dict[str, float]:
    """MIG, FactorVAE score, DCI and SAP of ``encode`` on ``dataset``, reproducible from ``seed``.

    Codes of ``n`` training and ``n_test`` test observations (factors drawn uniformly) feed MIG
    (training codes), DCI and SAP (fit on training, scored on test); the FactorVAE score uses
    ``n_votes`` training and ``n_eval_votes`` evaluation votes (default n and n_test) of
    ``batch_size`` observations each (so it renders (n_votes + n_eval_votes)·batch_size + n
    observations). Returns floats (JSON-ready).
    """
    rng = np.random.default_rng(seed)
    f_train = dataset.sample_factors(n, rng)
    f_test = dataset.sample_factors(n_test, rng)
    c_train = _encode(encode, dataset.render(f_train), chunk)
    c_test = _encode(encode, dataset.render(f_test), chunk)
    d = dci(c_train, f_train, c_test, f_test, model=dci_model, seed=seed)
    fv = factor_vae_score(
        encode,
        dataset,
        batch_size=batch_size,
        n_train=n if n_votes is None else n_votes,
        n_eval=n_test if n_eval_votes is None else n_eval_votes,
        n_variance=n,
        seed=seed + 1,
        chunk=chunk,
    )
    return {
        "mig": mig(c_train, f_train),
        "factor_vae": fv.eval_accuracy,
        "factor_vae_train": fv.train_accuracy,
        "factor_vae_active_dims": float(fv.active_dims),
        "dci_disentanglement": d.disentanglement,
        "dci_completeness": d.completeness,
        "dci_informativeness": d.informativeness,
        "sap": sap(c_train, f_train, c_test, f_test),
    }


def evaluate_stored(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    seed: int = 0,
    dci_model: str = "forest",
) -> dict[str, float]:
    """MIG (training codes), DCI and SAP (fit on training, scored on test) of given codes and
    their factors: for a factor dataset that cannot render new observations (no FactorVAE
    score). Returns floats (JSON-ready)."""
    d = dci(codes_train, factors_train, codes_test, factors_test, model=dci_model, seed=seed)
    return {
        "mig": mig(codes_train, factors_train),
        "dci_disentanglement": d.disentanglement,
        "dci_completeness": d.completeness,
        "dci_informativeness": d.informativeness,
        "sap": sap(codes_train, factors_train, codes_test, factors_test),
    }


def dims_by_factor(mi: np.ndarray) -> list[np.ndarray]:
    """For each factor k (columns of ``mi`` (D, K), e.g. ``mutual_info_matrix``), the code
    dimensions by decreasing I(z_j; v_k); ties keep the lower index first."""
    return [np.argsort(-np.asarray(mi)[:, k], kind="stable") for k in range(np.shape(mi)[1])]
