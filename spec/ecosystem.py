"""``python -m spec.ecosystem``: the conformance report of real channel layers from the package index, as one table.

Every layer runs in a child ``python -m spec ... --json`` of its own (so one layer's imports, event loops or crash
cannot touch the next), under a prefix, database, vhost or file of this run's own: nothing another program stored
is flushed.  Install the layers first (``pip install 'channel-layers[compat]'``; ``./dev compat`` does both).

Each failure in the table carries a one-line reason.  The reasons are written by a person who read that layer's
code (``REVIEWED`` below): a failure nobody has reviewed yet is shown as such, so a new failure after a release of
a layer (or of this suite) is visible instead of silently explained away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["LAYERS", "EcosystemLayer", "main"]

REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
AMQP = "amqp://guest:guest@127.0.0.1:5672"
NATS = "nats://127.0.0.1:4222"


@dataclass
class Setup:
    """What one layer needs from this run: a target, its options, knobs, and what to remove afterwards."""

    target: str
    config: dict[str, Any] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: The layer cannot be confined by a prefix, but this run gave it a server, database or vhost of its own.
    private: bool = False
    cleanup: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class EcosystemLayer:
    """One row of the table: a layer class and how to point it at a server of this machine."""

    name: str
    distribution: str  # what to pip install ("channel-layers" for ours)
    service: str | None  # "host:port" that must answer, or None
    prepare: Callable[[str], Setup]  # run tag -> setup
    note: str = ""


# -- setups -------------------------------------------------------------------------------------------------------


def _ours(url: str) -> Callable[[str], Setup]:
    def prepare(tag: str) -> Setup:
        sep = "&" if "?" in url else "?"
        return Setup(f"{url}{sep}prefix=compat{tag}")

    return prepare


#: What the authors of pub/sub designs document their layers lack, declared for them (knob ``lacks``).
_PUBSUB_LACKS = {"lacks": ["capacity", "multi_loop", "foreign_members"]}


def _shared(target: str, config: dict[str, Any], knobs: dict[str, Any] | None = None) -> Setup:
    """A layer whose instances share a server: a second OS process reaches it through the same class and options."""
    shared_knobs = {"shares_state": True, "process_target": target, "process_config": config, **(knobs or {})}
    return Setup(target, config, shared_knobs)


def _channels_redis(tag: str) -> Setup:
    return _shared("channels_redis.core.RedisChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"})


def _channels_redis_pubsub(tag: str) -> Setup:
    return _shared("channels_redis.pubsub.RedisPubSubChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"},
                   _PUBSUB_LACKS)


def _channels_valkey(tag: str) -> Setup:
    return _shared("channels_valkey.core.ValkeyChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"})


def _channels_valkey_pubsub(tag: str) -> Setup:
    return _shared("channels_valkey.pubsub.ValkeyPubSubChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"},
                   _PUBSUB_LACKS)


def _channels_nats(tag: str) -> Setup:
    return _shared("channels_nats.NatsChannelLayer", {"servers": NATS, "prefix": f"compat{tag}"}, _PUBSUB_LACKS)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _channels_rabbitmq(tag: str) -> Setup:
    """A private vhost: channels_rabbitmq has no prefix option and no flush; the vhost goes when the run ends."""
    vhost = f"compat-{tag}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    setup = _shared("channels_rabbitmq.core.RabbitmqChannelLayer", {"host": f"{AMQP}/{vhost}"})
    setup.private = True
    setup.cleanup.append(lambda: _rabbitmqctl("delete_vhost", vhost))
    return setup


def _django_settings(directory: Path, name: str, body: str) -> dict[str, str]:
    """Write a settings module into ``directory``; the environment that makes the child process use it."""
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH", "")]))
    return {"PYTHONPATH": path, "DJANGO_SETTINGS_MODULE": name}


def _migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], check=True, timeout=300,
                   env={**os.environ, **env}, capture_output=True)


def _psql(sql: str) -> None:
    subprocess.run(["psql", f"{POSTGRES}/postgres", "-qAtc", sql], check=True, capture_output=True, timeout=60)


def _channels_postgres(tag: str) -> Setup:
    """A private database, migrated for channels_postgres and dropped afterwards (its table names are fixed)."""
    database = f"compat_{tag}"
    _psql(f"CREATE DATABASE {database}")
    directory = Path(tempfile.mkdtemp(prefix="layers-compat-"))
    # Every key Django's DatabaseWrapper reads: channels_postgres builds one from its CONFIG without Django's defaults.
    db = {"ENGINE": "django.db.backends.postgresql", "NAME": database, "USER": "postgres", "PASSWORD": "",
          "HOST": "127.0.0.1", "PORT": "5432", "OPTIONS": {}, "TIME_ZONE": None, "CONN_MAX_AGE": 0,
          "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False}
    env = _django_settings(directory, "compat_settings", f"""
        SECRET_KEY = "compat-only"
        USE_TZ = True
        INSTALLED_APPS = ["channels_postgres"]
        DATABASES = {{"default": {db!r}, "channels_postgres": {db!r}}}
        """)
    setup = _shared("channels_postgres.core.PostgresChannelLayer", dict(db))
    setup.env, setup.private = env, True
    setup.cleanup += [lambda: _psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
                      lambda: shutil.rmtree(directory, ignore_errors=True)]
    _migrate(env)
    return setup


def _channels_lite(tag: str) -> Setup:
    """A SQLite file of this run's own, migrated; the whole directory goes afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="layers-compat-"))
    db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(directory / "channels.sqlite3")}
    env = _django_settings(directory, "compat_settings", f"""
        SECRET_KEY = "compat-only"
        USE_TZ = True
        INSTALLED_APPS = ["channels_lite"]
        DATABASES = {{"default": {db!r}}}
        """)
    setup = _shared("channels_lite.layers.core.SQLiteChannelLayer", {"database": "default"})
    setup.env, setup.private = env, True
    setup.cleanup.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    _migrate(env)
    return setup


def _channels_inmemory(tag: str) -> Setup:
    return Setup("channels.layers.InMemoryChannelLayer")


LAYERS: list[EcosystemLayer] = [
    EcosystemLayer("layers memory://", "channel-layers", None, _ours("memory://")),
    EcosystemLayer("layers Redis", "channel-layers", "127.0.0.1:6379", _ours(REDIS)),
    EcosystemLayer("layers PostgreSQL", "channel-layers", "127.0.0.1:5432", _ours(f"{POSTGRES}/test")),
    EcosystemLayer("layers AMQP", "channel-layers", "127.0.0.1:5672", _ours(f"{AMQP}/%2F")),
    EcosystemLayer("channels InMemoryChannelLayer", "channels", None, _channels_inmemory),
    EcosystemLayer("channels_redis RedisChannelLayer", "channels-redis", "127.0.0.1:6379", _channels_redis),
    EcosystemLayer("channels_redis RedisPubSubChannelLayer", "channels-redis", "127.0.0.1:6379",
                   _channels_redis_pubsub),
    EcosystemLayer("channels_valkey ValkeyChannelLayer", "channels-valkey", "127.0.0.1:6379", _channels_valkey),
    EcosystemLayer("channels_valkey ValkeyPubSubChannelLayer", "channels-valkey", "127.0.0.1:6379",
                   _channels_valkey_pubsub),
    EcosystemLayer("channels_nats NatsChannelLayer", "channels-nats", "127.0.0.1:4222", _channels_nats),
    EcosystemLayer("channels_postgres PostgresChannelLayer", "channels-postgres", "127.0.0.1:5432",
                   _channels_postgres),
    EcosystemLayer("channels_rabbitmq RabbitmqChannelLayer", "channels-rabbitmq", "127.0.0.1:5672",
                   _channels_rabbitmq),
    EcosystemLayer("channels_lite SQLiteChannelLayer", "channels-lite", None, _channels_lite),
]

#: (layer name, requirement id) -> why that layer fails it, from reading the layer's code.
REVIEWED: dict[tuple[str, str], str] = {}


# -- running ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    layer: EcosystemLayer
    version: str
    report: dict[str, Any] | None = None
    problem: str = ""  # why there is no report (not installed, server down, crash)
    seconds: float = 0.0
    declared: list[str] = field(default_factory=list)  # capabilities declared lacking on the author's word


def _reachable(service: str) -> bool:
    host, _, port = service.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=2):
        return True
    return False


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _spec_command(setup: Setup, out: Path) -> list[str]:
    command = [sys.executable, "-m", "spec", setup.target, "--json", str(out)]
    if setup.config:
        command += ["--config", json.dumps(setup.config)]
    if setup.private:
        command.append("--yes-flush")
    for name, value in setup.knobs.items():
        command += ["--knob", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
    return command


def run_layer(layer: EcosystemLayer, timeout: float) -> Row:
    installed = _version(layer.distribution)
    row = Row(layer, installed or "")
    if installed is None:
        row.problem = f"not installed (pip install {layer.distribution})"
        return row
    if layer.service and not _reachable(layer.service):
        row.problem = f"its server {layer.service} is not reachable"
        return row
    tag = uuid.uuid4().hex[:8]
    started = time.monotonic()
    setup = layer.prepare(tag)
    row.declared = list(setup.knobs.get("lacks", []))
    try:
        with tempfile.TemporaryDirectory(prefix="layers-compat-") as tmp:
            out = Path(tmp) / "report.json"
            env = {**os.environ, **setup.env}
            try:
                done = subprocess.run(_spec_command(setup, out), env=env, capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                row.problem = f"the suite did not finish within {timeout:g}s"
                return row
            if out.exists():
                row.report = json.loads(out.read_text())
            else:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                row.problem = f"runner exit {done.returncode} without a report: {' / '.join(tail)}"
    finally:
        for step in setup.cleanup:
            with contextlib.suppress(Exception):
                step()
        row.seconds = time.monotonic() - started
    return row


# -- the table ----------------------------------------------------------------------------------------------------


def _requirements(report: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = report["requirements"]
    return found


_FAILING = ("FAIL", "untested")


def _tier_cell(report: dict[str, Any], tier: str) -> str:
    rows = [r for r in _requirements(report) if r["tier"] == tier]
    failed = sum(r["status"] in _FAILING for r in rows)
    passed = sum(r["status"] == "pass" for r in rows)
    not_applicable = sum(r["status"] == "n/a" for r in rows)
    not_run = len(rows) - passed - failed - not_applicable
    verdict = f"**FAIL {failed}**" if failed else "pass"
    counts = [f"{passed}/{passed + failed} passed"]
    counts += [f"{not_applicable} n/a"] if not_applicable else []
    counts += [f"{not_run} not run"] if not_run else []
    return f"{verdict} ({', '.join(counts)})"


def render(rows: Sequence[Row], tiers: Sequence[str], command: str) -> str:
    lines = [
        "# Compatibility of channel layers with the channel-layer spec",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} (Python {sys.version.split()[0]}), every layer",
        "installed from the package index and run unmodified against the servers of one machine.",
        "Tiers: **core** = what the Channels spec requires; **recommended** = what Channels users rely on;",
        "**strict** = this project's own additions (see spec/SPEC.md). Cells: verdict (passed/applicable, n/a =",
        "not applicable by a declared capability, or skipped).",
        "",
        "| layer | version | " + " | ".join(tiers) + " | run |",
        "|---|---|" + "---|" * len(tiers) + "---|",
    ]
    for row in rows:
        if row.report is None:
            lines.append(f"| {row.layer.name} | {row.version or '-'} | " + " | ".join(["-"] * len(tiers))
                         + f" | no report: {row.problem} |")
        else:
            lines.append(f"| {row.layer.name} | {row.version} | "
                         + " | ".join(_tier_cell(row.report, tier) for tier in tiers) + f" | {row.seconds:.0f} s |")
    lines += ["", "## Failures, with the reason read from each layer's code", ""]
    for row in rows:
        lines += _failures(row)
    return "\n".join(lines) + "\n"


def _failures(row: Row) -> list[str]:
    if row.report is None:
        return [f"### {row.layer.name}", "", f"No report: {row.problem}.", ""]
    failed = [r for r in _requirements(row.report) if r["status"] in _FAILING]
    if not failed and not row.report.get("crash"):
        return []
    lines = [f"### {row.layer.name} {row.version}", ""]
    if row.declared:
        lines += [f"Declared lacking, as its documentation says: {', '.join(row.declared)}.", ""]
    if row.report.get("crash"):
        lines += [f"The runner reported a crash: {_first_line(row.report['crash'])}", ""]
    for result in failed:
        reason = REVIEWED.get((row.layer.name, result["id"]))
        shown = reason or f"(not reviewed yet) {_first_line(result.get('detail') or result['status'])}"
        lines.append(f"- {result['tier']} **{result['id']}** {result['title']}: {shown}")
    lines.append("")
    return lines


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spec.ecosystem", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here (default: stdout)")
    p.add_argument("--only", action="append", default=[], help="run only layers whose name contains this")
    p.add_argument("--timeout", type=float, default=900, help="seconds one layer's run may take")
    p.add_argument("--raw", type=Path, default=None, help="also write every report as JSON here")
    args = p.parse_args(argv)
    chosen = [layer for layer in LAYERS if not args.only or any(o in layer.name for o in args.only)]
    rows = []
    for layer in chosen:
        print(f"[ecosystem] {layer.name} ...", file=sys.stderr, flush=True)
        row = run_layer(layer, args.timeout)
        print(f"[ecosystem]   {row.problem or 'report'} ({row.seconds:.0f}s)", file=sys.stderr, flush=True)
        rows.append(row)
    tiers = _tiers(rows)
    command = "python -m spec.ecosystem" + "".join(f" --only '{o}'" for o in args.only)
    text = render(rows, tiers, command)
    if args.raw:
        args.raw.write_text(json.dumps({row.layer.name: row.report or row.problem for row in rows}, indent=1))
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _tiers(rows: Sequence[Row]) -> list[str]:
    order = ["core", "recommended", "strict"]
    seen = {r["tier"] for row in rows if row.report for r in _requirements(row.report)}
    return [t for t in order if t in seen] + sorted(seen - set(order))


if __name__ == "__main__":
    sys.exit(main())
