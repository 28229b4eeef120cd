"""The backend packages use the core only through its public contract (DESIGN: a backend only moves bytes).

A backend module may import the top-level ``layers`` API and the contract modules below, nothing else of
``layers``: reaching into the core (``layers.core``, ``layers.settings``, ``layers.capacity`` …) is how semantics
leaked into backends before.  ``<package>/cli.py`` may also use ``layers.cli`` (the ``layers.cli`` entry points).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("layers_redis", "layers_postgres", "layers_amqp")
CONTRACT = {"layers", "layers.backend", "layers.drivers", "layers.envelope", "layers.errors", "layers.names",
            "layers.options"}


def _imports_of_layers(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, module) for module in modules if module == "layers" or module.startswith("layers.")]
    return found


@pytest.mark.parametrize("package", BACKENDS)
def test_backends_import_only_the_public_contract(package: str) -> None:
    outside = []
    for path in sorted((ROOT / package).glob("*.py")):
        allowed = CONTRACT | ({"layers.cli"} if path.name == "cli.py" else set())
        outside += [f"{path.relative_to(ROOT)}:{line}: {module}"
                    for line, module in _imports_of_layers(path) if module not in allowed]
    assert not outside, "backend modules reaching into the core:\n" + "\n".join(outside)


def test_the_core_names_no_backend() -> None:
    """``layers/`` (the core, its CLI and benchmarks) never imports a backend package: backends are found through
    entry points, so the core works with any set of them installed."""
    outside = []
    for path in sorted((ROOT / "layers").rglob("*.py")):
        outside += [f"{path.relative_to(ROOT)}:{line}: {module}" for line, module in _backend_imports(path)]
    assert not outside, "the core importing backends:\n" + "\n".join(outside)


def _backend_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found += [(node.lineno, name) for name in names if name.split(".")[0] in BACKENDS]
    return found
