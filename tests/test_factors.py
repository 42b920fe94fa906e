"""The ``shapes`` dataset and the ``factors`` protocol: the registry entry, factors that follow
every row selection, ``vaekit disentangle`` on a trained run, and the report's section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vaekit
from vaekit.cli import main
from vaekit.data import Dataset
from vaekit.data.shapes import FactorDataset, Shapes


def test_shapes_spec_loads_labels_factors_and_implied_defaults():
    ds = vaekit.load_dataset("shapes?n=200&test=50&seed=3")
    f_train, f_test = ds.factors
    assert ds.train.shape == (200, 1, 64, 64) and ds.test.shape == (50, 1, 64, 64)
    assert f_train.dtype == torch.int64 and f_train.shape == (200, 6) and f_test.shape == (50, 6)
    assert ds.factor_names == Shapes().factor_names
    assert torch.equal(ds.train_labels, f_train[:, 1]) and ds.n_classes == 3  # the shape
    assert set(ds.train.unique().tolist()) <= {0, 255}
    assert ds.implies == {
        "model.kind": "vae",
        "model.arch": "conv",
        "model.likelihood": "bernoulli",
    }
    assert isinstance(ds.factor_source, FactorDataset)
    # the images are the factors' renderings; the splits share no combination
    assert torch.equal(ds.test, torch.from_numpy(ds.factor_source.render(f_test.numpy())))
    gen = Shapes()
    assert not set(gen.index(f_train.numpy())) & set(gen.index(f_test.numpy()))
    again = vaekit.load_dataset("shapes?n=200&test=50&seed=3")
    assert torch.equal(again.train, ds.train) and torch.equal(again.factors[0], f_train)


def test_colour_variant_and_bad_options():
    ds = vaekit.load_dataset("shapes?color=1&n=30&test=10")
    assert ds.train.shape == (30, 3, 64, 64) and ds.factors[0][:, 0].max() > 0
    for spec in ("shapes?n=0", "shapes?color=maybe", "shapes?n=ten", "shapes?size=3"):
        with pytest.raises(ValueError):
            vaekit.load_dataset(spec)


def test_factors_follow_class_filters_and_limits():
    ds = vaekit.load_dataset("shapes?n=300&test=60&classes=1-2", train_limit=50)
    assert len(ds.train) == len(ds.factors[0]) == 50
    assert len(ds.test) == len(ds.factors[1])
    for x, y, f in ((ds.train, ds.train_labels, ds.factors[0]), (ds.test, ds.test_labels,
                    ds.factors[1])):  # fmt: skip
        assert torch.equal(y, f[:, 1]) and set(y.tolist()) <= {1, 2}
        assert torch.equal(x, torch.from_numpy(Shapes().render(f.numpy())))


def test_dataset_checks_its_factors():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    kw = dict(name="t", train=x, test=x, train_labels=None, test_labels=None, event_shape=(1, 2, 2))
    Dataset(**kw, factors=(torch.zeros(4, 2, dtype=torch.int64),) * 2)
    with pytest.raises(ValueError, match="int64"):
        Dataset(**kw, factors=(torch.zeros(4, 2), torch.zeros(4, 2)))
    with pytest.raises(ValueError, match="int64"):
        Dataset(**kw, factors=(torch.zeros(3, 2, dtype=torch.int64),) * 2)


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "run"
    argv = ["train", "--dataset", "shapes?n=256&test=48", "--latent-dim", "4", "--hidden", "32"]
    argv += ["--channels", "8,8", "--epochs", "1", "--batch-size", "32", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_disentangle_prints_metrics_and_writes_a_grid_per_factor(shapes_run, capsys):
    capsys.readouterr()
    argv = ["disentangle", str(shapes_run), "--n", "300", "--n-test", "100"]
    assert main([*argv, "--votes", "20", "--eval-votes", "10", "--top", "2"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("mig", "factor_vae", "dci_disentanglement", "dci_completeness", "sap"):
        assert 0.0 <= res[key] <= 1.0, key
    varying = ["shape", "scale", "orientation", "posX", "posY"]  # colour is constant
    assert res["factors"] == varying
    for name in varying:
        assert len(res["dims_by_factor"][name]) == 2
        mi = np.array(res["mutual_info"][name])
        assert mi[res["dims_by_factor"][name][0]] == pytest.approx(mi.max(), abs=1e-4)
        png = shapes_run / "disentangle" / f"traverse-{name}.png"
        assert png.is_file() and res["pictures"][name] == str(png)
    assert (
        json.loads((shapes_run / "disentangle" / "metrics.json").read_text())["mig"] == res["mig"]
    )


def test_report_has_a_disentanglement_section_for_factor_data(shapes_run):
    page = (shapes_run / "report.html").read_text()  # written by training
    assert 'id="disentanglement"' in page and "mutual information of codes and factors" in page
    assert main(["report", str(shapes_run), "--limit", "64"]) == 0  # after disentangle
    page = (shapes_run / "report.html").read_text()
    assert "vaekit disentangle</h3>" in page and "posX: its top dimensions" in page


def test_disentangle_refuses_a_dataset_without_factors(tmp_path, capsys):
    out = tmp_path / "digits"
    argv = ["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2"]
    assert main([*argv, "--max-steps", "2", "--no-images", "--out", str(out)]) == 0
    assert main(["disentangle", str(out)]) == 2
    assert "no ground-truth factors" in capsys.readouterr().err
    page_free = tmp_path / "r.html"
    assert main(["report", str(out), "--limit", "20", "-o", str(page_free)]) == 0
    assert 'id="disentanglement"' not in page_free.read_text()
