"""``PostgresChannelLayer``: the channel layer on PostgreSQL (psycopg 3 async)."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from layers.backend import Backend
from layers.core import BackendChannelLayer
from layers.errors import ConfigError
from layers.settings import redact_url, split_url

from .backend import PostgresBackend, PostgresConfig
from .schema import Names

__all__ = ["PostgresChannelLayer"]

# Layer options a URL query string may carry (the rest of the query stays in the DSN: sslmode=..., etc.).
_URL_OPTIONS: dict[str, type] = {
    "schema": str,
    "durable": bool,
    "max_pool_size": int,
    "timeout": float,
    "prepared_statements": bool,
    "listen_dsn": str,
}

# What libpq takes from a URL's query (host, sslmode, target_session_attrs, ...).
_LIBPQ_OPTIONS = frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())

# TCP keepalives so a silently dead server is noticed; only where the DSN does not choose.
_CONNECT_DEFAULTS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3}


class PostgresChannelLayer(BackendChannelLayer):
    """Channel layer whose messages live in a PostgreSQL table, with LISTEN/NOTIFY as the wake-up.

    ``dsn``: a libpq URL or key=value string.  ``schema``: where the tables go (created if missing).  The
    layer's ``prefix`` names the tables (``<prefix>_msg`` ...), so several layers share one database.
    ``durable=True`` makes the tables logged (they survive a server crash); by default they are UNLOGGED.
    ``timeout``: seconds a call may take before it fails with ``BackendUnavailable``.  ``listen_dsn``: where
    the LISTEN session connects, when ``dsn`` goes through a transaction-mode pooler such as PgBouncer.
    ``prepared_statements=False`` for poolers that cannot keep them.
    """

    spec_knobs: ClassVar[dict[str, Any]] = {"shares_state": True, "min_expiry": 0.5}
    url_options: ClassVar[frozenset[str] | None] = frozenset(_URL_OPTIONS) | _LIBPQ_OPTIONS

    def __init__(
        self,
        dsn: str = "postgresql://localhost/postgres",
        *,
        schema: str = "public",
        durable: bool = False,
        max_pool_size: int = 8,
        timeout: float = 5.0,
        prepared_statements: bool = True,
        listen_dsn: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError(f"dsn must be a PostgreSQL URL or conninfo string, not {dsn!r}")
        if type(max_pool_size) is not int or max_pool_size < 1:
            raise ConfigError(f"max_pool_size must be a positive int, not {max_pool_size!r}")
        if not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        try:
            names = Names(schema, self.prefix)
            given = conninfo_to_dict(dsn)
        except Exception as exc:
            raise ConfigError(f"bad PostgreSQL settings for {redact_url(dsn)}: {exc}") from None
        connect = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}
        if "connect_timeout" not in given:
            connect["connect_timeout"] = max(2, round(timeout))  # libpq's minimum is 2 seconds
        self.dsn = dsn
        self.config = PostgresConfig(
            dsn=dsn, listen_dsn=listen_dsn or dsn, names=names, durable=bool(durable),
            max_pool_size=max_pool_size, timeout=float(timeout),
            prepared_statements=bool(prepared_statements), sweep_every=min(self.expiry, 60.0),
            connect_kwargs=connect)

    def make_backend(self) -> Backend:
        return PostgresBackend(self.config)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> PostgresChannelLayer:
        """``postgresql://user@host:5432/db?capacity=500&schema=layers&sslmode=require`` -> a layer.

        Common layer options and the options above come from the query string; everything else stays in the
        DSN for libpq.
        """
        rest, options = split_url(url, cls)
        parts = urlsplit(rest)
        kept: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _URL_OPTIONS:
                options[key] = _coerce(key, value, _URL_OPTIONS[key])
            else:
                kept.append((key, value))
        dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(kept)))
        return cls(dsn, **{**options, **overrides})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self.dsn)} prefix={self.prefix!r}>"


def _coerce(key: str, value: str, kind: type) -> Any:
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"URL option {key}={value!r} must be true or false")
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"URL option {key}={value!r} must be {kind.__name__}") from None
