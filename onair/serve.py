"""``python -m onair.serve``: daphne, whose access log holds no secret.

daphne's access log writes each request's path as received, and a WHIP/WHEP session URL
(``/whip/<slug>/<token>``) is the capability to control that session. This takes daphne's
own options and writes the same log, with ``onair.logging.redact`` applied to every path.
``make run`` and ``make run-cluster`` serve with it; so should production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server

from onair.logging import redact

ActionLogger = Callable[[str, str, dict[str, Any]], None]


def redacting(logger: ActionLogger) -> ActionLogger:
    """daphne's action logger, given each path without its secrets."""

    def log(protocol: str, action: str, details: dict[str, Any]) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        logger(protocol, action, details)

    return log


class RedactingServer(Server):
    def __init__(
        self, *args: Any, action_logger: ActionLogger | None = None, **kwargs: Any
    ) -> None:
        super().__init__(
            *args, action_logger=redacting(action_logger) if action_logger else None, **kwargs
        )


class RedactingCommandLine(CommandLineInterface):
    server_class = RedactingServer


if __name__ == "__main__":
    RedactingCommandLine.entrypoint()
