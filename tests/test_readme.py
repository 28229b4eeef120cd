"""README.md's code runs as written: every Python block as a script of its own, the first one on every backend."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from layers.cli import _parser
from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL, port_open

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", TEXT, re.S | re.M)
SHELL_BLOCKS = re.findall(r"^```sh\n(.*?)^```", TEXT, re.S | re.M)


def run_script(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # -X dev shows ResourceWarnings (a layer that was not closed leaves its connections to the collector).
    return subprocess.run([sys.executable, "-X", "dev", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(README.parent)})


def test_the_readme_has_python_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs_as_written(index: int, tmp_path: Path) -> None:
    code = PYTHON_BLOCKS[index]
    done = run_script(code, tmp_path)
    assert done.returncode == 0, f"README block {index}:\n{code}\n--- stderr ---\n{done.stderr}"
    assert "Warning" not in done.stderr, done.stderr


def _first_block() -> str:
    [first] = [block for block in PYTHON_BLOCKS if "asyncio.run(main())" in block][:1]
    return first


@pytest.mark.parametrize("backend", ["memory", "redis", "postgresql", "amqp"])
def test_the_first_example_prints_what_it_says_and_closes_its_layer(backend: str, tmp_path: Path) -> None:
    code = _first_block()
    assert 'layers.from_url("memory://")' in code
    if backend != "memory":
        url = {"redis": REDIS_URL, "postgresql": POSTGRES_DSN, "amqp": AMQP_URL}[backend]
        parts = urlsplit(url)
        if not port_open(parts.port or 0, parts.hostname or "127.0.0.1"):
            pytest.skip(f"no server at {url} (./dev test starts one)")
        prefix = f"readme{secrets.token_hex(4)}"
        code = code.replace('"memory://"', repr(f"{url}{'&' if '?' in url else '?'}prefix={prefix}"))
        code += f"\nasync def _flush():\n    layer = layers.from_url({url!r}, prefix={prefix!r})\n" \
                "    await layer.flush()\n    await layer.close()\nasyncio.run(_flush())\n"
        if backend == "postgresql":
            code += ("import psycopg, layers_postgres\nwith psycopg.connect(" + repr(url) + ", autocommit=True) as c:"
                     f"\n    c.execute(layers_postgres.drop_ddl({prefix!r}))\n")
    done = run_script(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["{'type': 'chat.message', 'text': 'hi'}",
                                        "{'type': 'chat.message', 'text': 'to everyone'}"], done.stdout
    assert "ResourceWarning" not in done.stderr and "Unclosed" not in done.stderr, done.stderr


def test_quick_start_is_two_commands() -> None:
    quick_start = TEXT.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", quick_start, re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["./dev bench", "./dev test"]


def test_every_layers_command_in_the_readme_exists() -> None:
    known = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    used = {line.split()[1] for block in SHELL_BLOCKS for line in block.splitlines()
            if line.startswith("layers ") and len(line.split()) > 1}
    assert used and used <= known, used - known
