"""``manage.py onair_demo --host H --port P``: set up the demo account and stream (idempotent)
and print where everything is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from broadcast.demo import DEMO_USERNAME, demo_ensure, demo_password_stored
from onair.network import host_is_loopback


class Command(BaseCommand):
    help = "Create the demo staff user and demo stream if missing, and print URLs and credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--username", default=DEMO_USERNAME)
        parser.add_argument(
            "--password",
            default=None,
            help="the demo user's password when it is created (default: onair-demo on "
            "loopback; a random one, kept in var/demo-password, on any other address)",
        )

    def handle(
        self, *args: Any, host: str, port: int, username: str, password: str | None, **options: Any
    ) -> None:
        password_file = Path(settings.VAR_DIR) / "demo-password"
        exposed = not host_is_loopback(host)
        demo = demo_ensure(
            username=username,
            password=password,
            exposed=exposed,
            password_file=password_file,
        )
        shown_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
        base = f"http://{shown_host}:{port}"
        style = self.style
        lines = [
            "",
            style.SUCCESS(f"OnAir — serving on {base}/"),
            f"  Live streams   {base}/",
            f"  My streams     {base}/streams/",
            f"  Admin          {base}/admin/",
            f"  API docs       {base}/api/docs/   (schema: {base}/api/schema/)",
            f"  REST API       {base}/api/v1/",
            "",
            self._login_line(demo.password, username=username, password_file=password_file),
            f"  Demo stream    “{demo.stream.title}”  slug: {demo.stream.slug}",
            f"  Stream key     {demo.stream_key}"
            if demo.stream_key
            else "  Stream key     (rotated since the demo set it up: issue one on My streams)",
            f"  Go live        {base}/studio/{demo.stream.slug}/   (log in first)",
            f"  Watch          {base}/watch/{demo.stream.slug}/",
            f"  WHIP (OBS)     {base}/whip/{demo.stream.slug}   (bearer token: the stream key)",
            f"  WHEP           {base}/whep/{demo.stream.slug}",
            "",
        ]
        if exposed:
            # Without DEBUG, Django answers only these hosts.
            lines += [
                "  Off loopback   the host names answered: " + ", ".join(settings.ALLOWED_HOSTS),
                "                 add this machine's: ALLOWED_HOSTS=<name or address>,localhost",
                "",
            ]
        self.stdout.write("\n".join(lines))

    @staticmethod
    def _login_line(password: str | None, *, username: str, password_file: Path) -> str:
        if password is not None:
            return f"  Demo login     {username} / {password}  (staff: can use the admin)"
        if demo_password_stored(username=username, password_file=password_file):
            return f"  Demo login     {username} (its password is in {password_file})"
        return f"  Demo login     {username} (its password was changed; not shown)"
