"""A published track: one incoming track of the publisher, with its simulcast layers."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sfu.producer import Producer

# A layer with no packet for this long counts as stopped (``PublishedTrack.active_layers``):
# a simulcast publisher stops its top layers when its bandwidth estimate is low, and even a
# still picture sends several packets per second.
LAYER_ACTIVE_SECONDS = 1.0


class PublishedTrack:
    """One track of the publisher (``kind``), received as one or more layers: simulcast
    encodings of the same picture, each a ``Producer`` (with its ``rid``); a track
    without simulcast has one layer.

    ``layers`` is lowest quality first. The order is read from what arrives, since neither
    the rid names (Chromium's q/h/f, OBS's own) nor their order in the offer say which is
    which: a layer whose keyframes told its picture size (``Producer.frame_size``) ranks
    by its pixel count; a layer whose size is not known yet (no keyframe yet, or a codec
    whose size is not read) ranks above those, by its measured bitrate; the offer's order
    breaks ties. A publisher starts its lowest layers first and adds the top one last, so
    a layer not heard from yet belongs on top."""

    def __init__(self, kind: str, layers: Sequence[Producer]) -> None:
        if not layers:
            raise ValueError("a published track has at least one layer")
        self.kind = kind
        self.offered_layers = tuple(layers)  # in the offer's order

    @classmethod
    def single(cls, producer: Producer) -> PublishedTrack:
        """A track of one layer (no simulcast)."""
        return cls(producer.kind, (producer,))

    @property
    def simulcast(self) -> bool:
        return len(self.offered_layers) > 1

    def layers_at(self, now: float) -> tuple[Producer, ...]:
        """The layers, lowest quality first, as known at ``now`` (``time.monotonic()``)."""
        if len(self.offered_layers) == 1:
            return self.offered_layers
        order = {layer: index for index, layer in enumerate(self.offered_layers)}

        def quality(layer: Producer) -> tuple[int, float, int]:
            size = layer.frame_size
            if size is not None:
                return (0, size[0] * size[1], order[layer])
            return (1, layer.bitrate(now), order[layer])

        return tuple(sorted(self.offered_layers, key=quality))

    @property
    def layers(self) -> tuple[Producer, ...]:
        """The layers, lowest quality first (``layers_at`` now)."""
        return self.layers_at(time.monotonic())

    def active_layers(self, now: float) -> tuple[Producer, ...]:
        """The layers that received a packet within ``LAYER_ACTIVE_SECONDS`` of ``now``
        (``time.monotonic()``), lowest quality first."""
        return tuple(
            layer
            for layer in self.layers_at(now)
            if layer.active(now, within=LAYER_ACTIVE_SECONDS) and not layer.closed
        )

    def default_layer(self, now: float) -> Producer:
        """The layer a new down track starts on: the top one sending at ``now``; the
        lowest while none is (a publisher starts its lowest first)."""
        active = self.active_layers(now)
        return active[-1] if active else self.layers_at(now)[0]

    def layer_index(self, producer: Producer, now: float) -> int | None:
        """``producer``'s place in ``layers_at(now)`` (0: lowest), None if not a layer."""
        layers = self.layers_at(now)
        return layers.index(producer) if producer in layers else None

    def nearest_layer(self, index: int, now: float) -> Producer:
        """The layer at ``index`` in ``layers_at(now)``, or the nearest one there is."""
        layers = self.layers_at(now)
        return layers[max(0, min(index, len(layers) - 1))]
