"""pytest: fast hashing, in-memory SQLite unless DATABASE_URL points elsewhere."""

import tempfile
from pathlib import Path

from onair.conf import settings_from
from onair.environment import free_udp_port
from onair.settings.base import *  # noqa: F403
from onair.settings.base import ONAIR, STORAGES
from onair.settings.env import database_from_url, env_str

SECRET_KEY = "onair-test-key"
DEBUG = False
DATABASES = {"default": database_from_url(env_str("DATABASE_URL", "sqlite://:memory:"))}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# No posters unless a test asks for them (each decodes a keyframe: a test that counts
# decoders would count those).
ONAIR = {**ONAIR, "ALLOW_SIGNUP": True, "SERVE_STATIC": True, "THUMBNAIL_SECONDS": 0}
# The SFU's shared ICE port (on by default): a free one for this process, as several test
# runs may be going on at once on the machine.
if settings_from(ONAIR).ice.udp_mux_port:
    ONAIR["UDP_MUX_PORT"] = free_udp_port()
# Posters a test takes stay out of var/ (a test that reads them sets its own place).
STORAGES = {
    **STORAGES,
    "thumbnails": {
        **STORAGES["thumbnails"],
        "OPTIONS": {"location": Path(tempfile.gettempdir()) / "onair-test-thumbnails"},
    },
}
