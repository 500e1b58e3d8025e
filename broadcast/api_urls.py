from django.urls import path

from broadcast import apis

app_name = "broadcast-api"

urlpatterns = [
    path("streams/", apis.StreamListCreateApi.as_view(), name="stream-list"),
    path("streams/<slug:slug>/", apis.StreamDetailApi.as_view(), name="stream-detail"),
    path("streams/<slug:slug>/start/", apis.StreamStartApi.as_view(), name="stream-start"),
    path("streams/<slug:slug>/end/", apis.StreamEndApi.as_view(), name="stream-end"),
    path("streams/<slug:slug>/restart/", apis.StreamRestartApi.as_view(), name="stream-restart"),
    path("streams/<slug:slug>/key/", apis.StreamKeyApi.as_view(), name="stream-key"),
    path(
        "streams/<slug:slug>/key/rotate/",
        apis.StreamKeyRotateApi.as_view(),
        name="stream-key-rotate",
    ),
    path(
        "streams/<slug:slug>/key/revoke/",
        apis.StreamKeyRevokeApi.as_view(),
        name="stream-key-revoke",
    ),
    path("live/", apis.LiveStreamListApi.as_view(), name="live-list"),
]
