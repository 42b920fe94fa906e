"""A small trained run shared by the latent, report and explorer tests (trained once per session).

scikit-learn's 8×8 digits, dynamically binarized, MLP VAE with 8 latent dimensions: about 10 s
on one thread; `vaekit train` also writes the run's report.html at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vaekit.checkpoint import load_run
from vaekit.cli import main
from vaekit.data import DataPrep, load_dataset

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def train_digits(out: Path) -> Path:
    argv = ["train", "--dataset", "digits", "--hidden", "128", "--latent-dim", "8"]
    argv += ["--epochs", "20", "--batch-size", "50", "--lr", "3e-3", "--out", str(out)]
    assert main(argv) == 0
    return out


_RUNS: dict[str, Path] = {}


def digits_run(tmp_path_factory) -> Path:
    """The shared digits run, trained on first use in a test session."""
    if "digits" not in _RUNS:
        _RUNS["digits"] = train_digits(tmp_path_factory.mktemp("latent") / "digits")
    return _RUNS["digits"]


def split(run: Path, name: str = "test", seed: int = 0):
    """(model, x, labels) of a run's split, prepared with a fixed seed."""
    model = load_run(run)
    cfg = model.run_config
    ds = load_dataset(cfg.data.dataset)
    raw, labels = (ds.test, ds.test_labels) if name == "test" else (ds.train, ds.train_labels)
    return model, DataPrep(model.likelihood, cfg.data.binarize).fixed(raw, seed), labels


def launch_chromium(playwright):
    """Debian's chromium driven by Playwright (no browser download)."""
    if os.environ.get("VAEKIT_SKIP_BROWSER") == "1":
        pytest.skip("VAEKIT_SKIP_BROWSER=1")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
