"""Bad input, everywhere a user can give it (issue 15, item 4): every reader and every CLI option,
fed generated bad inputs. Each must end in a typed exception from the API (``bad_inputs.TYPED``)
or, from the CLI, in exit status 2 and one line on stderr; never a traceback, never a run
directory with non-finite weights. ``bad_inputs.bad_input_cases()`` holds one fixed case per class
(also counted by ``benchmarks/faults.py``); the tests here generate many per class."""

from __future__ import annotations

import io
import json
import math
import os
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import TINY, api_outcome, bad_input_cases, cli_outcome, run_cli, tiny_run
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

import vaekit
from vaekit.data.images import IMAGE_SUFFIXES, parse_idx, write_idx
from vaekit.data.shards import pack

SCALE = int(os.environ.get("VAEKIT_BAD_INPUT_SCALE", "1"))  # more examples: e.g. 10 (a long hunt)


def _examples(n: int) -> settings:
    return settings(
        max_examples=n * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


FEW, SOME = _examples(25), _examples(40)


def _refused_or_fine(fn, check_result=None) -> None:
    """``fn()`` either raises a typed error or returns a result that passes ``check_result``."""
    outcome = api_outcome(fn)
    assert not outcome.startswith("crashed"), outcome
    if outcome.startswith("accepted") and check_result is not None:
        check_result(fn())


def _sane_dataset(ds) -> None:
    """A dataset a reader accepted: rows with values, finite (NaN = a missing table cell)."""
    assert all(d > 0 for d in ds.event_shape)
    for x in (ds.train, ds.test):
        if x.dtype.is_floating_point:
            assert not x.isinf().any()
            if ds.schema is None:
                assert not x.isnan().any()


# ---- the catalogue: one fixed case per class -----------------------------------------------------

CASES = bad_input_cases()


def test_the_catalogue_names_each_class_once():
    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names)) and len(names) >= 90
    assert all(callable(run) and desc for _, desc, run in CASES)


@pytest.mark.parametrize("case", CASES, ids=[name for name, _, _ in CASES])
def test_every_bad_input_class_is_refused_in_one_typed_line(case):
    name, description, run = case
    outcome = run()
    assert outcome.startswith("refused"), f"{name} ({description}): {outcome}"


# ---- IDX -----------------------------------------------------------------------------------------


@SOME
@given(
    arr=st.integers(1, 3).flatmap(
        lambda nd: st.lists(st.integers(0, 4), min_size=nd, max_size=nd).map(
            lambda dims: np.zeros(dims, np.uint8)
        )
    ),
    cut=st.integers(-20, 20),
    flips=st.lists(st.tuples(st.integers(0, 15), st.integers(1, 255)), max_size=3),
)
def test_idx_reader_refuses_any_truncation_or_header_corruption(arr, cut, flips):
    buf = io.BytesIO()
    write_idx_bytes(buf, arr)
    data = bytearray(buf.getvalue())
    for pos, mask in flips:  # corrupt header bytes: magic, type code, ndim, dims
        if pos < len(data):
            data[pos] ^= mask
    data = bytes(data[:cut] if cut < 0 else data + bytes(cut))
    try:
        out = parse_idx(data)
    except vaekit.DataError:
        return
    assert out.size * out.itemsize + 4 + 4 * out.ndim == len(data)  # exactly what it says


def write_idx_bytes(buf: io.BytesIO, arr: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_idx(Path(tmp) / "a", arr)
        buf.write((Path(tmp) / "a").read_bytes())


@FEW
@given(st.binary(max_size=64))
def test_idx_reader_refuses_random_bytes(data):
    _refused_or_fine(lambda: parse_idx(data))


# ---- image folders -------------------------------------------------------------------------------

FORMATS = {"1": ["png", "bmp"], "L": ["png", "bmp", "jpeg"], "LA": ["png"],
           "P": ["png", "bmp", "gif"], "RGB": ["png", "bmp", "jpeg"], "RGBA": ["png"],
           "I;16": ["png"], "CMYK": ["jpeg"]}  # fmt: skip


@st.composite
def image_files(draw):
    """A file for an image folder: a real image of a random mode and size, random bytes under an
    image suffix, a real image cut short, or a non-image file."""
    kind = draw(st.sampled_from(["image", "image", "bytes", "truncated", "other"]))
    name = draw(st.text(string.ascii_lowercase, min_size=1, max_size=6))
    if kind == "other":
        return f"{name}.txt", draw(st.binary(max_size=32))
    if kind == "bytes":
        return name + draw(st.sampled_from(IMAGE_SUFFIXES)), draw(st.binary(max_size=64))
    mode = draw(st.sampled_from(sorted(FORMATS)))
    fmt = draw(st.sampled_from(FORMATS[mode]))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    out = io.BytesIO()
    Image.new(mode, size, 0 if mode == "CMYK" else draw(st.integers(0, 255))).save(out, fmt)
    data = out.getvalue()
    if kind == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return f"{name}.{'jpg' if fmt == 'jpeg' else fmt}", data


@_examples(15)
@given(st.lists(image_files(), max_size=12, unique_by=lambda f: f[0]))
def test_image_folder_reader_takes_any_mix_of_files(files):
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files:
            (Path(tmp) / name).write_bytes(data)

        def check(ds) -> None:
            _sane_dataset(ds)
            assert ds.event_shape[0] in (1, 3) and len(ds.train) + len(ds.test) <= len(files)

        _refused_or_fine(lambda: vaekit.load_dataset(f"folder:{tmp}"), check)


# ---- npz -----------------------------------------------------------------------------------------

DTYPES = ["uint8", "int64", "int8", "float16", "float32", "float64", "bool", "complex64", "<U2"]


@st.composite
def npz_arrays(draw):
    """A dict of arrays for an .npz: keys from the ones the reader knows (and others), dtypes
    from numbers, booleans, complex and text, values with NaN / inf / huge magnitudes."""
    keys = draw(st.lists(st.sampled_from(["x", "y", "x_train", "x_test", "y_train", "y_test", "z"]),
                         min_size=1, max_size=4, unique=True))  # fmt: skip
    out = {}
    for key in keys:
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
        n = math.prod(shape)
        if dtype.kind == "U":
            values = draw(st.lists(st.text(max_size=2), min_size=n, max_size=n))
        else:
            special = [0.0, 1.0, -1.0, 255.0, 256.0, np.nan, np.inf, -np.inf, 1e300, 3.5]
            values = draw(st.lists(st.sampled_from(special), min_size=n, max_size=n))
        with np.errstate(all="ignore"):
            arr = np.array(values, dtype=np.float64 if dtype.kind != "U" else dtype)
            out[key] = arr.reshape(shape).astype(dtype) if dtype.kind != "U" else arr.reshape(shape)
    return out


@SOME
@given(npz_arrays())
def test_npz_reader_refuses_or_returns_finite_numbers(arrays):
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "a.npz", **arrays)
        _refused_or_fine(lambda: vaekit.load_dataset(f"npz:{tmp}/a.npz"), _sane_dataset)
        _refused_or_fine(lambda: vaekit.load_dataset(f"table:{tmp}/a.npz"), _sane_dataset)


@FEW
@given(cut=st.integers(0, 400), data=st.binary(max_size=64))
def test_npz_reader_refuses_random_and_truncated_files(cut, data):
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "full.npz", x=np.ones((20, 3), np.float32))
        full = (Path(tmp) / "full.npz").read_bytes()
        for content in (full[: min(cut, len(full) - 1)], data):
            (Path(tmp) / "a.npz").write_bytes(content)
            outcome = api_outcome(lambda: vaekit.load_dataset(f"npz:{tmp}/a.npz"))
            assert outcome.startswith("refused"), outcome


# ---- csv / tables --------------------------------------------------------------------------------

CELLS = ["1", "2.5", "-3", "0", "", "NA", "?", "nan", "inf", "-inf", "1e39", "1e-3", "abc",
         "yes", "no", "é", '"q,uoted"', " 7 ", "true", "\x00", "12345678901234567890"]  # fmt: skip


@SOME
@given(
    header=st.lists(st.sampled_from(["a", "b", "c", "a", ""]), min_size=0, max_size=3),
    rows=st.lists(st.lists(st.sampled_from(CELLS), min_size=0, max_size=4), max_size=8),
)
def test_csv_reader_refuses_ragged_or_bad_rows_or_returns_finite_numbers(header, rows):
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "t.csv").write_text(text, encoding="utf-8")
        _refused_or_fine(lambda: vaekit.load_dataset(f"csv:{tmp}/t.csv"), _sane_dataset)


@FEW
@given(st.binary(max_size=80))
def test_table_readers_refuse_random_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in ("csv", "tsv", "mat"):
            (Path(tmp) / f"t.{suffix}").write_bytes(data)
            spec = f"table:{tmp}/t.{suffix}"
            _refused_or_fine(lambda spec=spec: vaekit.load_dataset(spec), _sane_dataset)


# ---- text ----------------------------------------------------------------------------------------


@FEW
@given(data=st.binary(max_size=80), level=st.sampled_from(["char", "word", "byte"]),
       max_len=st.sampled_from(["", "-1", "0", "1", "2", "x", "5"]))  # fmt: skip
def test_text_reader_refuses_binary_files_and_bad_options(data, level, max_len):
    options = f"?level={level}" + (f"&max_len={max_len}" if max_len else "")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "t.txt").write_bytes(data)

        def check(ds) -> None:
            assert ds.vocab is not None and ds.event_shape[0] >= 2

        _refused_or_fine(lambda: vaekit.load_dataset(f"text:{tmp}/t.txt{options}"), check)


# ---- shards --------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node, prefix=()):
    """Every path into a JSON document (dict keys and list indices)."""
    yield prefix
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "p"
    x = np.arange(42, dtype=np.float32).reshape(14, 3)
    pack({"train": (x[:10], np.arange(10)), "test": (x[10:], np.arange(4))}, out, 4)
    return out


@SOME
@given(choice=st.integers(0, 10_000), value=JSON)
def test_shards_reader_refuses_any_edit_of_the_index(pack_dir, choice, value):
    index = json.loads((pack_dir / "index.json").read_text())
    paths = list(_paths(index))
    path = paths[choice % len(paths)]
    assume(path)  # the whole document: tested as a fixed case
    node = index
    for k in path[:-1]:
        node = node[k]
    assume(node[path[-1]] != value)
    node[path[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        for f in pack_dir.iterdir():
            (Path(tmp) / f.name).write_bytes(f.read_bytes())
        (Path(tmp) / "index.json").write_text(json.dumps(index))

        def load():
            ds = vaekit.load_dataset(f"shards:{tmp}")
            return ds, ds.train[:]

        outcome = api_outcome(load)
        assert not outcome.startswith("crashed"), (path, value, outcome)


@FEW
@given(shard=st.integers(0, 5), cut=st.integers(1, 200), flip=st.integers(0, 200))
def test_shards_reader_refuses_truncated_or_changed_shards(pack_dir, shard, cut, flip):
    files = sorted(p for p in pack_dir.iterdir() if p.suffix == ".npy")
    with tempfile.TemporaryDirectory() as tmp:
        for f in pack_dir.iterdir():
            (Path(tmp) / f.name).write_bytes(f.read_bytes())
        target = Path(tmp) / files[shard % len(files)].name
        data = bytearray(target.read_bytes())
        if cut % 2:  # cut short
            data = data[: max(len(data) - cut, 0)]
        else:  # one byte changed, in the header or the values
            data[flip % len(data)] ^= 0x5A
        target.write_bytes(bytes(data))

        def load():
            ds = vaekit.load_dataset(f"shards:{tmp}")
            return ds.train[:]

        outcome = api_outcome(load)
        assert outcome.startswith("refused"), outcome


# ---- the CLI: option values ----------------------------------------------------------------------

POSITIVE_INT = ["0", "-1", "-7", "1.5", "abc", "", "nan", "inf"]
NON_NEGATIVE_INT = ["-1", "-3", "1.5", "abc", "", "nan"]
POSITIVE_FLOAT = ["0", "-1", "-0.5", "nan", "inf", "-inf", "abc", "", "1e999"]
NON_NEGATIVE_FLOAT = ["-1", "-1e-9", "nan", "inf", "abc", ""]
FRACTION = ["0", "1", "2", "-0.1", "nan", "abc"]
OPTIONS = [  # (argv before the option, option, bad values); RUN: no run is needed to refuse
    (["train"], "--latent-dim", POSITIVE_INT),
    (["train"], "--batch-size", POSITIVE_INT),
    (["train"], "--epochs", POSITIVE_INT),
    (["train"], "--lr", POSITIVE_FLOAT),
    (["train"], "--beta", NON_NEGATIVE_FLOAT),
    (["train"], "--free-bits", NON_NEGATIVE_FLOAT),
    (["train"], "--n-samples", POSITIVE_INT),
    (["train"], "--train-limit", NON_NEGATIVE_INT),
    (["train"], "--threads", POSITIVE_INT),
    (["train"], "--time-limit", POSITIVE_FLOAT),
    (["train"], "--nproc", POSITIVE_INT),
    (["train"], "--word-dropout", NON_NEGATIVE_FLOAT),
    (["demo"], "--iw-samples", NON_NEGATIVE_INT),
    (["demo"], "--epochs", POSITIVE_INT),
    (["evaluate", "RUN"], "--iw-samples", NON_NEGATIVE_INT),
    (["evaluate", "RUN"], "--batch-size", POSITIVE_INT),
    (["evaluate", "RUN"], "--limit", POSITIVE_INT),
    (["evaluate", "RUN"], "--ais-steps", POSITIVE_INT),
    (["sample", "RUN"], "-n", POSITIVE_INT),
    (["sample", "RUN"], "--temperature", NON_NEGATIVE_FLOAT),
    (["sample", "RUN"], "--lower-temperature", NON_NEGATIVE_FLOAT),
    (["reconstruct", "RUN"], "-n", POSITIVE_INT),
    (["interpolate", "RUN"], "--steps", POSITIVE_INT),
    (["encode", "RUN"], "--batch-size", POSITIVE_INT),
    (["encode", "RUN"], "--limit", POSITIVE_INT),
    (["traverse", "RUN"], "--top", POSITIVE_INT),
    (["report", "RUN"], "--iw-samples", NON_NEGATIVE_INT),
    (["latent-map", "RUN"], "--limit", POSITIVE_INT),
    (["explore", "RUN"], "--sliders", POSITIVE_INT),
    (["explore", "RUN"], "--port", NON_NEGATIVE_INT),
    (["gradvar", "RUN"], "--batch-size", POSITIVE_INT),
    (["gradvar", "RUN"], "--samples", POSITIVE_INT),
    (["gradvar", "RUN"], "--k", ["0", "-1", "1,0", "a"]),
    (["export", "RUN"], "--opset", POSITIVE_INT),
    (["pack", "digits", "OUT"], "--rows-per-shard", POSITIVE_INT),
    (["probe", "RUN"], "--limit", POSITIVE_INT),
    (["denoise", "RUN", "test"], "-n", POSITIVE_INT),
    (["denoise", "RUN", "test"], "--steps", POSITIVE_INT),
    (["anomaly", "fit", "digits"], "--latent-dim", POSITIVE_INT),
    (["anomaly", "fit", "digits"], "--lr", POSITIVE_FLOAT),
    (["anomaly", "fit", "digits"], "-k", POSITIVE_INT),
    (["anomaly", "fit", "digits"], "--test", FRACTION),
    (["anomaly", "fit", "digits"], "--fpr", FRACTION),
    (["anomaly", "score", "RUN", "x.csv"], "-k", POSITIVE_INT),
    (["disentangle", "RUN"], "--n", POSITIVE_INT),
    (["sample", "RUN"], "--groups", ["0", "-2", "x"]),
]


@SOME
@given(st.sampled_from(OPTIONS).flatmap(lambda o: st.tuples(st.just(o), st.sampled_from(o[2]))))
def test_cli_refuses_bad_option_values_in_one_line(option_value):
    (argv, flag, _), value = option_value
    given_as = [f"{flag}={value}"] if flag.startswith("--") else [flag, value]
    outcome = cli_outcome([*argv, *given_as])
    assert outcome.startswith("refused: exit 2: vaekit"), outcome
    assert f"argument {flag}" in outcome  # refused by the option's parser, naming it


SET_KEYS = {  # key: values that must be refused
    "train.batch_size": ["0", "-1", "abc", "1.5", "[1]", "true", ".nan"],
    "train.lr": ["0", "-1", ".nan", ".inf", "abc", "[1, 2]", "{a: 1}"],
    "train.epochs": ["0", "-1", "abc", "2.5"],
    "train.threads": ["0", "-2", "x"],
    "train.seed": ["1.5", "abc", "[1]"],
    "train.deterministic": ["3", "maybe", "[true]"],
    "train.clip_norm": ["-1", ".nan", "x"],
    "model.latent_dim": ["0", "-3", "1.5", "abc"],
    "model.hidden": ["abc", "[0]", "[64, -1]", "[1.5]", "{a: 1}"],
    "model.kind": ["[vae]", "3"],
    "objective.beta": ["-1", ".nan", "x"],
    "objective.n_samples": ["0", "-1", "abc"],
    "data.train_limit": ["-1", "abc", "1.5"],
}


@SOME
@given(
    st.sampled_from(sorted(SET_KEYS)).flatmap(
        lambda k: st.tuples(st.just(k), st.sampled_from(SET_KEYS[k]))
    )
)
def test_set_refuses_values_of_the_wrong_type_or_range_naming_the_key(key_value):
    key, value = key_value
    with tempfile.TemporaryDirectory() as tmp:
        outcome = cli_outcome(["train", *TINY, "--set", f"{key}={value}", "--out", f"{tmp}/r"])
        assert outcome.startswith("refused: exit 2: vaekit: error:"), outcome
        assert key in outcome
        assert not (Path(tmp) / "r").exists()  # refused before anything was written


@SOME
@given(section=st.sampled_from(["model", "train", "data", "objective", "zz", ""]),
       key=st.text(string.ascii_letters + "_.=", min_size=0, max_size=8),
       value=st.text(max_size=6))  # fmt: skip
def test_set_refuses_unknown_and_malformed_keys(section, key, value):
    from vaekit.config import load_config

    names = {f for s in ("model", "train", "data", "objective")
             for f in vaekit.Config().to_dict()[s]}  # fmt: skip
    assume(key not in names)
    code, lines = run_cli(["train", "--set", f"{section}.{key}={value}", "--out", "/nonexistent/x"])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vaekit"), lines
    with pytest.raises(vaekit.ConfigError):
        load_config(None, {f"{section}.{key}": value})


@SOME
@given(st.one_of(st.text(max_size=60), st.binary(max_size=40)))
def test_any_config_file_loads_or_is_refused_with_a_config_error(content):
    from vaekit.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        try:
            cfg = load_config(path)
        except vaekit.ConfigError as e:
            assert "\n" not in str(e)
        else:
            assert cfg.validate() is cfg


# ---- the CLI: paths ------------------------------------------------------------------------------

RUN_COMMANDS = {  # command: its argv given a run directory
    "evaluate": lambda r: ["evaluate", r], "sample": lambda r: ["sample", r],
    "reconstruct": lambda r: ["reconstruct", r],
    "interpolate": lambda r: ["interpolate", r, "--from", "0", "--to", "1"],
    "encode": lambda r: ["encode", r], "traverse": lambda r: ["traverse", r],
    "attribute": lambda r: ["attribute", r, "--with-labels", "1"],
    "latent-map": lambda r: ["latent-map", r], "report": lambda r: ["report", r],
    "gradvar": lambda r: ["gradvar", r], "export": lambda r: ["export", r],
    "denoise": lambda r: ["denoise", r, "test", "--noise", "gaussian:0.1"],
    "probe": lambda r: ["probe", r], "disentangle": lambda r: ["disentangle", r],
    "anomaly-score": lambda r: ["anomaly", "score", r, "x.csv"],
    "explore": lambda r: ["explore", r], "resume": lambda r: ["train", "--resume", r],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
def test_every_command_refuses_a_missing_or_file_run_directory(command, tmp_path):
    (tmp_path / "file").write_text("x")
    for run in (tmp_path / "missing", tmp_path / "file", tmp_path):  # tmp_path: an empty folder
        outcome = cli_outcome(RUN_COMMANDS[command](run))
        assert outcome.startswith("refused: exit 2: vaekit: error:"), (run, outcome)


@pytest.mark.parametrize(
    "argv",
    [
        lambda run, f: ["sample", run, "-n", "4", "-o", f / "x.png"],
        lambda run, f: ["sample", run, "-n", "4", "-o", f / "x.npy"],
        lambda run, f: ["encode", run, "-o", f / "z.npy"],
        lambda run, f: ["latent-map", run, "--limit", "20", "-o", f / "m.png"],
        lambda run, f: ["reconstruct", run, "-n", "4", "-o", f / "r.png"],
        lambda run, f: ["report", run, "--limit", "20", "-o", f / "r.html"],
        lambda run, f: ["pack", "digits", f / "pack"],
        lambda run, f: ["train", *TINY, "--out", f],
        lambda run, f: ["train", *TINY, "--out", f / "run"],
    ],
    ids=[
        "sample-png",
        "sample-npy",
        "encode",
        "latent-map",
        "reconstruct",
        "report",
        "pack",
        "train-file",
        "train-under-file",
    ],
)
def test_unwritable_outputs_are_refused_in_one_line(argv, tmp_path):
    """Outputs below a regular file: unwritable for every user (root included)."""
    (tmp_path / "f").write_text("x")
    outcome = cli_outcome(argv(tiny_run(), tmp_path / "f"))
    assert outcome.startswith("refused: exit 2: vaekit: error:"), outcome
    assert (tmp_path / "f").read_text() == "x"


def test_a_diverging_run_leaves_no_weights(tmp_path):
    out = tmp_path / "run"
    for lr in ("1e30", "1e12"):
        outcome = cli_outcome(["train", *TINY, "--lr", lr, "--out", out, "--force"])
        if outcome.startswith("refused"):
            assert "diverged" in outcome or "non-finite" in outcome, outcome
            assert not (out / "model.safetensors").exists() and not (out / "ckpt").exists()
        else:  # it trained: then its weights are finite
            from safetensors.torch import load_file

            weights = load_file(out / "model.safetensors")
            assert all(bool(t.isfinite().all()) for t in weights.values())
