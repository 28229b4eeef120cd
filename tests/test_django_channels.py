"""Real Django Channels consumers chatting through a layer chosen only by settings (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

channels = pytest.importorskip("channels")

from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

import layers

ROOM = "room"


class AsyncChat(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        await self.channel_layer.group_add(ROOM, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(ROOM, self.channel_name)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        await self.channel_layer.group_send(ROOM, {"type": "chat.message", "text": content["text"], "via": "async"})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"], "via": event["via"]})


class SyncChat(JsonWebsocketConsumer):  # type: ignore[misc]
    def connect(self) -> None:
        async_to_sync(self.channel_layer.group_add)(ROOM, self.channel_name)
        self.accept()

    def disconnect(self, code: int) -> None:
        async_to_sync(self.channel_layer.group_discard)(ROOM, self.channel_name)

    def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        async_to_sync(self.channel_layer.group_send)(ROOM, {"type": "chat.message", "text": content["text"],
                                                            "via": "sync"})

    def chat_message(self, event: dict[str, Any]) -> None:
        self.send_json({"text": event["text"], "via": event["via"]})


def test_settings_pick_our_layer() -> None:
    layer = get_channel_layer()
    assert isinstance(layer, layers.InMemoryChannelLayer)
    assert layer.capacity == 50  # CONFIG from settings reached the layer
    assert isinstance(get_channel_layer("url"), layers.InMemoryChannelLayer)  # BACKEND "layers.from_url"


async def _chat() -> list[Any]:
    first = WebsocketCommunicator(AsyncChat.as_asgi(), "/ws/")
    second = WebsocketCommunicator(SyncChat.as_asgi(), "/ws/")
    assert (await first.connect())[0] and (await second.connect())[0]
    await first.send_json_to({"text": "hello from async"})
    got = [await first.receive_json_from(5), await second.receive_json_from(5)]
    await second.send_json_to({"text": "hello from sync"})
    got += [await first.receive_json_from(5), await second.receive_json_from(5)]

    # A plain sync view in another thread broadcasting through async_to_sync (a new event loop per call).
    def view() -> None:
        async_to_sync(get_channel_layer().group_send)(ROOM, {"type": "chat.message", "text": "from view",
                                                             "via": "view"})

    thread = threading.Thread(target=view)
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    got += [await first.receive_json_from(5), await second.receive_json_from(5)]
    await first.disconnect()
    await second.disconnect()
    return got


def test_async_and_sync_consumers_chat_through_settings_layer() -> None:
    got = asyncio.run(_chat())
    assert got == [
        {"text": "hello from async", "via": "async"},
        {"text": "hello from async", "via": "async"},
        {"text": "hello from sync", "via": "sync"},
        {"text": "hello from sync", "via": "sync"},
        {"text": "from view", "via": "view"},
        {"text": "from view", "via": "view"},
    ]


def test_group_is_empty_after_consumers_disconnect() -> None:
    asyncio.run(_chat())
    layer = get_channel_layer()
    sizes = layer.local_state_size()
    assert sizes["groups"] == 0 and sizes["buffers"] == 0
