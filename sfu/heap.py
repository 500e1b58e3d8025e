"""The garbage collector against the forwarding.

A full collection of CPython's cyclic garbage collector walks every tracked object while the
event loop waits, and every viewer's forwarding with it: 63 to 67 ms for the ≈ 133,000
objects daphne holds once Django, the REST framework, Channels and aiortc are loaded, on the
benchmark's VM (see docs/BENCHMARKS.md, "What was tried"). Those objects live as long as the
process, so a server moves them out of the collector's sight once it has started; what viewers
and broadcasts create later is collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect what is garbage now, then freeze everything left (``gc.freeze``): the
    collector never walks it again. Call once, when the server has loaded what it serves.
    Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
