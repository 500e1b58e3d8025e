"""``python -m tests.recording.measure [--seconds S] [--only vp8|ffmpeg] [--via router|server]``:
#21 acceptance 1 for the SFU's recorder. ``--via router`` (the default) records through a
``Router`` in this process, which lets it count the server's decoders and encoders and time
the muxing; ``--via server`` goes through a real daphne server (``onair.serve``, a stream that
records, WHIP for both publishers, the broadcast ended by its ``DELETE``) and reads the
finished ``Recording`` and its file from storage.

- **vp8**: an aiortc publisher (VP8 + Opus, 640x360, ``testpeers.sync`` marks: a bright
  frame and a beep on every second) broadcasts for ``S`` seconds (60 by default); at a third
  of it the publisher goes away (its connection closed, as a closed studio tab) and a new one
  takes over 1 s later, within the grace period; at two thirds it replaces its video track
  with a 960x540 one (camera → screen, ``replaceTrack``).
- **ffmpeg**: FFmpeg's own WHIP muxer (H.264 baseline without B-frames + Opus, 640x360,
  the same marks drawn by lavfi) publishes for ``S`` seconds: through a router, to a
  minimal WHIP endpoint in this process that hands its offer to it; through the server, to
  its ``/whip/<slug>``, where the whole of FFmpeg's input is the broadcast.
  FFmpeg encodes from its start and sends what it made meanwhile once connected, and ``-re``
  sends its first half second at once: its media runs ahead of the wall clock, and the file
  (which holds the media sent) comes out that much longer than the broadcast's wall time.

Each recording is decoded end to end with PyAV here (the server decodes nothing) and the
script prints: the file's duration against the broadcast's (from ``start_recording`` to
``stop_recording``) and against the recording's own span (first frame written to stop);
video frames in the file against those the publisher captured while recording; the picture
sizes; the audio/video offset at each mark (audio minus video, positive: sound late); the
decoders and encoders made on the server (aiortc's, spied; the recording's codec contexts
opened; thumbnails', counted apart); the longest a frame's muxing held the event loop, and
the closing time (in a thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio_ffmpeg

from onair.environment import app_environment
from sfu import (
    PublisherPeer,
    RecordingSpec,
    RecordingStarted,
    RecordingStopped,
    Router,
    RouterOptions,
    thumbnail,
)
from sfu.recorder import Recorder
from testpeers import CodecSpy, TestClients, wait_until
from tests.daphne import daphne_process, http_request, log_errors, manage
from tests.sfu.recordings import Decoded, SyncPublishers, decode

THUMBNAIL_SECONDS = 10.0


@dataclass
class Run:
    name: str
    broadcast: float = 0.0  # start_recording → stop_recording (s), or as ``broadcast_is`` says
    broadcast_is: str = "broadcast"
    in_process: bool = True  # what only a Router in this process shows is measured
    recorded_span: float = 0.0  # the first frame written → stop_recording (s)
    frames_captured: int | None = None  # by the publisher while recording
    stopped: RecordingStopped | None = None
    decoded: Decoded | None = None
    server_decoders: list[str] = field(default_factory=list)
    server_encoders: list[str] = field(default_factory=list)
    recording_contexts_opened: int = 0
    thumbnail_decoders: int = 0
    thumbnail_encoders: int = 0
    mux_max_ms: float = 0.0
    open_ms: float = 0.0
    close_seconds: float = 0.0


class _Recording:
    """Starts a router's recording and waits for what it reports."""

    def __init__(self, router: Router, directory: Path) -> None:
        self.router = router
        self.directory = directory
        self.started_at: float | None = None
        self.stopped: RecordingStopped | None = None
        self.stop_called = 0.0
        self.stopped_at = 0.0
        self.recorder: Recorder | None = None
        router.events.on(RecordingStarted, self._started)
        router.events.on(RecordingStopped, self._stopped)

    def _started(self, event: RecordingStarted) -> None:
        self.started_at = time.monotonic()

    def _stopped(self, event: RecordingStopped) -> None:
        self.stopped = event
        self.stopped_at = time.monotonic()

    def start(self) -> float:
        self.router.start_recording(RecordingSpec(recording_id="measure", directory=self.directory))
        self.recorder = self.router.recorder
        return time.monotonic()

    async def stop(self, run: Run, began: float) -> None:
        self.stop_called = time.monotonic()
        self.router.stop_recording()
        assert await wait_until(lambda: self.stopped is not None, within=60)
        assert self.stopped is not None
        assert self.started_at is not None
        assert self.recorder is not None
        run.broadcast = self.stop_called - began
        run.recorded_span = self.stop_called - self.started_at
        run.stopped = self.stopped
        run.close_seconds = self.stopped_at - self.stop_called
        run.mux_max_ms = self.recorder.mux_seconds_max * 1000
        run.open_ms = self.recorder.open_seconds * 1000
        run.recording_contexts_opened = sum(
            1
            for track in self.recorder._tracks.values()
            if track.stream.codec_context is not None and track.stream.codec_context.is_open
        )


def _options() -> RouterOptions:
    return RouterOptions(
        stats_interval_seconds=0,
        publisher_grace_seconds=10.0,
        thumbnail_interval_seconds=THUMBNAIL_SECONDS,
    )


async def measure_vp8(seconds: float, directory: Path) -> Run:
    run = Run("aiortc VP8 + Opus, reconnect and camera → screen")
    router = Router(_options())
    clients = TestClients()
    sync = SyncPublishers(clients)
    spy = CodecSpy()
    thumbnails_before = (
        thumbnail.codec_counts.decoders_created,
        thumbnail.codec_counts.encoders_created,
    )
    recording = _Recording(router, directory)
    try:
        with spy.installed():
            first, session = await sync.publish(router, width=640, height=360)
            captured_before = sync.frames_sent
            began = recording.start()
            assert await wait_until(lambda: recording.started_at is not None, within=10)
            await asyncio.sleep(seconds / 3)
            await first.close()
            router.publisher_gone(session.id)
            await asyncio.sleep(1.0)
            second, _ = await sync.publish(router, width=640, height=360)
            await asyncio.sleep(seconds / 3 - 1.0)
            await sync.switch(second, width=960, height=540)
            await asyncio.sleep(seconds / 3 + 1.0)
            await recording.stop(run, began)
            run.frames_captured = sync.frames_sent - captured_before
        publisher_senders = {t.sender for p in clients.publishers for t in p.pc.getTransceivers()}
        run.server_decoders = [mime for mime, _ in spy.decoders]
        run.server_encoders = [m for m, owner in spy.encoders if owner not in publisher_senders]
    finally:
        await router.close()
        await clients.close()
    run.thumbnail_decoders = thumbnail.codec_counts.decoders_created - thumbnails_before[0]
    run.thumbnail_encoders = thumbnail.codec_counts.encoders_created - thumbnails_before[1]
    assert run.stopped is not None
    run.decoded = decode(Path(run.stopped.path))
    return run


class _WhipEndpoint:
    """The least of a WHIP server (RFC 9725) over a router: POST an offer → 201 with the
    answer; DELETE → 200. One publisher; no authentication (loopback, this script only)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.session: PublisherPeer | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/whip/measure"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (``Connection: close``)."""
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            lines = request.decode().split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if lines[0].startswith("POST "):
                self.session = await self.router.publish(body.decode())
                answer = self.session.answer_sdp.encode()
                head = (
                    "HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\n"
                    "Location: /whip/measure/session\r\n"
                    f"Connection: close\r\nContent-Length: {len(answer)}\r\n\r\n"
                )
                writer.write(head.encode() + answer)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ffmpeg_command(url: str, seconds: float, key: str = "measure") -> list[str]:
    """FFmpeg's WHIP muxer as docs/WHIP_WHEP.md gives it, with a lavfi source carrying the
    marks: a white picture on each second's first frame, a 100 ms 1 kHz beep from each
    second's first sample (``testpeers.sync``'s marks, drawn by FFmpeg)."""
    video = (
        f"color=c=0x282828:size=640x360:rate=30:duration={seconds},"
        "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t\\,1)\\,0.02)'"
    )
    audio = f"aevalsrc='if(lt(mod(t\\,1)\\,0.1)\\,0.37*sin(2*PI*1000*t)\\,0)':s=48000:d={seconds}"
    return [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner", "-loglevel", "error",
        "-re",
        "-f", "lavfi", "-i", video,
        "-f", "lavfi", "-i", audio,
        "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "60",
        "-tune", "zerolatency", "-preset", "veryfast", "-b:v", "1M",
        "-c:a", "libopus", "-ar", "48000", "-ac", "2",
        "-f", "whip", "-authorization", key,
        url,
    ]  # fmt: skip


async def measure_ffmpeg(seconds: float, directory: Path) -> Run:
    run = Run("FFmpeg WHIP H.264 + Opus")
    router = Router(_options())
    endpoint = _WhipEndpoint(router)
    spy = CodecSpy()
    thumbnails_before = (
        thumbnail.codec_counts.decoders_created,
        thumbnail.codec_counts.encoders_created,
    )
    recording = _Recording(router, directory)
    ffmpeg: asyncio.subprocess.Process | None = None
    try:
        with spy.installed():
            url = await endpoint.start()
            ffmpeg = await asyncio.create_subprocess_exec(*ffmpeg_command(url, seconds + 5))
            assert await wait_until(lambda: len(router.producers) == 2, within=15)
            began = recording.start()
            assert await wait_until(lambda: recording.started_at is not None, within=10)
            await asyncio.sleep(seconds)
            await recording.stop(run, began)
        run.server_decoders = [mime for mime, _ in spy.decoders]
        run.server_encoders = [mime for mime, _ in spy.encoders]
    finally:
        if ffmpeg is not None:
            ffmpeg.terminate()  # it sends its DELETE: the loop must run meanwhile
            try:
                await asyncio.wait_for(ffmpeg.wait(), 10)
            except TimeoutError:
                ffmpeg.kill()
                await ffmpeg.wait()
        await router.close()
        await endpoint.close()
    run.thumbnail_decoders = thumbnail.codec_counts.decoders_created - thumbnails_before[0]
    run.thumbnail_encoders = thumbnail.codec_counts.encoders_created - thumbnails_before[1]
    assert run.stopped is not None
    run.decoded = decode(Path(run.stopped.path))
    return run


def report(run: Run) -> None:
    assert run.decoded is not None
    assert run.stopped is not None
    decoded = run.decoded
    offsets = decoded.sync_offsets(1.0)
    sizes = Counter((f.width, f.height) for _, f in decoded.video)
    print(f"\n{run.name}: {run.stopped.path}")
    print(
        f"  file: {run.stopped.size / 1e6:.2f} MB, {decoded.video_codec} + {decoded.audio_codec},"
        f" reason {run.stopped.reason!r}"
    )
    recorded = decoded.container_duration
    span = (
        f"; from the first frame written {run.recorded_span:.3f} s"
        f" (Δ {recorded - run.recorded_span:+.3f})"
        if run.in_process
        else ""
    )
    print(
        f"  duration: file {recorded:.3f} s (reported {run.stopped.duration:.3f});"
        f" {run.broadcast_is} {run.broadcast:.3f} s (Δ {recorded - run.broadcast:+.3f}){span}"
    )
    print(f"  audio runs to {decoded.audio_end:.3f} s, {len(decoded.audio)} frames decoded")
    captured = f" of {run.frames_captured} captured" if run.frames_captured is not None else ""
    print(
        f"  video frames decoded: {len(decoded.video)}{captured}"
        f" (event {run.stopped.video_frames}); sizes: "
        + ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(sizes.items()))
    )
    if offsets:
        print(
            f"  A/V offset (audio - video) at {len(offsets)} marks:"
            f" mean {statistics.mean(offsets) * 1000:+.1f} ms,"
            f" min {min(offsets) * 1000:+.1f}, max {max(offsets) * 1000:+.1f} ms"
        )
    else:
        print("  A/V offset: no marks found")
    if not run.in_process:
        print("  server codecs and muxing times: measured in process (--via router)")
        return
    print(
        f"  server codecs while recording: aiortc decoders {len(run.server_decoders)},"
        f" encoders {len(run.server_encoders)}; recording codec contexts opened"
        f" {run.recording_contexts_opened}; thumbnails (apart): {run.thumbnail_decoders}"
        f" decoders, {run.thumbnail_encoders} encoders"
    )
    print(
        f"  on the event loop: opening the file {run.open_ms:.2f} ms, longest frame mux"
        f" {run.mux_max_ms:.2f} ms; stop → RecordingStopped {run.close_seconds:.3f} s"
        " (closing in a thread)"
    )


# --- through the real server ----------------------------------------------------------


@dataclass(frozen=True)
class _Server:
    base_url: str
    env: dict[str, str]
    slug: str
    key: str
    recordings: Path


def _shell(env: dict[str, str], code: str) -> Any:
    return json.loads(manage(env, "shell", "-c", code).splitlines()[-1])


def _server_environment(workdir: Path) -> tuple[dict[str, str], str, str]:
    env = app_environment(
        database_url=f"sqlite:///{workdir / 'db.sqlite3'}",
        RECORDINGS_ROOT=str(workdir / "recordings"),
        ONAIR_RECORDING_SPOOL_DIR=str(workdir / "spool"),
        THUMBNAILS_ROOT=str(workdir / "thumbnails"),
        ONAIR_THUMBNAIL_SECONDS=str(int(THUMBNAIL_SECONDS)),
        ONAIR_RECORD_BY_DEFAULT="1",
    )
    manage(env, "migrate", "--noinput", "-v0")
    slug, key = _shell(
        env,
        "import json; from django.contrib.auth.models import User; "
        "from broadcast.services import stream_create; "
        "stream, key = stream_create(owner=User.objects.create_user('measure'), title='M'); "
        "print(json.dumps([stream.slug, key.secret]))",
    )
    return env, slug, key


async def _finished_recording(server: _Server) -> dict[str, Any]:
    """The stream's recording once it is no longer being written."""
    code = (
        "import json; from recordings.models import Recording; print(json.dumps(["
        "{'state': r.state, 'reason': r.stop_reason, 'detail': r.detail, 'file': r.file.name,"
        " 'duration': r.duration, 'frames': r.video_frames, 'size': r.size,"
        " 'width': r.width, 'height': r.height} for r in Recording.objects.all()]))"
    )
    deadline = time.monotonic() + 60
    while True:
        rows = await asyncio.to_thread(_shell, server.env, code)
        if rows and rows[0]["state"] != "recording":
            return dict(rows[0])
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.5)


def _from_row(run: Run, row: dict[str, Any], server: _Server) -> None:
    path = server.recordings / row["file"]
    run.stopped = RecordingStopped(
        router_id="",
        recording_id="",
        path=str(path),
        reason=row["reason"],
        detail=row["detail"],
        duration=row["duration"],
        size=row["size"],
        video_codec=None,
        audio_codec=None,
        width=row["width"],
        height=row["height"],
        video_frames=row["frames"],
    )
    run.decoded = decode(path)


async def _whip_post(server: _Server, offer: str) -> tuple[str, str]:
    response = await asyncio.to_thread(
        http_request,
        "POST",
        f"{server.base_url}/whip/{server.slug}",
        offer,
        {"Authorization": f"Bearer {server.key}", "Content-Type": "application/sdp"},
        timeout=20,
    )
    assert response.status == 201, response
    location = response.headers.get("Location") or response.headers["location"]
    return response.body, location


async def measure_vp8_server(seconds: float, server: _Server) -> Run:
    run = Run(
        "aiortc VP8 + Opus over WHIP to daphne, reconnect and camera → screen",
        broadcast_is="broadcast (WHIP 201 → DELETE answered)",
        in_process=False,
    )
    clients = TestClients()
    sync = SyncPublishers(clients)
    try:
        first = sync.publisher(width=640, height=360)
        answer, _ = await _whip_post(server, await first.create_offer())
        began = time.monotonic()  # live (and recording) from the 201 on
        await first.accept_answer(answer)
        await asyncio.sleep(seconds / 3)
        await first.close()  # gone without a DELETE: lost, its grace period runs
        await asyncio.sleep(1.0)
        second = sync.publisher(width=640, height=360)
        answer, location = await _whip_post(server, await second.create_offer())
        await second.accept_answer(answer)
        await asyncio.sleep(seconds / 3 - 1.0)
        await sync.switch(second, width=960, height=540)
        await asyncio.sleep(seconds / 3 + 1.0)
        response = await asyncio.to_thread(
            http_request,
            "DELETE",
            f"{server.base_url}{location}",
            "",
            {"Authorization": f"Bearer {server.key}"},
            timeout=20,
        )
        run.broadcast = time.monotonic() - began
        assert response.status == 200, response
        run.frames_captured = sync.frames_sent
    finally:
        await clients.close()
    _from_row(run, await _finished_recording(server), server)
    return run


def _has_file(directory: Path, pattern: str) -> bool:
    return any(directory.glob(pattern))


async def measure_ffmpeg_server(seconds: float, server: _Server) -> Run:
    run = Run(
        "FFmpeg WHIP H.264 + Opus to daphne",
        broadcast_is="FFmpeg's input, all sent",
        in_process=False,
    )
    spool = Path(server.env["ONAIR_RECORDING_SPOOL_DIR"])
    ffmpeg = await asyncio.create_subprocess_exec(
        *ffmpeg_command(f"{server.base_url}/whip/{server.slug}", seconds, server.key)
    )
    deadline = time.monotonic() + 30
    while not _has_file(spool, "*.mp4"):  # its first frame written
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await ffmpeg.wait()  # at the end of its input it sends its DELETE
    run.broadcast = seconds
    _from_row(run, await _finished_recording(server), server)
    return run


async def main(seconds: float, only: str | None, via: str) -> None:
    with tempfile.TemporaryDirectory(prefix="onair-recording-measure-") as directory:
        for name, in_process, through_server in (
            ("vp8", measure_vp8, measure_vp8_server),
            ("ffmpeg", measure_ffmpeg, measure_ffmpeg_server),
        ):
            if only not in (None, name):
                continue
            workdir = Path(directory) / name
            if via == "router":
                report(await in_process(seconds, workdir))
                continue
            workdir.mkdir(parents=True)
            env, slug, key = _server_environment(workdir)
            with daphne_process(env, workdir / "daphne.log") as daphne:
                server = _Server(daphne.base_url, env, slug, key, workdir / "recordings")
                report(await through_server(seconds, server))
                errors = log_errors(daphne.log())
            print(f"  server log errors: {len(errors)}" + "".join(f"\n    {e}" for e in errors))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=["vp8", "ffmpeg"])
    parser.add_argument("--via", choices=["router", "server"], default="router")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.seconds, arguments.only, arguments.via))
