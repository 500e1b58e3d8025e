"""OnAir's server in a subprocess, for the tests that need a real one: a free port, ``manage.py``
against the server's database, and ``daphne_process``, which starts the server command (plain
daphne, or ``make run``'s), waits for ``/healthz`` and stops it again."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASGI_APP = "onair.asgi:application"
_LOG_ERROR = re.compile(r"^\S+ \S+ (?:ERROR|CRITICAL) .*$", re.MULTILINE)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> str:
    """Run a ``manage.py`` command with ``env``; returns its stdout, fails on an error."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


def http_request(
    method: str, url: str, body: str = "", headers: dict[str, str] | None = None, *, timeout: float
) -> Response:
    """One request through urllib; an error status is a ``Response`` too."""
    request = urllib.request.Request(
        url, data=body.encode() or None, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read().decode())


def daphne_command(port: int, app: str = ASGI_APP, host: str = "127.0.0.1") -> list[str]:
    """daphne serving ``app`` on ``host``:``port``, as ``make run`` starts it."""
    return [sys.executable, "-m", "onair.serve", "-b", host, "-p", str(port), app]


def open_files(pid: int) -> dict[str, str]:
    """A process's open file descriptors (their /proc paths) and what each one links to."""
    links = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            links[path] = os.readlink(path)
        except FileNotFoundError:  # closed meanwhile
            continue
    return links


def log_errors(log: str) -> list[str]:
    """A server log's records at ERROR or above (their first lines), and any traceback it
    printed."""
    found = _LOG_ERROR.findall(log)
    found += ["Traceback"] * log.count("Traceback (most recent call last)")
    return found


class LogWatch:
    """The records at ERROR or above that server logs receive from now on. ``logs`` lists
    them (again at each look: a process started meanwhile has a new log, read whole)."""

    def __init__(self, logs: Callable[[], Iterable[Path]]) -> None:
        self.logs = logs
        self.offsets = {path: _size(path) for path in logs()}

    def errors(self) -> list[str]:
        """What the logs received since this watch started (or last looked) from their
        first ERROR record or traceback on, one item per log that has any."""
        found = []
        for path in self.logs():
            offset = self.offsets.get(path, 0)
            with path.open("rb") as log:
                log.seek(offset)
                new = log.read()
            self.offsets[path] = offset + len(new)
            text = new.decode(errors="replace")
            first = _LOG_ERROR.search(text)
            traceback = text.find("Traceback (most recent call last)")
            starts = [i for i in (first.start() if first else -1, traceback) if i >= 0]
            if starts:
                found.append(f"--- {path.name}\n{text[min(starts) :][:4000]}")
        return found


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wait_until_serving(
    base_url: str,
    process: subprocess.Popen[bytes],
    *,
    within: float,
    output: Callable[[], str],
) -> None:
    """Until ``base_url/healthz`` answers (any status: the server is up); fails with
    ``output()`` if the process exits first or nothing answers ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{output()}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError as error:
            if time.monotonic() > deadline:
                message = f"the server did not answer within {within} s:\n{output()}"
                raise RuntimeError(message) from error
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if that has not ended it within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class DaphneProcess:
    """A running server on ``host``:``port``; its output goes to ``log_path``."""

    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@contextmanager
def daphne_process(
    env: dict[str, str],
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    command: Sequence[str] | None = None,
    startup_seconds: float = 60,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[DaphneProcess]:
    """``command`` (daphne serving OnAir on 127.0.0.1, by default) with ``env``, listening on
    ``host``:``port`` (a free port by default), once its ``/healthz`` answers; stopped on exit.
    Migrate its database first. ``preexec_fn`` runs in the child before the command."""
    port = free_port(host) if port is None else port
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command or daphne_command(port)),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
    server = DaphneProcess(port, env, log_path, process, host)
    try:
        wait_until_serving(server.base_url, process, within=startup_seconds, output=server.log)
        yield server
    finally:
        stop(process)
