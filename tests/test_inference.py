"""Per-example (non-/semi-amortized) inference on a linear-Gaussian model, whose exact posterior is
in the Gaussian family: refinement must close the amortization gap and reach log p(x)."""

import json

import pytest
import torch
from test_estimators import exact_elbo, perturbed_ppca

from linear_gaussian import exact_log_px, make_ppca, sample_x
from vaekit.cli import main
from vaekit.inference import amortization_gap, elbo_of, refine


@pytest.mark.parametrize("init", ["encoder", "prior"])
def test_refinement_closes_the_amortization_gap(init):
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(16, w, b, sigma)
    exact = exact_log_px(x, w, b, sigma)
    with torch.no_grad():
        amortized = exact_elbo(model, x)
    qz_x = refine(model, x, steps=300, lr=0.05, n_samples=16, init=init)
    with torch.no_grad():
        refined = exact_elbo(model, x, qz_x)
    assert (exact - amortized).mean() > 1.0  # a real amortization gap to close
    assert (refined <= exact + 1e-9).all()  # still a bound
    assert (exact - refined).max() < 0.02 * (exact - amortized).mean()  # closed per example
    assert all(p.grad is None for p in model.parameters())  # the model was left alone


def test_zero_steps_from_the_encoder_is_the_encoder():
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(4, w, b, sigma)
    qz_x = refine(model, x, steps=0)
    q0 = model.encode(x)
    torch.testing.assert_close(qz_x.base_dist.loc, q0.base_dist.loc)
    torch.testing.assert_close(qz_x.base_dist.scale, q0.base_dist.scale)


def test_amortization_gap_report_is_consistent():
    model, w, b, sigma = perturbed_ppca()
    x = sample_x(24, w, b, sigma)
    rep = amortization_gap(model, x, steps=200, lr=0.05, batch_size=10, eval_samples=2000)
    with torch.no_grad():
        exact_gap = float((exact_log_px(x, w, b, sigma) - exact_elbo(model, x)).mean())
    assert rep["amortization_gap"] == pytest.approx(rep["elbo_refined"] - rep["elbo_amortized"])
    assert rep["amortization_gap"] == pytest.approx(exact_gap, abs=0.1)
    torch.manual_seed(0)
    assert float(elbo_of(model, x, n_samples=2000).mean()) == pytest.approx(
        rep["elbo_amortized"], abs=0.1
    )


def test_bad_refinement_settings_get_a_clear_error():
    model, w, b, sigma = make_ppca()
    x = sample_x(2, w, b, sigma)
    with pytest.raises(ValueError, match="init"):
        refine(model, x, init="zeros")
    with pytest.raises(ValueError, match="non-negative"):
        refine(model, x, steps=-1)


# ---- through the command line, on a small digits run -------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("inference") / "digits"
    args = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "4"]
    args += ["--epochs", "3", "--no-images", "--out", str(out)]
    assert main(args) == 0
    return out


def test_gradvar_prints_a_table_and_writes_a_plot(run, capsys):
    args = ["gradvar", str(run), "--estimators", "reparam,score,dreg", "--k", "1,10"]
    assert main([*args, "--samples", "20", "--batches", "1", "--batch-size", "16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(r["estimator"], r["k"]): r for r in result["rows"]}
    assert set(rows) == {("reparam", 1), ("score", 1), ("dreg", 1), ("dreg", 10)}
    assert result["variance_ratio_score_over_reparam"] > 1
    assert (run / "gradvar.png").stat().st_size > 0
    assert json.loads((run / "gradvar.json").read_text())["rows"] == result["rows"]


def test_gradvar_rejects_an_unknown_estimator(run):
    with pytest.raises(SystemExit):
        main(["gradvar", str(run), "--estimators", "reparam,magic"])


def test_evaluate_reports_gaps_and_ais(run, capsys):
    args = ["evaluate", str(run), "--limit", "20", "--iw-samples", "200", "--json"]
    args += ["--refine-steps", "50", "--ais", "--ais-steps", "50", "--ais-chains", "4"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["amortization_gap"] == pytest.approx(r["elbo_refined"] - r["elbo_amortized"])
    assert r["amortization_gap"] > 0  # refining from the encoder's output only helps
    # Both gaps are paired with the very IWAE values behind the printed nll, example by example.
    assert r["approximation_gap"] == pytest.approx(-r["nll"] - r["elbo_refined"], abs=1e-9)
    assert 0 < r["approximation_gap_stderr"] < 1
    assert r["ais_minus_iwae"] == pytest.approx(r["nll"] - r["ais_nll"], abs=1e-9)
    assert abs(r["ais_minus_iwae"]) < 3 * r["ais_minus_iwae_stderr"] + 0.5
    assert r["ais_nll"] < -r["elbo_amortized"]  # log p(x) estimates sit above the ELBO
    saved = json.loads((run / "eval-test-k200.json").read_text())
    assert saved["amortization_gap"] == r["amortization_gap"]
