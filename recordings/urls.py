from django.urls import path

from recordings import views

app_name = "recordings"

urlpatterns = [
    path("recordings/<uuid:recording_id>/", views.replay, name="replay"),
    path("recordings/<uuid:recording_id>/file", views.recording_file, name="file"),
    path("recordings/<uuid:recording_id>/poster.jpg", views.recording_poster, name="poster"),
    path("recordings/<uuid:recording_id>/publish/", views.recording_publish, name="publish"),
    path("recordings/<uuid:recording_id>/delete/", views.recording_delete, name="delete"),
    path("watch/<slug:slug>/past/", views.stream_past_broadcasts, name="past-broadcasts"),
]
