"""No secret reaches a log: the server command ``make run`` uses, in a subprocess, serves
WHIP and WHEP sessions (and refusals Django logs at WARNING), and neither its access log nor
its other logs hold a session token, a stream key or a bearer token."""

from __future__ import annotations

import pytest

from testpeers import TestPublisher, TestViewer, wait_until
from tests.onair.conftest import TURN_SECRET, Server

pytestmark = pytest.mark.timeout(120)


async def test_no_session_token_key_or_bearer_reaches_any_log(
    server: tuple[Server, str],
) -> None:
    served, key = server
    publisher, viewer = TestPublisher(), TestViewer()
    try:
        status, headers, _ = served.request(
            "POST",
            "/whip/demo",
            await publisher.create_offer(),
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"},
        )
        assert status == 201
        whip_session = headers["Location"]
        status, headers, _ = served.request(
            "POST", "/whep/demo", await viewer.create_offer(), {"Content-Type": "application/sdp"}
        )
        assert status == 201
        whep_session = headers["Location"]
        forged = "/whip/demo/" + "F" * 43
        trickle = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": '"nope"'}
        served.request("PATCH", whip_session, "a=end-of-candidates\r\n", trickle)
        served.request("PATCH", forged, "a=end-of-candidates\r\n", trickle)  # 404: a warning
        served.request("POST", "/whip/demo", "v=0", {"Authorization": f"Bearer {key}x"})  # 401
        assert served.request("DELETE", whep_session)[0] == 200
        assert served.request("DELETE", whip_session)[0] == 200
    finally:
        await publisher.close()
        await viewer.close()
    # The access log is written as each response completes.
    assert await wait_until(lambda: '"DELETE /whip/demo/' in served.log(), 10)

    log = served.log()
    # The requests were logged (access log and Django's warnings)...
    assert '"DELETE /whip/demo/<token>" 200' in log
    assert '"PATCH /whip/demo/<token>" 404' in log
    assert "Not Found: /whip/demo/<token>" in log
    # ...without one secret.
    for secret in (
        whip_session.rsplit("/", 1)[1],
        whep_session.rsplit("/", 1)[1],
        forged.rsplit("/", 1)[1],
        key,
        key.removeprefix("sk_"),
        TURN_SECRET,
    ):
        assert secret not in log
