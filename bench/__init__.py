"""OnAir benchmarks: viewers per core, side by side with Janus and aiortc's MediaRelay.

Run with ``python -m bench`` (or ``make bench``). Nothing here is imported by the
application or its tests; see docs/BENCHMARKS.md for the method.
"""
