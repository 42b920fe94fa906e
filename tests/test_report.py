"""The HTML report: every section, all embedded, loads offline; training survives its failure."""

import base64
import importlib
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from builders import build
from small_runs import digits_run, launch_chromium, split
from vaekit import report
from vaekit.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return digits_run(tmp_path_factory)


def _images(page: str) -> list[Image.Image]:
    uris = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert uris and all(u.startswith("data:image/png;base64,") for u in uris)
    return [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))) for u in uris]


def test_train_writes_a_report_with_every_section(run):
    page = (run / "report.html").read_text()
    for sid, title in report.SECTIONS:
        section = re.search(f'<section id="{sid}">(.*?)</section>', page, re.S)
        assert section, sid
        assert title in section.group(1)
        assert "not available" not in section.group(1), sid
        if sid not in ("summary", "evaluation"):
            assert "<img" in section.group(1), sid  # every other section has a picture
    pics = _images(page)
    assert len(pics) >= 9 and all(p.format == "PNG" and p.size[0] > 50 for p in pics)
    assert "test_elbo" in page and "active_units" in page


def test_report_has_no_external_reference_and_no_script(run):
    page = (run / "report.html").read_text()
    assert "<script" not in page.lower()
    refs = re.findall(r'(?:src|href)="([^"]*)"', page) + re.findall(r"url\(([^)]*)\)", page)
    assert refs
    assert all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs]


def test_report_loads_offline_in_a_browser(run):
    from playwright.sync_api import sync_playwright

    requests = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            context = browser.new_context(offline=True)
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto((run / "report.html").as_uri())
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
            ids = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
        finally:
            browser.close()
    assert ids == [sid for sid, _ in report.SECTIONS]
    assert len(widths) >= 9 and min(widths) > 0  # every embedded image decoded
    assert [u for u in requests if not u.startswith(("data:", "file:"))] == []


def test_report_command_adds_an_evaluation_and_a_tsne_map(run, tmp_path):
    out = tmp_path / "r.html"
    argv = ["report", str(run), "-o", str(out), "--limit", "120", "--map", "tsne"]
    assert main([*argv, "--iw-samples", "5"]) == 0
    page = out.read_text()
    assert "computed now" in page
    assert "TSNE map of 120 posterior means" in page
    assert "nll_stderr" in page


def test_report_on_vectors_shows_curves_numbers_and_map_without_pictures(tmp_path):
    model = build(hidden=[16], latent_dim=3, likelihood="gaussian", event_shape=[5])
    (tmp_path / "config.json").write_text('{"model": {"latent_dim": 3}}')
    (tmp_path / "metrics.jsonl").write_text(
        '{"epoch": 1, "step": 3, "train_bound": -9.0, "train_recon": -8.0, "train_kl": 1.0,'
        ' "test_elbo": -9.5, "test_recon": -8.4, "test_kl": 1.1, "active_units": 2,'
        ' "kl_per_dim": [0.5, 0.6, 0.0]}\n'
    )
    x = torch.randn(50, 5)
    out = report.write_report(tmp_path, model, x, torch.arange(50) % 3)
    page = out.read_text()
    assert page.count("are not images: no pictures") == 4
    assert "-9.5000" in page  # the last test ELBO
    assert len(_images(page)) == 3  # curves, KL per dimension, latent map


def test_a_failing_report_does_not_lose_the_trained_run(tmp_path, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    train_module = importlib.import_module("vaekit.train")
    monkeypatch.setattr(train_module, "write_report", boom)  # what the loop calls
    out = tmp_path / "r"
    argv = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2"]
    assert main([*argv, "--epochs", "1", "--train-limit", "200", "--out", str(out)]) == 0
    assert "report not written (RuntimeError: disk full)" in capsys.readouterr().out
    assert (out / "manifest.json").exists() and not (out / "report.html").exists()
    model, x, _ = split(out)
    assert np.isfinite(vaekit.elbo(model, x[:10]).bound.detach().numpy()).all()
