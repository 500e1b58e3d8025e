"""Events other apps observe instead of viewers importing them."""

from django.dispatch import Signal

# Sent inside the transaction of a viewer's join that raised its broadcast's peak viewer
# count, the stream's row locked; kwargs: ``stream`` (its counts current).
viewer_peak_raised = Signal()
