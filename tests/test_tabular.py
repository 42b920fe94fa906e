"""Tables: schema inference, encoding, the mixed-type likelihood, missing values, CSV edge cases."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Normal

import vaekit
from builders import build
from vaekit.applications import impute
from vaekit.data import DataFormatError, load_dataset
from vaekit.data.tables import TabularSchema, read_table, table_dataset
from vaekit.distributions import SupportError
from vaekit.likelihoods.yeo_johnson import (
    fit_yeo_johnson,
    yeo_johnson,
    yeo_johnson_inverse,
    yeo_johnson_log_slope,
)

COLUMNS = [
    {"name": "age", "kind": "numeric", "mean": 40.0, "std": 12.0},
    {"name": "smoker", "kind": "binary", "levels": ["no", "yes"]},
    {"name": "city", "kind": "categorical", "levels": ["a", "b", "c"]},
    {"name": "income", "kind": "numeric", "mean": -3.0, "std": 0.5},
    {"name": "blood", "kind": "categorical", "levels": ["A", "B"]},
]


def tabular_model(columns=COLUMNS, latent_dim=2, hidden=(16,)):
    return build(
        likelihood="tabular",
        columns=columns,
        event_shape=[len(columns)],
        latent_dim=latent_dim,
        hidden=list(hidden),
    )


def write(path, text):
    path.write_text(text)
    return path


def test_mixed_likelihood_is_the_exact_sum_of_column_log_probs():
    model = tabular_model()
    head = model.likelihood
    assert head.network_shape == (1 + 1 + 3 + 1 + 2,)
    with torch.no_grad():
        head.log_scale.copy_(torch.tensor([0.3, -0.7]))
    params = torch.randn(
        4, 1, 8, dtype=torch.float32
    )  # slots: age, smoker, city×3, income, blood×2
    x = torch.tensor(
        [[35.0, 1, 2, -2.5, 0], [50, 0, 0, -3.1, 1], [41, 1, 1, -4, 1], [20, 0, 2, -3, 0]]
    )
    p = params[:, 0]
    expected = (
        Normal(40 + 12 * p[:, 0], 12 * math.exp(0.3)).log_prob(x[:, 0])
        + Bernoulli(logits=p[:, 1]).log_prob(x[:, 1])
        + Categorical(logits=p[:, 2:5]).log_prob(x[:, 2].long())
        + Normal(-3 + 0.5 * p[:, 5], 0.5 * math.exp(-0.7)).log_prob(x[:, 3])
        + Categorical(logits=p[:, 6:8]).log_prob(x[:, 4].long())
    )
    px_z = head(params)
    torch.testing.assert_close(px_z.log_prob(x), expected)
    # the density is in the original units: log N((x − m)/s; loc, σ²) − log s
    std_units = Normal(p[:, 0], math.exp(0.3)).log_prob((x[:, 0] - 40) / 12) - math.log(12)
    torch.testing.assert_close(px_z.base_dist.log_prob(x)[:, 0], std_units)
    # standardization is inverted on output: means in original units, codes → labels
    torch.testing.assert_close(px_z.mean[:, 0], 40 + 12 * p[:, 0])
    torch.testing.assert_close(px_z.mean[:, 1], torch.sigmoid(p[:, 1]))
    assert torch.equal(px_z.mode[:, 2], p[:, 2:5].argmax(-1).float())


def test_missing_entries_contribute_nothing_and_keep_gradients_finite():
    model = tabular_model()
    x = torch.tensor([[35.0, 1, 2, -2.5, 0], [50, 0, 0, -3.1, 1]])
    params = torch.randn(2, 1, 8, requires_grad=True)
    full = model.likelihood(params).base_dist.log_prob(x)  # (B, C) per column
    holes = x.clone()
    holes[0, 0] = holes[0, 2] = holes[1, 1] = holes[1, 4] = float("nan")
    lp = model.likelihood(params).log_prob(holes)
    keep = ~torch.isnan(holes)
    torch.testing.assert_close(lp, (full * keep).sum(-1))
    lp.sum().backward()
    assert torch.isfinite(params.grad).all()
    # the model's bound with missing values: finite, and all-missing rows cost exactly KL only
    allmiss = torch.full((3, 5), float("nan"))
    res = vaekit.elbo(model, allmiss)
    assert torch.equal(res.log_px_z, torch.zeros(3))


def test_encoder_input_standardizes_and_one_hot_encodes():
    model = tabular_model()
    x = torch.tensor([[52.0, 1, 1, -2.0, float("nan")], [float("nan"), float("nan"), 2, -3, 1]])
    got = model.likelihood.encoder_input(x)
    expected = torch.tensor(
        [[1.0, 1, 0, 1, 0, 2.0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 1]],
    )
    torch.testing.assert_close(got, expected)


def test_support_errors_name_the_column():
    model = tabular_model()
    with pytest.raises(SupportError, match="smoker"):
        model.check(torch.tensor([[1.0, 0.5, 0, 0, 0]]))
    with pytest.raises(SupportError, match="city"):
        model.check(torch.tensor([[1.0, 1, 3, 0, 0]]))
    with pytest.raises(SupportError, match="inf"):
        model.check(torch.tensor([[float("inf"), 1, 0, 0, 0]]))


CSV = """age,smoker,city,score,id,label
34,yes,Paris,1.5,u1,0
,no,Lyon,2.5,u2,0
51,NA,Paris,?,u3,1
29,no,Nice,0.5,u4,0
"""


def test_schema_inference_overrides_and_round_trip(tmp_path):
    cols = read_table(write(tmp_path / "t.csv", CSV))
    schema = TabularSchema.infer(cols, label="label", drop=["id"])
    kinds = {c.name: (c.kind, c.levels) for c in schema.columns}
    assert kinds == {
        "age": ("numeric", []),
        "smoker": ("binary", ["no", "yes"]),
        "city": ("categorical", ["Lyon", "Nice", "Paris"]),
        "score": ("numeric", []),
    }
    x, y = schema.encode(cols)
    nan = float("nan")
    expected = torch.tensor([[34, 1, 2, 1.5], [nan, 0, 0, 2.5], [51, nan, 2, nan], [29, 0, 1, 0.5]])
    torch.testing.assert_close(x, expected, equal_nan=True)
    assert y.tolist() == [0, 0, 1, 0]
    back = schema.decode(x)
    assert back["city"] == ["Paris", "Lyon", "Paris", "Nice"]
    assert back["smoker"] == ["yes", "no", None, "no"] and back["age"][1] is None
    # overrides: age as categorical, smoker kept binary explicitly
    s2 = TabularSchema.infer(cols, types={"age": "categorical"}, label="label", drop=["id"])
    assert s2.columns[0].kind == "categorical" and s2.columns[0].levels == ["29", "34", "51"]
    schema.fit(x)
    assert schema.columns[0].mean == pytest.approx(38.0)  # of the observed 34, 51, 29
    assert TabularSchema.from_dict(schema.to_dict()) == schema


def test_dataframe_ndarray_and_dict_inputs_agree():
    pd = pytest.importorskip("pandas")
    data = {"a": [1.0, 2.5, np.nan, 4.0], "b": ["x", "y", "x", None], "c": [0, 1, 1, 0]}
    x_dict, _ = TabularSchema.infer(data).encode(data)
    x_df, _ = TabularSchema.infer(pd.DataFrame(data)).encode(pd.DataFrame(data))
    torch.testing.assert_close(x_dict, x_df, equal_nan=True)
    arr = np.array([[1.0, 0.2], [2.0, 0.1], [3.0, 0.7]])
    schema = TabularSchema.infer(arr)
    assert [c.name for c in schema.columns] == ["x0", "x1"]
    torch.testing.assert_close(schema.encode(arr)[0], torch.tensor(arr, dtype=torch.float32))


def test_csv_edge_cases_give_clear_errors(tmp_path):
    with pytest.raises(DataFormatError, match="empty"):
        read_table(write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataFormatError, match="no data rows"):
        read_table(write(tmp_path / "header.csv", "a,b\n"))
    with pytest.raises(DataFormatError, match="line 3: 1 fields"):
        read_table(write(tmp_path / "ragged.csv", "a,b\n1,2\n3\n"))
    # a mostly numeric column with one text cell: an error naming column, row and value
    rows = "v\n" + "\n".join(str(i) for i in range(30)) + "\nabc\n"
    with pytest.raises(DataFormatError, match=r"'v' looks numeric but row 31 holds 'abc'"):
        TabularSchema.infer(read_table(write(tmp_path / "bad.csv", rows)))
    with pytest.raises(DataFormatError, match="no values"):
        TabularSchema.infer({"a": ["", "NA"], "b": [1, 2]})
    with pytest.raises(DataFormatError, match="distinct text values"):
        TabularSchema.infer({"id": [f"u{i}" for i in range(200)]})


def test_scoring_time_surprises_are_documented_not_crashes(tmp_path, caplog):
    schema = TabularSchema.infer(
        read_table(write(tmp_path / "t.csv", CSV)), label="label", drop=["id"]
    )
    new = {
        "age": ["40", "x"],
        "smoker": ["yes", "no"],
        "city": ["Rome", "Nice"],
        "score": ["1", "2"],
    }
    with pytest.raises(DataFormatError, match=r"'age' is numeric but row 2 holds 'x'"):
        schema.encode(new)
    new["age"] = ["40", "41"]
    x, y = schema.encode(new)  # unseen category → missing, with a warning
    assert math.isnan(x[0, 2]) and x[1, 2] == 1 and y is None
    assert "Rome" in caplog.text
    with pytest.raises(DataFormatError, match="'Rome' is not one of the levels"):
        schema.encode(new, unseen="error")
    with pytest.raises(DataFormatError, match=r"lacks column\(s\) \['score'\]"):
        schema.encode({k: v for k, v in new.items() if k != "score"})


def test_csv_spec_trains_and_rebuilds_from_config_alone(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    a = rng.normal(10, 3, n)
    lines = ["a,b,kind,flag"] + [
        f"{a[i]:.3f},{'' if i % 7 == 0 else f'{2 * a[i] + rng.normal(0, 0.1):.3f}'},"
        f"{'xyz'[i % 3]},{'TF'[int(a[i] > 10)]}"
        for i in range(n)
    ]
    path = write(tmp_path / "data.csv", "\n".join(lines) + "\n")
    ds = load_dataset(f"csv:{path}?test=0.25&seed=3")
    assert ds.train.shape == (300, 4) and ds.test.shape == (100, 4)
    assert sorted(ds.schema["train_rows"] + ds.schema["test_rows"]) == list(range(n))
    cfg = vaekit.load_config(
        None,
        {
            "data.dataset": f"csv:{path}?test=0.25&seed=3",
            "model.hidden": [32],
            "model.latent_dim": 2,
            "train.epochs": 40,
            "train.batch_size": 50,
            "train.lr": 3e-3,
            "train.images": False,
        },
    )
    run = vaekit.train(cfg, tmp_path / "run", log=lambda *a: None)
    model = vaekit.load(run)  # rebuilt from config.json alone
    assert model.likelihood.columns[0].mean == pytest.approx(float(ds.train[:, 0].mean()), rel=1e-5)
    # imputation from the posterior: b ≈ 2a is recovered far better than by its mean
    x = ds.test.clone()
    truth = x[:, 1].clone()
    seen = ~torch.isnan(truth)
    x[:, 1] = float("nan")
    filled = impute(model, x, k=200)
    assert torch.equal(filled[:, [0, 2, 3]], x[:, [0, 2, 3]])
    err = (filled[seen, 1] - truth[seen]).abs().mean()
    baseline = (truth[seen] - ds.train[:, 1].nanmean()).abs().mean()
    assert err < 0.5 * baseline


def test_mat_npz_and_odds_specs(tmp_path):
    ds = load_dataset("odds:thyroid?test=0.5")
    assert ds.train.shape[1] == 6 and ds.train_labels is not None
    assert int(ds.train_labels.sum() + ds.test_labels.sum()) == 93
    assert ds.schema["label"] == "y"
    np.savez(tmp_path / "t.npz", x=np.arange(20.0).reshape(10, 2), y=np.arange(10) % 2)
    ds = load_dataset(f"table:{tmp_path / 't.npz'}?test=0.3")
    assert ds.train.shape == (7, 2) and ds.schema["columns"][1]["kind"] == "numeric"
    with pytest.raises(DataFormatError, match="expected an array X"):
        np.savez(tmp_path / "bad.npz", z=np.zeros(3))
        load_dataset(f"table:{tmp_path / 'bad.npz'}")


def test_class_filters():
    ds = load_dataset("digits?train_classes=0-8")
    assert set(ds.train_labels.tolist()) == set(range(9))
    assert 9 in set(ds.test_labels.tolist())
    ds = load_dataset("digits?classes=1,7")
    assert set(ds.test_labels.tolist()) == {1, 7} == set(ds.train_labels.tolist())
    with pytest.raises(ValueError, match="bad class list"):
        load_dataset("digits?classes=a")


# ---- the Yeo-Johnson transform of numeric columns ------------------------------------------------


def test_yeo_johnson_round_trips_and_its_log_slope_is_the_derivative():
    z = torch.linspace(-50, 50, 2001, dtype=torch.float64)
    for lam in (0.0, 1e-9, 0.3, 1.0, 1.7, 2.0 - 1e-9, 2.0):
        lam_t = torch.tensor(lam, dtype=torch.float64)
        t = yeo_johnson(z, lam_t)
        torch.testing.assert_close(yeo_johnson_inverse(t, lam_t), z, rtol=1e-10, atol=1e-10)
        assert torch.all(t[1:] > t[:-1])  # strictly increasing: an invertible map of ℝ
        zz = z.clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(yeo_johnson(zz, lam_t).sum(), zz)
        torch.testing.assert_close(yeo_johnson_log_slope(z, lam_t), slope.log())
    torch.testing.assert_close(yeo_johnson(z, torch.tensor(1.0, dtype=torch.float64)), z)
    # any real t has a preimage for λ in [0, 2]: the inverse is never nan (only overflows)
    t = torch.tensor([-1e3, -30.0, 0.0, 30.0, 1e3], dtype=torch.float64)
    for lam in (0.0, 1.0, 2.0):
        back = yeo_johnson_inverse(t, torch.tensor(lam).double())
        assert not back.isnan().any() and torch.isfinite(back[1:4]).all()


def test_robust_power_fit_ignores_outliers_and_stays_in_range():
    rng = np.random.default_rng(0)
    clean = rng.lognormal(0.0, 0.8, 2000)
    dirty = np.r_[clean, rng.uniform(200, 400, 60)]  # 3% gross outliers in the right tail
    c0, r0, lam0 = fit_yeo_johnson(clean)
    c1, r1, lam1 = fit_yeo_johnson(dirty)
    assert 0.0 <= lam1 <= 2.0 and abs(lam1 - lam0) < 0.1
    assert c1 == pytest.approx(c0, rel=0.05) and r1 == pytest.approx(r0, rel=0.1)
    t = yeo_johnson(torch.from_numpy((clean - c0) / r0), torch.tensor(lam0).double()).numpy()
    skew = lambda v: float(((v - v.mean()) ** 3).mean() / v.std() ** 3)  # noqa: E731
    assert abs(skew(t)) < 0.3 < skew(clean)
    assert fit_yeo_johnson(np.full(10, 3.0)) == (0.0, 1.0, 1.0)  # constant: identity


def test_transformed_column_density_is_in_original_units():
    """The transformed Gaussian is a density of x itself: it integrates to 1 over x, its median
    is T⁻¹(loc), and the schema (with λ, centre, spread) survives to_dict / from_dict."""
    rng = np.random.default_rng(1)
    x = rng.lognormal(1.0, 0.7, 500)
    ds = table_dataset({"v": x, "w": rng.normal(size=500)}, transform="yeo-johnson", seed=0)
    cols = ds.schema["columns"]
    assert 0 <= cols[0]["power"] < 0.8 and cols[0]["spread"] > 0  # a log-like transform
    assert TabularSchema.from_dict(ds.schema).to_dict()["columns"] == cols
    model = tabular_model(columns=cols, latent_dim=1, hidden=())
    head = model.likelihood
    grid = torch.linspace(-20, 200, 400_001)
    params = torch.tensor([0.3, -0.2]).expand(len(grid), 1, 2)
    with torch.no_grad():
        px = head.dist(params)
        lp = px.base_dist.log_prob(torch.stack([grid, torch.zeros_like(grid)], -1))[:, 0]
    mass = torch.trapezoid(lp.double().exp(), grid.double())
    assert float(mass) == pytest.approx(1.0, abs=1e-3)
    median = float(px.base_dist.mean[0, 0])
    below = torch.trapezoid(lp[grid <= median].double().exp(), grid[grid <= median].double())
    assert float(below) == pytest.approx(0.5, abs=1e-3)
    draws = head.dist(params[:1]).base_dist.sample((2000,))[:, 0, 0]
    assert float((draws <= median).double().mean()) == pytest.approx(0.5, abs=0.05)
    # "none" keeps the identity, and the old schema without the fields still loads
    plain = table_dataset({"v": x}, seed=0).schema["columns"][0]
    assert (plain["power"], plain["center"], plain["spread"]) == (1.0, 0.0, 1.0)
    legacy = {k: plain[k] for k in ("name", "kind", "levels", "mean", "std")}
    assert TabularSchema.from_dict({"columns": [legacy]}).columns[0].power == 1.0
    with pytest.raises(ValueError, match="transform must be one of"):
        table_dataset({"v": x}, transform="box-cox")


def test_imputation_with_a_transform_returns_original_units(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.lognormal(0.0, 0.6, 600)
    b = a * np.exp(rng.normal(0, 0.05, 600))  # b ≈ a, both skewed and positive
    ds = table_dataset({"a": a, "b": b}, transform="yeo-johnson", test=0.2, seed=0)
    cfg = vaekit.load_config(
        None,
        {
            "model.hidden": [],
            "model.latent_dim": 1,
            "train.epochs": 200,
            "train.batch_size": 64,
            "train.lr": 1e-2,
            "train.images": False,
        },
    )
    model = vaekit.load(vaekit.train(cfg, tmp_path / "run", dataset=ds, log=lambda *a: None))
    assert model.likelihood.columns[1].power == ds.schema["columns"][1]["power"] != 1
    x = ds.test.clone()
    truth = x[:, 1].clone()
    x[:, 1] = float("nan")
    filled = impute(model, x, k=200)
    assert torch.equal(filled[:, 0], x[:, 0]) and bool((filled[:, 1] > 0).all())
    err = (filled[:, 1] - truth).abs().mean()
    assert err < 0.6 * (truth - ds.train[:, 1].mean()).abs().mean()  # about 0.5 here
