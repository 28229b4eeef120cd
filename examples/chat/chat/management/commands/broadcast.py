"""``python manage.py broadcast ROOM TEXT``: send to a room from plain sync code, outside any server."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandParser

from chat.consumers import chat_message, room_group


class Command(BaseCommand):
    help = "Send a chat message to every client in ROOM, on every server, through the channel layer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("room")
        parser.add_argument("text")

    def handle(self, *args: Any, **options: Any) -> None:
        async_to_sync(get_channel_layer().group_send)(
            room_group(options["room"]), chat_message(options["room"], options["text"], "command")
        )
        self.stdout.write(f"sent to room {options['room']!r}")
