"""What the test rigs built of network namespaces share (tests/nat/rig.py, tests/quality/
rig.py): running a setup command, removing a namespace with what runs in it, listing a
rig's namespaces by prefix."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Self


class RigError(RuntimeError):
    """A rig could not be built (a command failed, a limit was reached)."""


class NamespaceRig:
    """A rig's life: ``up`` builds it (``_build``), taking down what it built if that fails;
    ``down`` (also at exit, and on leaving a ``with`` block) removes it."""

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        atexit.register(self.down)
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError


def run(argv: Sequence[str]) -> None:
    """Run a setup command; raise RigError with its stderr if it fails."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RigError(f"{' '.join(argv)}: {result.stderr.strip()}")


def remove_namespace(namespace: str) -> None:
    """Kill what still runs inside, then delete the namespace (its veths go with it)."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in pids.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            continue
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def namespaces(prefix: str) -> list[str]:
    """This machine's network namespaces whose names start with ``prefix``."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]
