"""Settings for the chat example.

The channel layer is chosen by one environment variable, ``CHANNEL_LAYER_URL`` (``memory://``, ``redis://...``,
``postgresql://...``, ``amqp://...``): the same code runs on every backend.  There are no models, so no database.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "chat-example-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = ["channels", "chat"]
ROOT_URLCONF = "chat_site.urls"
ASGI_APPLICATION = "chat_site.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}  # nothing here needs one
USE_TZ = True
TIME_ZONE = "UTC"  # Django's default is America/Chicago: log times would be off for everyone else

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "layers.from_url",
        "CONFIG": {"url": os.environ.get("CHANNEL_LAYER_URL", "memory://")},
    },
}

# The named channel the background worker listens on: ``python manage.py runworker chat-tasks``.
CHAT_TASK_CHANNEL = "chat-tasks"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        # Not propagated: daphne configures the root logger too, and every line would show twice.
        "layers": {"handlers": ["console"], "level": os.environ.get("LAYERS_LOG_LEVEL", "WARNING"),
                   "propagate": False},
        "chat": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
