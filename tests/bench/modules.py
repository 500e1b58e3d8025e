"""The bench is never imported by its tests: each runs ``python -m <module>`` from the
repository, exactly as ``make bench`` and the docs do."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, timeout: float) -> "subprocess.CompletedProcess[str]":
    """The finished ``python -m module args...``, its output captured as text (the exit code
    is not checked: the test reads it and stderr)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
