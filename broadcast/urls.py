from django.urls import path

from broadcast import views

app_name = "broadcast"

urlpatterns = [
    path("", views.home, name="home"),
    path("streams/", views.my_streams, name="my-streams"),
    path("studio/<slug:slug>/", views.studio, name="studio"),
    path("streams/<slug:slug>/poster.jpg", views.stream_poster, name="stream-poster"),
    path("streams/<slug:slug>/edit/", views.stream_edit, name="stream-edit"),
    path("streams/<slug:slug>/key/rotate/", views.stream_key_rotate, name="stream-key-rotate"),
    path("streams/<slug:slug>/key/revoke/", views.stream_key_revoke, name="stream-key-revoke"),
    path("streams/<slug:slug>/end/", views.stream_end, name="stream-end"),
    path("streams/<slug:slug>/delete/", views.stream_delete, name="stream-delete"),
]
