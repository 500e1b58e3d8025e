"""The suite's check that no log line holds a stream key or a session token.

Every stream key and WHIP/WHEP session token (and secret key, password) the code makes comes
from ``secrets.token_urlsafe``: ``record_generated_secrets`` wraps it, in the test process
(tests/conftest.py) and, through tests/secret_hook/sitecustomize.py on ``PYTHONPATH``, in
every Python process the suite starts, each writing what it made to the run's secrets file.
``SecretWatch`` checks text against them, and against the form every stream key has
(``sk_`` and its characters: the demo key is derived, not drawn). tests/conftest.py checks
each line the test process's log handler writes, as it is written, and at the end of the run
every ``*.log`` file the suite's processes wrote under its temporary directory."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

SECRETS_FILE_ENV = "ONAIR_TEST_SECRETS_FILE"
# Shorter tokens are not secrets of OnAir's (and could turn up in text by chance).
MIN_SECRET_CHARS = 16
# Every stream key (broadcast.services, broadcast.demo); a redacted one reads ``sk_<redacted>``.
STREAM_KEY = re.compile(r"\bsk_[A-Za-z0-9_-]{8,}")
_TOKEN_RUN = re.compile(rf"[A-Za-z0-9_-]{{{MIN_SECRET_CHARS},}}")


def record_generated_secrets(record: Callable[[str], None]) -> None:
    """From now on every ``secrets.token_urlsafe`` token of this process is ``record``ed."""
    generate = secrets.token_urlsafe
    if getattr(generate, "recording", False):
        return

    def token_urlsafe(nbytes: int | None = None) -> str:
        token = generate(nbytes)
        if len(token) >= MIN_SECRET_CHARS:
            record(token)
        return token

    token_urlsafe.recording = True  # type: ignore[attr-defined]
    secrets.token_urlsafe = token_urlsafe


def append_to(path: Path) -> Callable[[str], None]:
    def record(token: str) -> None:
        with path.open("a") as file:
            file.write(token + "\n")

    return record


class SecretWatch:
    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.leaks: list[str] = []

    def add(self, secret: str) -> None:
        self.secrets.add(secret)

    def load(self, path: Path) -> None:
        if path.exists():
            self.secrets.update(line for line in path.read_text().splitlines() if line)

    def check(self, where: str, text: str) -> None:
        """Note every secret in ``text`` (one line, or a whole log): each run of token
        characters is looked up (a key's token after its ``sk_``), not each secret searched."""
        found = STREAM_KEY.findall(text)
        for run in _TOKEN_RUN.findall(text):
            if run in self.secrets or run.removeprefix("sk_") in self.secrets:
                found.append(run)
        for secret in found:
            at = text.find(secret)
            context = text[max(at - 120, 0) : at + len(secret) + 40].replace("\n", " ")
            self.leaks.append(f"{where}: {secret[:6]}… in …{context}…")

    def check_files(self, paths: Iterable[Path]) -> None:
        for path in paths:
            self.check(str(path), path.read_text(errors="replace"))


class WatchLines(logging.Filter):
    """The last filter of a log handler: checks each line as that handler writes it (after
    its own filters, the redaction among them)."""

    def __init__(self, watch: SecretWatch, handler: logging.Handler) -> None:
        super().__init__()
        self.watch, self.handler = watch, handler

    def filter(self, record: logging.LogRecord) -> bool:
        self.watch.check(f"log record of {record.name}", self.handler.format(record))
        return True
