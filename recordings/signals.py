"""Events other apps observe instead of recordings importing them."""

from django.dispatch import Signal

# Sent inside the transaction that began a recording or changed its state; kwargs:
# ``recording``. Signaling tells the stream's studio (docs/SIGNALING.md, ``recording``).
recording_state_changed = Signal()
