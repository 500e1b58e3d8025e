"""The chat tests' stream and its owner: the signaling tests' fixtures."""

from tests.signaling.conftest import owner, stream_parts  # noqa: F401 (fixtures)
