from django.urls import path

from webhooks import apis

app_name = "webhooks-api"

urlpatterns = [
    path("webhooks/", apis.WebhookEndpointListCreateApi.as_view(), name="endpoint-list"),
    path("webhooks/<int:endpoint_id>/", apis.WebhookEndpointDetailApi.as_view(), name="endpoint"),
    path(
        "webhooks/<int:endpoint_id>/rotate-secret/",
        apis.WebhookEndpointSecretRotateApi.as_view(),
        name="endpoint-rotate-secret",
    ),
    path(
        "webhooks/<int:endpoint_id>/test/",
        apis.WebhookEndpointTestApi.as_view(),
        name="endpoint-test",
    ),
    path(
        "webhooks/<int:endpoint_id>/deliveries/",
        apis.WebhookDeliveryListApi.as_view(),
        name="endpoint-deliveries",
    ),
]
