"""Shards: packing is deterministic and crash-safe, reading equals the in-memory tensors bitwise,
damaged shards are refused by name, and reading stays at bounded memory."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

import vaekit
from vaekit.config import load_config
from vaekit.data import DataNotFoundError, Dataset, load_dataset, shards
from vaekit.data.shards import (
    ShardedArray,
    ShardError,
    load_packed_dataset,
    load_shards,
    open_shards,
    pack,
    pack_dataset,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def packed(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed")
    splits = {
        "train": (digits.train, digits.train_labels),
        "test": (digits.test, digits.test_labels),
    }
    return pack(splits, out, rows_per_shard=97, meta={"name": digits.name, "vocab": ["a", "b"]})


def _files(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("max_resident", [None, 0], ids=["mmap", "pread"])
def test_random_batches_equal_the_in_memory_tensors_bitwise(digits, packed, max_resident):
    train, test, train_y, test_y, meta = load_shards(packed, max_resident=max_resident)
    assert train.mapped == (max_resident is None)
    assert meta == {"name": "digits", "vocab": ["a", "b"]}
    assert (train.shape, train.dtype, len(train)) == (digits.train.shape, torch.uint8, 1500)
    assert len(train.files) == 16  # 15 x 97 rows + 45
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    for b in range(0, len(perm), 64):
        idx = perm[b : b + 64]
        assert torch.equal(train[idx], digits.train[idx])
        assert torch.equal(train_y[idx], digits.train_labels[idx])
    assert torch.equal(test.to_tensor(), digits.test)
    assert torch.equal(test_y.to_tensor(), digits.test_labels)
    # the rest of the tensor-like surface
    x = digits.train
    for key in (5, -1, np.int64(96), torch.tensor(97), slice(90, 300), slice(None, None, 7)):
        assert torch.equal(train[key], x[key]), key
    assert torch.equal(train[slice(400, 10)], x[400:10])  # empty
    repeated = torch.tensor([[3, 3, 1400], [0, 1499, 3]])  # repeats, any shape, shard edges
    assert torch.equal(train[repeated], x[repeated])
    mask = digits.train_labels == 7
    assert torch.equal(train[mask], x[mask])
    assert torch.equal(
        train[torch.tensor([], dtype=torch.long)], x[torch.tensor([], dtype=torch.long)]
    )
    with pytest.raises(IndexError):
        train[torch.tensor([0, 1500])]
    with pytest.raises(IndexError):
        train[-1501]


def test_a_packed_dataset_loads_back_with_its_name_vocabulary_and_defaults(digits, tmp_path):
    from dataclasses import replace

    pack_dataset(replace(digits, vocab=("<pad>", "a")), tmp_path, rows_per_shard=500)
    train, _, train_y, _, meta = load_shards(tmp_path)
    assert meta == {"name": "digits", "implies": digits.implies, "vocab": ["<pad>", "a"]}
    assert digits.implies["model.likelihood"] == "bernoulli"
    assert torch.equal(train[:], digits.train) and torch.equal(train_y[:], digits.train_labels)
    ds = load_packed_dataset(tmp_path)
    assert isinstance(ds.train, ShardedArray) and ds.discrete and ds.n_classes == 10
    assert (ds.name, ds.vocab, ds.implies, ds.event_shape) == (
        "digits",
        ("<pad>", "a"),
        digits.implies,
        (1, 8, 8),
    )
    assert torch.equal(ds.test, digits.test) and torch.equal(ds.test_labels, digits.test_labels)
    with pytest.raises(DataNotFoundError, match="index.json is missing"):
        load_packed_dataset(tmp_path / "nowhere")


def test_float_rows_without_labels(tmp_path):
    x = torch.randn(1000, 3, 5, dtype=torch.float64)  # stored as float32
    pack({"train": (x, None), "test": (x[:10], None)}, tmp_path, rows_per_shard=300)
    train, _, train_y, _, meta = load_shards(tmp_path)
    assert train_y is None and meta == {} and train.dtype == torch.float32
    idx = torch.randperm(1000)[:250]
    assert torch.equal(train[idx], x.float()[idx])


def test_training_from_shards_equals_training_in_memory(digits, packed, tmp_path):
    cfg = {"data.dataset": "digits", "model.hidden": [16], "model.latent_dim": 2}
    cfg |= {"train.epochs": 1, "train.batch_size": 100, "train.images": False}
    train, test, _, _, _ = load_shards(packed)
    from_disk = Dataset("shards", train, test.to_tensor(), None, None, digits.event_shape)
    in_memory = Dataset("memory", digits.train, digits.test, None, None, digits.event_shape)
    runs = []
    for name, ds in (("disk", from_disk), ("memory", in_memory)):
        run = vaekit.train(load_config(None, cfg), tmp_path / name, dataset=ds, log=lambda *_: 0)
        runs.append(hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest())
    assert runs[0] == runs[1]


def _copy(packed, tmp_path):
    import shutil

    return shutil.copytree(packed, tmp_path / "copy")


def test_a_shard_with_flipped_bytes_is_refused_naming_the_file(packed, tmp_path):
    folder = _copy(packed, tmp_path)
    bad = folder / "train-x-00003.npy"
    data = bytearray(bad.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    train = load_shards(folder)[0]
    assert train[torch.arange(0, 97)].shape[0] == 97  # shard 0 is fine; shard 3 not yet opened
    with pytest.raises(ShardError, match=rf"{bad}.*sha256"):
        train[torch.tensor([5, 3 * 97 + 1])]
    with pytest.raises(ShardError, match=rf"{bad}.*sha256"):
        load_shards(folder, verify="open")
    with pytest.raises(ShardError, match=rf"{bad}.*sha256"):
        load_shards(folder)[0].verify()


def test_a_truncated_or_missing_shard_is_refused_naming_the_file(packed, tmp_path):
    folder = _copy(packed, tmp_path)
    cut = folder / "test-x-00001.npy"
    cut.write_bytes(cut.read_bytes()[:-64])
    for verify in ("lazy", "none"):  # the size is checked even without the sha256
        test = load_shards(folder, verify=verify)[1]
        with pytest.raises(ShardError, match=rf"{cut}.*(truncated|sha256)"):
            test.to_tensor()
    with pytest.raises(ShardError, match=rf"{cut} is truncated"):
        load_shards(folder, verify="none")[1].to_tensor()
    gone = folder / "train-y-00000.npy"
    gone.unlink()
    with pytest.raises(ShardError, match=rf"{gone} is missing"):
        load_shards(folder)[2][0]
    os.replace(folder / "train-x-00002.npy", folder / "train-x-00001.npy")  # another shard's bytes
    with pytest.raises(ShardError, match="train-x-00001.npy"):
        load_shards(folder)[0][97]


def test_packing_is_deterministic_and_replaces_a_pack_only_when_asked(digits, packed, tmp_path):
    splits = {
        "train": (digits.train, digits.train_labels),
        "test": (digits.test, digits.test_labels),
    }
    again = pack(
        splits, tmp_path / "again", rows_per_shard=97, meta={"name": "digits", "vocab": ["a", "b"]}
    )
    assert _files(again) == _files(packed)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pack(splits, again, rows_per_shard=97)
    pack(splits, again, rows_per_shard=1000, overwrite=True)  # fewer, larger shards
    assert sorted(_files(again)) == ["index.json"] + [
        f"{s}-{a}-{k:05d}.npy"
        for s, n in (("test", 1), ("train", 2))
        for a in "xy"
        for k in range(n)
    ]
    train, _, train_y, _, _ = load_shards(again)
    assert torch.equal(train[:], digits.train) and torch.equal(train_y[:], digits.train_labels)
    index = json.loads((again / "index.json").read_text())
    assert index["rows_per_shard"] == 1000 and index["splits"]["train"]["rows"] == 1500
    assert index["splits"]["train"]["x"] | {"shards": None} == {
        "dtype": "uint8",
        "shape": [1500, 1, 8, 8],
        "shards": None,
    }


def test_a_crash_while_packing_leaves_no_index_and_no_temporary_files(
    digits, tmp_path, monkeypatch
):
    real, calls = shards._write_npy, []

    def failing(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        return real(path, array)

    monkeypatch.setattr(shards, "_write_npy", failing)
    with pytest.raises(OSError, match="No space"):
        pack({"train": (digits.train, None), "test": (digits.test, None)}, tmp_path, 500)
    assert not (tmp_path / "index.json").exists() and len(list(tmp_path.glob("*.npy"))) == 2
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(ShardError, match="no index.json: not a pack, or packing did not finish"):
        load_shards(tmp_path)


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    x = torch.zeros(10, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="labels must be integers"):
        pack({"train": (x, torch.zeros(10))}, tmp_path)
    with pytest.raises(ValueError, match="9 labels for 10 rows"):
        pack({"train": (x, torch.zeros(9, dtype=torch.long))}, tmp_path)
    with pytest.raises(ValueError, match="split names"):
        pack({"../x": (x, None)}, tmp_path)
    assert not list(tmp_path.iterdir())
    pack({"train": (x, None)}, tmp_path)
    with pytest.raises(ShardError, match="no test split"):
        load_shards(tmp_path)
    assert open_shards(tmp_path)[0]["train"][0].shape == (10, 4)


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmRSS:"))


class _Rows:
    """128 MiB of deterministic uint8 rows (4 KiB each), made one slice at a time."""

    shape, dtype = (32768, 4096), np.uint8
    table = np.random.default_rng(0).integers(0, 256, (251, 4096), dtype=np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.table[np.arange(rows.start, rows.stop) % 251]


def test_reading_a_large_pack_in_random_batches_stays_at_bounded_memory(tmp_path):
    pack({"train": (_Rows(), None)}, tmp_path, rows_per_shard=2048)  # 16 shards of 8 MiB
    growth = {}
    for budget in (16 << 20, None):  # 16 MiB: read with pread; None: mapped (the control)
        x = open_shards(tmp_path, max_resident=budget)[0]["train"][0]
        assert x.mapped == (budget is None)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        start = peak = _rss()
        for b in range(0, len(x), 512):
            idx = perm[b : b + 512]
            batch = x[idx]
            peak = max(peak, _rss())
        assert torch.equal(batch, torch.from_numpy(_Rows.table[idx.numpy() % 251]))
        growth[budget] = (peak - start) / 2**20
        del x
    assert growth[16 << 20] < 16, growth  # a few batches' buffers
    assert growth[None] > 100, growth  # the measurement sees mapped pages


def test_a_reader_refuses_an_index_that_does_not_add_up(packed):
    index = json.loads((packed / "index.json").read_text())
    entry = index["splits"]["train"]["x"]
    with pytest.raises(ShardError, match="do not make"):
        ShardedArray(packed, {**entry, "shape": [1501, 1, 8, 8]}, 97)
    bad = {**entry, "shards": [{**entry["shards"][0], "file": "../../etc/passwd"}]}
    with pytest.raises(ShardError, match="not a plain file name"):
        ShardedArray(packed, bad, 97)


def test_vaekit_pack_then_train_from_the_shards(tmp_path, capsys):
    from vaekit.cli import main

    out = tmp_path / "packed"
    assert main(["pack", "digits", str(out), "--rows-per-shard", "400"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] == [1500, 1, 8, 8] and summary["test"] == [297, 1, 8, 8]
    assert len(list(out.glob("*.npy"))) >= 4
    argv = ["train", "--dataset", summary["spec"], "--hidden", "16", "--latent-dim", "2"]
    assert main([*argv, "--max-steps", "3", "--no-images", "--out", str(tmp_path / "r")]) == 0
    assert main(["pack", "digits", str(out)]) == 2  # an existing pack is kept without --force
