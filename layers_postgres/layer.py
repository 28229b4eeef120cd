"""``PostgresChannelLayer``: the channel layer on PostgreSQL (psycopg 3 async)."""

from __future__ import annotations

from typing import Any, ClassVar

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from layers import BackendChannelLayer
from layers.backend import Backend
from layers.errors import ConfigError
from layers.options import LayerOptions, Option, boolean, positive_seconds, redact_url, seconds

from .backend import PostgresBackend, PostgresConfig
from .schema import Names

__all__ = ["PostgresChannelLayer"]

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
    url_options: ClassVar[LayerOptions] = LayerOptions(
        own={"schema": Option(str, "public"), "durable": Option(boolean, False), "max_pool_size": Option(int, 8),
             "timeout": Option(seconds, 5.0), "prepared_statements": Option(boolean, True),
             "listen_dsn": Option(str, None, secret=True)},  # a DSN of its own may carry a password
        driver=_LIBPQ_OPTIONS,  # the rest of the query stays in the DSN: sslmode=..., etc.
        driver_secrets=frozenset({"password", "sslpassword"}),
        hints=dict.fromkeys(["ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS", "PSYCOPG_OPTIONS"],
                            "PostgreSQL takes one dsn= instead of DATABASES-style keys"),
    )

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
        timeout = positive_seconds("timeout", timeout)
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
    def url_target(cls, url: str) -> dict[str, Any]:
        """``postgresql://user@host:5432/db?capacity=500&schema=layers&sslmode=require``: what the query keeps
        after the layer's options (``sslmode=require``) stays in the DSN for libpq."""
        scheme, _, rest = url.partition("://")
        return {"dsn": f"postgresql://{rest}" if scheme.lower() == "postgres" else url}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self.dsn)} prefix={self.prefix!r}>"

