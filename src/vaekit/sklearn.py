"""scikit-learn estimators on vaekit's tabular VAE: a transformer, an outlier detector, a density.

    from vaekit.sklearn import VAETransformer, VAEOutlierDetector, VAEDensity

    VAETransformer(latent_dim=4).fit(df).transform(df)     # posterior means E[z|x], (N, 4)
    det = VAEOutlierDetector(contamination=0.05).fit(X)   # defaults of `vaekit anomaly fit`
    det.predict(X)                                         # +1 inlier, −1 outlier
    VAEDensity().fit(X).score(X)                           # mean log p(x), nats

``X`` is a 2-D array or a pandas DataFrame whose columns may mix types: numbers, two-valued
columns (binary) and text or other levels (categorical), with missing cells (NaN, None, pd.NA).
It is modelled by the tabular likelihood (``vaekit.tabular``, docs/applications.md): column
types are inferred on ``fit`` (``types={"col": "categorical"}`` overrides, keys are DataFrame
column names or column positions), numeric columns are standardized (optionally Yeo-Johnson
transformed) with the training statistics, missing cells contribute exactly 0 nats.

``fit`` trains through the ordinary trainer (``vaekit.train``) in a temporary run directory and
keeps the trained model in memory (``model_``, a ``vaekit.VAE`` in float32, as trained); the
run directory is removed. Inference runs on a float64 copy so that every row's result depends on
that row alone (scikit-learn's batch and order invariance). Pickling stores the weights as
safetensors bytes and the resolved config as JSON; unpickling rebuilds the model from those two
with ``vaekit.build_model`` (no pickled torch objects).

Scores are ``log p(x)`` estimated by importance sampling with ``iw_samples`` draws from q(z|x)
(the IWAE estimate of ``vaekit anomaly fit --score nll``, with the sign of scikit-learn's
``score_samples``: higher = more normal). The standard-normal draws ε are seeded and shared by
all rows (z = μ(x) + σ(x)·ε), so a row's score does not depend on which rows it is scored with.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import tempfile
import threading
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sklearn.base import BaseEstimator, DensityMixin, OutlierMixin, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_array,
    check_is_fitted,
    validate_data,
)

from .checkpoint import load_run
from .config import Config, load_config
from .data import Dataset
from .data.tables import TRANSFORMS, TabularSchema
from .models import build_model
from .train import train

__all__ = ["VAETransformer", "VAEOutlierDetector", "VAEDensity", "expected_failed_checks"]

# The defaults of `vaekit anomaly fit` for tables (commands_apps.TABLE_DEFAULTS / TABLE_STEPS):
# linear networks, batch 128, about 250 optimizer steps but at least 10 epochs (at most 400),
# latent dim min(8, max(2, C // 2)). tests/test_sklearn.py checks that they still agree.
TABLE_STEPS = 250
MIN_EPOCHS, MAX_EPOCHS = 10, 400
MONITOR_ROWS = 1000  # training rows the trainer's end-of-run test ELBO is computed on
ROWS_PER_PASS = 8192  # decoder rows (draws × data rows) per inference pass
_CELL_TYPES = (str, bool, int, float, np.integer, np.floating, np.bool_)


def expected_failed_checks(estimator) -> dict[str, str]:
    """scikit-learn checks these estimators are known to fail, ``{check name: reason}``, for
    ``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)`` (the
    scikit-learn >= 1.6 way; ``_more_tags``/``_xfail_checks`` are gone). None at present: all
    the checks of scikit-learn 1.9 pass."""
    return {}


class _TabularVAE(BaseEstimator):
    """Shared by the three estimators: parameters, input reading, training, pickling."""

    _parameter_constraints: dict = {
        "latent_dim": [Interval(Integral, 1, None, closed="left"), None],
        "hidden": ["array-like"],
        "epochs": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "numeric_transform": [StrOptions(set(TRANSFORMS))],
        "types": [dict, None],
        "overrides": [dict, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # ---- reading X ---------------------------------------------------------------------------
    def _read(self, X, *, reset: bool) -> dict[str, list]:
        """X → ``{column name: cells}`` (missing = None/NaN), validated the scikit-learn way:
        feature names and ``n_features_in_`` are set on ``reset`` and checked otherwise."""
        if _is_frame(X):
            validate_data(self, X, reset=reset, skip_check_array=True)
            n, c = X.shape
            if n == 0 or c == 0:
                raise ValueError(
                    f"Found array with {n} sample(s) and {c} feature(s) (shape={X.shape}); "
                    "a minimum of 1 of each is required."
                )
            names = [str(name) for name in X.columns]
            cells = []
            for j in range(c):
                col = X.iloc[:, j]
                cells.append(col.astype(object).where(col.notna(), None).tolist())
        else:
            X = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite="allow-nan")
            if X.dtype.kind == "O":
                _check_cells(X)
            names = [f"x{j}" for j in range(X.shape[1])]
            cells = [X[:, j].tolist() for j in range(X.shape[1])]
        if reset:
            if len(set(names)) != len(names):
                raise ValueError(f"column names must be unique, got {names}")
            self._frame_columns = names if _is_frame(X) else None
        else:  # columns by position, under the names the model was fitted with
            names = [col["name"] for col in self._columns()]
        return dict(zip(names, cells, strict=True))

    def _encode(self, X) -> torch.Tensor:
        """X → the model's float64 data tensor ``(N, C)`` (NaN = missing)."""
        check_is_fitted(self)
        x, _ = self._schema().encode(self._read(X, reset=False), unseen="missing")
        x = x.double()
        self._model64.check(x)
        return x

    def _columns(self) -> list[dict]:
        return self.model_.run_config.data_info.columns

    def _schema(self) -> TabularSchema:
        return TabularSchema.from_dict({"columns": self._columns()})

    # ---- fitting -----------------------------------------------------------------------------
    def _fit_model(self, X) -> torch.Tensor:
        """Infer the schema, train through ``vaekit.train``, keep the model; returns the
        training data as the float64 tensor the model scores."""
        cols = self._read(X, reset=True)
        names = list(cols)
        schema = TabularSchema.infer(cols, types=self._types(names))
        x, _ = schema.encode(cols)
        schema.fit(x, self.numeric_transform)
        self._level_values = _level_values(schema, x, cols)
        for h in self.hidden:
            if not isinstance(h, Integral) or h < 1:
                raise ValueError(f"hidden must be positive layer widths, got {self.hidden!r}")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        cfg = self._config(len(x), len(schema.columns), seed)
        ds = Dataset(
            name="in-memory",
            train=x,
            test=x[:MONITOR_ROWS],
            train_labels=None,
            test_labels=None,
            event_shape=(x.shape[1],),
            schema=schema.to_dict(),
        )
        log = print if self.verbose else _silent
        with tempfile.TemporaryDirectory(prefix="vaekit-sklearn-") as tmp, _isolated_globals():
            run = train(cfg, Path(tmp) / "run", dataset=ds, log=log)
            model = load_run(run)
            lines = (run / "metrics.jsonl").read_text().splitlines()
        self.model_ = model
        self._model64 = copy.deepcopy(model).double()
        self.history_ = [json.loads(line) for line in lines]
        self.seed_ = seed
        return x.double()

    def _types(self, names: list[str]) -> dict[str, str]:
        out = {}
        for key, kind in (self.types or {}).items():
            if isinstance(key, Integral) and not isinstance(key, bool):
                if not 0 <= key < len(names):
                    raise ValueError(f"types: column {key} out of range (X has {len(names)})")
                key = names[key]
            out[str(key)] = kind
        return out

    def _config(self, n_rows: int, n_columns: int, seed: int) -> Config:
        n_batches = max(n_rows // self.batch_size, 1)
        epochs = self.epochs or int(
            min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TABLE_STEPS / n_batches)))
        )
        overrides = {
            "data.dataset": "in-memory",
            "model.hidden": [int(h) for h in self.hidden],
            "model.latent_dim": self.latent_dim or min(8, max(2, n_columns // 2)),
            "train.epochs": epochs,
            "train.batch_size": self.batch_size,
            "train.lr": self.lr,
            "train.seed": seed,
            "train.images": False,
            "train.eval_every": epochs,  # one test ELBO and one checkpoint, at the end
            "train.checkpoint_every": epochs,
            "train.deterministic": torch.are_deterministic_algorithms_enabled(),  # keep it
            **(self.overrides or {}),
        }
        return load_config(None, overrides)

    # ---- inference (float64) ---------------------------------------------------------------
    @torch.no_grad()
    def _log_likelihood(self, x: torch.Tensor) -> np.ndarray:
        """log p(x) per row, importance-sampled with ``iw_samples`` shared draws (module doc)."""
        model, k = self._model64, self.iw_samples
        g = torch.Generator().manual_seed(self.seed_)
        eps = torch.randn(k, 1, model.latent_dim, generator=g, dtype=torch.float64)
        out = []
        step = max(1, ROWS_PER_PASS // k)
        for i in range(0, len(x), step):
            xb = x[i : i + step]
            q = model.encode(xb, check=False)
            z = q.mean + q.stddev * eps  # (K, B, D)
            log_w = model.decode(z).log_prob(xb) + model.prior().log_prob(z) - q.log_prob(z)
            out.append(torch.logsumexp(log_w, 0) - math.log(k))
        return torch.cat(out).numpy()

    def _to_output(
        self, num: torch.Tensor, binary: torch.Tensor, codes: torch.Tensor, *, mean: bool
    ):
        """Per-column values (numeric in original units, binary P(level 1) if ``mean`` else 0/1
        draws, categorical codes) → rows in X's format, levels as the cells ``fit`` saw (a
        binary column's mean with numeric levels a, b: a + P(b)·(b − a)). A DataFrame if fitted
        on one, else a float array when every value is a number, else an object array."""
        cols = self._columns()
        out = np.empty((len(num), len(cols)), dtype=object)
        i = {"numeric": 0, "binary": 0, "categorical": 0}
        all_numbers = True
        for j, (col, values) in enumerate(zip(cols, self._level_values, strict=True)):
            kind = col["kind"]
            src = {"numeric": num, "binary": binary, "categorical": codes}[kind][:, i[kind]]
            i[kind] += 1
            if kind == "numeric":
                out[:, j] = src.numpy()
                continue
            as_numbers = all(isinstance(v, (int, float)) for v in values)  # bool: an int
            all_numbers &= as_numbers
            if kind == "binary" and mean and as_numbers:  # E[x] = a + P(x = b)·(b − a)
                out[:, j] = values[0] + src.numpy() * (values[1] - values[0])
            else:
                index = (src > 0.5).long() if kind == "binary" else src.long()
                out[:, j] = [values[v] for v in index.tolist()]
        if self._frame_columns is not None:
            import pandas as pd

            return pd.DataFrame(out, columns=self._frame_columns).infer_objects()
        return out.astype(np.float64) if all_numbers else out

    # ---- pickling: weights as safetensors bytes, config as JSON ---------------------------------
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        state.pop("_model64", None)
        if model is not None:
            state["_vaekit_config"] = json.dumps(model.run_config.to_dict())
            tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            state["_vaekit_weights"] = save_safetensors(tensors)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        config, weights = state.pop("_vaekit_config", None), state.pop("_vaekit_weights", None)
        super().__setstate__(state)
        if config is not None:
            self.model_ = _rebuild(config, weights)
            self._model64 = copy.deepcopy(self.model_).double()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing cells are part of the likelihood
        tags.input_tags.string = True  # text cells are categorical levels
        return tags


class VAETransformer(TransformerMixin, _TabularVAE):
    """Embed table rows with a VAE: ``transform`` gives the posterior means E[z|x] ``(N, d)``,
    ``inverse_transform`` the decoded means E[x|z] in original units (binary columns with
    numeric levels: the expected value; categorical and text levels: the most probable level).

    Parameters: ``latent_dim`` d (None: min(8, max(2, C // 2)) for C columns), ``hidden``
    widths of the encoder/decoder MLPs (() = linear), ``epochs`` (None: about 250 optimizer
    steps, at least 10 epochs), ``batch_size``, ``lr``, ``numeric_transform`` of numeric
    columns ("none" | "yeo-johnson"), ``types`` {column: "numeric" | "binary" | "categorical"},
    ``overrides`` {"section.key": value} applied to the training config last (any vaekit config
    key, e.g. {"objective.beta": 0.5}), ``random_state``, ``verbose`` (print training epochs).
    """

    def __init__(
        self,
        latent_dim: int | None = None,
        *,
        hidden: tuple[int, ...] = (),
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 1e-3,
        numeric_transform: str = "none",
        types: dict | None = None,
        overrides: dict | None = None,
        random_state=None,
        verbose: bool = False,
    ):
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.numeric_transform = numeric_transform
        self.types = types
        self.overrides = overrides
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None) -> VAETransformer:
        """Train on the rows of ``X``; ``y`` is ignored."""
        self._fit_model(X)
        return self

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Posterior means E[z|x], ``(N, latent_dim)`` float64."""
        x = self._encode(X)
        parts = [self._model64.encode(x[i : i + 4096]).mean for i in range(0, len(x), 4096)]
        return torch.cat(parts).numpy()

    @torch.no_grad()
    def inverse_transform(self, X):
        """Decoded means E[x|z] of codes ``X`` ``(N, latent_dim)``, in the format of the data
        ``fit`` saw (float array, object array or DataFrame)."""
        check_is_fitted(self)
        z = check_array(X, dtype=np.float64)
        d = self.model_.latent_dim
        if z.shape[1] != d:
            raise ValueError(f"expected codes of shape (n_samples, {d}), got {z.shape}")
        cols = self._model64.decode(torch.from_numpy(z)).base_dist
        num = self._model64.likelihood.from_normal(cols.loc)
        probs, codes = torch.sigmoid(cols.bin_logits), cols.cat_logits.argmax(-1)
        return self._to_output(num, probs, codes, mean=True)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``vae0 .. vae{d-1}``."""
        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)
        return np.asarray([f"vae{i}" for i in range(self.model_.latent_dim)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


class VAEOutlierDetector(OutlierMixin, _TabularVAE):
    """Outlier detection by the VAE's log-likelihood, with the defaults of ``vaekit anomaly
    fit``: numeric columns Yeo-Johnson transformed, linear networks, a short fit (about 250
    steps), K = 1000 importance samples.

    ``score_samples`` = estimated log p(x) (higher = more normal), ``decision_function`` =
    ``score_samples − offset_`` with ``offset_`` the ``contamination`` quantile of the training
    scores, ``predict`` = +1 (inlier) / −1 (outlier, decision < 0). Other parameters as in
    ``VAETransformer``; ``iw_samples`` = K.
    """

    _parameter_constraints: dict = {
        **_TabularVAE._parameter_constraints,
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
        "iw_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        contamination: float = 0.05,
        *,
        iw_samples: int = 1000,
        latent_dim: int | None = None,
        hidden: tuple[int, ...] = (),
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 1e-3,
        numeric_transform: str = "yeo-johnson",
        types: dict | None = None,
        overrides: dict | None = None,
        random_state=None,
        verbose: bool = False,
    ):
        self.contamination = contamination
        self.iw_samples = iw_samples
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.numeric_transform = numeric_transform
        self.types = types
        self.overrides = overrides
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None) -> VAEOutlierDetector:
        """Train on ``X`` (contaminated, unlabelled); set ``offset_``; ``y`` is ignored."""
        x = self._fit_model(X)
        self.offset_ = float(np.percentile(self._log_likelihood(x), 100.0 * self.contamination))
        return self

    def score_samples(self, X) -> np.ndarray:
        """Estimated log p(x) per row, nats (higher = more normal)."""
        return self._log_likelihood(self._encode(X))

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) − offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, −1 for outliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)


class VAEDensity(DensityMixin, _TabularVAE):
    """A density estimate of table rows: ``score_samples`` = estimated log p(x) per row (nats,
    in the original units of numeric columns), ``score`` = their mean, ``sample`` = draws
    x ~ p(x|z), z ~ N(0, I). Parameters as in ``VAEOutlierDetector`` (numeric columns
    Yeo-Johnson transformed by default), without ``contamination``.
    """

    _parameter_constraints: dict = {
        **_TabularVAE._parameter_constraints,
        "iw_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        iw_samples: int = 1000,
        latent_dim: int | None = None,
        hidden: tuple[int, ...] = (),
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 1e-3,
        numeric_transform: str = "yeo-johnson",
        types: dict | None = None,
        overrides: dict | None = None,
        random_state=None,
        verbose: bool = False,
    ):
        self.iw_samples = iw_samples
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.numeric_transform = numeric_transform
        self.types = types
        self.overrides = overrides
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None) -> VAEDensity:
        """Train on the rows of ``X``; ``y`` is ignored."""
        self._fit_model(X)
        return self

    def score_samples(self, X) -> np.ndarray:
        """Estimated log p(x) per row, nats."""
        return self._log_likelihood(self._encode(X))

    def score(self, X, y=None) -> float:
        """Mean estimated log p(x) over the rows of ``X``, nats."""
        return float(np.mean(self.score_samples(X)))

    @torch.no_grad()
    def sample(self, n_samples: int = 1, random_state=None):
        """``n_samples`` rows x ~ p(x|z), z ~ N(0, I), in the format of the data ``fit`` saw."""
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        model = self._model64
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = torch.randn(n_samples, model.latent_dim, dtype=torch.float64)
            cols = model.decode(z).base_dist
            x = cols.sample()  # (N, C) in the model's coding: numbers, 0/1, codes
        h = model.likelihood
        return self._to_output(x[:, h.num_cols], x[:, h.bin_cols], x[:, h.cat_cols], mean=False)


# ---- helpers -------------------------------------------------------------------------------------


def _silent(*_args, **_kwargs) -> None:
    pass


def _is_frame(X) -> bool:
    return hasattr(X, "columns") and hasattr(X, "iloc") and hasattr(X, "dtypes")


def _check_cells(X: np.ndarray) -> None:
    """Cells of an object array must be numbers, strings, booleans or missing (None)."""
    for (i, j), v in np.ndenumerate(X):
        if v is not None and not isinstance(v, _CELL_TYPES):
            raise TypeError(
                f"X[{i}, {j}] is a {type(v).__name__}: a table cell must be a number, a "
                "string, a boolean or missing (None / NaN)"
            )


def _level_values(schema: TabularSchema, x: torch.Tensor, cols: dict[str, list]) -> list[list]:
    """For every column, the cell first seen with each level (code), as a plain Python value:
    outputs give levels back as X held them (3, True, "north"), not as labels ("3", "true")."""
    out = []
    for j, col in enumerate(schema.columns):
        if col.kind == "numeric":
            out.append([])
            continue
        codes = x[:, j].numpy()
        cells = cols[col.name]
        first = [int(np.flatnonzero(codes == k)[0]) for k in range(len(col.levels))]
        out.append([_plain(cells[i]) for i in first])
    return out


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _rebuild(config_json: str, weights: bytes):
    """A model from its resolved config (JSON) and weights (safetensors bytes)."""
    cfg = Config.from_dict(json.loads(config_json))
    model = build_model(cfg.model, cfg.data_info)
    model.load_state_dict(load_safetensors(weights), strict=True)
    model.run_config = cfg
    return model.eval()


@contextlib.contextmanager
def _isolated_globals():
    """Undo the trainer's process-wide side effects when it returns: the torch RNG (seeded),
    the thread count (``train.threads``) and the SIGINT/SIGTERM handlers it installs."""
    threads = torch.get_num_threads()
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        for s, h in handlers.items():
            signal.signal(s, h)
