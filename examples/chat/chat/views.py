"""Plain synchronous Django views: they reach the WebSocket clients through the layer with ``async_to_sync``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .consumers import chat_message, room_group


@csrf_exempt
@require_POST
def broadcast(request: HttpRequest, room: str) -> HttpResponse:
    """``POST /rooms/<room>/broadcast`` with a form field or JSON body ``text``: send it to everyone in the room."""
    if request.content_type == "application/json":
        text = json.loads(request.body or b"{}").get("text", "")
    else:
        text = request.POST.get("text", "")
    async_to_sync(get_channel_layer().group_send)(room_group(room), chat_message(room, text, "view"))
    return JsonResponse({"ok": True, "room": room, "server": os.getpid()})


ROOM_PAGE = Path(__file__).resolve().parent / "static" / "room.html"


@require_GET
def room_page(request: HttpRequest, room: str = "lobby") -> HttpResponse:
    """``/`` (the lobby) and ``/rooms/<room>/``: one HTML page; its script reads the room from the address."""
    return HttpResponse(ROOM_PAGE.read_bytes(), content_type="text/html; charset=utf-8")


@require_GET
def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True, "server": os.getpid()})
