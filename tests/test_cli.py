"""End to end through the command line, on a small slice of the real MNIST files."""

import json

import pytest
from PIL import Image

from vaekit.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "mnist"
    code = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--train-limit",
            "2000",
            "--test-limit",
            "200",
            "--hidden",
            "64",
            "--latent-dim",
            "8",
            "--epochs",
            "2",
            "--batch-size",
            "100",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_train_writes_pictures_and_resolved_config(run):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["hidden"] == [64] and cfg["data_info"]["event_shape"] == [1, 28, 28]
    assert cfg["data"]["binarize"] == "dynamic" and cfg["train"]["epochs"] == 2
    for name in ("samples.png", "reconstructions.png"):
        assert Image.open(run / name).size[0] > 100
    assert any((run / "tb").iterdir())


def test_evaluate_prints_the_promised_json(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iw-samples", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("elbo", "recon", "kl", "nll", "nll_stderr", "bpd", "active_units", "n"):
        assert key in result, key
    assert result["n"] == 200 and result["k"] == 50
    assert result["elbo"] <= -result["nll"] + 3 * result["nll_stderr"]  # IWAE ≥ ELBO
    assert result["elbo"] == pytest.approx(result["recon"] - result["kl"])
    assert result["bpd"] == pytest.approx(result["nll"] / 784 / 0.6931471805599453)
    assert 0 <= result["active_units"] <= 8


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "-n", "16"],
        ["reconstruct", "-n", "8"],
        ["interpolate", "--from", "0", "--to", "5", "--steps", "7"],
        ["interpolate", "--from", "0", "--to", "5", "--path", "slerp"],
    ],
)
def test_picture_commands_write_pngs(run, tmp_path, argv):
    out = tmp_path / "out.png"
    assert main([argv[0], str(run), *argv[1:], "-o", str(out)]) == 0
    assert Image.open(out).mode == "RGB"


def test_errors_are_one_clear_line(run, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train", "--dataset", "nosuchset", "--out", str(tmp_path / "x")]) == 2
    assert "nosuchset" in capsys.readouterr().err
    assert main(["train", "--out", str(run)]) == 2  # refuses to overwrite a finished run
    assert "already holds a run" in capsys.readouterr().err


def test_demo_trains_evaluates_and_draws_then_reuses_the_run(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--iw-samples", "3"]) == 0
    printed = capsys.readouterr().out
    assert '"nll"' in printed and "interpolation.png" in printed
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "eval-test-k3.json"):
        assert (out / name).is_file(), name
    assert main(["demo", "--out", str(out), "--epochs", "1", "--iw-samples", "3"]) == 0
    assert "already trained" in capsys.readouterr().out
