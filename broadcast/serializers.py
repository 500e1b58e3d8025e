"""API shapes: input serializers validate, output serializers render. No business logic."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from broadcast.models import Stream, StreamKey


class StreamKeySerializer(serializers.ModelSerializer[StreamKey]):
    """A key as it may always be shown: masked, never the secret."""

    masked = serializers.CharField(read_only=True)
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = StreamKey
        fields = ["masked", "active", "created_at", "revoked_at"]
        read_only_fields = fields


class IssuedKeySerializer(serializers.Serializer[object]):
    """A key right after it was issued: the only time its secret is shown."""

    secret = serializers.CharField(read_only=True)
    masked = serializers.CharField(source="key.masked", read_only=True)
    created_at = serializers.DateTimeField(source="key.created_at", read_only=True)


class PublicStreamSerializer(serializers.ModelSerializer[Stream]):
    """What anyone who can see a stream may know about it."""

    owner = serializers.CharField(source="owner.get_username", read_only=True)
    viewers = serializers.IntegerField(source="viewer_count", read_only=True)
    peak_viewers = serializers.IntegerField(source="peak_viewer_count", read_only=True)

    class Meta:
        model = Stream
        fields = [
            "slug",
            "title",
            "description",
            "owner",
            "state",
            "viewers",
            "peak_viewers",
            "started_at",
            "ended_at",
            "end_reason",
        ]
        read_only_fields = fields


class StreamSerializer(PublicStreamSerializer):
    """A stream as its owner (or staff) manages it, with its masked active key."""

    key = serializers.SerializerMethodField()

    class Meta(PublicStreamSerializer.Meta):
        fields = [
            *PublicStreamSerializer.Meta.fields,
            "visibility",
            "record",
            "created_at",
            "updated_at",
            "key",
        ]
        read_only_fields = fields

    @extend_schema_field(StreamKeySerializer(allow_null=True))
    def get_key(self, stream: Stream) -> dict[str, object] | None:
        active = next((key for key in stream.keys.all() if key.is_active), None)
        return dict(StreamKeySerializer(active).data) if active else None


class StreamCreatedSerializer(StreamSerializer):
    """The create response: the stream plus its first key's secret, shown once.

    Pass the ``IssuedKey`` as ``context["issued_key"]``.
    """

    stream_key = serializers.SerializerMethodField()

    class Meta(StreamSerializer.Meta):
        fields = [*StreamSerializer.Meta.fields, "stream_key"]
        read_only_fields = fields

    @extend_schema_field(IssuedKeySerializer)
    def get_stream_key(self, stream: Stream) -> dict[str, object]:
        return dict(IssuedKeySerializer(self.context["issued_key"]).data)


class StreamCreateInputSerializer(serializers.Serializer[object]):
    title = serializers.CharField(max_length=140)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(
        choices=Stream.Visibility.choices, default=Stream.Visibility.PUBLIC
    )
    slug = serializers.SlugField(
        max_length=50,
        required=False,
        help_text="The stream's address (/watch/<slug>/). Generated from the title if omitted.",
    )
    record = serializers.BooleanField(
        required=False,
        help_text="Record its broadcasts on the server (default: ONAIR_RECORD_BY_DEFAULT).",
    )


class StreamUpdateInputSerializer(serializers.Serializer[object]):
    title = serializers.CharField(max_length=140)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=Stream.Visibility.choices, required=False)
    record = serializers.BooleanField(
        required=False, help_text="Record its broadcasts (from the next one on)."
    )


class StreamFilterSerializer(serializers.Serializer[object]):
    state = serializers.ChoiceField(choices=Stream.State.choices, required=False)
    visibility = serializers.ChoiceField(choices=Stream.Visibility.choices, required=False)
