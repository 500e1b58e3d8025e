"""OnAir's ASGI app with ICE consent freshness five times as fast: a check every second
instead of every 5 s, both in the SFU's own consent loop (``sfu.ice_config``) and in
aioice's, which a peer left without the SFU's loop would fall back to. A client that never
answers consent checks then meets the expiry (6 unanswered checks) after ≈ 6 s instead of
≈ 30 s, so a test sees in seconds whether such a client is dropped. Only tests serve this
module (daphne ``tests.e2e.fast_consent_asgi:application``); production serves
``onair.asgi``."""

from __future__ import annotations

import aioice.ice

from onair.asgi import application
from sfu import ice_config

CONSENT_INTERVAL_SECONDS = 1
CONSENT_IDLE_SECONDS = 5.0

aioice.ice.CONSENT_INTERVAL = CONSENT_INTERVAL_SECONDS
ice_config.CONSENT_INTERVAL_SECONDS = CONSENT_INTERVAL_SECONDS
ice_config.CONSENT_IDLE_SECONDS = CONSENT_IDLE_SECONDS

__all__ = ["application"]
