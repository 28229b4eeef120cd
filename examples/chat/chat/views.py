"""Plain synchronous Django views: they reach the WebSocket clients through the layer with ``async_to_sync``."""

from __future__ import annotations

import json
import os

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


@require_GET
def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True, "server": os.getpid()})
