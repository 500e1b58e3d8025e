"""``/metrics`` during a real broadcast: an aiortc publisher through the studio socket, one
viewer on the watch page's socket and one over WHEP, both aiortc, through the in-process
SFU. The scrape parses with prometheus-client's own parser, and its values move as the
broadcast does; every metric the Grafana dashboard (docs/grafana-dashboard.json) queries is
in it; without the token it is refused, without any setting it is not there."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from broadcast.models import Stream
from broadcast.services import IssuedKey
from signaling.gateway import gateway
from testpeers import TestPublisher, wait_until_awaited
from tests.signaling.http_clients import WhepClient
from tests.signaling.test_consumers import Socket, go_live, watch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

TOKEN = "metrics-token-for-tests"
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def cleanup() -> AsyncIterator[list[WhepClient | TestPublisher | Socket]]:
    opened: list[WhepClient | TestPublisher | Socket] = []
    yield opened
    for thing in opened:
        await thing.close()
    await gateway.close_all()


@pytest.fixture
def metrics_token(settings: Any) -> str:
    settings.ONAIR = {**settings.ONAIR, "METRICS_TOKEN": TOKEN}
    return TOKEN


async def scrape(http: AsyncClient) -> Samples:
    """Every sample of ``/metrics``, read with prometheus-client's parser."""
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_the_dashboard_is_a_grafana_dashboard_of_prometheus_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "onair-overview"
    assert dashboard["schemaVersion"] >= 36
    assert [v["type"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
    assert len(dashboard_queries()) >= 20


async def test_metrics_follow_a_broadcast_with_two_viewers(
    owner: User,
    stream_parts: tuple[Stream, IssuedKey],
    cleanup: list[WhepClient | TestPublisher | Socket],
    metrics_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream, _ = stream_parts
    stream_id = str(stream.pk)
    http = AsyncClient()
    studio, publisher = await go_live(stream, owner)
    cleanup += [studio, publisher]
    await studio.expect("state")

    async def published() -> bool:
        return value(await scrape(http), "onair_sfu_live_streams") >= 1

    assert await wait_until_awaited(published, 10)
    before = await scrape(http)
    assert value(before, "onair_sfu_viewers", stream=stream_id) == 0
    assert value(before, "onair_signaling_messages_total", endpoint="studio", type="offer") >= 1

    page, page_viewer = await watch(stream)
    cleanup += [page]
    whep = WhepClient(AsyncClient(), stream.slug)
    cleanup.append(whep)
    assert (await whep.watch()).status_code == 201
    assert await page_viewer.wait_for_frames(video=10, within=20)
    assert await whep.viewer.wait_for_frames(video=10, within=20)

    two = await scrape(http)
    assert value(two, "onair_sfu_viewers", stream=stream_id) == 2
    assert value(two, "onair_sfu_peer_connections", role="viewer", state="connected") >= 2
    assert value(two, "onair_sfu_peer_connections", role="publisher", state="connected") >= 1
    forwarded = "onair_sfu_forwarded_packets_total"
    assert value(two, forwarded, kind="video") > value(before, forwarded, kind="video")
    assert value(two, forwarded, kind="audio") > value(before, forwarded, kind="audio")
    # Each joining viewer's video asked the publisher for a keyframe, and one went out.
    join = "onair_sfu_keyframe_requests_total"
    assert (
        value(two, join, kind="video", reason="join")
        >= value(before, join, kind="video", reason="join") + 2
    )
    sent = "onair_sfu_keyframe_requests_sent_total"
    assert value(two, sent, kind="video") > value(before, sent, kind="video")
    for histogram in ("onair_sfu_viewer_join_seconds", "onair_sfu_viewer_first_frame_seconds"):
        assert value(two, f"{histogram}_count") >= value(before, f"{histogram}_count") + 2
    whep_posts = value(
        two, "onair_http_session_requests_total", protocol="whep", method="POST", status="201"
    ) - value(
        before, "onair_http_session_requests_total", protocol="whep", method="POST", status="201"
    )
    assert whep_posts == 1
    assert value(two, "onair_signaling_messages_total", endpoint="watch", type="answer") >= 1
    await page.send({"type": "shout"})
    assert (await page.expect("error"))["code"] == "unknown_type"

    # Packets keep flowing: the counters keep growing between scrapes.
    await page_viewer.wait_for_frames(video=page_viewer.video.frames + 10, within=10)
    later = await scrape(http)
    assert value(later, forwarded, kind="video") > value(two, forwarded, kind="video")
    bytes_forwarded = "onair_sfu_forwarded_bytes_total"
    assert value(later, bytes_forwarded, kind="video") > value(two, bytes_forwarded, kind="video")

    assert (await whep.delete()).status_code == 200

    async def one_left() -> bool:
        return value(await scrape(http), "onair_sfu_viewers", stream=stream_id) == 1

    assert await wait_until_awaited(one_left, 10)
    after = await scrape(http)
    # A closed viewer's packets stay counted: counters never go back.
    assert value(after, forwarded, kind="video") >= value(later, forwarded, kind="video")
    assert value(after, "onair_signaling_messages_total", endpoint="watch", type="invalid") >= 1
    assert value(after, "onair_signaling_errors_total", endpoint="watch", code="unknown_type") >= 1

    # Every metric the dashboard's queries name is in the scrape of a real broadcast.
    scraped = {name for name, _ in after}
    queried = {
        name
        for query in dashboard_queries()
        for name in re.findall(r"\b(?:onair|process)_[a-z_]+\b", query)
    }
    assert len(queried) >= 25
    assert queried <= scraped, queried - scraped
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_metrics_are_refused_without_the_token(
    metrics_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    http = AsyncClient()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = await http.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert response.json()["error"]["code"] == "not_authenticated"
        assert b"onair_" not in response.content
    assert (
        await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    ).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert TOKEN not in caplog.text


async def test_metrics_are_closed_by_default_and_open_to_allowed_addresses(
    settings: Any,
) -> None:
    http = AsyncClient()  # its requests come from 127.0.0.1
    assert (await http.get("/metrics")).status_code == 404
    settings.ONAIR = {**settings.ONAIR, "METRICS_ALLOWED_ADDRESSES": "10.0.0.0/8"}
    response = await http.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    settings.ONAIR = {**settings.ONAIR, "METRICS_ALLOWED_ADDRESSES": "10.0.0.0/8, 127.0.0.1"}
    response = await http.get("/metrics")
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.content.decode())}
    assert {"onair_sfu_viewers", "onair_event_loop_lag_seconds", "process_cpu_seconds"} <= names
