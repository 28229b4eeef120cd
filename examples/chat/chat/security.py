"""The WebSocket origin check of ``AllowedHostsOriginValidator``, saying why it refused a connection.

A browser page served from a host that is not in ``ALLOWED_HOSTS`` gets a bare HTTP 403 on its WebSocket (the
page cannot even see the status); the server log now names the origin and the setting to change.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings

log = logging.getLogger("chat")


class ExplainingOriginValidator(OriginValidator):  # type: ignore[misc]
    def valid_origin(self, parsed_origin: Any) -> bool:
        if super().valid_origin(parsed_origin):
            return True
        origin = parsed_origin.geturl() if parsed_origin is not None else "no Origin header"
        log.warning(
            "refused a WebSocket from %s (HTTP 403): its host is not in ALLOWED_HOSTS %s; serve the page from "
            "this site, or add the host to DJANGO_ALLOWED_HOSTS (comma-separated) and restart the servers",
            origin, self.allowed_origins)
        return False


def allowed_hosts_origin_validator(application: Any) -> ExplainingOriginValidator:
    """``channels.security.websocket.AllowedHostsOriginValidator``, with the explanation above."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return ExplainingOriginValidator(application, allowed_hosts)
