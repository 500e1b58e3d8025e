"""The deployment recipe (docs/DEPLOY.md) run for real: nginx with ``deploy/nginx/onair.conf``
over TLS (a self-signed certificate) in front of daphne started with the command line of
``deploy/systemd/onair-web@.service`` and the environment of ``deploy/onair.env.example``
(production settings, on PostgreSQL and Redis), and coturn with
``deploy/coturn/turnserver.conf`` as OnAir's TURN server. Only ports, paths, the certificate
and the secrets are substituted. Every request goes through the proxy: pages, static files,
a watch page's WebSocket, WHIP from FFmpeg, WHEP from aiortc, CORS preflights; and cluster
mode with the SFU unit's ``runsfu`` behind two web processes.

nginx and coturn come from Debian (``make deploy-deps``); without nginx, PostgreSQL or Redis
the tests are skipped saying why, and fail under CI. Without coturn only its test is."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
import websockets
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from prometheus_client.parser import text_string_to_metric_families

from onair.environment import app_environment
from signaling.ice import turn_credential
from testpeers import TestPublisher, TestViewer, wait_until
from tests.cluster import services_unreachable
from tests.daphne import ROOT, free_port, log_errors, manage, stop
from tests.deploy.files import (
    DEPLOY,
    environment_file,
    find_program,
    program,
    render,
    self_signed_certificate,
    unavailable,
)
from tests.e2e.test_ffmpeg_whip import ffmpeg_whip_command

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/9")
HOST = "localhost"
STARTUP_SECONDS = 60
SDP = "application/sdp"
METRICS_TOKEN = secrets.token_urlsafe(24)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass
class Stack:
    https_port: int
    http_port: int
    daphne_ports: list[int]  # nginx's upstream servers
    tls: ssl.SSLContext
    tls_ca: str  # the certificate nginx and coturn present, as a CA file
    static_root: Path
    workdir: Path
    slug: str
    stream_key: str
    turn_port: int | None  # coturn's, when it runs

    @property
    def daphne_port(self) -> int:
        return self.daphne_ports[0]

    def daphne_log(self, port: int | None = None) -> str:
        path = self.workdir / f"daphne-{port or self.daphne_port}.log"
        return path.read_text(errors="replace")

    @property
    def origin(self) -> str:
        return f"https://{HOST}:{self.https_port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        port: int | None = None,
    ) -> Reply:
        """One request through nginx over TLS (or, with ``port``, over plain HTTP)."""
        connection: http.client.HTTPConnection
        if port is None:
            connection = http.client.HTTPSConnection(
                HOST, self.https_port, context=self.tls, timeout=20
            )
        else:
            connection = http.client.HTTPConnection(HOST, port, timeout=20)
        try:
            connection.request(method, path, body=body or None, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def _unit_command(unit: str, replacements: dict[str, str]) -> list[str]:
    """A unit's ``ExecStart`` as systemd runs it (``%i``, ``${VARIABLE}``: ``replacements``),
    with this checkout's Python."""
    text = (DEPLOY / "systemd" / unit).read_text()
    command = re.search(r"^ExecStart=(.+)$", text, re.MULTILINE)
    assert command is not None
    line = command.group(1)
    for name, value in replacements.items():
        assert name in line, (name, line)
        line = line.replace(name, value)
    argv = shlex.split(line)
    assert argv[0] == "/srv/onair/.venv/bin/python", argv
    return [sys.executable, *argv[1:]]


def _nginx_config(work: Path, stack: Stack, cert: Path, key: Path) -> Path:
    """deploy/nginx/onair.conf on this run's ports, paths and certificate, inside a main
    configuration like Debian's (gzip on, mime.types) that keeps its files in ``work``. The
    IPv6 addresses listened on are loopback's, unless the machine has no IPv6."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        ipv6 = True
    except OSError:
        ipv6 = False
    site = render(
        DEPLOY / "nginx" / "onair.conf",
        {
            "server 127.0.0.1:8000;": "\n    ".join(
                f"server 127.0.0.1:{port};" for port in stack.daphne_ports
            ),
            "listen 80;": f"listen 127.0.0.1:{stack.http_port};",
            "listen [::]:80;": f"listen [::1]:{stack.http_port};" if ipv6 else "",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{stack.https_port} ssl http2;",
            "listen [::]:443 ssl http2;": (
                f"listen [::1]:{stack.https_port} ssl http2;" if ipv6 else ""
            ),
            "/etc/letsencrypt/live/live.example.com/fullchain.pem": str(cert),
            "/etc/letsencrypt/live/live.example.com/privkey.pem": str(key),
            "/srv/onair/staticfiles/": f"{stack.static_root}/",
            "/var/www/html": str(work / "acme"),
            "/var/log/nginx/onair.access.log": str(work / "access.log"),
        },
    )
    (work / "onair.conf").write_text(site)
    mime_types = Path("/etc/nginx/mime.types")
    types = (
        f"include {mime_types};"
        if mime_types.exists()
        else "types { text/html html; text/css css; application/javascript js; }"
    )
    main = f"""
        # root's workers would run as nobody, who cannot read pytest's temporary directory
        {"user root;" if os.geteuid() == 0 else ""}
        worker_processes 1;
        pid {work}/nginx.pid;
        error_log {work}/error.log info;
        events {{ worker_connections 256; }}
        http {{
            {types}
            default_type application/octet-stream;
            gzip on;
            access_log {work}/access.log;
            client_body_temp_path {work}/client_body;
            proxy_temp_path {work}/proxy;
            fastcgi_temp_path {work}/fastcgi;
            uwsgi_temp_path {work}/uwsgi;
            scgi_temp_path {work}/scgi;
            include {work}/onair.conf;
        }}
    """
    path = work / "nginx.conf"
    path.write_text(main)
    return path


def _coturn_config(
    work: Path, port: int, tls_port: int, cert: Path, key: Path, secret: str
) -> Path:
    """deploy/coturn/turnserver.conf on this run's ports, certificate and secret, on
    loopback, logging into ``work``."""
    relay = free_port()
    config = render(
        DEPLOY / "coturn" / "turnserver.conf",
        {
            "listening-port=3478": f"listening-port={port}",
            "tls-listening-port=5349": f"tls-listening-port={tls_port}",
            "min-port=49152": f"min-port={relay}",
            "max-port=65535": f"max-port={relay + 20}",
            "/etc/letsencrypt/live/turn.example.com/fullchain.pem": str(cert),
            "/etc/letsencrypt/live/turn.example.com/privkey.pem": str(key),
            "static-auth-secret=replace-with-the-turn-secret": f"static-auth-secret={secret}",
        },
    )
    config += (
        f"\nlistening-ip=127.0.0.1\nrelay-ip=127.0.0.1\n"
        f"pidfile={work}/turnserver.pid\nlog-file={work}/turnserver.log\nsimple-log\n"
    )
    path = work / "turnserver.conf"
    path.write_text(config)
    return path


@contextmanager
def _running(work: Path, *, cluster: bool) -> Iterator[Stack]:
    """nginx in front of daphne with the recipe's environment: embedded mode with coturn (if
    installed) as its TURN server, or cluster mode with the SFU unit's ``runsfu`` and two
    web processes."""
    nginx = program("nginx", "make deploy-deps, or apt-get install nginx")
    down = services_unreachable()
    if down is not None:
        unavailable(down)
    turnserver = None if cluster else find_program("turnserver")
    cert, key = self_signed_certificate(work)
    https_port, http_port, turn_port, turn_tls_port, *daphne_ports = _free_ports(
        6 if cluster else 5
    )
    processes: list[subprocess.Popen[bytes]] = []
    database = f"onair_deploy_{secrets.token_hex(4)}"
    database_url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    prefix = f"onair-deploy-{secrets.token_hex(4)}"  # this run's Redis keys, deleted after
    store = redis.Redis.from_url(REDIS_URL)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')

    def spawn(name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        with (work / f"{name}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )

    try:
        turn: dict[str, str] = {"ONAIR_STUN_URLS": "", "ONAIR_TURN_URLS": ""}
        if turnserver is not None:
            secret = secrets.token_urlsafe(24)
            config = _coturn_config(work, turn_port, turn_tls_port, cert, key, secret)
            spawn("turnserver.stdout", [turnserver, "-c", str(config)])
            _wait_for_port(turn_port, processes[-1], work / "turnserver.log")
            turn = {
                "ONAIR_STUN_URLS": f"stun:127.0.0.1:{turn_port}",
                "ONAIR_TURN_URLS": f"turn:127.0.0.1:{turn_port}?transport=udp,"
                f"turns:{HOST}:{turn_tls_port}?transport=tcp",
                "ONAIR_TURN_SECRET": secret,
            }
        env = app_environment(
            database_url=database_url,
            **{
                **environment_file(DEPLOY / "onair.env.example"),
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
                "DATABASE_URL": database_url,
                "REDIS_URL": REDIS_URL,
                "ONAIR_REDIS_PREFIX": prefix,
                "ALLOWED_HOSTS": HOST,
                "STATIC_ROOT": str(work / "staticfiles"),
                "RECORDINGS_ROOT": str(work / "var" / "recordings"),
                "THUMBNAILS_ROOT": str(work / "var" / "thumbnails"),
                "ONAIR_RECORDING_SPOOL_DIR": str(work / "var" / "recording-spool"),
                "ONAIR_METRICS_TOKEN": METRICS_TOKEN,
                **turn,
                **({"ONAIR_SFU_MODE": "cluster"} if cluster else {}),
            },
        )
        assert env["DJANGO_SETTINGS_MODULE"] == "onair.settings.production"
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "collectstatic", "--noinput", "-v0")
        code = (
            "from django.contrib.auth.models import User; "
            "from broadcast.services import stream_create; "
            "owner = User.objects.create_user('deployer'); "
            "stream, key = stream_create(owner=owner, title='Through the proxy'); "
            "print(stream.slug, key.secret)"
        )
        slug, stream_key = manage(env, "shell", "-c", code).split()[-2:]

        if cluster:
            workers = env["RUNSFU_WORKERS"]
            spawn("runsfu", _unit_command("onair-sfu.service", {"${RUNSFU_WORKERS}": workers}), env)
            deadline = time.monotonic() + STARTUP_SECONDS
            while store.scard(f"{prefix}:sfu:workers") < int(workers):
                assert processes[-1].poll() is None, (work / "runsfu.log").read_text()
                assert time.monotonic() < deadline, (work / "runsfu.log").read_text()
                time.sleep(0.1)
        for port in daphne_ports:
            spawn(f"daphne-{port}", _unit_command("onair-web@.service", {"%i": str(port)}), env)
            _wait_for_port(port, processes[-1], work / f"daphne-{port}.log")

        stack = Stack(
            https_port=https_port,
            http_port=http_port,
            daphne_ports=daphne_ports,
            tls=ssl.create_default_context(cafile=str(cert)),
            tls_ca=str(cert),
            static_root=work / "staticfiles",
            workdir=work,
            slug=slug,
            stream_key=stream_key,
            turn_port=turn_port if turnserver is not None else None,
        )
        nginx_config = _nginx_config(work, stack, cert, key)
        checked = subprocess.run(
            [nginx, "-t", "-p", str(work), "-c", str(nginx_config)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr
        spawn(
            "nginx.stdout", [nginx, "-p", str(work), "-c", str(nginx_config), "-g", "daemon off;"]
        )
        _wait_for_port(https_port, processes[-1], work / "error.log")
        yield stack
    finally:
        for process in reversed(processes):
            stop(process)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for name in store.scan_iter(f"{prefix}*"):
            store.delete(name)
    for log in sorted(work.glob("*.log")):
        if log.name.startswith(("daphne-", "runsfu")):
            text = log.read_text(errors="replace")
            assert log_errors(text) == [], f"{log.name}:\n{text[-4000:]}"
    # No session token in nginx's access log (a session URL's 43 characters).
    access = (work / "access.log").read_text(errors="replace")
    assert re.findall(r"/wh[ie]p/[^/ ]+/[A-Za-z0-9_-]{43}", access) == []
    proxy_log = (work / "error.log").read_text(errors="replace")
    problems = re.findall(r"^.*\[(?:error|crit|alert|emerg)\].*$", proxy_log, re.MULTILINE)
    # what the body-size test asks for
    assert [p for p in problems if "client intended to send too large body" not in p] == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _running(tmp_path_factory.mktemp("deploy"), cluster=False) as running:
        yield running


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _running(tmp_path_factory.mktemp("deploy-cluster"), cluster=True) as running:
        yield running


def test_pages_and_static_files_are_served_over_tls(stack: Stack) -> None:
    page = stack.request("GET", f"/watch/{stack.slug}/")
    assert page.status == 200, page.body[-2000:]
    assert b"Through the proxy" in page.body
    assert page.header("Strict-Transport-Security") == "max-age=31536000"

    # From STATIC_ROOT by nginx: daphne itself does not serve them in production.
    for path, content_type in (
        ("css/onair.css", "text/css"),
        ("js/chat.js", "application/javascript"),  # a browser runs no script typed otherwise
    ):
        served = stack.request("GET", f"/static/{path}")
        assert served.status == 200, path
        assert served.header("Content-Type") == content_type
        assert served.body == (stack.static_root / path).read_bytes()
    direct = http.client.HTTPConnection("127.0.0.1", stack.daphne_port, timeout=20)
    direct.request("GET", "/static/css/onair.css", headers={"Host": HOST})
    assert direct.getresponse().status == 404
    direct.close()

    ready = stack.request("GET", "/readyz")
    assert ready.status == 200, ready.body
    assert json.loads(ready.body)["status"] == "ready"

    redirected = stack.request("GET", f"/watch/{stack.slug}/", port=stack.http_port)
    assert redirected.status == 301
    assert redirected.header("Location") == f"https://{HOST}/watch/{stack.slug}/"


async def _offer() -> str:
    viewer = TestViewer()
    try:
        return await viewer.create_offer()
    finally:
        await viewer.close()


def test_http2_clients_get_pages_and_whep_answers(stack: Stack) -> None:
    """Browsers speak HTTP/2 to nginx (which speaks HTTP/1.1 to daphne): a page, and a WHEP
    offer reaching OnAir whole (a valid offer, for a stream not live yet: its 409)."""
    curl = find_program("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    command = [
        curl, "--silent", "--http2", "--cacert", stack.tls_ca,
        "--write-out", "\n%{http_version} %{http_code}",
    ]  # fmt: skip
    page = subprocess.run(
        [*command, f"{stack.origin}/watch/{stack.slug}/"], capture_output=True, text=True
    )
    body, _, status = page.stdout.rpartition("\n")
    assert status == "2 200", page.stdout[-500:] + page.stderr
    assert "Through the proxy" in body
    offer = subprocess.run(
        [
            *command, "--header", f"Content-Type: {SDP}", "--data-binary", asyncio.run(_offer()),
            f"{stack.origin}/whep/{stack.slug}",
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    body, _, status = offer.stdout.rpartition("\n")
    assert status == "2 409", offer.stdout[-500:] + offer.stderr
    assert json.loads(body)["error"]["code"] == "not_live"


def test_metrics_through_the_proxy_need_the_token(stack: Stack) -> None:
    """docs/DEPLOY.md, Monitoring: a Prometheus elsewhere scrapes the one daphne of embedded
    mode through nginx, with the token."""
    assert stack.request("GET", "/metrics").status == 401
    scraped = stack.request("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status == 200
    families = {family.name for family in text_string_to_metric_families(scraped.body.decode())}
    assert {"onair_http_session_requests", "onair_event_loop_lag_seconds"} <= families, families


def test_the_client_address_is_nginx_s_peer_whatever_the_client_forwards(stack: Stack) -> None:
    """The per-address caps count by it: a client naming another address in its own
    X-Forwarded-For must not get a fresh allowance."""
    path = f"/healthz?probe={secrets.token_hex(6)}"
    reply = stack.request("GET", path, headers={"X-Forwarded-For": "203.0.113.9"})
    assert reply.status == 200
    lines = [line for line in stack.daphne_log().splitlines() if path in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("127.0.0.1:"), lines
    assert "203.0.113.9" not in lines[0]


def test_request_bodies_up_to_onair_s_limit_reach_it_and_larger_ones_get_its_413(
    stack: Stack,
) -> None:
    """nginx's limit is ONAIR_MAX_REQUEST_BYTES (1 MiB): a body under it reaches OnAir (whose
    WHIP view refuses an offer that large, 400), one over it is refused by nginx with the
    body OnAir gives."""
    headers = {"Content-Type": SDP, "Authorization": f"Bearer {stack.stream_key}"}
    under = stack.request("POST", f"/whip/{stack.slug}", b"v=0\r\n" * 200_000, headers)
    assert under.status == 400, under.body[:500]
    assert json.loads(under.body)["error"]["message"].startswith("The body is larger than")

    over = b"v=0\r\n" * 250_000
    refused = stack.request("POST", f"/whip/{stack.slug}", over, headers)
    assert refused.status == 413
    assert refused.header("Content-Type") == "application/json"
    # daphne refuses on the declared length (while a client sends the body, it may close
    # before the client is done: what nginx would report as 502).
    direct = http.client.HTTPConnection("127.0.0.1", stack.daphne_port, timeout=20)
    direct.putrequest("POST", f"/whip/{stack.slug}", skip_host=True)
    for name, value in {**headers, "Host": HOST, "Content-Length": str(len(over))}.items():
        direct.putheader(name, value)
    direct.endheaders()
    onair = direct.getresponse()
    assert onair.status == 413
    assert json.loads(refused.body) == json.loads(onair.read())
    direct.close()


@pytest.mark.parametrize("protocol", ["whip", "whep"])
def test_cors_preflights_are_onair_s(stack: Stack, protocol: str) -> None:
    reply = stack.request(
        "OPTIONS",
        f"/{protocol}/{stack.slug}",
        headers={
            "Origin": "https://encoder.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert reply.status == 204
    assert reply.headers.get_all("Access-Control-Allow-Origin") == ["*"]
    assert "POST" in reply.header("Access-Control-Allow-Methods")
    assert reply.header("Access-Control-Allow-Headers") == "Authorization, Content-Type, If-Match"
    exposed = reply.header("Access-Control-Expose-Headers")
    assert {"Location", "ETag", "Link"} <= set(exposed.split(", ")), exposed
    assert reply.header("Accept-Post") == SDP


async def test_ffmpeg_publishes_and_a_watch_page_and_a_whep_player_watch_through_the_proxy(
    stack: Stack,
) -> None:
    """FFmpeg's WHIP over TLS (it verifies the certificate), a watch page's signaling over
    ``wss://`` (and a foreign page's WebSocket refused), an aiortc WHEP player with its session's
    PATCH, OPTIONS and DELETE: all through nginx; the media itself goes to the SFU directly.
    FFmpeg stopped as a user stops it (``q``) sends its DELETE, which ends the broadcast."""
    encoder = await asyncio.create_subprocess_exec(
        *ffmpeg_whip_command(f"{stack.origin}/whip/{stack.slug}", stack.stream_key, 120),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SSL_CERT_FILE": stack.tls_ca},
    )
    watcher = TestViewer()
    player = TestViewer()
    try:

        def state() -> str:
            return str(json.loads(stack.request("GET", f"/whep/{stack.slug}/state").body)["state"])

        await wait_until(lambda: encoder.returncode is not None or state() == "live", 15)
        if encoder.returncode is not None or state() != "live":
            encoder.kill()
            raise AssertionError((await encoder.communicate())[0].decode(errors="replace"))

        socket_url = f"wss://{HOST}:{stack.https_port}/ws/watch/{stack.slug}/"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(socket_url, origin="https://elsewhere.example", ssl=stack.tls)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        async with websockets.connect(socket_url, origin=stack.origin, ssl=stack.tls) as page:  # type: ignore[arg-type]
            welcome = json.loads(await page.recv())
            assert welcome["type"] == "welcome", welcome
            await page.send(json.dumps({"type": "watch"}))
            while (offer := json.loads(await page.recv()))["type"] != "offer":
                pass
            answer = await watcher.answer(offer["sdp"])
            await page.send(json.dumps({"type": "answer", "sdp": answer}))
            assert await watcher.wait_for_frames(video=30, audio=10), watcher.video

        offer = await player.create_offer()
        posted = await asyncio.to_thread(
            stack.request, "POST", f"/whep/{stack.slug}", offer.encode(), {"Content-Type": SDP}
        )
        assert posted.status == 201, posted.body
        location = posted.header("Location")
        assert location.startswith(f"/whep/{stack.slug}/"), location
        assert posted.header("ETag").startswith('"'), posted.header("ETag")  # strong, not W/
        assert posted.headers.get_all("Access-Control-Allow-Origin") == ["*"]
        if stack.turn_port is not None:
            assert 'rel="ice-server"' in posted.header("Link"), posted.header("Link")
            assert 'credential="' in posted.header("Link")
        await player.accept_answer(posted.body.decode())
        assert await player.wait_for_frames(video=30, audio=10), player.video

        fragment = b"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        patch_headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": '"other"'}
        patched = stack.request("PATCH", location, fragment, patch_headers)
        assert patched.status == 412, patched.body
        preflight = stack.request(
            "OPTIONS",
            location,
            headers={"Origin": "https://player.example", "Access-Control-Request-Method": "PATCH"},
        )
        assert preflight.status == 204
        assert preflight.header("Accept-Patch") == "application/trickle-ice-sdpfrag"
        assert stack.request("DELETE", location).status == 200
        access = (stack.workdir / "access.log").read_text()
        assert f'"DELETE /whep/{stack.slug}/<token> HTTP/1.1" 200' in access, access[-2000:]

        output = (await asyncio.wait_for(encoder.communicate(b"q"), 30))[0]
        assert encoder.returncode == 0, output.decode(errors="replace")
        assert await wait_until(lambda: state() == "ended", 10)
        log = stack.daphne_log()
        assert re.search(rf'"DELETE /whip/{stack.slug}/\S+" 200', log), log[-3000:]
    finally:
        if encoder.returncode is None:
            encoder.kill()
            await encoder.wait()
        await watcher.close()
        await player.close()


async def _allocate(url: str, username: str, password: str, tls: ssl.SSLContext) -> tuple[str, int]:
    """A TURN allocation on the server of ``url`` (``turn:`` over UDP or TCP, ``turns:`` over
    TLS); its relayed address."""
    scheme, _, rest = url.partition(":")
    address, _, query = rest.partition("?")
    host, _, port = address.rpartition(":")
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol,
        (host, int(port)),
        username,
        password,
        transport="udp" if query == "transport=udp" else "tcp",
        ssl=tls if scheme == "turns" else None,
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


async def test_coturn_takes_the_credentials_onair_hands_out_and_no_others(stack: Stack) -> None:
    """deploy/coturn/turnserver.conf with ONAIR_TURN_SECRET as its static-auth-secret: the
    credential a watch page is given (over the proxy's WebSocket) allocates a relay over UDP,
    TCP and TLS; one derived from another secret is refused."""
    if stack.turn_port is None:
        unavailable("coturn is not installed (make deploy-deps, or apt-get install coturn)")
    async with websockets.connect(
        f"wss://{HOST}:{stack.https_port}/ws/watch/{stack.slug}/",
        origin=stack.origin,  # type: ignore[arg-type]
        ssl=stack.tls,
    ) as page:
        welcome = json.loads(await page.recv())
    (turn,) = [server for server in welcome["ice_servers"] if "username" in server]
    urls = [*turn["urls"], turn["urls"][0].replace("transport=udp", "transport=tcp")]
    assert [url.split(":")[0] for url in urls] == ["turn", "turns", "turn"], urls
    for url in urls:
        relayed = await _allocate(url, turn["username"], turn["credential"], stack.tls)
        assert relayed[0] == "127.0.0.1", (url, relayed)

    other = turn_credential(secret="another-secret", user="viewer", ttl_seconds=60)
    with pytest.raises(TransactionFailed) as refused:
        await _allocate(urls[0], other.username, other.password, stack.tls)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401


async def test_the_cluster_recipe_behind_the_proxy(cluster_stack: Stack) -> None:
    """Cluster mode as docs/DEPLOY.md runs it: the SFU unit's ``runsfu --workers``, two web
    processes in nginx's upstream. A WHIP publisher, a watch page and a WHEP player through
    the proxy, whose requests nginx spreads over both daphne processes: a session's
    ``PATCH``, ``OPTIONS`` and ``DELETE`` reach whichever it picks."""
    stack = cluster_stack
    publisher, watcher, player = TestPublisher(), TestViewer(), TestViewer()
    key = {"Authorization": f"Bearer {stack.stream_key}"}
    for _ in stack.daphne_ports:  # each process, as nginx takes turns
        ready = stack.request("GET", "/readyz")
        assert ready.status == 200, ready.body
        assert "sfu_workers" in json.loads(ready.body)["checks"], ready.body
    try:
        offer = (await publisher.create_offer()).encode()
        published = await asyncio.to_thread(
            stack.request, "POST", f"/whip/{stack.slug}", offer, {"Content-Type": SDP, **key}
        )
        assert published.status == 201, published.body
        await publisher.accept_answer(published.body.decode())

        async with websockets.connect(
            f"wss://{HOST}:{stack.https_port}/ws/watch/{stack.slug}/",
            origin=stack.origin,  # type: ignore[arg-type]
            ssl=stack.tls,
        ) as page:
            await page.send(json.dumps({"type": "watch"}))
            while (message := json.loads(await page.recv()))["type"] != "offer":
                pass
            answer = await watcher.answer(message["sdp"])
            await page.send(json.dumps({"type": "answer", "sdp": answer}))
            assert await watcher.wait_for_frames(video=30, audio=10), watcher.video

        offer = (await player.create_offer()).encode()
        posted = await asyncio.to_thread(
            stack.request, "POST", f"/whep/{stack.slug}", offer, {"Content-Type": SDP}
        )
        assert posted.status == 201, posted.body
        await player.accept_answer(posted.body.decode())
        assert await player.wait_for_frames(video=30, audio=10), player.video
        session = posted.header("Location")
        fragment = b"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        patched = stack.request(
            "PATCH",
            session,
            fragment,
            {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": '"other"'},
        )
        assert patched.status == 412, patched.body
        assert stack.request("OPTIONS", session).status == 204
        assert stack.request("DELETE", session).status == 200
        # (the access log shows session paths without their token)
        session_requests = re.compile(rf'"(?:PATCH|OPTIONS|DELETE) /whep/{stack.slug}/')
        served = [len(session_requests.findall(stack.daphne_log(p))) for p in stack.daphne_ports]
        assert sum(served) == 3, served
        assert 0 not in served, f"nginx sent the session's requests to one process: {served}"

        ended = stack.request("DELETE", published.header("Location"), headers=key)
        assert ended.status == 200, ended.body
        state = json.loads(stack.request("GET", f"/whep/{stack.slug}/state").body)
        assert state["state"] == "ended", state
    finally:
        for peer in (publisher, watcher, player):
            await peer.close()
