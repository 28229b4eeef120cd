"""Test-wide setup: a minimal Django configuration whose channel layer comes from settings only."""

from __future__ import annotations

import django
from django.conf import settings


def pytest_configure() -> None:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tests-only",
            INSTALLED_APPS=["channels"],
            CHANNEL_LAYERS={
                "default": {"BACKEND": "layers.InMemoryChannelLayer", "CONFIG": {"capacity": 50}},
                "url": {"BACKEND": "layers.from_url", "CONFIG": {"url": "memory://?capacity=7"}},
            },
        )
        django.setup()
