"""Which loop the SFU's routers forward with in this run of tests/sfu.

``make pytest`` runs tests/sfu twice: with the C loop (``sfu.native``, where it is built),
then with ``ONAIR_NATIVE_FORWARDING=0``, which every router the tests make honours through
``options`` (``RouterOptions.native_forwarding``), so that the second pass forwards with the
Python loop."""

import os
from typing import Any

import pytest

from sfu import RouterOptions, native

NATIVE_FORWARDING = os.environ.get("ONAIR_NATIVE_FORWARDING", "1") != "0"
# whether this run's routers forward with the C loop
C_LOOP = NATIVE_FORWARDING and native.available()

needs_c_loop = pytest.mark.skipif(
    not C_LOOP,
    reason="the C loop is off (ONAIR_NATIVE_FORWARDING=0) or not built (make native)",
)


def options(**fields: Any) -> RouterOptions:
    """``RouterOptions(**fields)`` forwarding with this run's loop."""
    return RouterOptions(**{"native_forwarding": NATIVE_FORWARDING, **fields})
