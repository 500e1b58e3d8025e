"""Site-wide pages that belong to no single app: sign-up, the health and readiness checks."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse as api_reverse
from rest_framework.views import APIView

from onair.conf import onair_settings
from onair.readiness import readiness_check


def signup(request: HttpRequest) -> HttpResponse:
    if not onair_settings().allow_signup:
        raise Http404("Sign-up is closed.")
    if request.user.is_authenticated:
        return redirect("broadcast:my-streams")
    form: UserCreationForm[User] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("broadcast:my-streams")
    return render(
        request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200
    )


@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """For load balancers: 200 when the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@never_cache
async def ready(request: HttpRequest) -> JsonResponse:
    """For load balancers and orchestrators: 200 when this process can serve (its database,
    its channel layer and, in cluster mode, a live SFU worker answer), else 503 naming what
    failed (``onair.readiness``)."""
    readiness = await readiness_check()
    body: dict[str, object] = {
        "status": "ready" if readiness.ready else "unready",
        "checks": readiness.checks,
    }
    if not readiness.ready:
        body["failed"] = readiness.failed
    response = JsonResponse(body, status=200 if readiness.ready else 503)
    # Django logs every 5xx as an ERROR; readiness logs its own changes, once each.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class ApiRootApi(APIView):
    """``GET /api/v1/``: where the API's resources are (the start banner points here)."""

    permission_classes = [AllowAny]

    @extend_schema(
        tags=["api"],
        summary="The API's resources",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        def at(name: str) -> str:
            return str(api_reverse(name, request=request))

        return Response(
            {
                "streams": at("broadcast-api:stream-list"),
                "live": at("broadcast-api:live-list"),
                "webhooks": at("webhooks-api:endpoint-list"),
                "token": at("api-token"),
                "schema": at("api-schema"),
                "docs": at("api-docs"),
            }
        )
