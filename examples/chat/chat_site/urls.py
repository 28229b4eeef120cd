from django.urls import path

from chat import views

urlpatterns = [
    path("rooms/<slug:room>/broadcast", views.broadcast, name="broadcast"),
    path("health", views.health, name="health"),
]
