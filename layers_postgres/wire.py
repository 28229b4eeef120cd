"""The hot statements, run through libpq directly (``conn.pgconn``) instead of ``AsyncConnection.execute``.

Why: psycopg's async ``execute`` spends about 50 µs of Python per call (cursor, adapters, its generator-based
wait), more than a local round trip itself (about 35 µs measured on the development machine).  The few
statements every send and receive runs have fixed parameter types, so they are sent as prepared statements with
parameters we encode ourselves and read back in binary, waiting on the socket with the event loop's own reader.

A :class:`Statement` is used on pooled psycopg connections; it leaves them idle (every result consumed) or, when
interrupted mid-way, with a query in flight, which the pool's usability check then discards.

``conn.pgconn`` is psycopg's public low-level interface, so nothing here needs a check at start; the plain path
(psycopg's cursor ``execute``, the same statements and binary results) is taken when ``LAYERS_PLAIN_DRIVERS``
names ``psycopg``, so the layer can be run, and is tested, without running libpq behind psycopg's back.
"""

from __future__ import annotations

import asyncio
import re
import struct
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from layers.drivers import plain_driver_forced

__all__ = ["PGresult", "Param", "Statement", "decode_int4", "decode_int8", "encode_float", "encode_int", "encode_text"]

Conn = psycopg.AsyncConnection[Any]
Param = bytes | None
PGresult = pq.abc.PGresult

# OIDs of the parameter types the statements use.
TEXT, BYTEA, INT4, FLOAT8 = 25, 17, 23, 701
_BINARY_PARAM = {BYTEA}  # bytea goes as raw bytes (format 1); the rest as text, which the server parses
_TYPE_NAMES = {TEXT: "text", BYTEA: "bytea", INT4: "int4", FLOAT8: "float8"}
_PARAMETER = re.compile(r"\$(\d+)")

_prepared: weakref.WeakKeyDictionary[pq.abc.PGconn, set[bytes]] = weakref.WeakKeyDictionary()


def encode_text(value: str) -> bytes:
    return value.encode()


def encode_int(value: int) -> bytes:
    return str(value).encode()


def encode_float(value: float) -> bytes:
    return repr(value).encode()  # repr round-trips a float exactly


def decode_int4(value: bytes) -> int:
    return int(struct.unpack(">i", value)[0])


def decode_int8(value: bytes) -> int:
    return int(struct.unpack(">q", value)[0])


class Statement:
    """One SQL statement with ``$n`` parameters of fixed types; results come back in binary format."""

    __slots__ = ("formats", "name", "plain_sql", "sql", "types")

    def __init__(self, name: str, sql: str, types: Sequence[int]) -> None:
        self.name = name.encode()
        self.sql = sql.encode()
        self.types = list(types)
        self.formats = [1 if oid in _BINARY_PARAM else 0 for oid in types]
        # The same statement in psycopg's placeholders: $n -> %(pn)s with its type cast.
        self.plain_sql = _PARAMETER.sub(lambda m: f"%(p{m[1]})s::{_TYPE_NAMES[self.types[int(m[1]) - 1]]}",
                                        sql.replace("%", "%%"))

    async def run(self, conn: Conn, params: Sequence[Param], prepared: bool = True) -> pq.abc.PGresult:
        """Run on ``conn`` (which the caller holds exclusively) and return the result; raise psycopg errors."""
        if plain_driver_forced("psycopg"):
            return await self.run_plain(conn, params, prepared)
        pgconn = conn.pgconn
        if not prepared:
            pgconn.send_query_params(self.sql, params, self.types, self.formats, 1)
            return await _result(pgconn)
        names = _prepared.get(pgconn)
        if names is None:
            names = _prepared[pgconn] = set()
        known = self.name in names
        if not known:
            await self._prepare(pgconn, names)
        pgconn.send_query_prepared(self.name, params, self.formats, 1)
        try:
            return await _result(pgconn)
        except pg_errors.InvalidSqlStatementName:
            if not known:
                raise
        # psycopg ran DEALLOCATE ALL on this connection (it does after a DROP, ALTER or ROLLBACK of its own)
        names.clear()
        await self._prepare(pgconn, names)
        pgconn.send_query_prepared(self.name, params, self.formats, 1)
        return await _result(pgconn)

    async def _prepare(self, pgconn: pq.abc.PGconn, names: set[bytes]) -> None:
        pgconn.send_prepare(self.name, self.sql, self.types)
        await _result(pgconn)
        names.add(self.name)


    async def run_plain(self, conn: Conn, params: Sequence[Param], prepared: bool = True) -> pq.abc.PGresult:
        """:meth:`run` through psycopg's public cursor API."""
        values = {f"p{number}": _plain_value(oid, value)
                  for number, (oid, value) in enumerate(zip(self.types, params, strict=True), 1)}
        cursor = conn.cursor(binary=True)
        await cursor.execute(self.plain_sql, values, prepare=prepared)
        result = cursor.pgresult
        if result is None:
            raise psycopg.OperationalError("the server sent no result")
        return result


def _plain_value(oid: int, value: Param) -> Any:
    """A parameter encoded for libpq, as the Python value psycopg adapts (the statement casts it)."""
    if value is None or oid == BYTEA:
        return value
    text = value.decode()
    return int(text) if oid == INT4 else float(text) if oid == FLOAT8 else text


async def _result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    """Send what is buffered, then collect the statement's results; the last one is returned."""
    loop = asyncio.get_running_loop()
    fd = pgconn.socket
    while pgconn.flush():  # a large item may not fit in the socket buffer at once
        await _ready(loop, fd, write=True)
    result = None
    while True:
        await _ready(loop, fd, write=False)
        pgconn.consume_input()
        while not pgconn.is_busy():
            res = pgconn.get_result()
            if res is None:
                return _checked(pgconn, result)
            result = res


def _checked(pgconn: pq.abc.PGconn, result: pq.abc.PGresult | None) -> pq.abc.PGresult:
    if result is None:
        raise psycopg.OperationalError("the server sent no result")
    if result.status == pq.ExecStatus.FATAL_ERROR:
        raise pg_errors.error_from_result(result, encoding="utf-8")
    if pgconn.status == pq.ConnStatus.BAD:
        raise psycopg.OperationalError("the connection was lost")
    return result


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def done() -> None:
        if not future.done():
            future.set_result(None)

    if write:
        loop.add_writer(fd, done)
    else:
        loop.add_reader(fd, done)
    try:
        await future
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
