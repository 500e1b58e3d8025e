"""Events other apps observe instead of broadcast importing them."""

from django.dispatch import Signal

# Sent inside the transaction that changed ``stream.state``; kwargs: ``stream``, ``previous``.
stream_state_changed = Signal()
