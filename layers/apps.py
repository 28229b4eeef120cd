"""The Django app ``layers`` (add it to ``INSTALLED_APPS``): system checks of ``CHANNEL_LAYERS``.

``manage.py check`` reports every ``CHANNEL_LAYERS`` entry that would fail at first use (unknown scheme, unknown
option, bad value, a BACKEND that cannot be imported); ``manage.py check --deploy`` also pings each layer
(``--deploy --tag layers``: only that).  The ping is a deployment check because plain checks run on every
``runserver`` and ``test`` start, where a server that is down for the moment must not stop the process.
"""

from __future__ import annotations

from django.apps import AppConfig


class LayersConfig(AppConfig):  # type: ignore[misc]  # Django is untyped here
    name = "layers"
    verbose_name = "channel-layers"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
