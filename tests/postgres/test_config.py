"""Construction, URLs and the DDL function (no server needed except where a fixture says so)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import layers
from layers import ConfigError
from layers_postgres import PostgresChannelLayer, ddl, drop_ddl


def test_from_url_splits_layer_options_from_the_dsn() -> None:
    layer = layers.from_url("postgres://u:secret@db.example:6432/app?capacity=7&schema=chan&durable=true"
                            "&timeout=2.5&max_pool_size=3&prepared_statements=false&sslmode=require&prefix=x")
    assert isinstance(layer, PostgresChannelLayer)
    assert layer.capacity == 7 and layer.prefix == "x"
    config = layer.config
    assert (config.names.schema, config.durable, config.timeout, config.max_pool_size) == ("chan", True, 2.5, 3)
    assert config.prepared_statements is False
    assert config.dsn == "postgresql://u:secret@db.example:6432/app?sslmode=require"
    assert "secret" not in repr(layer) and "***" in repr(layer)


@pytest.mark.parametrize("options", [{"timeout": 0}, {"max_pool_size": 0}, {"dsn": ""}, {"schema": "a$b"}])
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        PostgresChannelLayer(**{"dsn": "postgresql://localhost/x", **options})


def test_bad_url_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="durable"):
        layers.from_url("postgresql://localhost/x?durable=maybe")


def test_ddl_text() -> None:
    text = ddl("myapp", schema="layers")
    assert 'CREATE UNLOGGED TABLE IF NOT EXISTS "layers"."myapp_msg"' in text
    assert 'CREATE SCHEMA IF NOT EXISTS "layers"' in text
    assert "UNLOGGED" not in ddl("myapp", durable=True)
    assert '"myapp_msg"' in drop_ddl("myapp")


def test_ddl_runs_twice_and_the_layer_uses_it(dsn: str, prefix: str, sql: psycopg.Connection[Any]) -> None:
    import asyncio

    sql.execute(ddl(prefix).encode())
    sql.execute(ddl(prefix).encode())  # idempotent

    async def main() -> None:
        layer = PostgresChannelLayer(dsn, prefix=prefix)
        await layer.send("ddl.check", {"ok": True})
        assert await layer.receive("ddl.check") == {"ok": True}
        await layer.close()

    asyncio.run(main())


def test_long_prefix_names_stay_within_identifier_limits(dsn: str, sql: psycopg.Connection[Any]) -> None:
    import asyncio

    prefix = "p" * 80
    try:
        async def main() -> None:
            layer = PostgresChannelLayer(dsn, prefix=prefix)
            await layer.send("long", {"n": 1})
            assert await layer.receive("long") == {"n": 1}
            await layer.close()

        asyncio.run(main())
    finally:
        sql.execute(drop_ddl(prefix).encode())
