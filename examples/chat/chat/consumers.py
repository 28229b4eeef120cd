"""The chat's two consumers: one per WebSocket connection, and one for background tasks on a named channel.

Connect to ``/ws/rooms/<room>/``, optionally with ``?name=alice``: a named member is announced to the room
(presence), a nameless one (a script) only listens and talks.

Client -> server (JSON over the WebSocket):
    {"action": "say", "text": "..."}                                    broadcast to the room
    {"action": "task", "task": "upper", "text": "...", "id": "t1"}      run by the worker, answered to this socket
    {"action": "task", ..., "broadcast": true}                          ... and the result announced to the room
Server -> client:
    {"type": "message", "room": ..., "text": ..., "via": "websocket" | "view" | "worker" | "command", "server": pid,
     "name": sender's name or ""}
    {"type": "presence", "event": "join" | "here" | "leave", "name": ..., "member": id}   members coming and going
    (a join is answered by every named member already in the room with a "here" to the newcomer alone)
    {"type": "result", "id": ..., "task": ..., "result": ..., "worker": pid}
    {"type": "error", "error": "..."}
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any
from urllib.parse import parse_qs

import layers
from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

log = logging.getLogger("chat")


def room_group(room: str) -> str:
    """The layer group for a room (room slugs are valid group names once prefixed)."""
    return f"room-{room}"


class ChatConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """One WebSocket connection: joins its room's group, relays what the client says and asks."""

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = room_group(self.room)
        self.name = member_name(self.scope)
        await self.channel_layer.group_add(self.group, self.channel_name)  # before accept: no message missed
        await self.accept()
        if self.name:
            await self.channel_layer.group_send(self.group, self.presence("join"))

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            if self.name:
                await self.channel_layer.group_send(self.group, self.presence("leave"))

    def presence(self, event: str) -> dict[str, Any]:
        return {"type": f"presence.{event}", "name": self.name, "member": self.channel_name}

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        action = content.get("action") if isinstance(content, dict) else None
        if action == "say":
            message = chat_message(self.room, content.get("text"), "websocket", name=self.name)
            await self.channel_layer.group_send(self.group, message)
        elif action == "task":
            await self.submit_task(content)
        else:
            await self.send_json({"type": "error", "error": f"unknown action {action!r}; use 'say' or 'task'"})

    async def submit_task(self, content: dict[str, Any]) -> None:
        task = {
            "type": "task.run",
            "task": content.get("task"),
            "text": content.get("text", ""),
            "id": content.get("id"),
            "reply_channel": self.channel_name,
            "group": self.group if content.get("broadcast") else None,
            "room": self.room,
        }
        try:
            await self.channel_layer.send(settings.CHAT_TASK_CHANNEL, task)
        except layers.ChannelFull:
            await self.send_json({"type": "error", "id": content.get("id"), "error": "the task queue is full"})

    # Handlers for messages arriving from the layer ("chat.message" -> chat_message).

    async def chat_message(self, event: dict[str, Any]) -> None:
        frame = {key: event[key] for key in ("room", "text", "via", "server")}
        await self.send_json(frame | {"type": "message", "name": event.get("name", "")})

    async def presence_join(self, event: dict[str, Any]) -> None:
        await self.send_presence("join", event)
        if self.name and event["member"] != self.channel_name:  # tell the newcomer who is already here
            await self.channel_layer.send(event["member"], self.presence("here"))

    async def presence_here(self, event: dict[str, Any]) -> None:
        await self.send_presence("here", event)

    async def presence_leave(self, event: dict[str, Any]) -> None:
        await self.send_presence("leave", event)

    async def send_presence(self, event: str, message: dict[str, Any]) -> None:
        # Browsers get a short id, not the channel name: enough to tell two members of the same name apart.
        member = hashlib.sha1(message["member"].encode()).hexdigest()[:10]
        await self.send_json({"type": "presence", "event": event, "name": message["name"], "member": member})

    async def task_result(self, event: dict[str, Any]) -> None:
        await self.send_json({key: event[key] for key in ("id", "task", "result", "worker")} | {"type": "result"})


def chat_message(room: str, text: Any, via: str, name: str = "") -> dict[str, Any]:
    """The layer message every room member's consumer turns into a ``{"type": "message"}`` frame."""
    return {"type": "chat.message", "room": room, "text": text, "via": via, "server": os.getpid(), "name": name}


def member_name(scope: dict[str, Any]) -> str:
    """The ``?name=`` of the WebSocket address, trimmed to 40 characters ("" when absent)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    return " ".join(query.get("name", [""])[0].split())[:40]


TASKS = {
    "upper": str.upper,
    "reverse": lambda text: text[::-1],
    "wordcount": lambda text: len(text.split()),
}


class TaskConsumer(AsyncConsumer):  # type: ignore[misc]
    """Runs in ``manage.py runworker chat-tasks``: computes a task and answers on the task's reply channel."""

    async def task_run(self, message: dict[str, Any]) -> None:
        work = TASKS.get(message.get("task") or "")
        result = work(str(message.get("text", ""))) if work else f"unknown task {message.get('task')!r}"
        log.info("task %s (%s) -> %r", message.get("id"), message.get("task"), result)
        reply = {"type": "task.result", "id": message.get("id"), "task": message.get("task"), "result": result,
                 "worker": os.getpid()}
        await self.channel_layer.send(message["reply_channel"], reply)
        if message.get("group"):
            text = f"task {message.get('id')} ({message.get('task')}): {result}"
            await self.channel_layer.group_send(message["group"], chat_message(message["room"], text, "worker"))
