"""Packaging: build the wheel and sdist, install the wheel into a fresh virtual environment outside
the repository, and use it from a folder outside the repository.

The fresh venv (``python -m venv --without-pip``) gets the wheel with ``pip --python VENV install
--no-deps`` and sees the dependencies (torch, numpy, ...) through a ``.pth`` file naming this
interpreter's site-packages, so nothing is downloaded and torch is not copied. That folder's own
``.pth`` files (e.g. an editable install of vaekit) are not processed: only the wheel's vaekit is
importable, which the tests check. ``--system-site-packages`` would not do: it exposes the base
interpreter's site-packages, not this venv's.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ("vaekit/configs/mnist.yaml", "vaekit/explore/static/index.html")


def _run(cmd, *, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    tree = base / "tree"  # build from a copy: the build writes build/ and *.egg-info
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = base / "dist"
    t = time.perf_counter()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", dist, tree],
        cwd=base,
    )
    build_s = time.perf_counter() - t
    sdist_code = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    _run([sys.executable, "-c", sdist_code, dist], cwd=tree)
    (wheel,) = dist.glob("vaekit-*.whl")
    (sdist,) = dist.glob("vaekit-*.tar.gz")

    venv = base / "venv"
    t = time.perf_counter()
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index"]
        + ["--disable-pip-version-check", "-q", wheel],
        cwd=base,
    )
    install_s = time.perf_counter() - t
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # this interpreter's: torch, numpy, ...
    Path(purelib, "zz_vaekit_dependencies.pth").write_text(deps + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("VAEKIT_DATA", str(ROOT.parent / "shared" / "data"))
    work = base / "work"  # every command runs here, outside the repository
    work.mkdir()
    print(
        f"\nwheel {wheel.name}: {wheel.stat().st_size / 1024:.0f} KiB (sdist "
        f"{sdist.stat().st_size / 1024:.0f} KiB), built in {build_s:.1f} s; venv + install "
        f"{install_s:.1f} s"
    )
    return SimpleNamespace(
        wheel=wheel,
        sdist=sdist,
        venv=venv,
        python=python,
        purelib=Path(purelib),
        env=env,
        cwd=work,
        bin=venv / "bin",
    )


def test_wheel_and_sdist_contents(installed):
    with zipfile.ZipFile(installed.wheel) as z:
        names = set(z.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
        entry_points = z.read(info.replace("METADATA", "entry_points.txt")).decode()
    for path in (*PACKAGE_DATA, "vaekit/__main__.py", "vaekit/sklearn.py", "vaekit/export.py"):
        assert path in names, f"{path} missing from the wheel"
    assert not any(n.startswith("tests/") for n in names)
    assert "vaekit = vaekit.cli:main" in entry_points
    assert "Requires-Dist: torch" in metadata and "Requires-Python: >=3.11" in metadata
    with tarfile.open(installed.sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md"} <= members
    assert {f"src/{p}" for p in PACKAGE_DATA} <= members


def test_installed_vaekit_trains_evaluates_and_loads(installed):
    env, cwd, bin_ = installed.env, installed.cwd, installed.bin
    run = cwd / "runs" / "digits"
    _run(
        [bin_ / "vaekit", "train", "--dataset", "digits", "--epochs", "1", "--out", run],
        cwd=cwd,
        env=env,
    )
    assert (run / "manifest.json").is_file() and (run / "samples.png").is_file()
    res = _run([bin_ / "vaekit", "evaluate", run, "--iw-samples", "5", "--json"], cwd=cwd, env=env)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["k"] == 5 and result["n"] > 0 and 0 < result["nll"] < 100
    code = (
        "import sys, vaekit; m = vaekit.load(sys.argv[1]); "
        "from importlib import resources; r = resources.files('vaekit'); "
        "print(vaekit.__file__); print(m.latent_dim, m.event_shape); "
        "print(all((r / p).is_file() for p in ('configs/mnist.yaml', 'explore/static/index.html')))"
    )
    out = _run([installed.python, "-c", code, run], cwd=cwd, env=env).stdout.split("\n")
    assert Path(out[0]).is_relative_to(installed.purelib)  # the wheel's vaekit, not the repo's
    assert out[1] == "32 (1, 8, 8)" and out[2] == "True"
    main = _run([installed.python, "-m", "vaekit", "--help"], cwd=cwd, env=env)
    assert main.stdout.startswith("usage: vaekit")


def test_installed_vaekit_version(installed):
    """Needs `vaekit --version` (the cli.build_parser patch in the ecosystem notes)."""
    res = _run([installed.bin / "vaekit", "--version"], cwd=installed.cwd, env=installed.env)
    code = "import vaekit, importlib.metadata as m; print(vaekit.__version__, m.version('vaekit'))"
    ours, dist = _run(
        [installed.python, "-c", code], cwd=installed.cwd, env=installed.env
    ).stdout.split()
    assert ours == dist
    assert res.stdout.strip() == f"vaekit {dist}"
