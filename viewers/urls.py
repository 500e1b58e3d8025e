from django.urls import path

from viewers import views

app_name = "viewers"

urlpatterns = [
    path("watch/<slug:slug>/", views.watch, name="watch"),
    path("embed/<slug:slug>/", views.embed, name="embed"),
]
