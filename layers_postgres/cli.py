"""``layers postgres-ddl``: registered under the ``layers.cli`` entry points, so the core CLI names no backend."""

from __future__ import annotations

import argparse
from typing import Any

from layers.cli import command_parser

from . import ddl, drop_ddl

__all__ = ["add_command"]


def add_command(commands: Any) -> None:
    """Add ``postgres-ddl`` to the ``layers`` subcommands ``commands``."""
    parser = command_parser(commands, "postgres-ddl", "print the SQL that creates (or, with --drop, removes) the "
                            "PostgreSQL layer's tables and functions", """
        layers postgres-ddl --prefix asgi | psql app
        layers postgres-ddl --prefix asgi --schema channels --durable > channels.sql
        layers postgres-ddl --prefix asgi --drop | psql app     # removes the tables: their messages are lost
        """)
    parser.add_argument("--prefix", default="asgi", help="the layer's prefix (default asgi)")
    parser.add_argument("--schema", default="public", help="the schema the tables live in (default public)")
    parser.add_argument("--durable", action="store_true", help="logged tables instead of UNLOGGED")
    parser.add_argument("--drop", action="store_true", help="print the SQL that drops the tables and functions")
    parser.set_defaults(run=_postgres_ddl)


def _postgres_ddl(args: argparse.Namespace) -> int:
    if args.drop:
        print(f"-- removes every table and function of the layer with prefix {args.prefix!r} in schema "
              f"{args.schema!r}; their messages and groups are lost")
        print(drop_ddl(prefix=args.prefix, schema=args.schema))
    else:
        print(ddl(prefix=args.prefix, schema=args.schema, durable=args.durable))
    return 0
