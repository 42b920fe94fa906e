"""The explorer: its JSON API (validation, exact outputs) and the real page driven in chromium."""

import base64
import io
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from small_runs import digits_run, launch_chromium, split
from vaekit import images
from vaekit.explore import MAX_BODY_BYTES, create_app
from vaekit.latent import decode_mean, encode


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return digits_run(tmp_path_factory)


@pytest.fixture(scope="module")
def client(run):
    model, x, labels = split(run)
    return TestClient(create_app(model, x[:200], labels[:200], name="digits"))


def _pixels(render: dict) -> np.ndarray:
    uri = render["image"]
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_info_orders_dims_by_kl(client):
    info = client.get("/api/info").json()
    assert info["latent_dim"] == 8 and info["n_items"] == 200 and info["is_image"]
    kls = [d["kl"] for d in info["dims"]]
    assert kls == sorted(kls, reverse=True)
    assert info["sliders"] == [d["dim"] for d in info["dims"]]
    assert info["labels"] == list(range(10))


def test_decode_returns_the_decoded_mean_as_a_png(client, run):
    model, _, _ = split(run)
    z = [0.5, -1.0, 0.0, 2.0, 0.0, 0.0, 1.0, -0.5]
    r = client.post("/api/decode", json={"z": z})
    assert r.status_code == 200
    expected = images.grid(images._to_unit(model, decode_mean(model, torch.tensor([z]))), pad=0)
    np.testing.assert_array_equal(_pixels(r.json()["output"]), expected)


def test_item_and_interpolation_endpoints_agree(client, run):
    model, x, _ = split(run)
    item = client.get("/api/item/7").json()
    torch.testing.assert_close(torch.tensor(item["z"]), encode(model, x[7:8])[0], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(_pixels(item["input"])[..., 0], (x[7, 0] * 255).byte().numpy())
    frames = client.post("/api/interpolate", json={"a": 3, "b": 7, "steps": 5}).json()["frames"]
    assert len(frames) == 5
    diff = np.abs(_pixels(frames[-1]).astype(int) - _pixels(item["reconstruction"]))
    assert diff.max() <= 1  # the path ends at item 7's reconstruction (up to rounding)


def test_samples_at_temperature_zero_are_all_the_decoded_prior_mean(client):
    r = client.post("/api/sample", json={"n": 4, "temperature": 0.0}).json()["samples"]
    first = _pixels(r[0])
    assert all(np.array_equal(first, _pixels(s)) for s in r)
    hot = client.post("/api/sample", json={"n": 4, "temperature": 1.0, "seed": 1}).json()
    assert not np.array_equal(_pixels(hot["samples"][0]), _pixels(hot["samples"][1]))


def test_attribute_from_labels_or_indices(client):
    body = {"item": 0, "alpha": 0.0, "positive": {"labels": [7]}}
    plain = client.post("/api/attribute", json=body).json()
    assert plain["n_positive"] + plain["n_negative"] == 200
    moved = client.post("/api/attribute", json={**body, "alpha": 2.0}).json()
    assert not np.array_equal(_pixels(plain["output"]), _pixels(moved["output"]))
    by_index = {"item": 1, "alpha": 1.0, "positive": {"indices": [2, 5]}, "negative": None}
    assert client.post("/api/attribute", json=by_index).json()["n_positive"] == 2


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/api/decode", {"z": [0.0] * 7}, "at least 8"),
        ("/api/decode", {"z": [0.0] * 9}, "at most 8"),
        ("/api/decode", {"z": [0.0] * 7 + [1e3]}, "less than or equal to 10"),
        ("/api/decode", {"z": [0.0] * 7 + ["nan"]}, "finite"),
        ("/api/decode", {"z": "zeros"}, "valid list"),
        ("/api/decode", {"z": [0.0] * 8, "extra": 1}, "Extra inputs"),
        ("/api/decode", {}, "Field required"),
        ("/api/interpolate", {"a": 0, "b": 200}, "less than 200"),
        ("/api/interpolate", {"a": -1, "b": 2}, "greater than or equal to 0"),
        ("/api/interpolate", {"a": 0, "b": 1, "steps": 1000}, "less than or equal to 64"),
        ("/api/interpolate", {"a": 0, "b": 1, "path": "warp"}, "'linear' or 'slerp'"),
        ("/api/sample", {"temperature": 50}, "less than or equal to 3"),
        ("/api/sample", {"n": 0}, "greater than or equal to 1"),
        ("/api/attribute", {"item": 0, "alpha": 1, "positive": {"labels": [42]}}, "empty"),
        ("/api/attribute", {"item": 0, "alpha": 1, "positive": {"indices": [999]}}, "outside"),
        ("/api/attribute", {"item": 0, "alpha": 1, "positive": {}}, "exactly one"),
        ("/api/attribute", {"item": 0, "alpha": 99, "positive": {"labels": [1]}}, "less than"),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_message(client, path, body, message):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]
    assert client.get("/api/info").status_code == 200  # and the server carries on


def test_non_json_huge_and_unknown_requests(client):
    r = client.post(
        "/api/decode", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    r = client.post("/api/decode", content=b"[" + b"0," * MAX_BODY_BYTES + b"0]")
    assert r.status_code == 413
    assert client.get("/api/item/5000").status_code == 404
    assert "outside 0..199" in client.get("/api/item/5000").json()["error"]
    assert client.get("/api/item/abc").status_code == 422
    assert client.get("/api/map?method=umap").status_code == 422


def test_each_malformed_request_class_gets_a_4xx_never_a_5xx():
    """The classes benchmarks/explore_load.py sends under load, once each, on an untrained model:
    the exact status and an ``{"error": ...}`` body (404 and 405 included)."""
    from builders import build

    model = build(hidden=[8], latent_dim=3, event_shape=[1, 4, 4])
    app = TestClient(
        create_app(model, torch.rand(6, 1, 4, 4).round()), raise_server_exceptions=False
    )
    json_type = {"content-type": "application/json"}
    big = MAX_BODY_BYTES + 1

    def chunked():  # no Content-Length: the limit must hold on what arrives
        for _ in range(4):
            yield b"0" * (big // 4 + 1)

    bad_length = {"content-length": "x"}

    def raw(body: bytes) -> dict:
        return {"content": body, "headers": json_type}

    cases = [
        ("bad JSON", "POST", "/api/decode", raw(b'{"z": [0,'), 422),
        ("not UTF-8", "POST", "/api/decode", raw(b"\xff\xfe"), 422),
        ("wrong type", "POST", "/api/decode", {"json": {"z": "zeros"}}, 422),
        ("wrong length", "POST", "/api/decode", {"json": {"z": [0.0, 0.0]}}, 422),
        ("NaN", "POST", "/api/decode", raw(b'{"z": [NaN, 0, 0]}'), 422),
        ("huge float", "POST", "/api/decode", raw(b'{"z": [1e400, 0, 0]}'), 422),
        ("huge int", "POST", "/api/sample", raw(b'{"n": ' + b"9" * 5000 + b"}"), 400),
        ("deep nesting", "POST", "/api/decode", raw(b"[" * 50_000 + b"]" * 50_000), 400),
        ("unknown route", "GET", "/api/nothing", {}, 404),
        ("wrong method", "GET", "/api/decode", {}, 405),
        ("oversized", "POST", "/api/decode", raw(b"0" * big), 413),
        ("oversized chunked", "POST", "/api/decode", {"content": chunked()}, 413),
        ("bad length", "POST", "/api/decode", {"content": b"{}", "headers": bad_length}, 400),
    ]  # fmt: skip
    for what, method, path, kwargs, status in cases:
        r = app.request(method, path, **kwargs)
        assert r.status_code == status, (what, r.status_code, r.text[:200])
        assert r.json()["error"], what
    assert app.post("/api/decode", json={"z": [0.0, 0.0, 0.0]}).status_code == 200  # still serving


def test_vectors_are_served_as_values(tmp_path):
    from builders import build

    model = build(hidden=[8], latent_dim=2, likelihood="gaussian", event_shape=[6])
    app = TestClient(create_app(model, torch.randn(30, 6)))
    assert app.get("/api/info").json()["is_image"] is False
    out = app.post("/api/decode", json={"z": [0.1, 0.2]}).json()["output"]
    expected = decode_mean(model, torch.tensor([[0.1, 0.2]]))[0]
    np.testing.assert_allclose(out["values"], expected.numpy(), atol=1e-5)
    assert app.get("/api/item/3").json()["label"] is None


# ---- the real page in a real browser -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run):
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "vaekit", "explore", str(run), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--limit", "1000"], env=env, stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "vaekit explore exited early"
            try:
                if httpx.get(f"{url}/api/info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "vaekit explore did not start"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_explorer_page_in_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server)
            expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=30_000)
            decoded = page.locator("#decoded img")
            before = decoded.get_attribute("src")
            # Move the most-used dimension's slider: the picture changes.
            page.locator("#slider-0").fill("2.5")
            expect(decoded).not_to_have_attribute("src", before, timeout=10_000)
            assert page.locator("#slider-0-value").inner_text() == "2.50"
            # Interpolate between two items and scrub to the end.
            page.fill("#interp-a", "0")
            page.fill("#interp-b", "5")
            page.click("#interp-run")
            expect(page.locator("#interp-strip img")).to_have_count(10, timeout=10_000)
            page.locator("#interp-t").fill("9")
            last = page.locator("#interp-strip img").nth(9).get_attribute("src")
            expect(page.locator("#interp-frame img")).to_have_attribute("src", last)
            # Click the latent map: the item and its reconstruction appear.
            page.locator("#map").click(position={"x": 160, "y": 160})
            expect(page.locator("#item-recon img")).to_have_count(1, timeout=10_000)
            # Samples and an attribute vector.
            page.click("#sample-run")
            expect(page.locator("#samples img")).to_have_count(16, timeout=10_000)
            page.locator("#attr-alpha").fill("1.5")
            expect(page.locator("#attr-out img")).to_have_count(1, timeout=10_000)
            page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
            # Malformed requests from the page: the server's message is shown, nothing breaks.
            page.fill("#interp-b", "99999")
            page.click("#interp-run")
            expect(page.locator("#error")).to_contain_text("422", timeout=10_000)
            expect(page.locator("#error")).to_contain_text("less than 297")  # the 297 test digits
            page.fill("#code-text", "1, 2, 3")
            page.click("#code-decode")
            expect(page.locator("#error")).to_contain_text("at least 8", timeout=10_000)
            page.fill("#code-text", ", ".join(["0"] * 7 + ["nan"]))
            page.click("#code-decode")
            expect(page.locator("#error")).to_contain_text("finite", timeout=10_000)
            page.fill("#code-text", ", ".join(["0.5"] * 8))
            page.click("#code-decode")
            expect(page.locator("#code-out img")).to_have_count(1, timeout=10_000)
            expect(page.locator("#error")).to_be_hidden()
        finally:
            browser.close()
    shot = Image.open(tmp_path / "explorer.png")
    assert shot.size[0] == 1280 and shot.size[1] > 800
    assert np.asarray(shot.convert("L")).std() > 10  # not a blank page
