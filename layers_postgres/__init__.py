"""PostgreSQL channel layer: messages in a table, LISTEN/NOTIFY as the wake-up, no migrations.

``PostgresChannelLayer(dsn="postgresql://...")`` or ``layers.from_url("postgresql://...?capacity=500")``.
The tables are created on first use; :func:`ddl` prints the same SQL for teams that manage schemas themselves.
"""

from __future__ import annotations

from .layer import PostgresChannelLayer
from .schema import Names, create_sql, drop_sql

__all__ = ["PostgresChannelLayer", "ddl", "drop_ddl"]


def ddl(prefix: str = "asgi", schema: str = "public", durable: bool = False) -> str:
    """The SQL that creates the tables and functions of the layer with this ``prefix`` (idempotent)."""
    return create_sql(Names(schema, prefix), durable)


def drop_ddl(prefix: str = "asgi", schema: str = "public") -> str:
    """The SQL that drops every table and function of the layer with this ``prefix`` (its data is lost)."""
    return drop_sql(Names(schema, prefix))
