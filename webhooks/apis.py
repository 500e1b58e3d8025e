"""REST API for one's own webhook endpoints. Thin: parse with a serializer, call a service
or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from onair.auth import authenticated_user
from onair.pagination import PageNumberPagination
from webhooks import selectors, services
from webhooks.serializers import (
    IssuedEndpointSerializer,
    WebhookDeliveryFilterSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointInputSerializer,
    WebhookEndpointSerializer,
)

TAG = "webhooks"


class WebhookEndpointListCreateApi(APIView):
    @extend_schema(
        tags=[TAG],
        summary="List your webhook endpoints",
        responses={200: WebhookEndpointSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        endpoints = selectors.webhook_endpoint_list(user=request.user)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(endpoints, request, view=self)
        return paginator.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    @extend_schema(
        tags=[TAG],
        summary="Add a webhook endpoint; the response holds its signing secret, shown only "
        "this once",
        request=WebhookEndpointInputSerializer,
        responses={201: IssuedEndpointSerializer},
    )
    def post(self, request: Request) -> Response:
        payload = WebhookEndpointInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        issued = services.webhook_endpoint_create(
            owner=authenticated_user(request), **payload.validated_data
        )
        body = IssuedEndpointSerializer(issued.endpoint, context={"secret": issued.secret}).data
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookEndpointDetailApi(APIView):
    @extend_schema(
        tags=[TAG], summary="Get a webhook endpoint", responses={200: WebhookEndpointSerializer}
    )
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(endpoint_id=endpoint_id, user=request.user)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        tags=[TAG],
        summary="Replace a webhook endpoint's URL, events, description and active flag",
        request=WebhookEndpointInputSerializer,
        responses={200: WebhookEndpointSerializer},
    )
    def put(self, request: Request, endpoint_id: int) -> Response:
        return self._update(request, endpoint_id, partial=False)

    @extend_schema(
        tags=[TAG],
        summary="Change some of a webhook endpoint's URL, events, description and active flag "
        "(inactive: its waiting deliveries are given up)",
        request=WebhookEndpointInputSerializer,
        responses={200: WebhookEndpointSerializer},
    )
    def patch(self, request: Request, endpoint_id: int) -> Response:
        return self._update(request, endpoint_id, partial=True)

    @extend_schema(
        tags=[TAG], summary="Delete a webhook endpoint and its delivery log", responses={204: None}
    )
    def delete(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(endpoint_id=endpoint_id, user=request.user)
        services.webhook_endpoint_delete(endpoint=endpoint)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, endpoint_id: int, *, partial: bool) -> Response:
        endpoint = selectors.webhook_endpoint_get(endpoint_id=endpoint_id, user=request.user)
        payload = WebhookEndpointInputSerializer(data=request.data, partial=partial)
        payload.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_update(endpoint=endpoint, **payload.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)


class WebhookEndpointSecretRotateApi(APIView):
    @extend_schema(
        tags=[TAG],
        summary="Give the endpoint a new signing secret, shown only this once (deliveries are "
        "signed with it from now on)",
        request=None,
        responses={201: IssuedEndpointSerializer},
    )
    def post(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(endpoint_id=endpoint_id, user=request.user)
        issued = services.webhook_endpoint_secret_rotate(endpoint=endpoint)
        body = IssuedEndpointSerializer(issued.endpoint, context={"secret": issued.secret}).data
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookEndpointTestApi(APIView):
    @extend_schema(
        tags=[TAG],
        summary="Send the endpoint a webhook.test event (whatever it subscribes to)",
        request=None,
        responses={
            202: WebhookDeliverySerializer,
            409: OpenApiResponse(description="The endpoint is inactive"),
            429: OpenApiResponse(description="Too many test events this hour"),
        },
    )
    def post(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(endpoint_id=endpoint_id, user=request.user)
        delivery = services.webhook_endpoint_test(endpoint=endpoint)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveryListApi(APIView):
    @extend_schema(
        tags=[TAG],
        summary="The endpoint's delivery log, newest first",
        parameters=[WebhookDeliveryFilterSerializer],
        responses={200: WebhookDeliverySerializer(many=True)},
    )
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(endpoint_id=endpoint_id, user=request.user)
        filters = WebhookDeliveryFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        deliveries = selectors.webhook_delivery_list(endpoint=endpoint, **filters.validated_data)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)
