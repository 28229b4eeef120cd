"""The ASGI application: HTTP goes to Django, WebSockets to the chat consumer, and the ``chat-tasks`` channel to
the task consumer (served by ``python manage.py runworker chat-tasks``, not by the web servers)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat_site.settings")
django_asgi_app = get_asgi_application()  # set Django up before importing consumers

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.consumers import TaskConsumer  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.security import allowed_hosts_origin_validator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": allowed_hosts_origin_validator(URLRouter(websocket_urlpatterns)),
        "channel": ChannelNameRouter({settings.CHAT_TASK_CHANNEL: TaskConsumer.as_asgi()}),
    }
)
