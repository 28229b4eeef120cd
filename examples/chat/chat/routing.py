from django.urls import path

from .consumers import ChatConsumer

websocket_urlpatterns = [path("ws/rooms/<slug:room>/", ChatConsumer.as_asgi())]
