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

__all__ = ["LAYERS", "REVIEWED", "EcosystemLayer", "NotRunnable", "Row", "main", "render", "run_layer"]

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
    #: Capabilities (spec.harness.DECLARABLE) the layer lacks on its author's word -> where the author says so.
    declared: dict[str, str] = field(default_factory=dict)
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


class NotRunnable(Exception):
    """This machine lacks what the layer needs (a server of its kind): the row says so instead of failing."""


#: Redis Pub/Sub designs (channels_redis's RedisPubSubChannelLayer and its fork in channels_valkey): what their code
#: shows they lack, with where it shows it (their README documents none of it).
_REDIS_PUBSUB_LACKS = {
    "capacity": "pubsub.py: no capacity option (RedisPubSubLoopLayer swallows extra options in **kwargs) and "
                "_receive_message files every message into an unbounded asyncio.Queue()",
    "named_backlog": "pubsub.py: send() is a bare PUBLISH and a named channel is SUBSCRIBEd only by its first "
                     "receive(), so what is sent before that reaches nobody",
    "multi_loop": "pubsub.py: _get_layer keeps one RedisPubSubLoopLayer per running event loop; channels made in "
                  "one loop exist only there",
    "foreign_members": "pubsub.py group_add: RuntimeError \"You can only call group_add() on channels that exist "
                       "in-process\"",
}

_NATS_LACKS = {
    "capacity": "layer.py docstring and README: \"ChannelFull cannot be raised on the sender's side over "
                "pub/sub\"; a full mailbox drops at the receiver",
    "multi_loop": "layer.py docstring: \"A process-specific channel belongs to the loop whose new_channel() "
                  "handed it out\"",
    "foreign_members": "README: receive or group_add of a channel another process or event loop made raises "
                       "ValueError (layer.py _mailbox)",
}


def _shared(target: str, config: dict[str, Any], declared: dict[str, str] | None = None) -> Setup:
    """A layer whose instances share a server.  The runner gives the second OS process the same target and options
    (including the fresh prefix it substitutes), so neither is passed here."""
    knobs: dict[str, Any] = {"shares_state": True}
    if declared:
        knobs["lacks"] = list(declared)
    return Setup(target, config, knobs, dict(declared or {}))


def _channels_redis(tag: str) -> Setup:
    return _shared("channels_redis.core.RedisChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"})


def _channels_redis_pubsub(tag: str) -> Setup:
    return _shared("channels_redis.pubsub.RedisPubSubChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"},
                   _REDIS_PUBSUB_LACKS)


def valkey_server_binary() -> str | None:
    """``LAYERS_VALKEY_SERVER`` or ``valkey-server`` on PATH: channels_valkey's Lua scripts call Valkey's
    ``server`` global, which Redis lacks, so its core layer needs a real Valkey."""
    return os.environ.get("LAYERS_VALKEY_SERVER") or shutil.which("valkey-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _private_valkey() -> tuple[str, Callable[[], None]]:
    """Start a Valkey server of this run's own on a free port; its URL and how to stop it."""
    binary = valkey_server_binary()
    if binary is None:
        raise NotRunnable("needs a Valkey server (its Lua scripts use Valkey's `server` global, which Redis "
                          "lacks): put valkey-server on PATH or set LAYERS_VALKEY_SERVER")
    port = _free_port()
    directory = tempfile.mkdtemp(prefix="layers-compat-valkey-")
    try:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise NotRunnable(f"needs a Valkey server: {binary} does not start ({exc})") from exc

    def stop() -> None:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(directory, ignore_errors=True)

    deadline = time.monotonic() + 20
    while not _reachable(f"127.0.0.1:{port}"):
        if server.poll() is not None or time.monotonic() > deadline:
            stop()
            raise NotRunnable(f"{binary} did not start on port {port}")
        time.sleep(0.1)
    return f"redis://127.0.0.1:{port}/0", stop


def _channels_valkey(tag: str) -> Setup:
    url, stop = _private_valkey()
    setup = _shared("channels_valkey.core.ValkeyChannelLayer", {"hosts": [url], "prefix": f"compat{tag}"})
    setup.cleanup.append(stop)
    return setup


def _channels_valkey_pubsub(tag: str) -> Setup:
    """PUBLISH/SUBSCRIBE only: Redis serves it as well as Valkey."""
    declared = {name: text.replace("pubsub.py", "channels_valkey/pubsub.py (channels_redis's, forked)", 1)
                for name, text in _REDIS_PUBSUB_LACKS.items()}
    return _shared("channels_valkey.pubsub.ValkeyPubSubChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"},
                   declared)


def _channels_nats(tag: str) -> Setup:
    return _shared("channels_nats.NatsChannelLayer", {"servers": NATS, "prefix": f"compat{tag}"}, _NATS_LACKS)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _channels_rabbitmq(tag: str) -> Setup:
    """A private vhost: channels_rabbitmq has no prefix option and no flush; the vhost goes when the run ends."""
    vhost = f"compat-{tag}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    setup = _shared("spec.ecosystem.channels_rabbitmq_layer", {"host": f"{AMQP}/{vhost}"})
    setup.private = True
    setup.cleanup.append(lambda: _rabbitmqctl("delete_vhost", vhost))
    return setup


def channels_rabbitmq_layer(**options: Any) -> Any:
    """channels_rabbitmq's RabbitmqChannelLayer, with the suite's ``capacity`` passed as ``remote_capacity``: its
    README names that option for what Channels calls capacity ("When remote_capacity messages are queued in RabbitMQ,
    send() ... will raise ChannelFull").  Every other option goes through unchanged."""
    from channels_rabbitmq.core import RabbitmqChannelLayer  # only installed for this table

    if "capacity" in options:
        options["remote_capacity"] = options.pop("capacity")
    return RabbitmqChannelLayer(**options)


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
    db: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql", "NAME": database, "USER": "postgres", "PASSWORD": "",
        "HOST": "127.0.0.1", "PORT": "5432", "OPTIONS": {}, "TIME_ZONE": None, "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False,
    }
    env = _django_settings(directory, "compat_settings", f"""
        SECRET_KEY = "compat-only"
        USE_TZ = True
        INSTALLED_APPS = ["channels_postgres"]
        DATABASES = {{"default": {db!r}, "channels_postgres": {db!r}}}
        """)
    setup = _shared("channels_postgres.core.PostgresChannelLayer", dict(db), {
        "capacity": "README, channel_capacity: \"there's no channel capacity\" (core.py never raises ChannelFull)"})
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
    EcosystemLayer("channels_valkey ValkeyChannelLayer", "channels-valkey", None, _channels_valkey,
                   "run against a private valkey-server of this run (its Lua scripts need Valkey, not Redis)"),
    EcosystemLayer("channels_valkey ValkeyPubSubChannelLayer", "channels-valkey", "127.0.0.1:6379",
                   _channels_valkey_pubsub),
    EcosystemLayer("channels_nats NatsChannelLayer", "channels-nats", "127.0.0.1:4222", _channels_nats),
    EcosystemLayer("channels_postgres PostgresChannelLayer", "channels-postgres", "127.0.0.1:5432",
                   _channels_postgres),
    EcosystemLayer("channels_rabbitmq RabbitmqChannelLayer", "channels-rabbitmq", "127.0.0.1:5672",
                   _channels_rabbitmq, "run through spec.ecosystem.channels_rabbitmq_layer, which passes the "
                   "suite's `capacity` as its documented `remote_capacity`"),
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
    problem: str = ""  # why there is no report (not installed, server down, crash), short enough for a table cell
    problem_detail: str = ""  # the whole story, shown below the table
    seconds: float = 0.0
    declared: dict[str, str] = field(default_factory=dict)  # capability -> where its author says it is lacking


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
        row.problem = "not installed"
        row.problem_detail = f"not installed here (pip install {layer.distribution})"
        return row
    if layer.service and not _reachable(layer.service):
        row.problem = f"server {layer.service} not reachable"
        row.problem_detail = f"its server {layer.service} did not answer, so it was not run"
        return row
    tag = uuid.uuid4().hex[:8]
    started = time.monotonic()
    try:
        setup = layer.prepare(tag)
    except NotRunnable as exc:
        row.problem = f"not run: {str(exc).split(' (')[0].split(':')[0]}"
        row.problem_detail = f"not run: {exc}"
        return row
    except (OSError, subprocess.SubprocessError) as exc:  # a database, vhost or migration this run could not make
        row.problem = "setup failed"
        row.problem_detail = f"setting up its server state failed: {exc!r}"
        return row
    row.declared = dict(setup.declared)
    try:
        with tempfile.TemporaryDirectory(prefix="layers-compat-") as tmp:
            out = Path(tmp) / "report.json"
            env = {**os.environ, **setup.env}
            try:
                done = subprocess.run(_spec_command(setup, out), env=env, capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                row.problem = f"did not finish within {timeout:g} s"
                row.problem_detail = f"the suite did not finish within {timeout:g} s (--timeout)"
                return row
            if out.exists():
                row.report = json.loads(out.read_text())
            else:
                said = (done.stderr or done.stdout).strip()
                row.problem = f"runner exit {done.returncode}, no report"
                row.problem_detail = (f"`python -m spec` exited with {done.returncode} without a report; its last "
                                      f"output:\n\n```\n{_tail(said, 15)}\n```")
    finally:
        for step in setup.cleanup:
            with contextlib.suppress(Exception):
                step()
        row.seconds = time.monotonic() - started
    return row


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


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
        "installed from the package index and run unmodified against the servers of one machine, each under a",
        "prefix, database, vhost or file of the run's own.",
        "Tiers: **core** = what the Channels spec requires; **recommended** = what Channels users rely on;",
        "**strict** = this project's own additions (see spec/SPEC.md). Cells: verdict (passed/applicable, n/a =",
        "not applicable by a declared or discovered capability, or skipped).",
        "",
        "| layer | version | " + " | ".join(tiers) + " | run |",
        "|---|---|" + "---|" * len(tiers) + "---|",
    ]
    for row in rows:
        if row.report is None:
            lines.append(f"| {row.layer.name} | {row.version or '-'} | " + " | ".join(["-"] * len(tiers))
                         + f" | {row.problem} |")
        else:
            lines.append(f"| {row.layer.name} | {row.version} | "
                         + " | ".join(_tier_cell(row.report, tier) for tier in tiers) + f" | {row.seconds:.0f} s |")
    lines += [
        "",
        "## Failures, with the reason read from each layer's code",
        "",
        "Each reason was written by reading that layer's source (`REVIEWED` in spec/ecosystem.py); a failure",
        "marked *not reviewed* is new since then and has no explanation yet.",
        "",
    ]
    for row in rows:
        lines += _failures(row)
    return "\n".join(lines) + "\n"


def reason(row: Row, requirement: str) -> str | None:
    """The reviewed reason for ``row``'s layer failing ``requirement``, if somebody wrote one."""
    return REVIEWED.get((row.layer.name, requirement))


def _failures(row: Row) -> list[str]:
    heading = [f"### {row.layer.name} {row.version}".rstrip(), ""]
    notes = [f"Run: {row.layer.note}.", ""] if row.layer.note else []
    if row.report is None:
        return [*heading, *notes, f"No report: {row.problem_detail or row.problem}.", ""]
    failed = [r for r in _requirements(row.report) if r["status"] in _FAILING]
    if not failed and not row.report.get("crash") and not row.declared:
        return []
    lines = [*heading, *notes]
    if row.declared:
        lines += ["Declared lacking, as its documentation or code says:", ""]
        lines += [f"- {name}: {where}" for name, where in row.declared.items()]
        lines.append("")
    if row.report.get("crash"):
        lines += [f"The runner reported a crash: {_first_line(row.report['crash'])}", ""]
    for result in failed:
        shown = reason(row, result["id"])
        if shown is None:
            shown = f"*not reviewed*: {_first_line(result.get('detail') or result['status'])}"
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
