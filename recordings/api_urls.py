from django.urls import path

from recordings import apis

app_name = "recordings-api"

urlpatterns = [
    path(
        "streams/<slug:slug>/recordings/",
        apis.StreamRecordingListApi.as_view(),
        name="stream-recording-list",
    ),
    path("recordings/<uuid:recording_id>/", apis.RecordingDetailApi.as_view(), name="recording"),
    path(
        "recordings/<uuid:recording_id>/download/",
        apis.RecordingDownloadApi.as_view(),
        name="recording-download",
    ),
    path(
        "recordings/<uuid:recording_id>/publish/",
        apis.RecordingPublishApi.as_view(),
        name="recording-publish",
    ),
    path(
        "recordings/<uuid:recording_id>/unpublish/",
        apis.RecordingUnpublishApi.as_view(),
        name="recording-unpublish",
    ),
]
