"""REST API for recordings. Thin: look up with a selector, call a service, render.

Reading needs no login for what anyone may see (a public stream's published recordings);
a recording someone may not see answers 404, as one that does not exist.
"""

from __future__ import annotations

import logging

from django.http.response import HttpResponseBase
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from broadcast.selectors import stream_get_visible
from onair.exceptions import ConflictError, NotFoundError
from onair.pagination import PageNumberPagination
from recordings import selectors, services
from recordings.models import Recording
from recordings.serializers import RecordingSerializer
from recordings.serving import recording_video_response

logger = logging.getLogger("onair.recordings")

TAG = "recordings"


class StreamRecordingListApi(APIView):
    permission_classes = [IsAuthenticatedOrReadOnly]

    @extend_schema(
        tags=[TAG],
        summary="A stream's recordings, newest first: all of them for its owner and staff, "
        "the published ready ones of a public stream for anyone else",
        responses={200: RecordingSerializer(many=True)},
    )
    def get(self, request: Request, slug: str) -> Response:
        stream = stream_get_visible(slug=slug, user=request.user)
        recordings = selectors.recording_list(stream=stream, user=request.user)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(recordings, request, view=self)
        return paginator.get_paginated_response(RecordingSerializer(page, many=True).data)


class RecordingDetailApi(APIView):
    permission_classes = [IsAuthenticatedOrReadOnly]

    @extend_schema(tags=[TAG], summary="Get a recording", responses={200: RecordingSerializer})
    def get(self, request: Request, recording_id: str) -> Response:
        recording = selectors.recording_get(recording_id=recording_id, user=request.user)
        return Response(RecordingSerializer(recording).data)

    @extend_schema(
        tags=[TAG],
        summary="Delete a recording and its file (not while it is being written)",
        responses={204: None, 409: OpenApiResponse(description="Still recording")},
    )
    def delete(self, request: Request, recording_id: str) -> Response:
        recording = selectors.recording_get(recording_id=recording_id, user=request.user)
        services.recording_delete(recording=recording, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecordingDownloadApi(APIView):
    permission_classes = [IsAuthenticatedOrReadOnly]

    @extend_schema(
        tags=[TAG],
        summary="Download a ready recording's file (WebM or MP4)",
        responses={
            (200, "video/webm"): OpenApiResponse(description="The file"),
            409: OpenApiResponse(description="Not ready"),
        },
    )
    def get(self, request: Request, recording_id: str) -> HttpResponseBase:
        recording = selectors.recording_get(recording_id=recording_id, user=request.user)
        if not recording.is_ready:
            raise ConflictError(
                f"This recording is {recording.state}, so there is no file to download.",
                code="not_ready",
            )
        try:
            # Byte ranges resume a broken download; the file is streamed, never read whole.
            return recording_video_response(
                request._request, recording=recording, download_as=_download_name(recording)
            )
        except FileNotFoundError:
            logger.warning("recording %s: its file %s is missing", recording.pk, recording.file)
            raise NotFoundError(
                "This recording's file is missing from storage.", code="file_missing"
            ) from None


def _download_name(recording: Recording) -> str:
    return f"{recording.stream.slug}-{recording.started_at:%Y%m%d-%H%M%S}.{recording.container}"


class _RecordingPublicationApi(APIView):
    published: bool

    def post(self, request: Request, recording_id: str) -> Response:
        recording = selectors.recording_get(recording_id=recording_id, user=request.user)
        recording = services.recording_set_published(
            recording=recording, user=request.user, published=self.published
        )
        return Response(RecordingSerializer(recording).data)


@extend_schema(
    tags=[TAG],
    summary="Let anyone watch the recording while its stream is public",
    request=None,
    responses={200: RecordingSerializer},
)
class RecordingPublishApi(_RecordingPublicationApi):
    published = True


@extend_schema(
    tags=[TAG],
    summary="Only the stream's owner and staff may watch the recording",
    request=None,
    responses={200: RecordingSerializer},
)
class RecordingUnpublishApi(_RecordingPublicationApi):
    published = False
