"""Configuration once: declared options, the entry-point registry (also from a source checkout that is not
installed), backend-owned hints and CLI commands, and no import cycles among the project's modules."""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import layers
from layers.core import BaseChannelLayer
from layers.options import COMMON, redact_url

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["layers", "layers_redis", "layers_postgres", "layers_amqp"]

# Hides the installed distribution: what a plain copy of the source tree sees.
_NOT_INSTALLED = """
import importlib.metadata as metadata
def _missing(name):
    raise metadata.PackageNotFoundError(name)
metadata.distribution = _missing
metadata.entry_points = lambda **selection: metadata.EntryPoints(())
"""


def _python_not_installed(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports the packages from ``cwd`` and sees no installed metadata."""
    return subprocess.run([sys.executable, "-c", _NOT_INSTALLED + textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages and pyproject.toml copied to a plain directory (no install, no metadata)."""
    root = tmp_path_factory.mktemp("checkout")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_a_source_checkout_that_is_not_installed_resolves_the_registered_schemes(checkout_copy: Path) -> None:
    done = _python_not_installed("""
        import sys
        sys.path.insert(0, ".")
        import layers
        from layers.registry import BACKENDS, CLI_COMMANDS, registered
        from layers.settings import layer_class
        from pathlib import Path
        assert Path(layers.__file__).resolve().is_relative_to(Path.cwd().resolve()), layers.__file__
        assert type(layers.from_url("memory://?capacity=3")).__name__ == "InMemoryChannelLayer"
        from layers.settings import known_schemes
        print(sorted(known_schemes()))
        print(layer_class("redis+sentinel").__module__, layer_class("postgres").__name__, layer_class("amqps").__name__)
        print(registered(BACKENDS)["redis"].extras, sorted(registered(CLI_COMMANDS)))
        sys.modules["layers_redis"] = None
        try:
            layers.from_url("redis://localhost")
        except layers.ConfigError as exc:
            print(exc)
    """, checkout_copy)
    assert done.returncode == 0, done.stderr
    schemes, classes, extras, missing = done.stdout.splitlines()
    assert schemes == str(sorted(["amqp", "amqps", "memory", "postgres", "postgresql", "redis", "redis+cluster",
                                  "redis+sentinel", "rediss", "unix"]))
    assert classes == "layers_redis.layer PostgresChannelLayer AMQPChannelLayer"
    assert extras == "['redis'] ['postgres-ddl']"
    assert "pip install 'channel-layers[redis]'" in missing


def test_without_pyproject_or_metadata_no_scheme_is_known(checkout_copy: Path, tmp_path: Path) -> None:
    """The registry really is the entry-point table: nothing is built in besides it."""
    shutil.copytree(checkout_copy / "layers", tmp_path / "layers")
    done = _python_not_installed("""
        import sys
        sys.path.insert(0, ".")
        import layers
        try:
            layers.from_url("memory://")
        except layers.ConfigError as exc:
            print(exc)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "unknown layer URL scheme 'memory'" in done.stdout


def test_the_cli_gets_postgres_ddl_from_the_backends_entry_point() -> None:
    tree = ast.parse((ROOT / "layers" / "cli.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.split(".")[0] in PACKAGES[1:]}
    done = subprocess.run([sys.executable, "-m", "layers", "postgres-ddl", "--prefix", "cfgtest"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "CREATE" in done.stdout and "cfgtest" in done.stdout


def test_postgres_ddl_without_the_backend_names_the_extra() -> None:
    code = "import sys; sys.modules['layers_postgres'] = None\nfrom layers.cli import main\nmain(['postgres-ddl'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "pip install 'channel-layers[postgres]'" in done.stderr


def _layer_classes() -> list[type[BaseChannelLayer]]:
    from layers_amqp import AMQPChannelLayer
    from layers_postgres import PostgresChannelLayer
    from layers_redis import RedisChannelLayer

    return [layers.InMemoryChannelLayer, RedisChannelLayer, PostgresChannelLayer, AMQPChannelLayer]


@pytest.mark.parametrize("cls", _layer_classes(), ids=lambda cls: cls.__name__)
def test_declared_options_match_the_constructor(cls: type[BaseChannelLayer]) -> None:
    """Every declared option is a keyword of the constructor with the declared default, and every keyword of the
    constructor (besides what a URL addresses: hosts, dsn, url) is declared."""
    declared = {**COMMON, **cls.url_options.own}
    keywords: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass) and issubclass(klass, BaseChannelLayer):
            for name, parameter in inspect.signature(klass.__init__).parameters.items():
                if parameter.kind is parameter.KEYWORD_ONLY or (
                        parameter.kind is parameter.POSITIONAL_OR_KEYWORD and name != "self"):
                    keywords[name] = parameter.default
    addressed = {"hosts", "dsn", "url", "host", "ssl_context"}  # the server, not an option of the query
    assert set(declared) == set(keywords) - addressed
    for name, option in declared.items():
        assert option.default == keywords[name], name


@pytest.mark.parametrize(("url", "typo", "hint"), [
    ("memory://?local_capacity=3", "local_capacity", "use capacity"),
    ("postgresql://127.0.0.1/test?PSYCOPG_OPTIONS=x", "PSYCOPG_OPTIONS", "one dsn="),
])
def test_hints_for_other_layers_options(url: str, typo: str, hint: str) -> None:
    with pytest.raises(layers.ConfigError, match=rf"'{typo}' \(.*{hint}"):
        layers.from_url(url)


def test_backend_hints_are_the_backends_own() -> None:
    from layers_postgres import PostgresChannelLayer
    from layers_redis import RedisChannelLayer

    with pytest.raises(layers.ConfigError, match=r"'host' \(use hosts="):
        RedisChannelLayer(host="127.0.0.1")

    with pytest.raises(layers.ConfigError, match=r"'HOST' \(PostgreSQL takes one dsn="):
        PostgresChannelLayer(HOST="db")
    with pytest.raises(layers.ConfigError) as caught:
        layers.InMemoryChannelLayer(HOST="db")
    assert "PostgreSQL" not in str(caught.value)


def test_driver_options_stay_in_the_url_exactly_as_written() -> None:
    from layers_postgres import PostgresChannelLayer

    layer = PostgresChannelLayer.from_url("postgres:///test?host=%2Ftmp&capacity=4&schema=s1&application_name=a+b")
    assert layer.dsn == "postgresql:///test?host=%2Ftmp&application_name=a+b"
    assert (layer.capacity, layer.config.names.schema) == (4, "s1")


def test_declared_secret_options_are_redacted() -> None:
    assert redact_url("amqp://h/?token=abc&heartbeat=3", {"token"}) == "amqp://h/?token=***&heartbeat=3"
    assert redact_url("host=h mytoken = 'a b' port=1", {"mytoken"}) == "host=h mytoken = *** port=1"
    from layers_postgres import PostgresChannelLayer

    assert "listen_dsn" in PostgresChannelLayer.url_options.secrets
    assert {"password", "sentinel_password"} <= _layer_classes()[1].url_options.secrets


# -- import cycles -------------------------------------------------------------------------------------------


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at import time or later (an import deferred into a function only
    hides a cycle), except under ``if TYPE_CHECKING:``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                visit(node.orelse)
            else:
                visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])

    visit(ast.parse(path.read_text()).body)
    edges = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def test_no_import_cycle_among_the_project_modules() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "layers.settings" not in graph["layers.core"], "layers.core imports layers.settings"
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                walk(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    # A package importing its own submodules (layers -> layers.core) is the one allowed loop: a submodule that
    # imports its package's __init__ runs after the package has started; the rule is about sibling modules.
    real = [cycle for cycle in cycles if not _through_package_init(cycle)]
    assert not real, "import cycles:\n" + "\n".join(real)


def _through_package_init(cycle: str) -> bool:
    steps = cycle.split(" -> ")
    return any(step in PACKAGES for step in steps)


@pytest.mark.parametrize("module", sorted(set(_modules()) - {"layers.__main__"}))
def test_every_module_imports_on_its_own(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("cls", _layer_classes()[1:], ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("timeout", [0, -1.5, True, "5", float("nan")])
def test_every_server_layer_refuses_a_bad_timeout_the_same_way(cls: type[BaseChannelLayer], timeout: object) -> None:
    with pytest.raises(layers.ConfigError, match=r"^timeout must be a positive number of seconds, not "):
        cls(timeout=timeout)
