"""Tests for vaekit.data: registry, IDX reader, loaders, downloads (never touching the network)."""

from __future__ import annotations

import gzip
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.data import (
    DATASETS,
    DataFormatError,
    DataNotFoundError,
    Dataset,
    download,
    load_dataset,
    resolve_data_root,
)
from vaekit.data.images import MNIST_FILES, MNIST_MIRRORS, read_idx, write_idx

MNIST_NAMES = list(MNIST_FILES)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a URL fails, so no test can download."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def shared_root() -> Path:
    root = os.environ.get("VAEKIT_DATA")
    if not root:
        pytest.skip("VAEKIT_DATA is not set")
    return Path(root)


# --- resolve_data_root, registry, limits -------------------------------------------------------


def test_resolve_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("VAEKIT_DATA")
    assert "vaekit" in str(resolve_data_root())


def test_unknown_dataset_lists_registered_names():
    with pytest.raises(ValueError, match="unknown dataset") as err:
        load_dataset("cifar")
    for name in DATASETS:
        assert name in str(err.value)


def test_bad_options_and_limits(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset("digits?size=3")
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("folder")
    with pytest.raises(ValueError, match=">= 0"):
        load_dataset("digits", train_limit=-1)


def test_dataset_validates_shapes():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="shape"):
        Dataset("x", x, x, None, None, event_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="labels"):
        Dataset("x", x, x, torch.zeros(3, dtype=torch.int64), None, event_shape=(1, 2, 2))


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    arr = (np.arange(60).reshape(3, 4, 5) - 7).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, arr)


def test_idx_truncated_wrong_magic_and_bad_gzip(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.zeros((10, 28, 28), np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx(path)
    path.write_bytes(raw[:6])
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(DataFormatError, match="magic"):
        read_idx(path)
    gz = tmp_path / "a.idx.gz"
    gz.write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(gz)


# --- mnist -------------------------------------------------------------------------------------


def test_mnist_from_shared_data(shared_root):
    ds = load_dataset("mnist", train_limit=1000, test_limit=300, download=False)
    assert ds.name == "mnist" and ds.discrete and ds.event_shape == (1, 28, 28)
    assert ds.train.shape == (1000, 1, 28, 28) and ds.test.shape == (300, 1, 28, 28)
    assert ds.train.dtype == torch.uint8 and ds.train.max() == 255
    for y in (ds.train_labels, ds.test_labels):
        assert y.dtype == torch.int64 and y.min() >= 0 and y.max() == 9
    assert ds.train_labels[:5].tolist() == [5, 0, 4, 1, 9]  # canonical first labels
    full = load_dataset("mnist", shared_root, download=False)
    assert len(full.train) == 60000 and len(full.test) == 10000


def test_mnist_accepts_uncompressed_hand_placed_files(shared_root, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for i, name in enumerate(MNIST_NAMES):
        src = shared_root / "mnist" / f"{name}.gz"
        if i % 2:  # half gzipped, half uncompressed
            shutil.copy(src, folder / f"{name}.gz")
        else:
            (folder / name).write_bytes(gzip.decompress(src.read_bytes()))
    ds = load_dataset("mnist", tmp_path, train_limit=10, test_limit=10, download=False)
    ref = load_dataset("mnist", shared_root, train_limit=10, test_limit=10, download=False)
    assert torch.equal(ds.train, ref.train) and torch.equal(ds.test_labels, ref.test_labels)


def test_mnist_wrong_shape_rejected(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_NAMES:
        write_idx(folder / name, np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(DataFormatError, match="expected uint8 IDX of shape"):
        load_dataset("mnist", tmp_path, download=False)


def test_mnist_missing_without_download(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", tmp_path, download=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for name in MNIST_NAMES:
        assert name in msg
    assert str(tmp_path / "mnist") in msg and "VAEKIT_DATA" in msg and "--data-dir" in msg
    assert not (tmp_path / "mnist").exists()


def test_mnist_offline_download_fails_cleanly(tmp_path):
    with pytest.raises(DataNotFoundError, match="network disabled"):
        load_dataset("mnist", tmp_path)
    assert not (tmp_path / "mnist").exists()  # no partial files, no empty folder


def test_mnist_download_with_wrong_content_rejected(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(url, dest):
        calls.append(url)
        dest.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))

    monkeypatch.setattr(download, "fetch", fake_fetch)
    with pytest.raises(DataNotFoundError, match="checksum mismatch"):
        load_dataset("mnist", tmp_path)
    assert len(calls) == len(MNIST_NAMES) * len(MNIST_MIRRORS)  # every mirror tried
    assert not (tmp_path / "mnist").exists()


def test_mnist_download_verified_and_renamed(tmp_path, monkeypatch, shared_root):
    def fake_fetch(url, dest):  # serve the shared files as if they came from a mirror
        shutil.copy(shared_root / "mnist" / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(download, "fetch", fake_fetch)
    ds = load_dataset("mnist", tmp_path, train_limit=3, test_limit=3)
    assert ds.train.shape == (3, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(
        f"{n}.gz" for n in MNIST_NAMES
    )


# --- digits, olivetti --------------------------------------------------------------------------


def test_digits():
    ds = load_dataset("digits")
    assert ds.train.shape == (1500, 1, 8, 8) and ds.test.shape == (297, 1, 8, 8)
    assert ds.discrete and ds.train.max() == 255 and ds.train.min() == 0
    assert set(ds.train_labels.unique().tolist()) == set(range(10))


def test_olivetti(shared_root):
    ds = load_dataset("olivetti", download=False)
    assert ds.train.shape == (360, 1, 64, 64) and ds.test.shape == (40, 1, 64, 64)
    assert ds.discrete and ds.event_shape == (1, 64, 64)
    assert ds.test_labels.tolist() == list(range(40))
    assert ds.train_labels.min() == 0 and ds.train_labels.max() == 39
    assert torch.bincount(ds.train_labels).tolist() == [9] * 40


def test_olivetti_missing_offline(tmp_path):
    with pytest.raises(DataNotFoundError, match="olivettifaces.mat") as err:
        load_dataset("olivetti", tmp_path)
    assert "figshare" in str(err.value) and "VAEKIT_DATA" in str(err.value)
    assert not (tmp_path / "olivetti").exists()


# --- npz ---------------------------------------------------------------------------------------


def test_npz_uint8_images_train_test(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 5, 6, 3), dtype=np.uint8)  # channels-last
    x_test = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, x_test=x_test, y_train=np.arange(20), y_test=np.arange(4))
    ds = load_dataset(f"npz:{path}")
    assert ds.discrete and ds.event_shape == (3, 5, 6)
    assert torch.equal(ds.train[2], torch.from_numpy(x_train[2].transpose(2, 0, 1)))
    assert ds.test_labels.tolist() == [0, 1, 2, 3]


def test_npz_single_array_split_and_float(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(50, dtype=np.float64).reshape(25, 2), y=np.arange(25) % 3)
    ds = load_dataset(f"npz:{path}")
    assert not ds.discrete and ds.train.dtype == torch.float32 and ds.event_shape == (2,)
    assert len(ds.train) == 23 and len(ds.test) == 2  # last 10% (floor, at least 1)
    assert ds.test[0].tolist() == [46.0, 47.0]
    np.savez(path, x=np.zeros((7, 4, 4), np.uint8))
    ds = load_dataset(f"npz:{path}")
    assert ds.event_shape == (1, 4, 4) and ds.train_labels is None


def test_npz_rejects_nan_and_pickle(tmp_path):
    path = tmp_path / "d.npz"
    x = np.ones((10, 3), np.float32)
    x[4, 1] = np.nan
    np.savez(path, x_train=np.ones((10, 3)), x_test=x)
    with pytest.raises(DataFormatError, match="x_test.*NaN"):
        load_dataset(f"npz:{path}")
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataFormatError, match="pickle"):
        load_dataset(f"npz:{path}")
    np.savez(path, images=np.zeros((3, 2)))
    with pytest.raises(DataFormatError, match="x_train"):
        load_dataset(f"npz:{path}")
    with pytest.raises(DataNotFoundError):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


# --- folder ------------------------------------------------------------------------------------


def _write_images(folder: Path, n: int, size=(6, 4), mode="L") -> None:
    for i in range(n):
        cls = folder / ("cats" if i % 2 else "dogs")
        cls.mkdir(parents=True, exist_ok=True)
        colour = i * 10 if mode == "L" else (i * 10, 0, 255)
        Image.new(mode, size, colour).save(cls / f"img{i:02d}.png")


def test_folder_with_class_subfolders(tmp_path):
    _write_images(tmp_path / "imgs", 12)
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert ds.discrete and ds.event_shape == (1, 4, 6)  # PIL size (6, 4) = W x H
    assert len(ds.train) == 11 and len(ds.test) == 1
    # sorted order: cats/img01..img11 (6 files) then dogs/img00..img10; index 9 = dogs/img06
    assert ds.test_labels.tolist() == [1] and ds.test[0, 0, 0, 0] == 60
    assert set(ds.train_labels.tolist()) == {0, 1}


def test_folder_size_option_mixed_modes_and_no_labels(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.new("L", (10, 10), 7).save(folder / "a.png")
    Image.new("RGB", (20, 8), (1, 2, 3)).save(folder / "b.bmp")
    ds = load_dataset(f"folder:{folder}?size=5x3")
    assert ds.event_shape == (3, 5, 3) and ds.train_labels is None
    assert ds.train[1, :, 0, 0].tolist() == [1, 2, 3]
    assert load_dataset(f"folder:{folder}").event_shape == (3, 10, 10)  # first image's size


def test_folder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    _write_images(tmp_path / "bad", 3)
    (tmp_path / "bad" / "dogs" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="broken.png"):
        load_dataset(f"folder:{tmp_path / 'bad'}")
    with pytest.raises(ValueError, match="bad size"):
        load_dataset(f"folder:{tmp_path / 'bad'}?size=big")


# --- binarization (vaekit.transforms) ------------------------------------------------------------


@pytest.mark.parametrize("name", ["binarize", "binarize_fast"])
def test_binarization_is_bernoulli_k_over_255(name):
    """Each level k gives x=1 with probability k/255 (binomial test, 4σ, fixed seed); levels 0 and
    255 are exactly 0 and 1; the output is float {0, 1} of the input's shape."""
    from vaekit.data import prep as transforms

    f = getattr(transforms, name)
    levels = torch.arange(256, dtype=torch.uint8).repeat(2000, 1)  # (2000, 256)
    x = f(levels, torch.Generator().manual_seed(1))
    assert x.shape == levels.shape and x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert (x[:, 0] == 0).all() and (x[:, 255] == 1).all()
    p = torch.arange(256, dtype=torch.float64) / 255
    sd = (p * (1 - p) / 2000).sqrt()
    err = (x.double().mean(0) - p).abs()
    assert (err <= 4 * sd + 1e-12).all(), err.max()
    # the same generator state gives the same draws
    assert torch.equal(x, f(levels, torch.Generator().manual_seed(1)))


def test_binarize_fast_probabilities_are_exact_fractions_of_65536():
    """All 65536 16-bit draws s, pushed through binarize_fast's comparison, give P(x=1|k) =
    ⌈65536·k/255⌉/65536: within 1.6e-5 of k/255."""
    r = torch.arange(-32768, 32768, dtype=torch.int32).float()  # r = s − 32768
    u = r.mul_(255.0 / 65536.0).add_(127.5)
    k = torch.arange(256, dtype=torch.uint8)
    p = (u[None, :] < k[:, None]).double().mean(1)
    expected = torch.ceil(65536 * torch.arange(256, dtype=torch.float64) / 255) / 65536
    assert torch.equal(p, expected)
    assert (p - torch.arange(256) / 255).abs().max() < 1.6e-5


def test_fixed_split_keeps_the_24_bit_binarization():
    """DataPrep.fixed is 1[255·u < k] with u = torch.rand from the seeded generator: the test set
    every earlier run was evaluated on; training batches use binarize_fast."""
    from vaekit.data import DataPrep
    from vaekit.likelihoods import make_likelihood

    prep = DataPrep(make_likelihood("bernoulli", (1, 4, 4)))
    raw = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    u = torch.rand(raw.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(prep.fixed(raw, seed=7), (255 * u < raw).float())
