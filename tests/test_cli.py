"""The ``layers`` command as a user runs it: a subprocess, its exit status, what it prints, on real servers."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL, free_port, port_open

COMMANDS = ["check", "send", "group-send", "group-add", "group-discard", "receive", "bench", "postgres-ddl"]


def layers(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layers", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def _server(url: str, default_port: int) -> str:
    parts = urlsplit(url)
    if not port_open(parts.port or default_port, parts.hostname or "127.0.0.1"):
        pytest.skip(f"no server at {url} (./dev test starts one)")
    return url


def _with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


@pytest.fixture(params=["redis", "postgresql", "amqp"])
def layer_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A server layer URL under a prefix of this test's own; what it leaves is removed afterwards."""
    prefix = f"cli{secrets.token_hex(4)}"
    base = {"redis": (REDIS_URL, 6379), "postgresql": (POSTGRES_DSN, 5432), "amqp": (AMQP_URL, 5672)}
    url = _with_prefix(_server(*base[request.param]), prefix)
    yield url
    _flush(url)
    if request.param == "postgresql":
        _psql_apply(layers("postgres-ddl", "--prefix", prefix, "--drop").stdout)


def _flush(url: str) -> None:
    import asyncio

    import layers as layers_package

    async def flush() -> None:
        layer = layers_package.from_url(url)
        try:
            await layer.flush()
        finally:
            await layer.close()

    asyncio.run(flush())


def _psql_apply(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(sql)


# -- help ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_plain_text_with_examples(command: str | None) -> None:
    done = layers(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    assert "``" not in done.stdout and ":class:" not in done.stdout, done.stdout
    if command != "check":  # the conformance command's help belongs to the spec runner
        assert "examples:" in done.stdout and "layers " in done.stdout.split("examples:")[1], done.stdout


# -- send / receive / groups --------------------------------------------------------------------------------


def test_send_reads_the_message_from_stdin_and_from_a_file(layer_url: str, tmp_path: Path) -> None:
    channel = "cli.test"
    done = layers("send", layer_url, channel, "-", stdin='{"type": "from.stdin", "n": 1}')
    assert (done.returncode, done.stdout.strip()) == (0, f"sent to {channel}"), done.stderr
    big = {"type": "from.file", "body": "x" * 1_000_000}  # too long for one command-line argument
    path = tmp_path / "message.json"
    path.write_text(json.dumps(big))
    done = layers("send", layer_url, channel, f"@{path}")
    assert done.returncode == 0, done.stderr
    received = layers("receive", layer_url, channel, "-n", "2", "--timeout", "20")
    assert received.returncode == 0, received.stderr
    first, second = (json.loads(line) for line in received.stdout.splitlines())
    assert first == {"type": "from.stdin", "n": 1}
    assert second == big


def test_bad_message_arguments_say_what_is_wrong(tmp_path: Path) -> None:
    done = layers("send", "memory://", "c", "[1, 2]")
    assert done.returncode == 1 and "must be a JSON object" in done.stderr, done.stderr
    done = layers("send", "memory://", "c", "-", stdin="{not json")
    assert done.returncode == 1 and "read from stdin is not valid JSON" in done.stderr, done.stderr
    done = layers("send", "memory://", "c", f"@{tmp_path / 'missing.json'}")
    assert done.returncode == 1 and "cannot read the message file" in done.stderr, done.stderr


def test_group_add_send_discard(layer_url: str) -> None:
    group = "cli-room"
    for channel in ("cli.a", "cli.b"):
        done = layers("group-add", layer_url, group, channel)
        assert (done.returncode, done.stdout.strip()) == (0, f"{channel} added to group {group}"), done.stderr
    done = layers("group-send", layer_url, group, '{"type": "hello"}')
    assert done.returncode == 0, done.stderr
    amqp = layer_url.startswith("amqp")
    assert done.stdout.strip() == (f"sent to group {group} (this backend cannot count the members it reached)"
                                   if amqp else f"sent to group {group}: reached 2 of 2 member(s)")
    done = layers("group-discard", layer_url, group, "cli.a")
    assert (done.returncode, done.stdout.strip()) == (0, f"cli.a removed from group {group}"), done.stderr
    done = layers("group-send", layer_url, group, '{"type": "second"}')
    assert done.returncode == 0, done.stderr
    if not amqp:
        assert done.stdout.strip() == f"sent to group {group}: reached 1 of 1 member(s)"
    a = layers("receive", layer_url, "cli.a", "-n", "1", "--timeout", "20")
    assert [json.loads(line) for line in a.stdout.splitlines()] == [{"type": "hello"}], a.stderr
    b = layers("receive", layer_url, "cli.b", "-n", "2", "--timeout", "20")
    assert [json.loads(line) for line in b.stdout.splitlines()] == [{"type": "hello"}, {"type": "second"}]
    # cli.a left the group: the second message never reaches it
    assert layers("receive", layer_url, "cli.a", "--timeout", "2").returncode == 1


@pytest.mark.parametrize("command", ["send", "receive"])
@pytest.mark.parametrize("scheme", ["redis", "postgresql", "amqp"])
def test_an_unreachable_server_is_one_error_line(scheme: str, command: str) -> None:
    pytest.importorskip({"redis": "redis", "postgresql": "psycopg", "amqp": "pika"}[scheme])
    port = free_port()
    url = {"redis": f"redis://127.0.0.1:{port}/0", "postgresql": f"postgresql://postgres@127.0.0.1:{port}/test",
           "amqp": f"amqp://guest:guest@127.0.0.1:{port}/%2F"}[scheme] + "?timeout=2"
    args = ["c", '{"type": "x"}'] if command == "send" else ["c", "--timeout", "30"]
    done = layers(command, url, *args)
    assert done.returncode == 1, done
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("layers: error:"), done.stderr


# -- postgres-ddl --drop ------------------------------------------------------------------------------------


def test_postgres_ddl_drop_leaves_nothing_behind() -> None:
    psycopg = pytest.importorskip("psycopg")
    _server(POSTGRES_DSN, 5432)
    prefix, schema = f"ddl{secrets.token_hex(4)}", f"ddl_schema_{secrets.token_hex(4)}"
    create = layers("postgres-ddl", "--prefix", prefix, "--schema", schema)
    drop = layers("postgres-ddl", "--prefix", prefix, "--schema", schema, "--drop")
    assert create.returncode == drop.returncode == 0, create.stderr + drop.stderr
    assert drop.stdout.startswith("-- removes every table and function"), drop.stdout

    def objects(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[object, ...]]:
        return conn.execute(
            "select 'relation', c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %(s)s union all"
            " select 'function', p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = %(s)s union all"
            " select 'type', t.typname from pg_type t join pg_namespace n on n.oid = t.typnamespace"
            " where n.nspname = %(s)s", {"s": schema}).fetchall()

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        try:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(create.stdout)
            # the layer also works in these tables (and may create more on first use)
            url = _with_prefix(f"{POSTGRES_DSN}?schema={schema}", prefix)
            assert layers("send", url, "ddl.test", '{"type": "x"}').returncode == 0
            assert layers("group-add", url, "ddl-group", "ddl.test").returncode == 0
            assert len(objects(conn)) >= 4
            conn.execute(drop.stdout)
            assert objects(conn) == []
        finally:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- bench: errors before any workload ----------------------------------------------------------------------


def test_bench_with_a_missing_peer_names_the_pip_command() -> None:
    code = ("import sys; sys.modules['channels_redis'] = None; from layers.cli import main; "
            "sys.exit(main(['bench', '--vs', 'channels_redis', '-n', '10']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "pip install channels-redis" in done.stderr and "channel-layers[bench]" in done.stderr, done.stderr
    assert done.stdout.strip() == "", done.stdout  # no table, no workload


@pytest.mark.parametrize("target", ["ours", "peer"])
def test_bench_against_an_unreachable_server_stops_at_once(target: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    args = [url] if target == "ours" else ["--vs", f"channels_redis={url}"]
    if target == "peer":
        pytest.importorskip("channels_redis", reason="the peer is not installed: pip install 'channel-layers[bench]'")
    started = time.monotonic()
    done = layers("bench", *args, "-n", "10")
    assert done.returncode == 3, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cannot reach" in done.stderr and "nothing was run" in done.stderr, done.stderr
    assert done.stdout.strip() == "" and time.monotonic() - started < 30


def test_commands_work_without_pytest() -> None:
    """`pip install 'channel-layers[cli]'` has no pytest: only `layers check` needs it, and says so."""
    code = ("import sys; sys.modules['pytest'] = None; from layers.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    bench = subprocess.run([sys.executable, "-c", code, "bench", "-n", "50", "--rounds", "1", "--workload", "named"],
                           capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0 and "named" in bench.stdout, bench.stderr
    check = subprocess.run([sys.executable, "-c", code, "check", "memory://"], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 2 and "pip install pytest" in check.stderr, check.stderr
