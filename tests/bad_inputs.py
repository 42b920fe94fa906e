"""Bad input, everywhere a user can give it: one fixed case per bad-input class, and the runners
that judge what vaekit made of it (shared by ``test_bad_input.py`` and ``benchmarks/faults.py``).

``bad_input_cases()`` returns ``[(class_name, description, run), ...]``; ``run()`` takes no
arguments, builds its input in a temporary folder, feeds it to vaekit and returns the outcome as
one string:

- ``"refused: <ErrorType>: <message>"``: the API raised one of the typed errors (``TYPED``);
- ``"refused: exit 2: <the one stderr line>"``: the CLI printed one line and exited with 2;
- ``"accepted: ..."``: no error (wrong for every case here);
- ``"crashed: ..."``: an untyped exception, a traceback, another exit status or more than one line
  on stderr.

A case passes when its outcome starts with ``"refused"``. Cases run in-process; the few that need
a trained run share one tiny run (digits, one epoch, trained once per process, ~5 s). Nothing is
downloaded: the data come from ``$VAEKIT_DATA`` (digits ship with scikit-learn) or are written here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

import vaekit
from vaekit.cli import main

__all__ = ["TYPED", "api_outcome", "bad_input_cases", "cli_outcome", "run_cli", "tiny_run"]

# The typed exceptions of the API (DataNotFoundError: a named file or folder is not there).
TYPED = (
    vaekit.DataError,
    vaekit.DataNotFoundError,
    vaekit.SupportError,
    vaekit.CheckpointError,
    vaekit.ConfigError,
)
TINY = ["--dataset", "digits", "--train-limit", "100", "--test-limit", "20", "--hidden", "8",
        "--latent-dim", "2", "--epochs", "1", "--batch-size", "50", "--no-images"]  # fmt: skip


def run_cli(argv: list[str]) -> tuple[int | str, list[str]]:
    """``vaekit ARGV`` in-process: (exit status, or ``"raised T: msg"``; non-empty stderr lines)."""
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code is not None:
            err.write(f"{e.code}\n")
    except Exception as e:  # noqa: BLE001 - exactly what the outcome reports
        code = f"raised {type(e).__name__}: {e}"
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def cli_outcome(argv: list[str]) -> str:
    """The outcome string (module doc) of ``vaekit ARGV``."""
    code, lines = run_cli(argv)
    text = "\n".join(lines)
    if code == 2 and len(lines) == 1 and "Traceback" not in text and lines[0].startswith("vaekit"):
        return f"refused: exit 2: {lines[0]}"
    if code == 0:
        return f"accepted: exit 0 {text[-200:]}"
    return f"crashed: exit {code}: {text[-400:]}"


def api_outcome(fn: Callable[[], object]) -> str:
    """The outcome string (module doc) of calling ``fn``."""
    try:
        result = fn()
    except TYPED as e:
        return f"refused: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    except Exception as e:  # noqa: BLE001 - exactly what the outcome reports
        return f"crashed: {type(e).__name__}: {e}"
    return f"accepted: {result!r}"[:300]


@functools.cache
def tiny_run() -> Path:
    """A tiny trained run (digits, 1 epoch), made once per process in a temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="vaekit-bad-input-")) / "run"
    code, lines = run_cli(["train", *TINY, "--out", out])
    if code != 0:
        raise RuntimeError(f"could not train the tiny run: {code} {lines}")
    return out


def _in_tmp(make: Callable[[Path], Callable[[], str]]) -> Callable[[], str]:
    """A case runner: ``make(tmp)`` writes the input and returns the judged call."""

    def run() -> str:
        with tempfile.TemporaryDirectory() as tmp:
            return make(Path(tmp))()

    return run


def _file(name: str, data: bytes | str, spec: str) -> Callable[[], str]:
    """A case: ``data`` written to a file ``name``, loaded as ``spec`` (``{}``: the path)."""

    def make(tmp: Path) -> Callable[[], str]:
        path = tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return lambda: api_outcome(lambda: vaekit.load_dataset(spec.format(path)))

    return _in_tmp(make)


def _load_or_train(spec: str, tmp: Path, train: bool) -> Callable[[], str]:
    """Load dataset ``spec`` (API), or (``train``) train a tiny model on it (CLI)."""
    if train:
        argv = ["train", "--dataset", spec, "--hidden", "8", "--latent-dim", "2", "--epochs", "1"]
        return _cli([*argv, "--no-images", "--out", tmp / "run"])
    return lambda: api_outcome(lambda: vaekit.load_dataset(spec))


def _npz(train: bool = False, **arrays) -> Callable[[], str]:
    def make(tmp: Path) -> Callable[[], str]:
        np.savez(tmp / "a.npz", **arrays)
        return _load_or_train(f"npz:{tmp / 'a.npz'}", tmp, train)

    return _in_tmp(make)


def _idx(data: bytes) -> Callable[[], str]:
    from vaekit.data.images import parse_idx

    return lambda: api_outcome(lambda: parse_idx(data))


def _folder(files: dict[str, Callable[[Path], None] | bytes], train=False) -> Callable[[], str]:
    def make(tmp: Path) -> Callable[[], str]:
        (tmp / "imgs").mkdir()
        for name, content in files.items():
            path = tmp / "imgs" / name
            path.write_bytes(content) if isinstance(content, bytes) else content(path)
        return _load_or_train(f"folder:{tmp / 'imgs'}", tmp, train)

    return _in_tmp(make)


def _image(mode: str, size: tuple[int, int] = (8, 8)) -> Callable[[Path], None]:
    from PIL import Image

    return lambda path: Image.new(mode, size).save(path)


def _shards(edit: Callable[[Path, dict], None]) -> Callable[[], str]:
    """A case: a valid pack of 10 train / 4 test rows, then ``edit(folder, index)``."""
    from vaekit.data.shards import pack

    def make(tmp: Path) -> Callable[[], str]:
        x = np.arange(42, dtype=np.float32).reshape(14, 3)
        pack({"train": (x[:10], None), "test": (x[10:], None)}, tmp / "p", 4)
        index = json.loads((tmp / "p" / "index.json").read_text())
        edit(tmp / "p", index)

        def load() -> object:
            ds = vaekit.load_dataset(f"shards:{tmp / 'p'}")
            return ds.train[:]  # every training shard read (and verified)

        return lambda: api_outcome(load)

    return _in_tmp(make)


def _write_index(folder: Path, index) -> None:
    (folder / "index.json").write_text(json.dumps(index))


def _set(key_path: tuple, value) -> Callable[[Path, dict], None]:
    def edit(folder: Path, index: dict) -> None:
        node = index
        for k in key_path[:-1]:
            node = node[k]
        node[key_path[-1]] = value
        _write_index(folder, index)

    return edit


def _cut_shard(folder: Path, index: dict) -> None:
    shard = folder / index["splits"]["train"]["x"]["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:-5])


def _flip_shard(folder: Path, index: dict) -> None:
    shard = folder / index["splits"]["train"]["x"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))


def _cli(argv: list) -> Callable[[], str]:
    return lambda: cli_outcome(argv)


def _cli_tmp(make_argv: Callable[[Path], list]) -> Callable[[], str]:
    return _in_tmp(lambda tmp: _cli(make_argv(tmp)))


_BAD_SETS = (  # (class, a --set value `vaekit train` must refuse)
    ("set.unknown_key", "train.nosuch=1"),
    ("set.unknown_section", "nosuch.key=1"),
    ("set.malformed", "train.lr=[1,"),
    ("set.wrong_type", "train.batch_size=abc"),
    ("set.float_for_int", "train.seed=1.5"),
    ("set.zero", "train.threads=0"),
    ("set.negative", "train.epochs=-1"),
    ("set.nan", "train.lr=.nan"),
    ("set.list", "model.hidden=abc"),
)


def _set_case(value: str) -> Callable[[], str]:
    """A tiny ``vaekit train`` run given ``--set value``."""
    return _cli_tmp(lambda t: ["train", *TINY, "--set", value, "--out", t / "r"])


def _config_file(text: str) -> Callable[[], str]:
    def argv(tmp: Path) -> list:
        (tmp / "c.yaml").write_text(text)
        return ["train", *TINY, "--config", tmp / "c.yaml", "--out", tmp / "run"]

    return _cli_tmp(argv)


def _under_a_file(argv: Callable[[Path, Path], list]) -> Callable[[], str]:
    """An output path below a regular file (unwritable even as root)."""

    def make(tmp: Path) -> list:
        (tmp / "f").write_text("x")
        return argv(tmp, tmp / "f")

    return _cli_tmp(make)


class _Pickled:
    """Unpickling this would record it: the npz readers must never unpickle."""

    loaded: list = []

    def __reduce__(self):
        return (_Pickled.loaded.append, ("unpickled",))


def _never_unpickles() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "o.npz", x=np.array([_Pickled(), 1], dtype=object))
        outcome = api_outcome(lambda: vaekit.load_dataset(f"npz:{Path(tmp) / 'o.npz'}"))
    return outcome if not _Pickled.loaded else f"crashed: an object array was unpickled ({outcome})"


def _diverging_run() -> str:
    """lr 1e30: training must stop with one line, leaving no weights (config.json only)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        outcome = cli_outcome(["train", *TINY, "--lr", "1e30", "--out", out])
        left = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    weights = [n for n in left if n in ("model.safetensors", "manifest.json", "ckpt")]
    return outcome if not weights else f"crashed: diverged weights written {weights} ({outcome})"


IDX_OK = bytes([0, 0, 8, 2]) + np.array([2, 3], ">u4").tobytes() + bytes(6)
CSV_OK = "a,b\n1,2\n2,3\n3,4\n4,5\n"


def bad_input_cases() -> list[tuple[str, str, Callable[[], str]]]:
    """Every bad-input class: ``(class_name, description, run)``; ``run()`` → the outcome string
    (see the module doc: ``"refused: ..."`` is right). CLI cases that need a run use
    ``tiny_run()``."""
    run = lambda: tiny_run()  # noqa: E731 - trained on first use only
    c = [
        # ---- IDX files ---------------------------------------------------------------------
        ("idx.truncated", "IDX data shorter than its header says", _idx(IDX_OK[:-1])),
        ("idx.trailing", "IDX data longer than its header says", _idx(IDX_OK + b"\0")),
        ("idx.magic", "IDX file with a wrong magic number", _idx(b"\1\2" + IDX_OK[2:])),
        ("idx.dims", "IDX header with 255 dimensions", _idx(bytes([0, 0, 8, 255]) + bytes(1020))),
        ("idx.no_dims", "IDX header with 0 dimensions", _idx(bytes([0, 0, 8, 0, 7]))),
        (
            "idx.huge_dims",
            "IDX dims whose product overflows int64",
            _idx(bytes([0, 0, 8, 3]) + np.array([2**32 - 1] * 3, ">u4").tobytes()),
        ),
        ("idx.gzip", "mnist: corrupt gzip files", _in_tmp(_mnist_gzip_garbage)),
        # ---- image folders -----------------------------------------------------------------
        ("folder.empty", "an image folder without images", _folder({})),
        ("folder.non_images", "a folder of non-image files only", _folder({"a.txt": b"hi"})),
        (
            "folder.corrupt",
            "corrupt bytes in a .png",
            _folder({"a.png": b"\x89PNG\r\n\x1a\n" + bytes(30), "b.png": _image("L")}),
        ),
        ("folder.random_bytes", "random bytes named .jpg", _folder({"a.jpg": os.urandom(64)})),
        (
            "folder.too_few",
            "mixed sizes and modes (L, RGB, RGBA, P), too few to train on",
            _folder(
                {
                    "a.png": _image("L"),
                    "b.png": _image("RGB", (5, 9)),
                    "c.png": _image("RGBA"),
                    "d.gif": _image("P"),
                },
                train=True,
            ),
        ),
        ("folder.size", "folder ?size=0x4", _file("a.png", b"", "folder:{}?size=0x4")),
        # ---- npz ---------------------------------------------------------------------------
        ("npz.missing_keys", "npz without x / x_train+x_test", _npz(features=np.ones((4, 2)))),
        ("npz.object", "npz object array (needs pickle)", _never_unpickles),
        ("npz.strings", "npz array of strings", _npz(x=np.array(["a", "b", "c"]))),
        ("npz.complex", "npz complex array", _npz(x=np.ones((4, 2), complex))),
        ("npz.nan", "npz with NaN", _npz(x=np.array([[1.0, np.nan]] * 4))),
        ("npz.inf", "npz with inf", _npz(x=np.array([[1.0, np.inf]] * 4))),
        ("npz.float32_overflow", "npz float64 beyond float32", _npz(x=np.full((4, 2), 1e300))),
        ("npz.labels", "npz float labels", _npz(x=np.ones((4, 2)), y=np.zeros(4))),
        ("npz.negative_labels", "npz labels < 0", _npz(x=np.ones((4, 2)), y=-np.ones(4, int))),
        (
            "npz.empty_test",
            "training on an npz with an empty x_test",
            _npz(True, x_train=np.ones((4, 2), np.float32), x_test=np.ones((0, 2), np.float32)),
        ),
        ("npz.no_values", "npz rows of width 0", _npz(x=np.ones((5, 0), np.float32))),
        ("npz.not_zip", "npz: random bytes", _file("a.npz", os.urandom(64), "npz:{}")),
        (
            "npz.truncated",
            "npz: a zip cut short",
            _file("a.npz", b"PK\x03\x04" + bytes(20), "npz:{}"),
        ),
        ("npz.single_npy", "npz: a bare .npy file", _file("a.npz", _npy_bytes(), "npz:{}")),
        # ---- csv ---------------------------------------------------------------------------
        ("csv.empty", "an empty CSV file", _file("a.csv", "", "csv:{}")),
        ("csv.header_only", "a CSV header without rows", _file("a.csv", "a,b\n", "csv:{}")),
        ("csv.ragged", "CSV rows of different lengths", _file("a.csv", "a,b\n1,2\n3\n", "csv:{}")),
        (
            "csv.all_missing",
            "a CSV column without values",
            _file("a.csv", "a,b\n1,\n2,\n3,\n", "csv:{}"),
        ),
        (
            "csv.inf",
            "inf in a numeric CSV column",
            _file("a.csv", "a,b\n1,inf\n2,3\n3,4\n4,5\n", "csv:{}"),
        ),
        (
            "csv.float32_overflow",
            "1e39 in a numeric CSV column",
            _file("a.csv", "a,b\n1,1e39\n2,3\n3,4\n4,5\n", "csv:{}"),
        ),
        ("csv.binary", "CSV of NUL bytes", _file("a.csv", b"a,b\n1,\x002\n3,4\n", "csv:{}")),
        (
            "csv.non_utf8",
            "a Latin-1 CSV file",
            _file("a.csv", "a,b\n1,caf\xe9\n".encode("latin-1"), "csv:{}"),
        ),
        ("csv.one_row", "a CSV with one data row (no split)", _file("a.csv", "a\n1\n", "csv:{}")),
        ("csv.options", "csv ?test=2", _file("a.csv", CSV_OK, "csv:{}?test=2")),
        ("csv.sep", "csv ?sep=ab", _file("a.csv", CSV_OK, "csv:{}?sep=ab")),
        ("csv.types", "csv ?types=a:weird", _file("a.csv", CSV_OK, "csv:{}?types=a:weird")),
        # ---- .mat --------------------------------------------------------------------------
        ("mat.garbage", "random bytes as .mat", _file("a.mat", os.urandom(300), "mat:{}")),
        ("mat.complex", "a complex X in a .mat", _in_tmp(_mat_case(X=np.ones((4, 2), complex)))),
        (
            "mat.inf",
            "inf in a .mat X",
            _in_tmp(_mat_case(X=np.array([[1.0, np.inf], [2, 3], [3, 4]]))),
        ),
        ("mat.strings", "a text X in a .mat", _in_tmp(_mat_case(X=np.array([["a", "b"]])))),
        # ---- text --------------------------------------------------------------------------
        ("text.empty", "an empty text file", _file("a.txt", "", "text:{}")),
        ("text.one_line", "a text file of one line", _file("a.txt", "hello\n", "text:{}")),
        ("text.binary", "NUL bytes in a text file", _file("a.txt", b"ab\x00\ncd\nef\n", "text:{}")),
        (
            "text.non_utf8",
            "a Latin-1 text file",
            _file("a.txt", "caf\xe9\nabc\n".encode("latin-1"), "text:{}"),
        ),
        ("text.options", "text ?max_len=-1", _file("a.txt", "a b\nc d\n", "text:{}?max_len=-1")),
        # ---- shards ------------------------------------------------------------------------
        (
            "shards.bad_json",
            "index.json is not JSON",
            _shards(lambda f, i: (f / "index.json").write_text("{")),
        ),
        ("shards.index_list", "index.json is a list", _shards(lambda f, i: _write_index(f, []))),
        ("shards.splits", "index.json splits is a list", _shards(_set(("splits",), [1]))),
        (
            "shards.rows_per_shard",
            "rows_per_shard is text",
            _shards(_set(("rows_per_shard",), "a")),
        ),
        (
            "shards.no_shards",
            "an array without shards",
            _shards(_set(("splits", "train", "x", "shards"), [])),
        ),
        ("shards.meta", "meta.vocab is a number", _shards(_set(("meta",), {"vocab": 5}))),
        (
            "shards.path",
            "a shard file name with a path",
            _shards(_set(("splits", "train", "x", "shards", 0, "file"), "../x.npy")),
        ),
        ("shards.wrong_sha", "a shard whose bytes changed", _shards(_flip_shard)),
        ("shards.truncated", "a shard cut short", _shards(_cut_shard)),
        # ---- the dataset spec --------------------------------------------------------------
        (
            "spec.unknown",
            "an unknown dataset",
            lambda: api_outcome(lambda: vaekit.load_dataset("zz")),
        ),
        (
            "spec.option",
            "an unknown option",
            lambda: api_outcome(lambda: vaekit.load_dataset("digits?zz=1")),
        ),
        (
            "spec.limit",
            "a negative limit",
            lambda: api_outcome(lambda: vaekit.load_dataset("digits", train_limit=-1)),
        ),
        # ---- CLI options -------------------------------------------------------------------
        ("cli.zero_size", "--latent-dim 0", _cli(["train", "--latent-dim", "0"])),
        ("cli.negative_size", "--batch-size -1", _cli(["train", "--batch-size", "-1"])),
        ("cli.negative_epochs", "--epochs -1", _cli(["train", "--epochs", "-1"])),
        ("cli.nan_rate", "--lr nan", _cli(["train", "--lr", "nan"])),
        ("cli.inf_rate", "--lr inf", _cli(["train", "--lr", "inf"])),
        ("cli.sample_zero", "sample -n 0", _cli(["sample", "RUN", "-n", "0"])),
        ("cli.iw_zero", "demo --iw-samples -1", _cli(["demo", "--iw-samples", "-1"])),
        (
            "cli.temperature",
            "sample --temperature -1",
            _cli(["sample", "RUN", "--temperature", "-1"]),
        ),
        (
            "cli.temperature_nan",
            "sample --temperature nan",
            _cli(["sample", "RUN", "--temperature", "nan"]),
        ),
        ("cli.limit", "encode --limit -1", _cli(["encode", "RUN", "--limit", "-1"])),
        (
            "cli.gradvar_batch",
            "gradvar --batch-size 0",
            _cli(["gradvar", "RUN", "--batch-size", "0"]),
        ),
        ("cli.opset", "export --opset -1", _cli(["export", "RUN", "--opset", "-1"])),
        ("cli.fraction", "anomaly fit --test 2", _cli(["anomaly", "fit", "digits", "--test", "2"])),
        ("cli.not_a_number", "--batch-size abc", _cli(["train", "--batch-size", "abc"])),
        # ---- --set and config files --------------------------------------------------------
        ("set.no_value", "--set train.lr", _cli(["train", "--set", "train.lr"])),
        *((name, f"--set {value}", _set_case(value)) for name, value in _BAD_SETS),
        ("config.syntax", "a YAML syntax error", _config_file("model: [1, 2\n")),
        ("config.list", "a YAML list, not a mapping", _config_file("- 1\n- 2\n")),
        ("config.section", "an unknown config section", _config_file("nosuch:\n  a: 1\n")),
        ("config.scalar_section", "a section that is not a mapping", _config_file("train: 3\n")),
        ("config.value", "a wrong value type in a file", _config_file("train:\n  lr: fast\n")),
        (
            "config.missing",
            "--config naming no file or preset",
            _cli(["train", "--config", "/nonexistent/c.yaml"]),
        ),
        # ---- output paths and run directories ----------------------------------------------
        (
            "out.is_file",
            "train --out naming a file",
            _under_a_file(lambda t, f: ["train", *TINY, "--out", f]),
        ),
        (
            "out.under_file",
            "train --out below a file",
            _under_a_file(lambda t, f: ["train", *TINY, "--out", f / "run"]),
        ),
        (
            "out.sample_under_file",
            "sample -o below a file",
            _under_a_file(lambda t, f: ["sample", run(), "-n", "4", "-o", f / "x.png"]),
        ),
        (
            "out.encode_under_file",
            "encode -o below a file",
            _under_a_file(lambda t, f: ["encode", run(), "-o", f / "z.npy"]),
        ),
        ("run.missing", "evaluate a missing run directory", _cli(["evaluate", "/nonexistent/run"])),
        ("run.file", "sample from a file, not a run", _under_a_file(lambda t, f: ["sample", f])),
        ("run.diverged", "train --lr 1e30: no diverged weights written", _diverging_run),
    ]
    return c


def _mnist_gzip_garbage(tmp: Path) -> Callable[[], str]:
    from vaekit.data.images import MNIST_FILES

    (tmp / "mnist").mkdir()
    for name in MNIST_FILES:
        (tmp / "mnist" / f"{name}.gz").write_bytes(b"\x1f\x8bnot gzip")
    return lambda: api_outcome(lambda: vaekit.load_dataset("mnist", tmp, download=False))


def _mat_case(**arrays) -> Callable[[Path], Callable[[], str]]:
    def make(tmp: Path) -> Callable[[], str]:
        import scipy.io

        scipy.io.savemat(tmp / "a.mat", arrays)
        return lambda: api_outcome(lambda: vaekit.load_dataset(f"mat:{tmp / 'a.mat'}"))

    return make


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()
