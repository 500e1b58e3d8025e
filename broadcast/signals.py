"""Events other apps observe instead of broadcast importing them."""

from django.dispatch import Signal

# Sent inside the transaction that changed ``stream.state``; kwargs: ``stream``, ``previous``.
stream_state_changed = Signal()

# Sent inside the transaction that revoked ``key`` (revoke, or rotate); kwargs: ``stream``,
# ``key``. Receivers end every session the key authorized (studios, WHIP), on commit.
stream_key_revoked = Signal()

# Sent after ``stream.record`` changed (``stream_update``); kwargs: ``stream``. Signaling
# starts or stops the recording of a broadcast on air, on commit.
stream_record_changed = Signal()
