"""REST API for streams. Thin: parse with a serializer, call a service or selector, render.

Errors are raised as ``onair.exceptions`` and rendered by ``onair.exception_handler``.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from broadcast import selectors, services
from broadcast.models import Stream
from broadcast.serializers import (
    IssuedKeySerializer,
    PublicStreamSerializer,
    StreamCreatedSerializer,
    StreamCreateInputSerializer,
    StreamFilterSerializer,
    StreamKeySerializer,
    StreamSerializer,
    StreamUpdateInputSerializer,
)
from onair.auth import authenticated_user
from onair.exceptions import NotFoundError
from onair.pagination import PageNumberPagination

TAG = "streams"


def _paginated(
    request: Request,
    view: APIView,
    streams: QuerySet[Stream],
    serializer: type[PublicStreamSerializer],
) -> Response:
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(streams, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


class StreamListCreateApi(APIView):
    @extend_schema(
        tags=[TAG],
        summary="List the streams you manage (staff: all streams)",
        parameters=[StreamFilterSerializer],
        responses={200: StreamSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        filters = StreamFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        streams = selectors.stream_list(user=request.user, **filters.validated_data)
        return _paginated(request, self, streams, StreamSerializer)

    @extend_schema(
        tags=[TAG],
        summary="Create a stream; the response holds its key's secret, shown only this once",
        request=StreamCreateInputSerializer,
        responses={201: StreamCreatedSerializer},
    )
    def post(self, request: Request) -> Response:
        payload = StreamCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        stream, issued = services.stream_create(
            owner=authenticated_user(request), **payload.validated_data
        )
        body = StreamCreatedSerializer(stream, context={"issued_key": issued}).data
        return Response(body, status=status.HTTP_201_CREATED)


class StreamDetailApi(APIView):
    @extend_schema(tags=[TAG], summary="Get a stream", responses={200: StreamSerializer})
    def get(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        return Response(StreamSerializer(stream).data)

    @extend_schema(
        tags=[TAG],
        summary="Replace a stream's title, description and visibility",
        request=StreamUpdateInputSerializer,
        responses={200: StreamSerializer},
    )
    def put(self, request: Request, slug: str) -> Response:
        return self._update(request, slug, partial=False)

    @extend_schema(
        tags=[TAG],
        summary="Change some of a stream's title, description and visibility",
        request=StreamUpdateInputSerializer,
        responses={200: StreamSerializer},
    )
    def patch(self, request: Request, slug: str) -> Response:
        return self._update(request, slug, partial=True)

    @extend_schema(
        tags=[TAG],
        summary="Delete a stream (not while it is live)",
        responses={204: None, 409: OpenApiResponse(description="The stream is live")},
    )
    def delete(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        services.stream_delete(stream=stream)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, slug: str, *, partial: bool) -> Response:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        payload = StreamUpdateInputSerializer(data=request.data, partial=partial)
        payload.is_valid(raise_exception=True)
        stream = services.stream_update(stream=stream, **payload.validated_data)
        return Response(StreamSerializer(stream).data)


class _StreamTransitionApi(APIView):
    """POST moves the stream to another state or answers 409 with the reason."""

    def transition(self, *, stream: Stream) -> Stream:
        raise NotImplementedError

    def post(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        return Response(StreamSerializer(self.transition(stream=stream)).data)


_TRANSITION_RESPONSES = {
    200: StreamSerializer,
    409: OpenApiResponse(description="The stream's state does not allow this"),
}


@extend_schema(
    tags=[TAG],
    summary="Go live (idle → live)",
    request=None,
    responses=_TRANSITION_RESPONSES,
)
class StreamStartApi(_StreamTransitionApi):
    def transition(self, *, stream: Stream) -> Stream:
        return services.stream_go_live(stream=stream)


@extend_schema(
    tags=[TAG],
    summary="End the broadcast (live → ended)",
    request=None,
    responses=_TRANSITION_RESPONSES,
)
class StreamEndApi(_StreamTransitionApi):
    def transition(self, *, stream: Stream) -> Stream:
        return services.stream_end(stream=stream, reason=Stream.EndReason.API)


@extend_schema(
    tags=[TAG],
    summary="Make an ended stream ready for a new broadcast (ended → idle)",
    request=None,
    responses=_TRANSITION_RESPONSES,
)
class StreamRestartApi(_StreamTransitionApi):
    def transition(self, *, stream: Stream) -> Stream:
        return services.stream_restart(stream=stream)


class StreamKeyApi(APIView):
    @extend_schema(
        tags=[TAG],
        summary="The stream's active key, masked (404 when it has none)",
        responses={200: StreamKeySerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        key = selectors.stream_key_active(stream=stream)
        if key is None:
            raise NotFoundError("This stream has no active key.", code="no_active_key")
        return Response(StreamKeySerializer(key).data)


class StreamKeyRotateApi(APIView):
    @extend_schema(
        tags=[TAG],
        summary="Revoke the active key and issue a new one; its secret is shown only this once",
        request=None,
        responses={201: IssuedKeySerializer},
    )
    def post(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        issued = services.stream_key_rotate(stream=stream)
        return Response(IssuedKeySerializer(issued).data, status=status.HTTP_201_CREATED)


class StreamKeyRevokeApi(APIView):
    @extend_schema(
        tags=[TAG],
        summary="Revoke the active key: nobody can publish until a key is issued again",
        request=None,
        responses={
            200: StreamKeySerializer,
            409: OpenApiResponse(description="No active key"),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        key = services.stream_key_revoke(stream=stream)
        return Response(StreamKeySerializer(key).data)


class LiveStreamListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        tags=[TAG],
        summary="Live streams: public ones, plus your own whatever their visibility",
        responses={200: PublicStreamSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        streams = selectors.stream_list_live(user=request.user)
        return _paginated(request, self, streams, PublicStreamSerializer)
