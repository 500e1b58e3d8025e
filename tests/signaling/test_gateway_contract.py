"""The gateway's contract: the verbs that travel to cluster workers are read from the
Protocol's signatures, survive the trip through JSON, and both implementations serve them."""

from __future__ import annotations

import inspect
import json

import pytest

from signaling.gateway.cluster import ClusterGateway
from signaling.gateway.contract import (
    VERBS,
    ConnectNotice,
    Gateway,
    IceCandidate,
    IceCredentials,
    PublishResult,
    RecordingProgress,
    ViewResult,
)
from signaling.gateway.embedded import EmbeddedGateway


def test_the_verbs_know_which_values_to_rebuild() -> None:
    assert VERBS["publisher_candidate"].dataclass_params == {"candidate": IceCandidate}
    assert VERBS["viewer_restart_ice"].dataclass_params == {"remote": IceCredentials}
    assert VERBS["viewer_restart_ice"].result is IceCredentials
    assert VERBS["subscribe"].dataclass_params == {"notice": ConnectNotice}
    assert VERBS["subscribe"].result is ViewResult
    assert VERBS["publish"].result is PublishResult
    assert VERBS["publisher_active"].result is None
    assert VERBS["recording_status"].result is RecordingProgress


def test_a_call_survives_the_trip_through_json() -> None:
    verb = VERBS["publisher_candidate"]
    candidate = IceCandidate(candidate="candidate:1 1 udp 1 192.0.2.1 9 typ host", sdp_mid="0")
    sent = {"stream_id": "7", "session_id": "s", "candidate": verb.encode(candidate)}
    received = verb.decode_params(json.loads(json.dumps(sent)))
    assert received == {"stream_id": "7", "session_id": "s", "candidate": candidate}
    result = ViewResult(viewer_id="v", sdp="v=0")
    subscribe = VERBS["subscribe"]
    assert subscribe.decode_result(json.loads(json.dumps(subscribe.encode(result)))) == result
    assert subscribe.decode_result(None) is None  # a full worker


@pytest.mark.parametrize("name", sorted(VERBS))
def test_both_implementations_serve_every_verb_with_the_contracts_signature(name: str) -> None:
    contract = inspect.signature(getattr(Gateway, name))
    for implementation in (EmbeddedGateway, ClusterGateway):
        method = getattr(implementation, name)
        assert inspect.iscoroutinefunction(method)
        assert list(inspect.signature(method).parameters) == list(contract.parameters)
