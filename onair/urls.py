"""Site URLs. Pages at the top, the REST API under /api/v1/, its schema and docs under /api/.

The studio (/studio/<slug>/) and watch (/watch/<slug>/) pages have their own prefixes, as
do WHIP (/whip/<slug>) and WHEP (/whep/<slug>); WebSockets are routed in ``onair.asgi``.
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from onair import views
from onair.metrics import metrics_view
from onair.throttling import LoginView, TokenApi

admin.site.site_header = "OnAir administration"
admin.site.site_title = "OnAir admin"
admin.site.index_title = "Streams, viewers and accounts"

handler400 = "onair.exception_handler.bad_request"
handler404 = "onair.exception_handler.page_not_found"
handler500 = "onair.exception_handler.server_error"

urlpatterns = [
    path("", include("broadcast.urls")),
    path("", include("viewers.urls")),
    path("", include("signaling.urls")),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path("admin/", admin.site.urls),
    path("api/v1/", views.ApiRootApi.as_view(), name="api-root"),
    path("api/v1/", include("broadcast.api_urls")),
    path("api/v1/", include("recordings.api_urls")),
    path("api/v1/", include("webhooks.api_urls")),
    path("", include("recordings.urls")),
    path("api/v1/auth/token/", TokenApi.as_view(), name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", views.health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("readyz", views.ready, name="ready"),
]
