"""No secret reaches a log: the server command ``make run`` uses, in a subprocess, serves
WHIP and WHEP sessions (and refusals Django logs at WARNING), and neither its access log nor
its other logs hold a session token, a stream key or a bearer token."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testpeers import TestPublisher, TestViewer, wait_until
from tests.daphne import free_port
from tests.onair.conftest import TURN_SECRET, Server, make_run_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def turn_port(tmp_path: Path) -> Iterator[int | None]:
    """coturn on loopback with the server's TURN secret (REST credentials), answering the
    SFU's allocations at once: its port, or None where coturn is not installed (``make
    nat-deps``; the SFU then waits out each peer's allocation to 127.0.0.1:3478, ≈ 5 s)."""
    if shutil.which("turnserver") is None:
        yield None
        return
    port = free_port()
    config = tmp_path / "turnserver.conf"
    config.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                "use-auth-secret",
                f"static-auth-secret={TURN_SECRET}",
                "realm=onair.test",
                "no-tls",
                "no-dtls",
                "no-cli",
                "allow-loopback-peers",
                f"pidfile={tmp_path / 'turnserver.pid'}",
                f"log-file={tmp_path / 'turnserver.log'}",
                f"userdb={tmp_path / 'turndb'}",
                "",
            ]
        )
    )
    config.chmod(0o600)
    daemon = subprocess.Popen(
        ["turnserver", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # it listens on TCP as on UDP
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert daemon.poll() is None, (tmp_path / "turnserver.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "turnserver.log").read_text()
            time.sleep(0.05)
        yield port
    finally:
        daemon.terminate()
        daemon.wait(10)


@pytest.fixture
def server(tmp_path: Path, turn_port: int | None) -> Iterator[tuple[Server, str]]:
    """``make run``'s server whose SFU allocates on the TURN server with the secret."""
    turn = {} if turn_port is None else {"ONAIR_TURN_URLS": f"turn:127.0.0.1:{turn_port}"}
    with make_run_server(tmp_path, **turn) as served:
        yield served


async def test_no_session_token_key_or_bearer_reaches_any_log(
    server: tuple[Server, str], turn_port: int | None
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
    if turn_port is not None:  # the SFU's peers allocated with their credentials
        assert "Method.ALLOCATE, message_class=Class.RESPONSE" in log, log[-3000:]
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
