"""scikit-learn estimators: the library's own estimator checks, pipelines and grid search,
mixed-type DataFrames with missing values, planted outliers, pickling without torch objects."""

import io
import pickle
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_global_output_transform_pandas,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    parametrize_with_checks,
)

from vaekit.applications import anomaly_scores
from vaekit.sklearn import VAEDensity, VAEOutlierDetector, VAETransformer, expected_failed_checks

TINY = {"epochs": 2, "hidden": (8,), "random_state": 0}
ESTIMATORS = [
    VAETransformer(**TINY),
    VAEOutlierDetector(iw_samples=8, **TINY),
    VAEDensity(iw_samples=8, **TINY),
]


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=expected_failed_checks, xfail_strict=True
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_dataframe_feature_name_checks(estimator):
    """Checks scikit-learn runs on its own estimators but parametrize_with_checks does not."""
    check_dataframe_column_names_consistency(type(estimator).__name__, estimator)


# (the set_output checks mix fitting with and without feature names on purpose: scikit-learn's
# own StandardScaler warns the same way)
@pytest.mark.filterwarnings("ignore:X (does not have valid|has) feature names")
@pytest.mark.parametrize(
    "check",
    [
        check_transformer_get_feature_names_out,
        check_transformer_get_feature_names_out_pandas,
        check_set_output_transform,
        check_set_output_transform_pandas,
        check_global_output_transform_pandas,
    ],
)
def test_transformer_output_checks(check):
    check("VAETransformer", VAETransformer(**TINY))


def test_no_checks_are_expected_to_fail():
    for est in ESTIMATORS:
        assert expected_failed_checks(est) == {}


# ---- data ----------------------------------------------------------------------------------------


def _mixed_frame(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Two clusters (and their labels): numeric a, b (b skewed), a categorical text column, a
    boolean, nullable integers; holes everywhere."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    df = pd.DataFrame(
        {
            "a": rng.normal(3.0 * g, 1.0),
            "b": np.exp(rng.normal(g, 0.5)),
            "ward": np.where(g == 1, rng.choice(["north", "east"], n), "south"),
            "flag": (rng.random(n) < 0.2 + 0.6 * g).astype(object),
            "count": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        }
    )
    df["ward"] = df["ward"].astype("category")
    for col, rate in (("a", 0.1), ("b", 0.05), ("ward", 0.1), ("flag", 0.05), ("count", 0.1)):
        df.loc[rng.random(n) < rate, col] = None
    return df, g


def test_mixed_dataframe_with_missing_values():
    df, _ = _mixed_frame()
    assert df.isna().to_numpy().any()
    tr = VAETransformer(latent_dim=3, epochs=20, lr=0.01, random_state=0).fit(df)
    assert list(tr.feature_names_in_) == list(df.columns)
    assert tr.n_features_in_ == 5
    assert [c["kind"] for c in tr.model_.run_config.data_info.columns] == [
        "numeric",
        "numeric",
        "categorical",
        "binary",
        "numeric",
    ]
    z = tr.transform(df)
    assert z.shape == (len(df), 3) and z.dtype == np.float64 and np.isfinite(z).all()
    assert list(tr.get_feature_names_out()) == ["vae0", "vae1", "vae2"]
    back = tr.inverse_transform(z)
    assert isinstance(back, pd.DataFrame) and list(back.columns) == list(df.columns)
    assert set(back["ward"]) <= {"north", "east", "south"}
    assert back["flag"].between(0, 1).all()  # a boolean's mean: a probability
    assert back[["a", "b", "count"]].notna().all().all()

    det = VAEOutlierDetector(iw_samples=50, epochs=20, random_state=0).fit(df)
    assert np.isfinite(det.score_samples(df)).all()
    assert set(np.unique(det.predict(df))) == {-1, 1}

    dens = VAEDensity(iw_samples=50, epochs=20, lr=0.01, random_state=0).fit(df)
    s = dens.sample(50, random_state=1)
    assert isinstance(s, pd.DataFrame) and not s.isna().any().any()
    assert set(s["ward"]) <= {"north", "east", "south"}
    assert set(s["flag"]) <= {True, False} and s["flag"].dtype == bool
    assert dens.sample(5, random_state=3).equals(dens.sample(5, random_state=3))
    # a row with every cell missing: log p = log 1 = 0, estimated (the weights are p(z)/q(z|x));
    # an unseen level counts as missing
    holes = pd.DataFrame({c: [None, np.nan] for c in df.columns}, dtype=object)
    rough, fine = dens.score_samples(holes), dens.set_params(iw_samples=5000).score_samples(holes)
    assert rough[0] == rough[1] and abs(fine[0]) < abs(rough[0]) and abs(fine[0]) < 0.05
    unseen = df.iloc[:3].assign(ward="west")
    np.testing.assert_allclose(
        dens.score_samples(unseen), dens.score_samples(df.iloc[:3].assign(ward=None))
    )


def test_numpy_object_array_and_types_by_position():
    rng = np.random.default_rng(1)
    x = np.empty((120, 3), dtype=object)
    x[:, 0] = rng.normal(size=120)
    x[:, 1] = rng.choice(["lo", "mid", "hi"], 120)
    x[:, 2] = rng.integers(0, 3, 120)
    x[::7, 1] = None
    x[::5, 0] = np.nan
    est = VAEDensity(iw_samples=20, types={2: "categorical"}, **TINY).fit(x)
    kinds = [c["kind"] for c in est.model_.run_config.data_info.columns]
    assert kinds == ["numeric", "categorical", "categorical"]
    assert np.isfinite(est.score_samples(x)).all()
    s = est.sample(10, random_state=0)
    assert s.dtype == object and set(s[:, 1]) <= {"lo", "mid", "hi"}
    assert set(s[:, 2]) <= {0.0, 1.0, 2.0}  # numeric levels come back as numbers
    bad = x.copy()
    bad[0, 1] = {"not": "a cell"}
    with pytest.raises(TypeError, match=r"X\[0, 1\] is a dict"):
        clone(est).fit(bad)


def test_defaults_match_vaekit_anomaly_fit():
    """The detector's defaults are those of `vaekit anomaly fit` for tables."""
    from vaekit.cli import apps as commands_apps
    from vaekit.cli import build_parser
    from vaekit.sklearn import TABLE_STEPS

    args = build_parser().parse_args(["anomaly", "fit", "table.csv"])
    det = VAEOutlierDetector()
    assert det.numeric_transform == args.transform == "yeo-johnson"
    assert det.iw_samples == args.k == 1000
    assert det.contamination == args.fpr  # no labels: the fpr is taken over all training rows
    assert args.score == "nll" and args.contamination is None
    assert TABLE_STEPS == commands_apps.TABLE_STEPS
    d = commands_apps.TABLE_DEFAULTS
    assert list(det.hidden) == d["model.hidden"] and det.batch_size == d["train.batch_size"]
    cfg = det._config(n_rows=1000, n_columns=21, seed=0)
    assert cfg.train.epochs == 36 and cfg.model.latent_dim == 8  # ⌈250 / 7⌉, min(8, 21 // 2)
    assert det._config(n_rows=100, n_columns=3, seed=0).train.epochs == 250  # 1 batch / epoch
    assert det._config(n_rows=10**5, n_columns=3, seed=0).train.epochs == 10  # at least 10


# ---- behaviour ---------------------------------------------------------------------------------


def _planted(seed: int = 0):
    """300 rows near a 2-d plane in 6-d (noise std 0.3), 15 rows at distance 4 from it."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(2, 6))
    x = rng.normal(size=(300, 2)) @ w + 0.3 * rng.normal(size=(300, 6))
    u = rng.normal(size=(15, 6))
    out = rng.normal(size=(15, 2)) @ w + 4.0 * u / np.linalg.norm(u, axis=1, keepdims=True)
    y = np.r_[np.zeros(300, bool), np.ones(15, bool)]
    perm = rng.permutation(len(y))
    return np.r_[x, out][perm], y[perm]


def test_predict_flags_planted_outliers():
    x, is_out = _planted()
    det = VAEOutlierDetector(contamination=0.05, iw_samples=100, random_state=0).fit(x)
    flagged = det.predict(x) == -1
    assert flagged.sum() == round(0.05 * len(x))  # ⌈the contamination quantile⌉ of training
    precision = (flagged & is_out).sum() / flagged.sum()
    assert precision > 0.4  # chance: 15 / 315 ≈ 0.05
    assert roc_auc_score(is_out, -det.score_samples(x)) > 0.9
    np.testing.assert_allclose(det.decision_function(x), det.score_samples(x) - det.offset_)


def test_score_is_exact_when_the_posterior_is_exact():
    """With q(z|x) = p(z|x) every importance weight equals p(x): the estimate is exact for any
    number of draws (probabilistic PCA, closed-form log p(x))."""
    from linear_gaussian import exact_log_px, make_ppca, sample_x

    model, w, b, sigma = make_ppca()
    est = VAEDensity(iw_samples=3)
    est._model64, est.seed_ = model, 0
    x = sample_x(30, w, b, sigma)
    np.testing.assert_allclose(est._log_likelihood(x), exact_log_px(x, w, b, sigma), atol=1e-9)


def test_scores_estimate_the_vaekit_log_likelihood():
    """score_samples is the IWAE estimate of `anomaly_scores(method="nll")` negated (the same
    quantity, to Monte-Carlo error), and a row's score does not depend on the other rows."""
    x, _ = _planted()
    det = VAEOutlierDetector(iw_samples=1000, epochs=30, lr=0.01, random_state=0).fit(x)
    ours = det.score_samples(x[:40])
    data = det._encode(x[:40]).float()
    ref = -anomaly_scores(det.model_, data, method="nll", k=1000).numpy()
    assert np.abs(ours - ref).mean() < 0.1 and np.corrcoef(ours, ref)[0, 1] > 0.999
    np.testing.assert_allclose(det.score_samples(x[:40][::-1]), ours[::-1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(det.score_samples(x[7:8]), ours[7:8], rtol=0, atol=1e-10)


def test_pipeline_with_column_transformer_and_classifier():
    df, y = _mixed_frame(300, seed=2)
    scale = ColumnTransformer(
        [("num", StandardScaler(), ["a", "b"])],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    pipe = Pipeline(
        [
            ("scale", scale),
            ("vae", VAETransformer(latent_dim=2, epochs=60, lr=0.01, random_state=0)),
            ("clf", LogisticRegression()),
        ]
    )
    train, test = np.arange(200), np.arange(200, 300)
    pipe.fit(df.iloc[train], y[train])
    assert pipe.score(df.iloc[test], y[test]) > 0.8  # chance ≈ 0.5
    assert list(pipe[:-1].get_feature_names_out()) == ["vae0", "vae1"]

    x, is_out = _planted(seed=3)
    scaled = make_pipeline(
        StandardScaler(), VAEOutlierDetector(iw_samples=50, epochs=60, lr=0.01, random_state=0)
    )
    assert roc_auc_score(is_out, -scaled.fit(x).score_samples(x)) > 0.8


def test_grid_search_over_latent_dim():
    """The data lie near a 3-d subspace: the mean held-out log-likelihood picks latent_dim 3."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 3)) @ rng.normal(size=(3, 6)) + 0.05 * rng.normal(size=(240, 6))
    search = GridSearchCV(
        VAEDensity(iw_samples=50, epochs=40, lr=0.01, random_state=0), {"latent_dim": [1, 3]}, cv=2
    ).fit(x)
    assert search.best_params_ == {"latent_dim": 3}
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and scores[1] > scores[0] + 1.0
    assert search.best_estimator_.model_.latent_dim == 3

    pipe = Pipeline([("scale", StandardScaler()), ("vae", VAETransformer(**TINY))])
    grid = GridSearchCV(
        Pipeline([*pipe.steps, ("clf", LogisticRegression())]),
        {"vae__latent_dim": [1, 2]},
        cv=2,
    ).fit(x, (x[:, 0] > 0).astype(int))
    assert grid.best_params_["vae__latent_dim"] in (1, 2)


class _OnlyPlainData(pickle.Unpickler):
    """Refuses every global but the estimator classes, numpy arrays and builtins."""

    def find_class(self, module, name):
        if module == "vaekit.sklearn" or module.startswith("numpy") or module == "builtins":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}")


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_pickle_holds_weights_as_safetensors_bytes_and_config_as_json(estimator):
    df, _ = _mixed_frame(80)
    est = clone(estimator).fit(df)
    blob = pickle.dumps(est)
    state = est.__getstate__()
    assert isinstance(state["_vaekit_weights"], bytes) and isinstance(state["_vaekit_config"], str)
    assert "model_" not in state and not any(
        isinstance(v, (torch.Tensor, torch.nn.Module)) for v in state.values()
    )
    again = _OnlyPlainData(io.BytesIO(blob)).load()  # no torch (or other) objects inside
    method = "transform" if hasattr(est, "transform") else "score_samples"
    np.testing.assert_array_equal(getattr(again, method)(df), getattr(est, method)(df))
    for a, b in zip(again.model_.parameters(), est.model_.parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_fit_leaves_global_state_alone():
    """The trainer seeds torch, sets its thread count and installs signal handlers; fit undoes
    all three."""
    handler = signal.getsignal(signal.SIGINT)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    VAETransformer(**TINY).fit(np.random.default_rng(0).normal(size=(50, 3)))
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
    assert signal.getsignal(signal.SIGINT) is handler


def test_bad_parameters_are_refused_at_fit():
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="contamination"):
        VAEOutlierDetector(contamination=0.7).fit(x)
    with pytest.raises(ValueError, match="numeric_transform"):
        VAEDensity(numeric_transform="log").fit(x)
    with pytest.raises(ValueError, match="hidden"):
        VAETransformer(hidden=(0,)).fit(x)
    with pytest.raises(ValueError, match="types: column 5"):
        VAETransformer(types={5: "binary"}).fit(x)
