"""OnAir benchmarks: viewers per core, side by side with Janus and aiortc's MediaRelay.

Run with ``python -m bench`` (or ``make bench``). Nothing here is imported by the
application or its tests; see docs/BENCHMARKS.md for the method.
"""

import os


def native_forwarding() -> bool:
    """Whether OnAir's SFU forwards with its C loop in this run (where it is built):
    ``ONAIR_NATIVE_FORWARDING=0`` measures its Python loop instead
    (``RouterOptions.native_forwarding``)."""
    return os.environ.get("ONAIR_NATIVE_FORWARDING", "1") != "0"
