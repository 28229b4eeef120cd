"""The Django app ``layers``: ``manage.py check`` in a real (minimal) Django project reports CHANNEL_LAYERS entries
that would fail at first use, and ``check --deploy --tag layers`` pings each layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import POSTGRES_DSN

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path, channel_layers: dict[str, object]) -> Path:
    """A Django project whose settings install the app ``layers`` and use ``channel_layers``."""
    (tmp_path / "site_settings.py").write_text(
        "SECRET_KEY = 'checks'\nINSTALLED_APPS = ['layers']\nUSE_TZ = True\n"
        f"CHANNEL_LAYERS = {json.dumps(channel_layers)}\n"
    )
    (tmp_path / "manage.py").write_text(
        "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_settings')\n"
        "from django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n"
    )
    return tmp_path


def _manage(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{project}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=project, capture_output=True, text=True,
                          timeout=60, env=env)


def _url(url: str) -> dict[str, object]:
    return {"BACKEND": "layers.from_url", "CONFIG": {"url": url}}


def test_check_reports_entries_that_would_fail_at_first_use(tmp_path: Path) -> None:
    project = _project(tmp_path, {
        "default": _url("memory://"),
        "scheme": _url("redsi://127.0.0.1:6379/0"),
        "option": _url("memory://?capacty=10"),
        "value": _url("memory://?expiry=-1"),
        "backend": {"BACKEND": "no_such_package.Layer"},
    })
    done = _manage(project, "check")
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "layers.E001" in line]
    assert len(errors) == 4, done.stderr
    expected = {"scheme": "redsi", "option": "capacty", "value": "expiry", "backend": "no_such_package"}
    for alias, says in expected.items():
        assert any(f"CHANNEL_LAYERS['{alias}']" in line and says in line for line in errors), (alias, done.stderr)
    assert "CHANNEL_LAYERS['default']" not in done.stderr


def test_a_good_configuration_passes_and_the_deploy_check_pings(tmp_path: Path) -> None:
    project = _project(tmp_path, {"default": _url("memory://"), "db": _url(POSTGRES_DSN)})
    done = _manage(project, "check")
    assert done.returncode == 0 and "no issues" in done.stdout, done.stdout + done.stderr
    done = _manage(project, "check", "--deploy", "--tag", "layers")
    assert done.returncode == 0 and "no issues" in done.stdout, done.stdout + done.stderr


def test_the_deploy_check_says_which_layer_does_not_answer(tmp_path: Path) -> None:
    project = _project(tmp_path, {"default": _url("memory://"),
                                  "down": _url("postgresql://postgres@127.0.0.1:1/test?timeout=2")})
    assert _manage(project, "check").returncode == 0  # plain checks never connect
    done = _manage(project, "check", "--deploy", "--tag", "layers")
    assert done.returncode == 1 and "layers.E002" in done.stderr, done.stdout + done.stderr
    assert "CHANNEL_LAYERS['down'] does not answer: BackendUnavailable" in done.stderr, done.stderr
