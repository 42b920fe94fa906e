"""The package's shape: imports flow one way through the layers of docs/architecture.md, no
module imports another that imports it back (lazy imports count), and every extension point is a
registry that the CLI reads."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

import vaekit
from vaekit.cli import build_parser
from vaekit.data import DATASETS
from vaekit.likelihoods import LIKELIHOODS
from vaekit.models import MODELS
from vaekit.networks import ARCHS, SEQUENCE_ARCHS

SRC = Path(vaekit.__file__).parent
# Bottom to top; a module may import from its own layer and the layers below (docs/architecture).
LAYERS = [
    {"config", "registry", "version", "devices", "files", "distributed"},
    {"distributions"},
    {"likelihoods", "networks", "priors"},
    {"models"},
    {"estimators", "objectives", "penalties"},
    {"evaluation", "inference", "ais", "gradvar", "latent", "images", "disentangle"},
    {"data"},
    {"checkpoint"},
    {"run", "report"},
    {"train"},
    {"applications", "explore", "sklearn", "export"},
    {"cli"},
]
API = {"vaekit", "vaekit.__main__"}  # the public surface re-exports from every layer


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """vaekit modules that ``name`` imports anywhere in its file (lazy imports included)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            root = ".".join(base + ([node.module] if node.module else []))
            subs = [f"{root}.{a.name}" for a in node.names]
            targets = [t for t in subs if t in modules] or [root]  # modules, else the names' home
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _layer(module: str) -> int:
    top = module.split(".")[1]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py::LAYERS")


MODULES = _modules()
GRAPH = {m: _imports(m, f, MODULES) for m, f in MODULES.items()}


def test_every_module_has_a_layer():
    for m in MODULES:
        if m not in API:
            _layer(m)


def test_imports_flow_one_way():
    against = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in GRAPH.items()
        if m not in API
        for t in targets
        if t not in API and _layer(t) > _layer(m)
    ]
    assert not against, "\n".join(against)


def test_models_never_import_data():
    for m, targets in GRAPH.items():
        if m.startswith(("vaekit.models", "vaekit.likelihoods")):
            assert not any(t.startswith("vaekit.data") for t in targets), m


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in GRAPH[m]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " → ".join([*path, m, t]))
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in GRAPH:
        if m not in state:
            visit(m, [])


def test_the_layers_are_the_ones_the_docs_draw():
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    for layer in LAYERS:
        for name in layer:
            assert f"`{name}" in doc, f"docs/architecture.md does not mention {name}"


def _choices(command: str, dest: str) -> list[str] | None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    action = next(a for a in sub.choices[command]._actions if a.dest == dest)
    return list(action.choices) if action.choices is not None else None


@pytest.mark.parametrize(
    "dest, registry",
    [
        ("likelihood", LIKELIHOODS),
        ("model", MODELS),
        ("arch", [*ARCHS, *SEQUENCE_ARCHS]),
    ],
)
def test_cli_choices_are_the_registries(dest, registry):
    assert _choices("train", dest) == list(registry)


def test_dataset_help_lists_every_dataset_kind():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    action = next(a for a in sub.choices["train"]._actions if a.dest == "dataset")
    for name in DATASETS:
        assert name in action.help


def test_registered_likelihood_names_are_their_classes_names():
    for name, cls in LIKELIHOODS.items():
        assert cls.name == name


def test_version_is_the_package_metadata():
    pyproject = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == vaekit.__version__
