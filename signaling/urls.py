"""WHIP and WHEP URLs. No trailing slash, as WHIP/WHEP clients are configured; one is
tolerated on the endpoints, since people paste URLs."""

from django.urls import path, re_path

from signaling import views

app_name = "signaling"

_TOKEN = r"(?P<token>[A-Za-z0-9_-]{43})"  # secrets.token_urlsafe(32)

urlpatterns = [
    re_path(r"^whip/(?P<slug>[-\w]+)/?$", views.whip_endpoint, name="whip"),
    re_path(rf"^whip/(?P<slug>[-\w]+)/{_TOKEN}$", views.whip_session, name="whip-session"),
    re_path(r"^whep/(?P<slug>[-\w]+)/?$", views.whep_endpoint, name="whep"),
    re_path(rf"^whep/(?P<slug>[-\w]+)/{_TOKEN}$", views.whep_session, name="whep-session"),
    path("whep/<slug:slug>/player/", views.whep_player, name="whep-player"),
    path("whep/<slug:slug>/state", views.whep_state, name="whep-state"),
]
