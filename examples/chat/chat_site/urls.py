from django.urls import path

from chat import views

urlpatterns = [
    path("", views.room_page, name="lobby"),
    path("rooms/<slug:room>/", views.room_page, name="room"),
    path("rooms/<slug:room>/broadcast", views.broadcast, name="broadcast"),
    path("health", views.health, name="health"),
]
